"""A repository written by format 1 (frozen in tests/data) opens, reads and verifies."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from blake3 import blake3

from modelstore import Repository
from modelstore.verify import verify

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "repo-format-1.tar.gz"


@pytest.fixture
def frozen(tmp_path: Path) -> tuple[Path, dict]:
    if not FIXTURE.exists():
        pytest.fail(f"missing frozen fixture {FIXTURE}")
    with tarfile.open(FIXTURE) as tf:
        tf.extractall(tmp_path, filter="data")
    return tmp_path / "repo", json.loads((tmp_path / "expect.json").read_text())


def test_format_1_repository_reads_back_byte_identical(frozen: tuple[Path, dict]) -> None:
    path, expect = frozen
    with Repository.open(path) as r:
        assert r.resolve("HEAD").hex() == expect["head"]
        assert r.resolve("main~1").hex() in expect["commits"]
        for rev, files in expect["commits"].items():
            got = {}
            for p in r.commit_files(bytes.fromhex(rev)):
                out = io.BytesIO()
                r.cat(rev, p, out)
                got[p] = blake3(out.getvalue()).hexdigest()
            assert got == files
        assert r.file_manifest("HEAD", "data/train.csv").segments  # a segmented manifest
        assert [c.message for _, c in r.log()] == [
            "format 1: second commit", "format 1: first commit"]


def test_format_1_repository_verifies_and_accepts_new_commits(
    frozen: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = frozen
    with Repository.open(path) as r:
        rep = verify(r, read_data=True)
        assert rep.ok, rep.problems
        assert r.status().clean
        (path / "new.txt").write_text("written by a later version\n")
        r.add([str(path / "new.txt")])
        r.commit("later")
        r.checkout("HEAD~2", to=str(tmp_path / "old"))
        assert (tmp_path / "old" / "run.sh").stat().st_mode & 0o777 == 0o755
        assert verify(r, read_data=True).ok
