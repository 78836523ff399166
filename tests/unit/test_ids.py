"""ids: plain BLAKE3 for chunks, derive-key BLAKE3 per object kind."""

from __future__ import annotations

import pytest
from blake3 import blake3

from modelstore import ids
from modelstore.errors import BadArgumentError

# official BLAKE3 test vectors (input of length 0), as b3sum prints them
EMPTY_HASH = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
EMPTY_DERIVE_KEY = "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d"


def test_ids_chunk_id_is_plain_blake3():
    assert ids.chunk_id(b"").hex() == EMPTY_HASH
    assert ids.chunk_id(b"abc").hex() == (
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    )
    data = bytes(range(256)) * 50
    assert ids.chunk_id(data) == blake3(data).digest()
    assert ids.chunk_id(memoryview(data)) == ids.chunk_id(bytearray(data)) == ids.chunk_id(data)
    assert len(ids.chunk_id(data)) == ids.ID_LEN


def test_ids_hasher_is_plain_blake3():
    h = ids.hasher()
    h.update(b"ab")
    h.update(b"c")
    assert h.digest() == ids.chunk_id(b"abc")


def test_ids_derive_key_mode_matches_reference():
    ctx = "BLAKE3 2019-12-27 16:29:52 test vectors context"
    assert blake3(b"", derive_key_context=ctx).hexdigest() == EMPTY_DERIVE_KEY


def test_ids_object_id_is_derive_key_with_kind_context():
    enc = b"\x93\x01\x02\x03"
    for kind, ctx in ids.KIND_CONTEXTS.items():
        assert ids.object_id(kind, enc) == blake3(enc, derive_key_context=ctx).digest()


def test_ids_object_ids_differ_across_kinds():
    enc = b"\x91\x01"
    got = {ids.object_id(k, enc) for k in ids.KIND_CONTEXTS}
    got.add(ids.chunk_id(enc))
    assert len(got) == len(ids.KIND_CONTEXTS) + 1


def test_ids_contexts_are_pinned():
    assert ids.KIND_CONTEXTS == {
        "manifest": "modelstore 2026-11 file manifest v1",
        "tree": "modelstore 2026-11 tree v1",
        "commit": "modelstore 2026-11 commit v1",
        "chunklist": "modelstore 2026-11 chunk list v1",
        "tag": "modelstore 2026-11 tag v1",
        "pack": "modelstore 2026-11 pack v1",
    }


def test_ids_hex_round_trip():
    raw = bytes(range(32))
    text = ids.to_hex(raw)
    assert text == raw.hex() and text.islower()
    assert ids.from_hex(text) == raw
    assert ids.from_hex(text.upper()) == raw


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ab",
        "0" * 63,
        "0" * 65,
        "g" * 64,
        "0" * 62 + "zz",
        "  " + "00" * 31,  # bytes.fromhex skips whitespace: would give a 31-byte id
        "\t\n" + "ab" * 31,
        "00 " * 21 + "0",
        "\uff10" * 64,  # full-width digits
    ],
)
def test_ids_from_hex_errors(text):
    with pytest.raises(BadArgumentError) as ei:
        ids.from_hex(text)
    assert "\n" not in str(ei.value)
