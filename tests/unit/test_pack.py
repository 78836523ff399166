"""pack: the pack file format, written with PackWriter and read back with read_pack_index."""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import pytest
from blake3 import blake3

from modelstore.compress import compress_chunk, decompress_chunk
from modelstore.errors import CorruptObjectError, FormatError, UnsupportedFormatError
from modelstore.ids import chunk_id
from modelstore.pack import (
    FOOTER,
    HEADER,
    INDEX_ENTRY,
    PACK_MAGIC,
    PACK_VERSION,
    PackEntry,
    PackWriter,
    pack_id_of,
    read_pack_index,
    read_pack_trailer,
)

from ..conftest import make_data

CHUNKS = [make_data(3000, seed=1), bytes(5000), b"x", b"hello " * 100, make_data(10, seed=2)]


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    tmp, packs = tmp_path / "tmp", tmp_path / "packs"
    tmp.mkdir(parents=True)
    packs.mkdir()
    return tmp, packs


def _write(tmp_path: Path, chunks: list[bytes] = CHUNKS) -> tuple[str, Path, list[PackEntry]]:
    tmp, packs = _dirs(tmp_path)
    w = PackWriter(tmp, "p1")
    entries = []
    for raw in chunks:
        codec, payload = compress_chunk(raw)
        entries.append(w.add(chunk_id(raw), codec, payload, len(raw)))
    pack_hex, path = w.finish(packs)
    assert not w.tmp_path.exists()
    return pack_hex, path, entries


