"""``whypretrain`` with the engine raising on rank 1 only: what tests/test_distributed.py
launches through torchrun to check that a failing rank stops the job and leaves no results
marked complete. Arguments: those of ``whypretrain``."""
import os
import sys

from whypretrain import cli
from whypretrain.engine import sparsify

if os.environ.get("RANK") == "1":
    def broken(*args, **kwargs):
        raise RuntimeError("the engine failed on rank 1 (on purpose)")

    sparsify.sparsify = broken

sys.exit(cli.main(sys.argv[1:]))
