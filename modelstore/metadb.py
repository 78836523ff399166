"""Layer 2: the LMDB metadata environment, with the discipline LMDB needs from Python.

- One environment per path per process, through a registry (LMDB forbids opening one file
  twice in a process), and never carried across ``fork()``: before a fork every environment
  is closed with no transaction in flight, the parent reopens it right after, and the child
  opens its own on first use (ML data loaders fork).
- ``read()`` gives a read-only transaction: readers never block and never wait for writers.
- ``write(fn)`` runs ``fn(txn)`` in one write transaction: one logical change, all or nothing.
  When the map fills, the transaction is aborted, the map doubled, and ``fn`` run again; past
  ``MAX_MAP_SIZE`` the error surfaces as ``RepositoryFullError``.
- Values are copied out of the map (py-lmdb returns ``bytes`` unless asked for buffers), and
  no generator yields while a transaction is open: cursors are drained into lists.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from modelstore.errors import RepositoryFullError, StorageError

__all__ = ["DBS", "MAX_MAP_SIZE", "MetaDB", "Txn", "open_metadb", "release_metadb"]

T = TypeVar("T")

#: sub-databases (docs/FORMAT.md §10).
DBS = ("meta", "objects", "chunks", "packs", "refs", "index", "reflog", "remote")
#: initial map size: virtual address space only (the file grows as data is written). Large,
#: because growing the map is only safe while no transaction is open in this process.
INITIAL_MAP_SIZE = 1 << 40
MAX_MAP_SIZE = 1 << 44


def _successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


#: below this much free space on the DB's filesystem, a failed commit is blamed on a full disk
LOW_SPACE = 1 << 20


def _disk_full(exc: lmdb.Error, path: Path) -> bool:
    """Whether an LMDB error comes from a full disk.

    LMDB reports a short write, which is what a full disk gives it, as ``EIO`` rather than
    ``ENOSPC``; a write error while the filesystem has (almost) no space left is taken as one.
    """
    if "No space left" in str(exc) or getattr(exc, "errno", 0) in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE


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

    def scan(self, db: str, fn: Callable[[bytes, bytes], None], prefix: bytes = b"") -> int:
        """Call ``fn(key, value)`` for every entry under ``prefix`` in key order; return how many.

        For passes over millions of entries (gc) without building the list ``items`` returns.
        ``fn`` must not open another transaction or wait for a write.
        """
        n = 0
        with self._txn.cursor(db=self._dbs[db]) as cur:
            if not cur.set_range(prefix):
                return 0
            for k, v in cur:
                if not k.startswith(prefix):
                    break
                fn(bytes(k), bytes(v))
                n += 1
        return n

    def last(self, db: str, prefix: bytes) -> tuple[bytes, bytes] | None:
        """The last ``(key, value)`` whose key starts with ``prefix``, or None (O(log n))."""
        upper = _successor(prefix)
        with self._txn.cursor(db=self._dbs[db]) as cur:
            found = cur.set_range(upper) if upper is not None else False
            ok = cur.prev() if found else cur.last()
            if not ok:
                return None
            k = bytes(cur.key())
            if not k.startswith(prefix):
                return None
            return k, bytes(cur.value())

    def count(self, db: str) -> int:
        """Number of entries in a sub-database."""
        return int(self._txn.stat(self._dbs[db])["entries"])


class MetaDB:
    """One LMDB environment (use ``open_metadb`` to get the per-process instance).

    Every transaction passes a gate that counts open transactions, so that the environment
    can be closed with nothing in flight: before ``fork()`` (py-lmdb refuses a second open of
    the same files in one process, and a child must never use its parent's environment) and
    while the map is grown (LMDB allows resizing only with no transaction open).
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.users = 0
        self.released = False
        self._init_sync()
        self._open()

    def _init_sync(self) -> None:
        self._write_lock = threading.Lock()
        self._gate = threading.Condition()
        self._active = 0
        self._paused = False
        self._closed = False
        self._fork_unsafe = False

    def _open(self) -> None:
        self.pid = os.getpid()
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=INITIAL_MAP_SIZE,
                max_dbs=len(DBS) + 4,
                subdir=True,
                readonly=self.readonly,
                create=not self.readonly,
                readahead=False,
                meminit=False,
                max_readers=256,
                lock=True,
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open the metadata database at {self.path}: {exc}") from None
        self.dbs = {name: self.env.open_db(name.encode(), create=not self.readonly) for name in DBS}
        self._closed = False

    @contextmanager
    def _using(self) -> Iterator[None]:
        with self._gate:
            while self._paused:
                self._gate.wait()
            if self._fork_unsafe:
                raise StorageError(
                    "this process was forked while a metadata transaction was open; "
                    "open the repository again after forking"
                )
            if self._closed:
                if self.released:
                    raise StorageError("this repository was closed; open it again")
                self._open()  # first use after a fork (in the child, or in the parent)
            self._active += 1
        try:
            yield
        finally:
            with self._gate:
                self._active -= 1
                if self._active == 0:
                    self._gate.notify_all()

    def _pause(self, timeout: float | None) -> bool:
        """Wait until no transaction is open and stop new ones; False on timeout."""
        with self._gate:
            while self._paused:
                self._gate.wait()
            self._paused = True  # new transactions wait from now on
            if not self._gate.wait_for(lambda: self._active == 0, timeout):
                self._paused = False
                self._gate.notify_all()
                return False
            return True

    def _resume(self) -> None:
        with self._gate:
            self._paused = False
            self._gate.notify_all()

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only snapshot; never waits for writers."""
        with self._using():
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
                with self._using():
                    txn = self.env.begin(write=True)
                    try:
                        result = fn(Txn(txn, self.dbs))
                        txn.commit()
                        return result
                    except lmdb.MapFullError:
                        txn.abort()
                    except lmdb.Error as exc:
                        txn.abort()
                        if _disk_full(exc, self.path):
                            raise RepositoryFullError(
                                f"no space left on the device writing the metadata database in "
                                f"{self.path}; free disk space and retry (everything already "
                                "committed is intact)"
                            ) from None
                        raise StorageError(
                            f"metadata database error in {self.path}: {exc}"
                        ) from None
                    except BaseException:
                        txn.abort()
                        raise
                self._grow()  # outside the gate: waits for every other transaction to end

    def _grow(self) -> None:
        size = int(self.env.info()["map_size"]) * 2
        if size > MAX_MAP_SIZE:
            raise RepositoryFullError(
                f"the metadata database in {self.path} is full at its largest map size "
                f"({size // 2} bytes); drop unreachable data with `ms gc`, or split the "
                "repository"
            )
        self._pause(None)
        try:
            self.env.set_mapsize(size)
        except lmdb.Error as exc:  # e.g. no address space left for a larger map
            raise StorageError(
                f"cannot grow the metadata database in {self.path} to {size} bytes: {exc}"
            ) from None
        finally:
            self._resume()

    def close(self) -> None:
        """Close the environment (only the registry should call this)."""
        self.env.close()
        self._closed = True


_registry: dict[str, MetaDB] = {}
_registry_lock = threading.Lock()
#: how long a fork waits for this process's open transactions to finish
FORK_DRAIN_SECONDS = 10.0
_paused_for_fork: list[MetaDB] = []


def _before_fork() -> None:
    # Close every environment with no transaction in flight; the parent reopens them right
    # after the fork and the child opens its own on first use.
    _registry_lock.acquire()
    for db in list(_registry.values()):
        if db._closed:
            continue
        if db._pause(FORK_DRAIN_SECONDS):
            db.close()
            _paused_for_fork.append(db)
        else:
            db._fork_unsafe_pending = True  # type: ignore[attr-defined]


def _after_fork_in_parent() -> None:
    try:
        for db in _paused_for_fork:
            db._resume()  # reopened lazily on next use, like in the child
        for db in _registry.values():
            db.__dict__.pop("_fork_unsafe_pending", None)
    finally:
        _paused_for_fork.clear()
        _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # the parent's may be held by a thread that is gone
    for db in _registry.values():
        unsafe = bool(db.__dict__.pop("_fork_unsafe_pending", False))
        was_closed = db in _paused_for_fork or db._closed
        db._init_sync()
        db._closed = was_closed
        db._fork_unsafe = unsafe or not was_closed
    _paused_for_fork.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def open_metadb(path: Path) -> MetaDB:
    """Return this process's environment for ``path``, opening it on first use.

    Every call must be paired with ``release_metadb``; the environment is closed when the
    last user releases it, so a long-lived process does not keep every repository it ever
    touched open (nor drag them all through each ``fork()``).
    """
    key = os.path.realpath(path)
    with _registry_lock:
        db = _registry.get(key)
        if db is None:
            db = MetaDB(Path(key))
            _registry[key] = db
        db.users += 1
        return db


def release_metadb(db: MetaDB) -> None:
    """Drop one user of ``db``; close it when none is left."""
    with _registry_lock:
        db.users -= 1
        if db.users > 0:
            return
        key = str(db.path)
        if _registry.get(key) is db:
            del _registry[key]
        db.released = True
    if db._pause(FORK_DRAIN_SECONDS):
        try:
            if not db._closed:
                db.close()
        finally:
            db._resume()
