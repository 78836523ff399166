"""Layer 4.5: merge and revert: three-way merges of trees by manifest id, never by content.

A merge compares, path by path, the manifest ids (and modes) of the merge base, our commit and
theirs. A path changed on one side takes that side; a path changed the same way on both sides
is taken once; a path changed differently on both sides is a conflict. No file content is read
or rewritten to decide any of this, so merging branches of 20 GB checkpoints that touched
different files costs metadata only; the working tree then gets just the files that differ.

Conflicts stop the merge: the merge state (other commit, message, each conflict's three
versions) is kept in the DB, the working tree and index hold our version of each conflicted
path, and the user resolves each path (``resolve``), then commits, or gives up (``abort``).
Criss-cross histories have several best common ancestors; they are merged first into a
virtual base (recursively, as git does), conflicts in that virtual merge taking the version of
the first base by id.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelstore import refs
from modelstore.branches import is_ancestor
from modelstore.errors import (
    BadArgumentError,
    NothingToCommitError,
    PathError,
    RefNotFoundError,
    UncommittedChangesError,
)
from modelstore.ids import ObjectId
from modelstore.metadb import Txn
from modelstore.objects import TreeEntry
from modelstore.repository import MERGE_STATE_KEY, IndexEntry, MergeState, Repository

__all__ = [
    "MergeResult",
    "abort",
    "merge",
    "merge_bases",
    "merge_files",
    "resolve",
    "revert",
]

Version = tuple[bytes, int, int]  # (manifest id, mode, size)


@dataclass
class MergeResult:
    """What a merge or revert did."""

    status: str  # "up-to-date", "fast-forward", "merged", "conflicts"
    commit: str | None = None
    other: str | None = None
    bases: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "status": self.status,
            "commit": self.commit,
            "other": self.other,
            "bases": self.bases,
            "changed": self.changed,
            "conflicts": self.conflicts,
        }


def _ancestors(repo: Repository, txn: Txn, start: bytes) -> set[bytes]:
    seen: set[bytes] = set()
    stack = [start]
    while stack:
        c = stack.pop()
        if c not in seen:
            seen.add(c)
            stack.extend(repo.get_commit(c, txn).parents)
    return seen


def merge_bases(repo: Repository, txn: Txn, a: bytes, b: bytes) -> list[ObjectId]:
    """The best common ancestors of ``a`` and ``b`` (several in criss-cross histories)."""
    anc_a = _ancestors(repo, txn, a)
    common: list[bytes] = []
    seen: set[bytes] = set()
    stack = [b]
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        if c in anc_a:
            common.append(c)  # its own ancestors cannot be *best* common ancestors
            continue
        stack.extend(repo.get_commit(c, txn).parents)
    best = [c for c in common if not any(c != d and is_ancestor(repo, txn, c, d) for d in common)]
    return sorted({ObjectId(c) for c in best})


def _versions(files: dict[str, TreeEntry]) -> dict[str, Version]:
    return {p: (e.id, e.mode, e.size) for p, e in files.items()}


def merge_files(
    base: dict[str, Version],
    ours: dict[str, Version],
    theirs: dict[str, Version],
    strategy: str | None = None,
    same_content: Callable[[bytes, bytes], bool] | None = None,
) -> tuple[dict[str, Version], dict[str, tuple[Version | None, Version | None, Version | None]]]:
    """Three-way merge of path → version maps; return ``(merged, conflicts)``.

    Conflicted paths keep our version in ``merged`` (or theirs with ``strategy="theirs"``;
    with a strategy no conflicts are reported). ``same_content(id_a, id_b)`` says whether two
    manifests of equal size hold the same bytes (cut two ways: deltas follow the previous
    version's cuts, FORMAT §8.2); without it only equal ids are the same.
    """
    merged: dict[str, Version] = {}
    conflicts: dict[str, tuple[Version | None, Version | None, Version | None]] = {}

    def same(a: Version | None, b: Version | None) -> bool:
        if _same(a, b):
            return True
        return (
            same_content is not None
            and a is not None
            and b is not None
            and a[1:] == b[1:]
            and same_content(a[0], b[0])
        )

    for p in sorted(set(base) | set(ours) | set(theirs)):
        b, o, t = base.get(p), ours.get(p), theirs.get(p)
        if same(o, t):
            res = o
        elif same(o, b):
            res = t
        elif same(t, b):
            res = o
        elif strategy == "ours":
            res = o
        elif strategy == "theirs":
            res = t
        else:
            conflicts[p] = (b, o, t)
            res = o
        if res is not None:
            merged[p] = res
    # a path that is a file on one side and a folder on the other cannot be both
    dirs = {q.rsplit("/", 1)[0] for q in merged if "/" in q}
    prefixes: set[str] = set()
    for d in dirs:
        parts = d.split("/")
        prefixes.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    for p in [p for p in merged if p in prefixes]:
        conflicts.setdefault(p, (base.get(p), ours.get(p), theirs.get(p)))
    return merged, conflicts


def _same_content(repo: Repository) -> Callable[[bytes, bytes], bool]:
    """Whether two file manifests hold the same bytes (their content hashes)."""

    def same(a: bytes, b: bytes) -> bool:
        ma, mb = repo.get_manifest(a), repo.get_manifest(b)
        return (ma.size, ma.content_hash) == (mb.size, mb.content_hash)

    return same


def _same(a: Version | None, b: Version | None) -> bool:
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and a[1] == b[1]


def _virtual_base(
    repo: Repository, txn: Txn, bases: list[ObjectId], depth: int = 0
) -> dict[str, Version]:
    if not bases:
        return {}
    acc = _versions(repo.commit_files(bases[0], txn))
    for other in bases[1:]:
        sub = merge_bases(repo, txn, bases[0], other) if depth < 8 else []
        vb = _virtual_base(repo, txn, sub, depth + 1)
        acc, _ = merge_files(vb, acc, _versions(repo.commit_files(other, txn)), "ours")
    return acc


def _require_clean(repo: Repository, result: dict[str, Version] | None = None) -> None:
    """Refuse to merge over a merge in progress or local changes.

    A working file that already is as ``result`` (the merge's outcome) has it, or a deleted
    one that ``result`` lacks, is no local change the merge could lose: a merge killed while
    writing the working tree left it so, and running it again must not refuse.
    """
    st = repo.status()
    if st.merging:
        raise UncommittedChangesError(
            f"a {st.merging} is in progress; commit it, or run `ms merge --abort`"
        )
    dirty = [p for _, p in st.staged] + [
        p for p in st.modified + st.deleted if result is None or not _as_result(repo, p, result)
    ]
    if dirty:
        raise UncommittedChangesError(
            f"local changes in {', '.join(sorted(dirty)[:5])}; commit them first (or "
            "`ms reset --hard`) so the merge cannot lose them"
        )


def _entry(p: str, v: Version) -> TreeEntry:
    return TreeEntry(p.rsplit("/", 1)[-1], False, v[1], v[2], ObjectId(v[0]))


def _as_result(repo: Repository, p: str, result: dict[str, Version]) -> bool:
    """Whether working path ``p`` already is what ``result`` makes it (content, or absence)."""
    v = result.get(p)
    if v is None:
        return not os.path.lexists(repo._abs(p))
    return repo._holds(p, _entry(p, v))


def _apply(
    repo: Repository, txn_files: dict[str, Version], other: bytes
) -> tuple[dict[str, IndexEntry], dict[str, IndexEntry], list[str]]:
    """Write the merged file set to the working tree; refuse to clobber untracked files."""
    with repo.db.read() as txn:
        index = repo._index(txn)
    untracked = set(repo.status().untracked)
    clobber = sorted(
        p
        for p in txn_files
        if p not in index and p in untracked and not _as_result(repo, p, txn_files)
    )
    if clobber:
        raise UncommittedChangesError(
            f"the merge would overwrite untracked files: {', '.join(clobber[:5])}; "
            "move them away or add them first"
        )
    files = {p: _entry(p, v) for p, v in txn_files.items()}
    entries, _removed = repo._materialize(files, index, other)
    changed = sorted(p for p in set(index) | set(entries) if index.get(p) is not entries.get(p))
    return index, entries, changed


def _conflict_map(
    conflicts: dict[str, tuple[Version | None, Version | None, Version | None]],
) -> dict[str, tuple[Any, Any, Any]]:
    return {
        p: tuple(list(v) if v else None for v in sides)  # type: ignore[misc]
        for p, sides in conflicts.items()
    }


def _stage(
    repo: Repository,
    index: dict[str, IndexEntry],
    entries: dict[str, IndexEntry],
    state: MergeState,
) -> None:
    """Write the merged index and the merge state in one transaction."""

    def fn(txn: Txn) -> None:
        repo._store_index(txn, index, entries)
        txn.put("meta", MERGE_STATE_KEY, state.encode())

    repo.db.write(fn)


def merge(
    repo: Repository,
    other_rev: str,
    *,
    message: str | None = None,
    strategy: str | None = None,
) -> MergeResult:
    """Merge ``other_rev`` into the current branch (see the module docstring)."""
    if strategy not in (None, "ours", "theirs"):
        raise BadArgumentError(f"unknown strategy {strategy!r} (use -X ours or -X theirs)")
    with repo._writing():
        settled = _finish_settled(repo, other_rev)
        if settled is not None:
            return settled
        with repo.db.read() as txn:
            branch, head = repo.head(txn)
            other = repo._resolve(txn, other_rev)
            if head is None:
                raise RefNotFoundError("HEAD has no commits yet; nothing to merge into")
            up_to_date = is_ancestor(repo, txn, other, head)
            bases = [] if up_to_date else merge_bases(repo, txn, head, other)
            ff = head in bases and len(bases) == 1
            base_files = _virtual_base(repo, txn, bases)
            ours = _versions(repo.commit_files(head, txn))
            theirs = _versions(repo.commit_files(other, txn))
        if up_to_date:
            _require_clean(repo)
            return MergeResult("up-to-date", head.hex(), other.hex())
        if ff:
            _require_clean(repo, theirs)
            index, entries, changed = _apply(repo, theirs, other)

            def move(txn: Txn) -> None:
                repo._move_ref(txn, refs.HEAD, head, other, "merge", f"fast-forward to {other_rev}")
                repo._store_index(txn, index, entries)

            repo.db.write(move)
            return MergeResult(
                "fast-forward", other.hex(), other.hex(), [b.hex() for b in bases], changed
            )
        merged, conflicts = merge_files(
            base_files, ours, theirs, strategy, _same_content(repo)
        )
        _require_clean(repo, merged)
        msg = message or f"Merge {other_rev}" + (f" into {branch}" if branch else "")
        index, entries, changed = _apply(repo, merged, other)
        if conflicts:
            _stage(repo, index, entries, MergeState("merge", other, msg, _conflict_map(conflicts)))
            return MergeResult(
                "conflicts", None, other.hex(), [b.hex() for b in bases], changed, sorted(conflicts)
            )

        _stage(repo, index, entries, MergeState("merge", other, msg))
        cid = repo.commit(msg, allow_empty=True)  # the lock is re-entrant: no one slips in
    return MergeResult("merged", cid.hex(), other.hex(), [b.hex() for b in bases], changed)


def _finish_settled(repo: Repository, other_rev: str) -> MergeResult | None:
    """Commit the settled merge of ``other_rev`` that a killed ``merge`` left, if there is one.

    A clean merge is two transactions (FORMAT §13 rule 11); killed between them, it leaves a
    merge in progress with no conflicts, whose index and working tree hold the result. Running
    the same merge again finishes it, as ``ms commit`` would. None: no such merge.
    """
    with repo.db.read() as txn:
        state = repo.merge_state(txn)
        if state is None or state.kind != "merge" or state.conflicts:
            return None
        other = repo._resolve(txn, other_rev)
        _, head = refs.resolve_ref(txn, refs.HEAD)
        if other != state.other or head is None:
            return None
        bases = merge_bases(repo, txn, head, other)
        ours = _versions(repo.commit_files(head, txn))
        index = {p: (e.manifest_id, e.mode, e.size) for p, e in repo._index(txn).items()}
    changed = sorted(p for p in set(ours) | set(index) if not _same(ours.get(p), index.get(p)))
    cid = repo.commit(state.message, allow_empty=True)
    return MergeResult("merged", cid.hex(), other.hex(), [b.hex() for b in bases], changed)


def resolve(
    repo: Repository, path: str, *, side: str | None = None, file: str | None = None
) -> str:
    """Settle one conflicted path with our version, theirs, or the contents of ``file``."""
    if (side is None) == (file is None) or side not in (None, "ours", "theirs"):
        raise BadArgumentError("resolve with exactly one of --ours, --theirs or --file LOCALPATH")
    with repo._writing():
        with repo.db.read() as txn:
            state = repo.merge_state(txn)
            index = repo._index(txn)
        if state is None:
            raise BadArgumentError("no merge in progress")
        rel = repo.relpath(path)
        if rel not in state.conflicts:
            raise PathError(
                f"{rel}: not a conflicted path (conflicts: "
                f"{', '.join(sorted(state.conflicts)) or 'none'})"
            )
        _, o, t = state.conflicts[rel]
        dest = repo._abs(rel)
        new_index = dict(index)
        if file is not None:
            src = Path(file)
            if not src.is_file():
                raise PathError(f"{file}: no such file")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.resolve() != dest.resolve():
                shutil.copyfile(src, dest)
            repo.add([str(dest)])
            with repo.db.read() as txn:
                new_index = repo._index(txn)
        else:
            chosen = o if side == "ours" else t
            if chosen is None:
                if dest.exists():
                    os.unlink(dest)
                new_index.pop(rel, None)
            else:
                v = (bytes(chosen[0]), int(chosen[1]), int(chosen[2]))
                new_index[rel] = repo._write_file(
                    repo.workdir, rel, _entry(rel, v), None, state.other
                )
                repo._sync_dirs()
        del state.conflicts[rel]

        def fn(txn: Txn) -> None:
            repo._store_index(txn, index, new_index)
            txn.put("meta", MERGE_STATE_KEY, state.encode())

        repo.db.write(fn)
    return rel


def abort(repo: Repository) -> list[str]:
    """Give up the merge or revert in progress: index and working tree back to HEAD."""
    with repo._writing():
        with repo.db.read() as txn:
            state = repo.merge_state(txn)
            _, head = refs.resolve_ref(txn, refs.HEAD)
            index = repo._index(txn)
            files = repo.commit_files(head, txn) if head else {}
        if state is None:
            raise BadArgumentError("no merge in progress")
        entries, removed = repo._materialize(files, index, head)

        def fn(txn: Txn) -> None:
            repo._store_index(txn, index, entries)
            txn.delete("meta", MERGE_STATE_KEY)

        repo.db.write(fn)
    return sorted(set(removed) | {p for p in entries if index.get(p) is not entries[p]})


def revert(repo: Repository, rev: str, *, message: str | None = None) -> MergeResult:
    """A new commit undoing ``rev``: a three-way merge with base ``rev``, theirs its parent."""
    with repo._writing():
        _require_clean(repo)
        with repo.db.read() as txn:
            target = repo._resolve(txn, rev)
            _, head = refs.resolve_ref(txn, refs.HEAD)
            c = repo.get_commit(target, txn)
            if len(c.parents) > 1:
                raise BadArgumentError(
                    f"{rev} is a merge commit; reverting merges is not supported"
                )
            parent_files = _versions(repo.commit_files(c.parents[0], txn)) if c.parents else {}
            base = _versions(repo.commit_files(target, txn))
            ours = _versions(repo.commit_files(head, txn)) if head else {}
        merged, conflicts = merge_files(base, ours, parent_files, same_content=_same_content(repo))
        first = c.message.splitlines()[0] if c.message else ""
        msg = message or f'Revert "{first}"\n\nThis reverts commit {target.hex()}.'
        index, entries, changed = _apply(repo, merged, target)
        _stage(repo, index, entries, MergeState("revert", target, msg, _conflict_map(conflicts)))
        if conflicts:
            return MergeResult("conflicts", None, target.hex(), [], changed, sorted(conflicts))
        try:
            cid = repo.commit(msg)
        except NothingToCommitError:
            abort(repo)
            raise NothingToCommitError(
                f"reverting {rev} changes nothing (already undone?)"
            ) from None
    return MergeResult("merged", cid.hex(), target.hex(), [], changed)
