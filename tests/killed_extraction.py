"""``seed_results.compute`` of the `ci` preset's seed 0 in WORKDIR, its extraction in chunks of
CHUNK games solved by WORKERS threads, where every chunk that starts at game CHUNK * STOP or
later is held (never solved); MARKER is written once the first STOP chunks are on disk: what
tests/test_results.py kills there (SIGKILL) to check that a killed extraction resumes from the
chunks it kept. A chunk is known by its games, not by the order the threads reach the engine,
so the same chunks are kept whatever the number of workers (the cores). Every wait ends: the
script gives up after LIMIT seconds (exit status 3), so that it never outlives a test that died.
Arguments: WORKDIR CHUNK STOP MARKER WORKERS."""
import os
import sys
import time
from pathlib import Path

import torch

from whypretrain import presets
from whypretrain.study import seed_results
from whypretrain.study import extraction

LIMIT = 600.0
workdir, chunk, stop, marker, workers = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                         sys.argv[4], int(sys.argv[5]))
params = presets.resolve("ci", {"workdir": workdir})
extraction.CHUNK_OUTPUTS = chunk << params["n"]
extraction.engine_workers = lambda: workers
engine, chunked, games = extraction.run_engine, extraction.extract_in_chunks, []
start_time = time.monotonic()


def _give_up_after_limit() -> None:
    if time.monotonic() - start_time > LIMIT:
        print(f"killed_extraction: nothing killed me within {LIMIT:.0f} s", file=sys.stderr)
        os._exit(3)  # the whole process, from whichever thread


def chunked_engine(values, *args, **kwargs):
    games.append(values.flatten(0, -2))  # the games, in the order the chunks number them
    return chunked(values, *args, **kwargs)


def run_engine(values, *args, **kwargs):
    first = next(i for i, game in enumerate(games[0]) if torch.equal(game, values[0]))
    if first >= chunk * stop:  # held: the kept chunks are those before game CHUNK * STOP
        while len(list(Path(workdir).glob("results/*/partial-*/*.pt"))) < stop:
            _give_up_after_limit()
            time.sleep(0.05)
        Path(marker).touch()
        while True:  # killed here
            _give_up_after_limit()
            time.sleep(0.5)
    return engine(values, *args, **kwargs)


extraction.extract_in_chunks = chunked_engine
extraction.run_engine = run_engine
seed_results.compute(params, 0, progress=False)
