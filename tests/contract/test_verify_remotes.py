"""``verify --remote`` and ``verify --repair --from`` on every remote kind: directory, S3, serve.

Remote damage is made behind the backend's back: the file edited in place (directory, and the
``ms serve`` process's own directory), or a corrupted object put with plain boto3 (S3).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelstore import Repository, api
from modelstore.backend import Backend, open_backend
from modelstore.pack import INDEX_ENTRY
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data

MODEL = "model.safetensors"
BASE = make_data(40_000, 7)

pytestmark = pytest.mark.faults  # corruption found and repaired (docs/reliability.md)


@dataclass
class Remote:
    """A remote URL, its options, and a way to flip one byte of a stored object."""

    url: str
    opts: dict[str, str]
    flip: Callable[[str, int], None]


def _flip_file(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x20
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(b))
    os.replace(tmp, path)  # a new file: never a hard link shared with anything else


@pytest.fixture(params=["dir", "s3", "serve"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if request.param == "dir":
        root = tmp_path / "remote"
        return Remote(str(root), {}, lambda key, off: _flip_file(root / key, off))
    if request.param == "serve":
        from tests.contract.conftest import WRITE_TOKEN

        url = request.getfixturevalue("serve_repo_url")
        base = request.getfixturevalue("serve_server").root / url.rsplit("/", 1)[1]
        return Remote(url, {"token": WRITE_TOKEN}, lambda key, off: _flip_file(base / key, off))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    client: Any = request.getfixturevalue("s3_client")

    def flip(key: str, off: int) -> None:
        full = f"team/models/{key}"
        b = bytearray(client.get_object(Bucket=bucket, Key=full)["Body"].read())
        b[off] ^= 0x20
        client.put_object(Bucket=bucket, Key=full, Body=bytes(b))

    return Remote(f"s3://{bucket}/team/models", {"endpoint_url": endpoint}, flip)


def _pushed(remote: Remote, tmp_path: Path) -> tuple[Repository, list[str]]:
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=16 << 10)
    api.remote_add(r, "origin", remote.url, **remote.opts)
    for i in range(2):
        (r.workdir / MODEL).write_bytes(BASE + bytes([i]) * 300)
        r.add([str(r.workdir / MODEL)])
        r.commit(f"v{i}")
    api.push(r)
    return r, [r.resolve("HEAD").hex(), r.resolve("HEAD~1").hex()]


def _first_chunk(r: Repository) -> bytes:
    return next(iter(r.manifest_chunks(r.file_manifest("HEAD", MODEL))))[0]


def _remote_copy(be: Backend, cid: bytes) -> tuple[str, int]:
    """The key of the remote pack holding ``cid`` and the offset of its stored bytes."""
    for info in be.list("packs/"):
        if info.key.endswith(".idx"):
            for c, off, *_ in INDEX_ENTRY.iter_unpack(be.get(info.key)):
                if c == cid:
                    return info.key[:-4] + ".pack", off
    raise AssertionError("chunk not on the remote")


def test_verify_remote_finds_a_flipped_byte(remote: Remote, tmp_path: Path) -> None:
    r, commits = _pushed(remote, tmp_path)
    rep = api.verify(r, remote="origin", read_data=True)
    assert rep.ok, rep.problems
    assert rep.commits == 2 and rep.chunks_read > 30 and rep.packs >= 2

    cid = _first_chunk(r)
    be = open_backend(remote.url, **remote.opts)
    key, off = _remote_copy(be, cid)
    remote.flip(key, off + 9)
    assert api.verify(r, remote="origin").ok  # the payload is only seen by reading it
    (p,) = api.verify(r, remote="origin", read_data=True).problems
    assert p.kind == "chunk" and cid.hex()[:16] in p.detail and key in p.detail
    assert [(a.path, list(a.commits)) for a in p.affects] == [(MODEL, commits)]

    info = be.stat(key)
    assert info is not None
    remote.flip(key, info.size - 3)
    problems = api.verify(r, remote="origin").problems  # the footer: seen without the data
    assert [(p.kind, p.where) for p in problems] == [("pack", key)]
    assert MODEL in {a.path for a in problems[0].affects}
    r.close()


def test_repair_from_every_remote_kind(remote: Remote, tmp_path: Path) -> None:
    r, _ = _pushed(remote, tmp_path)
    cid = _first_chunk(r)
    with r.db.read() as txn:
        loc = r.store.locate(txn, cid)
    assert loc is not None
    pack = r.store.pack_path(loc.pack_id)
    b = bytearray(pack.read_bytes())
    b[loc.offset + 5] ^= 0x01
    pack.write_bytes(bytes(b))
    r.store.close()
    assert not verify(r, read_data=True).ok
    res = api.repair(r, "origin")  # a ranged read through the backend
    assert res.ok and res.chunks_repaired == 1, res.unrepaired
    assert verify(r, read_data=True).ok
    out = io.BytesIO()
    r.cat("HEAD", MODEL, out)
    assert out.getvalue() == BASE + bytes([1]) * 300
    r.close()


def test_verify_remote_reports_a_ref_to_a_missing_commit(remote: Remote, tmp_path: Path) -> None:
    r, _ = _pushed(remote, tmp_path)
    be = open_backend(remote.url, **remote.opts)
    ghost = bytes(range(32))
    be.put("refs/" + b"refs/aliases/production".hex(), (ghost.hex() + "\n").encode())
    rep = api.verify(r, remote="origin")
    (p,) = rep.problems
    assert p.kind == "missing-object" and ghost.hex()[:16] in p.detail
    assert "refs/aliases/production" in p.where and "no bundle" in p.detail
    r.close()
