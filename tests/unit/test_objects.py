"""objects: manifests, chunk lists, trees and commits; canonical encodings, stable ids, strict
decoding."""

from __future__ import annotations

import struct

import msgpack
import pytest
from blake3 import blake3

from modelstore import codec
from modelstore.errors import CorruptObjectError, FormatError
from modelstore.ids import KIND_CONTEXTS, object_id
from modelstore.objects import (
    KIND_BYTES,
    KIND_CHUNKLIST,
    KIND_COMMIT,
    KIND_MANIFEST,
    KIND_TREE,
    MAX_SEGMENTS,
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    SEGMENT_CHUNKS,
    ChunkList,
    Commit,
    FileManifest,
    Segment,
    Tree,
    TreeEntry,
    check_name,
    decode_object,
    encode_object,
)

ID0 = bytes(32)
ID1 = bytes([1]) * 32
ID2 = bytes([2]) * 32


def manifest_of(chunks: list[bytes]) -> FileManifest:
    data = b"".join(chunks)
    return FileManifest(
        len(data),
        blake3(data).digest(),
        b"".join(blake3(c).digest() for c in chunks),
        b"".join(struct.pack("<I", len(c)) for c in chunks),
    )


def chunk_list_of(chunks: list[bytes]) -> ChunkList:
    return ChunkList(
        b"".join(blake3(c).digest() for c in chunks),
        b"".join(struct.pack("<I", len(c)) for c in chunks),
    )


def segmented_of(*parts: list[bytes]) -> tuple[FileManifest, dict[bytes, ChunkList]]:
    """A manifest listing each part as one segment, and a store holding the chunk lists."""
    lists = [chunk_list_of(p) for p in parts]
    data = b"".join(b"".join(p) for p in parts)
    segs = tuple(
        Segment(cl.id, sum(len(c) for c in p), len(p)) for cl, p in zip(lists, parts, strict=True)
    )
    return FileManifest(len(data), blake3(data).digest(), segments=segs), {
        cl.id: cl for cl in lists
    }


HELLO = manifest_of([b"hello world"])
HELLO_LIST = chunk_list_of([b"hello world"])


def golden_tree() -> Tree:
    return Tree(
        (
            TreeEntry("a.txt", False, MODE_FILE, 11, HELLO.id),
            TreeEntry("sub", True, MODE_DIR, 0, ID0),
        )
    )


def golden_commit() -> Commit:
    return Commit(golden_tree().id, (), "tester@example", 1_800_000_000, 60, "first", {"k": "v"})


# -- golden ids: a change here is a format break -----------------------------------------------


def test_objects_manifest_golden():
    assert HELLO.encode().hex() == (
        "96010b"
        "c420d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
        "c420d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
        "c4040b000000"
        "90"
    )
    assert HELLO.id.hex() == "d0df1d2f1fff20d9113545dc20e20b717d286560600b882cc4fb7c655583434d"


def test_objects_chunk_list_golden():
    assert HELLO_LIST.encode().hex() == (
        "9301"
        "c420d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
        "c4040b000000"
    )
    assert HELLO_LIST.id.hex() == (
        "d77bd15553c28900c0e8b2cdc02263ddd2cc44960bd7abdadad377812ee90caa"
    )
    assert encode_object(HELLO_LIST)[1][:2].hex() == "0493"


def test_objects_tree_id_golden():
    assert golden_tree().id.hex() == (
        "ad956bb9c0b1019bc7f07ad392f2cfa76c6ca51b599883939f2fe9b298faa584"
    )


def test_objects_commit_id_golden():
    assert golden_commit().id.hex() == (
        "4638aa3691edd7899ca1ca86fb377f22b1aef8817519bbe89596c870e3b5b183"
    )


