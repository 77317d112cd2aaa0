"""The one exception tree of colinux.

``ColinuxError`` is the root. ``UserError`` is a mistake in what the user gave
us (a file, an option, a value): the command line shows its message as one
line and exits with status 2, never a traceback. Everything else that goes
wrong at run time is a ``ColinuxError`` too and exits with status 1.
"""


class ColinuxError(Exception):
    """Any failure colinux reports to its user as a one-line message."""

    exit_status = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UserError(ColinuxError):
    """Bad input: a file, option or value the user must correct. Exit status 2."""

    exit_status = 2
