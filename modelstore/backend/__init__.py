"""Layer 2: where repository data can live (a directory, S3, memory), behind one protocol.

``open_backend(url)`` turns a remote's URL into a ``Backend``:

============================  ===========================================================
``/path``, ``./path``         ``LocalBackend`` on that directory (local disk or NFS mount)
``file:///path``              the same
``s3://bucket/prefix``        ``S3Backend`` (option ``endpoint_url``; boto3 credentials)
``memory://name``             a process-wide named ``MemoryBackend`` (tests)
``http(s)://host:port/repo``  ``HttpBackend``: a repository served by ``ms serve``
                              (option ``token``, else ``$MS_TOKEN``)
============================  ===========================================================

Wrappers (``RetryBackend``, ``FaultyBackend``) implement the same protocol and are stacked by
the caller, never switched on by flags.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from modelstore.backend.base import Backend, ObjectInfo, check_key
from modelstore.backend.faulty import Fault, FaultyBackend
from modelstore.backend.local import LocalBackend
from modelstore.backend.memory import MemoryBackend
from modelstore.backend.retry import RetryBackend
from modelstore.errors import BadArgumentError

__all__ = [
    "Backend",
    "Fault",
    "FaultyBackend",
    "LocalBackend",
    "MemoryBackend",
    "ObjectInfo",
    "RetryBackend",
    "check_key",
    "in_parallel",
    "forget_memory_backend",
    "open_backend",
]

_MEMORY: dict[str, MemoryBackend] = {}
_MEMORY_GUARD = threading.Lock()

_OPTIONS = {
    "file": {"temp_grace"},
    "s3": {"endpoint_url", "client", "part_size"},
    "memory": set(),
    "http": {"token", "client"},
    "https": {"token", "client"},
}


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend a remote URL names (see the module docstring for the forms).

    Args:
        url: A path, ``file://``, ``s3://bucket/prefix``, ``memory://name`` or
            ``http(s)://host:port/repo`` URL.
        **options: Backend options: ``endpoint_url``, ``client``, ``part_size`` (S3);
            ``temp_grace`` (local); ``token``, ``client`` (http).

    Returns:
        The backend (S3 clients are created here, but nothing is contacted yet).

    Raises:
        BadArgumentError: The URL or an option is not understood.
    """
    if not isinstance(url, str) or not url.strip():
        raise BadArgumentError("empty remote URL")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = scheme or "file"
    if kind not in _OPTIONS:
        raise BadArgumentError(
            f"unsupported remote URL {url!r} (use a path, file://, s3://, http(s):// or memory://)"
        )
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        raise BadArgumentError(f"unknown option(s) for a {kind} remote: {', '.join(unknown)}")
    if not scheme:
        return LocalBackend(Path(url).expanduser(), **options)
    if kind in ("http", "https"):
        from modelstore.backend.http import HttpBackend

        return HttpBackend(url, **options)
    parts = urlsplit(url)
    if kind == "file":
        if parts.netloc not in ("", "localhost"):
            raise BadArgumentError(f"file:// URLs must name a local path: {url!r}")
        if not parts.path:
            raise BadArgumentError(f"file:// URL without a path: {url!r}")
        return LocalBackend(Path(unquote(parts.path)), **options)
    if kind == "s3":
        from modelstore.backend.s3 import S3Backend

        if not parts.netloc:
            raise BadArgumentError(f"S3 URL without a bucket: {url!r} (s3://bucket/prefix)")
        return S3Backend(parts.netloc, unquote(parts.path).strip("/"), **options)
    name = url.split("://", 1)[1]
    if not name:
        raise BadArgumentError("memory:// URLs need a name (memory://NAME)")
    with _MEMORY_GUARD:
        return _MEMORY.setdefault(name, MemoryBackend(name))


def forget_memory_backend(name: str) -> None:
    """Drop the process-wide ``memory://name`` store (its data is freed)."""
    with _MEMORY_GUARD:
        _MEMORY.pop(name, None)


#: transfers in flight at once (``MS_TRANSFERS`` overrides): latency hides behind each other
DEFAULT_TRANSFERS = 4


def in_parallel(fn: Callable[[Any], None], items: list[Any]) -> None:
    """Run ``fn`` over ``items`` on up to ``MS_TRANSFERS`` threads; re-raise the first error."""
    n = int(os.environ.get("MS_TRANSFERS", DEFAULT_TRANSFERS))
    if n <= 1 or len(items) <= 1:
        for it in items:
            fn(it)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(n, len(items)), thread_name_prefix="ms-transfer") as ex:
        for f in [ex.submit(fn, it) for it in items]:
            f.result()