def _index(path: Path) -> list[PackEntry]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(read_pack_index(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def test_pack_struct_sizes():
    assert (HEADER.size, INDEX_ENTRY.size, FOOTER.size) == (16, 49, 64)
    assert PACK_MAGIC == b"MSPACK" and PACK_VERSION == 1


def test_pack_write_and_read_back(tmp_path):
    pack_hex, path, written = _write(tmp_path)
    assert path == tmp_path / "packs" / pack_hex[:2] / f"{pack_hex}.pack"
    assert _index(path) == written
    with open(path, "rb") as f:
        fd = f.fileno()
        for raw, e in zip(CHUNKS, written, strict=True):
            assert e.chunk_id == chunk_id(raw) and e.raw_len == len(raw)
            stored = os.pread(fd, e.stored_len, e.offset)
            assert stored[0] == e.codec
            assert decompress_chunk(stored[0], stored[1:], e.raw_len) == raw


def test_pack_layout(tmp_path):
    _, path, written = _write(tmp_path)
    data = path.read_bytes()
    assert data[:16].hex() == "4d535041434b01000000000000000000"  # FORMAT.md Appendix A
    assert data[-8:].hex() == "4d53504b454e4431"
    assert written[0].offset == HEADER.size
    for a, b in itertools.pairwise(written):
        assert b.offset == a.offset + a.stored_len  # back to back
    index_offset = written[-1].offset + written[-1].stored_len
    index = data[index_offset:-FOOTER.size]
    assert len(index) == INDEX_ENTRY.size * len(written)
    off, count, r1, ihash, r2, end = FOOTER.unpack(data[-FOOTER.size :])
    assert (off, count, r1, r2, end) == (index_offset, len(written), 0, bytes(8), b"MSPKEND1")
    assert ihash == blake3(index).digest()
    assert len(data) == HEADER.size + sum(e.stored_len for e in written) + len(index) + 64


def test_pack_id_is_derive_key_hash_of_its_trailer_index(tmp_path):
    pack_hex, path, _ = _write(tmp_path)
    data = path.read_bytes()
    index_offset, count = struct.unpack_from("<QI", data, len(data) - FOOTER.size)
    index = data[index_offset : index_offset + count * INDEX_ENTRY.size]
    expect = blake3(index, derive_key_context="modelstore 2026-11 pack v1")
    assert pack_hex == expect.hexdigest()
    fd = os.open(path, os.O_RDONLY)
    try:
        raw, entries = read_pack_trailer(fd, len(data))
    finally:
        os.close(fd)
    assert raw == index and len(entries) == count
    assert pack_id_of(raw).hex() == pack_hex


def test_pack_empty(tmp_path):
    _, path, written = _write(tmp_path, [])
    assert written == []
    assert path.stat().st_size == HEADER.size + FOOTER.size
    assert _index(path) == []


def test_pack_memoryview_payload(tmp_path):
    tmp, packs = _dirs(tmp_path)
    w = PackWriter(tmp, "mv")
    raw = make_data(2000, seed=5)
    w.add(chunk_id(raw), 0, memoryview(raw)[:], len(raw))
    _, path = w.finish(packs)
    (e,) = _index(path)
    assert path.read_bytes()[e.offset + 1 : e.offset + e.stored_len] == raw


def test_pack_abort_removes_temp_file(tmp_path):
    tmp, _ = _dirs(tmp_path)
    w = PackWriter(tmp, "ab")
    w.add(chunk_id(b"abc"), 0, b"abc", 3)
    assert w.tmp_path.exists()
    w.abort()
    assert not w.tmp_path.exists()
    assert list(tmp.iterdir()) == []
    w.abort()  # idempotent


def test_pack_writer_refuses_existing_temp_name(tmp_path):
    tmp, _ = _dirs(tmp_path)
    w = PackWriter(tmp, "same")
    with pytest.raises(FileExistsError):
        PackWriter(tmp, "same")
    w.abort()


def _damaged(tmp_path: Path, mutate) -> Path:
    _, path, _ = _write(tmp_path)
    data = bytearray(path.read_bytes())
    out = tmp_path / "damaged.pack"  # beside the good pack, which stays intact
    out.write_bytes(bytes(mutate(data)))
    return out


def _flip(at: int):
    def f(d: bytearray) -> bytearray:
        d[at] ^= 0x01
        return d

    return f


def test_pack_flipped_index_byte_is_corrupt(tmp_path):
    n = len(CHUNKS) * INDEX_ENTRY.size
    for at in (-FOOTER.size - n, -FOOTER.size - 1, -FOOTER.size - n // 2):
        path = _damaged(tmp_path / str(at), _flip(at))
        with pytest.raises(CorruptObjectError, match="index"):
            _index(path)


def test_pack_flipped_index_hash_is_corrupt(tmp_path):
    path = _damaged(tmp_path, _flip(-FOOTER.size + 16))
    with pytest.raises(CorruptObjectError):
        _index(path)


@pytest.mark.parametrize("cut", [1, 8, 63, 64, 65, 49 + 64, 500])
def test_pack_truncated_tail(tmp_path, cut):
    path = _damaged(tmp_path, lambda d: d[:-cut])
    with pytest.raises(FormatError):
        _index(path)


def test_pack_appended_garbage(tmp_path):
    path = _damaged(tmp_path, lambda d: d + b"\x00" * 10)
    with pytest.raises(FormatError):
        _index(path)


def test_pack_too_short(tmp_path):
    for n in (0, 1, 16, 79):
        p = tmp_path / f"short{n}.pack"
        p.write_bytes(b"MSPACK\x01" + bytes(max(0, n - 7)))
        with pytest.raises(FormatError, match="truncated"):
            _index(p)


def test_pack_bad_magic(tmp_path):
    path = _damaged(tmp_path, lambda d: b"XSPACK" + d[6:])
    with pytest.raises(FormatError, match="magic"):
        _index(path)


def test_pack_bad_end_magic(tmp_path):
    path = _damaged(tmp_path, _flip(-1))
    with pytest.raises(FormatError, match="end magic"):
        _index(path)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_pack_unknown_version(tmp_path, version):
    def set_version(d: bytearray) -> bytearray:
        d[6] = version
        return d

    path = _damaged(tmp_path, set_version)
    with pytest.raises(UnsupportedFormatError, match=f"version {version}"):
        _index(path)


def _forge(body: bytes, entries: list[tuple[bytes, int, int, int, int]], count: int | None = None,
           index_offset: int | None = None) -> bytes:
    """A pack with a valid index hash but arbitrary entry fields."""
    head = HEADER.pack(PACK_MAGIC, PACK_VERSION, bytes(9)) + body
    index = b"".join(INDEX_ENTRY.pack(*e) for e in entries)
    off = len(head) if index_offset is None else index_offset
    n = len(entries) if count is None else count
    footer = FOOTER.pack(off, n, 0, blake3(index).digest(), bytes(8), b"MSPKEND1")
    return head + index + footer


@pytest.mark.parametrize(
    "entry",
    [
        (bytes(32), 0, 2, 1, 0),  # inside the header
        (bytes(32), 15, 2, 1, 0),
        (bytes(32), 16, 0, 0, 0),  # empty: no tag byte
        (bytes(32), 16, 11, 10, 0),  # runs into the index
        (bytes(32), 2**64 - 1, 2, 1, 0),
    ],
)
def test_pack_index_entry_outside_pack(tmp_path, entry):
    p = tmp_path / "forged.pack"
    p.write_bytes(_forge(b"\x00" + bytes(9), [entry]))
    with pytest.raises(FormatError, match="outside"):
        _index(p)


def test_pack_forged_valid_entry_reads(tmp_path):
    p = tmp_path / "forged.pack"
    p.write_bytes(_forge(b"\x00abc", [(chunk_id(b"abc"), 16, 4, 3, 0)]))
    assert _index(p) == [PackEntry(chunk_id(b"abc"), 16, 4, 3, 0)]


@pytest.mark.parametrize(
    ("count", "index_offset"), [(2, None), (0, None), (1, 0), (2**32 - 1, None), (1, 2**64 - 1)]
)
def test_pack_footer_inconsistent(tmp_path, count, index_offset):
    p = tmp_path / "forged.pack"
    p.write_bytes(_forge(b"\x00abc", [(bytes(32), 16, 4, 3, 0)], count, index_offset))
    with pytest.raises(FormatError, match="inconsistent"):
        _index(p)


def test_pack_size_larger_than_file(tmp_path):
    # the caller's size is stale (the file shrank): a clean error, not a struct.error
    _, path, _ = _write(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(FormatError):
            list(read_pack_index(fd, os.fstat(fd).st_size + 100))
    finally:
        os.close(fd)


def test_pack_index_hash_is_plain_blake3_of_index(tmp_path):
    _, path, _ = _write(tmp_path)
    data = path.read_bytes()
    off, count = struct.unpack_from("<QI", data, len(data) - FOOTER.size)
    assert data[-FOOTER.size + 16 : -FOOTER.size + 48] == blake3(
        data[off : off + count * INDEX_ENTRY.size]
    ).digest()
