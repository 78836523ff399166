"""Layer 2: a fault-injecting ``Backend`` wrapper for tests (kopia ``blobtesting/faulty.go``).

``FaultyBackend(inner, rules)`` passes every call to ``inner`` unless a ``Fault`` rule matches
it. A rule picks calls by method and key prefix, counts the matching calls, and acts on the
``nth`` one and the ``times - 1`` after it (``times=None``: all from the ``nth`` on). What it
does, in order: run ``callback``, sleep ``delay``, raise ``error`` (before the call, or after it
with ``after=True``: "the write happened but the caller saw an error"), and on reads
``corrupt`` (flip one byte) or ``short`` (truncate) the data returned. Reads here
break the backend contract on purpose, so the layers above can show they detect it.

Example::

    backend = FaultyBackend(MemoryBackend(), [
        Fault.fail("put", nth=3),                  # the 3rd put raises StorageError
        Fault.corrupt_read(prefix="packs/"),       # the first read of a pack is damaged
    ])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from modelstore.backend.base import Backend, ObjectInfo, PutData, Readable
from modelstore.errors import StorageError

__all__ = ["METHODS", "Fault", "FaultyBackend"]

#: the method names a ``Fault`` can select ("*" selects all)
METHODS = ("put", "get", "get_stream", "stat", "list", "delete")


@dataclass
class Fault:
    """One fault rule; see the module docstring.

    Attributes:
        method: ``|``-separated method names from ``METHODS``, or ``"*"``.
        prefix: Only calls whose key (``list``: whose prefix) starts with this.
        nth: The first matching call affected (1-based).
        times: How many matching calls are affected from the ``nth`` on (``None``: all).
        error: An exception (instance or class) to raise.
        after: Raise ``error`` after the inner call ran instead of before.
        corrupt: Flip a byte of what ``get``/``get_stream`` return, or of what ``put`` stores.
        short: Return less than was read: half of what ``get`` returns, or ``get_stream``
            with its last block cut in half.
        delay: Seconds to sleep before the call.
        callback: Called (with the method and key) before the call, e.g. to race a writer in.
        hits: How many calls this rule has affected so far.
    """

    method: str = "*"
    prefix: str = ""
    nth: int = 1
    times: int | None = 1
    error: BaseException | type[BaseException] | None = None
    after: bool = False
    corrupt: bool = False
    short: bool = False
    delay: float = 0.0
    callback: Callable[[str, str], None] | None = None
    hits: int = field(default=0, init=False)
    _seen: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        names = self.method.split("|")
        if self.method != "*" and not all(n in METHODS for n in names):
            raise ValueError(f"unknown backend method in fault rule: {self.method!r}")
        if self.nth < 1 or (self.times is not None and self.times < 1):
            raise ValueError("fault rule: nth and times must be at least 1")

    @classmethod
    def fail(
        cls,
        method: str,
        error: BaseException | type[BaseException] = StorageError,
        *,
        nth: int = 1,
        times: int | None = 1,
        prefix: str = "",
        after: bool = False,
    ) -> Fault:
        """Raise ``error`` on the ``nth`` matching call (and ``times - 1`` more)."""
        return cls(method, prefix, nth, times, error=error, after=after)

    @classmethod
    def corrupt_read(cls, prefix: str = "", *, nth: int = 1, times: int | None = 1) -> Fault:
        """Flip a byte in what ``get``/``get_stream`` return for keys under ``prefix``."""
        return cls("get|get_stream", prefix, nth, times, corrupt=True)

    @classmethod
    def short_read(cls, prefix: str = "", *, nth: int = 1, times: int | None = 1) -> Fault:
        """Return half of what ``get``/``get_stream`` read for keys under ``prefix``."""
        return cls("get|get_stream", prefix, nth, times, short=True)

    @classmethod
    def slow(cls, method: str, seconds: float, *, nth: int = 1, times: int | None = None) -> Fault:
        """Sleep ``seconds`` before matching calls (all of them by default)."""
        return cls(method, "", nth, times, delay=seconds)

    def _selects(self, method: str, key: str) -> bool:
        if self.method != "*" and method not in self.method.split("|"):
            return False
        return key.startswith(self.prefix)

    def _exception(self, method: str, key: str) -> BaseException:
        err = self.error
        if isinstance(err, BaseException):
            return err
        assert err is not None
        return err(f"injected fault in {method}({key!r})")


def _flip(data: bytes) -> bytes:
    if not data:
        return data
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


class _FlipFirst:
    """A stream wrapper that flips a byte in the first non-empty block read."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        block = self._src.read(size)
        if block and not self._done:
            self._done = True
            return _flip(bytes(block))
        return block


