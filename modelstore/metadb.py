"""Layer 2: the LMDB metadata environment, with the discipline LMDB needs from Python.

- One environment per path per process, through a registry (LMDB forbids opening one file
  twice in a process), and never carried across ``fork()``: the child drops the registry and
  opens its own (ML data loaders fork).
- ``read()`` gives a read-only transaction: readers never block and never wait for writers.
- ``write(fn)`` runs ``fn(txn)`` in one write transaction: one logical change, all or nothing.
  When the map fills, the transaction is aborted, the map doubled, and ``fn`` run again; past
  ``MAX_MAP_SIZE`` the error surfaces as ``RepositoryFullError``.
- Values are copied out of the map (py-lmdb returns ``bytes`` unless asked for buffers), and
  no generator yields while a transaction is open: cursors are drained into lists.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from modelstore.errors import RepositoryFullError, StorageError

__all__ = ["DBS", "MAX_MAP_SIZE", "MetaDB", "Txn", "open_metadb"]

T = TypeVar("T")

#: sub-databases (docs/FORMAT.md §10).
DBS = ("meta", "objects", "chunks", "packs", "refs", "index", "reflog")
#: initial map size: virtual address space only (the file grows as data is written). Large,
#: because growing the map is only safe while no transaction is open in this process.
INITIAL_MAP_SIZE = 1 << 40
MAX_MAP_SIZE = 1 << 44


class Txn:
    """A transaction over the named sub-databases."""

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        """Return a copy of the value at ``key``, or None."""
        v = self._txn.get(key, db=self._dbs[db])
        return None if v is None else bytes(v)

    def put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        """Store ``value``; with ``overwrite=False`` an existing key is kept (returns False)."""
        return bool(self._txn.put(key, value, db=self._dbs[db], overwrite=overwrite))

    def delete(self, db: str, key: bytes) -> bool:
        """Delete ``key``; return whether it existed."""
        return bool(self._txn.delete(key, db=self._dbs[db]))

    def has(self, db: str, key: bytes) -> bool:
        """Whether ``key`` exists (without copying the value)."""
        with self._txn.cursor(db=self._dbs[db]) as cur:
            return bool(cur.set_key(key))

    def items(
        self, db: str, prefix: bytes = b"", limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        """All ``(key, value)`` pairs whose key starts with ``prefix``, in key order."""
        out: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(db=self._dbs[db]) as cur:
            if not cur.set_range(prefix):
                return out
            for k, v in cur:
                if not k.startswith(prefix):
                    break
                out.append((bytes(k), bytes(v)))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def keys(self, db: str, prefix: bytes = b"") -> list[bytes]:
        """All keys starting with ``prefix``."""
        out: list[bytes] = []
        with self._txn.cursor(db=self._dbs[db]) as cur:
            if not cur.set_range(prefix):
                return out
            for k in cur.iternext(keys=True, values=False):
                if not k.startswith(prefix):
                    break
                out.append(bytes(k))
        return out

    def count(self, db: str) -> int:
        """Number of entries in a sub-database."""
        return int(self._txn.stat(self._dbs[db])["entries"])


class MetaDB:
    """One LMDB environment (use ``open_metadb`` to get the per-process instance)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.pid = os.getpid()
        self._write_lock = threading.Lock()
        try:
            self.env = lmdb.open(
                str(path),
                map_size=INITIAL_MAP_SIZE,
                max_dbs=len(DBS) + 4,
                subdir=True,
                readonly=readonly,
                create=not readonly,
                readahead=False,
                meminit=False,
                max_readers=256,
                lock=True,
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open the metadata database at {path}: {exc}") from None
        self.dbs = {name: self.env.open_db(name.encode(), create=not readonly) for name in DBS}

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only snapshot; never waits for writers."""
        try:
            txn = self.env.begin(write=False)
        except lmdb.Error as exc:
            raise StorageError(f"cannot read the metadata database: {exc}") from None
        try:
            yield Txn(txn, self.dbs)
        finally:
            txn.abort()

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in one write transaction and commit it; grow the map when it fills."""
        with self._write_lock:
            while True:
                txn = self.env.begin(write=True)
                try:
                    result = fn(Txn(txn, self.dbs))
                    txn.commit()
                    return result
                except lmdb.MapFullError:
                    txn.abort()
                    self._grow()
                except lmdb.Error as exc:
                    txn.abort()
                    if "No space left" in str(exc) or getattr(exc, "errno", 0) == 28:
                        raise RepositoryFullError(
                            f"no space left writing the metadata database ({exc}); "
                            "free disk space and retry"
                        ) from None
                    raise StorageError(f"metadata database error: {exc}") from None
                except BaseException:
                    txn.abort()
                    raise

    def _grow(self) -> None:
        size = int(self.env.info()["map_size"]) * 2
        if size > MAX_MAP_SIZE:
            raise RepositoryFullError(
                "the metadata database is full at its largest map size; run `ms gc`"
            )
        self.env.set_mapsize(size)

    def close(self) -> None:
        """Close the environment (only the registry should call this)."""
        self.env.close()


_registry: dict[str, MetaDB] = {}
_registry_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Never use a parent's environment in the child: forget them without closing (closing
    # would touch the parent's shared lock table).
    _registry.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def open_metadb(path: Path) -> MetaDB:
    """Return this process's environment for ``path``, opening it on first use."""
    key = os.path.realpath(path)
    with _registry_lock:
        db = _registry.get(key)
        if db is None or db.pid != os.getpid():
            db = MetaDB(Path(key))
            _registry[key] = db
        return db
