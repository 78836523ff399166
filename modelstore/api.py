"""Layer 5: the porcelain: one function per CLI verb, returning plain result objects.

Every function takes a path or an open ``Repository`` (closing only what it opened, like
dulwich's ``open_repo_closing``) and returns dataclasses with a ``to_json()``; nothing here
prints. The CLI adds nothing the library lacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, BinaryIO

from modelstore import aliases as _aliases
from modelstore import branches as _br
from modelstore import compare as _compare
from modelstore import diff as _diff
from modelstore import gc as _gc
from modelstore import lineage as _lineage
from modelstore import merge as _merge
from modelstore import sync as _sync
from modelstore.aliases import AliasInfo
from modelstore.backend import open_backend
from modelstore.branches import BranchInfo, TagInfo
from modelstore.chunker import FEATURE_TENSOR_CHUNKING, ChunkerParams
from modelstore.compare import CompareResult
from modelstore.compress import FEATURE_DELTA, FEATURE_PLANES
from modelstore.datasets import DatasetSummary
from modelstore.diff import DiffResult
from modelstore.errors import BadArgumentError, PathError
from modelstore.gc import GcResult
from modelstore.merge import MergeResult
from modelstore.objects import Commit
from modelstore.repository import Repository, Status
from modelstore.sync import SyncResult
from modelstore.verify import Problem, RepairReport, VerifyReport
from modelstore.verify import repair as _repair
from modelstore.verify import verify as _verify
from modelstore.verify import verify_remote as _verify_remote

if TYPE_CHECKING:
    import numpy.typing as npt

    from modelstore.tensors import TensorInfo

__all__ = [
    "AddResult",
    "CommitInfo",
    "FileInfo",
    "ProgressFn",
    "RepoLike",
    "add",
    "cat",
    "dataset_schema",
    "checkout",
    "commit",
    "enable_float_codec",
    "init",
    "log",
    "load_tensor",
    "ls",
    "open_repo",
    "restore",
    "rm",
    "show",
    "stats",
    "status",
    "tensors",
    "alias_history",
    "alias_list",
    "alias_set",
    "alias_show",
    "branch_create",
    "branch_delete",
    "branch_rename",
    "branches",
    "clone",
    "diff",
    "export",
    "fetch",
    "gc",
    "pull",
    "push",
    "remote_add",
    "remote_remove",
    "remote_set_url",
    "remotes",
    "merge",
    "merge_abort",
    "merge_resolve",
    "reflog",
    "reset",
    "revert",
    "rollback",
    "switch",
    "tag_create",
    "tag_delete",
    "tags",
    "verify",
    "verify_json",
    "repair",
    "repair_json",
]

RepoLike = Repository | str | os.PathLike[str]
ProgressFn = Callable[[int], None]


@contextmanager
def open_repo(repo: RepoLike | None = None) -> Iterator[Repository]:
    """Yield an open repository; close it afterwards only if we opened it."""
    if isinstance(repo, Repository):
        yield repo
        return
    r = Repository.open(repo if repo is not None else ".")
    try:
        yield r
    finally:
        r.close()


@dataclass
class CommitInfo:
    """A commit as shown to users."""

    id: str
    tree: str
    parents: list[str]
    author: str
    time: int
    tz_offset_min: int
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, oid: bytes, c: Commit) -> CommitInfo:
        """Build from a commit object."""
        return cls(
            oid.hex(),
            c.tree_id.hex(),
            [p.hex() for p in c.parents],
            c.author,
            c.time,
            c.tz_offset,
            c.message,
            c.extra,
        )

    @property
    def date(self) -> str:
        """ISO 8601 date in the committer's offset."""
        tz = timezone(timedelta(minutes=self.tz_offset_min))
        return datetime.fromtimestamp(self.time, tz).isoformat()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["date"] = self.date
        return d


