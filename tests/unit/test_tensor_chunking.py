"""Tensor-aware chunking (FORMAT.md §5.5): forced cuts at tensor starts, CDC in between."""

from __future__ import annotations

import io
import itertools
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelstore.chunker import FEATURE_TENSOR_CHUNKING, Chunker, ChunkerParams, cut_points
from modelstore.chunkstore import _cut_block, forced_cuts
from modelstore.config import KNOWN_COMPAT
from modelstore.repository import Repository
from tests.conftest import make_data

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


def safetensors_bytes(tensors: list[tuple[str, bytes]], pad: int = 0) -> bytes:
    """A minimal U8 safetensors file with the tensors in this order."""
    doc: dict[str, object] = {}
    off = 0
    for name, raw in tensors:
        doc[name] = {"dtype": "U8", "shape": [len(raw)], "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    head = json.dumps(doc).encode() + b" " * pad
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(raw for _, raw in tensors)


def expected_ends(data: bytes, cuts: list[int], params: ChunkerParams) -> list[int]:
    """Reference: plain CDC of each region between forced cuts, run separately."""
    out: list[int] = []
    bounds = [0, *(c for c in cuts if 0 < c < len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            out.extend(a + e for e in cut_points(data[a:b], params))
    return out


def chunk_blocks(
    data: bytes, cuts: list[int], blocks: list[int], params: ChunkerParams
) -> list[int]:
    """Absolute chunk ends from ``_cut_block`` fed in blocks of the given sizes."""
    chunker = Chunker(params)
    ends: list[int] = []
    pos = ci = 0
    sizes = [b for b in blocks if b > 0] or [len(data) or 1]
    k = 0
    while True:
        n = min(sizes[k % len(sizes)], len(data) - pos)
        k += 1
        eof = pos + n >= len(data)
        cut, ci = _cut_block(chunker, memoryview(data)[pos : pos + n], pos, cuts, ci, eof)
        ends.extend(pos + c for c in cut)
        pos += n
        if eof:
            return ends


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 40_000),
    seed=st.integers(0, 1000),
    cut_fracs=st.lists(st.floats(0, 1), max_size=40),
    blocks=st.lists(st.integers(1, 9000), min_size=1, max_size=5),
)
def test_cut_block_matches_regionwise_cdc(
    size: int, seed: int, cut_fracs: list[float], blocks: list[int]
) -> None:
    data = make_data(size, seed)
    cuts = sorted({int(f * size) for f in cut_fracs} - {0})
    cuts = [c for c in cuts if c < size]
    ends = chunk_blocks(data, cuts, blocks, SMALL)
    assert ends == expected_ends(data, cuts, SMALL)
    assert all(b > a for a, b in itertools.pairwise([0, *ends]))  # no empty chunks
    assert set(cuts) <= set(ends)
    assert not data or ends[-1] == size


def test_forced_cuts_of_safetensors() -> None:
    tensors = [("a", make_data(5000, 1)), ("b", b""), ("c", make_data(300, 2))]
    raw = safetensors_bytes(tensors)
    (n,) = struct.unpack_from("<Q", raw)
    f = io.BytesIO(raw)
    f.seek(17)
    assert forced_cuts(f) == [8 + n, 8 + n + 5000]  # "b" is empty: it starts where "c" does
    assert f.tell() == 17  # position restored


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not a safetensors file at all" * 100,
        struct.pack("<Q", 1 << 60) + b"{" + b"x" * 100,  # absurd header length
        struct.pack("<Q", 40) + b'{"a":{"dtype":"U8","shape":[999999],"data_offsets":[0,999999]}}',
        struct.pack("<Q", 12) + b'{"a": nope }' + b"\0" * 50,  # header is not JSON
        b"GGUF" + b"\0" * 200,  # GGUF version 0
        b"GGUF" + struct.pack("<IQQ", 3, 1 << 62, 0) + b"\0" * 100,  # absurd tensor count
        b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 62) + b"\0" * 100,  # absurd key length
    ],
)
def test_unrecognized_falls_back(raw: bytes) -> None:
    assert forced_cuts(io.BytesIO(raw)) == []


def test_unseekable_falls_back() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

    assert forced_cuts(Pipe()) == []
    assert forced_cuts(object()) == []


def test_feature_known_and_enabled_at_init(tmp_path: Path) -> None:
    assert FEATURE_TENSOR_CHUNKING in KNOWN_COMPAT
    with Repository.init(tmp_path / "a") as r:
        assert FEATURE_TENSOR_CHUNKING in r.config.compat
        assert r.store.tensor_aware
    with Repository.init(tmp_path / "b", tensor_aware=False) as r:
        assert FEATURE_TENSOR_CHUNKING not in r.config.compat
        assert not r.store.tensor_aware
    with Repository.open(tmp_path / "a") as r:
        assert r.store.tensor_aware


def _scan_lengths(r: Repository, raw: bytes) -> list[int]:
    lengths: list[int] = []
    r.store.scan(io.BytesIO(raw), lambda _cid, n: lengths.append(n))
    return lengths


