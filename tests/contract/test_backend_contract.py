"""The Backend contract (modelstore/backend/base.py), checked on every implementation."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from modelstore.backend import Backend, LocalBackend, MemoryBackend, open_backend
from modelstore.backend.base import MAX_KEY_LENGTH, check_key
from modelstore.backend.local import TEMP_PREFIX
from modelstore.errors import (
    BadArgumentError,
    ObjectNotFoundError,
    RefConflictError,
    StorageError,
)
from tests.conftest import make_data

MiB = 1 << 20

BAD_KEYS = [
    "",
    "../x",
    "a/../b",
    "/abs",
    "a//b",
    "a/",
    "./a",
    ".hidden",
    "Upper",
    "a b",
    " a",
    "a\0b",
    "a\\b",
    "a\nb",
    "x" * (MAX_KEY_LENGTH + 1),
]


class GenStream:
    """A generated, non-seekable stream of ``size`` bytes, at most 1 MiB per read."""

    def __init__(self, size: int, seed: int = 7) -> None:
        self.size = size
        self.pos = 0
        self._base = make_data(MiB, seed)
        self._unit: bytes = b""
        self._unit_no = -1
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        no, off = divmod(self.pos, MiB)
        if no != self._unit_no:  # each MiB differs, so misordered parts are caught
            self._unit = no.to_bytes(8, "little") + self._base[8:]
            self._unit_no = no
        take = min(MiB - off, self.size - self.pos)
        if n >= 0:
            take = min(take, n)
        out = self._unit[off : off + take]
        self.pos += take
        self.sha.update(out)
        return out


# -- put / get ---------------------------------------------------------------------------


def test_put_get_round_trip(backend: Backend) -> None:
    data = make_data(100_000, 1)
    info = backend.put("packs/ab/abcdef", data)
    assert info.key == "packs/ab/abcdef"
    assert info.size == len(data)
    assert backend.get("packs/ab/abcdef") == data
    assert backend.put("empty", b"").size == 0
    assert backend.get("empty") == b""


def test_put_accepts_bytearray_memoryview_and_streams(backend: Backend) -> None:
    import io

    backend.put("a", bytearray(b"bytearray"))
    backend.put("b", memoryview(b"xxmemoryview")[2:])
    backend.put("c", io.BytesIO(b"stream"))
    assert [backend.get(k) for k in "abc"] == [b"bytearray", b"memoryview", b"stream"]
    with pytest.raises(BadArgumentError):
        backend.put("d", "text")  # type: ignore[arg-type]


def test_put_without_overwrite_keeps_existing_content(backend: Backend) -> None:
    first = backend.put("chunks/x", b"original")
    again = backend.put("chunks/x", b"something else")
    assert backend.get("chunks/x") == b"original"
    assert again.size == len(b"original")
    assert again.etag == first.etag


def test_put_without_overwrite_does_not_read_the_stream_if_key_exists(backend: Backend) -> None:
    backend.put("k", b"v")

    class Exploding:
        def read(self, n: int = -1) -> bytes:
            raise AssertionError("the stream was read")

    assert backend.put("k", Exploding()).size == 1


def test_put_overwrite_replaces(backend: Backend) -> None:
    backend.put("config", b"v1")
    info = backend.put("config", b"version 2", overwrite=True)
    assert info.size == 9
    assert backend.get("config") == b"version 2"
    assert backend.stat("config") == info


def test_ranged_get(backend: Backend) -> None:
    data = make_data(10_000, 2)
    backend.put("obj", data)
    assert backend.get("obj", offset=100, length=50) == data[100:150]
    assert backend.get("obj", offset=9_000) == data[9_000:]
    assert backend.get("obj", offset=0, length=10_000) == data
    assert backend.get("obj", offset=10_000) == b""
    assert backend.get("obj", offset=5, length=0) == b""


@pytest.mark.parametrize(("offset", "length"), [(9_990, 20), (10_001, None), (20_000, 5)])
def test_ranged_get_past_the_end_is_a_storage_error(
    backend: Backend, offset: int, length: int | None
) -> None:
    backend.put("obj", make_data(10_000, 2))
    with pytest.raises(StorageError, match="short read"):
        backend.get("obj", offset=offset, length=length)


def test_negative_range_is_a_bad_argument(backend: Backend) -> None:
    backend.put("obj", b"abc")
    with pytest.raises(BadArgumentError):
        backend.get("obj", offset=-1)
    with pytest.raises(BadArgumentError):
        backend.get("obj", length=-2)


def test_get_missing_raises_object_not_found(backend: Backend) -> None:
    with pytest.raises(ObjectNotFoundError):
        backend.get("nope")
    with pytest.raises(ObjectNotFoundError):
        backend.get("nope", offset=3, length=2)
    with pytest.raises(ObjectNotFoundError):
        backend.get_stream("nope")  # raised by the call, before iterating


def test_a_directory_like_prefix_is_not_an_object(backend: Backend) -> None:
    backend.put("dir/file", b"x")
    assert backend.stat("dir") is None
    with pytest.raises(ObjectNotFoundError):
        backend.get("dir")


# -- stat / list / delete ----------------------------------------------------------------


def test_stat(backend: Backend) -> None:
    assert backend.stat("refs/heads/main") is None
    info = backend.put("refs/heads/main", b"0123456789")
    st = backend.stat("refs/heads/main")
    assert st is not None
    assert (st.key, st.size) == ("refs/heads/main", 10)
    assert st.etag and st.etag == info.etag


def test_etag_changes_with_content(backend: Backend) -> None:
    a = backend.put("ref", b"aaaa")
    b = backend.put("ref", b"bbbb", overwrite=True)
    assert a.etag != b.etag


def test_list_with_prefix(backend: Backend) -> None:
    keys = ["packs/00/a", "packs/00/b", "packs/01/c", "packsx", "refs/heads/main", "config"]
    for i, k in enumerate(keys):
        backend.put(k, b"x" * (i + 1))
    got = {i.key: i.size for i in backend.list("packs/")}
    assert got == {"packs/00/a": 1, "packs/00/b": 2, "packs/01/c": 3}
    assert {i.key for i in backend.list("packs")} == {"packs/00/a", "packs/00/b",
                                                       "packs/01/c", "packsx"}
    assert {i.key for i in backend.list("packs/0")} == {"packs/00/a", "packs/00/b", "packs/01/c"}
    assert {i.key for i in backend.list("packs/01/")} == {"packs/01/c"}
    assert {i.key for i in backend.list("")} == set(keys)
    assert list(backend.list("nothing/")) == []


def test_list_prefix_is_validated(backend: Backend) -> None:
    for bad in ["../", "/x", "A", "a//", ".tmp"]:
        with pytest.raises(BadArgumentError):
            backend.list(bad)


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("k/v", b"data")
    backend.delete("k/v")
    assert backend.stat("k/v") is None
    with pytest.raises(ObjectNotFoundError):
        backend.get("k/v")
    backend.delete("k/v")
    backend.delete("never/was")
    assert list(backend.list("k/")) == []


# -- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_by_every_method(backend: Backend, key: str) -> None:
    with pytest.raises(BadArgumentError):
        backend.put(key, b"x")
    with pytest.raises(BadArgumentError):
        backend.get(key)
    with pytest.raises(BadArgumentError):
        backend.get_stream(key)
    with pytest.raises(BadArgumentError):
        backend.stat(key)
    with pytest.raises(BadArgumentError):
        backend.delete(key)


def test_key_rules() -> None:
    for good in ["config", "a", "packs/ab/0123abcd.pack", "refs/heads/main-2_x",
                 "x" * MAX_KEY_LENGTH, "a.b/c.d"]:
        assert check_key(good) == good
    for bad in BAD_KEYS:
        with pytest.raises(BadArgumentError):
            check_key(bad)


# -- compare-and-swap --------------------------------------------------------------------


def test_cas_create_if_absent(backend: Backend) -> None:
    info = backend.put("refs/heads/main", b"c1", if_match="")
    assert backend.get("refs/heads/main") == b"c1"
    with pytest.raises(RefConflictError):
        backend.put("refs/heads/main", b"c2", if_match="")
    assert backend.get("refs/heads/main") == b"c1"
    assert backend.stat("refs/heads/main") == info


def test_cas_update_with_the_current_etag(backend: Backend) -> None:
    first = backend.put("refs/heads/main", b"c1", if_match="")
    second = backend.put("refs/heads/main", b"c2", if_match=first.etag)
    assert backend.get("refs/heads/main") == b"c2"
    st = backend.stat("refs/heads/main")
    assert st is not None and st.etag == second.etag
    backend.put("refs/heads/main", b"c3", if_match=st.etag)
    assert backend.get("refs/heads/main") == b"c3"


def test_cas_with_a_stale_etag_conflicts(backend: Backend) -> None:
    first = backend.put("refs/heads/main", b"c1", if_match="")
    backend.put("refs/heads/main", b"c2", if_match=first.etag)
    with pytest.raises(RefConflictError):
        backend.put("refs/heads/main", b"c3", if_match=first.etag)
    assert backend.get("refs/heads/main") == b"c2"


def test_cas_on_a_missing_key_with_an_etag_conflicts(backend: Backend) -> None:
    info = backend.put("refs/heads/main", b"c1")
    backend.delete("refs/heads/main")
    with pytest.raises(RefConflictError):
        backend.put("refs/heads/main", b"c2", if_match=info.etag)
    assert backend.stat("refs/heads/main") is None


def _cas_writer(
    backend: Backend, key: str, etag: str, i: int, barrier: threading.Barrier, out: list[object]
) -> None:
    barrier.wait()
    try:
        out[i] = backend.put(key, f"writer {i}".encode(), if_match=etag)
    except RefConflictError as exc:
        out[i] = exc


@pytest.mark.parametrize("start", ["absent", "present"])
def test_racing_cas_writers_exactly_one_wins(backend: Backend, start: str) -> None:
    for round_ in range(3):
        key = f"refs/race/{start}-{round_}"
        etag = ""
        if start == "present":
            info = backend.put(key, b"base")
            assert info.etag is not None
            etag = info.etag
        n = 4
        barrier = threading.Barrier(n)
        results: list[object] = [None] * n
        threads = [
            threading.Thread(target=_cas_writer, args=(backend, key, etag, i, barrier, results))
            for i in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, r in enumerate(results) if not isinstance(r, RefConflictError)]
        assert len(winners) == 1, results
        assert backend.get(key) == f"writer {winners[0]}".encode()


# -- streaming ---------------------------------------------------------------------------


def test_streaming_put_of_40_mib_in_bounded_memory(backend: Backend, kind: str) -> None:
    size = 40 * MiB
    src = GenStream(size)
    tracemalloc.start()
    try:
        info = backend.put("packs/big", src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert src.pos == size
    assert info.size == size
    if kind == "local":
        assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"
    elif kind == "s3":  # one 16 MiB part in memory at a time
        assert peak < 24 * MiB, f"peak {peak / MiB:.1f} MiB"
        assert info.etag is not None and info.etag.endswith("-3"), info.etag  # 3 parts
    # (the memory backend holds its objects in memory by design)
    st = backend.stat("packs/big")
    assert st is not None and st.size == size
    sha = hashlib.sha256()
    biggest = 0
    for block in backend.get_stream("packs/big"):
        sha.update(block)
        biggest = max(biggest, len(block))
    assert sha.digest() == src.sha.digest()
    assert biggest <= 16 * MiB
    tail = backend.get("packs/big", offset=size - 10)
    assert tail == make_data(MiB, 7)[-10:]


def test_get_stream_round_trip(backend: Backend) -> None:
    data = make_data(3 * MiB + 17, 3)
    backend.put("s", data)
    assert b"".join(backend.get_stream("s")) == data
    backend.put("small", b"tiny")
    assert b"".join(backend.get_stream("small")) == b"tiny"
    backend.put("zero", b"")
    assert b"".join(backend.get_stream("zero")) == b""


def test_streamed_put_from_a_file(backend: Backend, tmp_path: Path) -> None:
    data = make_data(2 * MiB + 5, 4)
    p = tmp_path / "src.bin"
    p.write_bytes(data)
    with open(p, "rb") as f:
        assert backend.put("from/file", f).size == len(data)
    assert backend.get("from/file") == data


def test_a_failing_stream_stores_nothing(backend: Backend) -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("source disk died")
            return b"x" * min(n, 1000)

    with pytest.raises(OSError, match="source disk died"):
        backend.put("half", Broken())
    assert backend.stat("half") is None
    assert list(backend.list("")) == []


# -- local backend specifics -------------------------------------------------------------


def test_local_temp_files_are_hidden_and_cleaned_on_open(tmp_path: Path) -> None:
    root = tmp_path / "store"
    b = LocalBackend(root)
    b.put("packs/aa/x", b"data")
    old = root / "packs" / "aa" / f"{TEMP_PREFIX}dead"
    fresh = root / "packs" / "aa" / f"{TEMP_PREFIX}inflight"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    assert {i.key for i in b.list("")} == {"packs/aa/x"}
    LocalBackend(root)
    assert not old.exists()
    assert fresh.exists()  # maybe another writer's: left alone
    assert {i.key for i in b.list("")} == {"packs/aa/x"}


def test_local_put_leaves_no_temp_files(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "s")
    b.put("a/b", b"1")
    b.put("a/b", b"2", overwrite=True)
    b.put("a/b", b"3")
    with pytest.raises(RefConflictError):
        b.put("a/b", b"4", if_match="stale")
    names = [p.name for p in (tmp_path / "s" / "a").iterdir()]
    assert names == ["b"]


def test_local_cas_between_two_backends_on_one_directory(tmp_path: Path) -> None:
    one, two = LocalBackend(tmp_path / "s"), LocalBackend(tmp_path / "s")
    info = one.put("refs/main", b"a", if_match="")
    two.put("refs/main", b"b", if_match=info.etag)
    with pytest.raises(RefConflictError):
        one.put("refs/main", b"c", if_match=info.etag)


def test_local_big_objects_get_a_cheap_etag(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "s")
    info = b.put("packs/big", make_data(2 * MiB, 5))
    assert info.etag is not None and info.etag.startswith("m")
    assert b.stat("packs/big") == info
    b.put("packs/big", make_data(2 * MiB, 6), if_match=info.etag)
    with pytest.raises(RefConflictError):
        b.put("packs/big", b"x", if_match=info.etag)


def test_local_foreign_names_in_the_store_are_a_storage_error(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "s")
    b.put("ok", b"x")
    (tmp_path / "s" / "README.TXT").write_text("hello")
    (tmp_path / "s" / ".DS_Store").write_text("hidden names are skipped")
    with pytest.raises(StorageError, match=r"README\.TXT"):
        list(b.list(""))


def test_local_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        LocalBackend(tmp_path / "f")


# -- S3 specifics ------------------------------------------------------------------------


def test_s3_keys_live_under_the_prefix(s3_endpoint: str, s3_bucket: str, s3_client: Any) -> None:
    from modelstore.backend.s3 import S3Backend

    b = S3Backend(s3_bucket, "team/models", endpoint_url=s3_endpoint)
    b.put("refs/main", b"x")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["team/models/refs/main"]
    s3_client.put_object(Bucket=s3_bucket, Key="team/models/", Body=b"")  # console folder
    assert [i.key for i in b.list("")] == ["refs/main"]
    s3_client.put_object(Bucket=s3_bucket, Key="team/models/NOTES.md", Body=b"hi")
    with pytest.raises(StorageError, match=r"NOTES\.md"):
        list(b.list(""))


def test_s3_missing_bucket_is_one_clear_error(s3_endpoint: str) -> None:
    from modelstore.backend.s3 import S3Backend

    b = S3Backend("no-such-bucket-here", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="does not exist"):
        b.put("x", b"y")


def test_s3_unreachable_endpoint_is_one_clear_error(s3_endpoint: str) -> None:
    import boto3
    from botocore.config import Config

    from modelstore.backend.s3 import S3Backend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(StorageError, match=f"cannot reach S3 at {url}"):
        S3Backend("bucket", client=client).get("x")


def test_s3_server_without_conditional_writes(s3_endpoint: str, s3_bucket: str) -> None:
    """Idempotent puts fall back to a plain put; CAS says refs cannot work there."""
    import boto3
    from botocore.exceptions import ClientError

    from modelstore.backend.s3 import S3Backend

    real = boto3.client("s3", endpoint_url=s3_endpoint)

    class NoConditionals:
        meta = real.meta

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def put_object(self, **kw: Any) -> Any:
            if "IfMatch" in kw or "IfNoneMatch" in kw:
                raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"}},
                                  "PutObject")
            return real.put_object(**kw)

    b = S3Backend(s3_bucket, client=NoConditionals())
    assert b.put("chunk", b"data").size == 4
    assert b.get("chunk") == b"data"
    with pytest.raises(StorageError, match="does not support conditional writes"):
        b.put("refs/main", b"x", if_match="")


# -- open_backend ------------------------------------------------------------------------


def test_open_backend_urls(tmp_path: Path) -> None:
    local = open_backend(str(tmp_path / "a"))
    assert isinstance(local, LocalBackend) and local.root == tmp_path / "a"
    f = open_backend(f"file://{tmp_path}/b%20c")
    assert isinstance(f, LocalBackend) and f.root == tmp_path / "b c"
    m1 = open_backend("memory://shared-test")
    m1.put("k", b"v")
    m2 = open_backend("memory://shared-test")
    assert isinstance(m2, MemoryBackend) and m2.get("k") == b"v"
    from modelstore.backend.http import HttpBackend  # ms serve remotes (test_serve.py)

    h = open_backend("https://host/repo/", token="t")
    assert isinstance(h, HttpBackend) and h.base_url == "https://host/repo"
    with pytest.raises(BadArgumentError, match="unsupported remote URL"):
        open_backend("ftp://host/x")
    with pytest.raises(BadArgumentError, match="unknown option"):
        open_backend(str(tmp_path), endpoint_url="http://x")
    with pytest.raises(BadArgumentError):
        open_backend("s3:///prefix-without-bucket")
    with pytest.raises(BadArgumentError):
        open_backend("memory://")


def test_open_backend_s3(s3_endpoint: str, s3_bucket: str) -> None:
    from modelstore.backend.s3 import S3Backend

    b = open_backend(f"s3://{s3_bucket}/some/prefix/", endpoint_url=s3_endpoint)
    assert isinstance(b, S3Backend) and (b.bucket, b.prefix) == (s3_bucket, "some/prefix")
    b.put("x", b"1")
    assert b.get("x") == b"1"
