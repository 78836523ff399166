"""Branches, tags, switch, reset, the reflog and revision syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelstore import Repository
from modelstore.branches import (
    create_branch,
    create_tag,
    delete_branch,
    delete_tag,
    list_branches,
    list_tags,
    read_reflog,
    rename_branch,
    reset,
    switch,
)
from modelstore.errors import (
    BadArgumentError,
    RefNotFoundError,
    RepositoryExistsError,
    UncommittedChangesError,
)
from modelstore.metadb import Txn
from modelstore.verify import verify


def put(repo: Repository, path: str, data: bytes) -> None:
    p = repo.workdir / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    repo.add([str(p)])


def test_branch_create_list_delete_rename(repo: Repository) -> None:
    put(repo, "a", b"1")
    c1 = repo.commit("one")
    create_branch(repo, "exp")
    assert [(b.name, b.current) for b in list_branches(repo)] == [("exp", False), ("main", True)]
    with pytest.raises(RepositoryExistsError):
        create_branch(repo, "exp")
    with pytest.raises(BadArgumentError):
        create_branch(repo, "bad..name")
    with pytest.raises(BadArgumentError):
        create_branch(repo, "has space")
    rename_branch(repo, "exp", "exp2")
    assert {b.name for b in list_branches(repo)} == {"exp2", "main"}
    assert repo.resolve("exp2") == c1
    delete_branch(repo, "exp2")
    with pytest.raises(RefNotFoundError):
        repo.resolve("exp2")
    with pytest.raises(BadArgumentError, match="current branch"):
        delete_branch(repo, "main")


def test_unmerged_branch_needs_force(repo: Repository) -> None:
    put(repo, "a", b"1")
    repo.commit("one")
    switch(repo, "exp", create=True)
    put(repo, "a", b"2")
    repo.commit("two")
    switch(repo, "main")
    with pytest.raises(BadArgumentError, match="-D"):
        delete_branch(repo, "exp")
    delete_branch(repo, "exp", force=True)


def test_switch_updates_working_tree_and_refuses_to_clobber(repo: Repository) -> None:
    put(repo, "a", b"main")
    repo.commit("m1")
    switch(repo, "exp", create=True)
    put(repo, "a", b"exp")
    put(repo, "only-exp", b"x")
    repo.commit("e1")
    switch(repo, "main")
    assert (repo.workdir / "a").read_bytes() == b"main"
    assert not (repo.workdir / "only-exp").exists()
    assert repo.head() == ("main", repo.resolve("main"))
    (repo.workdir / "a").write_bytes(b"local change")
    with pytest.raises(UncommittedChangesError):
        switch(repo, "exp")
    switch(repo, "exp", force=True)
    assert (repo.workdir / "a").read_bytes() == b"exp"
    assert repo.head()[0] == "exp"


def test_tags_lightweight_and_annotated_are_immutable(repo: Repository) -> None:
    put(repo, "a", b"1")
    c1 = repo.commit("one")
    put(repo, "a", b"2")
    c2 = repo.commit("two")
    create_tag(repo, "v1", "HEAD~1")
    info = create_tag(repo, "v2", message="release two", tagger="rel@eng")
    assert info.annotated and info.commit == c2.hex()
    assert repo.resolve("v1") == c1 and repo.resolve("v2") == c2
    assert repo.resolve("v2~1") == c1
    tags = {t.name: t for t in list_tags(repo)}
    assert tags["v2"].message == "release two" and tags["v2"].tagger == "rel@eng"
    assert not tags["v1"].annotated
    with pytest.raises(RepositoryExistsError, match="immutable"):
        create_tag(repo, "v1", "HEAD")
    delete_tag(repo, "v1")
    create_tag(repo, "v1", "HEAD")
    assert repo.resolve("v1") == c2


def test_reset_soft_mixed_hard(repo: Repository) -> None:
    put(repo, "a", b"1")
    c1 = repo.commit("one")
    put(repo, "a", b"2")
    put(repo, "b", b"b")
    repo.commit("two")
    reset(repo, "HEAD~1", "soft")
    assert repo.resolve("HEAD") == c1
    st = repo.status()
    assert sorted(st.staged) == [("added", "b"), ("modified", "a")]
    reset(repo, "main", "mixed")  # main is at c1 now: unstage everything, keep files
    st = repo.status()
    assert st.staged == [] and st.modified == ["a"] and st.untracked == ["b"]
    (repo.workdir / "b").unlink()
    reset(repo, "HEAD", "hard")
    assert (repo.workdir / "a").read_bytes() == b"1"
    assert repo.status().clean
    # the dropped commit is still reachable through the reflog
    reset(repo, "main@{3}", "hard")  # @{0..2}: the three resets; @{3}: commit "two"
    assert (repo.workdir / "b").read_bytes() == b"b"


def test_reflog_records_every_move_and_at_n_syntax(repo: Repository) -> None:
    put(repo, "a", b"1")
    c1 = repo.commit("one")
    put(repo, "a", b"2")
    c2 = repo.commit("two")
    create_branch(repo, "exp")
    switch(repo, "exp")
    log = read_reflog(repo, "main")
    assert [e["command"] for e in log] == ["commit", "commit"]
    assert [e["new"] for e in log] == [c2.hex(), c1.hex()]
    assert log[-1]["old"] is None and log[0]["old"] == c1.hex()
    assert repo.resolve("main@{0}") == c2 and repo.resolve("main@{1}") == c1
    head = read_reflog(repo, "HEAD")
    assert head[0]["command"] == "checkout"
    assert repo.resolve("@{0}") == c2
    with pytest.raises(RefNotFoundError):
        repo.resolve("main@{5}")
    assert verify(repo).ok


def test_reflog_tampering_is_detected_by_verify(repo: Repository) -> None:
    for i in range(4):
        put(repo, "a", bytes([i]))
        repo.commit(f"c{i}")
    rep = verify(repo)
    assert rep.ok
    key = b"refs/heads/main\x00" + (1).to_bytes(8, "big")

    def tamper(txn: Txn) -> None:
        from modelstore.reflog import ReflogEntry

        raw = txn.get("reflog", key)
        assert raw is not None
        e = ReflogEntry.decode(raw)
        forged = ReflogEntry(e.old, e.new, e.time_ns, "mallory", e.command, "edited", e.prev)
        txn.put("reflog", key, forged.encode())

    repo.db.write(tamper)
    rep = verify(repo)
    assert not rep.ok
    assert any(p.kind == "reflog" and "refs/heads/main" in p.where for p in rep.problems)

    def drop(txn: Txn) -> None:
        txn.delete("reflog", key)

    repo.db.write(drop)
    assert any("missing" in p.detail for p in verify(repo).problems)


def test_branch_names_follow_git_rules(repo: Repository) -> None:
    put(repo, "a", b"1")
    repo.commit("one")
    for bad in ("", "-x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b",
                "a.lock", "a/", "/a", "a//b", ".a", "HEAD", "a@{1}"):
        with pytest.raises(BadArgumentError):
            create_branch(repo, bad)
    create_branch(repo, "team/exp-1_x.y")


def test_switch_create_on_unborn_repository(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w")
    switch(r, "dev", create=True)
    (r.workdir / "f").write_text("x")
    r.add([str(r.workdir / "f")])
    r.commit("first on dev")
    assert r.head()[0] == "dev"
    assert [b.name for b in list_branches(r)] == ["dev"]
    r.close()