def test_objects_format_md_appendix_a_vectors():
    """The test vectors of docs/FORMAT.md, Appendix A."""
    h = "8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99"
    assert blake3(b"hello\n").hexdigest() == h

    empty_tree = Tree()
    assert empty_tree.encode().hex() == "920190"
    assert empty_tree.id.hex() == "23f716bd70da375e1e885f5b63da71b48cc83b5a2560893efa541f6a9ede21a8"
    assert encode_object(empty_tree)[1].hex() == "02920190"

    empty = manifest_of([])
    assert empty.encode().hex() == "960100c420" + blake3(b"").hexdigest() + "c400c40090"
    assert empty.id.hex() == "cc6f5d2d0273f0988ba7113154118a6b2042d9984cc32664a18b859c598b48f5"

    m = manifest_of([b"hello\n"])
    assert m.encode().hex() == f"960106c420{h}c420{h}c4040600000090"
    assert m.id.hex() == "6834f30db4653be5e61dfdff9a78a620532010ead1f43bd6c3aea172f52e2a10"

    cl = chunk_list_of([b"hello\n"])
    assert cl.encode().hex() == f"9301c420{h}c40406000000"
    assert cl.id.hex() == "b377cfd95723f6967c679c63ee054c4bf6e46f2b7478f224f039e17c55a13a23"
    assert encode_object(cl)[1][:4].hex() == "049301c4"

    seg = FileManifest(6, bytes.fromhex(h), segments=(Segment(cl.id, 6, 1),))
    assert seg.encode().hex() == f"960106c420{h}c400c4009193c420{cl.id.hex()}0601"
    assert seg.id.hex() == "d709ecc4c186872a113fc749f6aa3b5fa4c7231703e385cffe225bcb8c72f7ee"

    t = Tree((TreeEntry("hello.txt", False, MODE_FILE, 6, m.id),))
    assert t.encode().hex() == "92019195a968656c6c6f2e74787401cd01a406c420" + m.id.hex()
    assert t.id.hex() == "3627b51e9823f362dedebc4c6897b6cd2d52a51d7256156d631256b42f502c20"

    c = Commit(t.id, (), "a@b", 1700000000, 60, "first", {})
    assert c.encode().hex() == (
        "9801c420" + t.id.hex() + "90a3614062ce6553f1003ca5666972737480"
    )
    assert c.id.hex() == "9592564bb09e8476e6f747d4741334762c64bf2f7eb92f36f973cac708ddabaf"
    assert encode_object(c)[1][:4].hex() == "039801c4"


def test_objects_ids_use_kind_contexts():
    for obj, kind in (
        (HELLO, "manifest"),
        (HELLO_LIST, "chunklist"),
        (golden_tree(), "tree"),
        (golden_commit(), "commit"),
    ):
        assert obj.id == blake3(obj.encode(), derive_key_context=KIND_CONTEXTS[kind]).digest()


def test_objects_stored_bytes_start_with_kind():
    for obj, kind in (
        (HELLO, KIND_MANIFEST),
        (HELLO_LIST, KIND_CHUNKLIST),
        (golden_tree(), KIND_TREE),
        (golden_commit(), KIND_COMMIT),
    ):
        oid, stored = encode_object(obj)
        assert oid == obj.id
        assert stored[0] == kind and stored[1:] == obj.encode()


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        HELLO,
        manifest_of([]),
        manifest_of([b"a" * 300, b"b" * 7, b"c"]),
        segmented_of([b"a" * 300, b"b" * 7], [b"c"])[0],
        HELLO_LIST,
        chunk_list_of([b"x"] * SEGMENT_CHUNKS),
        Tree(),
        golden_tree(),
        golden_commit(),
        Commit(ID1, (ID0, ID2), "", -5, -720, "", {}),
        Commit(ID1, (ID0,), "ü", 0, 0, "multi\nline", {"lineage": {"from": [ID0]}, "n": 1.5}),
    ],
)
def test_objects_round_trip(obj):
    oid, stored = encode_object(obj)
    back = decode_object(stored, expect_id=oid)
    assert back == obj
    assert back.id == oid
    assert back.encode() == obj.encode()


