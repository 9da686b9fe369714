"""The one error type users see for bad input.

Every problem with a user's data or files is raised as :class:`InputError`, whose message names
the offending file (or folder) and says what is wrong with it. ``run.py`` catches it, prints the
message on one line and exits with status 2, so a bad file never produces a traceback wall.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input: a missing, corrupt or inconsistent file, folder or value.

    Args:
        path: the file or folder at fault (``None`` when the problem is not tied to a file).
        problem: what is wrong, in a user's words.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")

    def __reduce__(self):
        # Errors raised in worker processes must survive pickling back to the parent.
        return (type(self), (self.path, self.problem))


def read_text(path: str | os.PathLike, what: str, missing_hint: str = "") -> str:
    """The UTF-8 text of a file the user gave, or one InputError naming it: ``what`` says what
    the file should be ("split file"), ``missing_hint`` what to do when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise InputError(path, f"{what} not found" + (f" ({missing_hint})" if missing_hint else "")) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"unreadable {what} ({error})") from None
