"""Layer 0: object identities; BLAKE3-256 with domain separation between kinds.

A chunk id is the plain BLAKE3 of the chunk's raw bytes, and a file's content hash is the plain
BLAKE3 of the whole file, so both can be checked with ``b3sum``. Structured objects (manifests,
trees, commits) are hashed in BLAKE3's derive-key mode with a context string per kind, so no
byte string can be both a chunk and an object, or two kinds of object at once.

Ids are raw 32-byte ``bytes`` inside the library (names end in ``_id``); hex (names end in
``_hex``) appears only at the edges: the CLI, JSON and file names.
"""

from __future__ import annotations

import string
from typing import NewType

from blake3 import blake3

from modelstore.errors import BadArgumentError

__all__ = [
    "ID_LEN",
    "KIND_CONTEXTS",
    "ChunkId",
    "ObjectId",
    "chunk_id",
    "from_hex",
    "hasher",
    "object_id",
    "to_hex",
]

ID_LEN = 32

ObjectId = NewType("ObjectId", bytes)
ChunkId = NewType("ChunkId", bytes)

#: derive-key contexts, one per object kind; part of the format (docs/FORMAT.md §4).
KIND_CONTEXTS: dict[str, str] = {
    "manifest": "modelstore 2026-11 file manifest v1",
    "tree": "modelstore 2026-11 tree v1",
    "commit": "modelstore 2026-11 commit v1",
    "chunklist": "modelstore 2026-11 chunk list v1",
    "tag": "modelstore 2026-11 tag v1",
    "pack": "modelstore 2026-11 pack v1",
}


def chunk_id(data: bytes | bytearray | memoryview) -> ChunkId:
    """Return the id of a chunk: the plain BLAKE3-256 of its raw bytes."""
    return ChunkId(blake3(data).digest())


def hasher() -> blake3:
    """Return a plain BLAKE3 hasher (file content hashes are plain BLAKE3)."""
    return blake3()


def object_id(kind: str, encoded: bytes) -> ObjectId:
    """Return the id of an encoded object of ``kind`` (derive-key mode, per-kind context)."""
    return ObjectId(blake3(encoded, derive_key_context=KIND_CONTEXTS[kind]).digest())


def to_hex(raw: bytes) -> str:
    """Render a raw id as lowercase hex."""
    return raw.hex()


def from_hex(text: str) -> bytes:
    """Parse a full 64-character hex id."""
    if len(text) != 2 * ID_LEN:
        raise BadArgumentError(f"not a full object id: {text!r} (expected 64 hex digits)")
    # bytes.fromhex skips whitespace, so check the digits first
    if not all(c in string.hexdigits for c in text):
        raise BadArgumentError(f"not a hex object id: {text!r}")
    return bytes.fromhex(text)
