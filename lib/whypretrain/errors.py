"""Errors a user can fix: one line that says what to do (minimal version; HB owns this module
and the lead reconciles it at merge)."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the CLI prints its message as one line."""


class MissingResults(UserError):
    """A reading function found no results (or runs) on disk: it names what is missing and the
    ``whypretrain`` command that makes it. Reading never computes."""

    def __init__(self, what: str, command: str):
        self.what, self.command = what, command
        super().__init__(f"{what} is missing: run `{command}`")
