"""Layer 2: a repository served by ``ms serve``, as a backend over HTTP (httpx).

``HttpBackend("http://host:port/REPO")`` maps each ``Backend`` method onto one route of
``modelstore.serve`` (see its docstring): ``GET/HEAD/PUT/DELETE REPO/o/KEY`` and
``GET REPO/list``. The server stores with ``LocalBackend``, so atomic puts, durability,
read-after-write and compare-and-swap are the server's, and hold across every client.

* **Idempotent puts** ``HEAD`` first and skip the upload if the key exists (the stream is not
  read); the server keeps an existing object too, if a racing writer got there first.
* **Compare-and-swap** sends ``X-MS-If-Match: ETAG`` (empty: only if absent), with the standard
  ``If-Match`` / ``If-None-Match: *`` beside it; the loser gets 412: ``RefConflictError``.
* **Streaming**: uploads from a stream go up as a chunked body, one ``STREAM_BLOCK`` at a time;
  ``get_stream`` reads the response in blocks. Ranged ``get`` uses ``Range: bytes=a-b`` and
  checks the length that came back.

Authentication: ``Authorization: Bearer TOKEN`` with the ``token`` option (the remote's config)
or else ``$MS_TOKEN``. Errors: 404 is ``ObjectNotFoundError``, 412 ``RefConflictError``, 422
(the server refused a pack that does not match its name) ``CorruptObjectError``, 401/403
``AccessDeniedError`` (a ``StorageError``), an unreachable server ``StorageError("cannot reach
...")``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelstore.backend.base import (
    STREAM_BLOCK,
    ObjectInfo,
    PutData,
    Readable,
    check_key,
    check_listed_key,
    check_prefix,
    check_range,
    empty_read,
    iter_source,
    short_read_error,
)
from modelstore.errors import (
    BadArgumentError,
    CorruptObjectError,
    MsError,
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFullError,
    StorageError,
)

__all__ = ["TOKEN_ENV", "AccessDeniedError", "HttpBackend"]

#: the environment variable holding the token when the remote's config has none
TOKEN_ENV = "MS_TOKEN"

_TIMEOUT = httpx.Timeout(600.0, connect=10.0, pool=60.0)


class AccessDeniedError(StorageError):
    """The server refused the token (missing, unknown, read-only or not for this repository)."""


class _SourceFailed(Exception):
    """Internal: reading the caller's stream failed (the error is kept to be re-raised)."""


def _seconds(value: object) -> float | None:
    """An mtime the server sent (JSON number or header text), or None if absent or bad."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _strip(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"') or None


def _message(resp: httpx.Response) -> tuple[str, str | None]:
    """The server's error message and code (``{"error": ..., "code": ...}``)."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        body = None
    header_code = resp.headers.get("x-ms-error-code")
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body.get("code")
        return body["error"], code if isinstance(code, str) else header_code
    try:
        text = resp.text.strip()[:200]
    except httpx.ResponseNotRead:
        text = ""
    return text or resp.reason_phrase or f"HTTP {resp.status_code}", header_code


