"""Layer 1: the pack file format; chunks appended into ~64 MiB files with a trailer index.

Byte layout (all integers little-endian; see docs/FORMAT.md §9)::

    header  16 B   magic "MSPACK" (6) | version u8 (1) | reserved (9, zero)
    entries        per chunk: codec tag u8 | payload; back to back, no per-entry header
    index   49 B   per chunk: chunk id (32) | offset u64 (of the tag byte) | stored len u32
                   (tag + payload) | raw len u32 | codec u8 (same as the tag byte)
    footer  64 B   index offset u64 | entry count u32 | reserved u32 | BLAKE3 of the index
                   (32) | reserved (8, zero) | end magic "MSPKEND1" (8)

The trailer index makes a pack self-describing: the chunk index can be rebuilt from packs
alone, and a remote can list what a pack holds by reading its tail. A pack's id is BLAKE3
(derive-key, context "pack") of its trailer index bytes (``pack_id_of``).

The writer writes to a temporary file in the repository's ``tmp/``, fsyncs it, and renames it
into ``packs/xx/<id>.pack``; only then may the chunk index point into it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blake3 import blake3

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

from modelstore.errors import CorruptObjectError, FormatError, UnsupportedFormatError
from modelstore.fileio import BufferPool, DirectFileWriter, fsync_dir
from modelstore.ids import ID_LEN, KIND_CONTEXTS, ChunkId

__all__ = [
    "FOOTER",
    "HEADER",
    "INDEX_ENTRY",
    "PACK_MAGIC",
    "PACK_VERSION",
    "SUPPORTED_PACK_VERSIONS",
    "PackEntry",
    "PackWriter",
    "pack_id_of",
    "read_pack_index",
    "read_pack_trailer",
]

PACK_MAGIC = b"MSPACK"
PACK_END_MAGIC = b"MSPKEND1"
PACK_VERSION = 1
SUPPORTED_PACK_VERSIONS = (1,)
HEADER = struct.Struct("<6sB9s")  # magic, version, reserved
INDEX_ENTRY = struct.Struct("<32sQIIB")  # chunk id, offset, stored len, raw len, codec
FOOTER = struct.Struct("<QII32s8s8s")  # index offset, count, reserved, index hash, rsvd, magic
MAX_PACK_ENTRIES = 1 << 24
_TAGS = [bytes([i]) for i in range(256)]


@dataclass(frozen=True)
class PackEntry:
    """Where one chunk sits in a pack."""

    chunk_id: ChunkId
    offset: int
    stored_len: int
    raw_len: int
    codec: int


class PackWriter:
    """Appends chunks to one pack file in ``tmp_dir``; ``finish`` makes it durable.

    Not thread-safe: one writer per thread of control. ``abort`` removes the temporary file.
    """

    def __init__(
        self,
        tmp_dir: Path,
        name: str,
        buffers: BufferPool | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.tmp_path = tmp_dir / f"{name}.pack.tmp"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        # with a buffer pool and a writer thread, the pack bypasses the page cache (O_DIRECT)
        self._out = (
            DirectFileWriter(self._fd, buffers, executor)
            if buffers is not None and executor is not None
            else None
        )
        self.entries: list[PackEntry] = []
        self.size = 0
        self._write(HEADER.pack(PACK_MAGIC, PACK_VERSION, bytes(9)))

    def _write(self, *parts: bytes | bytearray | memoryview) -> None:
        # Normally through the DirectFileWriter (O_DIRECT from pooled buffers); without one,
        # one writev per chunk (tag byte + payload) straight from the caller's buffers.
        total = sum(len(p) for p in parts)
        if self._out is not None:
            for p in parts:
                self._out.write(p)
            self.size += total
            return
        done = os.writev(self._fd, parts)
        if done != total:  # a short write (rare: signals, full disk): finish it piecewise
            rest = b"".join(bytes(p) for p in parts)[done:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]
        self.size += total

    def add(
        self, chunk_id: ChunkId, codec: int, payload: bytes | memoryview, raw_len: int
    ) -> PackEntry:
        """Append one chunk (codec tag + payload); return where it is."""
        entry = PackEntry(chunk_id, self.size, 1 + len(payload), raw_len, codec)
        self._write(_TAGS[codec], payload)
        self.entries.append(entry)
        return entry

    def finish(self, packs_dir: Path) -> tuple[str, Path]:
        """Write the index and footer, fsync, and rename into ``packs_dir/xx/<id>.pack``.

        Returns ``(pack_hex, final_path)``. After this returns the pack is durable.
        """
        index_offset = self.size
        index = b"".join(
            INDEX_ENTRY.pack(e.chunk_id, e.offset, e.stored_len, e.raw_len, e.codec)
            for e in self.entries
        )
        footer = FOOTER.pack(
            index_offset, len(self.entries), 0, blake3(index).digest(), bytes(8), PACK_END_MAGIC
        )
        self._write(index, footer)
        if self._out is not None:
            self._out.close()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        pack_hex = pack_id_of(index).hex()
        sub = packs_dir / pack_hex[:2]
        sub.mkdir(parents=True, exist_ok=True)
        final = sub / f"{pack_hex}.pack"
        os.replace(self.tmp_path, final)
        fsync_dir(sub)
        return pack_hex, final

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            if self._out is not None:
                self._out.discard()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        finally:
            self.tmp_path.unlink(missing_ok=True)


def pack_id_of(index: bytes) -> bytes:
    """A pack's id: BLAKE3 (derive-key, context "pack") of its trailer index bytes.

    The index lists every chunk's id, offset, stored and raw length and codec, so the id
    commits to the pack's content through the chunk ids (as Xet names xorbs by their chunk
    hashes) without a second pass over the pack's bytes; each chunk's bytes are verified
    against its own id whenever they are read.
    """
    return blake3(index, derive_key_context=KIND_CONTEXTS["pack"]).digest()


def index_entries(
    index: bytes, pack_id: bytes, where: str
) -> dict[bytes, tuple[int, int, int, int]]:
    """A pack's trailer index (e.g. a remote ``.idx``) as chunk id → (offset, stored, raw, codec).

    Trusted only when it hashes to the pack's name and is whole entries; a remote can send
    anything, so this is the one place that checks before anyone unpacks it.
    """
    if len(index) % INDEX_ENTRY.size or pack_id_of(index) != pack_id:
        raise CorruptObjectError(f"{where} does not match its name")
    return {
        cid: (off, stored, raw_len, codec)
        for cid, off, stored, raw_len, codec in INDEX_ENTRY.iter_unpack(index)
    }


def read_pack_trailer(
    fd: int, size: int, *, strict: bool = False
) -> tuple[bytes, list[PackEntry]]:
    """Read and check a pack's header, footer and index from an open file descriptor.

    Raises ``FormatError`` (``CorruptObjectError`` for hash mismatches) on anything wrong, and
    ``UnsupportedFormatError`` for a pack version this reader does not know. Readers ignore
    reserved bytes; ``strict`` (``ms verify``) refuses non-zero ones, which version-1 writers
    never write, so that a flipped bit anywhere in a pack is found.
    """
    if size < HEADER.size + FOOTER.size:
        raise FormatError(f"pack is truncated ({size} bytes)")
    head = os.pread(fd, HEADER.size, 0)
    footer = os.pread(fd, FOOTER.size, size - FOOTER.size)
    if len(head) != HEADER.size or len(footer) != FOOTER.size:  # the file shrank under us
        raise FormatError(f"pack is truncated (shorter than {size} bytes)")
    magic, version, _ = HEADER.unpack(head)
    if magic != PACK_MAGIC:
        raise FormatError("not a modelstore pack (bad magic)")
    if version not in SUPPORTED_PACK_VERSIONS:
        raise UnsupportedFormatError(f"pack version {version} is not supported (upgrade ms)")
    index_offset, count, reserved, index_hash, reserved2, end = FOOTER.unpack(footer)
    if end != PACK_END_MAGIC:
        raise FormatError("pack tail is damaged or truncated (bad end magic)")
    if strict and (head[7:] != bytes(9) or reserved != 0 or reserved2 != bytes(8)):
        raise CorruptObjectError("pack header or footer is damaged (reserved bytes are not zero)")
    if count > MAX_PACK_ENTRIES or index_offset + count * INDEX_ENTRY.size != size - FOOTER.size:
        raise FormatError("pack footer is inconsistent with the file size")
    raw = os.pread(fd, count * INDEX_ENTRY.size, index_offset)
    if len(raw) != count * INDEX_ENTRY.size:
        raise FormatError(f"pack is truncated (shorter than {size} bytes)")
    if blake3(raw).digest() != index_hash:
        raise CorruptObjectError("pack index does not match its hash")
    entries: list[PackEntry] = []
    for i in range(count):
        cid, off, stored, rawlen, codec = INDEX_ENTRY.unpack_from(raw, i * INDEX_ENTRY.size)
        if off < HEADER.size or off + stored > index_offset or stored < 1:
            raise FormatError("pack index entry points outside the pack")
        entries.append(PackEntry(ChunkId(cid), off, stored, rawlen, codec))
    return raw, entries


def read_pack_index(fd: int, size: int) -> Iterator[PackEntry]:
    """Check a pack's header, footer and index; return its entries (``read_pack_trailer``)."""
    return iter(read_pack_trailer(fd, size)[1])


assert INDEX_ENTRY.size == 49 and FOOTER.size == 64 and HEADER.size == 16 and ID_LEN == 32
