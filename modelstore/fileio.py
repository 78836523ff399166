"""Layer 0: durable-write primitives for local files: directory fsync and early writeback.

``start_writeback`` is ``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)`` on Linux, a no-op
elsewhere: it asks the kernel to start writing a range to disk without waiting for it. Used
where the disk, not the CPU, is the limit (checkout of a large file): the flush then overlaps
decompression instead of all happening in the final ``fsync``. Measured not to pay for packs
during ``add``, where little is written (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["DirectFileWriter", "direct_buffers", "fsync_dir", "start_writeback"]


def fsync_dir(path: Path) -> None:
    """Make a rename or create in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load() -> Callable[[int, int, int], None]:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return lambda fd, off, n: None

    def start(fd: int, off: int, n: int) -> None:
        fn(fd, off, n, 2)  # SYNC_FILE_RANGE_WRITE; a failure only loses the head start

    return start


start_writeback = _load()


class DirectFileWriter:
    """Sequential writer that bypasses the page cache (``O_DIRECT``) where it can.

    Checkout of a multi-GB file through the page cache pays twice: allocating fresh cache pages
    (first touch runs ~20x slower than warm memory here) and then flushing them all in the final
    ``fsync``. With ``O_DIRECT`` the data goes from two reused, page-aligned 8 MiB buffers
    straight to the disk on a writer thread, overlapping decompression. Filesystems that refuse
    ``O_DIRECT`` (tmpfs, some network filesystems) get ordinary buffered writes. The unaligned
    tail of a file is written with ``O_DIRECT`` switched off.
    """

    BLOCK = 8 << 20
    ALIGN = 4096

    def __init__(self, fd: int, buffers: list[mmap.mmap], pool: ThreadPoolExecutor) -> None:
        self.fd = fd
        self._bufs = buffers
        self._pool = pool
        self._cur = 0
        self._fill = 0
        self._pending: list[Future[None] | None] = [None] * len(buffers)
        self.direct = _try_direct(fd)

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``."""
        if not self.direct:
            _write_all(self.fd, memoryview(data))
            return
        view = memoryview(data)
        while view:
            buf = self._bufs[self._cur]
            n = min(len(view), self.BLOCK - self._fill)
            buf[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self.BLOCK:
                self._submit()

    def _submit(self) -> None:
        i = self._cur
        self._pending[i] = self._pool.submit(_write_all, self.fd, memoryview(self._bufs[i]))
        self._cur = (i + 1) % len(self._bufs)
        self._fill = 0
        prev = self._pending[self._cur]
        if prev is not None:  # wait until the next buffer is free again
            prev.result()
            self._pending[self._cur] = None

    def close(self) -> None:
        """Write what is buffered and wait for it (the caller fsyncs and closes the fd)."""
        try:
            for i in range(len(self._bufs)):
                p = self._pending[(self._cur + i) % len(self._bufs)]
                if p is not None:
                    p.result()
            if self.direct and self._fill:
                aligned = self._fill // self.ALIGN * self.ALIGN
                buf = memoryview(self._bufs[self._cur])
                if aligned:
                    _write_all(self.fd, buf[:aligned])
                fcntl.fcntl(
                    self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~_O_DIRECT
                )
                _write_all(self.fd, buf[aligned : self._fill])
        finally:
            self._pending = [None] * len(self._bufs)
            self._fill = 0


_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _try_direct(fd: int) -> bool:
    if not _O_DIRECT or os.environ.get("MS_NO_DIRECT_IO"):
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_DIRECT)
    except OSError:
        return False
    return True


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def direct_buffers() -> list[mmap.mmap]:
    """Two page-aligned buffers for ``DirectFileWriter`` (allocate once, reuse)."""
    return [mmap.mmap(-1, DirectFileWriter.BLOCK) for _ in range(2)]
