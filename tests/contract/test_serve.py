"""``ms serve`` specifics: tokens, verification before visibility, bounded memory, push/clone.

The Backend contract itself runs on ``ms serve`` as the ``serve`` kind of the ``backend``
fixture (conftest.py); these tests cover what only a server has.
"""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import httpx
import pytest

from modelstore import Repository, api
from modelstore.backend import open_backend
from modelstore.backend.http import AccessDeniedError, HttpBackend
from modelstore.errors import (
    BadArgumentError,
    CorruptObjectError,
    ObjectNotFoundError,
    RefConflictError,
    StorageError,
)
from modelstore.ids import ChunkId
from modelstore.pack import INDEX_ENTRY, PackWriter
from modelstore.serve import load_tokens, main, make_app
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data
from tests.contract.conftest import (
    LIMITED_REPO,
    LIMITED_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    ServeProcess,
    _free_port,
    start_serve,
)
from tests.contract.test_backend_contract import GenStream

MiB = 1 << 20


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _pack(tmp_path: Path, n: int = 3, seed: int = 1) -> tuple[str, bytes, bytes]:
    """A well-formed pack: (id hex, pack bytes, index bytes)."""
    out = tmp_path / f"packs-{seed}"
    out.mkdir()
    w = PackWriter(tmp_path, f"p{seed}")
    for i in range(n):
        payload = make_data(1000 + i, seed * 10 + i)
        w.add(ChunkId(hashlib.sha256(payload).digest()), 0, payload, len(payload))
    pack_hex, path = w.finish(out)
    index = b"".join(
        INDEX_ENTRY.pack(e.chunk_id, e.offset, e.stored_len, e.raw_len, e.codec)
        for e in w.entries
    )
    return pack_hex, path.read_bytes(), index


# -- authentication and authorisation ------------------------------------------------------------


def test_no_or_unknown_token_is_401(serve_repo_url: str) -> None:
    r = httpx.get(f"{serve_repo_url}/o/format")
    assert r.status_code == 401 and "error" in r.json()
    r = httpx.get(f"{serve_repo_url}/o/format", headers=_bearer("not-a-token"))
    assert r.status_code == 401
    r = httpx.put(f"{serve_repo_url}/o/x", content=b"x", headers={"authorization": "Basic eA=="})
    assert r.status_code == 401
    with pytest.raises(AccessDeniedError, match=r"authentication failed \(set MS_TOKEN"):
        HttpBackend(serve_repo_url).get("format")
    with pytest.raises(AccessDeniedError, match="authentication failed"):
        HttpBackend(serve_repo_url, token="wrong").put("x", b"y", overwrite=True)
    assert HttpBackend(serve_repo_url, token=WRITE_TOKEN).stat("x") is None  # nothing stored


def test_read_token_reads_but_cannot_write(serve_repo_url: str) -> None:
    HttpBackend(serve_repo_url, token=WRITE_TOKEN).put("refs/heads/main", b"c1")
    ro = HttpBackend(serve_repo_url, token=READ_TOKEN)
    assert ro.get("refs/heads/main") == b"c1"
    assert [i.key for i in ro.list("")] == ["refs/heads/main"]
    with pytest.raises(AccessDeniedError, match="permission denied: read-only token"):
        ro.put("new", b"data")
    with pytest.raises(AccessDeniedError, match="read-only token"):
        ro.put("refs/heads/main", b"c2", overwrite=True)
    with pytest.raises(AccessDeniedError, match="read-only token"):
        ro.delete("refs/heads/main")
    with pytest.raises(AccessDeniedError, match="read-only token"):  # refused before the body
        ro.put("big", GenStream(8 * MiB))
    r = httpx.delete(f"{serve_repo_url}/o/refs/heads/main", headers=_bearer(READ_TOKEN))
    assert r.status_code == 403 and r.json()["code"] == "read-only"
    assert ro.get("refs/heads/main") == b"c1"
    assert ro.stat("new") is None and ro.stat("big") is None


def test_repo_outside_the_tokens_list_is_403(serve_server: ServeProcess) -> None:
    mine = HttpBackend(f"{serve_server.url}/{LIMITED_REPO}", token=LIMITED_TOKEN)
    mine.put("k", b"v", overwrite=True)
    assert mine.get("k") == b"v"
    other = HttpBackend(f"{serve_server.url}/someone-else", token=LIMITED_TOKEN)
    for call in (lambda: other.get("k"), lambda: other.put("k", b"v"), lambda: other.delete("k"),
                 lambda: list(other.list(""))):
        with pytest.raises(AccessDeniedError, match="may not access repository 'someone-else'"):
            call()
    r = httpx.get(f"{serve_server.url}/someone-else/list", headers=_bearer(LIMITED_TOKEN))
    assert r.status_code == 403
    assert not (serve_server.root / "someone-else").exists()


