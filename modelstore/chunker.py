"""Layer 0: content-defined chunking (FastCDC-style gear hash); the parameters are part of the on-disk format.

The scanning itself is done by the C extension :mod:`modelstore._cdc` (GIL released while it
runs); this module holds the parameters (recorded in the repository config), the gear table
derivation, a push-style wrapper, a stream convenience, and :func:`reference_cut_points`, a
deliberately simple pure-Python statement of the algorithm that the tests cross-check the C code
against.

The algorithm ("fastcdc-gear-nc2-v1"), with ``bits = log2(avg_size)``, ``mask_s`` the top
``bits + 2`` bits of a uint64 and ``mask_l`` the top ``bits - 2`` bits: inside each chunk, bytes
at positions ``p < min_size`` are skipped; every later byte ``b`` updates
``h = (h << 1) + gear[b] (mod 2**64)`` (``h`` starts at 0 for every chunk) and the chunk ends
after it if ``h & (mask_s if p < avg_size else mask_l) == 0``; a chunk also ends when it reaches
``max_size`` bytes. The remainder at the end of the stream is the last chunk.
"""  # noqa: E501 - the first line is prescribed

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import blake3

import modelstore._cdc as _cdc
from modelstore.errors import FormatError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "ALGORITHM",
    "FEATURE_TENSOR_CHUNKING",
    "Chunker",
    "ChunkerParams",
    "cut_points",
    "iter_chunk_lengths",
    "reference_cut_points",
    "splitmix64",
    "splitmix64_bytes",
]

ALGORITHM = "fastcdc-gear-nc2-v1"
"""The only chunking algorithm this version knows."""

FEATURE_TENSOR_CHUNKING = "chunking-tensor-aware-v1"
"""``compat`` feature: safetensors/GGUF files are also cut at each tensor start (FORMAT.md §5.5).

Readers do not care how boundaries were chosen; writers that agree on the rule dedup alike.
"""

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

_MIN_LIMIT = 64
_MAX_LIMIT = 1 << 31
_PARAM_KEYS = frozenset({"algorithm", "min_size", "avg_size", "max_size", "gear_seed"})


def splitmix64(seed: int, n: int) -> list[int]:
    """Return the first ``n`` outputs of the standard SplitMix64 generator.

    Args:
        seed: Initial state (taken mod 2**64).
        n: How many 64-bit values to produce.

    Returns:
        ``n`` integers in ``[0, 2**64)``.
    """
    state = seed & _MASK64
    out: list[int] = []
    for _ in range(n):
        state = (state + _GAMMA) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
        out.append(z ^ (z >> 31))
    return out


def _splitmix64_bytes_py(seed: int, n_words: int) -> bytes:
    return struct.pack(f"<{n_words}Q", *splitmix64(seed, n_words))


def _splitmix64_bytes_np(seed: int, n_words: int) -> bytes | None:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a test/bench dependency only
        return None
    u64 = np.uint64
    z = np.arange(1, n_words + 1, dtype=u64)
    z *= u64(_GAMMA)  # array arithmetic wraps mod 2**64 silently
    z += u64(seed & _MASK64)
    z ^= z >> u64(30)
    z *= u64(_MIX1)
    z ^= z >> u64(27)
    z *= u64(_MIX2)
    z ^= z >> u64(31)
    return z.astype("<u8", copy=False).tobytes()


def splitmix64_bytes(seed: int, n_bytes: int, *, use_numpy: bool = True) -> bytes:
    """Return ``n_bytes`` of the SplitMix64 stream as little-endian uint64 words, truncated.

    Portable deterministic data for gear tables and test vectors. Uses numpy when it is
    importable (same bytes, much faster); otherwise pure Python.

    Args:
        seed: Initial state (taken mod 2**64).
        n_bytes: Length of the result.
        use_numpy: Set to False to force the pure-Python path (for tests).

    Returns:
        The bytes.

    Raises:
        ValueError: If ``n_bytes`` is negative.
    """
    if n_bytes < 0:
        raise ValueError("n_bytes must be >= 0")
    n_words = (n_bytes + 7) // 8
    data = _splitmix64_bytes_np(seed, n_words) if use_numpy else None
    if data is None:
        data = _splitmix64_bytes_py(seed, n_words)
    return data[:n_bytes]


