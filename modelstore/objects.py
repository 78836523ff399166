"""Layer 1: the object model: file manifests, trees and commits, canonically encoded.

Every object is a positional msgpack array whose first element is the object's own version,
so a field can be added in a later version without a repository-wide bump. ``decode`` checks
types, sizes and path rules (it is fed untrusted bytes from repositories and remotes) and
raises only ``FormatError``. An object's id is BLAKE3 in derive-key mode over its encoding,
with one context per kind (see ``ids.KIND_CONTEXTS``).
"""

from __future__ import annotations

import itertools
import sys
import unicodedata
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelstore import codec
from modelstore.errors import CorruptObjectError, FormatError
from modelstore.ids import ID_LEN, ChunkId, ObjectId, object_id

__all__ = [
    "KIND_BYTES",
    "KIND_CHUNKLIST",
    "KIND_TAG",
    "KIND_COMMIT",
    "KIND_MANIFEST",
    "KIND_TREE",
    "MODE_DIR",
    "MODE_EXEC",
    "MODE_FILE",
    "SEGMENT_CHUNKS",
    "ChunkList",
    "Commit",
    "FileManifest",
    "Segment",
    "Tag",
    "Tree",
    "TreeEntry",
    "check_name",
    "decode_object",
    "encode_object",
    "pack_lengths",
]

KIND_MANIFEST = 1
KIND_TREE = 2
KIND_COMMIT = 3
KIND_CHUNKLIST = 4
KIND_TAG = 5
KIND_BYTES = {
    KIND_MANIFEST: "manifest",
    KIND_TREE: "tree",
    KIND_COMMIT: "commit",
    KIND_CHUNKLIST: "chunklist",
    KIND_TAG: "tag",
}

ENTRY_FILE = 1
ENTRY_TREE = 2
MODE_FILE = 0o644
MODE_EXEC = 0o755
MODE_DIR = 0o040000
_FILE_MODES = (MODE_FILE, MODE_EXEC)

#: chunks listed inline in a manifest or in one ChunkList segment: 256 MiB of data at the
#: 64 KiB average, 144 KiB of ids and lengths.
SEGMENT_CHUNKS = 4096
#: segments one manifest may list (with 4096-chunk segments: ~16 TiB at the average chunk).
MAX_SEGMENTS = 1 << 16
MAX_NAME = 255
MAX_ENTRIES = 1 << 20


def _bad(what: str) -> FormatError:
    return FormatError(f"malformed object: {what}")


