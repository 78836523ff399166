"""Layer 2: an in-process dict backend with the full ``Backend`` contract.

For tests, and for users who run the contract suite against their own backend next to a
reference one (restic ``internal/backend/mem``, kopia ``internal/blobtesting/map.go``). It
holds everything in memory, so streamed puts are bounded by the object's size, not a block.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

from modelstore.backend.base import (
    STREAM_BLOCK,
    ObjectInfo,
    PutData,
    check_key,
    check_prefix,
    check_range,
    iter_source,
)
from modelstore.errors import ObjectNotFoundError, RefConflictError, StorageError

__all__ = ["MemoryBackend", "content_etag"]


def content_etag(data: bytes) -> str:
    """The etag of ``data``: a hex BLAKE2b-128 of the content (equal bytes, equal etag)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class MemoryBackend:
    """A thread-safe ``Backend`` over a dict; see ``Backend`` for the contract."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._mtimes: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryBackend({self.name!r})"

    def put(
        self,
        key: str,
        data: PutData,
        *,
        overwrite: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (see ``Backend.put``)."""
        check_key(key)
        if if_match is None and not overwrite:
            with self._lock:
                have = self._objects.get(key)
            if have is not None:
                return ObjectInfo(key, len(have[0]), have[1])
        blob = b"".join(iter_source(data))
        etag = content_etag(blob)
        with self._lock:
            have = self._objects.get(key)
            if if_match is not None:
                current = "" if have is None else have[1]
                if current != if_match:
                    raise RefConflictError(f"conflicting update of {key}: it changed (retry)")
            elif have is not None and not overwrite:
                return ObjectInfo(key, len(have[0]), have[1])
            self._objects[key] = (blob, etag)
            self._mtimes[key] = now = time.time()
        return ObjectInfo(key, len(blob), etag, now)

    def _blob(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            have = self._objects.get(key)
        if have is None:
            raise ObjectNotFoundError(f"object not found: {key}")
        return have[0]

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Read a byte range of ``key`` (see ``Backend.get``)."""
        check_range(offset, length)
        blob = self._blob(key)
        end = len(blob) if length is None else offset + length
        if offset > len(blob) or end > len(blob):
            raise StorageError(
                f"short read of {key}: bytes {offset}..{end} asked, object has {len(blob)}"
            )
        return blob[offset:end]

    def get_stream(self, key: str) -> Iterator[bytes]:
        """Read ``key`` in blocks (see ``Backend.get_stream``)."""
        blob = self._blob(key)
        return (blob[i : i + STREAM_BLOCK] for i in range(0, len(blob), STREAM_BLOCK))

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` (see ``Backend.stat``)."""
        check_key(key)
        with self._lock:
            have = self._objects.get(key)
            when = self._mtimes.get(key)
        return None if have is None else ObjectInfo(key, len(have[0]), have[1], when)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (a snapshot taken when iteration starts)."""
        check_prefix(prefix)
        with self._lock:
            infos = [
                ObjectInfo(k, len(blob), etag, self._mtimes.get(k))
                for k, (blob, etag) in self._objects.items()
                if k.startswith(prefix)
            ]
        return iter(infos)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)
            self._mtimes.pop(key, None)
