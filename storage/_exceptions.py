"""Exceptions raised by shoal.storage."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error that shoal.storage raises on purpose."""


class InvalidKeyError(StorageError, TypeError):
    """A key or map key is not a str, bytes, int or (nested) tuple of those."""


class InvalidNameError(StorageError, ValueError):
    """A state, operator or meta name breaks the naming rules."""


class DuplicateStateError(InvalidNameError):
    """Two state specs given to one store share a name."""


class UnknownStateError(StorageError, KeyError):
    """A state name was asked for that the store does not declare."""

    def __str__(self) -> str:
        # KeyError.__str__ would print the message quoted, as if it were a key.
        return str(self.args[0]) if self.args else ""


class StoreClosedError(StorageError):
    """The store (or one of its state handles) was used after close()."""


class StoreBusyError(StorageError):
    """The store for this (operator, key group) is already open in this backend."""


class StoreDirtyError(StorageError):
    """The operation needs a store without unflushed changes."""


class RollbackError(StorageError):
    """The undo log cannot bring a store to the epoch asked for; restore from a checkpoint."""


class EncodeError(StorageError, TypeError):
    """A value cannot be encoded as CBOR."""


class StateEncodeError(EncodeError):
    """A state value cannot be encoded, named by operator, key group, state, key and type."""

    def __init__(
        self,
        message: str,
        *,
        operator: str,
        key_group: int,
        state: str,
        key: object,
        value_type: str,
    ) -> None:
        """Keep the parts of the message as attributes of the same names.

        ``key`` is ``(key, map key)`` for a MapState entry; ``value_type`` names the type that
        cannot be encoded, which may be nested inside the value.
        """
        super().__init__(message)
        self.operator = operator
        self.key_group = key_group
        self.state = state
        self.key = key
        self.value_type = value_type


class DecodeError(StorageError, ValueError):
    """Bytes are not a valid encoding of a key or value."""


class CheckpointError(StorageError):
    """A checkpoint or savepoint cannot be written, read or used as asked."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint or savepoint file is missing, truncated or altered (its checksum fails)."""

    def __init__(self, message: str, *, path: str) -> None:
        """Keep the name of the bad file as ``path`` (relative to the store's root)."""
        super().__init__(message)
        self.path = path


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint or savepoint file failed, for instance with no space left."""

    def __init__(self, message: str, *, path: str) -> None:
        """Keep the name of the file that could not be written as ``path``."""
        super().__init__(message)
        self.path = path
