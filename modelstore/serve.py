"""Layer 5: ``ms serve``, remote repositories over HTTP, speaking the ``Backend`` protocol.

Each repository is a directory ``ROOT/REPO`` stored with ``LocalBackend``; the routes map one
to one onto ``Backend`` methods, so push, fetch and clone work unchanged against
``http://host:port/REPO`` through ``modelstore.backend.http.HttpBackend``:

=============================  ================================================================
``GET    /REPO/o/KEY``         ``get`` / ``get_stream``; ``Range: bytes=a-b`` answers 206, a
                               range starting at or past the end 416 (``Content-Range: */N``)
``HEAD   /REPO/o/KEY``         ``stat``: ``Content-Length``, ``X-MS-Size`` and ``ETag``
``PUT    /REPO/o/KEY``         ``put``; ``?overwrite=1``; compare-and-swap with
                               ``X-MS-If-Match: ETAG`` (empty: only if absent), or the standard
                               ``If-Match: "ETAG"`` / ``If-None-Match: *``
``DELETE /REPO/o/KEY``         ``delete`` (204, also for a missing key)
``GET    /REPO/list?prefix=``  ``list``: JSON lines ``{"key", "size", "etag"}``, then
                               ``{"end": true}`` (a listing without it was cut short)
=============================  ================================================================

Uploads are streamed to an anonymous temp file (bounded memory: uvicorn's flow control plus
one 1 MiB buffer), checked, and only then handed to ``LocalBackend.put``, which publishes them
atomically. *Verification before visibility*: a ``packs/xx/<id>.pack`` must carry a valid
trailer whose index hashes to ``<id>`` (``pack_id_of``), a ``packs/xx/<id>.idx`` must hash to
``<id>``, a ``meta/<id>.bundle`` must hash to ``<id>`` and hold only objects that decode and
match their ids, and a ``refs/<hex>`` must name a valid ref and hold an id; anything else is
refused with 422 (400 for a misnamed pack or bundle) and nothing is stored. Keys outside these
forms are opaque bytes, as in any ``Backend``.

Authentication: a tokens file (JSON ``{"TOKEN": {"user": "ana", "scope": "read"|"write",
"repos": ["*"] or ["name", ...]}}``), sent as ``Authorization: Bearer TOKEN`` and compared in
constant time against every configured token. No or an unknown token: 401; a read token on
PUT/DELETE, or a repository outside the token's list: 403. Errors are JSON
``{"error": "..."}`` (plus ``"code"`` for 403), never a traceback. Tokens travel in clear text:
outside 127.0.0.1, put a TLS-terminating proxy in front.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import stat as stat_mod
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelstore.backend.base import STREAM_BLOCK, ObjectInfo, check_key, check_prefix
from modelstore.backend.local import LocalBackend
from modelstore.errors import (
    BadArgumentError,
    CorruptObjectError,
    FormatError,
    MsError,
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFullError,
    StorageError,
    UnsupportedFormatError,
)
from modelstore.pack import INDEX_ENTRY, pack_id_of, read_pack_trailer

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_IDX_SIZE",
    "TokenInfo",
    "check_repo_name",
    "load_tokens",
    "main",
    "make_app",
    "serve",
]

log = logging.getLogger("modelstore.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: largest ``.idx`` accepted (it is hashed in memory): ~1.3 million chunks in one pack
MAX_IDX_SIZE = 64 << 20
#: where uploads are spooled before they are checked (hidden: never a repository name)
INCOMING_DIR = ".incoming"

_REPO_RE = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,99}")
_PACK_FILE_RE = re.compile(r"packs/([0-9a-f]{2})/([0-9a-f]{64})\.(pack|idx)")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_REF_VALUE_RE = re.compile(rb"[0-9a-f]{64}\n")
_HEX_REF_RE = re.compile(r"refs/(?:[0-9a-f]{2})+")
_BUNDLE_RE = re.compile(r"meta/[0-9a-f]{64}\.bundle")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}

Scope = Literal["read", "write"]


@dataclass(frozen=True)
class TokenInfo:
    """What one token may do.

    Attributes:
        user: Who holds it (for logs).
        scope: ``"read"`` (GET, HEAD, list) or ``"write"`` (also PUT and DELETE).
        repos: Repository names it may access; ``("*",)`` for all.
    """

    user: str
    scope: Scope
    repos: tuple[str, ...] = ("*",)

    def allows(self, repo: str) -> bool:
        """Whether this token may access repository ``repo``."""
        return "*" in self.repos or repo in self.repos


#: the identity used when authentication is switched off (``--no-auth``)
_ANONYMOUS = TokenInfo("anonymous", "write", ("*",))


def check_repo_name(name: str) -> str:
    """Validate a repository name and return it.

    Raises:
        BadArgumentError: Not lowercase ``[a-z0-9._-]`` (1-100 characters, no leading dot).
    """
    if not isinstance(name, str) or not _REPO_RE.fullmatch(name):
        raise BadArgumentError(
            f"invalid repository name {name!r}: use lowercase a-z, 0-9, '.', '_', '-' "
            "(not starting with '.', at most 100 characters)"
        )
    return name


def load_tokens(path: Path | str) -> dict[str, TokenInfo]:
    """Read a tokens file: ``{"TOKEN": {"user": ..., "scope": ..., "repos": [...]}}``.

    Raises:
        BadArgumentError: The file cannot be read or is malformed.
    """
    where = f"tokens file {path}"
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadArgumentError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadArgumentError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadArgumentError(f"{where} must hold a JSON object of token -> settings")
    tokens: dict[str, TokenInfo] = {}
    for token, spec in raw.items():
        shown = f"{token[:4]}..." if len(token) > 4 else "a short token"
        if not token or any(c.isspace() for c in token) or not token.isascii():
            raise BadArgumentError(f"{where}: tokens must be non-empty ASCII without spaces")
        if not isinstance(spec, dict):
            raise BadArgumentError(f"{where}: the settings of {shown} must be an object")
        unknown = sorted(set(spec) - {"user", "scope", "repos"})
        if unknown:
            raise BadArgumentError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        user, scope, repos = spec.get("user"), spec.get("scope"), spec.get("repos", ["*"])
        if not isinstance(user, str) or not user:
            raise BadArgumentError(f'{where}: {shown} needs a "user" name')
        if scope not in ("read", "write"):
            raise BadArgumentError(f'{where}: the scope of {user!r} must be "read" or "write"')
        if not isinstance(repos, list) or not repos or not all(isinstance(r, str) for r in repos):
            raise BadArgumentError(
                f'{where}: the repos of {user!r} must be a list of names, or ["*"]'
            )
        for name in repos:
            if name != "*":
                check_repo_name(name)
        tokens[token] = TokenInfo(user, scope, tuple(repos))
    return tokens


# -- errors -------------------------------------------------------------------------------------


class _HttpError(Exception):
    """Internal: answer with ``status`` and a JSON error."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _error(status: int, message: str, code: str | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if code is not None:
        body["code"] = code
        headers["x-ms-error-code"] = code  # HEAD answers carry no body
    return JSONResponse(body, status_code=status, headers=headers or None)


