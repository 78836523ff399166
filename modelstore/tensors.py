"""Layer 1: safetensors headers and tensors, read from any seekable binary file.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON, then
the tensor data. The JSON maps each tensor name to ``{"dtype", "shape", "data_offsets"}``
(offsets relative to the end of the header) and may hold a ``"__metadata__"`` map of strings.
Headers come from untrusted files, so :func:`read_header` validates them as strictly as the
reference loader: bounded length, known dtypes, non-negative integer shapes, byte ranges that
match ``dtype size x prod(shape)`` and tile the data area exactly (no gaps, no overlaps, nothing
past the end). Any problem is a ``FormatError``.

Files are recognised by content (:func:`is_safetensors`), never by name. Tensor data is read
by byte range only (:func:`read_elements`, :func:`read_tensor`), so a caller never needs the
whole file in memory. BF16 is widened to float32 (``uint16 << 16``); the two FP8 formats are
opaque here (their raw bytes, as uint8).
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modelstore.errors import FormatError

__all__ = [
    "DTYPES",
    "SeekableReader",
    "MAX_HEADER",
    "DType",
    "TensorInfo",
    "decode",
    "is_safetensors",
    "read_elements",
    "read_header",
    "read_tensor",
]

#: the largest header accepted (the reference loader's limit)
MAX_HEADER = 100_000_000
_LEN = struct.Struct("<Q")


class SeekableReader(Protocol):
    """A seekable binary file: a plain file, ``BytesIO``, a repository ``ChunkedFile``."""

    def seek(self, offset: int, whence: int = ..., /) -> int: ...  # noqa: D102
    def tell(self) -> int: ...  # noqa: D102
    def read(self, size: int = ..., /) -> bytes | None: ...  # noqa: D102
    def readinto(self, buffer: memoryview, /) -> int | None: ...  # noqa: D102


@dataclass(frozen=True)
class DType:
    """A safetensors dtype: its size and how to decode it (``numpy`` None: opaque or BF16)."""

    name: str
    itemsize: int
    numpy: str | None
    opaque: bool = False


#: the dtypes this module knows; anything else in a header is refused
DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("F64", 8, "<f8"),
        DType("F32", 4, "<f4"),
        DType("F16", 2, "<f2"),
        DType("BF16", 2, None),
        DType("I64", 8, "<i8"),
        DType("I32", 4, "<i4"),
        DType("I16", 2, "<i2"),
        DType("I8", 1, "i1"),
        DType("U64", 8, "<u8"),
        DType("U32", 4, "<u4"),
        DType("U16", 2, "<u2"),
        DType("U8", 1, "u1"),
        DType("BOOL", 1, "u1"),
        DType("F8_E4M3", 1, None, opaque=True),
        DType("F8_E5M2", 1, None, opaque=True),
    )
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file; ``start``/``end`` are absolute byte offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Bytes of data."""
        return self.end - self.start

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return DTYPES[self.dtype].itemsize


def _size_of(f: SeekableReader) -> int:
    pos = f.tell()
    try:
        return f.seek(0, io.SEEK_END)
    finally:
        f.seek(pos)


def read_exact(f: SeekableReader, offset: int, n: int, what: str) -> bytes:
    """``n`` bytes at ``offset``, or ``FormatError`` naming ``what`` the file ends inside."""
    f.seek(offset)
    out = bytearray(n)
    view = memoryview(out)
    done = 0
    while done < n:
        got = f.readinto(view[done:])
        if not got:
            raise FormatError(f"safetensors: the file ends inside {what}")
        done += got
    return bytes(out)


def is_safetensors(f: SeekableReader) -> bool:
    """Cheap sniff: a plausible header length followed by ``{`` (reads 9 bytes).

    The stream position is restored. A True answer does not promise that
    :func:`read_header` will accept the header.
    """
    pos = f.tell()
    try:
        size = f.seek(0, io.SEEK_END)
        if size < 10:
            return False
        f.seek(0)
        head = f.read(9)
        if head is None or len(head) != 9:
            return False
        (n,) = _LEN.unpack_from(head)
        return 2 <= n <= MAX_HEADER and 8 + n <= size and head[8:9] == b"{"
    finally:
        f.seek(pos)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"safetensors header: duplicate key {k!r}")
        out[k] = v
    return out


def _is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


