"""codec: canonical msgpack, strict and bounded decoding."""

from __future__ import annotations

import datetime
import struct

import msgpack
import pytest

from modelstore import codec
from modelstore.errors import FormatError


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (None, "c0"),
        (True, "c3"),
        (False, "c2"),
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (-1, "ff"),
        (-33, "d0df"),
        (2**32, "cf0000000100000000"),
        (1.0, "cb3ff0000000000000"),
        ("", "a0"),
        ("a", "a161"),
        (b"", "c400"),
        (b"a", "c40161"),
        ([], "90"),
        ((1, 2), "920102"),
        ({}, "80"),
        (
            {"b": 1, "a": [b"\x00", "x", -1, 1.5, None, True]},
            "82a16196c40100a178ffcb3ff8000000000000c0c3a16201",
        ),
    ],
)
def test_codec_golden_bytes(value, hex_):
    assert codec.encode(value).hex() == hex_


def test_codec_bin_and_str_are_distinct():
    assert codec.encode(b"ab") != codec.encode("ab")
    assert codec.decode(codec.encode(b"ab")) == b"ab"
    assert codec.decode(codec.encode("ab")) == "ab"
    assert isinstance(codec.decode(codec.encode(b"ab")), bytes)


def test_codec_buffers_encode_as_bin():
    assert codec.encode(bytearray(b"xy")) == codec.encode(b"xy")
    assert codec.encode(memoryview(b"xy")) == codec.encode(b"xy")


def test_codec_map_keys_sorted_by_utf8_bytes():
    a = codec.encode({"z": 1, "é": 2, "a": 3, "aa": 4})
    b = codec.encode({"aa": 4, "é": 2, "a": 3, "z": 1})
    assert a == b
    # the raw bytes list the keys in UTF-8 byte order: a, aa, z, é (0xc3 0xa9)
    keys = list(msgpack.unpackb(a, raw=False).keys())
    assert keys == ["a", "aa", "z", "é"]


def test_codec_nested_map_keys_sorted():
    assert codec.encode([{"b": {"d": 1, "c": 2}, "a": 0}]) == codec.encode(
        [{"a": 0, "b": {"c": 2, "d": 1}}]
    )


def test_codec_floats_always_float64():
    enc = codec.encode(0.5)
    assert enc[0] == 0xCB and len(enc) == 9
    assert struct.unpack(">d", enc[1:])[0] == 0.5


def test_codec_tuples_read_back_as_lists():
    assert codec.decode(codec.encode((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize("key", [1, b"k", None, 1.5, (1,)])
def test_codec_refuses_non_str_map_keys(key):
    with pytest.raises(FormatError, match="map keys must be str"):
        codec.encode({key: 1})


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset(),
        object(),
        1j,
        datetime.datetime(2020, 1, 1),
        [1, {2}],
        2**64,
        -(2**63) - 1,
        "\udcff",  # a lone surrogate is not UTF-8
        {"\udcff": 1},
    ],
)
def test_codec_refuses_unsupported_values(value):
    with pytest.raises(FormatError):
        codec.encode(value)


def test_codec_never_writes_ext_types():
    # ExtType is a namedtuple: it is written as a plain array, never as an ext
    assert codec.encode(msgpack.ExtType(1, b"x")) == codec.encode([1, b"x"])


@pytest.mark.parametrize("key", [1, -1, 1.5, None, True])
def test_codec_decode_refuses_non_str_bin_map_keys(key):
    with pytest.raises(FormatError):
        codec.decode(msgpack.packb({key: 2}))


def test_codec_decode_accepts_bin_map_keys_but_never_writes_them():
    # FORMAT.md §6: decoders take str or bin keys; writers only ever write str keys
    v = codec.decode(msgpack.packb({b"k": 2}, use_bin_type=True))
    assert v == {b"k": 2}
    with pytest.raises(FormatError, match="map keys must be str"):
        codec.encode(v)


@pytest.mark.parametrize("code", [0, 1, 127])
def test_codec_decode_refuses_ext_types(code):
    with pytest.raises(FormatError):
        codec.decode(msgpack.packb(msgpack.ExtType(code, b"abc")))


def test_codec_decode_refuses_timestamp_ext():
    with pytest.raises(FormatError):
        codec.decode(bytes.fromhex("d6ff00000000"))


def _nest(levels: int, inner: object) -> object:
    v = inner
    for _ in range(levels):
        v = [v]
    return v


def test_codec_depth_limit_same_for_encode_and_decode():
    limit = codec.MAX_DEPTH + 1  # containers at depths 0..MAX_DEPTH
    for inner in (1, {}, "s"):
        ok = _nest(limit, inner) if inner != {} else _nest(limit - 1, {})
        assert codec.decode(codec.encode(ok)) == ok
    too_deep = _nest(limit + 1, 1)
    with pytest.raises(FormatError, match="nests too deeply"):
        codec.encode(too_deep)
    with pytest.raises(FormatError, match="nests too deeply"):
        codec.decode(msgpack.packb(too_deep))
    maps = {"a": 1}
    for _ in range(limit):
        maps = {"a": maps}
    with pytest.raises(FormatError, match="nests too deeply"):
        codec.decode(msgpack.packb(maps))


def test_codec_very_deep_input_is_format_error():
    with pytest.raises(FormatError):
        codec.decode(b"\x91" * 100_000 + b"\x00")


@pytest.mark.parametrize(
    ("data", "limit"),
    [
        (b"\xdd" + struct.pack(">I", codec.MAX_ITEMS + 1), "max_array_len"),
        (b"\xdf" + struct.pack(">I", codec.MAX_ITEMS + 1), "max_map_len"),
    ],
)
def test_codec_container_size_limits(data, limit):
    # array and map counts are checked on the header, before any item is read
    with pytest.raises(FormatError, match=limit):
        codec.decode(data)


def test_codec_str_size_limit():
    s = "x" * (1 << 24)
    assert codec.decode(codec.encode(s)) == s
    with pytest.raises(FormatError, match="max_str_len"):
        codec.decode(codec.encode(s + "x"))


def test_codec_bin_size_limit(monkeypatch):
    # the real limit is 1 GiB; the check is the same at any size
    monkeypatch.setattr(codec, "MAX_BIN", 16)
    assert codec.decode(codec.encode(b"x" * 16)) == b"x" * 16
    with pytest.raises(FormatError, match="max_bin_len"):
        codec.decode(codec.encode(b"x" * 17))


@pytest.mark.parametrize(
    "value", [[1, 2, 3], {"a": b"xyz"}, "hello", b"\x00" * 40, 2**40, 1.25]
)
def test_codec_truncated_input(value):
    enc = codec.encode(value)
    for n in range(len(enc)):
        with pytest.raises(FormatError):
            codec.decode(enc[:n])


def test_codec_trailing_garbage():
    with pytest.raises(FormatError, match="ExtraData"):
        codec.decode(codec.encode([1, 2]) + b"\x00")
    with pytest.raises(FormatError):
        codec.decode(b"\xc0\xc0")


def test_codec_invalid_utf8_str_is_format_error():
    with pytest.raises(FormatError):
        codec.decode(b"\xa2\xff\xfe")


def test_codec_reserved_byte_is_format_error():
    with pytest.raises(FormatError):
        codec.decode(b"\xc1")


def test_codec_error_is_one_line():
    with pytest.raises(FormatError) as ei:
        codec.decode(b"\x92\x01")
    assert "\n" not in str(ei.value)
    assert ei.value.__cause__ is None