class HttpBackend:
    """A ``Backend`` on an ``ms serve`` repository; see the module docstring and ``Backend``.

    Args:
        base_url: ``http(s)://host:port/REPO`` (a path prefix before ``REPO`` is allowed,
            for servers behind a proxy).
        token: The bearer token; default ``$MS_TOKEN``.
        client: An ``httpx.Client`` to use (tests; custom TLS or proxies); by default one is
            made here, with long read timeouts for big uploads.
    """

    def __init__(
        self, base_url: str, token: str | None = None, client: httpx.Client | None = None
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadArgumentError(f"not an http(s) URL: {base_url!r}")
        if parts.query or parts.fragment:
            raise BadArgumentError(f"remote URL {base_url!r} must not have a query or fragment")
        if not parts.path.strip("/"):
            raise BadArgumentError(
                f"remote URL {base_url!r} names no repository (http://host:port/REPO)"
            )
        self.base_url = base_url.rstrip("/")
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        self._headers = {"user-agent": "modelstore-http"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._own_client = client is None
        self.client = client if client is not None else httpx.Client(timeout=_TIMEOUT)

    def __repr__(self) -> str:
        return f"HttpBackend({self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP client (if it was made here)."""
        if self._own_client:
            self.client.close()

    def __enter__(self) -> HttpBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------

    def _url(self, key: str) -> str:
        return f"{self.base_url}/o/{key}"

    def _where(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def _transport_error(self, exc: httpx.HTTPError, doing: str, key: str) -> StorageError:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return StorageError(f"cannot reach {self.base_url}: {exc or type(exc).__name__}")
        return StorageError(
            f"{doing} {self._where(key)} failed: {type(exc).__name__}: {exc}".rstrip(": ")
        )

    def _request(
        self,
        method: str,
        url: str,
        doing: str,
        key: str,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request (body read); transport failures become ``StorageError``."""
        try:
            return self.client.request(
                method, url, headers={**self._headers, **(headers or {})}, **kwargs
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, doing, key) from None

    def _fail(self, resp: httpx.Response, doing: str, key: str) -> MsError:
        """The error for an unsuccessful response."""
        message, code = _message(resp)
        status = resp.status_code
        if status == 400:
            return BadArgumentError(message)
        if status == 401:
            return AccessDeniedError(
                f"{self.base_url}: authentication failed (set MS_TOKEN or a token in the remote "
                f"config): {message}"
            )
        if status == 403:
            if code == "read-only":
                return AccessDeniedError(
                    f"{self.base_url}: permission denied: read-only token ({doing} {key})"
                )
            if code == "repo" and "may not access" not in message:  # a HEAD: no body
                repo = self.base_url.rsplit("/", 1)[1]
                message = f"permission denied: the token may not access repository {repo!r}"
            return AccessDeniedError(f"{self.base_url}: {message}")
        if status == 404:
            return ObjectNotFoundError(f"object not found: {self._where(key)}")
        if status == 412:
            return RefConflictError(message)
        if status == 422:
            return CorruptObjectError(f"{self.base_url}: {message}")
        if status == 507:
            return RepositoryFullError(f"{self.base_url}: {message}")
        return StorageError(f"{doing} {self._where(key)} failed: HTTP {status}: {message}")

    def _short(self, key: str, offset: int, length: int | None, size: int | None) -> StorageError:
        return short_read_error(self._where(key), offset, length, size)

    # -- the Backend protocol ----------------------------------------------------------------

    def put(
        self,
        key: str,
        data: PutData,
        *,
        overwrite: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically (see ``Backend.put``)."""
        check_key(key)
        if not isinstance(data, (bytes, bytearray, memoryview, Readable)):
            raise BadArgumentError(
                f"cannot store a {type(data).__name__}: pass bytes or a readable binary stream"
            )
        if if_match is None and not overwrite:
            have = self.stat(key)
            if have is not None:
                return have
        headers: dict[str, str] = {"content-type": "application/octet-stream"}
        params: dict[str, str] = {}
        if overwrite or if_match is not None:
            params["overwrite"] = "1"
        if if_match is not None:
            headers["x-ms-if-match"] = if_match
            if if_match:
                headers["if-match"] = f'"{if_match}"'
            else:
                headers["if-none-match"] = "*"
        failure: list[BaseException] = []
        content: bytes | Iterator[bytes]
        if isinstance(data, bytes):
            content = data
        elif isinstance(data, (bytearray, memoryview)) and len(data) <= STREAM_BLOCK:
            content = bytes(data)
        else:
            content = self._body(data, failure)
        try:
            resp = self._request(
                "PUT", self._url(key), "put", key, headers=headers, params=params, content=content
            )
        except BaseException:
            if failure:
                raise failure[0] from None
            raise
        if failure:
            raise failure[0]
        if resp.status_code != 200:
            raise self._fail(resp, "put", key)
        try:
            body = resp.json()
            return ObjectInfo(key, int(body["size"]), body.get("etag"))
        except (ValueError, KeyError, TypeError):
            raise StorageError(
                f"put {self._where(key)}: malformed answer from the server"
            ) from None

    @staticmethod
    def _body(data: PutData, failure: list[BaseException]) -> Iterator[bytes]:
        """The upload body in ``STREAM_BLOCK`` blocks; a failing source is kept in ``failure``."""
        blocks = iter_source(data)
        while True:
            try:
                block = next(blocks, None)
            except Exception as exc:  # the caller's stream failed, not the server
                failure.append(exc)
                raise _SourceFailed() from exc
            if block is None:
                return
            yield block if isinstance(block, bytes) else bytes(block)

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Read a byte range of ``key`` (see ``Backend.get``)."""
        check_key(key)
        check_range(offset, length)
        if length == 0:
            return empty_read(self.stat, key, offset, self._where(key))
        headers: dict[str, str] = {}
        if length is not None:
            headers["range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["range"] = f"bytes={offset}-"
        resp = self._request("GET", self._url(key), "get", key, headers=headers)
        if resp.status_code == 416:
            total = resp.headers.get("content-range", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else None
            if size is not None and offset == size and length is None:
                return b""
            raise self._short(key, offset, length, size)
        if resp.status_code not in (200, 206):
            raise self._fail(resp, "get", key)
        data = resp.content
        size = len(data)
        if resp.status_code == 206:
            total = resp.headers.get("content-range", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else -1
        elif headers:  # the server ignored the range: cut it out here
            if offset > len(data):
                raise self._short(key, offset, length, len(data))
            data = data[offset : None if length is None else offset + length]
        want = length if length is not None else max(size - offset, 0)
        if len(data) != want:
            raise self._short(key, offset, length, size if size >= 0 else None)
        return data

    def get_stream(self, key: str) -> Iterator[bytes]:
        """Read ``key`` in blocks (see ``Backend.get_stream``)."""
        check_key(key)
        request = self.client.build_request("GET", self._url(key), headers=self._headers)
        try:
            resp = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "get", key) from None
        if resp.status_code != 200:
            try:
                resp.read()
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, "get", key) from None
            finally:
                resp.close()
            raise self._fail(resp, "get", key)
        return self._blocks(key, resp)

    def _blocks(self, key: str, resp: httpx.Response) -> Iterator[bytes]:
        length = resp.headers.get("content-length", "")
        want = int(length) if length.isdigit() else -1
        got = 0
        try:
            for block in resp.iter_bytes(STREAM_BLOCK):
                got += len(block)
                yield block
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "get", key) from None
        finally:
            resp.close()
        if want >= 0 and got != want:
            raise self._short(key, 0, want, want)

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and etag, or ``None`` (see ``Backend.stat``)."""
        check_key(key)
        resp = self._request("HEAD", self._url(key), "stat", key)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, "stat", key)
        size = resp.headers.get("x-ms-size") or resp.headers.get("content-length", "")
        if not size.isdigit():
            raise StorageError(f"stat {self._where(key)}: the server sent no size")
        mtime = _seconds(resp.headers.get("x-ms-mtime"))
        return ObjectInfo(key, int(size), _strip(resp.headers.get("etag")), mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (see ``Backend.list``)."""
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        url = f"{self.base_url}/list"
        ended = False
        try:
            with self.client.stream(
                "GET", url, params={"prefix": prefix}, headers=self._headers
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise self._fail(resp, "list", prefix)
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise StorageError(
                            f"list {self.base_url}: malformed answer from the server"
                        ) from None
                    if not isinstance(item, dict):
                        raise StorageError(f"list {self.base_url}: malformed answer")
                    if "error" in item:
                        raise StorageError(f"list {self.base_url}: {item['error']}")
                    if item.get("end"):
                        ended = True
                        break
                    key = check_listed_key(str(item.get("key")), self.base_url)
                    size, etag = item.get("size"), item.get("etag")
                    if not isinstance(size, int) or size < 0:
                        raise StorageError(f"list {self.base_url}: malformed answer")
                    tag = etag if isinstance(etag, str) else None
                    yield ObjectInfo(key, size, tag, _seconds(item.get("mtime")))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "list", prefix) from None
        if not ended:
            raise StorageError(f"list {self.base_url}: the listing was cut short")

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (see ``Backend.delete``)."""
        check_key(key)
        resp = self._request("DELETE", self._url(key), "delete", key)
        if resp.status_code not in (200, 204, 404):
            raise self._fail(resp, "delete", key)
