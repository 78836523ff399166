"""Layer 3: the chunk store: files in, chunks deduplicated into packs, chunks out verified.

Ingest is a pipeline with bounded memory, whatever the file size:

1. the main thread reads the file into one of four reused block buffers (no fresh memory per
   block: first touch of new pages is ~20x slower than warm memory here) and runs the native
   chunker over it (the GIL is released while it scans);
2. worker threads hash each chunk (BLAKE3 releases the GIL), look it up in the chunk index, and
   compress only the new ones; a separate single thread hashes the whole file in order;
3. the main thread appends new chunks to the current pack; a full pack is finished (fsync,
   rename) and its index entries committed on a finisher thread, so disk flushes overlap work.

Write ordering (restic): a pack is durable and renamed into place before the transaction that
indexes its chunks commits; manifests, trees, commits and refs are written by the caller only
after ``ChunkSink.close`` returns. Every chunk read back is checked against its id.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct
import threading
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from blake3 import blake3

from modelstore import _planes
from modelstore.chunker import Chunker, ChunkerParams
from modelstore.compress import (
    CODEC_DELTA,
    CODEC_FEATURES,
    CODEC_NAMES,
    CODEC_PLANES,
    DELTA_HEAD,
    FEATURE_DELTA,
    FEATURE_PLANES,
    MAX_DELTA_DEPTH,
    PLANE_WIDTHS,
    CodecChooser,
    PlaneHint,
    apply_delta,
    compress_chunk,
    decompress_chunk,
    encode_delta,
    parse_delta,
)
from modelstore.errors import (
    CorruptObjectError,
    FormatError,
    MsError,
    ObjectNotFoundError,
    RepositoryFullError,
    StorageError,
)
from modelstore.fileio import BufferPool
from modelstore.ids import ChunkId, ObjectId
from modelstore.metadb import MetaDB, Txn
from modelstore.objects import (
    SEGMENT_CHUNKS,
    ChunkList,
    FileManifest,
    Segment,
    encode_object,
    pack_lengths,
)
from modelstore.pack import PackEntry, PackWriter
from modelstore.tensors import DTYPES, SeekableReader, TensorInfo, is_safetensors, read_header

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = [
    "CHUNK_LOC",
    "PACK_REC",
    "ChunkLoc",
    "ChunkSink",
    "ChunkStore",
    "DeltaPlan",
    "ManifestBuilder",
    "PackMissingError",
    "StoreStats",
    "decode_loc",
    "delta_plan",
    "storage_error",
]

#: chunk index value: version u8 | pack id (32) | offset u64 | stored len u32 | raw len u32 |
#: codec u8
CHUNK_LOC = struct.Struct("<B32sQIIB")
#: pack table value: version u8 | file size u64 | chunk count u32 | created (unix ns) i64
PACK_REC = struct.Struct("<BQIq")
BLOCK = 8 << 20
N_BUFFERS = 4
READ_BATCH = 64
#: a delta whose payload is at most this share of the chunk is kept without also trying the
#: plain codecs (plane-coded bf16 is ~0.67 of raw, fp32 ~0.84: a delta this small wins)
DELTA_SURE = 0.5
#: after a chunk that a delta did not pay for, the next this many of the block are stored
#: plainly without trying (neighbouring chunks are alike, as for the codec choice)
DELTA_RETRY = 15
ProgressFn = Callable[[int], None]
_T = TypeVar("_T")


class Readable(Protocol):
    """What ingest needs from a stream: ``readinto`` (raw files, BufferedReader, BytesIO)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class PackMissingError(CorruptObjectError):
    """A pack named by the chunk index is not on disk (moved away by gc, or lost)."""


@dataclass(frozen=True)
class ChunkLoc:
    """Where a chunk is stored."""

    pack_id: bytes
    offset: int
    stored_len: int
    raw_len: int
    codec: int


@dataclass(frozen=True)
class StoreStats:
    """Sizes of what the store holds."""

    chunks: int
    packs: int
    raw_bytes: int
    stored_bytes: int
    pack_bytes: int
    #: codec name -> (chunks, raw bytes, stored bytes)
    by_codec: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def storage_error(exc: OSError, doing: str) -> StorageError:
    """One clear error for an OS error while writing: a full disk says what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryFullError(
            f"no space left on the device while {doing}; free disk space and retry "
            "(everything already committed is intact)"
        )
    return StorageError(f"I/O error while {doing}: {exc.strerror or exc}")


def decode_loc(raw: bytes) -> ChunkLoc:
    """Parse a chunk index value, refusing unknown versions."""
    if len(raw) != CHUNK_LOC.size or raw[0] != 1:
        raise FormatError("chunk index entry has an unknown version or size (upgrade ms?)")
    _, pack_id, off, stored, rawlen, codec = CHUNK_LOC.unpack(raw)
    return ChunkLoc(pack_id, off, stored, rawlen, codec)


class ManifestBuilder:
    """Collects a file's chunk list into a manifest, one segment in memory at a time.

    ``store_segment`` receives each full ``ChunkList`` (4096 chunks) and returns its id:
    ingest hands it to the sink to be written; a scan only needs the id.
    """

    def __init__(self, store_segment: Callable[[ChunkList], ObjectId]) -> None:
        self._store = store_segment
        self._ids = bytearray()
        self._lens = array("I")
        self._bytes = 0
        self._segments: list[Segment] = []

    def add(self, chunk_id: bytes, length: int) -> None:
        """Append the next chunk."""
        self._ids.extend(chunk_id)
        self._lens.append(length)
        self._bytes += length
        if len(self._lens) == SEGMENT_CHUNKS:
            self._flush()

    def _flush(self) -> None:
        cl = ChunkList(bytes(self._ids), pack_lengths(self._lens))
        self._segments.append(Segment(self._store(cl), self._bytes, len(self._lens)))
        self._ids.clear()
        del self._lens[:]
        self._bytes = 0

    def finish(self, size: int, content_hash: bytes) -> FileManifest:
        """The manifest: chunks inline, or segments once one segment has filled."""
        if self._segments and self._lens:
            self._flush()
        if self._segments:
            return FileManifest(size, content_hash, segments=tuple(self._segments))
        return FileManifest(size, content_hash, bytes(self._ids), pack_lengths(self._lens))


def forced_cuts(stream: object) -> list[int]:
    """Offsets where tensor-aware chunking must end a chunk (docs/FORMAT.md §5.5); [] if none.

    A seekable stream that :func:`modelstore.tensors.read_header` accepts as a whole
    safetensors file, or a GGUF v2/v3 file whose metadata parses, is cut where its data area
    starts and where each tensor's data starts, so an unchanged tensor gives the same chunks
    wherever it sits. Anything else (not seekable,
    not safetensors, a header it refuses) gets plain content-defined chunking. The stream
    position is restored.
    """
    return _peek(stream, _cuts, [])


def _peek(stream: object, read: Callable[[SeekableReader], _T], default: _T) -> _T:
    """``read(stream)`` when the stream is seekable, its position restored after.

    ``default`` when it is not seekable or ``read`` finds no format it knows there (a header
    refused, a short file): the caller then treats the stream as plain bytes.
    """
    seekable = getattr(stream, "seekable", None)
    try:
        if seekable is None or not seekable():
            return default
        f = cast("SeekableReader", stream)
        pos = f.tell()
    except (OSError, ValueError):
        return default
    try:
        return read(f)
    except (FormatError, OSError, ValueError, struct.error):
        return default
    finally:
        try:
            f.seek(pos)
        except (OSError, ValueError):
            pass


def _cuts(f: SeekableReader) -> list[int]:
    size = f.seek(0, os.SEEK_END)
    head = _read_head(f)
    if head[:4] == b"GGUF":
        starts = _gguf_starts(f, size)
    elif is_safetensors(f):
        infos, _ = read_header(f)
        (n,) = struct.unpack("<Q", head)
        starts = [8 + n, *(t.start for t in infos)]
    else:
        return []
    return sorted({c for c in starts if 0 < c < size})


def _tensors(f: SeekableReader) -> tuple[list[TensorInfo], int] | None:
    """A safetensors file's tensors and size; None for anything else."""
    size = f.seek(0, os.SEEK_END)
    return (read_header(f)[0], size) if is_safetensors(f) else None


