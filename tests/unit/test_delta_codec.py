"""Codec 3 (XOR delta): exact round trips, strict heads, bounded chains (FORMAT §8.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from blake3 import blake3

from modelstore.chunker import ChunkerParams
from modelstore.chunkstore import ChunkStore
from modelstore.compress import (
    CODEC_DELTA,
    CODEC_RAW,
    DELTA_HEAD,
    MAX_DELTA_DEPTH,
    PlaneHint,
    apply_delta,
    encode_delta,
    parse_delta,
)
from modelstore.errors import CorruptObjectError
from modelstore.ids import ChunkId
from modelstore.metadb import open_metadb, release_metadb
from modelstore.pack import PackWriter


def _pair(n: int, seed: int = 0) -> tuple[bytes, bytes]:
    """bf16-like base bytes and a version of them with every element nudged."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 1 << 16, n // 2 + 1, dtype=np.uint16)
    new = base ^ rng.integers(0, 4, base.size, dtype=np.uint16)
    return base.tobytes()[:n], new.tobytes()[:n]


@pytest.mark.parametrize("n", [1, 7, 63, 64, 65, 4095, 16384, 65537])
@pytest.mark.parametrize("hint", [None, PlaneHint(2, 0), PlaneHint(2, 1)])
def test_delta_round_trips_every_length(n: int, hint: PlaneHint | None) -> None:
    base, new = _pair(n, n)
    bid = blake3(base).digest()
    payload = encode_delta(new, base, bid, 3, hint)
    head = parse_delta(payload)
    assert (head.base_id, head.depth) == (bid, 3)
    assert apply_delta(head, base, n) == new
    if n >= 16384:  # small XOR residuals code far below the chunk
        assert len(payload) < 0.6 * n


def test_an_identical_chunk_codes_to_almost_nothing() -> None:
    base, _ = _pair(1 << 16)
    payload = encode_delta(base, base, bytes(32), 1)
    assert len(payload) < 200 and apply_delta(parse_delta(payload), base, len(base)) == base


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"", "shorter than its header"),
        (bytes(33), "shorter than its header"),
        (DELTA_HEAD.pack(bytes(32), 0, CODEC_RAW), "depth 0"),
        (DELTA_HEAD.pack(bytes(32), MAX_DELTA_DEPTH + 1, CODEC_RAW), "depth"),
        (DELTA_HEAD.pack(bytes(32), 1, CODEC_DELTA), "inner codec 3"),
        (DELTA_HEAD.pack(bytes(32), 1, 9), "inner codec 9"),
    ],
)
def test_malformed_heads_are_refused(payload: bytes, why: str) -> None:
    with pytest.raises(CorruptObjectError, match=why):
        parse_delta(payload)


def test_a_base_of_another_length_is_refused() -> None:
    base, new = _pair(1000)
    head = parse_delta(encode_delta(new, base, bytes(32), 1))
    with pytest.raises(CorruptObjectError, match="999 bytes, expected 1000"):
        apply_delta(head, base[:999], 1000)
    with pytest.raises(ValueError):
        encode_delta(new, base[:999], bytes(32), 1)


def test_a_residual_that_does_not_decode_to_the_length_is_refused() -> None:
    base, _ = _pair(100)
    raw_residual = DELTA_HEAD.pack(bytes(32), 1, CODEC_RAW) + bytes(99)
    with pytest.raises(CorruptObjectError, match="99 bytes, expected 100"):
        apply_delta(parse_delta(raw_residual), base, 100)


def _store_with(tmp_path: Path, chunks: list[tuple[bytes, int, bytes, int]]) -> ChunkStore:
    """A chunk store whose one pack holds ``(id, codec, payload, raw length)`` as given."""
    for sub in ("packs", "tmp", "meta"):
        (tmp_path / sub).mkdir()
    db = open_metadb(tmp_path / "meta")
    store = ChunkStore(tmp_path, db, ChunkerParams(), 1 << 20, threads=1)
    w = PackWriter(tmp_path / "tmp", "t")
    for cid, codec, payload, n in chunks:
        w.add(ChunkId(cid), codec, payload, n)
    store._commit_pack(w)
    return store


def test_a_looping_chain_is_refused_not_followed_forever(tmp_path: Path) -> None:
    a, b = blake3(b"a").digest(), blake3(b"b").digest()
    n = 64
    # a is a delta against b, and b against a: hostile, or two stores' copies mixed
    loop = [
        (a, CODEC_DELTA, DELTA_HEAD.pack(b, 1, CODEC_RAW) + bytes(n), n),
        (b, CODEC_DELTA, DELTA_HEAD.pack(a, 1, CODEC_RAW) + bytes(n), n),
    ]
    store = _store_with(tmp_path, loop)
    try:
        with pytest.raises(CorruptObjectError, match="delta chain is longer than"):
            store.read_chunk(a)
    finally:
        store.close()
        release_metadb(store.db)


def test_a_delta_whose_result_does_not_match_its_id_is_refused(tmp_path: Path) -> None:
    base, new = _pair(4096)
    bid = blake3(base).digest()
    wrong_id = blake3(new + b"!").digest()
    store = _store_with(
        tmp_path,
        [
            (bid, CODEC_RAW, base, len(base)),
            (wrong_id, CODEC_DELTA, encode_delta(new, base, bid, 1), len(new)),
        ],
    )
    try:
        with pytest.raises(CorruptObjectError, match="does not match its hash"):
            store.read_chunk(wrong_id)
        with store.db.read() as txn:
            loc = store.locate(txn, wrong_id)
            assert loc is not None and store.delta_closure(txn, [wrong_id]) == {bid}
        assert store.delta_base(loc) == bid
    finally:
        store.close()
        release_metadb(store.db)


def test_a_damaged_base_is_named_when_its_delta_is_read(tmp_path: Path) -> None:
    base, new = _pair(4096)
    bid, nid = blake3(base).digest(), blake3(new).digest()
    flipped = bytes([base[0] ^ 1]) + base[1:]
    store = _store_with(
        tmp_path,
        [
            (bid, CODEC_RAW, flipped, len(base)),  # the base's bytes were damaged on disk
            (nid, CODEC_DELTA, encode_delta(new, base, bid, 1), len(new)),
        ],
    )
    try:
        with pytest.raises(CorruptObjectError, match=f"chunk {bid.hex()[:16]}.*does not match"):
            store.read_chunk(nid)
    finally:
        store.close()
        release_metadb(store.db)


def test_float_tensors_are_split_by_their_dtype(tmp_path: Path) -> None:
    import io
    import json
    import struct

    from modelstore.chunkstore import _float_hint, float_regions

    header = {
        "a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
        "ids": {"dtype": "I32", "shape": [2], "data_offsets": [6, 14]},
        "w": {"dtype": "F32", "shape": [4], "data_offsets": [14, 30]},
    }
    h = json.dumps(header).encode()
    blob = struct.pack("<Q", len(h)) + h + bytes(30)
    f = io.BytesIO(blob)
    f.seek(5)
    start = 8 + len(h)
    regions = float_regions(f)
    assert regions == [(start, start + 6, 2), (start + 14, start + 30, 4)]
    assert f.tell() == 5  # the position is restored
    assert _float_hint(regions, start + 15, 8) == PlaneHint(4, 3)  # elements start 3 bytes in
    assert _float_hint(regions, start + 6, 8) is None  # the int tensor
    assert _float_hint(regions, start + 2, 8) is None  # runs past the bf16 tensor
    assert float_regions(io.BytesIO(b"not a safetensors file")) == []
