"""The native plane decoder (modelstore/_planes.c) gives exactly what the Python one gives.

It is the fast path of every read of a plane-coded chunk and of every delta chain; the
Python decoder in ``modelstore.compress`` is the reference. A damaged payload never crashes
it: it gives ``n`` bytes or refuses (ValueError), and it refuses bad lengths, headers and
framing exactly when the Python decoder does; every read then checks the chunk's id.
"""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest

from modelstore import _planes
from modelstore.compress import (
    CODEC_PLANES,
    CODEC_RAW,
    CODEC_ZSTD,
    PlaneHint,
    _decode_planes,
    apply_delta,
    compress_chunk,
    decompress_chunk,
    encode_delta,
    encode_planes,
    parse_delta,
)
from modelstore.errors import CorruptObjectError

pytestmark = pytest.mark.skipif(
    not _planes.have_zstd, reason="no libzstd.so.1: reads use the Python decoder"
)


def _decode(layers: list[tuple[int, bytes | memoryview]], n: int) -> bytes:
    (got,) = _planes.decode_many([(layers, n)])
    if isinstance(got, str):
        raise ValueError(got)
    return got


def test_the_native_decoder_is_there_where_libzstd_is() -> None:
    if ctypes.util.find_library("zstd"):
        assert _planes.have_zstd


def _floats(n: int, seed: int) -> bytes:
    w = np.random.default_rng(seed).normal(0, 0.02, n // 4 + 1).astype(np.float32)
    return w.tobytes()[:n]


@pytest.mark.parametrize("n", [2, 9, 63, 64, 1000, 4097, 65536, 65541])
@pytest.mark.parametrize("width", [2, 4, 8])
def test_planes_decode_like_python(n: int, width: int) -> None:
    raw = _floats(n, n + width)
    for phase in range(width):
        for coded in (None, (True,) * width, (False,) * width):
            payload = encode_planes(raw, PlaneHint(width, phase, False, coded))
            if payload is None:
                continue
            want = _decode_planes(memoryview(payload), n)
            assert want == raw
            assert _decode([(CODEC_PLANES, payload)], n) == raw


def test_raw_zstd_and_chains_decode_like_python() -> None:
    base = _floats(65536, 1)
    new = (np.frombuffer(base, np.float32) * np.float32(1.001)).tobytes()
    for codec, payload in (compress_chunk(base), compress_chunk(base, planes=True)):
        assert _decode([(codec, payload)], len(base)) == base
    assert _decode([(CODEC_RAW, base)], len(base)) == base
    head = parse_delta(encode_delta(new, base, bytes(32), 1, PlaneHint(4, 0)))
    codec, stored = compress_chunk(base, planes=True)
    chain = [(head.inner, head.body), (codec, stored)]
    assert _decode(chain, len(new)) == apply_delta(head, base, len(new)) == new
    # three layers: XOR is associative, the order of the layers does not matter
    newer = (np.frombuffer(new, np.float32) * np.float32(1.001)).tobytes()
    top = parse_delta(encode_delta(newer, new, bytes(32), 2))
    chain3 = [(top.inner, top.body), *chain]
    assert _decode(chain3, len(newer)) == newer
    assert _decode(chain3[::-1], len(newer)) == newer


def test_decode_many_says_why_a_job_does_not_decode() -> None:
    raw = _floats(4096, 3)
    codec, payload = compress_chunk(raw, planes=True)
    bad = bytes(payload[:-1])
    out = _planes.decode_many(
        [([(codec, payload)], 4096), ([(codec, bad)], 4096), ([(CODEC_RAW, raw)], 4095)]
    )
    assert out == [
        raw,
        "plane payload length does not add up",
        "raw chunk length differs from the index",
    ]


def _python(codec: int, payload: bytes, n: int) -> bytes | None:
    try:
        if codec == CODEC_PLANES:
            return _decode_planes(memoryview(payload), n)
        return decompress_chunk(codec, payload, n)
    except CorruptObjectError:
        return None


def test_damaged_payloads_are_refused_exactly_when_python_refuses_them() -> None:
    rng = np.random.default_rng(7)
    raw = _floats(6000, 5)
    originals = [
        (CODEC_PLANES, encode_planes(raw, PlaneHint(4, 1, False, (True, False, True, True)))),
        (CODEC_PLANES, encode_planes(raw, PlaneHint(2, 0, False, None))),
        (CODEC_ZSTD, compress_chunk(raw)[1]),
    ]
    for codec, payload in originals:
        assert payload is not None
        base = bytearray(payload)
        for trial in range(400):
            b = bytearray(base)
            kind = trial % 4
            if kind == 0:  # flip a byte in the header and tables
                i = int(rng.integers(0, min(len(b), 48)))
                b[i] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:  # flip anywhere
                i = int(rng.integers(0, len(b)))
                b[i] ^= 1 << int(rng.integers(0, 8))
            elif kind == 2:  # truncate
                b = b[: int(rng.integers(0, len(b)))]
            else:  # trailing garbage
                b += bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
            n = len(raw) if trial % 7 else len(raw) + int(rng.integers(-3, 4))
            want = _python(codec, bytes(b), n)
            try:
                got: bytes | None = _decode([(codec, bytes(b))], n)
            except ValueError:
                got = None
            assert got is None or len(got) == n, (codec, trial)
            if kind == 1:
                continue  # a flipped data byte: what zstd makes of it depends on its version
            # lengths, header and framing are refused alike (zstd versions may differ only
            # in the garbage they make of a damaged frame)
            assert (got is None) == (want is None), (codec, trial, kind)
