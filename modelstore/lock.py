"""Layer 2: the repository's writer lock; one writer at a time, readers never wait.

An ``flock`` on ``.ms/lock``: the kernel drops it when the holder dies, so a crashed ``ms``
never leaves a stale lock behind. The holder writes its pid and command into the file so a
waiting process can say who it is waiting for. A second writer polls until ``timeout`` and then
raises ``LockTimeoutError`` naming the holder.

The lock is re-entrant for the thread that holds it (a clean merge commits through
``Repository.commit`` under the same hold); another thread of the same process waits like
another process would, so two threads sharing one ``Repository`` never write at once (gc
relies on that as much as on the ``flock``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from modelstore.errors import LockTimeoutError, StorageError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "RepoLock"]

#: seconds a writer waits for another before giving up; ``MS_LOCK_TIMEOUT`` overrides it.
DEFAULT_LOCK_TIMEOUT = 60.0


class RepoLock:
    """An exclusive writer lock on a repository, re-entrant for the thread holding it."""

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        self.path = path
        if timeout is None:
            timeout = float(os.environ.get("MS_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
        self.timeout = timeout
        self._fd = -1
        self._depth = 0
        self._owner: int | None = None
        self._threads = threading.Lock()  # held by the owning thread while _depth > 0
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        """In a forked child, forget the parent's hold: the child does not own it."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._fd, self._depth, self._owner = -1, 0, None
            self._threads = threading.Lock()

    def holder(self) -> str:
        """Describe who holds the lock, from what it wrote into the file."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds."""
        self._after_fork()
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=max(self.timeout, 0.0)):
            raise LockTimeoutError(
                f"repository is locked by another thread of this process (pid {os.getpid()}); "
                f"gave up after {self.timeout:g}s"
            )
        try:
            self._flock(deadline)
        except BaseException:
            self._threads.release()
            raise
        self._owner = me

    def _flock(self, deadline: float) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open the repository lock {self.path}: {exc}") from None
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise StorageError(f"cannot lock the repository: {exc}") from None
                if time.monotonic() >= deadline:
                    who = self.holder()
                    os.close(fd)
                    raise LockTimeoutError(
                        f"repository is locked by {who}; gave up after {self.timeout:g}s "
                        "(wait for it to finish, or raise MS_LOCK_TIMEOUT)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        cmd = " ".join(os.path.basename(a) for a in sys.argv[:2]) or "python"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({cmd})\n".encode(), 0)
        except OSError:
            # the note is only a hint for waiters; on a full disk the lock must still work,
            # or `ms gc` could not run to free space
            pass
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        """Drop the lock (when the outermost holder releases it; any thread may)."""
        self._after_fork()
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
            self._owner = None
            self._threads.release()

    def __enter__(self) -> RepoLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
