"""``verify`` names the files and commits a problem breaks; ``repair`` refetches from a remote.

Real repositories, a real directory remote, bytes flipped and files deleted on disk.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelstore import Repository, api
from modelstore.backend import LocalBackend
from modelstore.chunkstore import ChunkLoc
from modelstore.ids import ObjectId
from modelstore.metadb import Txn
from modelstore.objects import FileManifest
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data

MODEL = "model.safetensors"
BASE = make_data(40_000, 1)

pytestmark = pytest.mark.faults  # corruption found and repaired (docs/reliability.md)


def _version(i: int) -> bytes:
    return BASE + bytes([i]) * 500  # the first chunks are shared by every version


@pytest.fixture
def pushed(tmp_path: Path) -> Repository:
    """Three commits of a model (sharing its first chunks) and a note, pushed to ``origin``."""
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=16 << 10)
    api.remote_add(r, "origin", str(tmp_path / "remote"))
    for i in range(3):
        (r.workdir / MODEL).write_bytes(_version(i))
        (r.workdir / "notes.txt").write_text(f"run {i}\n")
        r.add([str(r.workdir)])
        r.commit(f"v{i}")
    api.push(r)
    return r


def _commits(r: Repository) -> list[str]:
    return [r.resolve(f"HEAD~{n}").hex() for n in range(3)]


def _chunk(
    r: Repository, path: str = MODEL, rev: str = "HEAD", n: int = 0
) -> tuple[bytes, ChunkLoc]:
    m = r.file_manifest(rev, path)
    cid = list(r.manifest_chunks(m))[n][0]
    with r.db.read() as txn:
        loc = r.store.locate(txn, cid)
    assert loc is not None
    return cid, loc


def _flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x20
    path.write_bytes(bytes(b))


def _flip_chunk(r: Repository, loc: ChunkLoc) -> Path:
    """Flip a byte in the middle of a stored chunk's payload."""
    pack = r.store.pack_path(loc.pack_id)
    _flip(pack, loc.offset + 1 + (loc.stored_len - 1) // 2)
    r.store.close()  # no descriptor cached from before
    return pack


def _reads_back(r: Repository, newer: int = 0) -> None:
    """Every version of the model reads back byte-identical (``newer``: commits on top)."""
    for n in range(3):
        out = io.BytesIO()
        r.cat(f"HEAD~{n + newer}", MODEL, out)  # verifies every chunk and the whole-file hash
        assert out.getvalue() == _version(2 - n)


def test_a_flipped_byte_names_its_file_and_commits_and_repair_fixes_it(
    pushed: Repository,
) -> None:
    r = pushed
    cid, loc = _chunk(r)
    pack = _flip_chunk(r, loc)
    damaged = pack.read_bytes()
    assert verify(r).ok  # the structure is intact: only reading the data shows it
    rep = verify(r, read_data=True)
    (p,) = rep.problems
    assert (
        p.kind == "chunk" and cid.hex()[:16] in p.detail and "does not match its hash" in p.detail
    )
    assert [(a.path, a.commits) for a in p.affects] == [(MODEL, tuple(_commits(r)))]

    res = api.repair(r, "origin")
    assert res.before.problems == rep.problems
    assert (res.chunks_repaired, res.objects_repaired, res.packs_written) == (1, 0, 1)
    assert res.ok and res.unrepaired == [] and 0 < res.bytes_fetched < 8192
    assert verify(r, read_data=True).ok
    _reads_back(r)
    _, now = _chunk(r)
    assert now.pack_id != loc.pack_id  # the index moved to the new copy...
    assert pack.read_bytes() == damaged  # ...and the damaged pack was not touched
    with r.db.read() as txn:
        assert txn.get("packs", loc.pack_id) is not None  # its healthy chunks are still used
    assert api.repair(r, "origin").before.ok  # nothing left to do


def test_a_deleted_pack_is_refetched(pushed: Repository) -> None:
    r = pushed
    _, loc = _chunk(r)
    lost = r.store.pack_path(loc.pack_id)
    original = lost.read_bytes()
    lost.unlink()
    rep = verify(r)
    (p,) = rep.problems
    assert p.kind == "missing-pack" and loc.pack_id.hex()[:16] in p.detail
    assert {a.path for a in p.affects} >= {MODEL}
    with pytest.raises(Exception, match="missing"):
        r.cat("HEAD", MODEL, io.BytesIO())

    res = api.repair(r, "origin")
    assert res.ok and res.chunks_repaired > 0 and res.packs_written == 1
    # the first push sent the pack whole, so its chunks come back in the same order: the new
    # pack is the lost one, byte for byte, under its own name (and its record stays)
    assert lost.read_bytes() == original and res.packs_retired == 0
    assert verify(r, read_data=True).ok
    _reads_back(r)


def test_a_damaged_pack_trailer_moves_its_chunks_from_the_local_copy(pushed: Repository) -> None:
    """Chunks that still read correctly are copied from the damaged pack, not downloaded."""
    r = pushed
    _, loc = _chunk(r)
    pack = r.store.pack_path(loc.pack_id)
    _flip(pack, pack.stat().st_size - 10)  # a reserved byte of the footer
    r.store.close()
    rep = verify(r)
    assert [p.kind for p in rep.problems] == ["pack"]
    assert MODEL in {a.path for a in rep.problems[0].affects}
    res = api.repair(r, "origin")
    assert res.ok and res.chunks_repaired > 0 and res.bytes_fetched == 0
    assert res.packs_retired == 1 and pack.exists()  # left for gc
    assert verify(r, read_data=True).ok
    _reads_back(r)


def test_missing_and_damaged_objects_are_refetched_with_what_they_name(
    pushed: Repository,
) -> None:
    r = pushed
    head = r.get_commit(r.resolve("HEAD"))
    old, new = r.lookup(r.resolve("HEAD~2"), MODEL), r.lookup(r.resolve("HEAD"), MODEL)
    assert old is not None and new is not None
    shared = {c for c, _ in r.get_manifest(old.id).chunks()}
    _, first = _chunk(r, rev="HEAD~2")
    with r.db.read() as txn:
        good = txn.get("objects", old.id)
    assert good is not None

    def damage(txn: Txn) -> None:
        txn.delete("objects", head.tree_id)  # the newest tree (and so what it alone names)
        txn.put("objects", old.id, good[:-1] + bytes([good[-1] ^ 1]))  # an old manifest
        # and the chunks only the newest manifest has: hidden behind the missing tree
        for cid, _ in r.manifest_chunks(r.get_manifest(new.id)):
            if cid not in shared:
                txn.delete("chunks", cid)

    r.db.write(damage)
    rep = verify(r)
    kinds = sorted(p.kind for p in rep.problems)
    assert kinds == ["bad-object", "missing-object"]
    bad = next(p for p in rep.problems if p.kind == "bad-object")
    assert [(a.path, a.commits) for a in bad.affects] == [(MODEL, (r.resolve("HEAD~2").hex(),))]
    missing = next(p for p in rep.problems if p.kind == "missing-object")
    assert [a.path for a in missing.affects] == ["/"]  # the whole tree of that commit

    res = api.repair(r, "origin")
    assert res.ok, [*res.unrepaired, *res.after.problems]
    assert res.objects_repaired >= 2 and res.chunks_repaired >= 1
    assert verify(r, read_data=True).ok
    _reads_back(r)
    assert first == _chunk(r, rev="HEAD~2")[1]  # healthy chunks stay where they were
    with r.db.read() as txn:
        assert txn.get("objects", old.id) == good
    assert isinstance(r.get_manifest(old.id), FileManifest)


def test_what_the_remote_lacks_is_reported_and_not_repaired(pushed: Repository) -> None:
    r = pushed
    (r.workdir / "local.bin").write_bytes(make_data(6_000, 9))
    r.add([str(r.workdir / "local.bin")])
    c = r.commit("not pushed")
    cid, loc = _chunk(r, "local.bin")
    _flip_chunk(r, loc)
    _, shared = _chunk(r)
    _flip_chunk(r, shared)  # this one the remote has

    res = api.repair(r, "origin")
    assert not res.ok and res.chunks_repaired == 1
    (u,) = res.unrepaired
    assert cid.hex()[:16] in u.detail and "origin does not have it" in u.detail
    assert [(a.path, a.commits) for a in u.affects] == [("local.bin", (c.hex(),))]
    (left,) = res.after.problems
    assert left.kind == "chunk" and left.affects[0].path == "local.bin"
    _reads_back(r, newer=1)  # what could be repaired was


def test_a_damaged_remote_copy_is_not_taken(pushed: Repository, tmp_path: Path) -> None:
    r = pushed
    cid, loc = _chunk(r)
    _flip_chunk(r, loc)
    be = LocalBackend(tmp_path / "remote")
    pid, off = _remote_offset(be, cid)
    _flip(tmp_path / "remote" / f"packs/{pid[:2]}/{pid}.pack", off + 5)
    res = api.repair(r, "origin")
    assert not res.ok and res.chunks_repaired == 0
    (u,) = res.unrepaired
    assert "origin's copy is damaged too" in u.detail and u.affects[0].path == MODEL
    assert not verify(r, read_data=True).ok  # nothing unverified went in


def _remote_offset(be: LocalBackend, cid: bytes) -> tuple[str, int]:
    """The remote pack (hex) holding ``cid`` and the offset of its stored bytes there."""
    from modelstore.pack import INDEX_ENTRY

    for info in be.list("packs/"):
        if info.key.endswith(".idx"):
            for c, off, *_ in INDEX_ENTRY.iter_unpack(be.get(info.key)):
                if c == cid:
                    return info.key.rsplit("/", 1)[1][:-4], off
    raise AssertionError("chunk not on the remote")


# -- verify --remote --------------------------------------------------------------------------


def test_verify_remote_healthy_then_damaged(pushed: Repository, tmp_path: Path) -> None:
    r = pushed
    rep = api.verify(r, remote="origin", read_data=True)
    assert rep.ok, rep.problems
    assert rep.remote == "origin" and rep.commits == 3 and rep.chunks_read > 0 and rep.packs > 1

    cid, _ = _chunk(r)
    be = LocalBackend(tmp_path / "remote")
    pid, off = _remote_offset(be, cid)
    _flip(tmp_path / "remote" / f"packs/{pid[:2]}/{pid}.pack", off + 5)
    assert api.verify(r, remote="origin").ok  # only reading the data shows a payload flip
    (p,) = api.verify(r, remote="origin", read_data=True).problems
    assert (
        p.kind == "chunk" and cid.hex()[:16] in p.detail and "does not match its hash" in p.detail
    )
    assert [(a.path, a.commits) for a in p.affects] == [(MODEL, tuple(_commits(r)))]
    assert verify(r, read_data=True).ok  # the local copy is intact


def test_verify_remote_reports_a_ref_to_a_missing_commit_and_a_bad_pack(
    pushed: Repository, tmp_path: Path
) -> None:
    r = pushed
    be = LocalBackend(tmp_path / "remote")
    ghost = ObjectId(bytes(range(32)))
    be.put("refs/" + b"refs/heads/ghost".hex(), (ghost.hex() + "\n").encode())
    idx = next(i.key for i in be.list("packs/") if i.key.endswith(".idx"))
    pack = tmp_path / "remote" / (idx[:-4] + ".pack")
    pack.write_bytes(pack.read_bytes()[:-1])  # truncated: no longer matches its index
    rep = api.verify(r, remote="origin")
    by_kind = {p.kind: p for p in rep.problems}
    assert set(by_kind) == {"missing-object", "pack"}
    assert ghost.hex()[:16] in by_kind["missing-object"].detail
    assert "refs/heads/ghost" in by_kind["missing-object"].where
    assert by_kind["pack"].where == idx[:-4] + ".pack" and by_kind["pack"].affects


# -- the CLI ----------------------------------------------------------------------------------


def _ms(r: Repository, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelstore.cli.main", "-C", str(r.workdir), *args],
        capture_output=True,
        text=True,
    )


def test_cli_verify_prints_affected_files_and_repairs(pushed: Repository) -> None:
    r = pushed
    commits = _commits(r)
    _, loc = _chunk(r)
    _flip_chunk(r, loc)
    r.close()
    assert _ms(r, "verify").returncode == 0
    proc = _ms(r, "verify", "--read-data")
    assert proc.returncode == 13 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("chunk: chunk ") and "does not match its hash" in lines[0]
    assert lines[1] == (
        f"  affects: {MODEL} in 3 commits ({commits[0][:12]}, {commits[1][:12]}, {commits[2][:12]})"
    )
    assert proc.stdout.strip().endswith(": 1 problem(s)")
    js = json.loads(_ms(r, "verify", "--read-data", "--json").stdout)
    assert not js["ok"] and js["problems"][0]["affects"] == [{"path": MODEL, "commits": commits}]

    both = ["--repair", "--from", "origin", "--remote", "origin"]
    for bad in (["--repair"], ["--from", "origin"], both):
        proc = _ms(r, "verify", *bad)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = _ms(r, "verify", "--repair", "--from", "origin")
    assert proc.returncode == 0, proc.stderr
    assert "repaired 1 chunk(s) and 0 object(s) from origin" in proc.stdout
    assert proc.stdout.strip().endswith("after repair: no problems")
    assert f"affects: {MODEL} in 3 commits" in proc.stderr  # what was found
    assert _ms(r, "verify", "--read-data").returncode == 0
    js = json.loads(_ms(r, "verify", "--repair", "--from", "origin", "--json").stdout)
    assert js["ok"] and js["before"]["ok"] and js["chunks_repaired"] == 0


def test_cli_repair_exits_13_when_the_remote_lacks_data(pushed: Repository) -> None:
    r = pushed
    (r.workdir / "local.bin").write_bytes(make_data(6_000, 9))
    r.add([str(r.workdir / "local.bin")])
    c = r.commit("not pushed")
    _, loc = _chunk(r, "local.bin")
    _flip_chunk(r, loc)
    r.close()
    proc = _ms(r, "verify", "--repair", "--from", "origin")
    assert proc.returncode == 13 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("could not repair chunk "))
    assert "origin does not have it" in lines[i]
    assert lines[i + 1] == f"  affects: local.bin in 1 commit ({c.hex()[:12]})"
    assert "after repair: 1 problem(s) remain:" in proc.stderr
    js = json.loads(_ms(r, "verify", "--repair", "--from", "origin", "--json").stdout)
    assert not js["ok"] and js["unrepaired"][0]["affects"][0]["path"] == "local.bin"
    assert len(js["after"]["problems"]) == 1


def test_cli_verify_remote(pushed: Repository, tmp_path: Path) -> None:
    r = pushed
    r.close()
    proc = _ms(r, "verify", "--remote", "origin", "--read-data")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("on origin: no problems")
    be = LocalBackend(tmp_path / "remote")
    be.put("refs/" + b"refs/tags/broken".hex(), (bytes(32).hex() + "\n").encode())
    proc = _ms(r, "verify", "--remote", "origin", "--json")
    assert proc.returncode == 13
    js = json.loads(proc.stdout)
    assert js["remote"] == "origin" and [p["kind"] for p in js["problems"]] == ["missing-object"]
    assert _ms(r, "verify", "--remote", "nowhere").returncode == 5  # unknown remote