def test_ingest_and_scan_cut_at_tensors(tmp_path: Path) -> None:
    tensors = [(f"t{i}", make_data(3000 + 977 * i, i)) for i in range(12)]
    raw = safetensors_bytes(tensors)
    with Repository.init(tmp_path / "w", chunker=SMALL) as r:
        lengths = _scan_lengths(r, raw)
        ends = [sum(lengths[: i + 1]) for i in range(len(lengths))]
        assert set(forced_cuts(io.BytesIO(raw))) <= set(ends)
        assert ends == expected_ends(raw, forced_cuts(io.BytesIO(raw)), SMALL)
        # ingest builds the same manifest as scan (diff compares them)
        sink = r.store.sink()
        try:
            stored = r.store.ingest(io.BytesIO(raw), sink)
        finally:
            sink.abort()
        assert stored.id == r.store.scan(io.BytesIO(raw)).id
    with Repository.init(tmp_path / "p", chunker=SMALL, tensor_aware=False) as r:
        plain = [0, *cut_points(raw, SMALL)]
        assert _scan_lengths(r, raw) == [b - a for a, b in itertools.pairwise(plain)]


def test_non_safetensors_identical_to_plain_cdc(tmp_path: Path) -> None:
    raw = make_data(50_000, 7)
    with Repository.init(tmp_path / "w", chunker=SMALL) as r:
        ends = cut_points(raw, SMALL)
        assert _scan_lengths(r, raw) == [b - a for a, b in itertools.pairwise([0, *ends])]


def test_reordered_tensors_dedup(tmp_path: Path) -> None:
    tensors = [(f"t{i}", make_data(20_000 + 333 * i, 100 + i)) for i in range(10)]
    a = safetensors_bytes(tensors)
    b = safetensors_bytes(tensors[::-1])
    with Repository.init(tmp_path / "w", chunker=SMALL) as r:
        ca: set[bytes] = set()
        r.store.scan(io.BytesIO(a), lambda cid, _n: ca.add(bytes(cid)))
        new = 0

        def note(cid: bytes, n: int) -> None:
            nonlocal new
            if bytes(cid) not in ca:
                new += n

        r.store.scan(io.BytesIO(b), note)
        assert new <= len(b) - sum(len(t) for _, t in tensors) + 4096  # only the header


def test_ingest_across_many_blocks_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small blocks: the chunk held over between blocks (``tail``) meets forced cuts often."""
    import modelstore.chunkstore as cs

    monkeypatch.setattr(cs, "BLOCK", 3000)
    tensors = [(f"t{i}", make_data(500 + 1777 * (i % 7), 50 + i)) for i in range(40)]
    raw = safetensors_bytes(tensors)
    with Repository.init(tmp_path / "w", chunker=SMALL) as r:
        (tmp_path / "w" / "m.safetensors").write_bytes(raw)
        r.add([tmp_path / "w" / "m.safetensors"])
        r.commit("m")
        out = io.BytesIO()
        r.cat("HEAD", "m.safetensors", out)
        assert out.getvalue() == raw
        sink = r.store.sink()
        try:
            with open(tmp_path / "w" / "m.safetensors", "rb", buffering=0) as f:
                stored = r.store.ingest(f, sink)
        finally:
            sink.abort()
        lengths = _scan_lengths(r, raw)
        assert stored.id == r.store.scan(io.BytesIO(raw)).id
        ends = list(itertools.accumulate(lengths))
        assert ends == expected_ends(raw, forced_cuts(io.BytesIO(raw)), SMALL)


def _gstr(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(
    tensors: list[tuple[str, bytes]], align: int | None = None, shift: int = 0
) -> tuple[bytes, int, list[int]]:
    """A minimal GGUF v3 file of I8 tensors (ggml type 24) with some metadata."""
    kv = [_gstr(b"general.name") + struct.pack("<I", 8) + _gstr(b"test")]
    vocab = b"".join(_gstr(t) for t in (b"a", b"bc", b""))
    kv.append(_gstr(b"tok.tokens") + struct.pack("<IIQ", 9, 8, 3) + vocab)  # like a tokenizer
    kv.append(_gstr(b"arr.f32") + struct.pack("<IIQ", 9, 6, 4) + b"\0" * 16)
    if align is not None:
        kv.append(_gstr(b"general.alignment") + struct.pack("<II", 4, align))
    a = align or 32
    infos, data, offsets = [], b"", []
    for name, raw in tensors:
        data += b"\0" * (-len(data) % a)
        offsets.append(len(data))
        info = struct.pack("<IQIQ", 1, len(raw), 24, len(data) + shift)  # 1 dim, I8, offset
        infos.append(_gstr(name.encode()) + info)
        data += raw
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + b"".join(infos)
    head += b"\0" * (-len(head) % a)
    return head + data, len(head), offsets


@pytest.mark.parametrize("align", [None, 64])
def test_forced_cuts_of_gguf(align: int | None) -> None:
    tensors = [(f"t{i}", make_data(1000 + 37 * i, i)) for i in range(5)]
    raw, start, offsets = gguf_bytes(tensors, align)
    assert forced_cuts(io.BytesIO(raw)) == sorted({start + o for o in offsets})
    bad, _, _ = gguf_bytes(tensors, align, shift=1 << 40)  # offsets past the end of the file
    assert forced_cuts(io.BytesIO(bad)) == []
    assert forced_cuts(io.BytesIO(raw[: start - 3])) == []  # ends inside the tensor infos