def test_objects_tree_encoding_sorts_entries():
    a = TreeEntry("b", False, MODE_FILE, 1, ID1)
    b = TreeEntry("a", False, MODE_EXEC, 2, ID2)
    c = TreeEntry("é", False, MODE_FILE, 2, ID2)
    assert Tree((a, b, c)).encode() == Tree((c, b, a)).encode()
    back = decode_object(encode_object(Tree((c, a, b)))[1])
    assert [e.name for e in back.entries] == ["a", "b", "é"]


def test_objects_tree_get():
    t = golden_tree()
    e = t.get("sub")
    assert e is not None and e.is_dir and e.mode == MODE_DIR
    assert t.get("nope") is None


def test_objects_manifest_chunks_and_offsets():
    m = manifest_of([b"a" * 3, b"b" * 5, b"c"])
    assert m.chunk_count == 3
    assert [n for _, n in m.chunks()] == [3, 5, 1]
    assert [c for c, _ in m.chunks()] == [blake3(x).digest() for x in (b"aaa", b"bbbbb", b"c")]
    assert m.offsets() == [0, 3, 8, 9]


def test_objects_commit_extra_is_part_of_the_id():
    c = golden_commit()
    other = Commit(c.tree_id, c.parents, c.author, c.time, c.tz_offset, c.message, {"k": "w"})
    assert c.id != other.id


# -- decode_object ------------------------------------------------------------------------


def test_objects_decode_detects_tampering():
    oid, stored = encode_object(golden_commit())
    bad = bytearray(stored)
    bad[-1] ^= 1
    with pytest.raises(CorruptObjectError, match="does not match its id"):
        decode_object(bytes(bad), expect_id=oid)
    with pytest.raises(CorruptObjectError):
        decode_object(stored, expect_id=ID0)


def test_objects_decode_kind_is_part_of_the_id():
    # a tree's bytes relabelled as a commit must not verify under the tree's id
    oid, stored = encode_object(golden_tree())
    with pytest.raises(FormatError):
        decode_object(bytes([KIND_COMMIT]) + stored[1:], expect_id=oid)


@pytest.mark.parametrize("stored", [b"", b"\x00", b"\x05\x90", b"\xff\x90"])
def test_objects_decode_bad_kind(stored):
    with pytest.raises(FormatError):
        decode_object(stored)


def test_objects_decode_wrong_kind_for_body():
    body = HELLO.encode()
    with pytest.raises(FormatError):
        decode_object(bytes([KIND_TREE]) + body)
    with pytest.raises(FormatError):
        decode_object(bytes([KIND_COMMIT]) + body)


def _raw_stored(kind: int, value: object) -> bytes:
    return bytes([kind]) + msgpack.packb(value, use_bin_type=True)


def _commit_with_raw_extra(extra: bytes) -> bytes:
    fields = codec.decode(golden_commit().encode())[:7]
    return bytes([KIND_COMMIT]) + b"\x98" + b"".join(codec.encode(f) for f in fields) + extra


def _with_extra(c: Commit, extra: dict[str, object]) -> Commit:
    return Commit(c.tree_id, c.parents, c.author, c.time, c.tz_offset, c.message, extra)


def test_objects_raw_commit_helper_is_canonical():
    assert _commit_with_raw_extra(b"\x81\xa1k\xa1v") == encode_object(golden_commit())[1]


@pytest.mark.parametrize(
    "stored",
    [
        lambda: _raw_stored(KIND_MANIFEST, [True, *codec.decode(HELLO.encode())[1:]]),
        lambda: _raw_stored(KIND_MANIFEST, [1.0, *codec.decode(HELLO.encode())[1:]]),
        lambda: _raw_stored(KIND_CHUNKLIST, [True, *codec.decode(HELLO_LIST.encode())[1:]]),
        lambda: _raw_stored(KIND_TREE, [True, []]),
        lambda: _raw_stored(KIND_COMMIT, [1.0, *codec.decode(golden_commit().encode())[1:]]),
    ],
    ids=["manifest_true", "manifest_float", "chunklist_true", "tree_true", "commit_float"],
)
def test_objects_decode_version_must_be_int(stored):
    with pytest.raises(FormatError, match="version"):
        decode_object(stored())


