"""Property tests: every decoder fed arbitrary bytes raises only our errors; encodings round-trip
and are canonical."""

from __future__ import annotations

import os
import struct
import tempfile
from typing import Any

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from modelstore import codec
from modelstore.compress import CODEC_ZSTD, compress_chunk, decompress_chunk
from modelstore.config import RepoConfig
from modelstore.errors import CorruptObjectError, FormatError, UnsupportedFormatError
from modelstore.ids import ID_LEN
from modelstore.objects import (
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
from modelstore.pack import FOOTER, HEADER, INDEX_ENTRY, PACK_MAGIC, read_pack_index

# A share of the active profile's examples (conftest's "ci" profile: 300), so that the whole
# file stays at a few seconds while HYPOTHESIS_PROFILE=deep still digs deeper.
FEW = settings(max_examples=max(25, settings.default.max_examples // 4))
SOME = settings(max_examples=max(50, settings.default.max_examples // 2))
#: raw bytes into a decoder are cheap: a few thousand examples in every profile (CI included).
#: Every decoder gets as many in test_decoder_fuzz.py; these structured tests stay smaller.
DECODER = settings(max_examples=max(2000, settings.default.max_examples))

# -- strategies ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=40),
)

#: values the codec accepts (no NaN, so == works for round trips)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.dictionaries(st.text(max_size=8), kids, max_size=6),
    ),
    max_leaves=12,
)

#: anything msgpack can express, including what the codec refuses to produce
loose_values = st.recursive(
    st.one_of(scalars, st.floats()),
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=8), st.binary(max_size=4)), kids, max_size=6),
    ),
    max_leaves=12,
)

