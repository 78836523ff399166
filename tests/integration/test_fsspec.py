"""ms:// through fsspec: pandas, pyarrow and plain fsspec read any version in place."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from modelstore import Repository
from modelstore import fs as msfs
from modelstore.aliases import set_alias
from modelstore.branches import create_branch, create_tag
from modelstore.errors import (
    BadArgumentError,
    MsError,
    NotARepositoryError,
    PathError,
    RefNotFoundError,
)
from tests.conftest import SMALL_CHUNKS, make_data


@pytest.fixture(autouse=True)
def close_cached_repositories() -> Iterator[None]:
    yield
    msfs.close_repositories()


@dataclass
class Versions:
    repo: Repository
    url: str  # ms://<abs workdir>
    v1: Path  # copies of the originals, outside the repository
    v2: Path


def frame(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "x": rng.standard_normal(rows),
            "label": rng.choice(["cat", "dog", "bird, with comma"], rows),
        }
    )


@pytest.fixture
def versions(tmp_path: Path) -> Iterator[Versions]:
    """data/train.csv (~1 MiB, many chunks), a parquet file and a blob in two commits."""
    r = Repository.init(tmp_path / "work", chunker=SMALL_CHUNKS, pack_size=1 << 20)
    w = r.workdir
    (w / "data").mkdir()
    orig = {1: tmp_path / "orig1", 2: tmp_path / "orig2"}
    for v in (1, 2):
        frame(v, 20_000 + v * 1000).to_csv(w / "data" / "train.csv", index=False)
        frame(10 + v, 5000).to_parquet(w / "data" / "t.parquet", row_group_size=1000)
        (w / "blob.bin").write_bytes(make_data(300_000, seed=v))
        (w / "same.txt").write_text("unchanged\n")
        orig[v].mkdir()
        for rel in ("data/train.csv", "data/t.parquet", "blob.bin"):
            shutil.copy(w / rel, orig[v] / Path(rel).name)
        r.add([str(w)])
        r.commit(f"v{v}")
        if v == 1:
            create_tag(r, "v1", "HEAD")
    try:
        yield Versions(r, f"ms://{w}", orig[1], orig[2])
    finally:
        r.close()


# -- pandas and pyarrow -----------------------------------------------------------------------
def test_pandas_read_csv_reads_each_version(versions: Versions) -> None:
    u = versions.url
    want1 = pd.read_csv(versions.v1 / "train.csv")
    want2 = pd.read_csv(versions.v2 / "train.csv")
    assert not want1.equals(want2)
    for rev in ("v1", "HEAD~1", "main~1"):
        pd.testing.assert_frame_equal(pd.read_csv(f"{u}@{rev}/data/train.csv"), want1)
    for spec in ("@HEAD/data/train.csv", "@main/data/train.csv", "/data/train.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(u + spec), want2)
    # revisions that hold '@' themselves: the reflog, HEAD@{1} is where HEAD was before v2
    pd.testing.assert_frame_equal(pd.read_csv(f"{u}@HEAD@{{1}}/data/train.csv"), want1)
    # chunked reading (many small reads and the parser's own buffering)
    parts = pd.read_csv(f"{u}@v1/data/train.csv", chunksize=997)
    pd.testing.assert_frame_equal(pd.concat(parts), want1)
    # the working tree plays no part
    (versions.repo.workdir / "data" / "train.csv").unlink()
    pd.testing.assert_frame_equal(pd.read_csv(f"{u}@v1/data/train.csv"), want1)


def test_parquet_through_pandas_and_pyarrow(versions: Versions) -> None:
    u = versions.url
    want1 = pd.read_parquet(versions.v1 / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(f"{u}@v1/data/t.parquet"), want1)
    fs = fsspec.filesystem("ms")
    path = f"{versions.repo.workdir}@HEAD/data/t.parquet"
    table = pq.read_table(path, filesystem=fs, columns=["x"])
    assert table.column("x").to_pylist() == pd.read_parquet(versions.v2 / "t.parquet")["x"].tolist()
    with fs.open(path) as f:  # random access: footer first, then row groups
        pf = pq.ParquetFile(f)
        assert pf.metadata.num_row_groups == 5
        assert pf.read_row_group(3).num_rows == 1000


def test_storage_options_fix_the_repository_and_revision(
    versions: Versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = versions.repo.workdir
    want1 = pd.read_csv(versions.v1 / "train.csv")
    got = pd.read_csv("ms://data/train.csv", storage_options={"repo": str(w), "rev": "v1"})
    pd.testing.assert_frame_equal(got, want1)
    # rev= alone is the default revision for URLs that name none
    pd.testing.assert_frame_equal(
        pd.read_csv(f"{versions.url}/data/train.csv", storage_options={"rev": "v1"}), want1
    )
    fs = fsspec.filesystem("ms", repo=w, rev="v1")
    assert fs.ls("", detail=False) == ["blob.bin", "data", "same.txt"]
    assert fs.cat_file("blob.bin") == (versions.v1 / "blob.bin").read_bytes()
    # an open Repository can be handed over as well
    fs2 = msfs.MsFileSystem(repo=versions.repo, rev="HEAD")
    assert fs2.cat_file("/blob.bin") == (versions.v2 / "blob.bin").read_bytes()
    with pytest.raises(FileNotFoundError, match="not a modelstore repository"):
        fsspec.filesystem("ms", repo=str(w / "data")).ls("")


def test_relative_urls_and_at_signs_in_folders_paths_and_branches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = Repository.init(tmp_path / "runs@2024" / "exp", chunker=SMALL_CHUNKS)
    try:
        w = r.workdir
        (w / "d@ta").mkdir()
        (w / "d@ta" / "a@b.csv").write_text("a\n1\n")
        r.add([str(w)])
        r.commit("one")
        create_branch(r, "feature/x")
        set_alias(r, "prod", "HEAD")
        (w / "d@ta" / "a@b.csv").write_text("a\n2\n")
        r.add([str(w)])
        r.commit("two")
        monkeypatch.chdir(tmp_path)
        for url, want in (
            ("ms://runs@2024/exp@HEAD~1/d@ta/a@b.csv", 1),
            ("ms://runs@2024/exp/d@ta/a@b.csv", 2),  # no @REV: HEAD
            ("ms://runs@2024/exp@feature%2Fx/d@ta/a@b.csv", 1),  # '/' in REV as %2F
            ("ms://runs@2024/exp@@prod/d@ta/a@b.csv", 1),  # an alias
            (f"ms://{w}@main/d@ta/a@b.csv", 2),
            ("ms://./runs@2024/exp@main/d@ta/a@b.csv", 2),
        ):
            assert pd.read_csv(url)["a"].tolist() == [want], url
        fs = fsspec.filesystem("ms")
        assert fs.ls("runs@2024/exp@feature%2Fx/d@ta", detail=False) == [
            "runs@2024/exp@feature%2Fx/d@ta/a@b.csv"
        ]
        with pytest.raises(BadArgumentError, match="empty revision"):
            fs.info("runs@2024/exp@/d@ta")
    finally:
        r.close()


# -- fsspec file and filesystem behaviour -----------------------------------------------------
def test_open_is_seekable_and_reads_exact_ranges(versions: Versions) -> None:
    want = (versions.v1 / "blob.bin").read_bytes()
    rng = np.random.default_rng(0)
    with fsspec.open(f"{versions.url}@v1/blob.bin", "rb") as f:
        assert f.seekable() and f.readable() and not f.writable()
        assert f.size == len(want)
        for _ in range(50):
            start = int(rng.integers(0, len(want)))
            n = int(rng.integers(0, 20_000))
            assert f.seek(start) == start
            assert f.read(n) == want[start : start + n]
            assert f.tell() == min(start + n, len(want))
        f.seek(-100, io.SEEK_END)
        assert f.read() == want[-100:]
        assert f.read(10) == b""
        f.seek(len(want) + 5)
        assert f.read(10) == b""
        f.seek(1000)
        f.seek(500, io.SEEK_CUR)
        buf = bytearray(4096)
        assert f.readinto(buf) == 4096 and bytes(buf) == want[1500:5596]
    with fsspec.open(f"{versions.url}@v1/data/train.csv", "rt") as t:
        assert t.readline() == "id,x,label\n"
    fs = fsspec.filesystem("ms")
    p = f"{versions.repo.workdir}@v1/blob.bin"
    assert fs.cat_file(p) == want
    assert fs.cat_file(p, 10, 20) == want[10:20]
    assert fs.cat_file(p, -50) == want[-50:]
    assert fs.cat_file(p, 100, -100) == want[100:-100]
    assert fs.cat_file(p, 10**9) == b""
    assert fs.cat_ranges([p, p], [0, 7], [5, 9]) == [want[0:5], want[7:9]]
    assert fs.read_block(p, 1000, 100) == want[1000:1100]
    assert fs.head(p, 64) == want[:64] and fs.tail(p, 64) == want[-64:]


def test_ls_info_exists_glob_find(versions: Versions) -> None:
    fs = fsspec.filesystem("ms")
    base = f"{versions.repo.workdir}@v1"
    top = fs.ls(base)
    assert [(d["name"], d["type"]) for d in top] == [
        (f"{base}/blob.bin", "file"),
        (f"{base}/data", "directory"),
        (f"{base}/same.txt", "file"),
    ]
    blob = fs.info(f"ms://{base}/blob.bin")
    assert blob["size"] == 300_000 and blob["type"] == "file" and blob["mode"] == 0o644
    assert blob["commit"] == versions.repo.resolve("v1").hex()
    assert fs.info(base)["type"] == "directory" and fs.isdir(f"{base}/data")
    assert fs.isfile(f"{base}/data/train.csv") and not fs.isdir(f"{base}/data/train.csv")
    assert fs.ls(f"{base}/blob.bin", detail=False) == [f"{base}/blob.bin"]
    assert fs.size(f"{base}/data/train.csv") == (versions.v1 / "train.csv").stat().st_size
    assert fs.exists(f"{base}/data/t.parquet")
    for missing in (f"{base}/nope", f"{base}/blob.bin/x", f"{versions.repo.workdir}@v9/blob.bin"):
        assert not fs.exists(missing)
    assert fs.glob(f"{base}/data/*.csv") == [f"{base}/data/train.csv"]
    assert fs.glob(f"ms://{base}/**/*.parquet") == [f"{base}/data/t.parquet"]
    assert fs.glob(f"{base}/*") == [f"{base}/blob.bin", f"{base}/data", f"{base}/same.txt"]
    assert fs.find(base) == [
        f"{base}/blob.bin",
        f"{base}/data/t.parquet",
        f"{base}/data/train.csv",
        f"{base}/same.txt",
    ]
    assert fs.find(base, maxdepth=1, withdirs=True) == [
        f"{base}/blob.bin",
        f"{base}/data",
        f"{base}/same.txt",
    ]
    assert fs.find(f"{base}/nope") == []
    assert fs.du(f"{base}/data") == sum(
        (versions.v1 / n).stat().st_size for n in ("train.csv", "t.parquet")
    )
    # the content id: unchanged files keep it across versions, changed ones do not
    head = f"{versions.repo.workdir}@HEAD"
    assert fs.ukey(f"{base}/same.txt") == fs.ukey(f"{head}/same.txt")
    assert fs.ukey(f"{base}/blob.bin") != fs.ukey(f"{head}/blob.bin")
    assert fs.checksum(f"{base}/same.txt") == fs.checksum(f"{head}/same.txt")


def test_missing_things_are_file_not_found_and_ms_errors(versions: Versions) -> None:
    w = versions.repo.workdir
    cases: list[tuple[str, type[MsError]]] = [
        (f"ms://{w}@v1/data/nope.csv", PathError),
        (f"ms://{w}@v1/blob.bin/inside", PathError),
        (f"ms://{w}@v9/data/train.csv", RefNotFoundError),
        (f"ms://{w.parent}/nowhere@v1/data/train.csv", NotARepositoryError),
        (f"ms://{w.parent}/data/train.csv", NotARepositoryError),
    ]
    for url, kind in cases:
        with pytest.raises(FileNotFoundError) as info:
            pd.read_csv(url)
        assert isinstance(info.value, kind), url
        with pytest.raises(kind):
            fsspec.open(url).open()
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: not in v1 of "):
        fsspec.filesystem("ms").info(f"{w}@v1/data/nope.csv")
    with pytest.raises(IsADirectoryError) as isdir:
        fsspec.open(f"ms://{w}@v1/data").open()
    assert isinstance(isdir.value, PathError)
    # an unknown revision is an error for find and glob too, not an empty answer
    with pytest.raises(RefNotFoundError):
        fsspec.filesystem("ms").glob(f"{w}@v9/data/*")


def test_read_only(versions: Versions) -> None:
    fs = fsspec.filesystem("ms")
    p = f"{versions.repo.workdir}@HEAD/data/new.csv"
    for mode in ("wb", "ab", "w", "xb"):
        with pytest.raises(PermissionError, match="read-only"):
            fs.open(p, mode)
    with pytest.raises(msfs.ReadOnlyError):
        pd.DataFrame({"a": [1]}).to_csv(f"ms://{p}")
    for call in (
        lambda: fs.rm(f"{versions.repo.workdir}@HEAD/blob.bin"),
        lambda: fs.mkdir(p),
        lambda: fs.makedirs(p),
        lambda: fs.pipe_file(p, b"x"),
        lambda: fs.cp_file(f"{versions.repo.workdir}@HEAD/blob.bin", p),
    ):
        with pytest.raises(msfs.ReadOnlyError):
            call()
    assert versions.repo.status().clean


def test_one_repository_per_folder_is_opened_and_reused(versions: Versions) -> None:
    u = versions.url
    for rev in ("v1", "HEAD", "main", "v1"):
        pd.read_csv(f"{u}@{rev}/data/train.csv")
    fsspec.filesystem("ms").ls(f"{versions.repo.workdir}@v1")
    assert list(msfs._repos) == [os.path.realpath(versions.repo.workdir)]
    cached = msfs._repos[os.path.realpath(versions.repo.workdir)]
    assert cached is not versions.repo and cached.db is versions.repo.db  # one LMDB env
    msfs.close_repositories()
    assert msfs._repos == {}
    pd.read_csv(f"{u}@v1/data/train.csv")  # opens again on demand
    assert len(msfs._repos) == 1


def test_split_ms_path_rules(tmp_path: Path) -> None:
    repos = {"/r", "/a@b/r", "/r/inner"}

    def split(p: str) -> tuple[str, str | None, str]:
        return msfs.split_ms_path(p, repos.__contains__)

    assert split("/r@v1/x/y.csv") == ("/r", "v1", "x/y.csv")
    assert split("/r@v1") == ("/r", "v1", "")
    assert split("/r/x/y.csv") == ("/r", None, "x/y.csv")
    assert split("/r") == ("/r", None, "")
    assert split("/a@b/r@HEAD~1/f") == ("/a@b/r", "HEAD~1", "f")
    assert split("/r@main@{2}/f@g") == ("/r", "main@{2}", "f@g")
    assert split("/r@@prod/f") == ("/r", "@prod", "f")
    assert split("/r@feature%2Fx/f") == ("/r", "feature%2Fx", "f")
    assert split("/r/inner@v2/f") == ("/r/inner", "v2", "f")  # the nearest repository
    assert split("/r/inner/f") == ("/r/inner", None, "f")
    with pytest.raises(NotARepositoryError):
        split("/elsewhere@v1/f")
    with pytest.raises(FileNotFoundError):
        split("")
