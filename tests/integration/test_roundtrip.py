"""init → add → commit → modify → commit → checkout both versions, byte-identical."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from blake3 import blake3

from modelstore import Repository
from modelstore.errors import (
    CorruptObjectError,
    NothingToCommitError,
    PathError,
    RefNotFoundError,
    UncommittedChangesError,
)
from tests.conftest import make_data


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_repository_round_trip_two_versions(repo: Repository, tmp_path: Path) -> None:
    w = repo.workdir
    v1 = make_data(200_000, seed=1)
    write(w / "model.bin", v1)
    write(w / "data" / "train.csv", b"a,b\n1,2\n")
    repo.add([str(w / "model.bin"), str(w / "data")])
    c1 = repo.commit("v1")
    v2 = bytearray(v1)
    v2[100_000:100_010] = b"X" * 10
    write(w / "model.bin", bytes(v2))
    repo.add([str(w / "model.bin")])
    c2 = repo.commit("v2")
    assert c1 != c2
    assert [oid for oid, _ in repo.log()] == [c2, c1]

    repo.checkout(c1.hex())
    assert (w / "model.bin").read_bytes() == v1
    repo.checkout("main")
    assert (w / "model.bin").read_bytes() == bytes(v2)
    for rev, want in (("HEAD~1", v1), ("HEAD", bytes(v2))):
        out = tmp_path / f"out-{rev.replace('~', '_')}"
        repo.checkout(rev, to=str(out))
        assert (out / "model.bin").read_bytes() == want
        assert (out / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"


def test_second_version_stores_only_changed_chunks(tmp_path: Path) -> None:
    # default (format) chunking parameters: an insert re-stores only the chunk around it
    repo = Repository.init(tmp_path / "w", pack_size=1 << 20)
    w = repo.workdir
    v1 = make_data(4 << 20, seed=2)
    write(w / "m.bin", v1)
    repo.add([str(w / "m.bin")])
    repo.commit("v1")
    before = repo.store.stats().raw_bytes
    v2 = v1[: 2 << 20] + b"inserted" + v1[2 << 20 :]
    write(w / "m.bin", v2)
    res = repo.add([str(w / "m.bin")])
    repo.commit("v2")
    grew = repo.store.stats().raw_bytes - before
    assert 0 < grew <= 2 * repo.config.chunker.max_size
    assert res["new_bytes"] <= grew + 64
    assert repo.store.stats().raw_bytes < len(v1) + grew + 1
    repo.close()


def test_add_unchanged_file_is_not_reread(repo: Repository) -> None:
    w = repo.workdir
    write(w / "a.bin", make_data(50_000, 3))
    repo.add([str(w / "a.bin")])
    # make the entry old enough not to be "racily clean"
    st = os.stat(w / "a.bin")
    os.utime(w / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    repo.add([str(w / "a.bin")])
    res = repo.add([str(w / "a.bin")])
    assert res["unchanged"] == ["a.bin"] and res["added"] == []


def test_status_reports_staged_modified_deleted_untracked(repo: Repository) -> None:
    w = repo.workdir
    write(w / "keep.bin", b"k" * 1000)
    write(w / "gone.bin", b"g" * 1000)
    write(w / "mod.bin", b"m" * 1000)
    repo.add([str(w)])
    repo.commit("base")
    assert repo.status().clean
    (w / "gone.bin").unlink()
    write(w / "mod.bin", b"M" * 1000)  # same size: only the hash tells
    write(w / "new.bin", b"n")
    write(w / "staged.bin", b"s")
    repo.add([str(w / "staged.bin")])
    st = repo.status()
    assert st.staged == [("added", "staged.bin")]
    assert st.modified == ["mod.bin"]
    assert st.deleted == ["gone.bin"]
    assert st.untracked == ["new.bin"]


def test_msignore_is_honoured(repo: Repository) -> None:
    w = repo.workdir
    write(w / ".msignore", b"*.tmp\ncache/\n")
    write(w / "a.tmp", b"x")
    write(w / "cache" / "c.bin", b"x")
    write(w / "keep.bin", b"x")
    repo.add([str(w)])
    repo.commit("c")
    files = repo.commit_files(repo.resolve("HEAD"))
    assert set(files) == {".msignore", "keep.bin"}


def test_commit_without_changes_is_refused(repo: Repository) -> None:
    with pytest.raises(NothingToCommitError):
        repo.commit("empty")
    write(repo.workdir / "a", b"a")
    repo.add([str(repo.workdir / "a")])
    repo.commit("one")
    with pytest.raises(NothingToCommitError):
        repo.commit("again")
    repo.commit("allowed", allow_empty=True)


def test_revisions_resolve(repo: Repository) -> None:
    w = repo.workdir
    ids = []
    for i in range(3):
        write(w / "f", bytes([i]) * 10)
        repo.add([str(w / "f")])
        ids.append(repo.commit(f"c{i}"))
    assert repo.resolve("HEAD") == ids[2]
    assert repo.resolve("HEAD^") == ids[1]
    assert repo.resolve("HEAD~2") == ids[0]
    assert repo.resolve("main~1") == ids[1]
    assert repo.resolve(ids[0].hex()[:10]) == ids[0]
    assert repo.resolve("refs/heads/main") == ids[2]
    with pytest.raises(RefNotFoundError):
        repo.resolve("HEAD~3")
    with pytest.raises(RefNotFoundError):
        repo.resolve("nosuchbranch")


def test_open_file_is_seekable_and_lazy(repo: Repository) -> None:
    w = repo.workdir
    data = make_data(300_000, 5)
    write(w / "big.bin", data)
    repo.add([str(w / "big.bin")])
    repo.commit("c")
    with repo.open_file("big.bin", rev="HEAD") as f:
        f.seek(123_456)
        assert f.read(5000) == data[123_456:128_456]
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]
        assert f.tell() == len(data)
        f.seek(0)
        assert f.read() == data


def test_cat_streams_a_file(repo: Repository) -> None:
    w = repo.workdir
    data = make_data(70_000, 6)
    write(w / "d" / "x.bin", data)
    repo.add([str(w / "d")])
    repo.commit("c")
    out = io.BytesIO()
    assert repo.cat("HEAD", "d/x.bin", out) == len(data)
    assert out.getvalue() == data
    with pytest.raises(PathError):
        repo.cat("HEAD", "d/nope", io.BytesIO())


def test_checkout_refuses_to_clobber_local_changes(repo: Repository) -> None:
    w = repo.workdir
    write(w / "a", b"one")
    repo.add([str(w / "a")])
    repo.commit("1")
    write(w / "a", b"two")
    repo.add([str(w / "a")])
    repo.commit("2")
    write(w / "a", b"local edit")
    with pytest.raises(UncommittedChangesError):
        repo.checkout("HEAD~1")
    assert (w / "a").read_bytes() == b"local edit"
    repo.checkout("HEAD~1", force=True)
    assert (w / "a").read_bytes() == b"one"


def test_checkout_keeps_file_mode(repo: Repository, tmp_path: Path) -> None:
    w = repo.workdir
    write(w / "run.sh", b"#!/bin/sh\n")
    os.chmod(w / "run.sh", 0o755)
    repo.add([str(w / "run.sh")])
    repo.commit("x")
    repo.checkout("HEAD", to=str(tmp_path / "o"))
    assert os.stat(tmp_path / "o" / "run.sh").st_mode & 0o777 == 0o755


def test_checkout_paths_restores_only_those(repo: Repository) -> None:
    w = repo.workdir
    write(w / "a", b"a1")
    write(w / "b", b"b1")
    repo.add([str(w)])
    repo.commit("1")
    write(w / "a", b"a2")
    write(w / "b", b"b2")
    repo.add([str(w)])
    repo.commit("2")
    repo.checkout("HEAD~1", [str(w / "a")])
    assert (w / "a").read_bytes() == b"a1" and (w / "b").read_bytes() == b"b2"


def test_rm_and_restore(repo: Repository) -> None:
    w = repo.workdir
    write(w / "a", b"a1")
    write(w / "b", b"b1")
    repo.add([str(w)])
    repo.commit("1")
    repo.rm([str(w / "a")])
    assert not (w / "a").exists()
    assert repo.status().staged == [("deleted", "a")]
    repo.restore([str(w / "a")], staged=True)
    repo.restore([str(w / "a")])
    assert (w / "a").read_bytes() == b"a1"
    write(w / "b", b"changed")
    repo.restore([str(w / "b")])
    assert (w / "b").read_bytes() == b"b1"
    assert repo.status().clean


def test_checkout_removes_files_absent_in_target(repo: Repository) -> None:
    w = repo.workdir
    write(w / "a", b"a")
    repo.add([str(w / "a")])
    repo.commit("1")
    write(w / "sub" / "b", b"b")
    repo.add([str(w / "sub")])
    repo.commit("2")
    repo.checkout("HEAD~1")
    assert not (w / "sub").exists()
    repo.checkout("main")
    assert (w / "sub" / "b").read_bytes() == b"b"


def test_corrupt_pack_is_detected_on_read(repo: Repository) -> None:
    w = repo.workdir
    data = make_data(60_000, 9)
    write(w / "x.bin", data)
    repo.add([str(w / "x.bin")])
    repo.commit("c")
    packs = sorted((repo.ms_dir / "packs").rglob("*.pack"))
    assert packs
    for p in packs:  # flip one payload byte in every pack
        b = bytearray(p.read_bytes())
        b[100] ^= 0xFF
        p.write_bytes(bytes(b))
    repo.store.close()  # drop cached descriptors
    with pytest.raises(CorruptObjectError, match=r"x\.bin in commit [0-9a-f]{12}"):
        repo.cat("HEAD", "x.bin", io.BytesIO())


def test_many_packs_and_file_hash(repo: Repository) -> None:
    w = repo.workdir
    data = make_data(500_000, 11)
    write(w / "x.bin", data)
    repo.add([str(w / "x.bin")])
    repo.commit("c")
    assert repo.store.stats().packs >= 10  # 16 KiB packs
    m = repo.file_manifest("HEAD", "x.bin")
    assert m.content_hash == blake3(data).digest()
    assert sum(n for _, n in m.chunks()) == len(data)


def test_concurrent_readers_while_writing(repo: Repository) -> None:
    w = repo.workdir
    write(w / "a", make_data(100_000, 1))
    repo.add([str(w / "a")])
    repo.commit("1")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                out = io.BytesIO()
                repo.cat("HEAD", "a", out)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(3):
        write(w / "a", make_data(100_000, 100 + i))
        repo.add([str(w / "a")])
        repo.commit(f"w{i}")
    t.join()
    assert not errors
