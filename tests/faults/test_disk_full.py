"""A full disk (a real, tiny tmpfs) gives one clear error and loses nothing committed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelstore import Repository
from modelstore.errors import RepositoryFullError
from modelstore.verify import verify
from tests.conftest import make_data

pytestmark = pytest.mark.faults


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_add_on_a_full_disk_fails_cleanly_and_keeps_history(small_fs: Path) -> None:
    r = Repository.init(small_fs / "w", pack_size=256 << 10)
    first = make_data(300_000, 1)
    (r.workdir / "a.bin").write_bytes(first)
    r.add([str(r.workdir / "a.bin")])
    r.commit("fits")
    (r.workdir / "big.bin").write_bytes(make_data(900_000, 2))
    with pytest.raises(RepositoryFullError, match="no space left"):
        r.add([str(r.workdir / "big.bin")])
    # what was committed reads back, and the repository verifies
    out = io.BytesIO()
    r.cat("HEAD", "a.bin", out)
    assert out.getvalue() == first
    assert verify(r, read_data=True).ok
    assert [c.message for _, c in r.log()] == ["fits"]
    # free space and the same add simply works
    (r.workdir / "big.bin").unlink()
    (r.workdir / "big.bin").write_bytes(make_data(200_000, 2))
    r.add([str(r.workdir / "big.bin")])
    r.commit("after freeing space")
    assert verify(r, read_data=True).ok
    r.close()


def test_cli_full_disk_is_one_line_exit_16(small_fs: Path) -> None:
    r = Repository.init(small_fs / "w", pack_size=256 << 10)
    r.close()
    (small_fs / "w" / "big.bin").write_bytes(make_data(1_200_000, 3))
    proc = subprocess.run([sys.executable, "-m", "modelstore.cli.main", "-C", str(small_fs / "w"),
                           "add", "big.bin"], capture_output=True, text=True)
    assert proc.returncode == RepositoryFullError.exit_code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in proc.stderr
    assert not os.listdir(small_fs / "w" / ".ms" / "tmp")  # the half-written pack is gone
