"""Disk faults: a full disk during commit, checkout (in place and ``--to``), fetch and clone; the
metadata map filling up; unreadable and truncated packs.

Full disks are real: a small tmpfs mounted for the test (skipped where mounting is impossible).
After every failure the error is one clear line with its documented exit code, the repository
verifies with ``read_data``, what was committed reads back byte-identical, and the same
operation succeeds once space is freed. (``add`` on a full disk: ``test_disk_full.py``.)
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelstore.metadb as metadb
from modelstore import Repository, api
from modelstore.errors import CorruptObjectError, RepositoryFullError, StorageError
from modelstore.pack import FOOTER
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data

pytestmark = pytest.mark.faults


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real, tiny filesystem at ``path``; the test is skipped where it cannot be mounted."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt


def fill(fs: Path, keep: int) -> Path:
    """Fill ``fs`` with one file until only about ``keep`` bytes are free; return the file."""
    st = os.statvfs(fs)
    filler = fs / "filler"
    with open(filler, "ab") as f, contextlib.suppress(OSError):
        f.write(bytes(max(0, st.f_bavail * st.f_frsize - keep)))
    return filler


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelstore.cli.main", *args],
                          capture_output=True, text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def read(repo: Repository, rev: str, path: str) -> bytes:
    out = io.BytesIO()
    repo.cat(rev, path, out)
    return out.getvalue()


def no_temp_files(root: Path) -> None:
    left = [p for p in root.rglob("*") if ".ms-tmp-" in p.name or p.name.endswith(".pack.tmp")]
    assert left == []


def test_commit_on_a_full_disk(small_fs: Path) -> None:
    r = Repository.init(small_fs / "w", pack_size=256 << 10)
    first = make_data(300_000, 1)
    (r.workdir / "a.bin").write_bytes(first)
    r.add([str(r.workdir / "a.bin")])
    c1 = r.commit("v1")
    (r.workdir / "b.txt").write_text("staged\n")
    r.add([str(r.workdir / "b.txt")])
    filler = fill(small_fs, 64 << 10)
    # a 2 MB message cannot fit: LMDB must grow its file (it reports the short write as EIO)
    with pytest.raises(RepositoryFullError, match="no space left") as info:
        r.commit("m" * 2_000_000)
    assert "free disk space" in info.value.message
    assert r.resolve("HEAD") == c1 and [c.message for _, c in r.log()] == ["v1"]
    assert r.status().staged == [("added", "b.txt")]  # the staging index is as it was
    assert read(r, "HEAD", "a.bin") == first
    assert verify(r, read_data=True).ok
    filler.unlink()
    c2 = r.commit("v2")
    assert r.get_commit(c2).parents == (c1,) and read(r, "HEAD", "b.txt") == b"staged\n"
    assert verify(r, read_data=True).ok
    r.close()


def test_checkout_into_the_working_tree_on_a_full_disk(small_fs: Path) -> None:
    r = Repository.init(small_fs / "w", pack_size=256 << 10)
    v1, v2 = make_data(700_000, 1), make_data(700_000, 2)
    (r.workdir / "a.bin").write_bytes(v1)
    r.add([str(r.workdir / "a.bin")])
    c1 = r.commit("v1")
    (r.workdir / "a.bin").write_bytes(v2)
    r.add([str(r.workdir / "a.bin")])
    c2 = r.commit("v2")
    filler = fill(small_fs, 100 << 10)
    with pytest.raises(RepositoryFullError, match=r"no space left.*a\.bin"):
        r.checkout(c1.hex())
    # nothing half-written: the file, the index and HEAD are still at v2
    assert (r.workdir / "a.bin").read_bytes() == v2
    no_temp_files(r.workdir)
    assert r.resolve("HEAD") == c2 and r.status().clean
    assert read(r, c1.hex(), "a.bin") == v1 and verify(r, read_data=True).ok
    filler.unlink()
    r.checkout(c1.hex())
    assert (r.workdir / "a.bin").read_bytes() == v1 and r.resolve("HEAD") == c1
    assert r.status().clean and verify(r, read_data=True).ok
    r.close()


def test_checkout_to_a_full_disk_and_cli_exit_16(tmp_path: Path, small_fs: Path) -> None:
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=256 << 10)
    files = {f"d/f{i}.bin": make_data(500_000, i) for i in range(4)}
    for name, data in files.items():
        (r.workdir / name).parent.mkdir(exist_ok=True)
        (r.workdir / name).write_bytes(data)
    r.add([str(r.workdir / "d")])
    c = r.commit("four files")
    r.close()
    out = small_fs / "out"
    filler = fill(small_fs, 1_200_000)  # two files fit, the third does not
    one_line(cli("-C", str(tmp_path / "w"), "checkout", "--to", str(out), "HEAD"), 16,
             "no space left", "free disk space")
    no_temp_files(out)
    r = Repository.open(tmp_path / "w")
    assert verify(r, read_data=True).ok and r.resolve("HEAD") == c
    filler.unlink()
    r.checkout("HEAD", to=out)
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    r.close()


@pytest.fixture
def remote_with_a_model(tmp_path: Path) -> tuple[str, bytes]:
    src = Repository.init(tmp_path / "src", pack_size=4 << 20)
    data = make_data(1_500_000, 7)
    (src.workdir / "m.bin").write_bytes(data)
    src.add([str(src.workdir / "m.bin")])
    src.commit("model")
    src.set_remote("origin", str(tmp_path / "remote"))
    api.push(src)
    src.close()
    return str(tmp_path / "remote"), data


def test_fetch_on_a_full_disk(small_fs: Path, remote_with_a_model: tuple[str, bytes]) -> None:
    url, data = remote_with_a_model
    r = Repository.init(small_fs / "b")
    r.set_remote("origin", url)
    filler = fill(small_fs, 500 << 10)
    with pytest.raises(RepositoryFullError, match="no space left") as info:
        api.fetch(r)
    assert "free disk space" in info.value.message
    # no ref moved, no partial pack, nothing unverifiable
    assert list(r.log()) == [] and not os.listdir(r.ms_dir / "tmp")
    with pytest.raises(Exception, match="unknown revision"):
        r.resolve("origin/main")
    assert verify(r, read_data=True).ok
    filler.unlink()
    api.fetch(r)
    r.checkout("origin/main")
    assert (r.workdir / "m.bin").read_bytes() == data and verify(r, read_data=True).ok
    r.close()


def test_cli_fetch_and_clone_on_a_full_disk(
    small_fs: Path, remote_with_a_model: tuple[str, bytes]
) -> None:
    url, data = remote_with_a_model
    filler = fill(small_fs, 500 << 10)
    one_line(cli("clone", url, str(small_fs / "c")), 16, "no space left")
    assert not (small_fs / "c").exists()  # a failed clone takes its directory (and space) back
    r = Repository.init(small_fs / "b")
    r.set_remote("origin", url)
    r.close()
    one_line(cli("-C", str(small_fs / "b"), "fetch"), 16, "no space left")
    filler.unlink()
    assert cli("-C", str(small_fs / "b"), "fetch", "-q").returncode == 0
    assert cli("-C", str(small_fs / "b"), "checkout", "origin/main").returncode == 0
    assert (small_fs / "b" / "m.bin").read_bytes() == data


# -- the metadata map ---------------------------------------------------------------------------


def test_a_full_lmdb_map_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadb, "INITIAL_MAP_SIZE", 64 << 10)
    r = Repository.init(tmp_path / "w")
    assert r.db.env.info()["map_size"] == 64 << 10
    for i in range(20):
        (r.workdir / f"f{i:02}.txt").write_text(f"file {i}\n" * 50)
    r.add([str(r.workdir)])
    c = r.commit("x" * 1_000_000)  # a 1 MB message (and its reflog entries) cannot fit in 64 KiB
    assert r.db.env.info()["map_size"] >= 2 << 20  # MDB_MAP_FULL: aborted, doubled, re-run
    assert r.get_commit(c).message == "x" * 1_000_000
    assert read(r, "HEAD", "f19.txt") == b"file 19\n" * 50
    assert verify(r, read_data=True).ok and len(r.commit_files(c)) == 20
    r.close()
    r = Repository.open(tmp_path / "w")  # reopened with the small map: the file is larger
    assert r.resolve("HEAD") == c and verify(r, read_data=True).ok
    r.close()


def test_lmdb_map_at_its_limit_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metadb, "INITIAL_MAP_SIZE", 256 << 10)
    monkeypatch.setattr(metadb, "MAX_MAP_SIZE", 256 << 10)
    r = Repository.init(tmp_path / "w")
    (r.workdir / "a.txt").write_text("kept\n")
    r.add([str(r.workdir / "a.txt")])
    c = r.commit("small")
    (r.workdir / "b.txt").write_text("staged\n")
    r.add([str(r.workdir / "b.txt")])
    with pytest.raises(RepositoryFullError) as info:
        r.commit("x" * 1_000_000)
    assert info.value.exit_code == 16
    assert "largest map size" in info.value.message and "ms gc" in info.value.message
    assert r.resolve("HEAD") == c and verify(r, read_data=True).ok
    assert r.status().staged == [("added", "b.txt")]
    monkeypatch.setattr(metadb, "MAX_MAP_SIZE", 1 << 44)
    c2 = r.commit("x" * 1_000_000)
    assert r.get_commit(c2).parents == (c,) and verify(r, read_data=True).ok
    r.close()


# -- unreadable and truncated packs -------------------------------------------------------------


def _repo_with_packs(path: Path) -> tuple[Repository, bytes, bytes]:
    r = Repository.init(path, chunker=SMALL_CHUNKS, pack_size=16 << 10)
    data = make_data(60_000, 4)
    (r.workdir / "m.bin").write_bytes(data)
    r.add([str(r.workdir / "m.bin")])
    return r, r.commit("v1"), data


def test_an_io_error_on_read_names_the_pack_file_and_the_commit(tmp_path: Path) -> None:
    r, c, _ = _repo_with_packs(tmp_path / "w")
    pack = max((r.ms_dir / "packs").rglob("*.pack"), key=lambda p: p.stat().st_size)
    pack.unlink()
    pack.mkdir()  # reading it now fails in the kernel (EISDIR), like a dying disk's EIO
    r.close()
    r = Repository.open(tmp_path / "w")
    with pytest.raises(StorageError) as info:
        read(r, "HEAD", "m.bin")
    msg = info.value.message
    assert str(pack) in msg and "m.bin" in msg and c.hex()[:12] in msg
    with pytest.raises(StorageError, match=str(pack)):
        r.checkout("HEAD", to=tmp_path / "out")
    rep = verify(r, read_data=True)  # reported, not raised
    assert any(p.where == str(pack) and "cannot read" in p.detail for p in rep.problems)
    r.close()
    line = one_line(cli("-C", str(tmp_path / "w"), "cat", "HEAD:m.bin"), 15, str(pack), "m.bin")
    assert c.hex()[:12] in line
    assert cli("-C", str(tmp_path / "w"), "verify").returncode == 13


@pytest.mark.parametrize("cut", [1, 8, 64, 65, 200, 1000, 5000])
def test_a_truncated_pack_tail_is_detected(tmp_path: Path, cut: int) -> None:
    r, c, data = _repo_with_packs(tmp_path / "w")
    pack = max((r.ms_dir / "packs").rglob("*.pack"), key=lambda p: p.stat().st_size)
    raw = pack.read_bytes()
    index_offset = FOOTER.unpack_from(raw, len(raw) - FOOTER.size)[0]
    pack.write_bytes(raw[:-cut])
    rep = verify(r)
    assert any(p.where == str(pack) and "truncated" in p.detail for p in rep.problems)
    # reads never return wrong bytes: all of it while the cut spares the chunks (the chunk
    # index is in LMDB), else an error naming the pack, the file and the commit
    if len(raw) - cut >= index_offset:
        assert read(r, "HEAD", "m.bin") == data
    else:
        with pytest.raises(CorruptObjectError) as info:
            read(r, "HEAD", "m.bin")
        msg = info.value.message
        assert str(pack) in msg and "truncated" in msg and f"m.bin in commit {c.hex()[:12]}" in msg
    assert not verify(r, read_data=True).ok
    r.close()