@dataclass
class DeltaPlan:
    """How a safetensors file's tensors line up with the chunks of its previous version.

    Each region is the data of one tensor that has a tensor of the same name, dtype and shape
    in the base file, up to the next tensor start (or the end): ``(start, end, base_start,
    width)``, sorted, where ``width`` is the element size (0: not 2, 4 or 8). Inside a region
    the new file is cut exactly where the base file's chunks end, so each chunk has one base
    chunk of the same length and unchanged stretches dedup exactly (docs/FORMAT.md §8.2).
    ``ids``/``offs``: the base file's chunk ids (32 bytes each) and chunk start offsets
    (one more than chunks), kept compact: ~40 bytes a chunk.
    """

    regions: list[tuple[int, int, int, int]]
    ids: bytes
    offs: array[int]

    def ends(self, region: int) -> deque[int]:
        """The chunk ends (absolute, in the new file) inside region ``region``."""
        start, end, bstart, _ = self.regions[region]
        i = bisect.bisect_left(self.offs, bstart)
        j = bisect.bisect_left(self.offs, bstart + end - start)
        return deque(self.offs[k] - bstart + start for k in range(i + 1, j + 1))

    def base_at(self, offset: int, length: int) -> tuple[bytes, int, int] | None:
        """``(base chunk id, element width, phase)`` for the new chunk at ``offset``.

        None when the chunk is not one of a region's inherited chunks of that length.
        """
        r = bisect.bisect_right(self.regions, (offset, 1 << 62)) - 1
        if r < 0:
            return None
        start, end, bstart, width = self.regions[r]
        if not start <= offset < end:
            return None
        b = offset - start + bstart
        k = bisect.bisect_left(self.offs, b)
        if k + 1 >= len(self.offs) or self.offs[k] != b or self.offs[k + 1] - b != length:
            return None
        phase = (start - offset) % width if width else 0
        return self.ids[32 * k : 32 * k + 32], width, phase


def _regions(infos: list[TensorInfo], size: int) -> dict[str, tuple[TensorInfo, int, int]]:
    """Each tensor's region: from its start to the next tensor start, or to the end."""
    starts = sorted({t.start for t in infos} | {size})
    out = {}
    for t in infos:
        nxt = starts[bisect.bisect_right(starts, t.start)] if t.start < size else size
        out[t.name] = (t, t.start, nxt)
    return out


def delta_plan(
    stream: object,
    base_infos: list[TensorInfo],
    base_size: int,
    base_chunks: Iterable[tuple[bytes, int]],
) -> DeltaPlan | None:
    """Line up a safetensors ``stream`` with its base file (tensors, size, chunk list).

    None when the stream is not a safetensors file, or no tensor has a twin (same name,
    dtype and shape) whose region in the base starts and ends on chunk boundaries. The
    stream position is restored.
    """
    found = _peek(stream, _tensors, None)
    if found is None:
        return None
    infos, size = found
    ids = bytearray()
    offs = array("Q", [0])
    for cid, n in base_chunks:
        ids += cid
        offs.append(offs[-1] + n)
    if offs[-1] != base_size:
        return None
    base = _regions(base_infos, base_size)
    regions = []
    for t, start, end in _regions(infos, size).values():
        twin = base.get(t.name)
        if twin is None or end <= start:
            continue
        bt, bstart, bend = twin
        if (bt.dtype, bt.shape) != (t.dtype, t.shape) or bend - bstart != end - start:
            continue
        i = bisect.bisect_left(offs, bstart)
        j = bisect.bisect_left(offs, bend)
        if i >= len(offs) or j >= len(offs) or offs[i] != bstart or offs[j] != bend:
            continue  # the base was not cut at this tensor (plain CDC): no aligned chunks
        dt = DTYPES.get(t.dtype)
        width = dt.itemsize if dt is not None and dt.itemsize in PLANE_WIDTHS else 0
        regions.append((start, end, bstart, width))
    if not regions:
        return None
    regions.sort()
    return DeltaPlan(regions, bytes(ids), offs)


class _Cutter:
    """Chunk ends for a stream, block by block: content-defined, forced cuts, inherited ends.

    At each forced offset the chunker is finished and so starts afresh; a forced offset that
    starts a :class:`DeltaPlan` region switches to the region's inherited ends (the chunker
    is not fed there) until the region ends.
    """

    def __init__(self, chunker: Chunker, cuts: list[int], plan: DeltaPlan | None) -> None:
        self.chunker = chunker
        self.cuts = cuts
        self.i = 0
        self.plan = plan
        self.starts = {r[0]: k for k, r in enumerate(plan.regions)} if plan else {}
        self.inside: deque[int] = deque()

    def block(self, new: memoryview, pos: int, eof: bool) -> list[int]:
        """Chunk ends inside ``new`` (the stream's bytes from ``pos`` on), relative to it.

        Ends are increasing, in ``[0, len(new)]``; 0 ends a chunk held over from earlier
        blocks.
        """
        if self.plan is None:
            plain, self.i = _cut_block(self.chunker, new, pos, self.cuts, self.i, eof)
            return plain
        n = len(new)
        top = pos + n
        ends: list[int] = []
        off = 0
        cuts = self.cuts
        while True:
            if self.inside:
                while self.inside and self.inside[0] <= top:
                    ends.append(self.inside.popleft() - pos)
                if self.inside:
                    break
                off = ends[-1]
            while self.i < len(cuts) and cuts[self.i] < pos + off:
                self.i += 1
            if self.i < len(cuts) and cuts[self.i] <= top:
                c = cuts[self.i] - pos
                self.i += 1
                ends.extend(off + e for e in self.chunker.feed(new[off:c]))
                if self.chunker.finish():
                    ends.append(c)
                off = c
                r = self.starts.get(pos + c)
                if r is not None:
                    self.inside = self.plan.ends(r)
                continue
            ends.extend(off + e for e in self.chunker.feed(new[off:]))
            break
        if eof:
            if self.inside:  # the file ended early (it changed while being read)
                self.inside.clear()
                if not ends or ends[-1] != n:
                    ends.append(n)
            elif self.chunker.finish():
                ends.append(n)
        return ends


