"""``results.compute`` of the `ci` preset's seed 0 in WORKDIR, its extraction in chunks of CHUNK
games, that writes MARKER and waits when it is about to solve chunk STOP (counting from 0):
what tests/test_results.py kills there (SIGKILL) to check that a killed extraction resumes from
the chunks it kept. Arguments: WORKDIR CHUNK STOP MARKER."""
import sys
import time
from pathlib import Path

from whypretrain import presets, results

workdir, chunk, stop, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
params = presets.resolve("ci", {"workdir": workdir})
results.CHUNK_OUTPUTS = chunk << params["n"]
engine, calls = results.run_engine, []


def run_engine(values, *args, **kwargs):
    if len(calls) == stop:
        Path(marker).touch()
        time.sleep(3600)  # killed here
    calls.append(len(values))
    return engine(values, *args, **kwargs)


results.run_engine = run_engine
results.compute(params, 0, progress=False)
