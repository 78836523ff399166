"""Layer 2: a directory as a backend (a local disk, or a network filesystem mounted locally).

Each key is a file under ``root``; ``/`` in a key is a subdirectory, created lazily on the
first put that needs it. Writes follow borgstore ``backends/posixfs.py``: stream into a hidden
temp file (``.tmp-*``) in the target's own directory, ``fsync`` it, move it into place and
``fsync`` the directory, so a reader or a crash never exposes half an object. Leftover temp
files from crashed writers are skipped by ``list`` and removed when a backend is opened (once
they are older than ``temp_grace``, so a concurrent writer's file is never pulled away).

Moving into place differs by mode:

* idempotent puts (no ``overwrite``) use ``link(2)``, which refuses to replace, so a racing
  writer of the same key can never clobber an existing object and no lock is needed
  (filesystems without hard links fall back to the locked path below);
* overwrites, compare-and-swap puts and deletes take an exclusive ``flock`` on
  ``<root>/.lock`` around compare + ``rename(2)``, which makes CAS atomic between processes
  and threads.

Etags: objects up to ``ETAG_HASH_MAX`` bytes (refs, config) get a content hash, so a CAS can
never be fooled by a file rewritten within one timestamp tick; bigger ones (packs, which are
written once) get ``m<mtime_ns>-<size>-<inode>``, which costs no read. ``list`` reports no
etags (``None``); ``stat`` does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat as stat_mod
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelstore.backend.base import (
    STREAM_BLOCK,
    ObjectInfo,
    PutData,
    check_key,
    check_listed_key,
    check_prefix,
    check_range,
    iter_source,
)
from modelstore.errors import (
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFullError,
    StorageError,
)
from modelstore.fileio import BufferPool, DirectFileWriter, fsync_dir

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["ETAG_HASH_MAX", "LOCK_NAME", "TEMP_PREFIX", "LocalBackend"]

#: objects up to this size get a content-hash etag; bigger ones a metadata etag
ETAG_HASH_MAX = 1 << 20
#: name prefix of in-flight temp files (hidden: keys never start with '.')
TEMP_PREFIX = ".tmp-"
#: the lock file that serialises overwrites, CAS and deletes
LOCK_NAME = ".lock"

# flock() excludes other open file descriptions, but on NFS Linux emulates it with POSIX
# locks, which are per process; a per-root thread lock keeps threads apart there too.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()

# errors from link(2) meaning "this filesystem does not do hard links"
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


class _SourceError(Exception):
    """Internal: reading the caller's stream failed (its error is the ``__cause__``)."""


def _io_error(exc: OSError, doing: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryFullError(
            f"no space left on the device while {doing}; free disk space and retry"
        )
    return StorageError(f"I/O error while {doing}: {exc.strerror or exc}")


def _content_etag(data: bytes | bytearray) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _meta_etag(st: os.stat_result) -> str:
    return f"m{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


def _pread_all(fd: int, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        got = os.pread(fd, size - len(buf), len(buf))
        if not got:
            break
        buf += got
    return bytes(buf)


def _etag_fd(fd: int, st: os.stat_result) -> str:
    if st.st_size <= ETAG_HASH_MAX:
        return _content_etag(_pread_all(fd, st.st_size))
    return _meta_etag(st)


def _write_all(fd: int, block: bytes | memoryview) -> None:
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view) :]