#: float dtypes of safetensors and their element width: their chunks are split into planes
FLOAT_WIDTHS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def float_regions(stream: object) -> list[tuple[int, int, int]]:
    """``(start, end, width)`` of every float tensor's data in a safetensors stream, sorted.

    The dtype is known from the header, so the codec needs no guess from a sample for these
    chunks (docs/FORMAT.md §8); [] for anything else. The stream position is restored.
    """
    found = _peek(stream, _tensors, None)
    if found is None:
        return []
    infos = found[0]
    return sorted(
        (t.start, t.end, FLOAT_WIDTHS[t.dtype])
        for t in infos
        if t.dtype in FLOAT_WIDTHS and t.end > t.start
    )


def _float_hint(floats: list[tuple[int, int, int]], offset: int, length: int) -> PlaneHint | None:
    """The plane split for the chunk at ``offset`` when it lies inside one float tensor."""
    r = bisect.bisect_right(floats, (offset, 1 << 62, 0)) - 1
    if r < 0:
        return None
    start, end, width = floats[r]
    if offset + length > end:
        return None
    return PlaneHint(width, (start - offset) % width)


def _plane_coding(payload: bytes | memoryview) -> tuple[bool, ...]:
    """Which planes of a tag-2 payload are zstd-coded (its plane table, §8.1)."""
    mv = memoryview(payload)
    return tuple(mv[4 + 5 * j] == 1 for j in range(mv[0]))


def _read_head(f: SeekableReader) -> bytes:
    f.seek(0)
    return f.read(8) or b""


#: GGUF metadata value sizes by type (fixed-size types; 8 = string, 9 = array)
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_MAX_META = 256 << 20  # metadata + tensor infos; real files have a few MB (tokenizers)
_GGUF_MAX_DIMS = 8


class _Cursor:
    """Buffered little-endian reads from offset 0 of ``f``, refusing past ``limit`` bytes."""

    def __init__(self, f: SeekableReader, limit: int) -> None:
        self.f, self.limit = f, limit
        self.buf = b""
        self.at = 0  # read position in buf
        self.base = 0  # file offset of buf[0]
        f.seek(0)

    @property
    def pos(self) -> int:
        return self.base + self.at

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.limit:
            raise FormatError("GGUF: metadata runs past its limit")
        while len(self.buf) - self.at < n:
            more = self.f.read(max(1 << 20, n))
            if not more:
                raise FormatError("GGUF: the file ends inside the metadata")
            self.base += self.at
            self.buf = self.buf[self.at :] + more
            self.at = 0
        out = self.buf[self.at : self.at + n]
        self.at += n
        return out

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.u64())


def _gguf_skip(c: _Cursor, vtype: int) -> None:
    if vtype in _GGUF_FIXED:
        c.take(_GGUF_FIXED[vtype])
    elif vtype == 8:
        c.string()
    elif vtype == 9:
        etype, count = c.u32(), c.u64()
        if etype in _GGUF_FIXED:
            c.take(count * _GGUF_FIXED[etype])
        elif etype == 8:
            if count > c.limit:
                raise FormatError("GGUF: array too long")
            for _ in range(count):
                c.string()
        else:  # nested arrays: not used by real files
            raise FormatError(f"GGUF: array of type {etype}")
    else:
        raise FormatError(f"GGUF: unknown value type {vtype}")