def read_header(f: SeekableReader) -> tuple[list[TensorInfo], dict[str, str]]:
    """Parse and validate the header of a safetensors file.

    Args:
        f: A seekable binary file (a plain file, ``BytesIO``, a repository ``ChunkedFile``).

    Returns:
        ``(tensors in file order, metadata)``; each tensor's byte range is absolute.

    Raises:
        FormatError: On anything the reference loader would refuse.
    """
    size = _size_of(f)
    if size < 8:
        raise FormatError("safetensors: file too short for a header length")
    (n,) = _LEN.unpack(read_exact(f, 0, 8, "the header length"))
    if n > MAX_HEADER:
        raise FormatError(f"safetensors: header length {n} exceeds {MAX_HEADER} bytes")
    if 8 + n > size:
        raise FormatError(f"safetensors: header length {n} runs past the end of the file")
    raw = read_exact(f, 8, n, "the header")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"safetensors: the header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FormatError("safetensors: the header is not a JSON object")
    meta = doc.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise FormatError("safetensors: __metadata__ must map strings to strings")
    base = 8 + n
    data_len = size - base
    tensors: list[TensorInfo] = []
    for name, spec in doc.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(
                f"safetensors: tensor {name!r} must have exactly dtype, shape and data_offsets"
            )
        dtype, shape, offs = spec["dtype"], spec["shape"], spec["data_offsets"]
        dt = DTYPES.get(dtype) if isinstance(dtype, str) else None
        if dt is None:
            raise FormatError(f"safetensors: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise FormatError(
                f"safetensors: tensor {name!r} shape must be a list of non-negative ints"
            )
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(_is_uint(o) for o in offs)
            or offs[0] > offs[1]
        ):
            raise FormatError(f"safetensors: tensor {name!r} has bad data_offsets {offs!r}")
        if offs[1] > data_len:
            raise FormatError(
                f"safetensors: tensor {name!r} data_offsets {offs} run past the end of the file"
            )
        if math.prod(shape) * dt.itemsize != offs[1] - offs[0]:
            raise FormatError(
                f"safetensors: tensor {name!r} is {offs[1] - offs[0]} bytes, but {dtype} "
                f"{shape} needs {math.prod(shape) * dt.itemsize}"
            )
        tensors.append(TensorInfo(name, dtype, tuple(shape), base + offs[0], base + offs[1]))
    # the data area is tiled exactly, in offset order: no gaps, no overlaps, no trailing bytes
    pos = base
    for t in sorted(tensors, key=lambda t: (t.start, t.end)):
        if t.start != pos:
            what = "overlaps the previous tensor" if t.start < pos else "leaves a gap before it"
            raise FormatError(f"safetensors: tensor {t.name!r} {what}")
        pos = t.end
    if pos != size:
        raise FormatError(
            f"safetensors: {size - pos} bytes after the last tensor (the data must fill the file)"
        )
    return tensors, meta


def decode(raw: bytes | bytearray | memoryview, dtype: str) -> npt.NDArray[Any]:
    """Turn little-endian raw bytes of a dtype into a 1-D numpy array.

    BF16 becomes float32 (exact), BOOL becomes bool, FP8 stays raw uint8.
    """
    dt = DTYPES.get(dtype)
    if dt is None:
        raise FormatError(f"safetensors: unknown dtype {dtype!r}")
    if len(raw) % dt.itemsize:
        raise FormatError(f"safetensors: {len(raw)} bytes is not a whole number of {dtype}")
    if dtype == "BF16":
        u16 = np.frombuffer(raw, dtype="<u2")
        return (u16.astype(np.uint32) << 16).view(np.float32)
    if dt.opaque:
        return np.frombuffer(raw, dtype=np.uint8)
    a = np.frombuffer(raw, dtype=dt.numpy)
    if dtype == "BOOL":
        flags: npt.NDArray[np.bool_] = a != 0
        return flags
    return a


def read_elements(f: SeekableReader, info: TensorInfo, first: int, count: int) -> npt.NDArray[Any]:
    """Elements ``[first, first + count)`` of a tensor, flattened, read from its byte range only.

    Raises:
        FormatError: If the range is outside the tensor or the file ends early.
    """
    if first < 0 or count < 0 or first + count > info.numel:
        raise FormatError(f"elements {first}+{count} are outside tensor {info.name!r}")
    size = info.itemsize
    raw = read_exact(f, info.start + first * size, count * size, f"tensor {info.name!r}")
    return decode(raw, info.dtype)


def read_tensor(f: SeekableReader, info: TensorInfo) -> npt.NDArray[Any]:
    """The whole tensor, shaped (reads ``info.nbytes`` bytes from its range only)."""
    flat = read_elements(f, info, 0, info.numel)
    shaped: npt.NDArray[Any] = flat.reshape(info.shape)
    return shaped
