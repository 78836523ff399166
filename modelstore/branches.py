"""Layer 4.5: branches, tags, switch, reset and the reflog, over a ``Repository``.

Every ref move goes through ``Repository._move_ref``: compare-and-swap plus a reflog entry,
inside one write transaction, under the writer lock.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from modelstore import reflog, refs
from modelstore.errors import BadArgumentError, RefNotFoundError, RepositoryExistsError
from modelstore.ids import ObjectId
from modelstore.metadb import Txn
from modelstore.objects import Tag
from modelstore.repository import IndexEntry, Repository

__all__ = [
    "BranchInfo",
    "TagInfo",
    "create_branch",
    "create_tag",
    "delete_branch",
    "delete_tag",
    "is_ancestor",
    "list_branches",
    "list_tags",
    "read_reflog",
    "rename_branch",
    "reset",
    "switch",
]


@dataclass(frozen=True)
class BranchInfo:
    """A branch and where it points."""

    name: str
    commit: str
    current: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class TagInfo:
    """A tag: lightweight (a name for a commit) or annotated (a tag object)."""

    name: str
    commit: str
    annotated: bool
    tagger: str | None = None
    time: int | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def is_ancestor(repo: Repository, txn: Txn, anc: bytes, desc: bytes) -> bool:
    """Whether ``anc`` is ``desc`` or one of its ancestors."""
    seen: set[bytes] = set()
    stack = [desc]
    while stack:
        oid = stack.pop()
        if oid == anc:
            return True
        if oid in seen:
            continue
        seen.add(oid)
        stack.extend(repo.get_commit(oid, txn).parents)
    return False


def list_branches(repo: Repository) -> list[BranchInfo]:
    """Every branch, sorted by name."""
    with repo.db.read() as txn:
        current, _ = repo.head(txn)
        return [
            BranchInfo(
                name.removeprefix("refs/heads/"),
                oid.hex(),
                name.removeprefix("refs/heads/") == current,
            )
            for name, oid, _ in refs.list_refs(txn, "refs/heads/")
            if oid is not None
        ]


def create_branch(repo: Repository, name: str, start: str = "HEAD") -> ObjectId:
    """Create branch ``name`` at ``start``; refuse if it exists."""
    ref = refs.branch_ref(name)

    def fn(txn: Txn) -> ObjectId:
        if txn.get("refs", ref.encode()) is not None:
            raise RepositoryExistsError(f"branch {name!r} already exists")
        oid = repo._resolve(txn, start)
        repo._move_ref(txn, ref, None, oid, "branch", f"created from {start}")
        return oid

    with repo._writing():
        result: ObjectId = repo.db.write(fn)
    return result


def delete_branch(repo: Repository, name: str, *, force: bool = False) -> ObjectId:
    """Delete a branch; unless ``force``, only if HEAD contains it (it is merged)."""
    ref = refs.branch_ref(name)

    def fn(txn: Txn) -> ObjectId:
        _, oid = refs.read_ref(txn, ref)
        if oid is None:
            raise RefNotFoundError(f"no branch named {name!r}")
        current, head = repo.head(txn)
        if current == name:
            raise BadArgumentError(f"cannot delete {name!r}: it is the current branch")
        if not force and (head is None or not is_ancestor(repo, txn, oid, head)):
            raise BadArgumentError(
                f"branch {name!r} is not merged into HEAD; delete it anyway with -D"
            )
        repo._move_ref(txn, ref, oid, None, "branch", "deleted")
        return oid

    with repo._writing():
        result: ObjectId = repo.db.write(fn)
    return result


def rename_branch(repo: Repository, old: str, new: str) -> None:
    """Rename a branch (HEAD follows if it was on it); the log records both ends."""
    old_ref, new_ref = refs.branch_ref(old), refs.branch_ref(new)

    def fn(txn: Txn) -> None:
        _, oid = refs.read_ref(txn, old_ref)
        if oid is None:
            raise RefNotFoundError(f"no branch named {old!r}")
        if txn.get("refs", new_ref.encode()) is not None:
            raise RepositoryExistsError(f"branch {new!r} already exists")
        target, _ = refs.read_ref(txn, refs.HEAD)
        repo._move_ref(txn, new_ref, None, oid, "branch", f"renamed from {old}")
        refs.delete_ref(txn, old_ref, oid)
        reflog.append(txn, old_ref, oid, None, "branch", f"renamed to {new}")
        if target == old_ref:
            refs.set_symbolic(txn, refs.HEAD, new_ref)

    with repo._writing():
        repo.db.write(fn)


def switch(
    repo: Repository,
    name: str,
    *,
    create: bool = False,
    start: str = "HEAD",
    force: bool = False,
) -> dict[str, Any]:
    """Switch to a branch (``create``: a new one at ``start``), updating the working tree.

    Refuses to overwrite uncommitted changes unless ``force``, like checkout.
    """
    ref = refs.branch_ref(name)
    if create:
        with repo.db.read() as txn:
            if txn.get("refs", ref.encode()) is not None:
                raise RepositoryExistsError(f"branch {name!r} already exists")
            _, head = refs.resolve_ref(txn, refs.HEAD)
        if head is None and start == "HEAD":
            # an unborn repository: just point HEAD at the new (unborn) branch
            with repo._writing():
                repo.db.write(lambda t: refs.set_symbolic(t, refs.HEAD, ref))
            return {"branch": name, "commit": None, "written": 0, "removed": 0}
        create_branch(repo, name, start)
    else:
        with repo.db.read() as txn:
            if txn.get("refs", ref.encode()) is None:
                raise RefNotFoundError(f"no branch named {name!r} (create it with -c)")
    res = repo.checkout(name, force=force)
    res["branch"] = name
    return res


def reset(repo: Repository, rev: str, mode: str = "mixed") -> dict[str, Any]:
    """Move the current branch (or detached HEAD) to ``rev``.

    ``soft``: only the ref. ``mixed``: and the staging index (working files kept). ``hard``:
    and the working tree (discarding local changes to tracked files).
    """
    if mode not in ("soft", "mixed", "hard"):
        raise BadArgumentError(f"unknown reset mode {mode!r} (soft, mixed or hard)")
    with repo._writing():
        with repo.db.read() as txn:
            target = repo._resolve(txn, rev)
            _, head = refs.resolve_ref(txn, refs.HEAD)
            files = repo.commit_files(target, txn)
            index = repo._index(txn)
        new_entries: dict[str, IndexEntry] = {}
        removed: list[str] = []
        if mode == "hard":
            new_entries, removed = repo._materialize(files, index, target)
        written = sum(1 for p, ie in new_entries.items() if index.get(p) is not ie)

        def fn(txn: Txn) -> None:
            repo._move_ref(txn, refs.HEAD, head, target, "reset", f"{mode} to {rev}")
            txn.delete("meta", b"merge_state")
            if mode == "soft":
                return
            if mode == "hard":
                repo._store_index(txn, index, new_entries)
                return
            staged: dict[str, IndexEntry] = {}
            for p, e in files.items():
                cur = index.get(p)
                # an unchanged entry keeps its stat cache; others get none (status rehashes)
                keep = cur is not None and cur.manifest_id == e.id and cur.mode == e.mode
                staged[p] = cur if keep and cur else IndexEntry(e.id, e.size, e.mode, 0, 0, 0, 0)
            repo._store_index(txn, index, staged)

        repo.db.write(fn)
    return {"commit": target.hex(), "mode": mode, "written": written, "removed": len(removed)}


def list_tags(repo: Repository) -> list[TagInfo]:
    """Every tag, sorted by name, with annotated tags' details."""
    out: list[TagInfo] = []
    with repo.db.read() as txn:
        for name, oid, _ in refs.list_refs(txn, "refs/tags/"):
            if oid is None:
                continue
            short = name.removeprefix("refs/tags/")
            peeled = repo._peel(txn, oid)
            if peeled != oid:
                obj = repo._get(txn, oid)
                assert isinstance(obj, Tag)
                out.append(TagInfo(short, peeled.hex(), True, obj.tagger, obj.time, obj.message))
            else:
                out.append(TagInfo(short, oid.hex(), False))
    return out


