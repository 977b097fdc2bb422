"""The one base class of every error a user can cause and fix: bad input, a wrong option, a missing file.

The CLI catches :class:`UserError` and prints its message as one line with a non-zero exit;
anything else is a bug and keeps its traceback. Each package raises its own subclass so that
callers can tell a corpus problem from a checkpoint problem, and every message names the file
(and line) and says what was expected.
"""
from __future__ import annotations


class UserError(ValueError):
    """Something the user gave cannot work; the message says what, where, and what was expected.

    A ``ValueError`` as well, so code written against the older per-package errors still catches it.
    """
