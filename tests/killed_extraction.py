"""``seed_results.compute`` of the `ci` preset's seed 0 in WORKDIR, its extraction in chunks of CHUNK
games, that stops every chunk from STOP on (counting from 0, in the order the chunks start)
and writes MARKER once the first STOP chunks are on disk: what tests/test_results.py kills
there (SIGKILL) to check that a killed extraction resumes from the chunks it kept.
Arguments: WORKDIR CHUNK STOP MARKER."""
import sys
import threading
import time
from pathlib import Path

from whypretrain import presets
from whypretrain.study import seed_results
from whypretrain.study import extraction

workdir, chunk, stop, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
params = presets.resolve("ci", {"workdir": workdir})
extraction.CHUNK_OUTPUTS = chunk << params["n"]
engine, calls, lock = extraction.run_engine, [], threading.Lock()


def run_engine(values, *args, **kwargs):
    with lock:
        index = len(calls)
        calls.append(len(values))
    if index >= stop:  # the chunks solved at the same time on other threads get written first
        while len(list(Path(workdir).glob("results/*/partial-*/*.pt"))) < stop:
            time.sleep(0.05)
        Path(marker).touch()
        time.sleep(3600)  # killed here
    return engine(values, *args, **kwargs)


extraction.run_engine = run_engine
seed_results.compute(params, 0, progress=False)
