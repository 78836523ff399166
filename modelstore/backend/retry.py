"""Layer 2: a ``Backend`` wrapper that retries transient failures (restic ``backend/retry``).

Only ``StorageError`` is retried: a missing object, a lost compare-and-swap or a bad key are
answers, not failures, and a full disk (``RepositoryFullError``) does not heal by waiting. The
delay doubles from ``base_delay`` up to ``max_delay``; after ``attempts`` tries the last error
is raised unchanged.

What can be replayed is: ``put`` of bytes, or of a seekable stream (rewound to where it
started); a non-seekable stream is tried once. ``get_stream`` and ``list`` are retried until
their first block or entry has been handed out; after that an error reaches the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from modelstore.backend.base import Backend, ObjectInfo, PutData
from modelstore.errors import RepositoryFullError, StorageError

__all__ = ["RetryBackend"]

log = logging.getLogger("modelstore.backend")

T = TypeVar("T")


class RetryBackend:
    """Retry ``inner``'s transient ``StorageError``s with exponential backoff.

    Args:
        inner: The backend to call (reachable as ``.inner``).
        attempts: Tries per call, the first included.
        base_delay: Seconds before the first retry; doubled for each later one.
        max_delay: Upper bound for one delay.
        sleep: The sleep function (tests pass a fake).
    """

    def __init__(
        self,
        inner: Backend,
        attempts: int = 4,
        base_delay: float = 0.05,
        *,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RetryBackend({self.inner!r}, attempts={self.attempts})"

    def _call(
        self,
        what: str,
        fn: Callable[[], T],
        attempts: int | None = None,
        rewind: Callable[[], None] | None = None,
    ) -> T:
        tries = self.attempts if attempts is None else attempts
        for attempt in range(1, tries + 1):
            try:
                return fn()
            except RepositoryFullError:
                raise
            except StorageError as exc:
                if attempt == tries:
                    raise
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                log.info(
                    "%s failed (%s); retry %d of %d in %.2fs",
                    what,
                    exc.message,
                    attempt,
                    tries - 1,
                    delay,
                )
                self._sleep(delay)
                if rewind is not None:
                    rewind()
        raise AssertionError("unreachable")  # pragma: no cover

    def put(
        self,
        key: str,
        data: PutData,
        *,
        overwrite: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """``inner.put``, retried if ``data`` can be replayed."""
        attempts: int | None = None
        rewind: Callable[[], None] | None = None
        if not isinstance(data, (bytes, bytearray, memoryview)):
            stream = data
            seekable = getattr(stream, "seekable", None)
            if callable(seekable) and seekable():
                start = int(stream.tell())  # type: ignore[attr-defined]

                def rewind() -> None:
                    stream.seek(start)  # type: ignore[attr-defined]

            else:
                attempts = 1
        return self._call(
            f"put {key}",
            lambda: self.inner.put(key, data, overwrite=overwrite, if_match=if_match),
            attempts,
            rewind,
        )

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """``inner.get``, retried."""
        return self._call(f"get {key}", lambda: self.inner.get(key, offset=offset, length=length))

    def get_stream(self, key: str) -> Iterator[bytes]:
        """``inner.get_stream``, retried until its first block is out."""
        return self._first_retried(f"get {key}", lambda: self.inner.get_stream(key))

    def stat(self, key: str) -> ObjectInfo | None:
        """``inner.stat``, retried."""
        return self._call(f"stat {key}", lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """``inner.list``, retried until its first entry is out."""
        return self._first_retried(f"list {prefix}", lambda: self.inner.list(prefix))

    def _first_retried(self, what: str, open_: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Open an iterator and take its first item, retrying both; then stream the rest."""
        done = object()

        def first() -> tuple[Iterator[T], object]:
            it = open_()
            return it, next(it, done)

        it, head = self._call(what, first)
        return self._chain(it, head, done)

    @staticmethod
    def _chain(it: Iterator[T], head: object, done: object) -> Iterator[T]:
        if head is done:
            return
        yield head  # type: ignore[misc]
        yield from it

    def delete(self, key: str) -> None:
        """``inner.delete``, retried."""
        self._call(f"delete {key}", lambda: self.inner.delete(key))