@dataclass
class FileInfo:
    """A file or folder in a tree."""

    path: str
    type: str
    size: int
    mode: str
    id: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class AddResult:
    """What ``add`` did."""

    added: list[str]
    unchanged: list[str]
    bytes_read: int
    new_bytes: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def init(
    path: str | os.PathLike[str] = ".",
    *,
    chunker: ChunkerParams | None = None,
    pack_size: int | None = None,
    planes: bool = True,
    delta: bool = True,
    delta_depth: int | None = None,
) -> Repository:
    """Create a repository; return it open (the caller closes it).

    ``planes=False``: no byte-plane codec for floats, so older ms versions can read it (no
    deltas either). ``delta=False``: no XOR deltas against the previous version;
    ``delta_depth``: at most that many deltas in a row before a full copy (default 2).
    """
    return Repository.init(
        path,
        chunker=chunker,
        pack_size=pack_size,
        planes=planes,
        delta=delta,
        delta_depth=delta_depth,
    )


def enable_float_codec(repo: RepoLike) -> bool:
    """Let an existing repository store floats as byte planes; False if it already did.

    Versions of ms that do not know the ``codec-planes-v1`` feature then refuse it.
    """
    with open_repo(repo) as r:
        return r.enable_feature(FEATURE_PLANES)


def enable_deltas(repo: RepoLike) -> bool:
    """Let an existing repository store deltas against the previous version; False if it did.

    Deltas need the float codec (turned on too) and tensor-aware chunking, which decides
    the boundaries of every file and so cannot be switched on later. Versions of ms that do
    not know the ``codec-xor-delta-v1`` feature then refuse the repository.
    """
    with open_repo(repo) as r:
        if FEATURE_TENSOR_CHUNKING not in r.config.compat:
            raise BadArgumentError(
                "deltas need tensor-aware chunking, which this repository was created "
                "without; create a new repository (ms init) and push into it"
            )
        r.enable_feature(FEATURE_PLANES)
        return r.enable_feature(FEATURE_DELTA)