def check_name(name: str) -> str:
    """Validate one path component as stored in a tree; return it unchanged.

    Refuses what could escape or confuse a working tree: empty names, ``.``, ``..``, ``.ms``
    (any case), slashes, backslashes, NUL and other control characters, over-long names, and
    names that are not valid UTF-8 (lone surrogates, as ``os.listdir`` gives for undecodable
    bytes), which could not be encoded.
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"path component {name!r} is not valid UTF-8") from None
    if not name or name in (".", "..") or len(encoded) > MAX_NAME:
        raise _bad(f"bad path component {name!r}")
    if name.casefold() == ".ms" or "/" in name or "\\" in name:
        raise _bad(f"bad path component {name!r}")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise _bad(f"path component {name!r} has a control character")
    return name


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise _bad(what)


def _is_id(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == ID_LEN


def _is_int(v: Any) -> bool:
    # bool is an int subclass and 1.0 == 1: both would decode but not re-encode the same
    return type(v) is int


def _lengths(packed: bytes) -> array[int]:
    """Little-endian u32 chunk lengths as an array (byte-swapped on big-endian machines)."""
    a = array("I")
    if a.itemsize != 4:  # pragma: no cover - every platform we run on has 4-byte "I"
        raise FormatError("platform without 32-bit unsigned array items")
    a.frombytes(packed)
    if sys.byteorder == "big":  # pragma: no cover
        a.byteswap()
    return a


def pack_lengths(lengths: array[int]) -> bytes:
    """The stored form of chunk lengths: little-endian u32 each."""
    if sys.byteorder == "big":  # pragma: no cover
        lengths = array("I", lengths)
        lengths.byteswap()
    return lengths.tobytes()


def _iter_pairs(ids: bytes, lens: bytes) -> Iterator[tuple[ChunkId, int]]:
    for i, n in enumerate(_lengths(lens)):
        yield ChunkId(ids[i * ID_LEN : (i + 1) * ID_LEN]), n


def _check_chunk_bins(ids: Any, lens: Any, limit: int) -> int:
    _need(isinstance(ids, bytes) and isinstance(lens, bytes), "chunk lists")
    n = len(ids) // ID_LEN
    _need(len(ids) == n * ID_LEN and len(lens) == 4 * n, "chunk list lengths disagree")
    _need(n <= limit, "too many chunks")
    _need(0 not in _lengths(lens), "zero-length chunk")
    return n


@dataclass(frozen=True)
class ChunkList:
    """One segment of a large file's chunk list (at most ``SEGMENT_CHUNKS`` chunks).

    Large files list their chunks in segments so that no step ever holds a whole file's chunk
    list: ingest writes each segment as it fills, readers load one segment at a time.
    """

    chunk_ids: bytes
    chunk_lens: bytes
    VERSION = 1

    @property
    def chunk_count(self) -> int:
        """Number of chunks."""
        return len(self.chunk_ids) // ID_LEN

    def lengths(self) -> array[int]:
        """The chunk lengths."""
        return _lengths(self.chunk_lens)

    def chunks(self) -> Iterator[tuple[ChunkId, int]]:
        """Yield ``(chunk_id, length)`` pairs in order."""
        return _iter_pairs(self.chunk_ids, self.chunk_lens)

    def encode(self) -> bytes:
        """Canonical encoding."""
        return codec.encode([self.VERSION, self.chunk_ids, self.chunk_lens])

    @property
    def id(self) -> ObjectId:
        """The chunk list id."""
        return object_id("chunklist", self.encode())

    @classmethod
    def from_value(cls, v: Any) -> ChunkList:
        """Build from a decoded msgpack value, validating it."""
        _need(isinstance(v, list) and len(v) == 3, "chunk list is not a 3-array")
        _need(_is_int(v[0]) and v[0] == cls.VERSION, f"chunk list version {v[0]!r} unsupported")
        n = _check_chunk_bins(v[1], v[2], SEGMENT_CHUNKS)
        _need(n > 0, "empty chunk list")
        return cls(v[1], v[2])


@dataclass(frozen=True)
class Segment:
    """A manifest's reference to one ``ChunkList``: its id, bytes covered and chunk count."""

    id: ObjectId
    size: int
    chunks: int


@dataclass(frozen=True)
class FileManifest:
    """The content of one file: its size, its BLAKE3, and its chunks in order.

    Up to ``SEGMENT_CHUNKS`` chunks are listed inline, packed into two bin fields (32 and 4
    bytes per chunk); a larger file lists ``segments`` instead, each a ``ChunkList`` object,
    so a 20 GB file's manifest is a few kilobytes and memory stays flat whatever the size.
    """

    size: int
    content_hash: bytes
    chunk_ids: bytes = b""
    chunk_lens: bytes = b""
    segments: tuple[Segment, ...] = ()
    VERSION = 1

    @property
    def chunk_count(self) -> int:
        """Number of chunks."""
        if self.segments:
            return sum(s.chunks for s in self.segments)
        return len(self.chunk_ids) // ID_LEN

    def lengths(self) -> array[int]:
        """The inline chunk lengths (empty for a segmented manifest)."""
        return _lengths(self.chunk_lens)

    def chunks(self) -> Iterator[tuple[ChunkId, int]]:
        """Yield the inline ``(chunk_id, length)`` pairs; see ``iter_chunks`` for all."""
        if self.segments:
            raise FormatError("segmented manifest: use iter_chunks with a chunk-list loader")
        return _iter_pairs(self.chunk_ids, self.chunk_lens)

    def iter_chunks(self, load: Callable[[ObjectId], ChunkList]) -> Iterator[tuple[ChunkId, int]]:
        """Yield every ``(chunk_id, length)``, loading one segment at a time with ``load``."""
        if not self.segments:
            yield from _iter_pairs(self.chunk_ids, self.chunk_lens)
            return
        for seg in self.segments:
            cl = load(seg.id)
            if cl.chunk_count != seg.chunks or sum(cl.lengths()) != seg.size:
                raise FormatError(f"chunk list {seg.id.hex()[:16]} disagrees with its manifest")
            yield from cl.chunks()

    def offsets(self) -> list[int]:
        """Start offset of every inline chunk, plus the file size at the end."""
        return [0, *itertools.accumulate(self.lengths())]

    def encode(self) -> bytes:
        """Canonical encoding."""
        segs = [[s.id, s.size, s.chunks] for s in self.segments]
        return codec.encode(
            [self.VERSION, self.size, self.content_hash, self.chunk_ids, self.chunk_lens, segs]
        )

    @property
    def id(self) -> ObjectId:
        """The manifest id."""
        return object_id("manifest", self.encode())

    @classmethod
    def from_value(cls, v: Any) -> FileManifest:
        """Build from a decoded msgpack value, validating it."""
        _need(isinstance(v, list) and len(v) == 6, "manifest is not a 6-array")
        _need(_is_int(v[0]) and v[0] == cls.VERSION, f"manifest version {v[0]!r} unsupported")
        size, h, ids, lens, raw_segs = v[1], v[2], v[3], v[4], v[5]
        _need(_is_int(size) and size >= 0, "size")
        _need(_is_id(h), "content hash")
        n = _check_chunk_bins(ids, lens, SEGMENT_CHUNKS)
        _need(isinstance(raw_segs, list) and len(raw_segs) <= MAX_SEGMENTS, "segments")
        segs: list[Segment] = []
        for item in raw_segs:
            _need(isinstance(item, list) and len(item) == 3, "segment is not a 3-array")
            sid, ssize, scount = item
            _need(_is_id(sid), "segment id")
            _need(_is_int(ssize) and ssize > 0, "segment size")
            _need(_is_int(scount) and 0 < scount <= SEGMENT_CHUNKS, "segment chunk count")
            segs.append(Segment(ObjectId(sid), ssize, scount))
        _need(not (segs and n), "a manifest lists chunks inline or in segments, not both")
        m = cls(size, h, ids, lens, tuple(segs))
        total = sum(s.size for s in segs) if segs else sum(m.lengths())
        _need(total == size, "chunk lengths do not add up to the file size")
        return m


