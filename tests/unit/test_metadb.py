"""metadb: atomic writes, map growth, one environment per path per process, fork safety."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelstore import metadb
from modelstore.errors import RepositoryFullError, StorageError
from modelstore.metadb import DBS, MetaDB, Txn, open_metadb


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MetaDB]:
    d = open_metadb(tmp_path / "meta")
    try:
        yield d
    finally:
        metadb._registry.pop(os.path.realpath(tmp_path / "meta"), None)
        d.close()


def test_metadb_sub_databases(db):
    assert set(db.dbs) == set(DBS)
    with db.read() as t:
        assert all(t.count(name) == 0 for name in DBS)


def test_metadb_write_and_read(db):
    assert db.write(lambda t: t.put("objects", b"k", b"v")) is True
    with db.read() as t:
        assert t.get("objects", b"k") == b"v"
        assert t.get("chunks", b"k") is None  # sub-dbs are separate
        assert t.has("objects", b"k") and not t.has("objects", b"x")
        assert isinstance(t.get("objects", b"k"), bytes)


def test_metadb_put_no_overwrite(db):
    db.write(lambda t: t.put("objects", b"k", b"1"))
    assert db.write(lambda t: t.put("objects", b"k", b"2", overwrite=False)) is False
    with db.read() as t:
        assert t.get("objects", b"k") == b"1"


def test_metadb_write_is_atomic(db):
    class Boom(Exception):
        pass

    def fn(t: Txn) -> None:
        t.put("objects", b"a", b"1")
        t.put("refs", b"b", b"2")
        raise Boom

    with pytest.raises(Boom):
        db.write(fn)
    with db.read() as t:
        assert t.get("objects", b"a") is None and t.get("refs", b"b") is None
    # the environment is still usable afterwards
    db.write(lambda t: t.put("objects", b"a", b"ok"))
    with db.read() as t:
        assert t.get("objects", b"a") == b"ok"


def test_metadb_write_atomic_on_keyboard_interrupt(db):
    def fn(t: Txn) -> None:
        t.put("objects", b"a", b"1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        db.write(fn)
    with db.read() as t:
        assert t.get("objects", b"a") is None


def test_metadb_read_is_a_snapshot(db):
    db.write(lambda t: t.put("objects", b"k", b"old"))
    with db.read() as t:
        db.write(lambda w: w.put("objects", b"k", b"new"))
        assert t.get("objects", b"k") == b"old"
    with db.read() as t:
        assert t.get("objects", b"k") == b"new"


def test_metadb_grows_when_map_is_full(db):
    db.env.set_mapsize(64 * 1024)
    calls = []

    def fn(t: Txn) -> int:
        calls.append(1)
        for i in range(256):
            t.put("chunks", i.to_bytes(4, "big"), bytes([i]) * 4096)  # 1 MiB in all
        return 7

    assert db.write(fn) == 7
    assert len(calls) > 1  # it was retried after growing
    assert db.env.info()["map_size"] > 1 << 20
    with db.read() as t:
        assert t.count("chunks") == 256
        assert t.get("chunks", (255).to_bytes(4, "big")) == b"\xff" * 4096


def test_metadb_full_at_max_map_size(db, monkeypatch):
    db.env.set_mapsize(64 * 1024)
    monkeypatch.setattr(metadb, "MAX_MAP_SIZE", 256 * 1024)

    def fn(t: Txn) -> None:
        for i in range(256):
            t.put("chunks", i.to_bytes(4, "big"), bytes(4096))

    with pytest.raises(RepositoryFullError):
        db.write(fn)
    with db.read() as t:
        assert t.count("chunks") == 0


def test_metadb_items_and_keys_by_prefix(db):
    def fn(t: Txn) -> None:
        for k in (b"a/1", b"a/2", b"a/3", b"b/1", b"a"):
            t.put("index", k, k.upper())

    db.write(fn)
    with db.read() as t:
        assert t.items("index", b"a/") == [(b"a/1", b"A/1"), (b"a/2", b"A/2"), (b"a/3", b"A/3")]
        assert t.items("index", b"a/", limit=2) == [(b"a/1", b"A/1"), (b"a/2", b"A/2")]
        assert t.keys("index", b"b") == [b"b/1"]
        assert t.keys("index", b"c") == []
        assert t.items("index", b"zzz") == []
        assert len(t.items("index")) == 5
        assert t.count("index") == 5
    assert db.write(lambda t: t.delete("index", b"a")) is True
    assert db.write(lambda t: t.delete("index", b"a")) is False


def test_metadb_one_env_per_path(db, tmp_path):
    assert open_metadb(tmp_path / "meta") is db
    assert open_metadb(tmp_path / "x" / ".." / "meta") is db
    (tmp_path / "link").symlink_to(tmp_path / "meta")
    assert open_metadb(tmp_path / "link") is db


def test_metadb_child_gets_new_env_after_fork(db, tmp_path):
    db.write(lambda t: t.put("objects", b"k", b"from parent"))
    err = tmp_path / "child-error.txt"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child = open_metadb(tmp_path / "meta")
            with child.read() as t:
                ok = t.get("objects", b"k") == b"from parent"
            ok = ok and child.pid == os.getpid()  # its own environment, opened on first use
            child.write(lambda t: t.put("objects", b"c", b"from child"))
            code = 0 if ok else 2
        except BaseException as exc:
            err.write_text(f"{type(exc).__name__}: {exc}")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, err.read_text() if err.exists() else ""
    # the parent's environment is untouched and sees the child's commit
    assert open_metadb(tmp_path / "meta") is db
    with db.read() as t:
        assert t.get("objects", b"c") == b"from child"
    db.write(lambda t: t.put("objects", b"p", b"still writable"))


def test_metadb_parent_unaffected_by_fork(db, tmp_path):
    """A child that never touches the database leaves the parent's reader slots alone."""
    db.write(lambda t: t.put("objects", b"k", b"v"))
    with db.read() as t:
        assert t.get("objects", b"k") == b"v"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os._exit(0)
    os.waitpid(pid, 0)
    assert open_metadb(tmp_path / "meta") is db
    with db.read() as t:
        assert t.get("objects", b"k") == b"v"
        assert str(os.getpid()) in db.env.readers()
    db.write(lambda t: t.put("objects", b"k2", b"v2"))


def test_metadb_fork_with_reads_in_other_threads(db, tmp_path):
    """Readers in other threads pause around a fork; both sides keep working."""
    import threading

    db.write(lambda t: t.put("objects", b"k", b"v"))
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader():
        try:
            while not stop.is_set():
                with db.read() as t:
                    assert t.get("objects", b"k") == b"v"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    with open_metadb(tmp_path / "meta").read() as t:
                        code = 0 if t.get("objects", b"k") == b"v" else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors
    db.write(lambda t: t.put("objects", b"after", b"fork"))


def test_metadb_fork_inside_a_transaction_is_refused_in_the_child(db, tmp_path):
    db.write(lambda t: t.put("objects", b"k", b"v"))
    import modelstore.metadb as m

    old = m.FORK_DRAIN_SECONDS
    m.FORK_DRAIN_SECONDS = 0.05
    try:
        with db.read():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    with db.read():
                        pass
                except StorageError as exc:
                    code = 0 if "forked" in str(exc) else 3
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
    finally:
        m.FORK_DRAIN_SECONDS = old
    assert os.waitstatus_to_exitcode(status) == 0
    with db.read() as t:  # the parent's environment is still fine
        assert t.get("objects", b"k") == b"v"
