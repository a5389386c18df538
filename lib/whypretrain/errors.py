"""Errors a user can fix: the ``whypretrain`` command prints them as one line that says what to
do (exit status 2), with the traceback only under ``--debug``; a notebook shows them as one line.

Raise ``UserError`` (or a subclass) from library code when the fix is on the user's side: a
missing data folder, a missing or corrupt weights file, results that are not computed yet. The
message is the whole story: what is wrong, and the command or setting that fixes it.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says how."""

    def _render_traceback_(self) -> list[str]:  # IPython (papermill, Jupyter): one line
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class ParameterError(UserError, ValueError):
    """A bad preset, parameter name, type or value (``presets.resolve``'s ``ValueError``)."""


class MissingResults(UserError, FileNotFoundError):
    """A read found nothing on disk: ``what`` is missing, ``command`` computes it.

    ``MissingResults("the runs of preset ci, seed 0", "whypretrain train --preset ci")`` reads
    ``the runs of preset ci, seed 0: not computed yet; run `whypretrain train --preset ci```.
    """

    def __init__(self, what: str, command: str):
        self.what = what
        self.command = command
        super().__init__(f"{what}: not computed yet; run `{command}`")
