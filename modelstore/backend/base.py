"""Layer 2: the ``Backend`` protocol, its key rules and the helpers every backend shares.

A backend moves opaque, immutable-by-convention byte strings between modelstore and a place
that keeps them (a directory, an S3 bucket, process memory). It knows nothing of packs, objects
or refs: those are keys and bytes to it, as in restic's ``internal/backend`` and borgstore.
The semantics every implementation must provide are spelled out in the ``Backend`` docstring
(kopia ``repo/blob/storage.go`` style) and checked for every implementation by
``tests/contract/test_backend_contract.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from modelstore.errors import BadArgumentError, ObjectNotFoundError, StorageError

__all__ = [
    "MAX_KEY_LENGTH",
    "STREAM_BLOCK",
    "Backend",
    "ObjectInfo",
    "PutData",
    "Readable",
    "check_key",
    "check_listed_key",
    "check_prefix",
    "check_range",
    "empty_read",
    "iter_source",
    "read_full",
    "short_read_error",
]

#: longest key a backend accepts (S3 allows 1024 bytes; we keep room for a bucket prefix)
MAX_KEY_LENGTH = 512

#: block size for streamed reads and writes (bounded memory per call)
STREAM_BLOCK = 1 << 20

# One component: lowercase letters, digits, '-', '_', '.', never starting with '.' (that keeps
# '.', '..' and hidden names out, which backends reserve for temp files and their lock file).
_COMPONENT = r"[a-z0-9_-][a-z0-9._-]*"
_KEY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_PREFIX_RE = re.compile(r"[a-z0-9._/-]*")


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows about one stored object.

    Attributes:
        key: The object's key.
        size: Its length in bytes.
        etag: An opaque version token for compare-and-swap (``put(..., if_match=etag)``), or
            ``None`` where the backend does not report one cheaply (``LocalBackend.list``).
            Equal etags mean equal content; they are only comparable within one backend.
        mtime: When the object was last written, Unix seconds by the store's own clock
            (``list`` and ``stat``; ``None`` where unknown). Garbage collection compares it
            with a time read from the same store, never with the local clock. Not part of
            equality: two infos of the same version compare equal whether or not they carry it.
    """

    key: str
    size: int
    etag: str | None = None
    mtime: float | None = field(default=None, compare=False)


@runtime_checkable
class Readable(Protocol):
    """A streaming source for ``Backend.put``: anything with ``read(n)`` (files, sockets)."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes; ``b""`` at the end."""
        ...


#: what ``Backend.put`` accepts: bytes-like data, or a stream read until it returns ``b""``
PutData = bytes | bytearray | memoryview | Readable


