"""Every decoder of untrusted bytes, fuzzed: it returns a value or raises our ``FormatError``
(``UnsupportedFormatError`` where a version is unknown), never anything else. (``codec.decode``
on raw bytes: ``test_decoders.py``, with as many examples.)

Inputs are cheap to make, so each decoder gets a few thousand examples in every profile
(``DECODER``; CI included) and the whole file runs in seconds: arbitrary bytes, valid encodings
with byte edits (flips, truncation, insertion, deletion), and valid msgpack with one field
swapped for a value of the wrong type or size (what type confusion in a crafted repository,
remote or upload looks like).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgpack
import pytest
import zstandard
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from modelstore import codec
from modelstore.backend import MemoryBackend
from modelstore.chunkstore import CHUNK_LOC, decode_loc
from modelstore.compress import compress_chunk, decompress_chunk
from modelstore.config import RepoConfig, parse_format_file
from modelstore.errors import FormatError, MsError, UnsupportedFormatError
from modelstore.ids import object_id
from modelstore.objects import (
    ChunkList,
    Commit,
    FileManifest,
    Segment,
    Tag,
    Tree,
    TreeEntry,
    decode_object,
    encode_object,
)
from modelstore.pack import (
    FOOTER,
    HEADER,
    INDEX_ENTRY,
    PACK_END_MAGIC,
    PACK_MAGIC,
    read_pack_trailer,
)
from modelstore.reflog import ReflogEntry
from modelstore.refs import _decode as decode_ref_value
from modelstore.repository import IndexEntry, MergeState
from modelstore.serve import _verify_metadata
from modelstore.sync import _remote_ref, parse_bundle

DECODER = settings(max_examples=max(2000, settings.default.max_examples), deadline=None)

OK = (FormatError,)  # CorruptObjectError is one
OK_OR_VERSION = (FormatError, UnsupportedFormatError)

# -- seeds: valid encodings of every record kind ---------------------------------------------

ID = blake3(b"id").digest()
ID2 = blake3(b"id2").digest()
LENS = struct.pack("<3I", 5, 70_000, 1)

OBJECTS = [
    FileManifest(70_006, ID, ID + ID2 + ID, LENS),
    FileManifest(0, blake3(b"").digest()),
    FileManifest(1 << 33, ID, segments=(Segment(ID2, 1 << 32, 4096), Segment(ID, 1 << 32, 7))),
    ChunkList(ID + ID2, struct.pack("<2I", 3, 4)),
    Tree((TreeEntry("a.bin", False, 0o644, 5, ID), TreeEntry("sub", True, 0o040000, 0, ID2))),
    Tree(),
    Commit(ID, (ID2, ID), "a@b", 1_700_000_000, 60, "msg",
           {"metrics": {"loss": 0.5, "step": 3}, "inputs": [{"path": "d", "id": "ab"}]}),
    Tag(ID, "v1", "a@b", 1_700_000_000, -120, "release"),
]
STORED_OBJECTS = [encode_object(o)[1] for o in OBJECTS]

REFLOG = [
    ReflogEntry(None, ID, 1_700_000_000_000_000_000, "a@b", "commit", "first", bytes(32)).encode(),
    ReflogEntry(ID, None, 1, "u", "branch", "deleted", ID2).encode(),
]
MERGE_STATES = [
    MergeState("merge", ID, "Merge dev", {"a.bin": ((ID, 0o644, 5), None, (ID2, 0o755, 6))})
    .encode(),
    MergeState("revert", ID2, "Revert", {}).encode(),
]
INDEX_ENTRIES = [IndexEntry(ID, 5, 0o644, 10**18, 10**18, 1234, 10**18 + 7).encode()]
CONFIGS = [
    RepoConfig(repo_id="00" * 16).encode(),
    RepoConfig(repo_id="ab" * 16, remotes={"origin": {"url": "s3://b/p", "lazy": True}},
               user={"x": [1, 2.5, None]}).encode(),
]
LOCS = [CHUNK_LOC.pack(1, ID, 16, 70_001, 70_000, 1), CHUNK_LOC.pack(1, ID2, 2**40, 6, 5, 0)]
REF_VALUES = [b"\x01" + ID, b"\x02refs/heads/main"]
FORMAT_TEXTS = [b"modelstore repository format 1\n", b"modelstore repository format 2\n"]


def _pack(n: int) -> bytes:
    body, index = b"", b""
    for i in range(n):
        codec_, payload = compress_chunk(bytes([i]) * 300)
        index += INDEX_ENTRY.pack(blake3(bytes([i]) * 300).digest(), HEADER.size + len(body),
                                  1 + len(payload), 300, codec_)
        body += bytes([codec_]) + bytes(payload)
    head = HEADER.pack(PACK_MAGIC, 1, bytes(9))
    footer = FOOTER.pack(len(head) + len(body), n, 0, blake3(index).digest(), bytes(8),
                         PACK_END_MAGIC)
    return head + body + index + footer


PACKS = [_pack(1), _pack(3)]


def _bundle(objs: list[bytes]) -> bytes:
    return zstandard.ZstdCompressor().compress(
        codec.encode([1, [[object_id("tree", s[1:]), s] for s in objs]]))


BUNDLES = [_bundle(STORED_OBJECTS[:3]), _bundle([]), _bundle(STORED_OBJECTS)]

# -- mutations -----------------------------------------------------------------------------------

WEIRD: list[Any] = [None, True, False, 0, -1, 1, 2**64 - 1, -(2**63), 1.5, float("nan"), "",
                    "x", "..", b"", b"\0" * 31, b"\0" * 32, b"\xff" * 33, [], {}, [None] * 3,
                    [b"\0" * 32, 1, 2], {"k": []}, {"a": [None, None, None]}, "a" * 300]

def _edit(data: bytes, script: bytes) -> bytes:
    """Apply byte edits, three script bytes each: (op, position, value)."""
    b = bytearray(data)
    for k in range(0, len(script) - 2, 3):
        op, pos, val = script[k] % 6, script[k + 1] * 7 + script[k], script[k + 2]
        n = len(b)
        if op == 0 and n:
            b[pos % n] ^= 1 << (val % 8)
        elif op == 1 and n:
            b[pos % n] = val
        elif op == 2:
            del b[pos % (n + 1) :]
        elif op == 3:
            b[pos % (n + 1) : pos % (n + 1)] = bytes([val])
        elif op == 4 and n:
            del b[pos % n : pos % n + 1 + val % 8]
        else:
            b += bytes([val])
    return bytes(b)


def _swap(data: bytes, skip: int, path: bytes) -> bytes:
    """``data`` (msgpack after ``skip`` prefix bytes) with one nested element replaced by a
    ``WEIRD`` value; ``path`` picks the element and the value."""
    try:
        v = msgpack.unpackb(data[skip:], raw=False, strict_map_key=False)
    except Exception:
        return data
    new = WEIRD[path[0] % len(WEIRD)] if path else None
    box: Any = v
    for step in path[1:] or b"\0":
        if isinstance(box, list) and box:
            i = step % len(box)
            if step % 3 == 0 or not isinstance(box[i], (list, dict)):
                box[i] = new
                break
            box = box[i]
        elif isinstance(box, dict) and box:
            key = sorted(box, key=repr)[step % len(box)]
            if step % 3 == 0 or not isinstance(box[key], (list, dict)):
                box[key] = new
                break
            box = box[key]
        else:
            return msgpack.packb(new, use_bin_type=True)
    return data[:skip] + msgpack.packb(v, use_bin_type=True)


def _make(seeds: list[bytes], skip: int, raw: bytes) -> bytes:
    how, rest = (raw[0] % 3, raw[1:]) if raw else (0, raw)
    if how == 0:
        return rest
    seed = seeds[rest[0] % len(seeds)] if rest else seeds[0]
    if how == 1:
        return _edit(seed, rest[1:13] or b"\0\0\0")
    return _swap(seed, skip, rest[1:6])


def inputs(seeds: list[bytes], skip: int = 0) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, edited seeds, and seeds with one field of the wrong type.

    One draw per example (hypothesis's cost is per value drawn): its first byte chooses the
    kind of input, the rest are the raw bytes, or the seed and edit script or field choice.
    """
    return st.builds(_make, st.just(seeds), st.just(skip), st.binary(max_size=120))


