"""Corruption: a flipped byte anywhere in a pack is never returned as data.

For every region of a pack (header magic, version and reserved bytes, each chunk's codec tag and
payload, raw and zstd chunks, the trailer index entries, the footer's offsets, count, index
hash, reserved bytes and end magic) one byte is flipped and:

- reading every file gives either exactly its bytes, or a ``FormatError`` (``CorruptObjectError``)
  that names the file and the commit; the bytes written before the error are a prefix of the
  true content;
- ``verify(read_data=True)`` reports it (reserved bytes included: writers always zero them).

A sample of offsets runs by default, offsets chosen by hypothesis too; every byte of every pack
is ``@slow``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelstore import Repository
from modelstore.errors import CorruptObjectError, FormatError
from modelstore.pack import FOOTER, HEADER, INDEX_ENTRY, read_pack_trailer
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data

pytestmark = pytest.mark.faults


@dataclass
class Corpus:
    repo: Repository
    commit: str
    files: dict[str, bytes]
    packs: list[Path]


def _corpus(path: Path, files: dict[str, bytes], pack_size: int) -> Corpus:
    r = Repository.init(path, chunker=SMALL_CHUNKS, pack_size=pack_size)
    for name, data in files.items():
        (r.workdir / name).parent.mkdir(exist_ok=True)
        (r.workdir / name).write_bytes(data)
    r.add([str(r.workdir)])
    c = r.commit("v1")
    packs = sorted((r.ms_dir / "packs").rglob("*.pack"))
    codecs = set()
    for p in packs:
        fd = os.open(p, os.O_RDONLY)
        codecs |= {e.codec for e in read_pack_trailer(fd, os.fstat(fd).st_size)[1]}
        os.close(fd)
    assert codecs == {0, 1}
    assert verify(r, read_data=True).ok
    return Corpus(r, c.hex(), files, packs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    cp = _corpus(tmp_path_factory.mktemp("corrupt") / "w", {
        "model.bin": make_data(24_000, 1),  # random: chunks stored raw
        "zeros.bin": bytes(9_000) + make_data(3_000, 2),  # compressible: zstd chunks
        "cfg/params.txt": b"lr=3e-4\n" * 40,
    }, 12 << 10)
    assert len(cp.packs) >= 3
    yield cp
    cp.repo.close()


def _check_flip(cp: Corpus, pack: Path, offset: int, mask: int = 0x01) -> None:
    """Flip ``offset`` of ``pack``, check every read and verify, then restore the byte."""
    fd = os.open(pack, os.O_RDWR)
    try:
        orig = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([orig[0] ^ mask]), offset)
        try:
            for name, data in cp.files.items():
                out = io.BytesIO()
                try:
                    cp.repo.cat("HEAD", name, out)
                except FormatError as exc:  # CorruptObjectError is one
                    assert f"{name} in commit {cp.commit[:12]}" in exc.message, exc.message
                    assert data.startswith(out.getvalue())  # a verified prefix, nothing wrong
                else:
                    assert out.getvalue() == data, f"wrong bytes for {name} at {pack}:{offset}"
            rep = verify(cp.repo, read_data=True)
            assert not rep.ok, f"flip at {pack.name[:12]}:{offset} not found by verify"
        finally:
            os.pwrite(fd, orig, offset)
    finally:
        os.close(fd)


def _regions(pack: Path) -> dict[str, list[int]]:
    """Offsets to flip in each region of a pack."""
    fd = os.open(pack, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        _, entries = read_pack_trailer(fd, size)
    finally:
        os.close(fd)
    index_offset = size - FOOTER.size - INDEX_ENTRY.size * len(entries)
    payload = []
    for e in entries:
        end = e.offset + e.stored_len - 1
        payload += [e.offset + 1, (e.offset + end) // 2, end]
    return {
        "header": list(range(HEADER.size)),  # magic, version, reserved
        "tag": [e.offset for e in entries],
        "payload": payload,
        "first index entry": list(range(index_offset, index_offset + INDEX_ENTRY.size)),
        "other index entries": [index_offset + INDEX_ENTRY.size * i + j
                                for i in range(1, len(entries)) for j in (0, 31, 32, 40, 44, 48)],
        "footer": list(range(size - FOOTER.size, size)),  # offsets, hash, reserved, magic
    }


def test_a_flip_in_any_region_of_any_pack_is_caught(corpus: Corpus) -> None:
    for pack in corpus.packs:
        for _region, offsets in _regions(pack).items():
            for off in offsets:
                _check_flip(corpus, pack, off)
    assert verify(corpus.repo, read_data=True).ok  # every byte was put back


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_a_flip_at_any_offset_is_caught(corpus: Corpus, data: st.DataObject) -> None:
    pack = data.draw(st.sampled_from(corpus.packs))
    offset = data.draw(st.integers(min_value=0, max_value=pack.stat().st_size - 1))
    _check_flip(corpus, pack, offset, data.draw(st.integers(min_value=1, max_value=255)))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_flip_of_every_byte_of_a_pack_is_caught(tmp_path: Path) -> None:
    cp = _corpus(tmp_path / "w", {"model.bin": make_data(3_000, 1),
                                  "zeros.bin": bytes(3_000) + make_data(500, 2)}, 1 << 20)
    (pack,) = cp.packs
    for off in range(pack.stat().st_size):
        _check_flip(cp, pack, off)
    cp.repo.close()


def test_a_flipped_object_in_the_metadata_is_caught(corpus: Corpus) -> None:
    r = corpus.repo
    entry = r.lookup(bytes.fromhex(corpus.commit), "model.bin")
    assert entry is not None
    with r.db.read() as txn:
        orig = txn.get("objects", entry.id)
    assert orig is not None
    for i in (0, 1, len(orig) // 2, len(orig) - 1):
        bad = bytearray(orig)
        bad[i] ^= 0x40
        r.db.write(lambda txn, b=bytes(bad): txn.put("objects", entry.id, b))
        try:
            with pytest.raises(FormatError):
                r.cat("HEAD", "model.bin", io.BytesIO())
            assert any("model.bin" in p.where for p in verify(r).problems)
        finally:
            r.db.write(lambda txn: txn.put("objects", entry.id, orig))
    assert verify(r, read_data=True).ok


def test_cli_cat_and_verify_name_the_damage(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=1 << 20)
    (r.workdir / "m.bin").write_bytes(make_data(30_000, 3))
    r.add([str(r.workdir / "m.bin")])
    c = r.commit("v1").hex()
    r.close()
    (pack,) = (tmp_path / "w" / ".ms" / "packs").rglob("*.pack")
    raw = bytearray(pack.read_bytes())
    raw[HEADER.size + 100] ^= 0x10  # inside the first chunk's payload
    pack.write_bytes(bytes(raw))

    def ms(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelstore.cli.main", "-C",
                               str(tmp_path / "w"), *args], capture_output=True, text=True)

    for args in (["cat", "HEAD:m.bin"], ["checkout", "--to", str(tmp_path / "out"), "HEAD"]):
        proc = ms(*args)
        assert proc.returncode == CorruptObjectError.exit_code, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert f"m.bin in commit {c[:12]}" in lines[0] and "does not match its hash" in lines[0]
        assert proc.stdout == "" or make_data(30_000, 3).startswith(proc.stdout.encode("latin1"))
    assert not (tmp_path / "out" / "m.bin").exists()  # never a wrong file in place
    assert ms("verify").returncode == 0  # structure is intact: only the data is damaged
    proc = ms("verify", "--read-data", "-q")
    assert proc.returncode == 13 and "does not match its hash" in proc.stdout + proc.stderr
