"""``python -m whypretrain ...`` = the ``whypretrain`` command; what ``torchrun -m whypretrain``
starts in every process (README.md, clusters)."""
import sys

from .cli import main

sys.exit(main())
