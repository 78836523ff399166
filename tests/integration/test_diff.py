"""diff: files between commits, the index and the working tree; new chunk bytes; per-tensor
diffs of safetensors files that read only the chunks they need."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelstore import Repository
from modelstore import diff as msdiff
from modelstore.chunkstore import ChunkStore
from modelstore.errors import BadArgumentError, CorruptObjectError, RefNotFoundError
from tests.conftest import SMALL_CHUNKS, make_data


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def commit_all(repo: Repository, msg: str) -> bytes:
    repo.add([str(repo.workdir)])
    return repo.commit(msg)


@pytest.fixture
def chdir_repo(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.chdir(repo.workdir)
    return repo


@pytest.fixture
def big_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repository]:
    """Tiny chunks (many per tensor) but 1 MiB packs, so MiB-sized checkpoints add quickly."""
    r = Repository.init(tmp_path / "big", chunker=SMALL_CHUNKS, pack_size=1 << 20)
    monkeypatch.chdir(r.workdir)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def read_counter(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the chunk bytes fetched from the store one at a time (what ChunkedFile uses)."""
    seen = {"bytes": 0, "chunks": 0}
    orig = ChunkStore.read_chunk

    def counting(self: ChunkStore, chunk_id: bytes) -> bytes:
        data = orig(self, chunk_id)
        seen["bytes"] += len(data)
        seen["chunks"] += 1
        return data

    monkeypatch.setattr(ChunkStore, "read_chunk", counting)
    return seen


def by_path(res: msdiff.DiffResult) -> dict[str, msdiff.FileDiff]:
    return {f.path: f for f in res.files}


def tensors_of(fd: msdiff.FileDiff) -> dict[str, msdiff.TensorDiff]:
    assert fd.tensors is not None, fd.tensor_error
    return {t.name: t for t in fd.tensors.tensors}


# -- scan -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size", [0, 1, 300_000, 6 << 20], ids=["empty", "1B", "inline", "segments"]
)
def test_scan_gives_the_manifest_add_would_store(big_repo: Repository, size: int) -> None:
    repo = big_repo
    data = make_data(size, seed=size)
    write(repo.workdir / "f.bin", data)
    seen: list[tuple[bytes, int]] = []
    m = repo.store.scan(io.BytesIO(data), lambda c, n: seen.append((c, n)))
    repo.add([str(repo.workdir / "f.bin")])
    repo.commit("c")
    stored = repo.file_manifest("HEAD", "f.bin")
    assert m.id == stored.id and m.size == size
    assert seen == list(repo.manifest_chunks(stored))
    if size == 6 << 20:
        assert len(stored.segments) >= 2  # the segmented path was exercised