# -- verification before visibility --------------------------------------------------------------


def test_corrupt_or_misnamed_packs_are_refused_and_never_visible(
    serve_repo_url: str, tmp_path: Path
) -> None:
    be = HttpBackend(serve_repo_url, token=WRITE_TOKEN)
    pid, pack, index = _pack(tmp_path, seed=1)
    other, _, other_index = _pack(tmp_path, seed=2)

    wrong = f"packs/{other[:2]}/{other}.pack"  # a valid pack under another pack's id
    with pytest.raises(CorruptObjectError, match="not to the id in its name"):
        be.put(wrong, pack)
    damaged = bytearray(pack)
    damaged[-64 - 10] ^= 0xFF  # inside the trailer index: its hash no longer matches
    with pytest.raises(CorruptObjectError):
        be.put(f"packs/{pid[:2]}/{pid}.pack", bytes(damaged))
    with pytest.raises(CorruptObjectError, match="not a modelstore pack"):
        be.put(f"packs/{pid[:2]}/{pid}.pack", GenStream(3 * MiB))  # streamed garbage
    with pytest.raises(CorruptObjectError):
        be.put(f"packs/{pid[:2]}/{pid}.idx", other_index)
    with pytest.raises(CorruptObjectError, match="not a pack index"):
        be.put(f"packs/{pid[:2]}/{pid}.idx", b"x" * 50)
    with pytest.raises(BadArgumentError, match="invalid pack file name"):
        be.put("packs/zz/abc.pack", pack)
    with pytest.raises(BadArgumentError, match="invalid pack file name"):
        be.put(f"packs/00/{pid}.idx", index)  # wrong fan-out directory
    assert list(be.list("")) == []
    assert be.stat(wrong) is None

    r = httpx.put(f"{serve_repo_url}/o/{wrong}", content=pack, headers=_bearer(WRITE_TOKEN))
    assert r.status_code == 422 and "error" in r.json()

    assert be.put(f"packs/{pid[:2]}/{pid}.pack", pack).size == len(pack)
    assert be.put(f"packs/{pid[:2]}/{pid}.idx", index).size == len(index)
    assert {i.key for i in be.list("packs/")} == {
        f"packs/{pid[:2]}/{pid}.pack", f"packs/{pid[:2]}/{pid}.idx"
    }
    assert be.get(f"packs/{pid[:2]}/{pid}.pack") == pack


# -- the HTTP surface ----------------------------------------------------------------------------