def add(
    repo: RepoLike,
    paths: list[str],
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> AddResult:
    """Stage files and folders; ``progress(n)`` per bytes read, ``on_total(bytes)`` once."""
    if not paths:
        raise BadArgumentError("nothing to add (give files or folders)")
    with open_repo(repo) as r:
        res = r.add(paths, progress, on_total)
    return AddResult(res["added"], res["unchanged"], res["bytes_read"], res["new_bytes"])


def status(repo: RepoLike) -> Status:
    """Staged, modified, deleted and untracked paths."""
    with open_repo(repo) as r:
        return r.status()


def status_json(st: Status) -> dict[str, Any]:
    """JSON form of a status."""
    return {
        "branch": st.branch,
        "head": st.head.hex() if st.head else None,
        "staged": [{"change": c, "path": p} for c, p in st.staged],
        "modified": st.modified,
        "deleted": st.deleted,
        "untracked": st.untracked,
        "merging": st.merging,
        "conflicts": st.conflicts,
        "clean": st.clean,
    }


def commit(
    repo: RepoLike,
    message: str,
    *,
    author: str | None = None,
    allow_empty: bool = False,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    inputs: list[str] | None = None,
    capture: bool = True,
) -> CommitInfo:
    """Commit the staging index with its provenance; return the new commit.

    ``metrics`` and ``params`` keep their types; ``inputs`` name what the model was trained
    on (``PATH``, ``REV:PATH``, ``ms://REPO@REV/PATH`` or a URL), each pinned to its content
    id (see ``lineage.resolve_inputs``); ``capture`` records git, Python, packages, command
    line, user and host. All of it is hashed into the commit id.
    """
    with open_repo(repo) as r:
        extra = _lineage.provenance(
            metrics=metrics,
            params=params,
            inputs=_lineage.resolve_inputs(r, inputs) if inputs else None,
            environment=_lineage.capture(r.workdir) if capture else None,
        )
        oid = r.commit(message, author=author, allow_empty=allow_empty, extra=extra)
        return CommitInfo.of(oid, r.get_commit(oid))


def log(
    repo: RepoLike, rev: str = "HEAD", limit: int | None = None, *, first_parent: bool = False
) -> list[CommitInfo]:
    """History from ``rev``, newest first (children before parents)."""
    with open_repo(repo) as r:
        return [CommitInfo.of(oid, c) for oid, c in r.log(rev, limit, first_parent=first_parent)]


def ls(
    repo: RepoLike, rev: str = "HEAD", path: str = "", recursive: bool = False
) -> list[FileInfo]:
    """List a folder (or one file) of a commit."""
    with open_repo(repo) as r, r.db.read() as txn:
        cid = r.resolve(rev, txn)
        e = r.lookup(cid, path, txn)
        if e is None:
            raise PathError(f"{path}: not in {rev}")
        base = path.strip("/")
        if not e.is_dir:
            return [FileInfo(base, "file", e.size, f"{e.mode:o}", e.id.hex())]
        if recursive:
            files = r.walk_tree(e.id, txn, prefix=f"{base}/" if base else "")
            return [
                FileInfo(p, "file", fe.size, f"{fe.mode:o}", fe.id.hex())
                for p, fe in sorted(files.items())
            ]
        out = []
        for te in r.get_tree(e.id, txn).entries:
            p = f"{base}/{te.name}" if base else te.name
            if te.is_dir:
                size = sum(fe.size for fe in r.walk_tree(te.id, txn).values())
                out.append(FileInfo(p, "dir", size, "40000", te.id.hex()))
            else:
                out.append(FileInfo(p, "file", te.size, f"{te.mode:o}", te.id.hex()))
        return out


def show(repo: RepoLike, rev: str = "HEAD") -> tuple[CommitInfo, list[FileInfo]]:
    """A commit's metadata and every file it holds, with sizes."""
    with open_repo(repo) as r:
        cid = r.resolve(rev)
        info = CommitInfo.of(cid, r.get_commit(cid))
        return info, ls(r, cid.hex(), "", recursive=True)


def cat(repo: RepoLike, spec: str, out: BinaryIO) -> int:
    """Stream ``REV:PATH`` (or a path at HEAD) to ``out``."""
    rev, sep, path = spec.partition(":")
    if not sep:
        rev, path = "HEAD", spec
    if not path:
        raise BadArgumentError(f"{spec!r}: give REV:PATH")
    with open_repo(repo) as r:
        return r.cat(rev or "HEAD", path, out)


def dataset_schema(repo: RepoLike, spec: str) -> DatasetSummary:
    """Columns, types, rows and statistics of the CSV/TSV/Parquet file ``REV:PATH`` (or PATH).

    Streams the stored file once (``Repository.open_file``); raises ``BadArgumentError`` for a
    file that is not a dataset.
    """
    rev, sep, path = spec.partition(":")
    if not sep:
        rev, path = "HEAD", spec
    if not path:
        raise BadArgumentError(f"{spec!r}: give REV:PATH")
    return _diff.dataset_summary(repo, path, rev or "HEAD")


def tensors(repo: RepoLike, rev: str, path: str) -> list[TensorInfo]:
    """The tensors of a safetensors file at ``rev`` (name, dtype, shape, byte range)."""
    with open_repo(repo) as r:
        return r.tensors(rev, path)


def load_tensor(
    repo: RepoLike, rev: str, path: str, name: str, *, raw: bool = False
) -> npt.NDArray[Any]:
    """One tensor as a numpy array, reading only the chunks it spans (see ``Repository``)."""
    with open_repo(repo) as r:
        return r.load_tensor(rev, path, name, raw=raw)


def checkout(
    repo: RepoLike,
    rev: str,
    paths: list[str] | None = None,
    *,
    force: bool = False,
    to: str | None = None,
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> dict[str, Any]:
    """Restore the working tree, some paths, or a separate folder to ``rev``."""
    with open_repo(repo) as r:
        return r.checkout(rev, paths, force=force, to=to, progress=progress, on_total=on_total)


def rm(repo: RepoLike, paths: list[str], *, cached: bool = False) -> list[str]:
    """Stop tracking paths (and delete them unless ``cached``)."""
    if not paths:
        raise BadArgumentError("nothing to remove (give paths)")
    with open_repo(repo) as r:
        return r.rm(paths, cached=cached)


def restore(
    repo: RepoLike, paths: list[str], *, staged: bool = False, source: str | None = None
) -> list[str]:
    """Restore working files from the index (or ``source``), or unstage with ``staged``."""
    if not paths:
        raise BadArgumentError("nothing to restore (give paths)")
    with open_repo(repo) as r:
        return r.restore(paths, staged=staged, source=source)


def stats(repo: RepoLike) -> dict[str, Any]:
    """Logical bytes vs stored bytes, chunk and pack counts."""
    with open_repo(repo) as r:
        return r.stats()


def verify(
    repo: RepoLike,
    *,
    read_data: bool = False,
    remote: str | None = None,
    progress: ProgressFn | None = None,
) -> VerifyReport:
    """Check every reachable object, chunk and pack; ``read_data`` also hashes every chunk.

    With ``remote``, check that remote instead (refs, bundles, pack indexes and packs).
    """
    with open_repo(repo) as r:
        if remote is None:
            return _verify(r, read_data=read_data, progress=progress)
        be = open_backend(r.remote_url(remote), **_options(r, remote))
        _sync._check_format(be, create=False)
        return _verify_remote(
            be,
            refs_of=_sync._remote_refs,  # the remote layout is read in one place
            bundle_of=_sync._read_bundle,
            name=remote,
            read_data=read_data,
            progress=progress,
        )


def repair(
    repo: RepoLike, remote: str = "origin", *, progress: ProgressFn | None = None
) -> RepairReport:
    """Verify reading every chunk, then refetch what is damaged or missing from ``remote``.

    Repaired chunks go into new packs and the chunk index moves to them; damaged pack files
    are left for gc. ``RepairReport.after`` says what is still wrong (the remote lacked it).
    """
    with open_repo(repo) as r:
        be = open_backend(r.remote_url(remote), **_options(r, remote))
        _sync.adopt_remote_features(r, _sync._check_format(be, create=False))
        return _repair(r, remote, be, bundle_of=_sync._read_bundle, progress=progress)


def gc(
    repo: RepoLike,
    *,
    remote: str | None = None,
    dry_run: bool = False,
    prune_older_than: str | float | None = None,
    expire_reflog: str | float | None = "90d",
    repack_threshold: float = _gc.REPACK_THRESHOLD,
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> GcResult:
    """Delete what no ref, reflog entry, staged file or merge reaches (``modelstore.gc``).

    With ``remote``, on that remote instead, from its refs. Durations are ``14d``, ``12h``,
    ``30m``, ``0`` or ``now`` (``expire_reflog`` also ``never``); the grace period
    ``prune_older_than`` defaults to 1 hour locally and 14 days on a remote.
    """
    grace = _gc.parse_duration(prune_older_than, what="grace period")
    expiry = _gc.parse_duration(expire_reflog, allow_never=True, what="reflog expiry")
    with open_repo(repo) as r:
        if remote is None:
            return _gc.collect(
                r,
                dry_run=dry_run,
                prune_older_than=_gc.LOCAL_GRACE if grace is None else grace,
                expire_reflog=expiry,
                repack_threshold=repack_threshold,
                progress=progress,
                on_total=on_total,
            )
        be = open_backend(r.remote_url(remote), **_options(r, remote))
        _sync._check_format(be, create=False)
        return _gc.collect_remote(
            r,
            remote,
            be,
            refs_of=_sync._remote_refs,  # the remote layout is read in one place
            bundle_of=_sync._read_bundle,
            dry_run=dry_run,
            prune_older_than=_gc.REMOTE_GRACE if grace is None else grace,
            progress=progress,
            on_total=on_total,
        )


def verify_json(rep: VerifyReport) -> dict[str, Any]:
    """JSON form of a verify report."""
    return {
        "ok": rep.ok,
        "commits": rep.commits,
        "trees": rep.trees,
        "files": rep.files,
        "packs": rep.packs,
        "chunks_checked": rep.chunks_checked,
        "chunks_read": rep.chunks_read,
        "remote": rep.remote or None,
        "problems": [_problem_json(p) for p in rep.problems],
    }


def _problem_json(p: Problem) -> dict[str, Any]:
    return {
        "kind": p.kind,
        "detail": p.detail,
        "where": p.where,
        "affects": [{"path": a.path, "commits": list(a.commits)} for a in p.affects],
    }


def repair_json(res: RepairReport) -> dict[str, Any]:
    """JSON form of a repair report: what was fixed, what could not be, and the state now."""
    return {
        "ok": res.ok,
        "remote": res.remote,
        "chunks_repaired": res.chunks_repaired,
        "objects_repaired": res.objects_repaired,
        "packs_written": res.packs_written,
        "packs_retired": res.packs_retired,
        "bytes_fetched": res.bytes_fetched,
        "unrepaired": [_problem_json(p) for p in res.unrepaired],
        "before": verify_json(res.before),
        "after": verify_json(res.after),
    }


# -- experiments: branches, tags, switch, merge, reset, revert, reflog ----------------------


def branches(repo: RepoLike) -> list[BranchInfo]:
    """Every branch."""
    with open_repo(repo) as r:
        return _br.list_branches(r)


def branch_create(repo: RepoLike, name: str, start: str = "HEAD") -> str:
    """Create a branch at ``start``; return the commit id (hex)."""
    with open_repo(repo) as r:
        return _br.create_branch(r, name, start).hex()


def branch_delete(repo: RepoLike, name: str, *, force: bool = False) -> str:
    """Delete a branch (unmerged ones only with ``force``); return where it pointed."""
    with open_repo(repo) as r:
        return _br.delete_branch(r, name, force=force).hex()


def branch_rename(repo: RepoLike, old: str, new: str) -> None:
    """Rename a branch."""
    with open_repo(repo) as r:
        _br.rename_branch(r, old, new)


def switch(
    repo: RepoLike, name: str, *, create: bool = False, start: str = "HEAD", force: bool = False
) -> dict[str, Any]:
    """Switch to (or create and switch to) a branch, updating the working tree."""
    with open_repo(repo) as r:
        return _br.switch(r, name, create=create, start=start, force=force)


def tags(repo: RepoLike) -> list[TagInfo]:
    """Every tag."""
    with open_repo(repo) as r:
        return _br.list_tags(r)


def tag_create(repo: RepoLike, name: str, rev: str = "HEAD", message: str | None = None) -> TagInfo:
    """Create an immutable tag (annotated with ``message``)."""
    with open_repo(repo) as r:
        return _br.create_tag(r, name, rev, message)


def tag_delete(repo: RepoLike, name: str) -> None:
    """Delete a tag."""
    with open_repo(repo) as r:
        _br.delete_tag(r, name)


def merge(
    repo: RepoLike, rev: str, *, message: str | None = None, strategy: str | None = None
) -> MergeResult:
    """Merge ``rev`` into the current branch."""
    with open_repo(repo) as r:
        return _merge.merge(r, rev, message=message, strategy=strategy)


def merge_resolve(
    repo: RepoLike, path: str, *, side: str | None = None, file: str | None = None
) -> str:
    """Resolve one conflicted path (ours, theirs, or a local file's contents)."""
    with open_repo(repo) as r:
        return _merge.resolve(r, path, side=side, file=file)


def merge_abort(repo: RepoLike) -> list[str]:
    """Abandon the merge or revert in progress."""
    with open_repo(repo) as r:
        return _merge.abort(r)


def reset(repo: RepoLike, rev: str, mode: str = "mixed") -> dict[str, Any]:
    """Move the current branch to ``rev`` (soft, mixed or hard)."""
    with open_repo(repo) as r:
        return _br.reset(r, rev, mode)


def revert(repo: RepoLike, rev: str, *, message: str | None = None) -> MergeResult:
    """Make a new commit that undoes ``rev``."""
    with open_repo(repo) as r:
        return _merge.revert(r, rev, message=message)


def reflog(repo: RepoLike, ref: str = "HEAD") -> list[dict[str, Any]]:
    """Every move of ``ref``, newest first (entry N is ``REF@{N}``)."""
    with open_repo(repo) as r:
        return _br.read_reflog(r, ref)


def diff(
    repo: RepoLike,
    rev_a: str | None = None,
    rev_b: str | None = None,
    paths: list[str] | None = None,
    *,
    staged: bool = False,
    tensors: bool = True,
    datasets: bool = True,
) -> DiffResult:
    """Compare two commits, a commit and the working tree, or the index and the working tree.

    See ``modelstore.diff.diff``; safetensors files get a per-tensor comparison, CSV/TSV/Parquet
    files a schema and statistics comparison (``datasets``).
    """
    with open_repo(repo) as r:
        return _diff.diff(
            r, rev_a, rev_b, paths or (), staged=staged, tensors=tensors, datasets=datasets
        )


def compare(
    repo: RepoLike, rev_a: str, rev_b: str, *, files: bool = True, tensors: bool = True
) -> CompareResult:
    """Two commits as experiments: metrics (with deltas), params, inputs, packages, code, files."""
    with open_repo(repo) as r:
        return _compare.compare(r, rev_a, rev_b, files=files, tensors=tensors)


def lineage(repo: RepoLike, spec: str = "HEAD") -> dict[str, Any]:
    """Where ``REV`` or ``REV:PATH`` came from (inputs, code, environment) and what used it."""
    rev, sep, path = spec.partition(":")
    with open_repo(repo) as r:
        return _lineage.lineage(r, rev or "HEAD", path if sep else None)


# -- remotes -----------------------------------------------------------------------------------


def remote_add(repo: RepoLike, name: str, url: str, **options: Any) -> None:
    """Add a remote (a directory, ``s3://bucket/prefix``)."""
    with open_repo(repo) as r:
        if name in r.config.remotes:
            from modelstore.errors import RepositoryExistsError

            raise RepositoryExistsError(f"remote {name!r} already exists (use set-url)")
        r.set_remote(name, url, **options)


def remote_set_url(repo: RepoLike, name: str, url: str) -> None:
    """Change a remote's URL."""
    with open_repo(repo) as r:
        r.remote_url(name)
        r.set_remote(name, url)


def remote_remove(repo: RepoLike, name: str) -> None:
    """Forget a remote."""
    with open_repo(repo) as r:
        r.set_remote(name, None)


def remotes(repo: RepoLike) -> dict[str, dict[str, Any]]:
    """Configured remotes: name → settings (``url``, ...)."""
    with open_repo(repo) as r:
        return dict(r.config.remotes)


def _push_refs(
    r: Repository, refs_: list[str] | None, all_: bool, tags_: bool, aliases_: bool = False
) -> list[str]:
    """Full names of the refs a push sends; ``--all`` means every branch and every alias."""
    from modelstore import refs as _refs

    with r.db.read() as txn:
        if all_:
            names = [n for n, oid, _ in _refs.list_refs(txn, "refs/heads/") if oid]
        elif refs_:
            names = [_full(r, txn, x) for x in refs_]
        else:
            branch, _ = r.head(txn)
            if branch is None:
                raise BadArgumentError("HEAD is detached: name the branch to push")
            names = [f"refs/heads/{branch}"]
        if tags_:
            names += [n for n, oid, _ in _refs.list_refs(txn, "refs/tags/") if oid]
        if aliases_ or all_:
            names += [n for n, oid, _ in _refs.list_refs(txn, _aliases.PREFIX) if oid]
    return names


def _options(r: Repository, remote: str) -> dict[str, Any]:
    return {k: v for k, v in r.config.remotes.get(remote, {}).items() if k != "url"}


def _full(r: Repository, txn: Any, name: str) -> str:
    return r._full_ref(txn, name)


def push(
    repo: RepoLike,
    remote: str = "origin",
    refs: list[str] | None = None,
    *,
    all_branches: bool = False,
    tags: bool = False,
    aliases: bool = False,
    force: bool = False,
    force_with_lease: bool = False,
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> SyncResult:
    """Send branches (default: the current one) and what they need to ``remote``.

    ``aliases`` (implied by ``all_branches``) sends every alias too, with the commits it names
    even when no branch holds them; a single alias is sent by naming it (``@production``).
    An alias moved on the remote since our last fetch is refused unless ``force``.
    """
    with open_repo(repo) as r:
        url = r.remote_url(remote)
        return _sync.push(
            r,
            remote,
            url,
            _push_refs(r, refs, all_branches, tags, aliases),
            force=force,
            force_with_lease=force_with_lease,
            progress=progress,
            on_total=on_total,
            options=_options(r, remote),
        )


def fetch(
    repo: RepoLike,
    remote: str = "origin",
    *,
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> SyncResult:
    """Get the remote's branches (as ``REMOTE/BRANCH``), tags, aliases and missing data.

    A local alias follows the remote's unless it was moved here since the last fetch; then it
    is left alone and listed in ``aliases_diverged``.
    """
    with open_repo(repo) as r:
        return _sync.fetch(
            r,
            remote,
            r.remote_url(remote),
            progress=progress,
            on_total=on_total,
            options=_options(r, remote),
        )


def pull(
    repo: RepoLike,
    remote: str = "origin",
    branch: str | None = None,
    *,
    progress: ProgressFn | None = None,
) -> tuple[SyncResult, MergeResult]:
    """Fetch (aliases included), then merge ``REMOTE/BRANCH`` (default: the current branch)."""
    with open_repo(repo) as r:
        res = _sync.fetch(
            r, remote, r.remote_url(remote), progress=progress, options=_options(r, remote)
        )
        if branch is None:
            branch, _ = r.head()
            if branch is None:
                raise BadArgumentError("HEAD is detached: name the branch to pull")
        return res, _merge.merge(
            r, f"refs/remotes/{remote}/{branch}", message=f"Merge {remote}/{branch}"
        )


def clone(
    url: str,
    dest: str | None = None,
    *,
    branch: str | None = None,
    progress: ProgressFn | None = None,
    options: dict[str, Any] | None = None,
    lazy: bool = False,
) -> Repository:
    """Clone ``url`` into ``dest`` (default: the last part of the URL); return it open.

    ``lazy``: fetch metadata only; file contents are read from the remote on demand.
    """
    if dest is None:
        dest = url.rstrip("/").rsplit("/", 1)[-1] or "repo"
    return _sync.clone(url, dest, branch=branch, progress=progress, options=options, lazy=lazy)


# -- registry: aliases and rollback ---------------------------------------------------------


def alias_set(repo: RepoLike, name: str, rev: str, message: str = "") -> AliasInfo:
    """Point alias ``name`` (e.g. ``production``) at ``rev``, recording why."""
    with open_repo(repo) as r:
        return _aliases.set_alias(r, name, rev, message)


def alias_show(repo: RepoLike, name: str) -> AliasInfo:
    """Where an alias points and its last move."""
    with open_repo(repo) as r:
        return _aliases.get_alias(r, name)


def alias_list(repo: RepoLike) -> list[AliasInfo]:
    """Every alias."""
    with open_repo(repo) as r:
        return _aliases.list_aliases(r)


def alias_history(repo: RepoLike, name: str) -> list[dict[str, Any]]:
    """Every move of an alias, newest first (the audit trail)."""
    with open_repo(repo) as r:
        return _aliases.alias_history(r, name)


def rollback(repo: RepoLike, name: str, to: str | None = None, message: str = "") -> AliasInfo:
    """Move an alias back to its previous target (or to ``to``)."""
    with open_repo(repo) as r:
        return _aliases.rollback(r, name, to, message)


def export(repo: RepoLike, rev: str, dest: str) -> dict[str, Any]:
    """Materialize ``rev`` into ``dest`` with a ``modelstore.json`` proving what it is."""
    import json
    from pathlib import Path

    with open_repo(repo) as r:
        cid = r.resolve(rev)
        if "modelstore.json" in r.commit_files(cid):
            raise BadArgumentError(
                f"{rev} has its own modelstore.json; export it with checkout --to"
            )
        res = r.checkout(cid.hex(), to=dest)
        record = _lineage.export_record(r, cid)
        out = Path(dest) / "modelstore.json"
        out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return {"commit": cid.hex(), "written": res["written"], "record": str(out)}
