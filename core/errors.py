"""Exceptions the engine raises when it cannot continue.

Damage that can be described is a Finding (core.findings), not an exception. An exception is for
"this command cannot go on": its message is one line naming the offset, path or id involved, and
the command line prints it as is (exit 1), or exit 3 for UnsafeError.
"""


class SrsalvageError(Exception):
    """Cannot continue; str(exc) is a one-line reason for the technician."""


class SourceError(SrsalvageError):
    """The evidence cannot be opened or read at all."""


class UnsafeError(SrsalvageError):
    """Refused because the result would be unsafe or wrong (exit 3 unless forced)."""


class Cancelled(SrsalvageError):
    """Long work stopped because its cancel event was set."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
