"""Layer 2: an S3 bucket (or an S3-compatible server) as a backend, through boto3.

Credentials come from boto3's standard chain (environment, ``~/.aws``, instance roles), and
so does ``AWS_ENDPOINT_URL``; ``endpoint_url=`` sets one per backend. Keys live under
``prefix/`` in the bucket.

How the ``Backend`` contract maps onto S3:

* **Atomic puts** are S3's own: an object appears whole or not at all. Objects bigger than one
  part (``PART_SIZE``, 16 MiB) go up as a multipart upload, one part in memory at a time, and
  an upload that fails half-way is aborted.
* **Idempotent puts** ``HEAD`` first and skip the upload if the key exists; the write itself
  carries ``If-None-Match: *`` so a racing writer cannot replace an object either. Servers that
  reject that header get a plain put (remembered per backend): content-addressed keys make the
  race harmless.
* **Compare-and-swap** sends ``If-Match: <etag>`` (or ``If-None-Match: *`` for "only if
  absent") with ``PutObject`` / ``CompleteMultipartUpload``. S3 answers 412
  ``PreconditionFailed`` or 409 ``ConditionalRequestConflict`` to the loser, and 404 when an
  ``If-Match`` target is gone: all become ``RefConflictError``. A server without conditional
  writes cannot hold refs, and says so.
* **Ranged reads** use ``Range: bytes=a-b`` and check the length that came back.
* Etags are S3's (quotes stripped). botocore's own retries stay on (standard mode); wrap in
  ``RetryBackend`` for more.

Errors become one line each: a missing key is ``ObjectNotFoundError``; unreachable endpoints
and missing credentials are ``StorageError("cannot reach S3 at ...: ...")``; anything else S3
refuses is a ``StorageError`` naming the S3 error code.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

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
    read_full,
    short_read_error,
)
from modelstore.errors import (
    BadArgumentError,
    MsError,
    ObjectNotFoundError,
    RefConflictError,
    StorageError,
)

__all__ = ["MIN_PART_SIZE", "PART_SIZE", "S3Backend"]

#: multipart part size; objects up to this size go up in one ``PutObject``
PART_SIZE = 16 << 20
#: S3's smallest allowed part (all but the last)
MIN_PART_SIZE = 5 << 20
#: S3 allows 10,000 parts; the part size doubles every this many parts (16 MiB → ~1 TB)
_PARTS_PER_SIZE = 2000

_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}
# what servers without conditional writes answer to If-None-Match / If-Match on a write
_UNSUPPORTED_CODES = {"NotImplemented", "InvalidArgument", "InvalidRequest", "501"}


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _mtime(item: dict[str, Any]) -> float | None:
    """``LastModified`` (a datetime from boto3) as Unix seconds."""
    when = item.get("LastModified")
    return float(when.timestamp()) if when is not None else None


def _strip(etag: Any) -> str | None:
    return None if etag is None else str(etag).strip('"')


class S3Backend:
    """A ``Backend`` on ``s3://bucket/prefix``; see the module docstring and ``Backend``.

    Args:
        bucket: The bucket (it must exist).
        prefix: Keys are stored under ``prefix/`` (``""``: the bucket's root).
        endpoint_url: An S3-compatible endpoint (MinIO, moto, R2...); default: boto3's.
        client: A ready boto3 S3 client (then ``endpoint_url`` is ignored).
        part_size: Multipart part size (at least 5 MiB).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
        part_size: int = PART_SIZE,
    ) -> None:
        if not bucket or "/" in bucket:
            raise BadArgumentError(f"invalid S3 bucket name {bucket!r}")
        if part_size < MIN_PART_SIZE:
            raise BadArgumentError(f"S3 part size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = self.prefix + "/" if self.prefix else ""
        self.part_size = part_size
        self.client = client if client is not None else _make_client(endpoint_url)
        self.endpoint = str(getattr(self.client.meta, "endpoint_url", endpoint_url or "aws"))
        self._conditional_create = True  # False once the server rejected If-None-Match

    def __repr__(self) -> str:
        return f"S3Backend('s3://{self.bucket}/{self.prefix}', endpoint={self.endpoint!r})"

    # -- helpers -------------------------------------------------------------------------

    def _url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._base}{key}"

    @contextlib.contextmanager
    def _errors(self, doing: str, key: str = "") -> Iterator[None]:
        """Turn botocore exceptions into one-line modelstore errors."""
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
            ConnectionError,
            CredentialRetrievalError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, doing, key) from None
        except (
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            CredentialRetrievalError,
        ) as exc:
            raise StorageError(f"cannot reach S3 at {self.endpoint}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 {doing} {self._url(key)} failed: {exc}") from None

    def _client_error(self, exc: Any, doing: str, key: str) -> MsError:
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in _NOT_FOUND_CODES:
            return ObjectNotFoundError(f"object not found: {self._url(key)}")
        if code == "NoSuchBucket":
            return StorageError(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}")
        if code in _DENIED_CODES:
            return StorageError(
                f"S3 at {self.endpoint} refused {doing} {self._url(key)}: {code} "
                "(check your AWS credentials and the bucket's policy)"
            )
        return StorageError(f"S3 {doing} {self._url(key)} failed: {code}: {message}")

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
        from botocore.exceptions import ClientError

        check_key(key)
        cond: dict[str, str] = {}
        if if_match is not None:
            cond = {"IfNoneMatch": "*"} if if_match == "" else {"IfMatch": f'"{if_match}"'}
        elif not overwrite:
            have = self.stat(key)
            if have is not None:
                return have
            if self._conditional_create:
                cond = {"IfNoneMatch": "*"}
        try:
            with self._errors("put", key):
                try:
                    size, etag = self._upload(self._base + key, data, cond, if_match is None)
                except ClientError as exc:
                    code = _code(exc)
                    if if_match is not None and (
                        code in _PRECONDITION_CODES or code in _NOT_FOUND_CODES
                    ):
                        raise RefConflictError(
                            f"conflicting update of {key}: it changed since it was read (retry)"
                        ) from None
                    if if_match is None and code in _PRECONDITION_CODES:
                        raise _KeptExisting from None
                    raise
        except _KeptExisting:
            have = self.stat(key)
            if have is None:
                raise StorageError(
                    f"{self._url(key)} was deleted while it was being written; retry"
                ) from None
            return have
        return ObjectInfo(key, size, etag)

    def _final(
        self, call: Callable[..., Any], kwargs: dict[str, Any], cond: dict[str, str], idem: bool
    ) -> Any:
        """Make the call that publishes the object, with ``cond`` headers if the server can."""
        from botocore.exceptions import ClientError

        if not cond:
            return call(**kwargs)
        try:
            return call(**kwargs, **cond)
        except ClientError as exc:
            if _code(exc) not in _UNSUPPORTED_CODES and _status(exc) != 501:
                raise
            if not idem:
                raise StorageError(
                    f"the S3 server at {self.endpoint} does not support conditional writes "
                    f"(If-Match / If-None-Match), which refs need: {_code(exc)}"
                ) from None
        self._conditional_create = False
        return call(**kwargs)

    def _upload(
        self, full: str, data: PutData, cond: dict[str, str], idem: bool
    ) -> tuple[int, str | None]:
        """Upload ``data`` to ``full`` in one put or as a multipart upload: (size, etag)."""
        parts = self._parts(data)
        first = next(parts, b"")
        if len(first) < self.part_size or (
            isinstance(data, (bytes, bytearray, memoryview))
            and len(first) == memoryview(data).nbytes
        ):
            resp = self._final(
                self.client.put_object,
                {"Bucket": self.bucket, "Key": full, "Body": first},
                cond,
                idem,
            )
            return len(first), _strip(resp.get("ETag"))
        holder = [first]
        del first  # from here on only the part being uploaded is alive
        return self._multipart(full, _prepend(holder, parts), cond, idem)

    def _parts(self, data: PutData) -> Iterator[bytes | bytearray]:
        """``data`` cut into parts: part 1 is ``part_size`` (or all of a small object)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data).cast("B")
            if len(view) <= self.part_size:
                yield data if isinstance(data, bytes) else bytes(view)
                return
            offset, number = 0, 1
            while offset < len(view):
                size = self._part_size(number)
                yield bytes(view[offset : offset + size])
                offset += size
                number += 1
            return
        if not isinstance(data, Readable):
            raise BadArgumentError(
                f"cannot store a {type(data).__name__}: pass bytes or a binary stream"
            )
        number = 1
        while True:
            part = read_full(data, self._part_size(number))
            if not part and number > 1:
                return
            if isinstance(part, memoryview):
                part = bytes(part)
            elif not isinstance(part, (bytes, bytearray)):
                raise BadArgumentError("the stream given to put() returned text; open it 'rb'")
            empty = not part
            yield part
            del part  # before reading the next part: one part alive at a time
            if empty:
                return
            number += 1

    def _part_size(self, number: int) -> int:
        return self.part_size << min((number - 1) // _PARTS_PER_SIZE, 4)

    def _multipart(
        self,
        full: str,
        parts: Iterator[bytes | bytearray],
        cond: dict[str, str],
        idem: bool,
    ) -> tuple[int, str | None]:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
        try:
            done: list[dict[str, Any]] = []
            size = 0
            body = next(parts, None)
            while body is not None:
                number = len(done) + 1
                resp = self.client.upload_part(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
                )
                done.append({"ETag": resp["ETag"], "PartNumber": number})
                size += len(body)
                body = None  # let the part go before reading the next one
                body = next(parts, None)
            resp = self._final(
                self.client.complete_multipart_upload,
                {
                    "Bucket": self.bucket,
                    "Key": full,
                    "UploadId": upload_id,
                    "MultipartUpload": {"Parts": done},
                },
                cond,
                idem,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise
        return size, _strip(resp.get("ETag"))

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Read a byte range of ``key`` (see ``Backend.get``)."""
        from botocore.exceptions import ClientError

        check_key(key)
        check_range(offset, length)
        if length == 0:
            return empty_read(self.stat, key, offset, self._url(key))
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._base + key}
        if length is not None:
            kwargs["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            kwargs["Range"] = f"bytes={offset}-"
        with self._errors("get", key):
            try:
                resp = self.client.get_object(**kwargs)
            except ClientError as exc:
                if _code(exc) != "InvalidRange":
                    raise
                have = self.stat(key)  # the range starts at or past the end
                if have is None:
                    raise ObjectNotFoundError(f"object not found: {self._url(key)}") from None
                if offset == have.size and length is None:
                    return b""
                raise self._short(key, offset, length, have.size) from None
            with contextlib.closing(resp["Body"]) as body:
                data: bytes = body.read()
        want = length if length is not None else int(resp.get("ContentLength", len(data)))
        if len(data) != want:
            total = str(resp.get("ContentRange", "")).rpartition("/")[2]
            raise self._short(key, offset, length, int(total) if total.isdigit() else None)
        return data

    def _short(self, key: str, offset: int, length: int | None, size: int | None) -> StorageError:
        return short_read_error(self._url(key), offset, length, size)

    def get_stream(self, key: str) -> Iterator[bytes]:
        """Read ``key`` in blocks (see ``Backend.get_stream``)."""
        check_key(key)
        with self._errors("get", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._base + key)
        return self._blocks(key, resp)

    def _blocks(self, key: str, resp: Any) -> Iterator[bytes]:
        body = resp["Body"]
        want = int(resp.get("ContentLength", -1))
        got = 0
        try:
            with self._errors("get", key):
                for block in body.iter_chunks(STREAM_BLOCK):
                    got += len(block)
                    yield block
        finally:
            body.close()
        if want >= 0 and got != want:
            raise self._short(key, 0, want, want)

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and etag, or ``None`` (see ``Backend.stat``)."""
        from botocore.exceptions import ClientError

        check_key(key)
        with self._errors("stat", key):
            try:
                resp = self.client.head_object(Bucket=self.bucket, Key=self._base + key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND_CODES or _status(exc) == 404:
                    return None
                raise
        size = int(resp["ContentLength"])
        return ObjectInfo(key, size, _strip(resp.get("ETag")), _mtime(resp))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (see ``Backend.list``)."""
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._base + prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[len(self._base) :]
                    size = int(item.get("Size", 0))
                    if (key == "" or key.endswith("/")) and size == 0:
                        continue  # a "folder" marker made by a console
                    check_listed_key(key, self._url())
                    yield ObjectInfo(key, size, _strip(item.get("ETag")), _mtime(item))

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (see ``Backend.delete``)."""
        from botocore.exceptions import ClientError

        check_key(key)
        with self._errors("delete", key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._base + key)
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND_CODES:
                    raise


def _prepend(
    holder: list[bytes | bytearray], rest: Iterator[bytes | bytearray]
) -> Iterator[bytes | bytearray]:
    """Yield the one item in ``holder`` (taking it out, so no one keeps it), then ``rest``."""
    yield holder.pop()
    yield from rest


class _KeptExisting(Exception):
    """Internal: an idempotent put found the key already written by someone else."""


# one boto3 session per process: it caches the loaded service model and the credentials
_SESSION: Any = None
_SESSION_GUARD = threading.Lock()


def _make_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client with our retry, timeout and addressing settings."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise StorageError("S3 remotes need boto3: pip install boto3") from None
    custom = (
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=120,
        # custom endpoints (MinIO, moto, IP addresses) rarely serve virtual-host buckets
        s3={"addressing_style": "path"} if custom else None,
    )
    global _SESSION
    try:
        with _SESSION_GUARD:  # sessions are not thread-safe; the clients they make are
            if _SESSION is None:
                _SESSION = boto3.session.Session()
            return _SESSION.client("s3", endpoint_url=endpoint_url, config=config)
    except Exception as exc:  # bad endpoint URL, unknown region...
        raise StorageError(f"cannot reach S3 at {endpoint_url or 'aws'}: {exc}") from None