@pytest.mark.parametrize(
    ("stored", "expect"),
    [
        # a non-shortest integer (size 11 as uint64)
        (
            lambda: bytes([KIND_MANIFEST])
            + HELLO.encode().replace(b"\x96\x01\x0b", b"\x96\x01\xcf" + (11).to_bytes(8, "big")),
            lambda: HELLO,
        ),
        # commit extra with unsorted keys
        (
            lambda: _commit_with_raw_extra(b"\x82\xa1b\x01\xa1a\x02"),
            lambda: _with_extra(golden_commit(), {"a": 2, "b": 1}),
        ),
        # float32 instead of float64
        (
            lambda: _commit_with_raw_extra(b"\x81\xa1f\xca\x3f\xc0\x00\x00"),
            lambda: _with_extra(golden_commit(), {"f": 1.5}),
        ),
    ],
    ids=["long_int", "unsorted_map", "float32"],
)
def test_objects_decode_refuses_non_canonical(stored, expect):
    # FORMAT.md §6: one object, one encoding; a malleable re-encoding is refused even when the
    # stored bytes match the id they are stored under
    raw = stored()
    oid = object_id(KIND_BYTES[raw[0]], raw[1:])
    with pytest.raises(FormatError, match="canonical"):
        decode_object(raw, expect_id=oid)
    assert expect().encode() != raw[1:]


def test_objects_decode_refuses_extra_elements():
    # FORMAT.md §7: exactly the listed elements; new fields come with a new object version
    seg = segmented_of([b"a"], [b"b"])[0]
    for obj in (HELLO, seg, HELLO_LIST, golden_tree(), golden_commit()):
        kind = encode_object(obj)[1][0]
        body = codec.encode([*codec.decode(obj.encode()), "future", {"x": 1}])
        with pytest.raises(FormatError):
            decode_object(bytes([kind]) + body)


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "model.safetensors", ".gitignore", "..a", "a..", "...", "é", "日本", "a b", "x" * 255],
)
def test_objects_check_name_accepts(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".ms",
        ".MS",
        ".Ms",
        "a/b",
        "/",
        "a\\b",
        "a\x00b",
        "\x01",
        "a\nb",
        "tab\t",
        "\x7f",
        "\x85",  # C1 control
        "x" * 256,
        "é" * 128,  # 256 bytes in UTF-8
        "bad\udcff",  # undecodable file name from os.listdir
    ],
)
def test_objects_check_name_refuses(name):
    with pytest.raises(FormatError):
        check_name(name)


def _tree_value(*entries: list[object]) -> list[object]:
    return [1, list(entries)]


def _entry(name: object = "a", kind: object = 1, mode: object = MODE_FILE, size: object = 1,
           oid: object = ID1) -> list[object]:
    return [name, kind, mode, size, oid]


@pytest.mark.parametrize(
    "name", ["..", ".", ".ms", ".MS", "a/b", "a\\b", "a\x00", "a\x1f", "", "x" * 256]
)
def test_objects_tree_refuses_bad_names(name):
    with pytest.raises(FormatError):
        Tree.from_value(_tree_value(_entry(name)))
    with pytest.raises(FormatError):
        decode_object(_raw_stored(KIND_TREE, _tree_value(_entry(name))))


@pytest.mark.parametrize(
    "entries",
    [
        [_entry("b"), _entry("a")],
        [_entry("a"), _entry("a")],
        [_entry("a"), _entry("a", 2, MODE_DIR, 0)],
        [_entry("é"), _entry("z")],  # sorted by code point is UTF-8 order: é > z
    ],
    ids=["unsorted", "duplicate", "duplicate_dir", "utf8_order"],
)
def test_objects_tree_refuses_unsorted_or_duplicate(entries):
    with pytest.raises(FormatError, match="sorted or duplicated"):
        Tree.from_value(_tree_value(*entries))


