"""Layer 0: the exception hierarchy; every error is an ``MsError`` with an exit code.

Like borg's ``helpers/errors.py``: the class docstring is the message template, each class
carries its own exit code, and the CLI maps them in one place. Messages are one line that says
what is wrong and, where there is one, how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BadArgumentError",
    "CorruptObjectError",
    "FormatError",
    "LockTimeoutError",
    "MsError",
    "NotARepositoryError",
    "NothingToCommitError",
    "ObjectNotFoundError",
    "PathError",
    "RefConflictError",
    "RefNotFoundError",
    "RepositoryExistsError",
    "RepositoryFullError",
    "StorageError",
    "UncommittedChangesError",
    "UnsupportedFormatError",
]


class MsError(Exception):
    """An error in modelstore."""

    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        """The one-line message shown to the user."""
        return str(self.args[0])


class BadArgumentError(MsError):
    """Bad argument."""

    exit_code = 2


class NotARepositoryError(MsError):
    """Not a modelstore repository (run `ms init` first, or pass -C PATH)."""

    exit_code = 3


class RepositoryExistsError(MsError):
    """A repository already exists here."""

    exit_code = 4


class RefNotFoundError(MsError):
    """Unknown revision."""

    exit_code = 5


class ObjectNotFoundError(MsError):
    """Object not found in the repository."""

    exit_code = 6


class PathError(MsError):
    """Bad path."""

    exit_code = 7


class UncommittedChangesError(MsError):
    """Local changes would be overwritten (commit them, or use --force)."""

    exit_code = 8


class NothingToCommitError(MsError):
    """Nothing to commit (use `ms add` first)."""

    exit_code = 9


class RefConflictError(MsError):
    """The ref moved while we were working (another process committed); retry."""

    exit_code = 10


class LockTimeoutError(MsError):
    """The repository is locked by another process."""

    exit_code = 11


class FormatError(MsError):
    """Malformed data: it does not follow the modelstore format."""

    exit_code = 12


class CorruptObjectError(FormatError):
    """Stored data does not match its hash: the repository is damaged (run `ms verify`)."""

    exit_code = 13


class UnsupportedFormatError(MsError):
    """This repository uses a format this version of modelstore does not know (upgrade ms)."""

    exit_code = 14


class StorageError(MsError):
    """An I/O error in the repository's storage."""

    exit_code = 15


class RepositoryFullError(StorageError):
    """No space left for the repository (free disk space, then retry)."""

    exit_code = 16
