"""``verify`` accepts a healthy repository and names what is damaged in a broken one."""

from __future__ import annotations

from pathlib import Path

from modelstore import Repository
from modelstore.metadb import Txn
from modelstore.verify import verify
from tests.conftest import make_data


def _repo_with_history(repo: Repository) -> None:
    w = repo.workdir
    for i in range(3):
        (w / "m.bin").write_bytes(make_data(40_000, i))
        (w / "d").mkdir(exist_ok=True)
        (w / "d" / f"f{i}.txt").write_text(f"file {i}\n")
        repo.add([str(w)])
        repo.commit(f"c{i}")


def test_verify_accepts_a_healthy_repository(repo: Repository) -> None:
    _repo_with_history(repo)
    rep = verify(repo, read_data=True)
    assert rep.ok, rep.problems
    assert rep.commits == 3 and rep.files >= 4 and rep.chunks_read > 0 and rep.packs > 1


def test_verify_read_data_finds_a_flipped_byte(repo: Repository) -> None:
    _repo_with_history(repo)
    pack = sorted((repo.ms_dir / "packs").rglob("*.pack"))[0]
    b = bytearray(pack.read_bytes())
    b[40] ^= 0x01  # inside the first chunk's payload
    pack.write_bytes(bytes(b))
    repo.store.close()
    assert verify(repo).problems == []  # structure alone cannot see a payload flip
    rep = verify(repo, read_data=True)
    assert not rep.ok
    assert any(p.kind == "chunk" for p in rep.problems)


def test_verify_reports_a_missing_pack_with_the_file_it_breaks(repo: Repository) -> None:
    _repo_with_history(repo)
    for p in (repo.ms_dir / "packs").rglob("*.pack"):
        p.unlink()
    rep = verify(repo)
    assert not rep.ok
    # one problem per missing pack (not one per chunk, nor again from the pack table)
    assert {p.kind for p in rep.problems} == {"missing-pack"}
    assert len(rep.problems) == len({p.detail for p in rep.problems}) == rep.packs
    assert any("m.bin" in p.where for p in rep.problems)
    assert all(".pack)" in p.detail for p in rep.problems)  # names the file
    hit = {a.path for p in rep.problems for a in p.affects}
    assert hit == {"m.bin", "d/f0.txt", "d/f1.txt", "d/f2.txt"}


def test_verify_reports_a_missing_object(repo: Repository) -> None:
    _repo_with_history(repo)
    first = repo.resolve("HEAD~2")

    def drop(txn: Txn) -> None:
        txn.delete("objects", repo.get_commit(first, txn).tree_id)

    repo.db.write(drop)
    rep = verify(repo)
    assert [p.kind for p in rep.problems] == ["missing-object"]
    assert first.hex()[:12] in rep.problems[0].where


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = Repository.init(tmp_path / "w", pack_size=4096)
    _repo_with_history(r)
    r.close()
    cmd = [sys.executable, "-m", "modelstore.cli.main", "-C", str(tmp_path / "w"), "verify"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    for p in (tmp_path / "w" / ".ms" / "packs").rglob("*.pack"):
        p.unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 13
    assert "missing" in proc.stderr
