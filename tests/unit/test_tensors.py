"""tensors: safetensors headers parsed strictly, tensors read by byte range, checked against the
reference loader."""

from __future__ import annotations

import io
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from modelstore import tensors as st
from modelstore.errors import FormatError


def raw_file(header: Any, data: bytes = b"", *, length: int | None = None) -> io.BytesIO:
    """A safetensors-like file from a header (dict, or raw bytes) and data."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(body) if length is None else length
    return io.BytesIO(struct.pack("<Q", n) + body + data)


def entry(dtype: str, shape: list[Any], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def bf16_file(values: np.ndarray, name: str = "w") -> bytes:
    """A BF16 tensor written by hand: the top 16 bits of each float32."""
    raw = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    hdr = {name: entry("BF16", list(values.shape), 0, len(raw))}
    return raw_file(hdr, raw).getvalue()


def test_header_of_a_reference_file(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.ones(5, dtype=np.float16),
        "idx": np.array([1, -2, 3], dtype=np.int64),
        "empty": np.zeros((0, 7), dtype=np.float32),
    }
    save_file(tensors, str(p), metadata={"format": "np", "step": "10"})
    with open(p, "rb") as f:
        assert st.is_safetensors(f)
        infos, meta = st.read_header(f)
    assert meta == {"format": "np", "step": "10"}
    by = {t.name: t for t in infos}
    assert set(by) == set(tensors)
    assert by["w"].dtype == "F32" and by["w"].shape == (3, 4) and by["w"].nbytes == 48
    assert by["b"].dtype == "F16" and by["idx"].dtype == "I64"
    assert by["empty"].shape == (0, 7) and by["empty"].nbytes == 0
    # ranges are absolute, inside the file, and tile the data area
    size = p.stat().st_size
    spans = sorted((t.start, t.end) for t in infos)
    assert spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize(
    "arr",
    [
        np.linspace(-3, 3, 60, dtype=np.float32).reshape(3, 4, 5),
        np.linspace(-1, 1, 17, dtype=np.float64),
        np.array([0.5, -1.25, 65504, 6e-8], dtype=np.float16),
        np.array([-(2**62), 2**62 + 1, 0], dtype=np.int64),
        np.arange(-8, 8, dtype=np.int32).reshape(4, 4),
        np.array([-32768, 32767], dtype=np.int16),
        np.array([-128, 127, 0], dtype=np.int8),
        np.array([0, 255, 7], dtype=np.uint8),
        np.array([[True, False], [False, True]]),
    ],
    ids=lambda a: str(a.dtype),
)
def test_read_tensor_matches_the_reference_loader(tmp_path: Path, arr: np.ndarray) -> None:
    p = tmp_path / "t.safetensors"
    save_file({"pad": np.ones(3, dtype=np.uint8), "x": arr}, str(p))
    want = load_file(str(p))["x"]
    with open(p, "rb") as f:
        infos, _ = st.read_header(f)
        got = st.read_tensor(f, next(t for t in infos if t.name == "x"))
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got, want)


def test_bf16_widens_exactly_and_agrees_with_safe_open(tmp_path: Path) -> None:
    # values exactly representable in bf16: widening them back must be exact
    vals = np.array([[1.0, -2.5, 3.140625], [0.0, -0.0, 1e-3], [np.inf, -np.inf, 2.0**100]])
    vals = (vals.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    p = tmp_path / "b.safetensors"
    p.write_bytes(bf16_file(vals))
    with safe_open(str(p), framework="np") as ref:
        ref_shape = ref.get_slice("w").get_shape()
        ref_dtype = ref.get_slice("w").get_dtype()
    with open(p, "rb") as f:
        (info,), _ = st.read_header(f)
        got = st.read_tensor(f, info)
    assert list(info.shape) == list(ref_shape) and info.dtype == ref_dtype == "BF16"
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), vals.view(np.uint32))  # bit-exact, -0.0 too


def test_bf16_from_the_bench_generator_matches_the_float32_top_bits(tmp_path: Path) -> None:
    from bench.gen import write_checkpoint

    p = tmp_path / "g.safetensors"
    write_checkpoint(p, 256 * 1024, dtype="mixed", seed=3)
    with safe_open(str(p), framework="np") as ref, open(p, "rb") as f:
        infos, meta = st.read_header(f)
        assert meta == ref.metadata()
        assert sorted(t.name for t in infos) == sorted(ref.keys())
        for t in infos:
            assert list(t.shape) == list(ref.get_slice(t.name).get_shape())
            assert t.dtype == ref.get_slice(t.name).get_dtype()
            got = st.read_tensor(f, t)
            if t.dtype == "F32":
                assert np.array_equal(got, ref.get_tensor(t.name))
            else:  # BF16: the low half of every widened float32 is zero, magnitudes sane
                assert got.dtype == np.float32 and got.shape == t.shape
                assert not (got.view(np.uint32) & 0xFFFF).any()
                assert np.isfinite(got).all() and float(np.abs(got).max()) < 10


def test_read_elements_reads_only_its_byte_range() -> None:
    arr = np.arange(1000, dtype=np.float32)
    hdr = {"x": entry("F32", [1000], 0, 4000)}
    f = raw_file(hdr, arr.tobytes())
    (info,), _ = st.read_header(f)

    class Spy(io.BytesIO):
        spans: list[tuple[int, int]] = []  # noqa: RUF012

        def readinto(self, b: Any) -> int:
            pos = self.tell()
            n = super().readinto(b)
            self.spans.append((pos, n))
            return n

    spy = Spy(f.getvalue())
    got = st.read_elements(spy, info, 10, 5)
    assert got.tolist() == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert spy.spans == [(info.start + 40, 20)]
    with pytest.raises(FormatError):
        st.read_elements(spy, info, 998, 5)


def test_opaque_fp8_is_raw_bytes() -> None:
    hdr = {"q": entry("F8_E4M3", [4], 0, 4), "r": entry("F8_E5M2", [2], 4, 6)}
    f = raw_file(hdr, b"\x01\x02\x03\x04\x05\x06")
    infos, _ = st.read_header(f)
    assert st.read_tensor(f, infos[0]).tolist() == [1, 2, 3, 4]
    assert st.read_tensor(f, infos[1]).dtype == np.uint8


def test_is_safetensors_sniffs_content_and_restores_the_position() -> None:
    good = raw_file({"x": entry("U8", [2], 0, 2)}, b"ab")
    good.seek(5)
    assert st.is_safetensors(good) and good.tell() == 5
    assert not st.is_safetensors(io.BytesIO(b"PK\x03\x04" + bytes(100)))  # a zip
    assert not st.is_safetensors(io.BytesIO(b"\x02\x00"))  # too short
    assert not st.is_safetensors(raw_file(b"[1, 2]"))  # not an object
    assert not st.is_safetensors(raw_file(b"{}", length=10**9))  # length past the end


HOSTILE: list[tuple[str, io.BytesIO]] = [
    ("short file", io.BytesIO(b"\x01\x02")),
    ("huge length", raw_file(b"{}", length=st.MAX_HEADER + 1)),
    ("length past the end", raw_file(b"{}", length=1000)),
    ("not json", raw_file(b"{not json")),
    ("not utf-8", raw_file(b'{"\xff": 1}')),
    ("json array", raw_file(b"[]")),
    ("duplicate keys", raw_file(b'{"a": {"dtype": "U8"}, "a": {"dtype": "U8"}}')),
    ("bad dtype", raw_file({"x": entry("F128", [1], 0, 16)}, bytes(16))),
    ("dtype not a string", raw_file({"x": entry(4, [1], 0, 4)}, bytes(4))),  # type: ignore[arg-type]
    ("negative dim", raw_file({"x": entry("U8", [-1], 0, 0)})),
    ("float dim", raw_file({"x": entry("U8", [2.0], 0, 2)}, b"ab")),
    ("bool dim", raw_file({"x": entry("U8", [True], 0, 1)}, b"a")),
    ("shape not a list", raw_file({"x": entry("U8", 2, 0, 2)}, b"ab")),  # type: ignore[arg-type]
    ("offsets reversed", raw_file({"x": entry("U8", [0], 2, 0)}, b"ab")),
    ("offsets past the end", raw_file({"x": entry("U8", [8], 0, 8)}, b"ab")),
    ("huge offsets", raw_file({"x": entry("U8", [2**70], 0, 2**70)}, b"ab")),
    ("size disagrees with shape", raw_file({"x": entry("F32", [2], 0, 4)}, bytes(4))),
    ("overlap", raw_file({"x": entry("U8", [4], 0, 4), "y": entry("U8", [4], 2, 6)}, bytes(6))),
    ("gap", raw_file({"x": entry("U8", [2], 0, 2), "y": entry("U8", [2], 4, 6)}, bytes(6))),
    ("trailing bytes", raw_file({"x": entry("U8", [2], 0, 2)}, bytes(5))),
    ("extra field", raw_file({"x": {**entry("U8", [2], 0, 2), "extra": 1}}, b"ab")),
    ("missing field", raw_file({"x": {"dtype": "U8", "shape": [2]}}, b"ab")),
    ("entry not an object", raw_file({"x": [1, 2]})),
    ("metadata not strings", raw_file({"__metadata__": {"step": 10}})),
    ("metadata not a map", raw_file({"__metadata__": ["a"]})),
    ("deep nesting", raw_file(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")),
]


@pytest.mark.parametrize("f", [f for _, f in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_hostile_headers_are_format_errors(f: io.BytesIO) -> None:
    with pytest.raises(FormatError, match="safetensors"):
        st.read_header(f)


def test_an_empty_file_with_an_empty_header_is_fine() -> None:
    assert st.read_header(raw_file(b"{}")) == ([], {})
    assert st.read_header(raw_file(b'{"__metadata__": {}}   ')) == ([], {})


_VALID = raw_file(
    {"__metadata__": {"k": "v"}, "a": entry("F16", [2, 2], 0, 8), "b": entry("I32", [1], 8, 12)},
    bytes(12),
).getvalue()


@settings(max_examples=200, deadline=None)
@given(pos=hs.integers(0, len(_VALID) - 1), byte=hs.integers(0, 255))
def test_any_single_byte_corruption_parses_or_is_a_format_error(pos: int, byte: int) -> None:
    data = bytearray(_VALID)
    data[pos] = byte
    try:
        infos, _ = st.read_header(io.BytesIO(bytes(data)))
    except FormatError:
        return
    for t in infos:  # whatever was accepted is readable within the file
        assert 0 < t.start <= t.end <= len(data)
        st.read_tensor(io.BytesIO(bytes(data)), t)