def only(allowed: tuple[type[BaseException], ...], fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except allowed:
        return None


# -- one test per decoder --------------------------------------------------------------------


@DECODER
@given(inputs(STORED_OBJECTS, skip=1), st.booleans())
def test_decode_object(data: bytes, with_id: bool) -> None:
    expect = object_id("tree", data[1:]) if with_id and data else None
    obj = only(OK, decode_object, data, expect)
    if obj is not None:  # accepted: it is canonical, so it re-encodes to the same bytes
        assert encode_object(obj)[1] == data


@DECODER
@given(inputs(PACKS))
def test_pack_trailer(data: bytes) -> None:
    fd = os.memfd_create("pack")
    try:
        os.write(fd, data)
        got = only(OK_OR_VERSION, lambda: read_pack_trailer(fd, len(data), strict=True))
    finally:
        os.close(fd)
    if got is not None:
        index_offset = struct.unpack_from("<Q", data, len(data) - FOOTER.size)[0]
        for e in got[1]:
            assert HEADER.size <= e.offset and e.offset + e.stored_len <= index_offset


@DECODER
@given(inputs(CONFIGS), st.booleans())
def test_config_decode(data: bytes, for_write: bool) -> None:
    only(OK_OR_VERSION, lambda: RepoConfig.decode(data, for_write=for_write))


@DECODER
@given(inputs(REFLOG))
def test_reflog_entry_decode(data: bytes) -> None:
    e = only(OK, ReflogEntry.decode, data)
    if e is not None:
        assert e.encode() == data


@DECODER
@given(inputs(MERGE_STATES))
def test_merge_state_decode(data: bytes) -> None:
    m = only(OK, MergeState.decode, data)
    if m is not None:  # usable as the code uses it
        assert m.kind in ("merge", "revert") and len(m.other) == 32
        for path, sides in m.conflicts.items():
            assert isinstance(path, str) and len(sides) == 3
            for side in sides:
                assert side is None or (len(side[0]) == 32 and type(side[1]) is int)


@DECODER
@given(inputs(INDEX_ENTRIES))
def test_index_entry_decode(data: bytes) -> None:
    e = only(OK, IndexEntry.decode, data)
    if e is not None:
        assert len(e.manifest_id) == 32
        assert all(type(x) is int for x in (e.size, e.mode, e.mtime_ns, e.ctime_ns, e.ino))


@DECODER
@given(inputs(LOCS))
def test_chunk_location_decode(data: bytes) -> None:
    loc = only(OK, decode_loc, data)
    if loc is not None:
        assert len(data) == CHUNK_LOC.size and len(loc.pack_id) == 32


@DECODER
@given(inputs(REF_VALUES))
def test_ref_value_decode(data: bytes) -> None:
    got = only(OK, decode_ref_value, "refs/heads/x", data)
    if got is not None and got[0] == 1:
        assert len(got[1]) == 32


@DECODER
@given(inputs(BUNDLES), st.booleans())
def test_bundle_parse(data: bytes, named: bool) -> None:
    key = f"meta/{object_id('pack', data).hex() if named else 'ab' * 32}.bundle"
    got = only(OK, parse_bundle, key, data)
    if got is not None:
        assert named and all(len(oid) == 32 and isinstance(s, bytes) for oid, s in got)


@DECODER
@given(inputs([ID.hex().encode() + b"\n", b"ab" * 32]))
def test_remote_ref_parse(data: bytes) -> None:
    be = MemoryBackend("fuzz")
    be.put("refs/" + b"refs/heads/main".hex(), data)
    got = only(OK, _remote_ref, be, "refs/heads/main")
    if got is not None:
        assert got[0] is not None and len(got[0]) == 32


@DECODER
@given(inputs([*BUNDLES, ID.hex().encode() + b"\n"]),
       st.sampled_from(["meta/{h}.bundle", "refs/" + b"refs/heads/main".hex(), "meta/x.bundle",
                        "refs/" + b"refs/heads/a..b".hex(), "other/key"]))
def test_serve_upload_check(data: bytes, key: str) -> None:
    """What ``ms serve`` checks before an upload becomes visible."""
    key = key.replace("{h}", object_id("pack", data).hex())
    fd = os.memfd_create("upload")
    try:
        os.write(fd, data)
        try:
            _verify_metadata(key, fd)
        except MsError as exc:
            assert isinstance(exc, FormatError) or "invalid bundle name" in exc.message
    finally:
        os.close(fd)


@DECODER
@given(inputs(FORMAT_TEXTS))
def test_format_file_parse(data: bytes) -> None:
    v = only(OK_OR_VERSION, parse_format_file, data.decode("utf-8", "replace"))
    assert v in (None, 1)


@DECODER
@given(st.integers(0, 3), inputs([bytes(compress_chunk(b"ab" * 5000)[1]), b"raw bytes"]),
       st.integers(0, 1 << 14))
def test_chunk_payload_decode(codec_: int, payload: bytes, raw_len: int) -> None:
    out = only(OK_OR_VERSION, decompress_chunk, codec_, payload, raw_len)
    assert out is None or len(out) == raw_len


@pytest.mark.parametrize("seeds", [STORED_OBJECTS, REFLOG, MERGE_STATES, INDEX_ENTRIES, CONFIGS,
                                   LOCS, REF_VALUES, PACKS, BUNDLES])
def test_the_seeds_are_valid(seeds: list[bytes]) -> None:
    """The fuzzers start from real encodings (else they would only test the front door)."""
    for s in seeds:
        if seeds is STORED_OBJECTS:
            decode_object(s)
        elif seeds is REFLOG:
            ReflogEntry.decode(s)
        elif seeds is MERGE_STATES:
            MergeState.decode(s)
        elif seeds is INDEX_ENTRIES:
            IndexEntry.decode(s)
        elif seeds is CONFIGS:
            RepoConfig.decode(s)
        elif seeds is LOCS:
            decode_loc(s)
        elif seeds is REF_VALUES:
            decode_ref_value("HEAD", s)
        elif seeds is PACKS:
            fd = os.memfd_create("p")
            os.write(fd, s)
            read_pack_trailer(fd, len(s), strict=True)
            os.close(fd)
        else:
            parse_bundle(f"meta/{object_id('pack', s).hex()}.bundle", s)