@dataclass(frozen=True)
class TreeEntry:
    """One name in a tree: a file (manifest id) or a subdirectory (tree id)."""

    name: str
    is_dir: bool
    mode: int
    size: int
    id: ObjectId

    def to_value(self) -> list[Any]:
        """The positional array stored for this entry."""
        kind = ENTRY_TREE if self.is_dir else ENTRY_FILE
        return [self.name, kind, self.mode, self.size, self.id]


@dataclass(frozen=True)
class Tree:
    """A directory: entries sorted by the UTF-8 bytes of their names, names unique."""

    entries: tuple[TreeEntry, ...] = field(default_factory=tuple)
    VERSION = 1

    def encode(self) -> bytes:
        """Canonical encoding (entries sorted by name)."""
        ents = sorted(self.entries, key=lambda e: e.name.encode("utf-8"))
        return codec.encode([self.VERSION, [e.to_value() for e in ents]])

    @property
    def id(self) -> ObjectId:
        """The tree id."""
        return object_id("tree", self.encode())

    def get(self, name: str) -> TreeEntry | None:
        """Return the entry called ``name``, if any."""
        for e in self.entries:
            if e.name == name:
                return e
        return None

    @classmethod
    def from_value(cls, v: Any) -> Tree:
        """Build from a decoded msgpack value, validating names, order and uniqueness."""
        _need(isinstance(v, list) and len(v) >= 2, "tree is not an array")
        _need(_is_int(v[0]) and v[0] == cls.VERSION, f"tree version {v[0]!r} unsupported")
        raw = v[1]
        _need(isinstance(raw, list) and len(raw) <= MAX_ENTRIES, "tree entries")
        out: list[TreeEntry] = []
        prev = b""
        for item in raw:
            _need(isinstance(item, list) and len(item) >= 5, "tree entry is not a 5-array")
            name, kind, mode, size, oid = item[:5]
            _need(isinstance(name, str), "entry name")
            check_name(name)
            key = name.encode("utf-8")
            _need(key > prev, f"tree entries not sorted or duplicated at {name!r}")
            prev = key
            _need(_is_int(kind) and kind in (ENTRY_FILE, ENTRY_TREE), f"entry kind {kind!r}")
            modes = (MODE_DIR,) if kind == ENTRY_TREE else _FILE_MODES
            _need(_is_int(mode) and mode in modes, f"entry mode {mode!r}")
            _need(_is_int(size) and size >= 0, "size")
            _need(_is_id(oid), "entry id")
            out.append(TreeEntry(name, kind == ENTRY_TREE, mode, size, ObjectId(oid)))
        return cls(tuple(out))


