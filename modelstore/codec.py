"""Layer 0: canonical msgpack; the only module that imports msgpack.

Object ids hash these bytes, so one value must have exactly one encoding:

- ``use_bin_type=True``: ``bytes`` are msgpack bin and ``str`` is msgpack str, never mixed up.
- integers take msgpack's shortest form (what msgpack-python always emits);
- floats are always float64 (``use_single_float=False``), never used for ids or sizes;
- maps must have ``str`` keys, and are written with keys sorted by their UTF-8 bytes;
- tuples are written as arrays and read back as lists; no ext types, no other types.

Decoding is strict and bounded, because repositories and remotes are untrusted input: limits on
string, binary, array and map sizes and on nesting depth, ext types refused, and any failure is
raised as ``FormatError`` (never another exception type).
"""

from __future__ import annotations

from typing import Any

import msgpack

from modelstore.errors import FormatError

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "decode", "encode"]

#: the largest array or map a decoder accepts (a 20 TB file has ~3e8 chunks, but chunk lists
#: are stored as packed bin, not arrays, so real objects stay far below this).
MAX_ITEMS = 1 << 22
#: the deepest nesting a decoder accepts.
MAX_DEPTH = 32
MAX_BIN = 1 << 30


def _canonical(value: Any, depth: int) -> Any:
    """Check the types allowed in an object, and sort map keys."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    # containers count towards the depth, scalars do not (the same rule as ``_check_depth``)
    if isinstance(value, (list, tuple, dict)) and depth > MAX_DEPTH:
        raise FormatError("object nests too deeply to encode")
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise FormatError(f"map keys must be str, got {type(k).__name__}")
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        return {k: _canonical(value[k], depth + 1) for k in keys}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise FormatError(f"type {type(value).__name__} cannot be encoded")


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically (see the module docstring for the rules)."""
    try:
        out: bytes = msgpack.packb(
            _canonical(value, 0), use_bin_type=True, use_single_float=False, strict_types=False
        )
    except (OverflowError, ValueError, TypeError) as exc:
        raise FormatError(f"cannot encode value: {exc}") from None
    return out


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FormatError(f"msgpack ext type {code} is not allowed")


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FormatError("object nests too deeply")
    if isinstance(value, list):
        for v in value:
            if isinstance(v, (list, dict)):
                _check_depth(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            if isinstance(v, (list, dict)):
                _check_depth(v, depth + 1)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode one msgpack value strictly; raise ``FormatError`` on anything malformed."""
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=1 << 24,
            max_bin_len=MAX_BIN,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,
        )
    except FormatError:
        raise
    except RecursionError:
        raise FormatError("object nests too deeply") from None
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, ...)
        raise FormatError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    _check_depth(value, 0)
    return value
