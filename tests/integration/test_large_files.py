"""Files with more chunks than one segment: manifests stay small, reads cross segments."""

from __future__ import annotations

import io
from pathlib import Path

from blake3 import blake3

from modelstore import Repository
from modelstore.chunker import ChunkerParams
from modelstore.objects import SEGMENT_CHUNKS
from modelstore.verify import verify
from tests.conftest import make_data

TINY = ChunkerParams(min_size=64, avg_size=256, max_size=1024)


def test_segmented_file_round_trips_and_seeks(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "w", chunker=TINY, pack_size=256 << 10)
    data = make_data(3 * SEGMENT_CHUNKS * 300, seed=21)  # ~3.5 segments of 256 B chunks
    (repo.workdir / "big.bin").write_bytes(data)
    repo.add([str(repo.workdir / "big.bin")])
    repo.commit("big")
    m = repo.file_manifest("HEAD", "big.bin")
    assert len(m.segments) >= 3 and m.chunk_ids == b""
    assert len(m.encode()) < 400  # the manifest no longer grows with the file
    assert m.content_hash == blake3(data).digest()
    assert sum(n for _, n in repo.manifest_chunks(m)) == len(data)
    out = io.BytesIO()
    repo.cat("HEAD", "big.bin", out)
    assert out.getvalue() == data
    with repo.open_file("big.bin") as f:
        for pos in (0, m.segments[0].size - 5, m.segments[0].size, len(data) - 3, 12345):
            f.seek(pos)
            assert f.read(700) == data[pos : pos + 700]
    repo.checkout("HEAD", to=str(tmp_path / "o"))
    assert (tmp_path / "o" / "big.bin").read_bytes() == data
    assert verify(repo, read_data=True).ok
    repo.close()


def test_segmented_second_version_shares_segments(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "w", chunker=TINY, pack_size=256 << 10)
    data = make_data(2 * SEGMENT_CHUNKS * 300, seed=22)
    (repo.workdir / "big.bin").write_bytes(data)
    repo.add([str(repo.workdir / "big.bin")])
    repo.commit("v1")
    changed = data[:-1000] + b"x" * 1000  # only the tail changes
    (repo.workdir / "big.bin").write_bytes(changed)
    repo.add([str(repo.workdir / "big.bin")])
    repo.commit("v2")
    m1 = repo.file_manifest("HEAD~1", "big.bin")
    m2 = repo.file_manifest("HEAD", "big.bin")
    assert m1.segments[0] == m2.segments[0]  # unchanged segments are the same object
    assert m1.segments[-1] != m2.segments[-1]
    assert verify(repo).ok
    repo.close()


def test_segment_missing_is_reported_by_verify(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "w", chunker=TINY, pack_size=256 << 10)
    (repo.workdir / "big.bin").write_bytes(make_data(SEGMENT_CHUNKS * 400, seed=23))
    repo.add([str(repo.workdir / "big.bin")])
    repo.commit("v1")
    seg = repo.file_manifest("HEAD", "big.bin").segments[0]
    repo.db.write(lambda txn: txn.delete("objects", seg.id))
    rep = verify(repo)
    assert not rep.ok
    assert any("big.bin" in p.where for p in rep.problems)
    repo.close()