@pytest.mark.parametrize(
    "entry",
    [
        _entry(mode=0o600),
        _entry(mode=0o777),
        _entry(mode=0),
        _entry(mode=0o100644),
        _entry(mode=MODE_DIR),  # a file with a directory mode
        _entry(kind=2, mode=MODE_FILE),  # a directory with a file mode
        _entry(mode=float(MODE_FILE)),
        _entry(mode=str(MODE_FILE)),
        _entry(kind=0),
        _entry(kind=3),
        _entry(kind=True),
        _entry(kind="file"),
        _entry(size=-1),
        _entry(size=True),
        _entry(size=1.0),
        _entry(oid=ID1[:31]),
        _entry(oid=ID1.hex()),
        _entry(name=b"a"),
        ["a", 1, MODE_FILE, 1],
        "a",
    ],
)
def test_objects_tree_refuses_bad_entries(entry):
    with pytest.raises(FormatError):
        Tree.from_value(_tree_value(entry))


@pytest.mark.parametrize("value", [None, [], [1], [2, []], [1, {}], [True, []], {"a": 1}])
def test_objects_tree_refuses_bad_shape(value):
    with pytest.raises(FormatError):
        Tree.from_value(value)


def test_objects_tree_accepts_both_file_modes():
    t = Tree.from_value(_tree_value(_entry("a", mode=MODE_EXEC), _entry("b", mode=MODE_FILE)))
    assert [e.mode for e in t.entries] == [MODE_EXEC, MODE_FILE]


def _manifest_value(**over: object) -> list[object]:
    v = codec.decode(manifest_of([b"ab", b"cde"]).encode())
    for i, k in enumerate(["version", "size", "hash", "ids", "lens", "segs"]):
        if k in over:
            v[i] = over[k]
    return v


@pytest.mark.parametrize(
    "over",
    [
        {"size": 4},
        {"size": 6},
        {"size": -1},
        {"size": True},
        {"size": 5.0},
        {"hash": b"\x00" * 31},
        {"hash": None},
        {"ids": b"\x00" * 65},  # not a whole number of ids
        {"ids": b"\x00" * 32},  # one id, two lengths
        {"lens": struct.pack("<III", 2, 3, 0)},  # three lengths, two ids
        {"lens": struct.pack("<I", 5) + b"\x00"},
        {"lens": [2, 3]},
        {"lens": struct.pack("<II", 5, 0), "size": 5},  # a zero-length chunk
        {"ids": b"\x00" * 32 * 4097, "lens": struct.pack("<I", 1) * 4097, "size": 4097},
        {"ids": "00" * 64},
        {"segs": None},
        {"segs": {}},
        {"version": 2},
        {"version": 0},
        {"version": True},
    ],
)
def test_objects_manifest_refuses_inconsistent(over):
    with pytest.raises(FormatError):
        FileManifest.from_value(_manifest_value(**over))


EMPTY_HASH = blake3(b"").digest()


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        [1, 0, EMPTY_HASH, b"", b""],  # the pre-segments 5-array
        [1, 0, EMPTY_HASH, b"", b"", [], []],
        "x",
        {"a": 1},
    ],
)
def test_objects_manifest_refuses_bad_shape(value):
    with pytest.raises(FormatError):
        FileManifest.from_value(value)


def test_objects_manifest_empty_file():
    m = FileManifest.from_value([1, 0, EMPTY_HASH, b"", b"", []])
    assert m.chunk_count == 0 and m.offsets() == [0] and m.segments == ()
    assert list(m.chunks()) == [] and list(m.iter_chunks({}.__getitem__)) == []


