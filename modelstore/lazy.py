"""Layer 3: reading the chunks of a lazy clone from its remote, on demand, verified, cached.

A lazy clone fetches commits, trees and manifests but no file contents. When a read needs a
chunk that is not stored locally, ``LazyFetcher`` finds its pack in the cache of what the
remote holds (the ``remote`` sub-database, FORMAT §12), reads just that chunk's byte range, and
hands it back for verification against its id. Fetched chunks are also appended to a local
pack (best effort: a failure to cache never fails the read), so each is downloaded once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from modelstore.backend import Backend, open_backend
from modelstore.chunkstore import CHUNK_LOC, PACK_REC, ChunkLoc, ChunkStore
from modelstore.errors import MsError
from modelstore.metadb import MetaDB, Txn
from modelstore.pack import PackWriter, index_entries

__all__ = ["CACHE_FLUSH", "LazyFetcher", "forget_remote_data", "remote_key"]

#: cached chunks are written out as a pack once this many bytes have been fetched
CACHE_FLUSH = 8 << 20


def remote_key(remote: str, kind: bytes, key: bytes = b"") -> bytes:
    """Key in the ``remote`` sub-database: what ``remote`` is known to hold (FORMAT §12)."""
    return remote.encode() + b"\x00" + kind + b"\x00" + key


def forget_remote_data(txn: Txn, remote: str, packs: set[bytes], bundles: set[bytes]) -> None:
    """Drop from the cache what ``remote`` no longer holds: ``packs`` (ids) and ``bundles``.

    Called when a listing shows them gone (a gc on the remote deleted them): otherwise a push
    would skip sending data the remote lost. An object recorded as ``pushed`` without a
    bundle name (older versions) is dropped whenever any bundle goes, since its bundle cannot
    be told.
    """
    drop: list[bytes] = []

    def pick(values: set[bytes]) -> Callable[[bytes, bytes], None]:
        return lambda k, v: drop.append(k) if v in values else None

    if packs:
        drop.extend(remote_key(remote, b"p", pid) for pid in packs)
        txn.scan("remote", pick(packs), remote_key(remote, b"c"))
    if bundles:
        drop.extend(remote_key(remote, b"b", name) for name in bundles)
        txn.scan("remote", pick(bundles | {b"pushed"}), remote_key(remote, b"o"))
    for k in drop:
        txn.delete("remote", k)


class LazyFetcher:
    """``ChunkStore.fallback`` for a lazy clone of ``remote``."""

    def __init__(
        self, store: ChunkStore, db: MetaDB, remote: str, url: str, options: dict[str, Any]
    ) -> None:
        self.store = store
        self.db = db
        self.remote = remote
        self.url = url
        self.options = options
        self._be: Backend | None = None
        self._idx: dict[bytes, dict[bytes, tuple[int, int, int, int]]] = {}
        self._lock = threading.Lock()
        self._writer: PackWriter | None = None

    def _backend(self) -> Backend:
        if self._be is None:
            self._be = open_backend(self.url, **self.options)
        return self._be

    def _entries(self, pid: bytes) -> dict[bytes, tuple[int, int, int, int]]:
        got = self._idx.get(pid)
        if got is None:
            key = f"packs/{pid.hex()[:2]}/{pid.hex()}.idx"
            got = index_entries(self._backend().get(key), pid, f"remote pack index {key}")
            self._idx[pid] = got
        return got

    def __call__(self, chunk_id: bytes) -> tuple[bytes, ChunkLoc] | None:
        """Fetch one chunk's stored bytes from the remote (None: the remote lacks it too)."""
        with self.db.read() as txn:
            pid = txn.get("remote", remote_key(self.remote, b"c", chunk_id))
        if pid is None:
            return None
        with self._lock:
            off, stored_len, raw_len, codec = self._entries(pid)[chunk_id]
        key = f"packs/{pid.hex()[:2]}/{pid.hex()}.pack"
        stored = self._backend().get(key, offset=off, length=stored_len)
        loc = ChunkLoc(pid, off, stored_len, raw_len, codec)
        # verify before caching: the caller verifies again, cheaply, on what it returns
        self.store.decode_verified(chunk_id, loc, stored)
        if self.store.allows(codec):  # never store what old readers would misread
            self._cache(chunk_id, stored, raw_len)
        return stored, loc

    def _cache(self, chunk_id: bytes, stored: bytes, raw_len: int) -> None:
        with self._lock:
            try:
                if self._writer is None:
                    self.store.tmp_dir.mkdir(exist_ok=True)
                    self._writer = PackWriter(
                        self.store.tmp_dir, f"lazy-{os.getpid()}-{os.urandom(6).hex()}"
                    )
                self._writer.add(chunk_id, stored[0], memoryview(stored)[1:], raw_len)  # type: ignore[arg-type]
                if self._writer.size >= CACHE_FLUSH:
                    self._flush_locked()
            except (OSError, MsError):
                self._drop_locked()

    def _drop_locked(self) -> None:
        if self._writer is not None:
            try:
                self._writer.abort()
            except OSError:
                pass
            self._writer = None

    def _flush_locked(self) -> None:
        w, self._writer = self._writer, None
        if w is None or not w.entries:
            if w is not None:
                w.abort()
            return
        try:
            pack_hex, path = w.finish(self.store.packs_dir)
        except (OSError, MsError):
            w.abort()
            return
        pid = bytes.fromhex(pack_hex)
        size = path.stat().st_size

        def index(txn: Txn) -> None:
            import time

            txn.put("packs", pid, PACK_REC.pack(1, size, len(w.entries), time.time_ns()))
            for e in w.entries:
                loc = CHUNK_LOC.pack(1, pid, e.offset, e.stored_len, e.raw_len, e.codec)
                txn.put("chunks", e.chunk_id, loc, overwrite=False)

        self.db.write(index)

    def flush(self) -> None:
        """Write out the chunks cached so far (called when the repository closes)."""
        with self._lock:
            self._flush_locked()
