"""compress: per-chunk codec choice and strict decompression."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from modelstore import compress
from modelstore.compress import CODEC_RAW, CODEC_ZSTD, compress_chunk, decompress_chunk
from modelstore.errors import CorruptObjectError, UnsupportedFormatError

from ..conftest import make_data


def _bf16(n: int, seed: int = 0) -> bytes:
    """bf16 weights as a checkpoint holds them: the top half of small normal float32s."""
    w = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.02
    return (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def _text(n: int) -> bytes:
    words = b"the quick brown fox jumps over the lazy dog tensor layer weight bias ".split()
    out = bytearray()
    i = 0
    while len(out) < n:
        out += words[(i * 7 + i // 3) % len(words)] + b" "
        i += 1
    return bytes(out[:n])


CASES = {
    "random": make_data(200_000, seed=1),
    "random_small": make_data(5_000, seed=2),
    "zeros": bytes(100_000),
    "text": _text(50_000),
    "tiny": b"abc" * 20,  # 60 B, under the 64 B floor
    "tiny_zeros": bytes(63),
    "empty": b"",
    "bf16": _bf16(1 << 15),
}


@pytest.mark.parametrize("name", list(CASES))
def test_compress_round_trip(name):
    raw = CASES[name]
    codec, payload = compress_chunk(raw)
    assert codec in compress.KNOWN_CODECS
    assert decompress_chunk(codec, bytes(payload), len(raw)) == raw
    assert decompress_chunk(codec, memoryview(bytes(payload)), len(raw)) == raw


def test_compress_round_trip_memoryview_input():
    raw = bytes(50_000)
    codec, payload = compress_chunk(memoryview(raw))
    assert codec == CODEC_ZSTD
    assert decompress_chunk(codec, payload, len(raw)) == raw


@pytest.mark.parametrize("name", ["random", "random_small"])
def test_compress_random_data_stored_raw(name):
    raw = CASES[name]
    codec, payload = compress_chunk(raw)
    assert codec == CODEC_RAW
    assert bytes(payload) == raw


@pytest.mark.parametrize("name", ["zeros", "text", "bf16"])
def test_compress_compressible_data_uses_zstd(name):
    raw = CASES[name]
    codec, payload = compress_chunk(raw)
    assert codec == CODEC_ZSTD
    assert len(payload) <= len(raw) * (1 - compress.MIN_SAVING)


def test_compress_tiny_chunks_stay_raw():
    for raw in (b"", b"\x00", bytes(63)):
        assert compress_chunk(raw) == (CODEC_RAW, raw)


def test_compress_probe_keeps_mostly_random_data_raw():
    # the middle sample is random, so the whole chunk is stored raw even with zero padding
    raw = bytes(10_000) + make_data(40_000, seed=3) + bytes(10_000)
    assert compress_chunk(raw)[0] == CODEC_RAW


def test_compress_codec_tags_pinned():
    assert (CODEC_RAW, CODEC_ZSTD, compress.CODEC_PLANES, compress.CODEC_DELTA) == (0, 1, 2, 3)
    assert compress.CODEC_NAMES == {0: "raw", 1: "zstd", 2: "planes", 3: "delta"}


@pytest.mark.parametrize("codec", [4, 255, -1])
def test_compress_unknown_codec_unsupported(codec):
    with pytest.raises(UnsupportedFormatError, match=f"codec {codec}"):
        decompress_chunk(codec, b"xyz", 3)


def test_delta_codec_needs_its_base():
    with pytest.raises(CorruptObjectError, match="without its base"):
        decompress_chunk(compress.CODEC_DELTA, b"xyz", 3)


def _zstd_payload() -> tuple[bytes, bytes]:
    raw = bytes(10_000)
    codec, payload = compress_chunk(raw)
    assert codec == CODEC_ZSTD
    return raw, bytes(payload)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p[: len(p) // 2],  # truncated
        lambda p: p[:-1],
        lambda p: b"",
        lambda p: b"\x00" + p[1:],  # bad frame magic
        lambda p: b"\xff" * len(p),
        lambda p: p + b"junk",  # trailing data after the frame
        lambda p: p + p,  # a second frame
    ],
    ids=["half", "minus1", "empty", "magic", "ff", "trailing", "two_frames"],
)
def test_compress_corrupted_zstd_payload(mangle):
    raw, payload = _zstd_payload()
    with pytest.raises(CorruptObjectError):
        decompress_chunk(CODEC_ZSTD, mangle(payload), len(raw))


def test_compress_flipped_zstd_byte_never_leaks():
    # without a zstd checksum a flip may still decode; it must never raise anything else
    raw, payload = _zstd_payload()
    for i in range(len(payload)):
        bad = bytearray(payload)
        bad[i] ^= 0x40
        try:
            out = decompress_chunk(CODEC_ZSTD, bytes(bad), len(raw))
        except CorruptObjectError:
            continue
        assert len(out) == len(raw)


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_compress_wrong_raw_len_zstd(delta):
    raw, payload = _zstd_payload()
    with pytest.raises(CorruptObjectError):
        decompress_chunk(CODEC_ZSTD, payload, len(raw) + delta)


@pytest.mark.parametrize("delta", [-1, 1])
def test_compress_wrong_raw_len_raw(delta):
    with pytest.raises(CorruptObjectError, match="expected"):
        decompress_chunk(CODEC_RAW, b"abcd", 4 + delta)


@pytest.mark.parametrize("codec", [CODEC_RAW, CODEC_ZSTD])
def test_compress_negative_raw_len(codec):
    with pytest.raises(CorruptObjectError):
        decompress_chunk(codec, _zstd_payload()[1], -1)


def test_compress_zstd_frame_must_declare_its_content_size():
    # FORMAT.md §8: a frame that does not declare the expected size is refused before any
    # decompression, so a hostile frame cannot make the reader allocate what it claims
    raw = bytes(5_000)
    payload = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    with pytest.raises(CorruptObjectError, match="declares"):
        decompress_chunk(CODEC_ZSTD, payload, len(raw))
    huge = zstandard.ZstdCompressor().compress(raw)
    with pytest.raises(CorruptObjectError, match="declares"):
        decompress_chunk(CODEC_ZSTD, huge, len(raw) - 1)
    with pytest.raises(CorruptObjectError):
        decompress_chunk(CODEC_ZSTD, huge, 0)