# -- files ------------------------------------------------------------------------------------
def test_added_removed_modified_renamed_between_commits(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    big = make_data(200_000, seed=1)
    write(w / "model.bin", big)
    write(w / "old" / "name.bin", make_data(30_000, seed=2))
    write(w / "gone.txt", b"bye\n")
    write(w / "same.txt", b"same\n")
    commit_all(repo, "v1")
    changed = bytearray(big)
    changed[100_000:100_016] = b"X" * 16
    write(w / "model.bin", bytes(changed))
    os.rename(w / "old" / "name.bin", w / "new-name.bin")
    os.unlink(w / "gone.txt")
    write(w / "fresh.bin", make_data(20_000, seed=3))
    repo.rm(["old", "gone.txt"], cached=True)
    commit_all(repo, "v2")

    res = msdiff.diff(repo, "HEAD~1", "HEAD")
    files = by_path(res)
    assert set(files) == {"model.bin", "new-name.bin", "gone.txt", "fresh.bin"}
    m = files["model.bin"]
    assert (m.status, m.old_size, m.new_size) == ("modified", 200_000, 200_000)
    assert 0 < m.new_bytes < 20_000 and m.new_chunks >= 1  # a few KiB chunks around the edit
    assert m.tensors is None and m.tensor_error is None  # not safetensors
    r = files["new-name.bin"]
    assert (r.status, r.old_path, r.new_bytes, r.old_id) == ("renamed", "old/name.bin", 0, r.new_id)
    g = files["gone.txt"]
    assert (g.status, g.old_size, g.new_size, g.new_bytes) == ("removed", 4, None, 0)
    f = files["fresh.bin"]
    assert (f.status, f.old_size, f.new_size, f.new_bytes) == ("added", None, 20_000, 20_000)
    s = res.summary
    assert (s["files"], s["added"], s["removed"], s["modified"], s["renamed"]) == (4, 1, 1, 1, 1)
    assert s["new_bytes"] == m.new_bytes + 20_000
    assert s["size_delta"] == 20_000 - 4
    assert [x.path for x in res.files] == sorted(files)
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["old"]["kind"] == "commit" and doc["old"]["rev"] == "HEAD~1"
    assert {x["status"] for x in doc["files"]} == {"added", "removed", "modified", "renamed"}
    # reversed: added <-> removed, the rename goes the other way
    back = by_path(msdiff.diff(repo, "HEAD", "HEAD~1"))
    assert back["fresh.bin"].status == "removed" and back["gone.txt"].status == "added"
    assert back["old/name.bin"].old_path == "new-name.bin"
    assert msdiff.diff(repo, "HEAD", "HEAD").files == []


def test_new_bytes_counts_each_distinct_new_chunk_once(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    write(w / "a.bin", make_data(50_000, seed=4))
    commit_all(repo, "v1")
    block = make_data(40_000, seed=5)
    write(w / "a.bin", block + block)  # the second copy dedups against the first
    res = by_path(msdiff.diff(repo, "HEAD"))
    assert res["a.bin"].status == "modified"
    assert 40_000 <= res["a.bin"].new_bytes < 48_000


def test_working_tree_vs_index_reads_only_changed_files(
    chdir_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    past = 1_600_000_000_000_000_000  # old mtimes: not "racily clean", the stat cache holds
    for i in range(5):
        write(w / f"f{i}.bin", make_data(10_000, seed=10 + i))
        os.utime(w / f"f{i}.bin", ns=(past, past))
    commit_all(repo, "v1")
    assert msdiff.diff(repo).files == []
    write(w / "f1.bin", make_data(10_000, seed=99))
    os.unlink(w / "f3.bin")
    write(w / "untracked.bin", b"not shown")
    scanned: list[int] = []
    orig = ChunkStore.scan

    def spy(self: ChunkStore, stream: Any, on_chunk: Any = None, plan: Any = None) -> Any:
        scanned.append(1)
        return orig(self, stream, on_chunk, plan)

    monkeypatch.setattr(ChunkStore, "scan", spy)
    res = msdiff.diff(repo)
    assert (res.old.kind, res.new.kind) == ("index", "working")
    files = by_path(res)
    assert set(files) == {"f1.bin", "f3.bin"}
    assert files["f1.bin"].status == "modified" and files["f1.bin"].new_bytes > 0
    assert files["f3.bin"].status == "removed"
    assert len(scanned) == 1  # the stat cache spared the unchanged files
    # a touched but identical file is read, and found unchanged
    os.utime(w / "f0.bin", ns=(1, 1))
    assert set(by_path(msdiff.diff(repo))) == {"f1.bin", "f3.bin"}
    # the working file's id is the one `add` will give it
    repo.add(["f1.bin"])
    assert msdiff.diff(repo).files[0].path == "f3.bin"
    staged = by_path(msdiff.diff(repo, staged=True))
    assert staged["f1.bin"].new_id == files["f1.bin"].new_id


def test_working_tree_and_index_vs_a_revision(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    write(w / "a.bin", make_data(10_000, seed=1))
    commit_all(repo, "v1")
    write(w / "b.bin", make_data(5_000, seed=2))
    repo.add(["b.bin"])  # staged, not committed
    write(w / "a.bin", make_data(10_000, seed=3))  # modified, not staged
    vs_head = by_path(msdiff.diff(repo, "HEAD"))
    assert vs_head["b.bin"].status == "added" and vs_head["a.bin"].status == "modified"
    staged = by_path(msdiff.diff(repo, staged=True))
    assert set(staged) == {"b.bin"}  # the index knows nothing of a.bin's edit
    assert set(by_path(msdiff.diff(repo))) == {"a.bin"}
    # a file dropped from the index counts as removed, even if still on disk
    repo.rm(["b.bin"], cached=True)
    assert "b.bin" not in by_path(msdiff.diff(repo, "HEAD"))
    repo.rm(["a.bin"], cached=True)
    assert by_path(msdiff.diff(repo, "HEAD"))["a.bin"].status == "removed"


def test_staged_on_an_unborn_head(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    write(w / "a.bin", b"hello")
    repo.add(["a.bin"])
    res = msdiff.diff(repo, staged=True)
    assert res.old.commit is None and [f.status for f in res.files] == ["added"]
    with pytest.raises(RefNotFoundError):
        msdiff.diff(repo, "HEAD")


def test_mode_only_change(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    write(w / "run.sh", b"#!/bin/sh\n")
    commit_all(repo, "v1")
    os.chmod(w / "run.sh", 0o755)
    (fd,) = msdiff.diff(repo).files
    assert (fd.status, fd.old_mode, fd.new_mode, fd.new_bytes) == ("modified", "644", "755", 0)


def test_path_filter_is_a_prefix_on_path_components(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    for p in ("dir/a.bin", "dir/sub/b.bin", "dir2/c.bin", "top.bin"):
        write(w / p, b"1")
    commit_all(repo, "v1")
    for p in ("dir/a.bin", "dir/sub/b.bin", "dir2/c.bin", "top.bin"):
        write(w / p, b"22")

    def paths(*sel: str) -> list[str]:
        return [f.path for f in msdiff.diff(repo, paths=sel).files]

    assert paths("dir") == ["dir/a.bin", "dir/sub/b.bin"]
    assert paths("dir/sub", "top.bin") == ["dir/sub/b.bin", "top.bin"]
    assert paths("dir/") == ["dir/a.bin", "dir/sub/b.bin"]
    assert paths(".") == paths() and len(paths()) == 4
    assert paths("nothing") == []
    os.chdir(w / "dir")  # paths are relative to the current directory, like every command
    assert paths("sub") == ["dir/sub/b.bin"]


def test_bad_arguments(chdir_repo: Repository) -> None:
    repo = chdir_repo
    write(repo.workdir / "a.bin", b"x")
    commit_all(repo, "v1")
    with pytest.raises(BadArgumentError):
        msdiff.diff(repo, None, "HEAD")
    with pytest.raises(BadArgumentError):
        msdiff.diff(repo, "HEAD", "HEAD", staged=True)
    with pytest.raises(RefNotFoundError):
        msdiff.diff(repo, "no-such-branch")


def test_split_args_like_git(chdir_repo: Repository) -> None:
    repo = chdir_repo
    write(repo.workdir / "a.bin", b"x")
    commit_all(repo, "v1")
    assert msdiff.split_args(repo, ["HEAD", "a.bin"]) == (["HEAD"], ["a.bin"])
    assert msdiff.split_args(repo, ["HEAD", "HEAD", "a.bin"]) == (["HEAD", "HEAD"], ["a.bin"])
    assert msdiff.split_args(repo, ["a.bin"]) == ([], ["a.bin"])
    assert msdiff.split_args(repo, ["HEAD"], ["gone.bin"]) == (["HEAD"], ["gone.bin"])
    assert msdiff.split_args(repo, [], ["HEAD"]) == ([], ["HEAD"])
    with pytest.raises(RefNotFoundError):
        msdiff.split_args(repo, ["gone.bin"])  # neither a revision nor a file: use --
    with pytest.raises(RefNotFoundError):
        msdiff.split_args(repo, ["nope"], [])
    with pytest.raises(BadArgumentError):
        msdiff.split_args(repo, ["HEAD", "HEAD", "HEAD"], [])
    write(repo.workdir / "main", b"a file named like the branch")
    with pytest.raises(BadArgumentError, match="both a revision and a path"):
        msdiff.split_args(repo, ["main"])
    assert msdiff.split_args(repo, ["main"], []) == (["main"], [])


def test_opening_by_path(chdir_repo: Repository) -> None:
    write(chdir_repo.workdir / "a.bin", b"x")
    commit_all(chdir_repo, "v1")
    write(chdir_repo.workdir / "a.bin", b"y")
    res = msdiff.diff(str(chdir_repo.workdir))
    assert [f.path for f in res.files] == ["a.bin"]


# -- tensors ----------------------------------------------------------------------------------
def test_generated_checkpoint_reports_exactly_the_changed_tensors(
    big_repo: Repository, read_counter: dict[str, int]
) -> None:
    from bench.gen import write_checkpoint

    repo, w = big_repo, big_repo.workdir
    base = write_checkpoint(w / "m.safetensors", 4 << 20, dtype="bf16", seed=0)
    commit_all(repo, "base")
    new = write_checkpoint(w / "m.safetensors", 4 << 20, dtype="bf16", seed=0, change_fraction=0.1)
    assert new["changed"] and new["bytes"] == base["bytes"]
    commit_all(repo, "tuned")
    size = new["bytes"]

    read_counter["bytes"] = 0
    (fd,) = msdiff.diff(repo, "HEAD~1", "HEAD").files
    assert fd.status == "modified" and fd.tensors is not None
    ts = tensors_of(fd)
    assert len(ts) == new["tensors"]
    changed = sorted(n for n, t in ts.items() if t.status == "changed")
    assert changed == sorted(new["changed"])
    for name in changed:
        t = ts[name]
        assert t.max_abs is not None and t.max_abs > 0
        assert t.rel_l2 is not None and 0.5 < t.rel_l2 < 2  # independent draws: ~sqrt(2)
        assert t.method == "values"
    unchanged = [t for t in ts.values() if t.status == "unchanged"]
    assert len(unchanged) == len(ts) - len(changed)
    assert all(t.max_abs is None for t in unchanged)
    # most unchanged tensors were decided from chunk ids alone; the few that share a chunk
    # with a changed neighbour had only those chunks read
    by_chunks = [t for t in unchanged if t.method == "chunks"]
    assert len(by_chunks) >= 0.7 * len(unchanged)
    assert fd.tensors.counts == {
        "added": 0, "removed": 0, "reshaped": 0,
        "changed": len(changed), "unchanged": len(unchanged),
    }  # fmt: skip
    assert not fd.tensors.metadata_changed
    # new chunks ~ the changed tensors' bytes; data read ~ both versions of them, not the file
    assert new["changed_bytes"] <= fd.new_bytes < new["changed_bytes"] + 64 * 1024
    fetched = read_counter["bytes"]
    assert fetched < 2 * new["changed_bytes"] + 256 * 1024
    assert fetched < 0.5 * 2 * size
    assert fd.tensors.bytes_read <= fetched

    # the same edit seen from the working tree (scanned, read with plain file reads)
    repo.checkout("HEAD~1")
    write_checkpoint(w / "m.safetensors", 4 << 20, dtype="bf16", seed=0, change_fraction=0.1)
    read_counter["bytes"] = 0
    (wd,) = msdiff.diff(repo).files
    assert wd.new_id == fd.new_id and wd.new_bytes == fd.new_bytes
    assert {n: t.status for n, t in tensors_of(wd).items()} == {n: t.status for n, t in ts.items()}
    assert read_counter["bytes"] < 2 * new["changed_bytes"]  # only the old side is fetched
    # --no-tensors skips the analysis entirely
    (nt,) = msdiff.diff(repo, tensors=False).files
    assert nt.tensors is None and nt.new_bytes == fd.new_bytes


def st_file(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str] | None = None) -> None:
    save_file(tensors, str(path), metadata=meta)


def test_added_removed_reshaped_changed_tensors(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    rng = np.random.default_rng(0)
    keep = rng.standard_normal((32, 32)).astype(np.float32)
    st_file(
        w / "m.safetensors",
        {
            "keep": keep,
            "ones": np.ones(4, np.float32),
            "zeros": np.zeros(3, np.float16),
            "counts": np.array([1, 2, 3], np.int64),
            "reshape": np.zeros(6, np.float32),
            "retype": np.zeros(4, np.float32),
            "dropped": np.zeros(2, np.uint8),
            "signed_zero": np.zeros(5, np.float32),
            "nan": np.array([np.nan, 1.0], np.float32),
        },
        {"step": "1"},
    )
    commit_all(repo, "v1")
    st_file(
        w / "m.safetensors",
        {
            "keep": keep,
            "ones": np.array([1, 1, 3, 1], np.float32),
            "zeros": np.array([0, 0.5, 0], np.float16),
            "counts": np.array([1, -5, 3], np.int64),
            "reshape": np.zeros((2, 3), np.float32),
            "retype": np.zeros(4, np.float16),
            "new": np.ones(7, np.int32),
            "signed_zero": -np.zeros(5, np.float32),
            "nan": np.array([np.nan, 1.0], np.float32),
        },
        {"step": "2"},
    )
    (fd,) = msdiff.diff(repo).files
    ts = tensors_of(fd)
    assert fd.tensors is not None and fd.tensors.metadata_changed
    status = {n: t.status for n, t in ts.items()}
    assert status == {
        "keep": "unchanged", "ones": "changed", "zeros": "changed", "counts": "changed",
        "reshape": "reshaped", "retype": "reshaped", "new": "added", "dropped": "removed",
        "signed_zero": "unchanged", "nan": "unchanged",
    }  # fmt: skip
    assert (ts["ones"].max_abs, ts["ones"].rel_l2) == (2.0, 1.0)  # |[0,0,2,0]| / |[1,1,1,1]|
    assert ts["zeros"].max_abs == 0.5 and ts["zeros"].rel_l2 == float("inf")
    assert ts["counts"].max_abs == 7.0
    assert (ts["reshape"].old_shape, ts["reshape"].new_shape) == ([6], [2, 3])
    assert (ts["retype"].old_dtype, ts["retype"].new_dtype) == ("F32", "F16")
    assert (ts["new"].new_dtype, ts["new"].new_shape, ts["new"].old_shape) == ("I32", [7], None)
    assert (ts["dropped"].old_dtype, ts["dropped"].new_dtype) == ("U8", None)
    # the header grew, so everything moved: keep still matched (by bytes or values)
    assert ts["keep"].max_abs is None
    doc = json.loads(json.dumps(fd.to_json()))  # strict JSON: inf became a string
    zeros = next(t for t in doc["tensors"]["tensors"] if t["name"] == "zeros")
    assert zeros["rel_l2"] == "inf"
    assert doc["tensors"]["counts"]["reshaped"] == 2


def test_nan_appearing_on_one_side(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    st_file(w / "m.safetensors", {"x": np.array([1.0, 2.0], np.float32)})
    commit_all(repo, "v1")
    st_file(w / "m.safetensors", {"x": np.array([1.0, np.nan], np.float32)})
    t = tensors_of(msdiff.diff(repo).files[0])["x"]
    assert t.status == "changed" and t.max_abs is not None and np.isnan(t.max_abs)
    assert t.to_json()["max_abs"] == "nan"


def test_shifted_data_area_still_matches_by_chunks(
    chdir_repo: Repository, read_counter: dict[str, int]
) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    big = np.frombuffer(make_data(256 * 1024, seed=7), dtype=np.float32)
    st_file(w / "m.safetensors", {"big": big, "small": np.ones(3, np.float32)}, {"v": "1"})
    commit_all(repo, "v1")
    # a longer metadata value shifts every data offset by a few dozen bytes
    st_file(
        w / "m.safetensors",
        {"big": big, "small": np.ones(3, np.float32)},
        {"v": "1", "note": "a longer header moves all the data"},
    )
    commit_all(repo, "v2")
    read_counter["bytes"] = 0
    (fd,) = msdiff.diff(repo, "HEAD~1", "HEAD").files
    t = tensors_of(fd)["big"]
    assert t.status == "unchanged" and t.method in ("chunks", "bytes")
    assert fd.tensors is not None and fd.tensors.metadata_changed
    assert read_counter["bytes"] < 64 * 1024  # the header and a few edge chunks, not 256 KiB
    assert fd.new_bytes < 16 * 1024


def test_not_safetensors_or_malformed(chdir_repo: Repository) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    st_file(w / "a.safetensors", {"x": np.ones(4, np.float32)})
    write(w / "b.safetensors", b"not a safetensors file at all")
    commit_all(repo, "v1")
    # a.safetensors: still sniffs as safetensors, but its header now lies about the size
    raw = bytearray((w / "a.safetensors").read_bytes())
    write(w / "a.safetensors", bytes(raw) + b"trailing")
    write(w / "b.safetensors", b"still not one")
    files = by_path(msdiff.diff(repo))
    assert files["a.safetensors"].tensors is None
    assert "after the last tensor" in (files["a.safetensors"].tensor_error or "")
    assert files["b.safetensors"].tensors is None and files["b.safetensors"].tensor_error is None


def test_corruption_is_not_swallowed(
    chdir_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, w = chdir_repo, chdir_repo.workdir
    st_file(w / "m.safetensors", {"x": np.ones(4, np.float32)})
    commit_all(repo, "v1")
    st_file(w / "m.safetensors", {"x": np.zeros(4, np.float32)})

    def broken(self: ChunkStore, chunk_id: bytes) -> bytes:
        raise CorruptObjectError("chunk does not match its hash")

    monkeypatch.setattr(ChunkStore, "read_chunk", broken)
    with pytest.raises(CorruptObjectError, match=r"m\.safetensors"):
        msdiff.diff(repo)
