"""Layer 0: durable-write primitives for local files: directory fsync and early writeback.

``start_writeback`` is ``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)`` on Linux, a no-op
elsewhere: it asks the kernel to start writing a range to disk without waiting for it. Used
where the disk, not the CPU, is the limit (checkout of a large file): the flush then overlaps
decompression instead of all happening in the final ``fsync``. Measured not to pay for packs
during ``add``, where little is written (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["fsync_dir", "start_writeback"]


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
