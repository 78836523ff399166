"""Three-way merges by manifest id: fast-forward, clean, conflicts, resolve, abort, revert."""

from __future__ import annotations

import pytest

from modelstore import Repository
from modelstore.branches import create_branch, switch
from modelstore.errors import BadArgumentError, PathError, UncommittedChangesError
from modelstore.merge import abort, merge, merge_bases, resolve, revert
from modelstore.verify import verify


def put(repo: Repository, path: str, data: bytes) -> None:
    p = repo.workdir / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    repo.add([str(p)])


def read(repo: Repository, path: str) -> bytes:
    return (repo.workdir / path).read_bytes()


@pytest.fixture
def forked(repo: Repository) -> Repository:
    """main and exp diverged from a common base."""
    put(repo, "shared.bin", b"s" * 5000)
    put(repo, "a.txt", b"base a")
    put(repo, "b.txt", b"base b")
    repo.commit("base")
    create_branch(repo, "exp")
    put(repo, "a.txt", b"main a")
    repo.commit("main edits a")
    switch(repo, "exp")
    put(repo, "b.txt", b"exp b")
    put(repo, "new/exp.txt", b"new on exp")
    repo.commit("exp edits b")
    switch(repo, "main")
    return repo


def test_fast_forward(repo: Repository) -> None:
    put(repo, "a", b"1")
    repo.commit("one")
    switch(repo, "exp", create=True)
    put(repo, "a", b"2")
    c2 = repo.commit("two")
    switch(repo, "main")
    res = merge(repo, "exp")
    assert res.status == "fast-forward" and res.commit == c2.hex()
    assert repo.resolve("main") == c2 and read(repo, "a") == b"2"
    assert merge(repo, "exp").status == "up-to-date"


def test_clean_three_way_merge_makes_a_two_parent_commit(forked: Repository) -> None:
    repo = forked
    main_before, exp = repo.resolve("main"), repo.resolve("exp")
    res = merge(repo, "exp", message="merge exp")
    assert res.status == "merged" and res.conflicts == []
    c = repo.get_commit(bytes.fromhex(res.commit or ""))
    assert c.parents == (main_before, exp) and c.message == "merge exp"
    assert read(repo, "a.txt") == b"main a" and read(repo, "b.txt") == b"exp b"
    assert read(repo, "new/exp.txt") == b"new on exp"
    assert repo.status().clean
    assert sorted(res.changed) == ["b.txt", "new/exp.txt"]  # shared.bin was never rewritten
    assert verify(repo).ok


def test_merge_does_not_rewrite_files_both_sides_share(forked: Repository) -> None:
    repo = forked
    before = (repo.workdir / "shared.bin").stat()
    merge(repo, "exp")
    after = (repo.workdir / "shared.bin").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def _conflict(repo: Repository) -> None:
    put(repo, "m.bin", b"base")
    repo.commit("base")
    create_branch(repo, "exp")
    put(repo, "m.bin", b"ours")
    put(repo, "only-main", b"x")
    repo.commit("ours")
    switch(repo, "exp")
    put(repo, "m.bin", b"theirs")
    put(repo, "only-exp", b"y")
    repo.commit("theirs")
    switch(repo, "main")


def test_conflict_stops_then_resolve_and_commit(repo: Repository) -> None:
    _conflict(repo)
    res = merge(repo, "exp")
    assert res.status == "conflicts" and res.conflicts == ["m.bin"]
    st = repo.status()
    assert st.merging == "merge" and st.conflicts == ["m.bin"] and not st.clean
    assert read(repo, "m.bin") == b"ours" and read(repo, "only-exp") == b"y"
    with pytest.raises(UncommittedChangesError, match="conflict"):
        repo.commit("too early")
    resolve(repo, str(repo.workdir / "m.bin"), side="theirs")
    assert read(repo, "m.bin") == b"theirs"
    cid = repo.commit("merged with theirs")
    assert len(repo.get_commit(cid).parents) == 2
    assert repo.status().clean and verify(repo).ok