def _gguf_starts(f: SeekableReader, size: int) -> list[int]:
    """Start of the tensor data and of each tensor in a GGUF v2/v3 file (docs/FORMAT.md §5.5)."""
    c = _Cursor(f, min(size, _GGUF_MAX_META))
    c.take(4)
    if c.u32() not in (2, 3):
        raise FormatError("GGUF: only versions 2 and 3")
    n_tensors, n_kv = c.u64(), c.u64()
    if n_tensors > c.limit or n_kv > c.limit:
        raise FormatError("GGUF: counts too large")
    align = 32
    for _ in range(n_kv):
        key = c.string()
        vtype = c.u32()
        if key == b"general.alignment" and vtype == 4:
            align = c.u32()
        else:
            _gguf_skip(c, vtype)
    if align <= 0 or align & (align - 1):
        raise FormatError("GGUF: alignment must be a power of two")
    offsets = []
    for _ in range(n_tensors):
        c.string()
        n_dims = c.u32()
        if n_dims > _GGUF_MAX_DIMS:
            raise FormatError("GGUF: too many dimensions")
        c.take(8 * n_dims + 4)  # dims, ggml type
        offsets.append(c.u64())
    data = -(-c.pos // align) * align
    if data > size or any(data + o > size for o in offsets):
        raise FormatError("GGUF: tensor data runs past the end of the file")
    return [data, *(data + o for o in offsets)]


def _cut_block(
    chunker: Chunker, new: memoryview, pos: int, cuts: list[int], i: int, eof: bool
) -> tuple[list[int], int]:
    """Chunk ends inside ``new`` (the stream's bytes from ``pos`` on), also at forced cuts.

    ``cuts[i:]`` are the forced offsets not reached yet; returns the ends (relative to
    ``new``, increasing, in ``[0, len(new)]``; 0 ends a chunk held over from earlier blocks)
    and the new ``i``. At each forced offset the chunker is finished and so starts afresh.
    """
    n = len(new)
    if i >= len(cuts) or cuts[i] > pos + n:  # the common case: no forced cut in this block
        ends = chunker.feed(new)
    else:
        ends = []
        off = 0
        while i < len(cuts) and cuts[i] <= pos + n:
            c = cuts[i] - pos
            i += 1
            if c < off:
                continue
            ends.extend(off + e for e in chunker.feed(new[off:c]))
            if chunker.finish():
                ends.append(c)
            off = c
        ends.extend(off + e for e in chunker.feed(new[off:]))
    if eof and chunker.finish():
        ends.append(n)
    return ends, i


def _fill(stream: Readable, view: memoryview, what: str) -> tuple[int, bool]:
    """Read into ``view`` until it is full or the stream ends: ``(bytes read, at end)``."""
    n = 0
    while n < len(view):
        try:
            got = stream.readinto(view[n:])
        except OSError as exc:
            raise StorageError(f"cannot read the file being {what}: {exc}") from None
        if not got:
            return n, True
        n += got
    return n, False


class ChunkSink:
    """Collects new chunks of one logical operation into packs (see the module docstring)."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.pending: set[bytes] = set()
        self._objects: list[tuple[ObjectId, bytes]] = []
        self._writer: PackWriter | None = None
        from concurrent.futures import ThreadPoolExecutor  # lazy: status needs no threads

        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="ms-pack")
        self._finishing: deque[Future[None]] = deque()
        self.new_chunks = 0
        self.new_bytes = 0

    def add(self, chunk_id: bytes, codec: int, payload: bytes | memoryview, raw_len: int) -> None:
        """Append a chunk unless this operation already stored it."""
        if chunk_id in self.pending:
            return
        self.pending.add(chunk_id)
        w = self._writer
        if w is None:
            w = self._writer = PackWriter(
                self.store.tmp_dir, os.urandom(8).hex(), self.store.buffers, self.store.writer
            )
        w.add(ChunkId(chunk_id), codec, payload, raw_len)
        self.new_chunks += 1
        self.new_bytes += 1 + len(payload)
        if w.size >= self.store.pack_size:
            self._rotate()

    def add_object(self, obj: ChunkList) -> ObjectId:
        """Store a chunk-list object soon (batched on the finisher thread); return its id.

        It may be written before the packs holding its chunks are durable: nothing reaches it
        until the manifest naming it is committed, after ``close``.
        """
        oid, stored = encode_object(obj)
        self._objects.append((oid, stored))
        if len(self._objects) >= 4:
            self._flush_objects()
        return oid

    def _flush_objects(self) -> None:
        objs, self._objects = self._objects, []
        if not objs:
            return

        def put(txn: Txn) -> None:
            for oid, stored in objs:
                txn.put("objects", oid, stored, overwrite=False)

        self._finishing.append(self._finisher.submit(self.store.db.write, put))

    def _rotate(self) -> None:
        w, self._writer = self._writer, None
        if w is None or not w.entries:
            if w is not None:
                w.abort()
            return
        # keep at most one finished-but-unflushed pack queued: bounds dirty page-cache growth
        while len(self._finishing) >= 2:
            self._finishing.popleft().result()
        self._finishing.append(self._finisher.submit(self._finish_pack, w))

    def _finish_pack(self, w: PackWriter) -> None:
        self.store._commit_pack(w)
        # Indexed now: lookups find these chunks in LMDB, so the in-memory set only needs the
        # chunks of packs not yet committed. This keeps memory flat whatever the file size.
        for e in w.entries:
            self.pending.discard(e.chunk_id)

    def close(self) -> None:
        """Flush the last pack and wait until every pack is durable and indexed."""
        try:
            self._rotate()
            self._flush_objects()
            while self._finishing:
                self._finishing.popleft().result()
        finally:
            self._finisher.shutdown(wait=True)

    def abort(self) -> None:
        """Drop the pack being written; packs already finished stay (gc reclaims them)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        for f in self._finishing:
            try:
                f.result()
            except Exception:
                pass
        self._finisher.shutdown(wait=True)


class ChunkStore:
    """Packs under ``root/packs``, the chunk index in the metadata DB."""

    def __init__(
        self,
        root: Path,
        db: MetaDB,
        params: ChunkerParams,
        pack_size: int,
        threads: int | None = None,
    ) -> None:
        self.root = root
        self.db = db
        self.params = params
        self.pack_size = pack_size
        self.packs_dir = root / "packs"
        self.tmp_dir = root / "tmp"
        self.threads = threads or min(4, os.cpu_count() or 2)
        self._pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._buffers: BufferPool | None = None
        self._fds: OrderedDict[bytes, int] = OrderedDict()
        self._fd_lock = threading.Lock()
        self._pid = os.getpid()
        #: for a lazy clone: chunk id -> (stored bytes, location) fetched from the remote
        self.fallback: Callable[[bytes], tuple[bytes, ChunkLoc] | None] | None = None
        #: new chunks may use the byte-plane codec (the repository has ``codec-planes-v1``)
        self.planes = False
        #: also cut safetensors files at tensor starts (``chunking-tensor-aware-v1``, §5.5)
        self.tensor_aware = False
        #: new chunks may be XOR deltas against a base chunk (``codec-xor-delta-v1``, §8.2)
        self.delta = False
        #: the longest delta chain written before a full copy (a repository setting)
        self.delta_depth = 2
        self._chain = threading.local()  # delta decode depth of this thread

    # -- plumbing ---------------------------------------------------------------------------
    def allows(self, codec: int) -> bool:
        """Whether this repository's features let it hold a chunk of ``codec``."""
        have = {FEATURE_PLANES: self.planes, FEATURE_DELTA: self.delta}
        return all(have.get(f, False) for f in CODEC_FEATURES.get(codec, ()))

    def _after_fork(self) -> None:
        """In a forked child, forget the parent's threads and locks (they do not exist here).

        A child that used the parent's pools would wait forever on threads that were not
        forked; descriptors are reopened too, since a parent thread may have held the lock.
        """
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._pool = self._read_pool = self._writer = None
        self._buffers = None
        self._fd_lock = threading.Lock()
        self._fds = OrderedDict()

    @property
    def buffers(self) -> BufferPool:
        """Reused page-aligned buffers for direct (O_DIRECT) file writes."""
        self._after_fork()
        if self._buffers is None:
            self._buffers = BufferPool(4)
        return self._buffers

    @property
    def writer(self) -> ThreadPoolExecutor:
        """One thread that performs direct writes in order (packs, checked-out files)."""
        self._after_fork()
        if self._writer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._writer = ThreadPoolExecutor(1, thread_name_prefix="ms-write")
        return self._writer

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The shared worker pool (created on first use; recreated in a forked child)."""
        self._after_fork()
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ms-chunk")
        return self._pool

    @property
    def read_pool(self) -> ThreadPoolExecutor:
        """Threads that decode chunks for a reader, one core fewer than there are.

        The reader's own thread writes what they decode (and a checkout's writer thread
        flushes it): on 2 cores, 2 decoders fight over the GIL and run slower than one
        (checkout 0.61 vs 0.80 GB/s of plane-coded bf16; 0.36 vs 0.43 for depth-1 deltas).
        """
        self._after_fork()
        if self._read_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            n = self.threads
            self._read_pool = ThreadPoolExecutor(n, thread_name_prefix="ms-read")
        return self._read_pool

    def close(self) -> None:
        """Release threads and file descriptors."""
        for ex in (self._pool, self._read_pool, self._writer):
            if ex is not None:
                ex.shutdown(wait=True)
        self._pool = self._read_pool = self._writer = None
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def pack_path(self, pack_id: bytes) -> Path:
        """Where a pack lives."""
        h = pack_id.hex()
        return self.packs_dir / h[:2] / f"{h}.pack"

    def _pack_fd(self, pack_id: bytes) -> int:
        """A descriptor of the pack for the caller alone, who must close it.

        It is a ``dup`` of the cached one: another thread may close the cached descriptor at
        any moment (LRU eviction, ``forget_pack``) and its number be reused for another pack,
        which made parallel reads over more than 64 packs read the wrong pack now and then.
        """
        self._after_fork()
        with self._fd_lock:
            fd = self._fds.get(pack_id)
            if fd is not None:
                self._fds.move_to_end(pack_id)
            else:
                path = self.pack_path(pack_id)  # pathlib: ~14 us, only on a miss
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    raise PackMissingError(
                        f"pack {pack_id.hex()[:16]} is missing from the repository ({path}; "
                        "run `ms verify`)"
                    ) from None
                except OSError as exc:
                    raise StorageError(f"cannot open pack {path}: {exc}") from None
                self._fds[pack_id] = fd
                if len(self._fds) > 64:
                    _, old = self._fds.popitem(last=False)
                    os.close(old)
            try:
                return os.dup(fd)
            except OSError as exc:
                raise StorageError(f"cannot open pack {self.pack_path(pack_id)}: {exc}") from None

    def forget_pack(self, pack_id: bytes) -> None:
        """Close a cached descriptor of a pack that gc deleted, so its disk space is freed."""
        self._after_fork()
        with self._fd_lock:
            fd = self._fds.pop(pack_id, None)
        if fd is not None:
            os.close(fd)

    def _commit_pack(self, writer: PackWriter) -> None:
        try:
            pack_hex, _ = writer.finish(self.packs_dir)
        except BaseException:
            writer.abort()  # a pack that could not be finished leaves no temporary file
            raise
        pack_id = bytes.fromhex(pack_hex)
        rec = PACK_REC.pack(1, writer.size, len(writer.entries), time.time_ns())
        entries: list[PackEntry] = writer.entries

        def index(txn: Txn) -> None:
            txn.put("packs", pack_id, rec)
            for e in entries:
                loc = CHUNK_LOC.pack(1, pack_id, e.offset, e.stored_len, e.raw_len, e.codec)
                txn.put("chunks", e.chunk_id, loc, overwrite=False)

        self.db.write(index)

    # -- reading ----------------------------------------------------------------------------
    def locate(self, txn: Txn, chunk_id: bytes) -> ChunkLoc | None:
        """The location of a chunk, or None."""
        raw = txn.get("chunks", chunk_id)
        return None if raw is None else decode_loc(raw)

    def has(self, txn: Txn, chunk_id: bytes) -> bool:
        """Whether the chunk is indexed."""
        return txn.has("chunks", chunk_id)

    def read_stored(self, loc: ChunkLoc) -> bytes:
        """The stored bytes (tag + payload) of a chunk, unverified."""
        fd = self._pack_fd(loc.pack_id)
        try:
            # never trust the index with a read size: an absurd entry must not allocate it
            if loc.offset + loc.stored_len > os.fstat(fd).st_size:
                raise CorruptObjectError(
                    f"pack {self.pack_path(loc.pack_id)} is truncated, or the chunk index is "
                    f"damaged: chunk at offset {loc.offset} ({loc.stored_len} bytes) lies past "
                    "its end (run `ms verify`)"
                )
            data = os.pread(fd, loc.stored_len, loc.offset)
        except OSError as exc:
            raise StorageError(
                f"I/O error reading pack {self.pack_path(loc.pack_id)} at offset {loc.offset}: "
                f"{exc.strerror or exc}"
            ) from None
        finally:
            os.close(fd)
        if len(data) != loc.stored_len:
            raise CorruptObjectError(
                f"pack {self.pack_path(loc.pack_id)} is truncated (chunk at offset {loc.offset})"
            )
        return data

    def read_current(self, chunk_id: bytes, loc: ChunkLoc) -> tuple[bytes, ChunkLoc] | None:
        """The stored bytes of a chunk located in an earlier snapshot, and where they were.

        If gc moved the chunk and deleted its old pack since that snapshot, the chunk is
        located again in a fresh one and read there, once: a reader running beside gc in
        another process survives it. ``None``: the chunk is no longer indexed.
        """
        try:
            return self.read_stored(loc), loc
        except PackMissingError:
            with self.db.read() as txn:
                fresh = self.locate(txn, chunk_id)
            if fresh == loc:
                raise
            if fresh is None:
                return None
            return self.read_stored(fresh), fresh

    def decode_verified(
        self,
        chunk_id: bytes,
        loc: ChunkLoc,
        stored: bytes,
        base: Callable[[bytes], bytes] | None = None,
        *,
        strict: bool = False,
    ) -> bytes:
        """Decompress stored bytes and check them against the chunk id.

        ``strict`` (``verify``): decode with python-zstandard, never the native batch decoder,
        so that a flipped bit an older system libzstd would ignore is still reported.

        A delta (tag 3) is applied to its base, read through ``base`` (verified) or, by
        default, from this store (or the lazy remote) without checking each link: the id of
        the result covers the whole chain, and only when it does not match is the chain
        decoded again link by link to name the damaged chunk. Chains longer than
        ``MAX_DELTA_DEPTH`` are refused, so a hostile or looping chain cannot recurse
        without end.
        """
        # the native batch decoder, for a batch of one (a delta with its whole chain)
        raw = self._decode_batch([(stored, loc)])[0] if base is None and not strict else None
        if raw is None:
            raw = self._decode(
                chunk_id, loc, stored, base or self._read_base_fast, native=not strict
            )
        if blake3(raw).digest() != chunk_id:
            if stored[0] == CODEC_DELTA and base is None:
                self._decode(chunk_id, loc, stored, self._read_base)  # names a bad base
            raise CorruptObjectError(
                f"chunk {chunk_id.hex()[:16]} in pack {loc.pack_id.hex()[:16]} does not match "
                "its hash: the pack is damaged (run `ms verify`)"
            )
        return raw

    def _decode(
        self,
        chunk_id: bytes,
        loc: ChunkLoc,
        stored: bytes,
        base: Callable[[bytes], bytes],
        native: bool = True,
    ) -> bytes:
        """Decode stored bytes (a delta through ``base``), unchecked."""
        if not stored or stored[0] != loc.codec:
            raise CorruptObjectError(
                f"chunk {chunk_id.hex()[:16]} in pack {loc.pack_id.hex()[:16]} has a bad codec tag"
            )
        if stored[0] != CODEC_DELTA:
            return decompress_chunk(stored[0], memoryview(stored)[1:], loc.raw_len, native=native)
        head = parse_delta(memoryview(stored)[1:])
        depth = getattr(self._chain, "depth", 0)
        if depth >= MAX_DELTA_DEPTH:
            raise CorruptObjectError(
                f"chunk {chunk_id.hex()[:16]}: its delta chain is longer than "
                f"{MAX_DELTA_DEPTH} (a damaged or looping chain; run `ms verify`)"
            )
        self._chain.depth = depth + 1
        try:
            base_raw = base(head.base_id)
        finally:
            self._chain.depth = depth
        return apply_delta(head, base_raw, loc.raw_len, native=native)

    def _read_base_fast(self, base_id: bytes) -> bytes:
        """A delta base's raw bytes, not checked (the delta's own id is, after)."""
        with self.db.read() as txn:
            loc = self.locate(txn, base_id)
        got = None if loc is None else self.read_current(base_id, loc)
        if got is None:
            return self._read_base(base_id)  # the lazy remote, or a clear error
        return self._decode(base_id, got[1], got[0], self._read_base_fast)

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """Read one chunk, verified (from the lazy remote when it is not here)."""
        with self.db.read() as txn:
            loc = self.locate(txn, chunk_id)
        got = None if loc is None else self.read_current(chunk_id, loc)
        if got is None:
            return self._missing(chunk_id)
        return self.decode_verified(chunk_id, got[1], got[0])

    def _read_base(self, base_id: bytes) -> bytes:
        try:
            return self.read_chunk(base_id)
        except ObjectNotFoundError:
            raise ObjectNotFoundError(
                f"delta base chunk {base_id.hex()[:16]} is not in the repository (run `ms verify`)"
            ) from None

    def delta_base(self, loc: ChunkLoc) -> bytes | None:
        """The base chunk id of a delta-coded chunk (its payload head), else None."""
        if loc.codec != CODEC_DELTA:
            return None
        n = min(1 + DELTA_HEAD.size, loc.stored_len)
        head = self.read_stored(ChunkLoc(loc.pack_id, loc.offset, n, loc.raw_len, loc.codec))
        return parse_delta(memoryview(head)[1:]).base_id

    def delta_closure(self, txn: Txn, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """The delta bases (transitively) of ``chunk_ids`` that are not among them.

        Bases are read from the payload heads of delta-coded chunks (34 bytes each);
        a base that is not indexed here is included but not followed.
        """
        have = set(chunk_ids)
        out: set[bytes] = set()
        todo = [c for c in have]
        while todo:
            nxt = []
            for cid in todo:
                loc = self.locate(txn, cid)
                if loc is None or loc.codec != CODEC_DELTA:
                    continue
                b = self.delta_base(loc)
                if b is not None and b not in have and b not in out:
                    out.add(b)
                    nxt.append(b)
            todo = nxt
        return out

    def _missing(self, chunk_id: bytes) -> bytes:
        """A chunk not stored here: fetched from the remote of a lazy clone, else an error."""
        if self.fallback is not None:
            got = self.fallback(chunk_id)
            if got is not None:
                stored, loc = got
                return self.decode_verified(chunk_id, loc, stored)
        raise ObjectNotFoundError(
            f"chunk {chunk_id.hex()[:16]} is not in the repository (run `ms verify`)"
        )

    def _read_batch(self, ids: list[bytes]) -> list[bytes]:
        """Read and verify a batch of chunks: decoded natively in one call when possible.

        A chunk the native path cannot decode, or whose result does not match its id, goes
        through ``decode_verified`` (which names what is damaged).
        """
        with self.db.read() as txn:
            locs = [self.locate(txn, c) for c in ids]
        got = [
            None if loc is None else self.read_current(cid, loc)
            for cid, loc in zip(ids, locs, strict=True)
        ]
        fast = self._decode_batch(got)
        out = []
        for cid, g, raw in zip(ids, got, fast, strict=True):
            if g is None:
                out.append(self._missing(cid))
            elif raw is not None and blake3(raw).digest() == cid:
                out.append(raw)
            else:
                out.append(self.decode_verified(cid, g[1], g[0]))
        return out

    def _decode_batch(self, got: list[tuple[bytes, ChunkLoc] | None]) -> list[bytes | None]:
        """Decode stored chunks (deltas with their chains) in one native call, unchecked.

        The chains are gathered a level at a time (one transaction per level for the whole
        batch), then ``_planes.decode_many`` decodes them all with the GIL released once, so
        that two reader threads really decode in parallel. None where it cannot.
        """
        fast: list[bytes | None] = [None] * len(got)
        if not _planes.have_zstd:
            return fast
        layers: dict[int, list[tuple[int, bytes | memoryview]]] = {}
        cur: dict[int, bytes] = {}
        for i, g in enumerate(got):
            if g is not None and g[0] and g[0][0] == g[1].codec:
                layers[i], cur[i] = [], g[0]
        for _ in range(MAX_DELTA_DEPTH + 1):
            need: dict[int, bytes] = {}
            for i, st in list(cur.items()):
                if st[0] != CODEC_DELTA:
                    layers[i].append((st[0], memoryview(st)[1:]))
                    del cur[i]
                    continue
                try:
                    head = parse_delta(memoryview(st)[1:])
                except MsError:
                    head = None
                if head is None or len(layers[i]) >= MAX_DELTA_DEPTH:
                    del cur[i], layers[i]
                    continue
                layers[i].append((head.inner, head.body))
                need[i] = head.base_id
            if not need:
                break
            with self.db.read() as txn:
                blocs = {i: self.locate(txn, b) for i, b in need.items()}
            for i, bloc in blocs.items():
                g = got[i]
                assert g is not None
                try:
                    ok = bloc is not None and bloc.raw_len == g[1].raw_len
                    bg = self.read_current(need[i], bloc) if bloc is not None and ok else None
                except MsError:
                    bg = None
                if bg is None or not bg[0] or bg[0][0] != bg[1].codec:
                    del cur[i], layers[i]
                else:
                    cur[i] = bg[0]
        for i in cur:  # chains longer than the bound: the slow path refuses them
            layers.pop(i, None)
        order = sorted(layers)
        jobs = []
        for i in order:
            g = got[i]
            assert g is not None
            jobs.append((layers[i], g[1].raw_len))
        for i, raw in zip(order, _planes.decode_many(jobs), strict=True):
            fast[i] = raw if isinstance(raw, bytes) else None
        return fast

    def iter_chunks(self, chunk_ids: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the raw bytes of chunks in order, decoded in parallel, verified.

        At most a few batches are in flight, so memory stays bounded for any file size.
        """
        pending: deque[Future[list[bytes]]] = deque()
        batch: list[bytes] = []
        for cid in chunk_ids:
            batch.append(cid)
            if len(batch) >= READ_BATCH:
                pending.append(self.read_pool.submit(self._read_batch, batch))
                batch = []
                if len(pending) > 2 * self.threads:
                    yield from pending.popleft().result()
        if batch:
            pending.append(self.read_pool.submit(self._read_batch, batch))
        while pending:
            yield from pending.popleft().result()

    # -- writing ----------------------------------------------------------------------------
    def sink(self) -> ChunkSink:
        """Start collecting new chunks for one logical operation."""
        self.tmp_dir.mkdir(exist_ok=True)
        return ChunkSink(self)

    def _process_block(
        self,
        view: memoryview,
        ends: list[int],
        pending: set[bytes],
        at: int = 0,
        plan: DeltaPlan | None = None,
        floats: list[tuple[int, int, int]] | None = None,
    ) -> list[tuple[bytes, int, int, bytes | memoryview | None]]:
        """Hash, dedup and encode the chunks of one block; ``at``: the file offset of view[0].

        ``floats``: the float tensors of the file (``float_regions``): their chunks are split
        into planes by their dtype, without estimating from a sample.
        """
        out: list[tuple[bytes, int, int, bytes | memoryview | None]] = []
        start = 0
        # neighbouring chunks of a file are alike: codec decisions carry over within a block
        chooser = CodecChooser(self.planes)
        skip = 0  # chunks to store plainly before trying a delta again
        coded: dict[int, tuple[tuple[bool, ...], int]] = {}  # width -> (planes coded, uses)
        bases: dict[bytes, tuple[bytes, int] | None] = {}  # prefetched: raw bytes, depth
        ahead = 1  # bases to fetch at once: doubles while deltas pay, back to 1 when not
        with self.db.read() as txn:
            todo = []  # (start, end, chunk id, twin) of the chunks not stored yet
            for end in ends:
                cid = blake3(view[start:end]).digest()
                if cid in pending or txn.get("chunks", cid) is not None:
                    out.append((cid, end - start, -1, None))
                else:
                    twin = None if plan is None else plan.base_at(at + start, end - start)
                    todo.append((start, end, cid, twin))
                    out.append((cid, end - start, -2, None))  # filled in below
                start = end
            slot = [k for k, o in enumerate(out) if o[2] == -2]
            for j, (start, end, cid, twin) in enumerate(todo):
                piece = view[start:end]
                got = None
                if twin is not None and skip:
                    skip -= 1
                elif twin is not None:
                    if twin[0] not in bases:  # this base and the next ones, decoded at once
                        more = [
                            (t[3][0], t[1] - t[0]) for t in todo[j : j + ahead] if t[3] is not None
                        ]
                        bases.update(self._fetch_bases(txn, more))
                    got = self._encode_delta(piece, twin, bases.get(twin[0]))
                    if got is None or got[0] != CODEC_DELTA:
                        # a new model at the same path, or a keyframe: deltas do not pay
                        # here, and trying costs a base decode and two encodings per chunk
                        skip, ahead = DELTA_RETRY, 1
                    else:
                        ahead = min(2 * ahead, 16)
                if got is None and floats:
                    hint = _float_hint(floats, at + start, end - start)
                    if hint is not None:
                        # which planes to code carries over within the block, as the codec
                        # choice does (sampled again every CodecChooser.RECHECK chunks)
                        known = coded.get(hint.width)
                        fresh = known is None or known[1] >= CodecChooser.RECHECK
                        if known is not None and not fresh:
                            hint = hint._replace(coded=known[0])
                            coded[hint.width] = (known[0], known[1] + 1)
                        got = compress_chunk(piece, hint=hint, planes=True)
                        if fresh and got[0] == CODEC_PLANES:
                            coded[hint.width] = (_plane_coding(got[1]), 0)
                if got is None:
                    got = chooser.compress(piece, start)
                out[slot[j]] = (cid, end - start, got[0], got[1])
        return out

    def _fetch_bases(
        self, txn: Txn, wanted: list[tuple[bytes, int]]
    ) -> dict[bytes, tuple[bytes, int] | None]:
        """Delta bases ``(id, length)``, read and decoded in one native batch, each checked.

        Per id: its raw bytes and its depth, or None when it cannot serve (not stored here,
        another length, or its chain already ``delta_depth`` long: the chunk becomes a
        keyframe). A base that does not decode to its id here goes through
        ``decode_verified``, which names the damage.
        """
        out: dict[bytes, tuple[bytes, int] | None] = {}
        got: list[tuple[bytes, ChunkLoc] | None] = []
        depths: list[int] = []
        for b, length in wanted:
            loc = self.locate(txn, b)
            g = None if loc is None or loc.raw_len != length else self.read_current(b, loc)
            depth = 0
            if g is not None and g[0][:1] == bytes([CODEC_DELTA]):
                depth = parse_delta(memoryview(g[0])[1:]).depth
            got.append(None if depth >= self.delta_depth else g)
            depths.append(depth)
        for (b, _), g, depth, raw in zip(wanted, got, depths, self._decode_batch(got), strict=True):
            if g is None:
                out[b] = None
                continue
            if raw is None or blake3(raw).digest() != b:
                raw = self.decode_verified(b, g[1], g[0])
            out[b] = (raw, depth)
        return out

    def _encode_delta(
        self,
        piece: memoryview,
        twin: tuple[bytes, int, int],
        base: tuple[bytes, int] | None,
    ) -> tuple[int, bytes | memoryview] | None:
        """Encode ``piece`` as a delta against its twin's base when that is smaller than plain.

        ``base``: the base's raw bytes and depth (``_fetch_bases``). None: no delta (the base
        is not stored here, or a delta would make its chain longer than ``delta_depth``: the
        chunk is then stored whole, a keyframe). A delta of at most ``DELTA_SURE`` of the
        chunk is kept at once; otherwise the plain encoding is made too and the smaller kept.
        """
        if base is None:
            return None
        base_id, width, phase = twin
        base_raw, depth = base
        # every plane of the residual is tried with zstd and kept coded only if smaller: that
        # is GIL-free, where sampling entropies first is numpy work that holds the GIL
        hint = PlaneHint(width, phase, False, (True,) * width) if width else None
        payload = encode_delta(piece, base_raw, base_id, depth + 1, hint)
        if len(payload) > len(piece) * DELTA_SURE:
            codec, plain = CodecChooser(self.planes).compress(piece, 0)
            if len(plain) <= len(payload):
                return codec, plain
        return CODEC_DELTA, payload

    def ingest(
        self,
        stream: Readable,
        sink: ChunkSink,
        progress: ProgressFn | None = None,
        plan: DeltaPlan | None = None,
    ) -> FileManifest:
        """Chunk, hash, dedup and store a stream; return its manifest.

        With a ``plan`` (and the ``codec-xor-delta-v1`` feature), tensors that have a twin in
        the previous version are cut like it and their changed chunks stored as deltas.
        """
        cuts = forced_cuts(stream) if self.tensor_aware else []
        if not (self.delta and cuts):
            plan = None
        floats = float_regions(stream) if self.planes and cuts else []
        cutter = _Cutter(Chunker(self.params), cuts, plan)
        file_hash = blake3()
        cap = BLOCK + self.params.max_size
        # a small file gets small block buffers: zero-filling 4 x 8 MiB for each of thousands
        # of small files made `ms add` take ~25 ms per file (boundaries do not depend on the
        # block size, and a file that grows meanwhile just takes more blocks)
        fileno = getattr(stream, "fileno", None)
        if fileno is not None:
            try:
                cap = min(cap, os.fstat(fileno()).st_size + self.params.max_size + 1)
            except (OSError, ValueError):
                pass
        bufs = [bytearray(cap) for _ in range(N_BUFFERS)]
        inflight: deque[
            tuple[Future[list[tuple[bytes, int, int, bytes | memoryview | None]]], Future[None]]
        ] = deque()
        from concurrent.futures import ThreadPoolExecutor

        hasher_pool = ThreadPoolExecutor(1, thread_name_prefix="ms-filehash")
        pool = self.pool
        size = 0

        # a full segment goes to the DB now (via the sink), so memory stays flat
        manifest = ManifestBuilder(sink.add_object)

        def consume() -> None:
            fut, hfut = inflight.popleft()
            for cid, length, codec, payload in fut.result():
                manifest.add(cid, length)
                if payload is not None:
                    sink.add(cid, codec, payload, length)
            hfut.result()

        try:
            tail = 0
            prev: memoryview | None = None
            prev_end = 0
            block_no = 0
            eof = False
            while not eof:
                while len(inflight) >= N_BUFFERS - 1:
                    consume()
                mv = memoryview(bufs[block_no % N_BUFFERS])
                block_no += 1
                if tail and prev is not None:
                    mv[:tail] = prev[prev_end - tail : prev_end]
                n, eof = _fill(stream, mv[tail:cap], "added")
                new = mv[tail : tail + n]
                ends = [tail + c for c in cutter.block(new, size, eof)]
                at = size - tail
                size += n
                hfut = hasher_pool.submit(_update, file_hash, new)
                fut = pool.submit(self._process_block, mv, ends, sink.pending, at, plan, floats)
                inflight.append((fut, hfut))
                prev, prev_end = mv, tail + n
                tail = prev_end - (ends[-1] if ends else 0)
                if progress is not None and n:
                    progress(n)
            while inflight:
                consume()
        except OSError as exc:  # writing packs (the reads are handled above)
            raise storage_error(exc, "writing packs") from None
        finally:
            for fut, hfut in inflight:
                fut.cancel()
                hfut.cancel()
            hasher_pool.shutdown(wait=True)
        return manifest.finish(size, file_hash.digest())

    # -- accounting -------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Count chunks and bytes (walks the chunk index)."""
        raw = stored = 0
        tally: dict[int, list[int]] = {}
        with self.db.read() as txn:
            chunks = txn.items("chunks")
            packs = txn.items("packs")
        for _, v in chunks:
            loc = decode_loc(v)
            raw += loc.raw_len
            stored += loc.stored_len
            t = tally.setdefault(loc.codec, [0, 0, 0])
            t[0] += 1
            t[1] += loc.raw_len
            t[2] += loc.stored_len
        pack_bytes = sum(PACK_REC.unpack(v)[1] for _, v in packs)
        by_codec = {
            CODEC_NAMES.get(c, str(c)): (n, r, st) for c, (n, r, st) in sorted(tally.items())
        }
        return StoreStats(len(chunks), len(packs), raw, stored, pack_bytes, by_codec)

    def scan(
        self,
        stream: Readable,
        on_chunk: Callable[[ChunkId, int], None] | None = None,
        plan: DeltaPlan | None = None,
    ) -> FileManifest:
        """Chunk and hash a stream exactly as ``ingest`` would, storing nothing.

        Used to compare a working file with stored versions without adding it.

        Args:
            stream: What to read (``readinto``).
            on_chunk: Called with every ``(chunk_id, length)`` in file order.
            plan: The delta plan ``ingest`` would be given (tensors cut like the previous
                version's).

        Returns:
            The manifest ``ingest`` would build (same id). Its chunk lists, if it has segments,
            are not stored: it can be compared, not read.

        Memory is one reused buffer of ``8 MiB + max_size`` plus one segment's ids (144 KiB);
        single-threaded (the chunker and BLAKE3 release the GIL, so scans on separate threads
        run in parallel).
        """
        cuts = forced_cuts(stream) if self.tensor_aware else []
        if not (self.delta and cuts):
            plan = None
        cutter = _Cutter(Chunker(self.params), cuts, plan)
        file_hash = blake3()
        cap = BLOCK + self.params.max_size
        mv = memoryview(bytearray(cap))
        size = 0
        manifest = ManifestBuilder(lambda cl: cl.id)  # nothing stored: the ids are enough

        def emit(piece: memoryview) -> None:
            cid = ChunkId(blake3(piece).digest())
            manifest.add(cid, len(piece))
            if on_chunk is not None:
                on_chunk(cid, len(piece))

        tail = 0  # bytes of the unfinished chunk, kept at the start of the buffer
        eof = False
        while not eof:
            n, eof = _fill(stream, mv[tail:cap], "scanned")
            new = mv[tail : tail + n]
            file_hash.update(new)
            cut = cutter.block(new, size, eof)
            size += n
            start = 0
            for end in cut:
                emit(mv[start : tail + end])
                start = tail + end
            rest = tail + n - start
            if rest:
                mv[:rest] = bytes(mv[start : start + rest])  # shorter than max_size
            tail = rest
        return manifest.finish(size, file_hash.digest())


def _update(h: blake3, data: memoryview) -> None:
    h.update(data)
