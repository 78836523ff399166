"""compress, codec 2 (byte planes): lossless on every float pattern, strict on every payload."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from modelstore import compress
from modelstore.compress import (
    CODEC_PLANES,
    CODEC_RAW,
    CODEC_ZSTD,
    CodecChooser,
    PlaneHint,
    compress_chunk,
    decompress_chunk,
    encode_planes,
    estimate_planes,
)
from modelstore.errors import CorruptObjectError, FormatError

from ..conftest import make_data


def _normal(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.02


def _bf16(n: int, seed: int = 0) -> bytes:
    """bf16 weights as a checkpoint holds them: the top half of small normal float32s."""
    return (_normal(n, seed).view(np.uint32) >> 16).astype(np.uint16).tobytes()


DTYPES = {
    "bf16": lambda n, s=0: _bf16(n, s),
    "fp16": lambda n, s=0: _normal(n, s).astype(np.float16).tobytes(),
    "fp32": lambda n, s=0: _normal(n, s).tobytes(),
    "fp64": lambda n, s=0: _normal(n, s).astype(np.float64).tobytes(),
}
WIDTH = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8}


def _hints(width: int) -> list[PlaneHint]:
    return [
        PlaneHint(width, phase, rotate, coded)
        for phase in range(width)
        for rotate in (True, False)
        for coded in (None, (True,) * width, (False,) * width)
    ]


def _round_trip(raw: bytes, hint: PlaneHint) -> bytes | None:
    payload = encode_planes(raw, hint)
    if payload is not None:
        assert decompress_chunk(CODEC_PLANES, payload, len(raw)) == raw
        assert decompress_chunk(CODEC_PLANES, memoryview(payload), len(raw)) == raw
    return payload


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_planes_round_trip_every_dtype_width_phase(dtype: str) -> None:
    raw = DTYPES[dtype](20_000)
    for width in compress.PLANE_WIDTHS:
        for hint in _hints(width):
            assert _round_trip(raw, hint) is not None


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_planes_chosen_for_float_slices_at_any_offset(dtype: str) -> None:
    # content-defined cuts fall anywhere: chunks start mid-element and end mid-element
    data = DTYPES[dtype](200_000, 3)
    rng = np.random.default_rng(7)
    for _ in range(12):
        start = int(rng.integers(0, 1000))
        n = int(rng.integers(20_000, 150_000))
        raw = data[start : start + n]
        codec, payload = compress_chunk(raw, planes=True)
        assert decompress_chunk(codec, bytes(payload), len(raw)) == raw
        if dtype != "fp64":  # estimated widths are 2 and 4; fp64 may go either way
            assert codec == CODEC_PLANES
            width, phase = bytes(payload)[:2]
            assert width == WIDTH[dtype]
            assert (start + phase) % width == 0  # the planes line up with real elements


def test_planes_every_16_bit_pattern() -> None:
    # every bf16 and fp16 value: all NaN payloads (quiet and signalling), ±inf, ±0, subnormals
    every = np.arange(1 << 16, dtype=np.uint16)
    rng = np.random.default_rng(1)
    for raw in (every.tobytes(), rng.permutation(every).tobytes(), every[::-1].tobytes()):
        for hint in _hints(2):
            _round_trip(raw, hint)
        codec, payload = compress_chunk(raw, planes=True)
        assert decompress_chunk(codec, bytes(payload), len(raw)) == raw


def test_planes_special_fp32_and_fp64_values() -> None:
    rng = np.random.default_rng(2)
    specials32 = np.array(
        [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0xFFFFFFFF, 0x7FFFFFFF,  # NaNs
         0x7F800000, 0xFF800000, 0x00000000, 0x80000000,  # ±inf, ±0
         0x00000001, 0x007FFFFF, 0x80000001, 0x807FFFFF, 0x00800000],  # subnormals, min normal
        dtype=np.uint32,
    )  # fmt: skip
    nan_payloads = (rng.integers(1, 1 << 22, 2000, dtype=np.uint32) | 0x7F800000).astype(np.uint32)
    weights = _normal(20_000, 4).view(np.uint32)
    mix32 = np.concatenate([weights, np.tile(specials32, 100), nan_payloads])
    rng.shuffle(mix32)
    mix64 = np.concatenate([
        _normal(5_000, 5).astype(np.float64),
        np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 2.2e-308] * 50),
    ])  # fmt: skip
    for raw, width in ((mix32.tobytes(), 4), (mix64.tobytes(), 8)):
        for hint in _hints(width):
            _round_trip(raw, hint)
        codec, payload = compress_chunk(raw, planes=True)
        assert decompress_chunk(codec, bytes(payload), len(raw)) == raw


@pytest.mark.parametrize("n", range(1, 18))
def test_planes_odd_lengths(n: int) -> None:
    raw = _bf16(16, 9)[:n]
    for width in compress.PLANE_WIDTHS:
        for hint in _hints(width):
            payload = _round_trip(raw, hint)
            whole = (n - hint.phase) // width
            assert (payload is None) == (whole < 1)
    assert compress_chunk(raw, planes=True) == (CODEC_RAW, raw)  # under the 64-byte floor


@pytest.mark.parametrize("n", [64, 65, 99, 1000, 4097, 16_383, 16_385])
def test_planes_short_chunks_round_trip(n: int) -> None:
    for make in DTYPES.values():
        raw = make(n)[:n]
        codec, payload = compress_chunk(raw, planes=True)
        assert decompress_chunk(codec, bytes(payload), n) == raw


def test_planes_random_and_text_are_not_plane_coded() -> None:
    rnd = make_data(300_000, seed=11)
    assert compress_chunk(rnd, planes=True)[0] == CODEC_RAW
    assert estimate_planes(rnd[:4096]) == (None, float("inf"))
    text = b"".join(b"layer %d weight bias tensor shape dtype\n" % i for i in range(20_000))
    assert compress_chunk(text[:200_000], planes=True)[0] == CODEC_ZSTD


def test_planes_off_means_no_plane_codec() -> None:
    raw = _bf16(100_000)
    assert compress_chunk(raw)[0] == CODEC_ZSTD
    assert compress_chunk(raw, hint=PlaneHint(2))[0] == CODEC_ZSTD
    chooser = CodecChooser(planes=False)
    assert {chooser.compress(raw[i : i + 50_000], i)[0] for i in range(0, 200_000, 50_000)} == {
        CODEC_ZSTD
    }


def test_planes_normal_bf16_weights_pick_planes_and_compress() -> None:
    # a property of the data, not a timing: normal bf16 weights (std 0.02) compress >= 1.3x
    data = _bf16(2_000_000, 21)
    chooser = CodecChooser(planes=True)
    raw = stored = 0
    codecs = set()
    off = 5  # chunks that start mid-element, like CDC cuts
    rng = np.random.default_rng(0)
    while off < len(data) - 70_000:
        n = int(rng.integers(16_384, 131_072))
        piece = data[off : off + n]
        codec, payload = chooser.compress(memoryview(piece), off)
        assert decompress_chunk(codec, bytes(payload), len(piece)) == piece
        codecs.add(codec)
        raw, stored = raw + len(piece), stored + len(payload)
        off += n
    assert codecs == {CODEC_PLANES}
    assert raw / stored >= 1.3
    zstd_ratio = len(data) / len(zstandard.ZstdCompressor(level=1).compress(data))
    assert raw / stored > zstd_ratio * 1.1


def test_planes_chooser_follows_mixed_content() -> None:
    # bf16, random bytes, fp32 (1.6 MB each): each part ends up with its codec, after a lag of
    # one chunk (a plane-coded chunk that does not pay resets the choice) or of at most
    # RECHECK_RAW chunks (random data is only probed with zstd between full estimates)
    part = 1_600_000
    data = _bf16(part // 2, 1) + make_data(part, 2) + DTYPES["fp32"](part // 4, 3)
    chooser = CodecChooser(planes=True)
    got: list[tuple[int, int]] = []
    step = 16_384
    for off in range(0, len(data), step):
        piece = data[off : off + step]
        codec, payload = chooser.compress(piece, off)
        assert decompress_chunk(codec, bytes(payload), len(piece)) == piece
        got.append((off, codec))
    lag = (CodecChooser.RECHECK_RAW + 1) * step
    spans = ((0, part), (part + step, 2 * part), (2 * part + lag, 3 * part))
    by_part = [{c for o, c in got if lo <= o and o + step <= hi} for lo, hi in spans]
    assert by_part == [{CODEC_PLANES}, {CODEC_RAW}, {CODEC_PLANES}]


# -- hostile payloads -------------------------------------------------------------------------


def _payload(width: int = 2, phase: int = 1) -> tuple[bytes, bytes]:
    raw = _bf16(5_000, 8)[: 10_000 - 1]
    payload = encode_planes(raw, PlaneHint(width, phase, True, (True,) * width))
    assert payload is not None
    return raw, payload


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p[:3],  # no header
        lambda p: p[:10],  # no plane table
        lambda p: p[:-1],  # short
        lambda p: p + b"x",  # trailing
        lambda p: b"\x03" + p[1:],  # width 3
        lambda p: b"\x00" + p[1:],  # width 0
        lambda p: p[:1] + b"\x02" + p[2:],  # phase == width
        lambda p: p[:2] + b"\x02" + p[3:],  # unknown transform
        lambda p: p[:3] + b"\x01" + p[4:],  # reserved byte set
        lambda p: p[:4] + b"\x07" + p[5:],  # unknown plane codec
        lambda p: p[:4] + b"\x00" + p[5:],  # a zstd plane declared raw
        lambda p: p[:5] + struct.pack("<I", 0xFFFFFFFF) + p[9:],  # plane length overflows
    ],
    ids=[
        "head", "table", "minus1", "trailing", "w3", "w0", "phase", "transform", "reserved",
        "subcodec", "raw_len", "huge_len",
    ],
)
def test_planes_corrupted_payload(mangle) -> None:
    raw, payload = _payload()
    with pytest.raises(CorruptObjectError):
        decompress_chunk(CODEC_PLANES, mangle(payload), len(raw))


@pytest.mark.parametrize("delta", [-10_000, -9_990, -1, 1, 1000])
def test_planes_wrong_raw_len(delta: int) -> None:
    raw, payload = _payload()
    with pytest.raises(CorruptObjectError):
        decompress_chunk(CODEC_PLANES, payload, len(raw) + delta)


def test_planes_zstd_plane_must_declare_its_size() -> None:
    # a plane frame claiming more than the plane is refused before it is decompressed
    m = 4_000
    head = compress._PLANES_HEAD.pack(2, 0, 0, 0)
    plane = bytes(m)
    for frame in (
        zstandard.ZstdCompressor(write_content_size=False).compress(plane),
        zstandard.ZstdCompressor().compress(bytes(m + 1)),
        zstandard.ZstdCompressor().compress(bytes(1 << 24)),  # a bomb: 16 MiB for 4000
    ):
        payload = (
            head
            + compress._PLANE_DESC.pack(0, m)
            + compress._PLANE_DESC.pack(1, len(frame))
            + plane
            + frame
        )
        with pytest.raises(CorruptObjectError, match="declares"):
            decompress_chunk(CODEC_PLANES, payload, 2 * m)


def test_planes_flipped_bytes_never_leak() -> None:
    raw, payload = _payload(4, 3)
    for i in range(len(payload)):
        bad = bytearray(payload)
        bad[i] ^= 0x41
        try:
            out = decompress_chunk(CODEC_PLANES, bytes(bad), len(raw))
        except CorruptObjectError:
            continue
        assert len(out) == len(raw)


@given(st.binary(min_size=0, max_size=3000), st.integers(0, 5000))
def test_planes_arbitrary_payload_only_raises_format_errors(payload: bytes, raw_len: int) -> None:
    try:
        out = decompress_chunk(CODEC_PLANES, payload, raw_len)
    except FormatError:
        return
    assert len(out) == raw_len


@settings(max_examples=100)
@given(st.binary(min_size=0, max_size=3000), st.integers(0, 5000), st.sampled_from([0, 1, 2]))
def test_planes_decode_never_allocates_beyond_raw_len(payload: bytes, n: int, bomb: int) -> None:
    # whatever the payload claims, decoding allocates a few times the chunk, never more
    if bomb:  # a well-formed header whose zstd plane claims 16 MiB (or the wrong size)
        m = max(1, n // 2)
        frame = zstandard.ZstdCompressor().compress(bytes(1 << 24 if bomb == 1 else m + 1))
        payload = (
            compress._PLANES_HEAD.pack(2, 0, 0, 0)
            + compress._PLANE_DESC.pack(1, len(frame))
            + compress._PLANE_DESC.pack(0, m)
            + frame
            + bytes(m)
        )
        n = 2 * m
    tracemalloc.start()
    try:
        try:
            out = decompress_chunk(CODEC_PLANES, payload, n)
        except FormatError:
            out = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 6 * n + 2 * len(payload) + 64 * 1024
    assert out is None or len(out) == n


@given(
    st.sampled_from(compress.PLANE_WIDTHS),
    st.integers(0, 7),
    st.integers(0, 255),
    st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=300)), min_size=1, max_size=8),
    st.binary(max_size=20),
    st.integers(0, 2000),
)
def test_planes_structured_payloads_only_raise_format_errors(
    width: int, phase: int, transform: int, planes: list[tuple[int, bytes]], extra: bytes, n: int
) -> None:
    # well-formed headers around arbitrary plane bodies reach the deeper checks
    body = b"".join(compress._PLANE_DESC.pack(sub, len(b)) for sub, b in planes[:width])
    payload = (
        compress._PLANES_HEAD.pack(width, phase % 8, transform % 3, 0)
        + body
        + extra
        + b"".join(b for _, b in planes[:width])
    )
    try:
        out = decompress_chunk(CODEC_PLANES, payload, n)
    except FormatError:
        return
    assert len(out) == n


@given(st.binary(min_size=0, max_size=40_000), st.booleans())
def test_planes_arbitrary_bytes_round_trip(raw: bytes, planes: bool) -> None:
    codec, payload = compress_chunk(raw, planes=planes)
    assert decompress_chunk(codec, bytes(payload), len(raw)) == raw


@given(
    st.binary(min_size=0, max_size=5_000),
    st.sampled_from(compress.PLANE_WIDTHS),
    st.integers(0, 7),
    st.booleans(),
)
def test_planes_arbitrary_bytes_any_split_round_trip(
    raw: bytes, width: int, phase: int, rotate: bool
) -> None:
    hint = PlaneHint(width, phase % width, rotate)
    _round_trip(raw, hint)
    codec, payload = compress_chunk(raw, hint=hint, planes=True)
    assert decompress_chunk(codec, bytes(payload), len(raw)) == raw


def test_planes_bad_hint_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        encode_planes(b"x" * 100, PlaneHint(3))
    with pytest.raises(ValueError):
        encode_planes(b"x" * 100, PlaneHint(2, 2))