class LocalBackend:
    """A ``Backend`` on a directory; see the module docstring and ``Backend``.

    Args:
        root: The directory (created on first write if missing).
        temp_grace: Seconds after which an abandoned temp file is removed on open.
    """

    def __init__(self, root: Path | str, *, temp_grace: float = 3600.0) -> None:
        self.root = Path(os.path.abspath(root))
        self._bufpool: BufferPool | None = None
        self._wpool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"storage root {self.root} exists and is not a directory")
        with _THREAD_LOCKS_GUARD:
            self._tlock = _THREAD_LOCKS.setdefault(os.path.realpath(self.root), threading.Lock())
        self.clean_temp(older_than=temp_grace)

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    # -- helpers -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the root's exclusive lock (threads and processes)."""
        lock_path = self.root / LOCK_NAME
        with self._tlock:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                self._makedirs(self.root)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing drops the flock

    @staticmethod
    def _makedirs(path: Path) -> None:
        """Create ``path`` and missing parents, each made durable in its parent."""
        missing: list[Path] = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            fsync_dir(d.parent)

    def _buffers(self) -> BufferPool:
        # created on first use and again in a forked child (threads are not forked)
        if self._bufpool is None or self._pid != os.getpid():
            self._bufpool = BufferPool(2)
            self._wpool = None
            self._pid = os.getpid()
        assert self._bufpool is not None
        return self._bufpool

    def _writer(self) -> ThreadPoolExecutor:
        self._buffers()
        if self._wpool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._wpool = ThreadPoolExecutor(1, thread_name_prefix="ms-local-write")
        return self._wpool

    def _write_temp(self, path: Path, data: PutData) -> tuple[Path, int, str]:
        """Stream ``data`` into a synced temp file beside ``path``: (temp, size, etag)."""
        tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            self._makedirs(path.parent)
            fd = os.open(tmp, flags, 0o644)
        try:
            hasher: hashlib.blake2b | None = hashlib.blake2b(digest_size=16)
            size = 0
            blocks = iter_source(data)
            # streams (packs) go through O_DIRECT from pooled buffers: on this VM a buffered
            # write + fsync runs ~4x slower; small bytes (refs, indexes) are written plainly
            direct = None
            if not isinstance(data, (bytes, bytearray, memoryview)):
                direct = DirectFileWriter(fd, self._buffers(), self._writer())
            try:
                while True:
                    try:
                        block = next(blocks, None)
                    except Exception as exc:  # the caller's stream failed, not our storage
                        raise _SourceError() from exc
                    if block is None:
                        break
                    if direct is not None:
                        direct.write(block)
                    else:
                        _write_all(fd, block)
                    size += len(block)
                    if hasher is not None:
                        if size <= ETAG_HASH_MAX:
                            hasher.update(block)
                        else:
                            hasher = None
            finally:
                if direct is not None:
                    direct.close()
            os.fsync(fd)
            etag = hasher.hexdigest() if hasher is not None else _meta_etag(os.fstat(fd))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp, size, etag

    def _current_etag(self, path: Path) -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            return _etag_fd(fd, st) if stat_mod.S_ISREG(st.st_mode) else None
        finally:
            os.close(fd)

    # -- the Backend protocol ------------------------------------------------------------

    def put(
        self,
        key: str,
        data: PutData,
        *,
        overwrite: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically (see ``Backend.put``)."""
        path = self._path(key)
        if if_match is None and not overwrite:
            have = self.stat(key)
            if have is not None:
                return have
        try:
            tmp, size, etag = self._write_temp(path, data)
            try:
                kept = self._move_into_place(key, tmp, path, overwrite, if_match)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            fsync_dir(path.parent)
        except _SourceError as exc:
            assert exc.__cause__ is not None
            raise exc.__cause__  # noqa: B904 - re-raise the caller's own error as it was
        except OSError as exc:
            raise _io_error(exc, f"storing {key} in {self.root}") from None
        if kept is not None:
            return kept
        return ObjectInfo(key, size, etag)

    def _move_into_place(
        self, key: str, tmp: Path, path: Path, overwrite: bool, if_match: str | None
    ) -> ObjectInfo | None:
        """Publish ``tmp`` as ``path``; returns the existing object's info if it was kept."""
        if if_match is None and not overwrite:
            try:
                os.link(tmp, path)
                return None
            except FileExistsError:
                return self.stat(key)
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
            with self._locked():  # no hard links here: check and rename under the lock
                if os.path.lexists(path):
                    return self.stat(key)
                os.replace(tmp, path)
                return None
        with self._locked():
            if if_match is not None:
                current = self._current_etag(path)
                if (current or "") != if_match:
                    raise RefConflictError(
                        f"conflicting update of {key}: it changed since it was read (retry)"
                    )
            os.replace(tmp, path)
        return None

    def _open(self, key: str) -> int:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"object not found: {key}") from None
        except OSError as exc:
            raise _io_error(exc, f"reading {key} from {self.root}") from None
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ObjectNotFoundError(f"object not found: {key}")
        return fd

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Read a byte range of ``key`` (see ``Backend.get``)."""
        check_range(offset, length)
        fd = self._open(key)
        try:
            size = os.fstat(fd).st_size
            end = size if length is None else offset + length
            if offset > size or end > size:
                raise StorageError(
                    f"short read of {key}: bytes {offset}..{end} asked, object has {size}"
                )
            want = end - offset
            buf = bytearray()
            while len(buf) < want:
                got = os.pread(fd, min(want - len(buf), 64 << 20), offset + len(buf))
                if not got:
                    raise StorageError(
                        f"short read of {key}: got {len(buf)} of {want} bytes at {offset}"
                    )
                buf += got
            return bytes(buf)
        except OSError as exc:
            raise _io_error(exc, f"reading {key} from {self.root}") from None
        finally:
            os.close(fd)

    def get_stream(self, key: str) -> Iterator[bytes]:
        """Read ``key`` in ``STREAM_BLOCK`` blocks (see ``Backend.get_stream``)."""
        fd = self._open(key)
        return self._blocks(key, fd)

    def _blocks(self, key: str, fd: int) -> Iterator[bytes]:
        try:
            while True:
                block = os.read(fd, STREAM_BLOCK)
                if not block:
                    return
                yield block
        except OSError as exc:
            raise _io_error(exc, f"reading {key} from {self.root}") from None
        finally:
            os.close(fd)

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and etag, or ``None`` (see ``Backend.stat``)."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _io_error(exc, f"reading {key} from {self.root}") from None
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                return None
            return ObjectInfo(key, st.st_size, _etag_fd(fd, st), st.st_mtime)
        except OSError as exc:
            raise _io_error(exc, f"reading {key} from {self.root}") from None
        finally:
            os.close(fd)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, without etags (see ``Backend.list``)."""
        check_prefix(prefix)
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return self._walk(base, prefix)

    def _walk(self, base: str, prefix: str) -> Iterator[ObjectInfo]:
        stack = [base]
        while stack:
            rel_dir = stack.pop()
            try:
                with os.scandir(self.root / rel_dir) as entries:
                    found = [(e.name, e.is_dir(), e) for e in entries]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise _io_error(exc, f"listing {self.root / rel_dir}") from None
            for name, is_dir, entry in found:
                if name.startswith("."):  # temp files, the lock, foreign hidden files
                    continue
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if is_dir:
                    if (rel + "/").startswith(prefix) or prefix.startswith(rel + "/"):
                        stack.append(rel)
                    continue
                if not rel.startswith(prefix):
                    continue
                check_listed_key(rel, str(self.root))
                try:
                    st = entry.stat()
                except FileNotFoundError:  # deleted while we listed
                    continue
                except OSError as exc:
                    raise _io_error(exc, f"listing {self.root / rel_dir}") from None
                yield ObjectInfo(rel, st.st_size, None, st.st_mtime)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (see ``Backend.delete``)."""
        path = self._path(key)
        try:
            with self._locked():
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    return
            fsync_dir(path.parent)
        except OSError as exc:
            raise _io_error(exc, f"deleting {key} from {self.root}") from None

    # -- maintenance ---------------------------------------------------------------------

    def clean_temp(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by crashed writers, if older than ``older_than`` seconds.

        Returns:
            How many were removed.
        """
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith(TEMP_PREFIX):
                    continue
                p = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.lstat(p).st_mtime <= cutoff:
                        os.unlink(p)
                        removed += 1
        return removed