class FaultyBackend:
    """A ``Backend`` wrapper that injects the faults its rules describe.

    Args:
        inner: The backend doing the real work (reachable as ``.inner``).
        rules: The fault rules; more can be added with ``add``.
    """

    def __init__(self, inner: Backend, rules: Iterable[Fault] = ()) -> None:
        self.inner = inner
        self.rules: list[Fault] = list(rules)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultyBackend({self.inner!r}, {len(self.rules)} rules)"

    def add(self, rule: Fault) -> Fault:
        """Add ``rule`` and return it (to read its ``hits`` later)."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def _fire(self, method: str, key: str) -> list[Fault]:
        """Count this call against every rule; run the "before" part of those that fire."""
        fired: list[Fault] = []
        with self._lock:
            for r in self.rules:
                if not r._selects(method, key):
                    continue
                r._seen += 1
                if r._seen >= r.nth and (r.times is None or r._seen < r.nth + r.times):
                    r.hits += 1
                    fired.append(r)
        for r in fired:
            if r.callback is not None:
                r.callback(method, key)
            if r.delay:
                time.sleep(r.delay)
            if r.error is not None and not r.after:
                raise r._exception(method, key)
        return fired

    @staticmethod
    def _after(fired: Sequence[Fault], method: str, key: str) -> None:
        for r in fired:
            if r.error is not None and r.after:
                raise r._exception(method, key)

    def put(
        self,
        key: str,
        data: PutData,
        *,
        overwrite: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """``inner.put``, with faults."""
        fired = self._fire("put", key)
        if any(r.corrupt for r in fired):
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = _flip(bytes(data))
            else:
                data = _FlipFirst(data)
        info = self.inner.put(key, data, overwrite=overwrite, if_match=if_match)
        self._after(fired, "put", key)
        return info

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """``inner.get``, with faults."""
        fired = self._fire("get", key)
        data = self.inner.get(key, offset=offset, length=length)
        for r in fired:
            if r.corrupt:
                data = _flip(data)
            if r.short:
                data = data[: len(data) // 2]
        self._after(fired, "get", key)
        return data

    def get_stream(self, key: str) -> Iterator[bytes]:
        """``inner.get_stream``, with faults."""
        fired = self._fire("get_stream", key)
        blocks = self.inner.get_stream(key)
        return self._stream(fired, key, blocks)

    def _stream(self, fired: Sequence[Fault], key: str, blocks: Iterator[bytes]) -> Iterator[bytes]:
        corrupt = any(r.corrupt for r in fired)
        short = any(r.short for r in fired)
        pending: bytes | None = None
        for block in blocks:
            if corrupt and block:
                block, corrupt = _flip(block), False
            if pending is not None:
                yield pending
            pending = block
        if pending is not None:
            yield pending[: len(pending) // 2] if short else pending
        self._after(fired, "get_stream", key)

    def stat(self, key: str) -> ObjectInfo | None:
        """``inner.stat``, with faults."""
        fired = self._fire("stat", key)
        info = self.inner.stat(key)
        self._after(fired, "stat", key)
        return info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """``inner.list``, with faults (rules select on the prefix)."""
        fired = self._fire("list", prefix)
        items = self.inner.list(prefix)
        return self._list(fired, prefix, items)

    def _list(
        self, fired: Sequence[Fault], prefix: str, items: Iterator[ObjectInfo]
    ) -> Iterator[ObjectInfo]:
        yield from items
        self._after(fired, "list", prefix)

    def delete(self, key: str) -> None:
        """``inner.delete``, with faults."""
        fired = self._fire("delete", key)
        self.inner.delete(key)
        self._after(fired, "delete", key)