def test_resolve_with_a_local_file_and_ours(repo: Repository) -> None:
    _conflict(repo)
    merge(repo, "exp")
    local = repo.workdir.parent / "fixed.bin"
    local.write_bytes(b"hand merged")
    resolve(repo, str(repo.workdir / "m.bin"), file=str(local))
    assert read(repo, "m.bin") == b"hand merged"
    with pytest.raises(PathError, match="not a conflicted path"):
        resolve(repo, str(repo.workdir / "m.bin"), side="ours")
    with pytest.raises(BadArgumentError):
        resolve(repo, str(repo.workdir / "m.bin"), side="ours", file=str(local))
    cid = repo.commit("hand merge")
    assert repo.cat("HEAD", "m.bin", __import__("io").BytesIO()) == len(b"hand merged")
    assert len(repo.get_commit(cid).parents) == 2


def test_abort_restores_head(repo: Repository) -> None:
    _conflict(repo)
    head = repo.resolve("HEAD")
    merge(repo, "exp")
    abort(repo)
    assert repo.resolve("HEAD") == head
    assert read(repo, "m.bin") == b"ours" and not (repo.workdir / "only-exp").exists()
    assert repo.status().clean


@pytest.mark.parametrize(("strategy", "want"), [("ours", b"ours"), ("theirs", b"theirs")])
def test_strategy_option_settles_conflicts(repo: Repository, strategy: str, want: bytes) -> None:
    _conflict(repo)
    res = merge(repo, "exp", strategy=strategy)
    assert res.status == "merged" and read(repo, "m.bin") == want
    assert read(repo, "only-exp") == b"y" and read(repo, "only-main") == b"x"


def test_modify_delete_is_a_conflict(repo: Repository) -> None:
    put(repo, "f", b"base")
    repo.commit("base")
    create_branch(repo, "exp")
    repo.rm([str(repo.workdir / "f")])
    repo.commit("delete f")
    switch(repo, "exp")
    put(repo, "f", b"changed")
    repo.commit("modify f")
    switch(repo, "main")
    res = merge(repo, "exp")
    assert res.conflicts == ["f"]
    resolve(repo, str(repo.workdir / "f"), side="ours")  # ours deleted it
    assert not (repo.workdir / "f").exists()
    repo.commit("keep deleted")


def test_merge_refuses_with_local_changes(forked: Repository) -> None:
    (forked.workdir / "a.txt").write_bytes(b"uncommitted")
    with pytest.raises(UncommittedChangesError):
        merge(forked, "exp")


def test_criss_cross_merge_bases(repo: Repository) -> None:
    put(repo, "x", b"0")
    put(repo, "y", b"0")
    repo.commit("root")
    create_branch(repo, "b")
    put(repo, "x", b"main1")
    m1 = repo.commit("main1")
    switch(repo, "b")
    put(repo, "y", b"b1")
    b1 = repo.commit("b1")
    # criss-cross: each side merges the other's first commit
    merge(repo, m1.hex(), message="b merges main1")
    switch(repo, "main")
    merge(repo, b1.hex(), message="main merges b1")
    put(repo, "x", b"main2")
    repo.commit("main2")
    switch(repo, "b")
    put(repo, "y", b"b2")
    repo.commit("b2")
    switch(repo, "main")
    with repo.db.read() as txn:
        bases = merge_bases(repo, txn, repo.resolve("main", txn), repo.resolve("b", txn))
    assert len(bases) == 2  # two best common ancestors
    res = merge(repo, "b")
    assert res.status == "merged" and len(res.bases) == 2
    assert read(repo, "x") == b"main2" and read(repo, "y") == b"b2"
    assert verify(repo).ok


def test_revert_undoes_a_commit(repo: Repository) -> None:
    put(repo, "a", b"1")
    repo.commit("one")
    put(repo, "a", b"2")
    put(repo, "b", b"b")
    bad = repo.commit("two")
    put(repo, "c", b"c")
    repo.commit("three")
    res = revert(repo, bad.hex())
    assert res.status == "merged"
    assert read(repo, "a") == b"1" and not (repo.workdir / "b").exists()
    assert read(repo, "c") == b"c"
    c = repo.get_commit(repo.resolve("HEAD"))
    assert c.message.startswith('Revert "two"') and len(c.parents) == 1


def test_checkout_refuses_during_a_merge(repo: Repository) -> None:
    _conflict(repo)
    merge(repo, "exp")
    with pytest.raises(UncommittedChangesError, match="in progress"):
        repo.checkout("exp")
    abort(repo)
    repo.checkout("exp")
    assert read(repo, "m.bin") == b"theirs"