def create_tag(
    repo: Repository,
    name: str,
    rev: str = "HEAD",
    message: str | None = None,
    *,
    tagger: str | None = None,
) -> TagInfo:
    """Create an immutable tag (annotated when ``message`` is given)."""
    ref = refs.check_ref_name(f"refs/tags/{name}")
    if name.startswith("-") or not name:
        raise BadArgumentError(f"invalid tag name {name!r}")

    def fn(txn: Txn) -> TagInfo:
        if txn.get("refs", ref.encode()) is not None:
            raise RepositoryExistsError(
                f"tag {name!r} already exists (tags are immutable; delete it first with -d)"
            )
        commit = repo._resolve(txn, rev)
        if message is None:
            repo._move_ref(txn, ref, None, commit, "tag", f"tagged {rev}")
            return TagInfo(name, commit.hex(), False)
        now = int(time.time())
        tz = -time.altzone if time.localtime(now).tm_isdst > 0 else -time.timezone
        tag = Tag(commit, name, tagger or reflog.user_name(), now, tz // 60, message)
        tag_id = repo._put(txn, tag)
        repo._move_ref(txn, ref, None, tag_id, "tag", f"tagged {rev}: {message}")
        return TagInfo(name, commit.hex(), True, tag.tagger, now, message)

    with repo._writing():
        result: TagInfo = repo.db.write(fn)
    return result


def delete_tag(repo: Repository, name: str) -> None:
    """Delete a tag (the reflog keeps the record)."""
    ref = refs.check_ref_name(f"refs/tags/{name}")

    def fn(txn: Txn) -> None:
        _, oid = refs.read_ref(txn, ref)
        if oid is None:
            raise RefNotFoundError(f"no tag named {name!r}")
        repo._move_ref(txn, ref, oid, None, "tag", "deleted")

    with repo._writing():
        repo.db.write(fn)


def read_reflog(repo: Repository, ref: str = "HEAD") -> list[dict[str, Any]]:
    """A ref's moves, newest first, as JSON-ready dicts (``@{N}`` is entry N)."""
    with repo.db.read() as txn:
        full = repo._full_ref(txn, ref)
        log = reflog.entries(txn, full)
    return reflog.newest_first(full, log)