def test_objects_manifest_lengths_are_little_endian():
    m = manifest_of([b"x" * 0x0102])
    assert m.chunk_lens == b"\x02\x01\x00\x00"
    assert list(m.lengths()) == [0x0102]


# -- segmented manifests and chunk lists ----------------------------------------------------


def _segmented_value(segs: list[object], size: int = 5) -> list[object]:
    return [1, size, ID0, b"", b"", segs]


def test_objects_manifest_segmented_decodes():
    m = FileManifest.from_value(_segmented_value([[ID1, 3, 2], [ID2, 2, 1]]))
    assert m.segments == (Segment(ID1, 3, 2), Segment(ID2, 2, 1))
    assert m.chunk_count == 3 and m.chunk_ids == b"" and m.size == 5


@pytest.mark.parametrize(
    "segs",
    [
        [[ID1, 3, 2]],  # 3 bytes covered, size 5
        [[ID1, 3, 2], [ID2, 3, 1]],  # 6 bytes covered
        [[ID1[:31], 5, 1]],
        [[ID1.hex(), 5, 1]],
        [[None, 5, 1]],
        [[ID1, 0, 1], [ID2, 5, 1]],  # a segment of no bytes
        [[ID1, -1, 1], [ID2, 6, 1]],
        [[ID1, 5.0, 1]],
        [[ID1, True, 1], [ID2, 4, 1]],
        [[ID1, 5, 0]],
        [[ID1, 5, SEGMENT_CHUNKS + 1]],
        [[ID1, 5, -1]],
        [[ID1, 5, True]],
        [[ID1, 5]],
        [[ID1, 5, 1, 0]],
        [ID1],  # a bare id, not a 3-array
        [{"id": ID1, "size": 5, "chunks": 1}],
    ],
)
def test_objects_manifest_refuses_bad_segments(segs):
    with pytest.raises(FormatError):
        FileManifest.from_value(_segmented_value(segs))


def test_objects_manifest_refuses_inline_and_segments_together():
    v = _manifest_value()  # two inline chunks, 5 bytes
    v[5] = [[ID1, 5, 2]]
    with pytest.raises(FormatError, match="not both"):
        FileManifest.from_value(v)


def test_objects_manifest_segment_limit():
    ok = FileManifest.from_value(_segmented_value([[ID1, 1, 1]] * MAX_SEGMENTS, MAX_SEGMENTS))
    assert len(ok.segments) == MAX_SEGMENTS
    too_many = [[ID1, 1, 1]] * (MAX_SEGMENTS + 1)
    with pytest.raises(FormatError, match="segments"):
        FileManifest.from_value(_segmented_value(too_many, MAX_SEGMENTS + 1))


def test_objects_manifest_iter_chunks_loads_segments_in_order():
    parts = ([b"a" * 3, b"b" * 5], [b"c"], [b"d" * 2, b"e", b"f" * 4])
    m, store = segmented_of(*parts)
    loaded: list[bytes] = []

    def load(oid: bytes) -> ChunkList:
        loaded.append(oid)
        return store[oid]

    flat = [c for p in parts for c in p]
    assert list(m.iter_chunks(load)) == [(blake3(c).digest(), len(c)) for c in flat]
    assert loaded == [s.id for s in m.segments]
    assert m.chunk_count == len(flat) and m.size == sum(map(len, flat))
    # an inline manifest needs no loader
    inline = manifest_of(flat)
    assert list(inline.iter_chunks(store.__getitem__)) == list(inline.chunks())


def test_objects_manifest_chunks_refuses_segmented():
    m, _ = segmented_of([b"a"], [b"b"])
    with pytest.raises(FormatError, match="segmented"):
        list(m.chunks())