class Backend(Protocol):
    """A key → bytes store: the only thing modelstore needs from where it keeps data.

    Keys follow ``check_key``: lowercase ASCII letters, digits and ``-_.``, ``/``-separated
    relative paths, no empty, ``.``-leading or ``..`` components, at most ``MAX_KEY_LENGTH``
    characters. Every method validates its key (``BadArgumentError``) and ``list`` validates
    what it returns ("no crap in, no crap out", borgstore ``validate_name``).

    Guarantees every implementation provides:

    * **Atomic puts.** A reader sees either the old object (or none) or the complete new one,
      never a partial object, even if the writer crashes half-way.
    * **Durability.** When ``put`` returns, the object survives a crash of this machine.
    * **Read-after-write.** Once ``put`` returns, ``get`` and ``stat`` by key see it (the
      same holds for ``delete``).
    * **Idempotent, content-addressed puts.** Without ``overwrite`` an existing key is left
      untouched and ``put`` succeeds: a content-addressed key already holds these bytes.
    * **Compare-and-swap.** ``put(key, data, if_match=etag)`` writes only if the object's
      current etag is ``etag`` (``if_match=""``: only if it is absent) and otherwise raises
      ``RefConflictError``. Two racing CAS writers with the same ``if_match``: exactly one
      wins. Refs are built on this.
    * **No silent truncation.** A ranged ``get`` returns exactly the bytes asked for or raises
      ``StorageError``.
    * **Bounded memory.** ``put`` of a stream and ``get_stream`` hold at most a few blocks
      (a multipart part on S3), whatever the object's size.

    What is *not* guaranteed: ``list`` may be stale (eventually consistent stores) and comes
    in no particular order; only garbage collection may rely on it, behind a grace period.
    I/O failures raise ``StorageError`` (``RepositoryFullError`` when out of space); retries,
    rate limits and logging are wrappers implementing this same protocol, never flags.
    """

    def put(
        self,
        key: str,
        data: PutData,
        *,
        overwrite: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically.

        Args:
            key: Where to store it.
            data: The bytes, or a stream read to its end (never held in memory whole).
            overwrite: Replace an existing object; without it an existing key is kept
                and the call succeeds without reading ``data``.
            if_match: Compare-and-swap: write only if the current etag equals this
                (``""``: only if absent). Implies ``overwrite``.

        Returns:
            The stored (or, when kept, the existing) object's info.

        Raises:
            RefConflictError: ``if_match`` did not match the current object.
            StorageError: The backend failed.
        """
        ...

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Read ``length`` bytes (default: to the end) of ``key`` from ``offset``.

        Raises:
            ObjectNotFoundError: No such key.
            StorageError: The range lies past the end, or fewer bytes came back.
        """
        ...

    def get_stream(self, key: str) -> Iterator[bytes]:
        """Read all of ``key`` as an iterator of blocks, in bounded memory.

        ``ObjectNotFoundError`` is raised by this call, before any block is read.
        """
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` if it does not exist."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in no particular order; may be stale."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key succeeds."""
        ...


def check_key(key: str) -> str:
    """Validate a key given to a backend and return it.

    Raises:
        BadArgumentError: ``key`` breaks the key rules (see ``Backend``).
    """
    if not isinstance(key, str):
        raise BadArgumentError(f"invalid storage key {key!r}: not a string")
    if len(key) > MAX_KEY_LENGTH:
        raise BadArgumentError(
            f"invalid storage key {key[:40]!r}...: longer than {MAX_KEY_LENGTH} characters"
        )
    if not _KEY_RE.fullmatch(key):
        raise BadArgumentError(
            f"invalid storage key {key!r}: use lowercase a-z, 0-9, '-', '_', '.' in "
            "'/'-separated relative parts (no empty, '.'-leading or '..' parts)"
        )
    return key


def check_prefix(prefix: str) -> str:
    """Validate a ``list`` prefix: a key, a key's beginning, or a key followed by ``/``.

    Raises:
        BadArgumentError: ``prefix`` cannot begin any valid key.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise BadArgumentError(f"invalid storage key prefix {prefix!r}")
    if len(prefix) > MAX_KEY_LENGTH or prefix.startswith(("/", ".")) or "//" in prefix:
        raise BadArgumentError(f"invalid storage key prefix {prefix!r}")
    if any(part.startswith(".") for part in prefix.split("/")):
        raise BadArgumentError(f"invalid storage key prefix {prefix!r}")
    return prefix


def check_listed_key(key: str, where: str) -> str:
    """Validate a key that came *out* of storage; a bad one is damage, not a bad argument.

    Raises:
        StorageError: ``key`` breaks the key rules.
    """
    try:
        return check_key(key)
    except BadArgumentError:
        raise StorageError(
            f"unexpected object name {key!r} in {where} (not written by modelstore; move it away)"
        ) from None


def check_range(offset: int, length: int | None) -> None:
    """Reject negative offsets and lengths.

    Raises:
        BadArgumentError: ``offset`` or ``length`` is negative.
    """
    if offset < 0 or (length is not None and length < 0):
        raise BadArgumentError(f"invalid byte range: offset={offset}, length={length}")


def short_read_error(where: str, offset: int, length: int | None, size: int | None) -> StorageError:
    """The error for a ranged read that asks past the end of an object."""
    end = "end" if length is None else offset + length
    return StorageError(
        f"short read of {where}: bytes {offset}..{end} asked, object has "
        f"{'?' if size is None else size}"
    )


def empty_read(
    stat: Callable[[str], ObjectInfo | None], key: str, offset: int, where: str
) -> bytes:
    """``get(key, offset=offset, length=0)``: nothing is read, but checked as any read.

    The object must exist and ``offset`` must lie inside it.
    """
    have = stat(key)
    if have is None:
        raise ObjectNotFoundError(f"object not found: {where}")
    if offset > have.size:
        raise short_read_error(where, offset, 0, have.size)
    return b""


def read_full(src: Readable, n: int) -> bytes | bytearray:
    """Read ``n`` bytes from ``src``, fewer only at its end; short reads are topped up.

    Memory stays at about ``n``: a full first read is returned as is, otherwise the pieces
    are appended to one ``bytearray`` (no list of pieces plus a joined copy).
    """
    first = src.read(n)
    if len(first) >= n or not first:
        return first
    buf = bytearray(first)
    del first
    while len(buf) < n:
        more = src.read(n - len(buf))
        if not more:
            break
        buf += more
    return buf


def iter_source(data: PutData, block: int = STREAM_BLOCK) -> Iterator[bytes | memoryview]:
    """Yield ``data`` in blocks of at most ``block`` bytes, without copying bytes-like input.

    Raises:
        BadArgumentError: ``data`` is neither bytes-like nor readable.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for i in range(0, len(view), block):
            yield view[i : i + block]
        return
    if not isinstance(data, Readable):
        raise BadArgumentError(
            f"cannot store a {type(data).__name__}: pass bytes or a readable binary stream"
        )
    while True:
        chunk = data.read(block)
        if not chunk:
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise BadArgumentError("the stream given to put() returned text; open it in 'rb'")
        yield chunk