ids_st = st.binary(min_size=ID_LEN, max_size=ID_LEN)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few random edits: flips, truncation, insertions, deletions."""
    data = bytearray(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]))
        n = len(data)
        if op in ("flip", "set") and n:
            i = draw(st.integers(min_value=0, max_value=n - 1))
            if op == "flip":
                data[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
            else:
                data[i] = draw(st.integers(min_value=0, max_value=255))
        elif op == "truncate" and n:
            del data[draw(st.integers(min_value=0, max_value=n - 1)) :]
        elif op == "insert":
            i = draw(st.integers(min_value=0, max_value=n))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and n:
            i = draw(st.integers(min_value=0, max_value=n - 1))
            del data[i : i + draw(st.integers(min_value=1, max_value=8))]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _ok_name(name: str) -> bool:
    try:
        check_name(name)
    except FormatError:
        return False
    return True


name_st = st.text(min_size=1, max_size=12).filter(_ok_name)


@st.composite
def manifests(draw: st.DrawFn) -> FileManifest:
    lens = draw(st.lists(st.integers(min_value=1, max_value=2**32 - 1), max_size=8))
    return FileManifest(
        sum(lens),
        draw(ids_st),
        b"".join(draw(ids_st) for _ in lens),
        b"".join(struct.pack("<I", n) for n in lens),
    )


@st.composite
def segmented_manifests(draw: st.DrawFn) -> FileManifest:
    segs = draw(
        st.lists(
            st.builds(
                Segment,
                ids_st,
                st.integers(min_value=1, max_value=2**40),
                st.integers(min_value=1, max_value=SEGMENT_CHUNKS),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return FileManifest(sum(s.size for s in segs), draw(ids_st), segments=tuple(segs))


@st.composite
def chunk_lists(draw: st.DrawFn) -> ChunkList:
    lens = draw(st.lists(st.integers(min_value=1, max_value=2**32 - 1), min_size=1, max_size=8))
    return ChunkList(
        b"".join(draw(ids_st) for _ in lens), b"".join(struct.pack("<I", n) for n in lens)
    )


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    names = draw(st.lists(name_st, unique=True, max_size=6))
    entries = []
    for name in sorted(names, key=lambda n: n.encode()):
        is_dir = draw(st.booleans())
        mode = MODE_DIR if is_dir else draw(st.sampled_from([MODE_FILE, MODE_EXEC]))
        size = draw(st.integers(min_value=0, max_value=2**64 - 1))
        entries.append(TreeEntry(name, is_dir, mode, size, draw(ids_st)))
    return Tree(tuple(entries))


@st.composite
def commits(draw: st.DrawFn) -> Commit:
    return Commit(
        draw(ids_st),
        tuple(draw(st.lists(ids_st, max_size=3))),
        draw(st.text(max_size=30)),
        draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        draw(st.integers(min_value=-(2**15), max_value=2**15)),
        draw(st.text(max_size=60)),
        draw(st.dictionaries(st.text(max_size=8), values, max_size=4)),
    )


objects_st = st.one_of(manifests(), segmented_manifests(), chunk_lists(), trees(), commits())


stored_objects = st.one_of(
    st.binary(max_size=200),
    objects_st.map(lambda o: encode_object(o)[1]).flatmap(mutated),
    st.tuples(st.integers(min_value=0, max_value=5), st.binary(max_size=100)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    st.tuples(st.integers(min_value=1, max_value=4), loose_values).map(
        lambda t: bytes([t[0]]) + _loose_encode(t[1])
    ),
)


def _loose_encode(v: Any) -> bytes:
    import msgpack

    return msgpack.packb(v, use_bin_type=True)


# -- codec -----------------------------------------------------------------------------------


@SOME
@given(st.one_of(st.binary(max_size=300), values.map(codec.encode).flatmap(mutated)))
def test_codec_decode_arbitrary_bytes(data):
    try:
        codec.decode(data)
    except FormatError:
        pass


@SOME
@given(values)
def test_codec_round_trip(v):
    enc = codec.encode(v)
    assert codec.decode(enc) == v
    assert codec.encode(codec.decode(enc)) == enc


@FEW
@given(st.dictionaries(st.text(max_size=8), scalars, min_size=2, max_size=8), st.randoms())
def test_codec_map_key_order_does_not_change_encoding(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    assert codec.encode(dict(items)) == codec.encode(d)
    assert codec.encode({"m": dict(items)}) == codec.encode({"m": d})


@SOME
@given(loose_values)
def test_codec_encode_only_format_error(v):
    try:
        enc = codec.encode(v)
    except FormatError:
        return
    assert codec.encode(codec.decode(enc)) == enc


@DECODER
@given(st.binary(max_size=300))
def test_codec_decode_then_encode_is_canonical(data):
    # whatever decodes re-encodes canonically, and that encoding is a fixed point
    try:
        v = codec.decode(data)
    except FormatError:
        return
    try:
        enc = codec.encode(v)
    except FormatError:
        return  # a bin map key: decodable msgpack the codec refuses to write
    assert codec.encode(codec.decode(enc)) == enc


# -- objects ---------------------------------------------------------------------------------


@given(stored_objects)
def test_objects_decode_object_arbitrary_bytes(stored):
    try:
        obj = decode_object(stored)
    except FormatError:
        return
    # whatever is accepted re-encodes canonically, to a fixed point
    try:
        again = encode_object(obj)[1]
    except FormatError:
        return  # a commit extra with a bin map key: readable, never written
    assert encode_object(decode_object(again))[1] == again


@FEW
@given(stored_objects, ids_st)
def test_objects_decode_object_with_id_arbitrary_bytes(stored, oid):
    try:
        decode_object(stored, expect_id=oid)
    except FormatError:
        pass


@SOME
@given(objects_st)
def test_objects_round_trip(obj):
    oid, stored = encode_object(obj)
    back = decode_object(stored, expect_id=oid)
    assert back == obj
    assert back.id == oid == obj.id
    enc = obj.encode()
    assert type(obj).from_value(codec.decode(enc)).encode() == enc


@FEW
@given(objects_st, st.data())
def test_objects_tampering_detected(obj, data):
    oid, stored = encode_object(obj)
    bad = data.draw(mutated(stored))
    if bad == stored:
        return
    try:
        decode_object(bad, expect_id=oid)
    except CorruptObjectError:
        return
    except FormatError:
        # only when the kind byte changed: the id is then checked in another kind's context
        assert not bad or bad[0] != stored[0]
        return
    raise AssertionError("tampered object accepted")


def _near(valid: list[Any], data: st.DataObject) -> Any:
    """A valid object value with one field replaced, dropped, or an extra one added."""
    v = list(valid)
    op = data.draw(st.sampled_from(["replace", "drop", "extra", "whole"]))
    if op == "replace" and v:
        v[data.draw(st.integers(min_value=0, max_value=len(v) - 1))] = data.draw(loose_values)
    elif op == "drop" and v:
        del v[data.draw(st.integers(min_value=0, max_value=len(v) - 1))]
    elif op == "extra":
        v.append(data.draw(loose_values))
    else:
        return data.draw(loose_values)
    return v


@SOME
@given(st.data())
def test_objects_from_value_only_format_error(data):
    obj = data.draw(objects_st)
    value = _near(codec.decode(obj.encode()), data)
    for cls in (FileManifest, ChunkList, Tree, Commit):
        try:
            got = cls.from_value(value)
        except FormatError:
            continue
        try:
            enc = got.encode()
        except FormatError:
            continue  # e.g. a commit extra holding a bin map key
        # compare encodings, not objects: NaN in a commit's extra is never == itself
        assert cls.from_value(codec.decode(enc)).encode() == enc


@FEW
@given(st.data())
def test_objects_tree_entry_mutations_only_format_error(data):
    tree = data.draw(trees().filter(lambda t: len(t.entries) > 0))
    value = codec.decode(tree.encode())
    i = data.draw(st.integers(min_value=0, max_value=len(value[1]) - 1))
    value[1][i] = _near(value[1][i], data)
    try:
        got = Tree.from_value(value)
    except FormatError:
        return
    for e in got.entries:
        check_name(e.name)
        assert (e.mode == MODE_DIR) == e.is_dir
        assert e.mode in (MODE_DIR, MODE_FILE, MODE_EXEC) and len(e.id) == ID_LEN


# -- pack ------------------------------------------------------------------------------------


@st.composite
def forged_packs(draw: st.DrawFn) -> bytes:
    """Packs with a correct index hash but arbitrary header, entries and footer fields."""
    body = draw(st.binary(max_size=64))
    n = draw(st.integers(min_value=0, max_value=4))
    entries = b"".join(
        INDEX_ENTRY.pack(
            draw(ids_st),
            draw(st.one_of(st.integers(0, 200), st.integers(0, 2**64 - 1))),
            draw(st.one_of(st.integers(0, 100), st.integers(0, 2**32 - 1))),
            draw(st.integers(0, 2**32 - 1)),
            draw(st.integers(0, 255)),
        )
        for _ in range(n)
    )
    version = draw(st.sampled_from([1, 1, 1, 0, 2, 255]))
    head = HEADER.pack(PACK_MAGIC, version, bytes(9)) + body
    index_offset = draw(st.one_of(st.just(len(head)), st.integers(0, 2**64 - 1)))
    count = draw(st.one_of(st.just(n), st.integers(0, 2**32 - 1)))
    footer = FOOTER.pack(index_offset, count, 0, blake3(entries).digest(), bytes(8), b"MSPKEND1")
    return head + entries + footer


@given(st.one_of(st.binary(max_size=400), forged_packs(), forged_packs().flatmap(mutated)))
def test_pack_read_index_arbitrary_file(data):
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        fd = f.fileno()
        size = os.fstat(fd).st_size
        try:
            entries = list(read_pack_index(fd, size))
        except (FormatError, UnsupportedFormatError):
            return
    index_offset = struct.unpack_from("<Q", data, size - FOOTER.size)[0]
    for e in entries:
        assert HEADER.size <= e.offset and e.offset + e.stored_len <= index_offset
        assert e.stored_len >= 1


# -- config ----------------------------------------------------------------------------------


def _valid_config() -> dict[str, Any]:
    return RepoConfig(repo_id="00" * 16).to_value()


@st.composite
def near_configs(draw: st.DrawFn) -> dict[str, Any]:
    v = _valid_config()
    key = draw(st.sampled_from([*v, "features.incompat", "features.ro_compat", "chunker.x"]))
    new = draw(loose_values)
    if "." in key:
        outer, inner = key.split(".")
        if draw(st.booleans()):
            v[outer][inner] = new
        else:
            v[outer].pop(inner, None)
    elif draw(st.booleans()):
        v[key] = new
    else:
        del v[key]
    return v


@given(
    st.one_of(
        st.binary(max_size=300),
        near_configs().map(_loose_encode),
        st.builds(lambda: RepoConfig(repo_id="x").encode()).flatmap(mutated),
        loose_values.map(_loose_encode),
    ),
    st.booleans(),
)
def test_config_decode_arbitrary_bytes(data, for_write):
    try:
        cfg = RepoConfig.decode(data, for_write=for_write)
    except (FormatError, UnsupportedFormatError):
        return
    try:
        enc = cfg.encode()
    except FormatError:
        return  # user/remote maps holding values the codec will not write
    assert RepoConfig.decode(enc, for_write=for_write).encode() == enc


# -- compress --------------------------------------------------------------------------------


def _zstd(raw: bytes) -> bytes:
    codec_, payload = compress_chunk(raw)
    assert codec_ == CODEC_ZSTD
    return bytes(payload)


payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=64, max_size=2000).map(lambda b: b * 4).map(_zstd).flatmap(mutated),
)


@given(
    st.integers(min_value=-2, max_value=4),
    payloads,
    # raw lengths stay small: a frame without a content size may allocate up to raw_len
    st.one_of(st.integers(min_value=-5, max_value=1 << 14), st.integers(-(2**40), -1)),
)
def test_compress_decompress_arbitrary_payloads(codec_, payload, raw_len):
    try:
        out = decompress_chunk(codec_, payload, raw_len)
    except (CorruptObjectError, UnsupportedFormatError):
        return
    assert len(out) == raw_len


@FEW
@given(st.one_of(st.binary(max_size=5000), st.binary(max_size=64).map(lambda b: b * 100)))
def test_compress_round_trip(raw):
    codec_, payload = compress_chunk(raw)
    assert decompress_chunk(codec_, bytes(payload), len(raw)) == raw