def test_ranges_etags_and_json_errors(serve_repo_url: str) -> None:
    be = HttpBackend(serve_repo_url, token=WRITE_TOKEN)
    data = make_data(5000, 3)
    info = be.put("obj", data)
    h = _bearer(WRITE_TOKEN)
    r = httpx.get(f"{serve_repo_url}/o/obj", headers={**h, "range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == "bytes 10-19/5000"
    assert r.headers["etag"] == f'"{info.etag}"'
    r = httpx.get(f"{serve_repo_url}/o/obj", headers={**h, "range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = httpx.get(f"{serve_repo_url}/o/obj", headers={**h, "range": "bytes=5000-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */5000"
    r = httpx.head(f"{serve_repo_url}/o/obj", headers=h)
    assert r.status_code == 200 and r.headers["content-length"] == "5000"
    for url, status in [
        (f"{serve_repo_url}/o/missing", 404),
        (f"{serve_repo_url}/o/Upper", 400),
        (f"{serve_repo_url}/o/a/%2E%2E/b", 400),
        (f"{serve_repo_url.rsplit('/', 1)[0]}/.hidden/o/x", 400),
        (f"{serve_repo_url.rsplit('/', 1)[0]}/UPPER/list", 400),
        (f"{serve_repo_url}/list?prefix=../", 400),
    ]:
        r = httpx.get(url, headers=h)
        assert r.status_code == status, (url, r.text)
        body = r.json()
        assert isinstance(body["error"], str) and "Traceback" not in body["error"]
    # compare-and-swap over plain HTTP
    r = httpx.put(f"{serve_repo_url}/o/ref", content=b"a", headers={**h, "if-none-match": "*"})
    assert r.status_code == 200
    etag = r.json()["etag"]
    r = httpx.put(f"{serve_repo_url}/o/ref", content=b"b", headers={**h, "if-none-match": "*"})
    assert r.status_code == 412
    r = httpx.put(f"{serve_repo_url}/o/ref", content=b"b", headers={**h, "if-match": f'"{etag}"'})
    assert r.status_code == 200
    with pytest.raises(RefConflictError):
        be.put("ref", b"c", if_match=etag)
    with pytest.raises(ObjectNotFoundError):
        be.get_stream("missing")


def test_unreachable_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/repo"  # nothing listens there
    with pytest.raises(StorageError, match=f"cannot reach {url}"):
        HttpBackend(url, token="t").get("format")
    with pytest.raises(StorageError, match="cannot reach"):
        list(open_backend(url).list(""))


def test_bad_urls_tokens_files_and_arguments(tmp_path: Path) -> None:
    for bad in ["http://host", "http://host/", "http:///repo", "http://h/r?x=1"]:
        with pytest.raises(BadArgumentError):
            HttpBackend(bad)
    with pytest.raises(BadArgumentError, match="unknown option"):
        open_backend("http://h/r", endpoint_url="x")
    f = tmp_path / "tokens.json"
    for content, match in [
        ("nope", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps({"t": {"user": "a", "scope": "admin"}}), "scope"),
        (json.dumps({"t": {"scope": "read"}}), "user"),
        (json.dumps({"t": {"user": "a", "scope": "read", "repos": ["../x"]}}), "repository name"),
        (json.dumps({"t": {"user": "a", "scope": "read", "extra": 1}}), "unknown setting"),
        (json.dumps({"t u": {"user": "a", "scope": "read"}}), "without spaces"),
    ]:
        f.write_text(content)
        with pytest.raises(BadArgumentError, match=match):
            load_tokens(f)
    with pytest.raises(BadArgumentError, match="cannot read"):
        load_tokens(tmp_path / "missing.json")
    f.write_text(json.dumps({"tok": {"user": "a", "scope": "read"}}))
    assert load_tokens(f)["tok"].repos == ("*",)
    root = str(tmp_path)
    assert main([root]) == 2  # neither --tokens nor --no-auth: refused before listening
    assert main([root, "--no-auth", "--host", "0.0.0.0"]) == 2
    assert main([root, "--no-auth", "--tokens", str(f)]) == 2
    assert main([str(tmp_path / "missing"), "--tokens", str(f)]) == 2
    assert make_app(tmp_path, None) is not None


# -- memory --------------------------------------------------------------------------------------


def test_large_streaming_upload_in_bounded_server_and_client_memory(tmp_path: Path) -> None:
    server = start_serve(tmp_path / "srv", None)  # its own process: a clean VmHWM (--no-auth)
    try:
        be = HttpBackend(f"{server.url}/big")
        be.put("warm-up", b"x")
        before = _vm_kib(server.pid, "VmHWM")
        size = 40 * MiB
        src = GenStream(size)
        tracemalloc.start()
        try:
            info = be.put("packs/big", src)
            _, client_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.size == size and src.pos == size
        assert client_peak < 8 * MiB, f"client peak {client_peak / MiB:.1f} MiB"
        sha = hashlib.sha256()
        for block in be.get_stream("packs/big"):
            sha.update(block)
        assert sha.digest() == src.sha.digest()
        hwm = _vm_kib(server.pid, "VmHWM")
        assert hwm < 150 * 1024, f"server VmHWM {hwm / 1024:.0f} MB"
        assert hwm - before < 24 * 1024, f"server grew {(hwm - before) / 1024:.0f} MB"
        assert (server.root / "big" / "packs" / "big").stat().st_size == size
        assert not any((server.root / ".incoming").iterdir())  # the spool file is gone
    finally:
        server.stop()


# -- end to end ----------------------------------------------------------------------------------


def test_push_and_clone_through_serve(
    serve_repo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Repository.init(tmp_path / "a", chunker=SMALL_CHUNKS, pack_size=32 << 10)
    api.remote_add(a, "origin", serve_repo_url)  # no token option: MS_TOKEN is used
    data = make_data(120_000, 9)
    (a.workdir / "m.bin").write_bytes(data)
    a.add([str(a.workdir / "m.bin")])
    a.commit("v1")
    with pytest.raises(AccessDeniedError, match="authentication failed"):
        api.push(a)
    monkeypatch.setenv("MS_TOKEN", READ_TOKEN)
    with pytest.raises(AccessDeniedError, match="read-only token"):
        api.push(a)
    monkeypatch.setenv("MS_TOKEN", WRITE_TOKEN)
    res = api.push(a)
    assert res.packs >= 2 and res.refs
    monkeypatch.delenv("MS_TOKEN")

    b = api.clone(serve_repo_url, str(tmp_path / "b"), options={"token": READ_TOKEN})
    assert (b.workdir / "m.bin").read_bytes() == data
    assert verify(b, read_data=True).ok
    assert b.resolve("main") == a.resolve("main")
    a.close()
    b.close()
    assert os.environ.get("MS_TOKEN") is None
