"""refs: ref names, compare-and-swap updates and symbolic refs, on a real MetaDB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelstore import metadb, refs
from modelstore.errors import BadArgumentError, FormatError, RefConflictError
from modelstore.ids import ObjectId
from modelstore.metadb import MetaDB, Txn, open_metadb

A = ObjectId(bytes([0xA]) * 32)
B = ObjectId(bytes([0xB]) * 32)
C = ObjectId(bytes([0xC]) * 32)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MetaDB]:
    d = open_metadb(tmp_path / "meta")
    try:
        yield d
    finally:
        metadb._registry.pop(os.path.realpath(tmp_path / "meta"), None)
        d.close()


def _read(db: MetaDB, fn):
    with db.read() as txn:
        return fn(txn)


@pytest.mark.parametrize(
    "name",
    [
        "HEAD",
        "refs/heads/main",
        "refs/heads/feature/x-1",
        "refs/tags/v1.0",
        "refs/heads/a.b",
        "refs/heads/ünïcode",
        "refs/x",
        "refs/heads/a@b",
        "refs/heads/@",
        "refs/heads/lock",
        "refs/heads/x.locked",
        "refs/heads/" + "a" * 244,  # 255 characters
    ],
)
def test_refs_check_ref_name_accepts(name):
    assert refs.check_ref_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "main",
        "heads/main",
        "head",
        "refs",
        "refs/",
        "refs//x",
        "refs/heads/",
        "/refs/heads/x",
        "refs/heads/a..b",
        "refs/heads/.hidden",
        "refs/.heads/x",
        "refs/heads/x.",
        "refs/heads/x.lock",
        "refs/heads/x.lock/y",  # no component may end in .lock
        "refs/heads/a b",
        "refs/heads/a\tb",
        "refs/heads/a\x00b",
        "refs/heads/a\x7fb",
        "refs/heads/a~1",
        "refs/heads/a^",
        "refs/heads/a:b",
        "refs/heads/a?",
        "refs/heads/a*",
        "refs/heads/a[b",
        "refs/heads/a\\b",
        "refs/heads/a@{1}",
        "refs/heads/" + "a" * 245,  # 256 characters
        "refs/heads/bad\udcff",  # not encodable as UTF-8
    ],
)
def test_refs_check_ref_name_refuses(name):
    with pytest.raises(BadArgumentError) as ei:
        refs.check_ref_name(name)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize(
    ("branch", "ref"),
    [("main", "refs/heads/main"), ("a/b", "refs/heads/a/b"), ("refs/tags/v1", "refs/tags/v1")],
)
def test_refs_branch_ref(branch, ref):
    assert refs.branch_ref(branch) == ref


@pytest.mark.parametrize("branch", ["", "-x", "HEAD", "a..b", "a b", "x.lock", ".x"])
def test_refs_branch_ref_refuses(branch):
    with pytest.raises(BadArgumentError):
        refs.branch_ref(branch)


def test_refs_set_if_equals_creates_and_moves(db):
    db.write(lambda t: refs.set_if_equals(t, "refs/heads/main", None, A))
    assert _read(db, lambda t: refs.read_ref(t, "refs/heads/main")) == (None, A)
    db.write(lambda t: refs.set_if_equals(t, "refs/heads/main", A, B))
    assert _read(db, lambda t: refs.read_ref(t, "refs/heads/main")) == (None, B)


def test_refs_set_if_equals_conflict(db):
    db.write(lambda t: refs.set_if_equals(t, "refs/heads/main", None, A))
    with pytest.raises(RefConflictError, match="refs/heads/main moved"):
        db.write(lambda t: refs.set_if_equals(t, "refs/heads/main", B, C))
    with pytest.raises(RefConflictError):
        db.write(lambda t: refs.set_if_equals(t, "refs/heads/main", None, C))
    with pytest.raises(RefConflictError, match="moved to nothing"):
        db.write(lambda t: refs.set_if_equals(t, "refs/heads/other", A, C))
    assert _read(db, lambda t: refs.read_ref(t, "refs/heads/main")) == (None, A)
    assert _read(db, lambda t: refs.read_ref(t, "refs/heads/other")) == (None, None)


def test_refs_conflict_aborts_whole_transaction(db):
    def fn(t: Txn) -> None:
        t.put("objects", b"k", b"v")
        refs.set_if_equals(t, "refs/heads/main", A, B)

    with pytest.raises(RefConflictError):
        db.write(fn)
    assert _read(db, lambda t: t.get("objects", b"k")) is None


def test_refs_set_if_equals_refuses_bad_name(db):
    with pytest.raises(BadArgumentError):
        db.write(lambda t: refs.set_if_equals(t, "refs/heads/a..b", None, A))


def test_refs_symbolic_head_resolution(db):
    def init(t: Txn) -> None:
        refs.set_symbolic(t, refs.HEAD, "refs/heads/main")

    db.write(init)
    assert _read(db, lambda t: refs.read_ref(t, "HEAD")) == ("refs/heads/main", None)
    assert _read(db, lambda t: refs.resolve_ref(t, "HEAD")) == ("refs/heads/main", None)  # unborn
    db.write(lambda t: refs.set_if_equals(t, "HEAD", None, A))  # moves the branch, not HEAD
    assert _read(db, lambda t: refs.resolve_ref(t, "HEAD")) == ("refs/heads/main", A)
    assert _read(db, lambda t: refs.read_ref(t, "HEAD")) == ("refs/heads/main", None)
    assert _read(db, lambda t: refs.read_ref(t, "refs/heads/main")) == (None, A)
    with pytest.raises(RefConflictError, match="refs/heads/main"):
        db.write(lambda t: refs.set_if_equals(t, "HEAD", None, B))


def test_refs_detached_head(db):
    db.write(lambda t: refs.set_if_equals(t, "HEAD", None, A))
    assert _read(db, lambda t: refs.resolve_ref(t, "HEAD")) == ("HEAD", A)


def test_refs_chained_symbolic_refs(db):
    def fn(t: Txn) -> None:
        refs.set_symbolic(t, "HEAD", "refs/heads/alias")
        refs.set_symbolic(t, "refs/heads/alias", "refs/heads/main")
        refs.set_if_equals(t, "refs/heads/main", None, C)

    db.write(fn)
    assert _read(db, lambda t: refs.resolve_ref(t, "HEAD")) == ("refs/heads/main", C)


def test_refs_symbolic_loop_detected(db):
    def fn(t: Txn) -> None:
        refs.set_symbolic(t, "refs/heads/a", "refs/heads/b")
        refs.set_symbolic(t, "refs/heads/b", "refs/heads/a")
        refs.set_symbolic(t, "HEAD", "refs/heads/a")
        refs.set_symbolic(t, "refs/heads/self", "refs/heads/self")

    db.write(fn)
    for name in ("HEAD", "refs/heads/a", "refs/heads/self"):
        with pytest.raises(FormatError, match="loop"):
            _read(db, lambda t, n=name: refs.resolve_ref(t, n))
    with pytest.raises(FormatError):
        db.write(lambda t: refs.set_if_equals(t, "HEAD", None, A))


def test_refs_long_symbolic_chain_refused(db):
    def fn(t: Txn) -> None:
        for i in range(20):
            refs.set_symbolic(t, f"refs/s/{i}", f"refs/s/{i + 1}")

    db.write(fn)
    with pytest.raises(FormatError):
        _read(db, lambda t: refs.resolve_ref(t, "refs/s/0"))


def test_refs_set_symbolic_checks_names(db):
    with pytest.raises(BadArgumentError):
        db.write(lambda t: refs.set_symbolic(t, "HEAD", "main"))
    with pytest.raises(BadArgumentError):
        db.write(lambda t: refs.set_symbolic(t, "refs/x y", "refs/heads/main"))


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x01" + bytes(31), b"\x01" + bytes(33), b"\x02",
                                 b"\x03abc", b"\x00" + bytes(32)])
def test_refs_malformed_value(db, raw):
    db.write(lambda t: t.put("refs", b"refs/heads/bad", raw))
    with pytest.raises(FormatError, match="malformed"):
        _read(db, lambda t: refs.read_ref(t, "refs/heads/bad"))
    with pytest.raises(FormatError):
        _read(db, lambda t: refs.list_refs(t))


def test_refs_list_refs(db):
    def fn(t: Txn) -> None:
        refs.set_symbolic(t, "HEAD", "refs/heads/main")
        refs.set_if_equals(t, "refs/heads/main", None, A)
        refs.set_if_equals(t, "refs/heads/dev", None, B)
        refs.set_if_equals(t, "refs/tags/v1", None, C)
        refs.set_symbolic(t, "refs/heads/alias", "refs/heads/dev")

    db.write(fn)
    assert _read(db, refs.list_refs) == [
        ("refs/heads/alias", None, "refs/heads/dev"),
        ("refs/heads/dev", B, None),
        ("refs/heads/main", A, None),
        ("refs/tags/v1", C, None),
    ]
    assert _read(db, lambda t: refs.list_refs(t, "refs/tags/")) == [("refs/tags/v1", C, None)]
    assert _read(db, lambda t: refs.list_refs(t, "refs/nothing/")) == []
    assert _read(db, lambda t: refs.list_refs(t, ""))[0] == ("HEAD", None, "refs/heads/main")


def test_refs_delete_ref(db):
    db.write(lambda t: refs.set_if_equals(t, "refs/heads/x", None, A))
    with pytest.raises(RefConflictError):
        db.write(lambda t: refs.delete_ref(t, "refs/heads/x", B))
    assert db.write(lambda t: refs.delete_ref(t, "refs/heads/x", A)) is True
    assert db.write(lambda t: refs.delete_ref(t, "refs/heads/x")) is False
    assert _read(db, refs.list_refs) == []