@pytest.mark.parametrize(
    "replacement",
    [
        [b"a", b"bb", b"x"],  # one chunk more, more bytes
        [b"abb"],  # same bytes, one chunk fewer
        [b"a", b"b"],  # same count, fewer bytes
    ],
    ids=["count_and_bytes", "count", "bytes"],
)
def test_objects_manifest_iter_chunks_refuses_disagreeing_chunk_list(replacement):
    m, store = segmented_of([b"a", b"bb"], [b"c"])
    first = m.segments[0].id
    store[first] = chunk_list_of(replacement)
    with pytest.raises(FormatError, match="disagrees"):
        list(m.iter_chunks(store.__getitem__))


def test_objects_chunk_list_accessors():
    cl = chunk_list_of([b"abc", b"de"])
    assert cl.chunk_count == 2 and list(cl.lengths()) == [3, 2]
    assert list(cl.chunks()) == [(blake3(b"abc").digest(), 3), (blake3(b"de").digest(), 2)]
    full = chunk_list_of([b"z"] * SEGMENT_CHUNKS)
    assert ChunkList.from_value(codec.decode(full.encode())) == full


def _chunk_list_value(n: int, length: int = 1) -> list[object]:
    return [1, ID1 * n, struct.pack("<I", length) * n]


@pytest.mark.parametrize(
    "value",
    [
        _chunk_list_value(0),  # no chunks
        _chunk_list_value(SEGMENT_CHUNKS + 1),
        _chunk_list_value(2, 0),  # zero-length chunks
        [1, ID1 * 2, struct.pack("<II", 1, 0)],
        [1, ID1 * 2, struct.pack("<I", 1)],  # two ids, one length
        [1, ID1, struct.pack("<II", 1, 1)],  # one id, two lengths
        [1, ID1 + b"\x00", struct.pack("<I", 1)],
        [1, ID1, struct.pack("<I", 1) + b"\x00"],
        [1, ID1, [1]],
        [1, ID1.hex(), struct.pack("<I", 1)],
        [2, ID1, struct.pack("<I", 1)],
        [True, ID1, struct.pack("<I", 1)],
        [1, ID1],
        [1, ID1, struct.pack("<I", 1), b""],
        None,
        {"a": 1},
    ],
    ids=[
        "empty",
        "too_many",
        "zero_length",
        "one_zero_length",
        "fewer_lengths",
        "fewer_ids",
        "ragged_ids",
        "ragged_lens",
        "lens_array",
        "ids_str",
        "version_2",
        "version_true",
        "short",
        "long",
        "nil",
        "map",
    ],
)
def test_objects_chunk_list_refuses_bad_values(value):
    with pytest.raises(FormatError):
        ChunkList.from_value(value)
    if isinstance(value, list):
        with pytest.raises(FormatError):
            decode_object(_raw_stored(KIND_CHUNKLIST, value))


def _commit_value(**over: object) -> list[object]:
    v = codec.decode(golden_commit().encode())
    keys = ["version", "tree", "parents", "author", "time", "tz", "message", "extra"]
    for i, k in enumerate(keys):
        if k in over:
            v[i] = over[k]
    return v


@pytest.mark.parametrize(
    "over",
    [
        {"tree": ID0[:31]},
        {"tree": ID0 + b"\x00"},
        {"tree": ID0.hex()},
        {"tree": None},
        {"parents": [ID0[:5]]},
        {"parents": ID0},
        {"parents": [ID0.hex()]},
        {"parents": [ID0] * 65},
        {"author": b"me"},
        {"time": 1.5},
        {"time": True},
        {"time": "now"},
        {"tz": None},
        {"message": None},
        {"extra": []},
        {"version": 2},
    ],
)
def test_objects_commit_refuses_bad_fields(over):
    with pytest.raises(FormatError):
        Commit.from_value(_commit_value(**over))


def test_objects_commit_refuses_short_array():
    with pytest.raises(FormatError):
        Commit.from_value(_commit_value()[:7])


def test_objects_errors_are_one_line():
    with pytest.raises(FormatError) as ei:
        Tree.from_value(_tree_value(_entry("a\nb")))
    assert "\n" not in str(ei.value)
