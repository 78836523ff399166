"""push / fetch / pull / clone through a directory remote: only missing data moves, verified."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modelstore import Repository, api
from modelstore.branches import create_tag
from modelstore.chunker import ChunkerParams
from modelstore.errors import CorruptObjectError, RefConflictError
from modelstore.verify import verify
from tests.conftest import make_data

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


def new_repo(path: Path) -> Repository:
    return Repository.init(path, chunker=SMALL, pack_size=64 << 10)


def put(repo: Repository, path: str, data: bytes) -> None:
    p = repo.workdir / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    repo.add([str(p)])


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Repository, Path]:
    a = new_repo(tmp_path / "a")
    a.set_remote("origin", str(tmp_path / "remote"))
    put(a, "model.bin", make_data(200_000, 1))
    put(a, "cfg/params.txt", b"lr=3e-4\n")
    a.commit("v1")
    return a, tmp_path


def test_push_then_clone_is_byte_identical(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    res = api.push(a)
    assert res.refs == {"refs/heads/main": a.resolve("main").hex()}
    assert res.chunks > 0 and res.objects > 0
    b = api.clone(str(tmp / "remote"), str(tmp / "b"))
    assert (b.workdir / "model.bin").read_bytes() == make_data(200_000, 1)
    assert (b.workdir / "cfg" / "params.txt").read_bytes() == b"lr=3e-4\n"
    assert b.resolve("main") == a.resolve("main") and b.head()[0] == "main"
    assert verify(b, read_data=True).ok
    b.close()


def test_second_push_sends_only_missing_chunks_and_noop_push(pair: tuple[Repository, Path]) -> None:
    a, _ = pair
    first = api.push(a)
    data = bytearray(make_data(200_000, 1))
    data[100_000:100_010] = b"0123456789"
    put(a, "model.bin", bytes(data))
    a.commit("v2")
    second = api.push(a)
    assert 0 < second.chunks <= 4 and second.bytes < first.bytes / 10
    again = api.push(a)
    assert again.up_to_date and again.chunks == 0 and again.refs == {}


def test_fetch_brings_only_what_is_missing(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    api.push(a)
    b = api.clone(str(tmp / "remote"), str(tmp / "b"))
    put(a, "extra.bin", make_data(30_000, 9))
    a.commit("v2")
    api.push(a)
    res = api.fetch(b)
    assert 0 < res.chunks < 40
    assert b.resolve("refs/remotes/origin/main") == a.resolve("main")
    out = io.BytesIO()
    b.cat("origin/main", "extra.bin", out)
    assert out.getvalue() == make_data(30_000, 9)
    b.close()


def test_concurrent_pushers_non_fast_forward_then_pull(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    api.push(a)
    b = api.clone(str(tmp / "remote"), str(tmp / "b"))
    put(b, "from-b.txt", b"b")
    b.commit("b work")
    api.push(b)
    put(a, "from-a.txt", b"a")
    a.commit("a work")
    with pytest.raises(RefConflictError, match="pull first"):
        api.push(a)
    _, merged = api.pull(a)
    assert merged.status == "merged"
    assert (a.workdir / "from-b.txt").read_bytes() == b"b"
    api.push(a)
    api.pull(b)
    assert b.resolve("main") == a.resolve("main")
    b.close()


def test_force_push_and_tags(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    api.push(a)
    b = api.clone(str(tmp / "remote"), str(tmp / "b"))
    put(b, "x", b"x")
    b.commit("b")
    api.push(b)
    put(a, "y", b"y")
    a.commit("a")
    api.push(a, force=True)
    create_tag(a, "v1", message="release")
    api.push(a, tags=True)
    res = api.fetch(b)
    assert "refs/tags/v1" in res.refs
    assert b.resolve("v1") == a.resolve("main")
    b.close()


def test_fetch_of_corrupt_remote_chunk_stores_nothing(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    api.push(a)
    b = new_repo(tmp / "b")
    b.set_remote("origin", str(tmp / "remote"))
    for p in (tmp / "remote" / "packs").rglob("*.pack"):
        raw = bytearray(p.read_bytes())
        raw[40] ^= 0xFF
        p.write_bytes(bytes(raw))
    before = b.store.stats().chunks
    with pytest.raises(CorruptObjectError, match="does not match"):
        api.fetch(b)
    assert b.store.stats().chunks == before
    assert verify(b).ok
    b.close()


def test_interrupted_push_resumes_without_resending_finished_packs(
    pair: tuple[Repository, Path],
) -> None:
    from modelstore import sync
    from modelstore.backend.faulty import Fault, FaultyBackend
    from modelstore.backend.local import LocalBackend
    from modelstore.errors import StorageError

    a, tmp = pair
    put(a, "big.bin", make_data(600_000, 5))
    a.commit("big")
    inner = LocalBackend(tmp / "remote")
    broken = FaultyBackend(inner, [Fault.fail("put", nth=6, prefix="packs/")])
    with pytest.raises(StorageError):
        sync.push(a, "origin", str(tmp / "remote"), ["refs/heads/main"], backend=broken)
    # nothing points at the partial upload: the remote has no ref yet
    assert not list(inner.list("refs/"))
    total = sync.push(
        a, "origin", str(tmp / "remote"), ["refs/heads/main"], backend=FaultyBackend(inner, [])
    )
    b = api.clone(str(tmp / "remote"), str(tmp / "b"))
    assert (b.workdir / "big.bin").read_bytes() == make_data(600_000, 5)
    # the resumed push re-sent less than everything: packs finished before the fault stayed
    everything = sum(p.stat().st_size for p in (tmp / "remote" / "packs").rglob("*.pack"))
    assert 0 < total.bytes < everything
    b.close()


def test_lazy_clone_reads_only_what_it_touches(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    big = make_data(600_000, 11)
    put(a, "big.bin", big)
    a.commit("big")
    api.push(a)
    b = api.clone(str(tmp / "remote"), str(tmp / "lazy"), lazy=True)
    assert b.store.stats().chunks == 0  # no file contents came with the clone
    assert not (b.workdir / "big.bin").exists()
    assert verify(b).ok  # chunks on the lazy remote count as present
    assert b.status().deleted == ["big.bin", "cfg/params.txt", "model.bin"]
    with b.open_file("big.bin") as f:  # one range: a handful of chunks, verified
        f.seek(300_000)
        assert f.read(5000) == big[300_000:305_000]
    b.close()  # flushes the cache of fetched chunks into a local pack
    b = Repository.open(tmp / "lazy")
    cached = b.store.stats().chunks
    assert 0 < cached < 20
    b.restore([str(b.workdir / "big.bin")])  # materializes one file, fetching what it lacks
    assert (b.workdir / "big.bin").read_bytes() == big
    assert "big.bin" not in b.status().deleted
    b.close()


@pytest.mark.faults
def test_push_killed_mid_transfer_then_rerun(tmp_path: Path) -> None:
    """SIGKILL a real `ms push` while packs are uploading; the re-run finishes the job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    a = Repository.init(tmp_path / "a", chunker=SMALL, pack_size=64 << 10)
    a.set_remote("origin", str(tmp_path / "remote"))
    data = make_data(3_000_000, 12)
    put(a, "big.bin", data)
    a.commit("big")
    a.close()
    # slow every pack upload down a little so the kill lands in the middle of the transfer
    script = (
        "import sys, time\n"
        "from modelstore.backend import local\n"
        "orig = local.LocalBackend.put\n"
        "def slow(self, key, data, **kw):\n"
        "    if key.endswith('.pack'):\n"
        "        time.sleep(0.05)\n"
        "    return orig(self, key, data, **kw)\n"
        "local.LocalBackend.put = slow\n"
        "from modelstore.cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "-C", str(tmp_path / "a"), "push", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    packs_dir = tmp_path / "remote" / "packs"
    while time.monotonic() < deadline:
        if packs_dir.exists() and len(list(packs_dir.rglob("*.idx"))) >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    sent_before = len(list(packs_dir.rglob("*.idx")))
    assert sent_before >= 3
    assert not list((tmp_path / "remote").glob("refs/*"))  # no ref points at a partial push
    a = Repository.open(tmp_path / "a")
    res = api.push(a)
    assert res.refs and res.packs > 0
    total = len(list(packs_dir.rglob("*.idx")))
    assert total - sent_before == res.packs  # finished packs were not sent again
    b = api.clone(str(tmp_path / "remote"), str(tmp_path / "b"))
    assert (b.workdir / "big.bin").read_bytes() == data
    assert verify(b, read_data=True).ok
    a.close()
    b.close()


def test_force_with_lease(pair: tuple[Repository, Path]) -> None:
    a, tmp = pair
    api.push(a)
    b = api.clone(str(tmp / "remote"), str(tmp / "b"))
    put(b, "b.txt", b"b")
    b.commit("b")
    api.push(b)  # a's lease (origin/main) is now stale
    put(a, "a.txt", b"a")
    a.commit("a")
    with pytest.raises(RefConflictError, match="lease"):
        api.push(a, force_with_lease=True)
    api.fetch(a)  # look at what changed, then take the lease again
    api.push(a, force_with_lease=True)
    assert api.fetch(b).refs["refs/heads/main"] == a.resolve("main").hex()
    b.close()
