"""``python -m whypretrain ...`` = the ``whypretrain`` command; what ``torchrun -m whypretrain``
starts in every process (README.md, clusters)."""
import sys

from whypretrain.cli import main

sys.exit(main())