def _status_of(exc: MsError) -> int:
    if isinstance(exc, BadArgumentError):
        return 400
    if isinstance(exc, ObjectNotFoundError):
        return 404
    if isinstance(exc, RefConflictError):
        return 412
    if isinstance(exc, (FormatError, UnsupportedFormatError)):
        return 422
    if isinstance(exc, RepositoryFullError):
        return 507
    return 500


# -- the application ------------------------------------------------------------------------------


class _Server:
    """The state behind ``make_app``: the root, the tokens and one backend per repository."""

    def __init__(self, root: Path, tokens: Mapping[str, TokenInfo] | None) -> None:
        self.root = Path(os.path.abspath(root))
        # digests, so that every comparison takes the same time whatever the lengths
        self.tokens = [(_digest(t), info) for t, info in (tokens or {}).items()]
        self.auth = tokens is not None
        self.incoming = self.root / INCOMING_DIR
        self._backends: dict[str, LocalBackend] = {}
        self._guard = threading.Lock()

    # -- access ------------------------------------------------------------------------------

    def _identify(self, request: Request) -> TokenInfo:
        if not self.auth:
            return _ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise _HttpError(401, "authentication required (Authorization: Bearer TOKEN)")
        given_digest = _digest(given.strip())
        found: TokenInfo | None = None
        for token, info in self.tokens:  # every token is compared: no early exit
            if hmac.compare_digest(given_digest, token):
                found = info
        if found is None:
            raise _HttpError(401, "authentication failed: unknown token")
        return found

    def _open(self, request: Request, write: bool) -> tuple[str, LocalBackend]:
        """Authenticate, authorise and return ``(repo, backend)`` for this request."""
        who = self._identify(request)
        repo = check_repo_name(request.path_params["repo"])
        if not who.allows(repo):
            raise _HttpError(
                403,
                f"permission denied: the token of {who.user!r} may not access repository {repo!r}",
                "repo",
            )
        if write and who.scope != "write":
            raise _HttpError(
                403, f"permission denied: read-only token (user {who.user!r})", "read-only"
            )
        with self._guard:
            backend = self._backends.get(repo)
            if backend is None:
                backend = self._backends[repo] = LocalBackend(self.root / repo)
        return repo, backend

    def _clean(self, message: str) -> str:
        """Keep server paths out of messages sent to clients."""
        return message.replace(str(self.root) + os.sep, "").replace(str(self.root), "<root>")

    # -- wrapper -----------------------------------------------------------------------------

    def endpoint(
        self, fn: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: errors become JSON answers, never tracebacks."""

        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except _HttpError as exc:
                return _error(exc.status, exc.message, exc.code)
            except MsError as exc:
                status = _status_of(exc)
                if status == 500:
                    log.warning("%s %s: %s", request.method, request.url.path, exc.message)
                return _error(status, self._clean(exc.message))
            except ClientDisconnect:
                log.info("%s %s: client went away", request.method, request.url.path)
                return _error(400, "client disconnected before the request body was complete")
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return _error(500, "internal server error (see the server log)")

        return handler

    # -- routes ------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        """``GET /``: who we are (no authentication needed; nothing about the repositories)."""
        return JSONResponse({"service": "modelstore", "auth": self.auth})

    async def obj(self, request: Request) -> Response:
        """``/REPO/o/KEY``: dispatch on the method."""
        method = request.method
        if method in ("GET", "HEAD"):
            _, backend = await run_in_threadpool(self._open, request, False)
            key = check_key(request.path_params["key"])
            if method == "HEAD":
                return await run_in_threadpool(self._head, backend, key)
            return await run_in_threadpool(self._get, backend, key, request.headers.get("range"))
        _, backend = await run_in_threadpool(self._open, request, True)
        key = check_key(request.path_params["key"])
        if method == "DELETE":
            await run_in_threadpool(backend.delete, key)
            return Response(status_code=204)
        return await self._put(request, backend, key)

    async def listing(self, request: Request) -> Response:
        """``GET /REPO/list?prefix=``: JSON lines, then an end marker."""
        _, backend = await run_in_threadpool(self._open, request, False)
        prefix = check_prefix(request.query_params.get("prefix", ""))
        return StreamingResponse(
            self._list_lines(backend, prefix), media_type="application/x-ndjson"
        )

    # -- GET / HEAD --------------------------------------------------------------------------

    @staticmethod
    def _info_headers(info: ObjectInfo) -> dict[str, str]:
        headers = {"x-ms-size": str(info.size), "accept-ranges": "bytes"}
        if info.etag:
            headers["etag"] = f'"{info.etag}"'
        if info.mtime is not None:  # the server's clock: what remote gc ages objects by
            headers["x-ms-mtime"] = repr(info.mtime)
        return headers

    def _head(self, backend: LocalBackend, key: str) -> Response:
        info = backend.stat(key)
        if info is None:
            raise ObjectNotFoundError(f"object not found: {key}")
        headers = self._info_headers(info)
        headers["content-length"] = str(info.size)
        return Response(status_code=200, headers=headers)

    def _get(self, backend: LocalBackend, key: str, range_header: str | None) -> Response:
        path = backend.root / key  # key was checked: no escape from the repository
        try:
            # a file object, not a bare fd: it is closed even if the body is never sent
            f = open(path, "rb", buffering=0)  # closed by _file_blocks
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"object not found: {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from None
        try:
            st = os.fstat(f.fileno())
            if not stat_mod.S_ISREG(st.st_mode):
                raise ObjectNotFoundError(f"object not found: {key}")
            size = st.st_size
            info = backend.stat(key)
            headers = self._info_headers(ObjectInfo(key, size, info.etag if info else None))
            span = _parse_range(range_header, size)
        except BaseException:
            f.close()
            raise
        if span == "unsatisfiable":
            f.close()
            return _error(
                416,
                f"range {range_header} lies past the end of {key} ({size} bytes)",
                **{"content-range": f"bytes */{size}"},
            )
        start, end, status = 0, size, 200
        if span is not None:
            start, end = span
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        headers["content-length"] = str(end - start)
        return StreamingResponse(
            _file_blocks(f, start, end),
            status_code=status,
            headers=headers,
            media_type="application/octet-stream",
        )

    @staticmethod
    def _list_lines(backend: LocalBackend, prefix: str) -> Iterator[bytes]:
        buf = bytearray()
        count = 0
        try:
            for info in backend.list(prefix):
                line = {"key": info.key, "size": info.size, "etag": info.etag, "mtime": info.mtime}
                buf += json.dumps(line, separators=(",", ":")).encode() + b"\n"
                count += 1
                if len(buf) >= 1 << 16:
                    yield bytes(buf)
                    buf.clear()
        except MsError as exc:
            buf += json.dumps({"error": exc.message.replace(str(backend.root), "<repo>")}).encode()
            yield bytes(buf) + b"\n"
            return
        buf += json.dumps({"end": True, "count": count}).encode() + b"\n"
        yield bytes(buf)

    # -- PUT ---------------------------------------------------------------------------------

    async def _put(self, request: Request, backend: LocalBackend, key: str) -> Response:
        overwrite = request.query_params.get("overwrite", "") in ("1", "true", "yes")
        if_match = _if_match(request)
        pack_file = _pack_file(key)
        if if_match is None and not overwrite:
            have = await run_in_threadpool(backend.stat, key)
            if have is not None:  # content-addressed: already there, the body is not needed
                async for _ in request.stream():
                    pass
                return JSONResponse(_info_json(have))
        await run_in_threadpool(self.incoming.mkdir, parents=True, exist_ok=True)
        spool = await run_in_threadpool(tempfile.TemporaryFile, "w+b", 0, dir=self.incoming)
        try:
            buf = bytearray()
            async for piece in request.stream():
                buf += piece
                if len(buf) >= STREAM_BLOCK:
                    await run_in_threadpool(_write_all, spool, bytes(buf))
                    buf.clear()
            if buf:
                await run_in_threadpool(_write_all, spool, bytes(buf))
            del buf
            info = await run_in_threadpool(
                self._store, backend, key, spool, pack_file, overwrite, if_match
            )
        except OSError as exc:
            raise _spool_error(exc, key) from None
        finally:
            spool.close()
        return JSONResponse(_info_json(info))

    @staticmethod
    def _store(
        backend: LocalBackend,
        key: str,
        spool: IO[bytes],
        pack_file: tuple[str, str] | None,
        overwrite: bool,
        if_match: str | None,
    ) -> ObjectInfo:
        """Check the spooled upload (packs, indexes, bundles, refs), then publish it atomically."""
        if pack_file is not None:
            _verify_pack_file(key, spool.fileno(), *pack_file)
        else:
            _verify_metadata(key, spool.fileno())
        spool.seek(0)
        return backend.put(key, spool, overwrite=overwrite, if_match=if_match)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _info_json(info: ObjectInfo) -> dict[str, Any]:
    return {"key": info.key, "size": info.size, "etag": info.etag}


def _write_all(f: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


def _spool_error(exc: OSError, key: str) -> StorageError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryFullError(f"the server is out of disk space while receiving {key}")
    return StorageError(f"the server failed to receive {key}: {exc.strerror or exc}")


def _if_match(request: Request) -> str | None:
    """The compare-and-swap condition: ``None`` (none), ``""`` (only if absent) or an etag."""
    h = request.headers
    if "x-ms-if-match" in h:
        return h["x-ms-if-match"].strip()
    if h.get("if-none-match", "").strip() == "*":
        return ""
    if "if-match" in h:
        value = h["if-match"].strip()
        if value.startswith("W/"):
            value = value[2:]
        return value.strip('"')
    return None


def _pack_file(key: str) -> tuple[str, str] | None:
    """``(id_hex, "pack"|"idx")`` for pack and index keys, ``None`` for others.

    Raises:
        BadArgumentError: A ``.pack``/``.idx`` under ``packs/`` not named ``packs/xx/<id>``.
    """
    if not (key.startswith("packs/") and key.endswith((".pack", ".idx"))):
        return None
    m = _PACK_FILE_RE.fullmatch(key)
    if m is None or m.group(1) != m.group(2)[:2]:
        raise BadArgumentError(
            f"invalid pack file name {key!r}: use packs/<first 2 hex digits>/<64 hex digit "
            "pack id>.pack or .idx"
        )
    return m.group(2), m.group(3)


def _verify_pack_file(key: str, fd: int, id_hex: str, kind: str) -> None:
    """Check that an uploaded pack or index matches the id in its name.

    Raises:
        FormatError: It is not a well-formed pack or index.
        CorruptObjectError: Its index does not hash to ``id_hex``.
    """
    size = os.fstat(fd).st_size
    if kind == "pack":
        index, _ = read_pack_trailer(fd, size)
    else:
        if size % INDEX_ENTRY.size or size > MAX_IDX_SIZE:
            raise FormatError(f"{key} is not a pack index ({size} bytes)")
        index = os.pread(fd, size, 0)
        if len(index) != size:
            raise FormatError(f"{key} shrank while it was checked")
    if pack_id_of(index).hex() != id_hex:
        raise CorruptObjectError(
            f"refused {key}: its index hashes to {pack_id_of(index).hex()[:16]}..., not to the "
            "id in its name"
        )


def _verify_metadata(key: str, fd: int) -> None:
    """Check an uploaded metadata bundle or ref (FORMAT §12) before it becomes visible.

    A bundle must be named ``meta/<id>.bundle``, hash to that id and hold only objects that
    decode and match their ids; a ref key made of hex digits must be a valid ref name in hex,
    holding 64 hex digits and a newline (other keys under ``refs/`` are not modelstore's and
    stay opaque). Clients check all of this again when they fetch; refusing it here keeps a
    remote clean for everyone.

    Raises:
        BadArgumentError: A ``.bundle`` under ``meta/`` not named by its 64-hex-digit id.
        FormatError: It is malformed (``CorruptObjectError``: an object or the bundle does not
            match its id).
    """
    from modelstore.objects import decode_object
    from modelstore.refs import check_ref_name
    from modelstore.sync import MAX_BUNDLE, parse_bundle

    size = os.fstat(fd).st_size
    if key.startswith("meta/") and key.endswith(".bundle"):
        if _BUNDLE_RE.fullmatch(key) is None:
            raise BadArgumentError(
                f"invalid bundle name {key!r}: use meta/<64 hex digit id>.bundle"
            )
        if size > MAX_BUNDLE:
            raise FormatError(f"refused {key}: a bundle is at most {MAX_BUNDLE} bytes")
        for oid, stored in parse_bundle(key, os.pread(fd, size, 0)):
            try:
                decode_object(stored, expect_id=oid)
            except FormatError as exc:
                raise type(exc)(f"refused {key}: object {oid.hex()[:16]}: {exc.message}") from None
    elif _HEX_REF_RE.fullmatch(key) is not None:  # other keys under refs/ are not ours
        try:
            check_ref_name(bytes.fromhex(key.removeprefix("refs/")).decode())
        except (ValueError, BadArgumentError):
            raise FormatError(f"refused {key}: not a valid ref name in hex") from None
        if _REF_VALUE_RE.fullmatch(os.pread(fd, 66, 0) if size == 65 else b"") is None:
            raise FormatError(f"refused {key}: a ref holds 64 hex digits and a newline")


def _parse_range(
    header: str | None, size: int
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, end)`` (end exclusive) for a single ``bytes=`` range, clipped to ``size``.

    ``None`` when there is no usable Range header (the whole object is sent, as RFC 9110
    asks for headers it cannot parse); ``"unsatisfiable"`` when it starts at or past the end.
    """
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first:
        if not last:
            return None
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = size if not last else min(size, int(last) + 1)
    return start, end


def _file_blocks(f: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    """Yield ``f``'s bytes ``start..end`` in ``STREAM_BLOCK`` blocks, then close it."""
    with f:
        fd = f.fileno()
        pos = start
        while pos < end:
            block = os.pread(fd, min(STREAM_BLOCK, end - pos), pos)
            if not block:  # cannot happen to a published (never rewritten) file
                log.error("object shrank while it was being sent")
                return
            pos += len(block)
            yield block


def make_app(root: Path, tokens: Mapping[str, TokenInfo] | None) -> Starlette:
    """The ASGI application serving the repositories under ``root``.

    Args:
        root: The directory holding one subdirectory per repository.
        tokens: Token → what it may do (see ``load_tokens``); ``None`` switches
            authentication off (everyone may read and write: local demos only).

    Returns:
        A Starlette application (run it with any ASGI server; ``serve`` uses uvicorn).
    """
    server = _Server(root, tokens)

    async def on_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %r", request.method, request.url.path, exc)
        return _error(500, "internal server error (see the server log)")

    routes = [
        Route("/", server.endpoint(server.index), methods=["GET"]),
        Route(
            "/{repo}/o/{key:path}",
            server.endpoint(server.obj),
            methods=["GET", "HEAD", "PUT", "DELETE"],
        ),
        Route("/{repo}/list", server.endpoint(server.listing), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={Exception: on_error})
    app.state.ms = server
    return app


def serve(
    root: Path | str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tokens_file: Path | str | None = None,
    *,
    no_auth: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the repositories under ``root`` on ``http://host:port/REPO`` until interrupted.

    Args:
        root: An existing directory; each subdirectory is one repository (created on the
            first push).
        host: The address to listen on.
        port: The TCP port.
        tokens_file: The tokens file (see ``load_tokens``); required unless ``no_auth``.
        no_auth: Switch authentication off; only allowed on a loopback address.
        log_level: uvicorn's log level.

    Raises:
        BadArgumentError: ``root`` is not a directory, or the auth settings are wrong.
    """
    import uvicorn

    root = Path(root).expanduser()
    if not root.is_dir():
        raise BadArgumentError(f"{root} is not a directory (create it first)")
    if no_auth and tokens_file is not None:
        raise BadArgumentError("pass either --tokens FILE or --no-auth, not both")
    if not no_auth and tokens_file is None:
        raise BadArgumentError(
            "ms serve needs --tokens FILE (or --no-auth, for a local demo on 127.0.0.1)"
        )
    if no_auth and host not in _LOOPBACK:
        raise BadArgumentError(
            f"--no-auth is only allowed on 127.0.0.1 (not {host}): anyone could write"
        )
    tokens = load_tokens(tokens_file) if tokens_file is not None else None
    app = make_app(root, tokens)
    auth = f"{len(tokens)} token(s)" if tokens is not None else "NO authentication"
    print(
        f"ms serve: repositories under {root.resolve()} on http://{host}:{port}/REPO ({auth})",
        file=sys.stderr,
        flush=True,
    )
    if host not in _LOOPBACK:
        print(
            "ms serve: tokens travel in clear text over http: put a TLS proxy in front",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        access_log=False,
        timeout_keep_alive=75,  # longer than clients keep idle connections: they close first
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m modelstore.serve ROOT [--host H] [--port P] (--tokens FILE | --no-auth)``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m modelstore.serve", description="Serve modelstore remotes over HTTP."
    )
    parser.add_argument("root", nargs="?", default=".", help="directory of repositories")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--tokens", dest="tokens_file", help="the tokens file (JSON)")
    parser.add_argument("--no-auth", action="store_true", help="no authentication (127.0.0.1)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        serve(
            args.root,
            args.host,
            args.port,
            args.tokens_file,
            no_auth=args.no_auth,
            log_level=args.log_level,
        )
    except MsError as exc:
        print(f"ms serve: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