@dataclass(frozen=True)
class Commit:
    """A snapshot: a root tree, its parents, who and when, a message, and extra metadata.

    ``extra`` is a canonical map (str keys) kept for lineage and provenance fields; it is part
    of the hash, so it cannot be rewritten silently.
    """

    tree_id: ObjectId
    parents: tuple[ObjectId, ...]
    author: str
    time: int
    tz_offset: int
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    VERSION = 1

    def encode(self) -> bytes:
        """Canonical encoding."""
        return codec.encode(
            [
                self.VERSION,
                self.tree_id,
                list(self.parents),
                self.author,
                self.time,
                self.tz_offset,
                self.message,
                self.extra,
            ]
        )

    @property
    def id(self) -> ObjectId:
        """The commit id."""
        return object_id("commit", self.encode())

    @classmethod
    def from_value(cls, v: Any) -> Commit:
        """Build from a decoded msgpack value, validating it."""
        _need(isinstance(v, list) and len(v) >= 8, "commit is not an 8-array")
        _need(_is_int(v[0]) and v[0] == cls.VERSION, f"commit version {v[0]!r} unsupported")
        _need(_is_id(v[1]), "commit tree id")
        _need(isinstance(v[2], list) and all(_is_id(p) for p in v[2]), "commit parents")
        _need(len(v[2]) <= 64, "too many parents")
        _need(isinstance(v[3], str), "author")
        _need(_is_int(v[4]) and _is_int(v[5]), "time")
        _need(isinstance(v[6], str), "message")
        _need(isinstance(v[7], dict), "extra")
        parents = tuple(ObjectId(p) for p in v[2])
        return cls(ObjectId(v[1]), parents, v[3], v[4], v[5], v[6], v[7])


@dataclass(frozen=True)
class Tag:
    """An annotated tag: a name fixed to a commit, with who tagged it, when and why."""

    target: ObjectId
    name: str
    tagger: str
    time: int
    tz_offset: int
    message: str
    VERSION = 1

    def encode(self) -> bytes:
        """Canonical encoding."""
        return codec.encode(
            [
                self.VERSION,
                self.target,
                self.name,
                self.tagger,
                self.time,
                self.tz_offset,
                self.message,
            ]
        )

    @property
    def id(self) -> ObjectId:
        """The tag object id."""
        return object_id("tag", self.encode())

    @classmethod
    def from_value(cls, v: Any) -> Tag:
        """Build from a decoded msgpack value, validating it."""
        _need(isinstance(v, list) and len(v) == 7, "tag is not a 7-array")
        _need(_is_int(v[0]) and v[0] == cls.VERSION, f"tag version {v[0]!r} unsupported")
        _need(_is_id(v[1]), "tag target")
        _need(isinstance(v[2], str) and isinstance(v[3], str), "tag name or tagger")
        _need(_is_int(v[4]) and _is_int(v[5]), "tag time")
        _need(isinstance(v[6], str), "tag message")
        return cls(ObjectId(v[1]), v[2], v[3], v[4], v[5], v[6])


Obj = FileManifest | Tree | Commit | ChunkList | Tag
_CLASSES: dict[
    int, type[FileManifest] | type[Tree] | type[Commit] | type[ChunkList] | type[Tag]
] = {
    KIND_MANIFEST: FileManifest,
    KIND_TREE: Tree,
    KIND_COMMIT: Commit,
    KIND_CHUNKLIST: ChunkList,
    KIND_TAG: Tag,
}
_KIND_OF: dict[type, int] = {
    FileManifest: KIND_MANIFEST,
    Tree: KIND_TREE,
    Commit: KIND_COMMIT,
    ChunkList: KIND_CHUNKLIST,
    Tag: KIND_TAG,
}


def encode_object(obj: Obj) -> tuple[ObjectId, bytes]:
    """Return ``(id, stored bytes)``; stored bytes are a kind byte then the encoding."""
    enc = obj.encode()
    kind = _KIND_OF[type(obj)]
    return object_id(KIND_BYTES[kind], enc), bytes([kind]) + enc


def decode_object(stored: bytes, expect_id: bytes | None = None) -> Obj:
    """Decode stored bytes (kind byte + encoding); verify the id when ``expect_id`` is given."""
    if not stored:
        raise FormatError("malformed object: empty")
    kind = stored[0]
    cls = _CLASSES.get(kind)
    if cls is None:
        raise FormatError(f"malformed object: unknown kind {kind}")
    body = stored[1:]
    if expect_id is not None and object_id(KIND_BYTES[kind], body) != expect_id:
        raise CorruptObjectError(
            f"object {expect_id.hex()[:16]} does not match its id: the metadata is damaged"
        )
    obj = cls.from_value(codec.decode(body))
    # One object, one encoding: a non-canonical (malleable) encoding is refused, so that
    # ``obj.id`` always equals the id the object is stored and referenced under.
    if obj.encode() != body:
        raise FormatError("malformed object: not in canonical form")
    return obj