def _validate_sizes(min_size: int, avg_size: int, max_size: int) -> None:
    for name, value in (("min_size", min_size), ("avg_size", avg_size), ("max_size", max_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {type(value).__name__}")
        if not _MIN_LIMIT <= value <= _MAX_LIMIT:
            raise ValueError(f"{name} must be in [64, 2**31], got {value}")
    if avg_size & (avg_size - 1):
        raise ValueError(f"avg_size must be a power of two, got {avg_size}")
    if not min_size <= avg_size <= max_size:
        raise ValueError(
            f"need min_size <= avg_size <= max_size, got {min_size}, {avg_size}, {max_size}"
        )


@dataclass(frozen=True)
class ChunkerParams:
    """Chunking parameters; recorded in the repository config, part of the on-disk format.

    Attributes:
        algorithm: Algorithm name; only ``"fastcdc-gear-nc2-v1"`` exists.
        min_size: Minimum chunk size in bytes (except the last chunk of a stream).
        avg_size: Target average; a power of two, selects the masks.
        max_size: Maximum chunk size in bytes.
        gear_seed: SplitMix64 seed the 256-entry gear table is derived from.
    """

    algorithm: str = ALGORITHM
    min_size: int = 16 * 1024
    avg_size: int = 64 * 1024
    max_size: int = 256 * 1024
    gear_seed: int = 0x6D6F64656C73746F  # b"modelsto"

    def __post_init__(self) -> None:
        """Validate like the C type does.

        Raises:
            ValueError: On an unknown algorithm or out-of-range sizes.
        """
        if self.algorithm != ALGORITHM:
            raise ValueError(f"unknown chunking algorithm {self.algorithm!r}")
        _validate_sizes(self.min_size, self.avg_size, self.max_size)
        if (
            not isinstance(self.gear_seed, int)
            or isinstance(self.gear_seed, bool)
            or not 0 <= self.gear_seed <= _MASK64
        ):
            raise ValueError("gear_seed must be an int in [0, 2**64)")

    def gear_table(self) -> bytes:
        """Return the gear table: 256 little-endian uint64 from ``splitmix64(gear_seed, 256)``.

        Returns:
            2048 bytes.
        """
        return struct.pack("<256Q", *splitmix64(self.gear_seed, 256))

    def gear_digest(self) -> str:
        """Return the hex BLAKE3 digest of :meth:`gear_table`, recorded next to the parameters.

        Returns:
            64 hex characters.
        """
        return str(blake3.blake3(self.gear_table()).hexdigest())

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON/msgpack-friendly dict, including ``gear_digest``.

        Returns:
            The dict.
        """
        return {
            "algorithm": self.algorithm,
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "gear_seed": self.gear_seed,
            "gear_digest": self.gear_digest(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChunkerParams:
        """Parse and validate parameters written by :meth:`to_dict`.

        ``gear_digest`` is optional; when present it must match the derived table.

        Args:
            d: The mapping from the repository config.

        Returns:
            The parameters.

        Raises:
            FormatError: On missing or unknown keys, an unknown algorithm, invalid sizes, or a
                gear digest that does not match.
        """
        if not isinstance(d, Mapping):
            raise FormatError("chunker params: expected a mapping")
        keys = set(d)
        missing = _PARAM_KEYS - keys
        extra = keys - _PARAM_KEYS - {"gear_digest"}
        if missing:
            raise FormatError(f"chunker params: missing {sorted(missing)}")
        if extra:
            raise FormatError(f"chunker params: unknown keys {sorted(extra)}")
        if d["algorithm"] != ALGORITHM:
            raise FormatError(f"chunker params: unknown chunking algorithm {d['algorithm']!r}")
        try:
            params = cls(
                algorithm=d["algorithm"],
                min_size=d["min_size"],
                avg_size=d["avg_size"],
                max_size=d["max_size"],
                gear_seed=d["gear_seed"],
            )
        except ValueError as e:
            raise FormatError(f"chunker params: {e}") from e
        if "gear_digest" in d and d["gear_digest"] != params.gear_digest():
            raise FormatError("chunker params: gear_digest does not match the gear table")
        return params


class Chunker:
    """Push-style chunker: feed blocks of a stream, get chunk end offsets back.

    Boundaries do not depend on how the stream is split into blocks. One object must not be
    used from two threads at once (the C code raises RuntimeError); separate objects scan in
    parallel since the GIL is released.
    """

    __slots__ = ("_c", "params")

    def __init__(self, params: ChunkerParams) -> None:
        """Create a chunker.

        Args:
            params: The chunking parameters.
        """
        self.params = params
        self._c = _cdc.Chunker(
            params.gear_table(), params.min_size, params.avg_size, params.max_size
        )

    def feed(self, data: Buffer) -> list[int]:
        """Scan the next block of the stream.

        Args:
            data: Any contiguous buffer (bytes, bytearray, memoryview, numpy array).

        Returns:
            Exclusive end offsets of the chunks that end inside ``data``, relative to its start,
            increasing. A chunk may have started in an earlier block.
        """
        return self._c.feed(data)

    def finish(self) -> int:
        """End the stream and reset for reuse.

        Returns:
            The length of the last, partial chunk (0 if the stream ended on a boundary).
        """
        return self._c.finish()

    def reset(self) -> None:
        """Discard the current partial chunk and start a new stream."""
        self._c.reset()


def cut_points(data: Buffer, params: ChunkerParams) -> list[int]:
    """Chunk one whole buffer with the C chunker.

    Args:
        data: Any contiguous buffer.
        params: The chunking parameters.

    Returns:
        Absolute exclusive chunk end offsets; the last is ``len(data)`` unless it is empty.
    """
    c = Chunker(params)
    ends = c.feed(data)
    rest = c.finish()
    if rest:
        ends.append((ends[-1] if ends else 0) + rest)
    return ends


def iter_chunk_lengths(
    stream: BinaryIO, params: ChunkerParams, block_size: int = 8 << 20
) -> Iterator[int]:
    """Yield the chunk lengths of a binary stream, reading it in blocks into one reused buffer.

    Args:
        stream: A readable binary stream (``readinto`` is used when available).
        params: The chunking parameters.
        block_size: Read size in bytes.

    Yields:
        Chunk lengths in stream order; they sum to the stream length.

    Raises:
        ValueError: If ``block_size`` is not positive.
    """
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    chunker = Chunker(params)
    buf = bytearray(block_size)
    view = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    pending = 0  # bytes of the current chunk seen before the current block
    try:
        while True:
            if readinto is not None:
                n = readinto(view)
                if not n:
                    break
                block: Any = view[:n]
            else:
                block = stream.read(block_size)
                if not block:
                    break
                n = len(block)
            prev = 0
            for end in chunker.feed(block):
                yield pending + end - prev
                pending = 0
                prev = end
            pending += n - prev
        rest = chunker.finish()
        if rest:
            yield rest
    finally:
        view.release()


def reference_cut_points(data: bytes, params: ChunkerParams) -> list[int]:
    """Chunk ``data`` with a slow, obviously-correct pure-Python version of the algorithm.

    For cross-checking the C code on small inputs; do not use on large data.

    Args:
        data: The whole stream.
        params: The chunking parameters.

    Returns:
        Absolute exclusive chunk end offsets; the last is ``len(data)`` unless it is empty.
    """
    gear = struct.unpack("<256Q", params.gear_table())
    bits = params.avg_size.bit_length() - 1
    mask_s = (_MASK64 << (64 - (bits + 2))) & _MASK64
    mask_l = (_MASK64 << (64 - (bits - 2))) & _MASK64
    ends: list[int] = []
    pos = 0  # position of the current byte within its chunk
    h = 0
    for i, b in enumerate(data):
        cut = False
        if pos >= params.min_size:
            h = ((h << 1) + gear[b]) & _MASK64
            mask = mask_s if pos < params.avg_size else mask_l
            cut = h & mask == 0
        pos += 1
        if cut or pos == params.max_size:
            ends.append(i + 1)
            pos = 0
            h = 0
    if pos:
        ends.append(len(data))
    return ends
