"""Layer 4: the repository: the composition root over packs, the metadata DB, refs and a working tree.

A repository is a working tree with a ``.ms`` directory in it::

    .ms/FORMAT      format version, read before anything else
    .ms/meta/       the LMDB environment (config, objects, chunk index, refs, staging index)
    .ms/packs/xx/   pack files
    .ms/tmp/        packs being written (a crashed writer's leftovers are removed by the next add)
    .ms/lock        the writer lock

Writers (add, rm, restore, commit, checkout) hold the lock; readers never take it.
"""  # noqa: E501

from __future__ import annotations

import contextlib
import getpass
import io
import itertools
import os
import stat as statmod
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from blake3 import blake3

from modelstore import codec, reflog, refs
from modelstore.chunker import FEATURE_TENSOR_CHUNKING, ChunkerParams
from modelstore.chunkstore import ChunkStore, DeltaPlan, StoreStats, delta_plan, storage_error
from modelstore.compress import FEATURE_DELTA, FEATURE_PLANES, MAX_DELTA_DEPTH
from modelstore.config import FORMAT_FILE_TEXT, KNOWN_INCOMPAT, RepoConfig, parse_format_file
from modelstore.errors import (
    BadArgumentError,
    CorruptObjectError,
    FormatError,
    MsError,
    NotARepositoryError,
    NothingToCommitError,
    ObjectNotFoundError,
    PathError,
    RefConflictError,
    RefNotFoundError,
    RepositoryExistsError,
    StorageError,
    UncommittedChangesError,
)
from modelstore.fileio import DirectFileWriter, fsync_dir
from modelstore.ids import ID_LEN, ChunkId, ObjectId
from modelstore.lazy import LazyFetcher
from modelstore.lock import RepoLock
from modelstore.metadb import MetaDB, Txn, open_metadb, release_metadb
from modelstore.objects import (
    KIND_TAG,
    MODE_EXEC,
    MODE_FILE,
    ChunkList,
    Commit,
    FileManifest,
    Tag,
    Tree,
    TreeEntry,
    check_name,
    decode_object,
    encode_object,
)
from modelstore.tensors import SeekableReader, is_safetensors, read_header

if TYPE_CHECKING:
    import numpy.typing as npt

    from modelstore.tensors import TensorInfo

__all__ = [
    "MS_DIR",
    "ChunkedFile",
    "IndexEntry",
    "MergeState",
    "Repository",
    "Status",
]

MS_DIR = ".ms"
IGNORE_FILE = ".msignore"
#: a file modified this close to when it was staged may have changed unseen (git's "racy
#: clean"): status re-reads it instead of trusting the stat cache.
RACY_NS = 50_000_000
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class IndexEntry:
    """A staged file: its manifest and the stat data that let status skip re-reading it."""

    manifest_id: ObjectId
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    recorded_ns: int

    def encode(self) -> bytes:
        """Stored form: a versioned positional array."""
        return codec.encode(
            [
                1,
                self.manifest_id,
                self.size,
                self.mode,
                self.mtime_ns,
                self.ctime_ns,
                self.ino,
                self.recorded_ns,
            ]
        )

    @classmethod
    def decode(cls, raw: bytes) -> IndexEntry:
        """Parse a stored entry."""
        v = codec.decode(raw)
        if not (
            isinstance(v, list)
            and len(v) >= 8
            and all(type(x) is int for x in v[:1] + v[2:8])  # not bool, not float
            and v[0] == 1
            and isinstance(v[1], bytes)
            and len(v[1]) == ID_LEN
        ):
            raise FormatError("malformed staging index entry")
        return cls(ObjectId(v[1]), v[2], v[3], v[4], v[5], v[6], v[7])

    def stat_equal(self, st: os.stat_result) -> bool:
        """Whether the file's stat data are exactly what was recorded when it was staged."""
        return (
            st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and st.st_ctime_ns == self.ctime_ns
            and st.st_ino == self.ino
            and _mode_of(st) == self.mode
        )

    def matches(self, st: os.stat_result) -> bool:
        """Whether the file is certainly unchanged since it was staged (the stat cache).

        A file modified within ``RACY_NS`` of being staged could have changed again in the
        same timestamp tick ("racily clean", as git calls it): it does not match, and the
        caller reads it to be sure.
        """
        return self.stat_equal(st) and st.st_mtime_ns + RACY_NS < self.recorded_ns


MERGE_STATE_KEY = b"merge_state"


@dataclass
class MergeState:
    """A merge (or revert) stopped on conflicts, kept in the DB until commit or abort.

    ``conflicts`` maps a path to its ``(base, ours, theirs)`` versions, each a
    ``(manifest id, mode, size)`` or None where that side has no such file.
    """

    kind: str
    other: ObjectId
    message: str
    conflicts: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Stored form."""
        return codec.encode(
            [
                1,
                self.kind,
                self.other,
                self.message,
                {p: [list(v) if v else None for v in sides] for p, sides in self.conflicts.items()},
            ]
        )

    @classmethod
    def decode(cls, raw: bytes) -> MergeState:
        """Parse the stored form."""
        v = codec.decode(raw)

        def side(x: Any) -> bool:  # nil, or [manifest id, mode, size]
            return x is None or (
                isinstance(x, list)
                and len(x) == 3
                and isinstance(x[0], bytes)
                and len(x[0]) == ID_LEN
                and type(x[1]) is int
                and type(x[2]) is int
            )

        if not (
            isinstance(v, list)
            and len(v) == 5
            and type(v[0]) is int
            and v[0] == 1
            and v[1] in ("merge", "revert")
            and isinstance(v[2], bytes)
            and len(v[2]) == ID_LEN
            and isinstance(v[3], str)
            and isinstance(v[4], dict)
            and all(
                isinstance(p, str) and isinstance(s, list) and len(s) == 3 and all(map(side, s))
                for p, s in v[4].items()
            )
        ):
            raise FormatError("malformed merge state")
        conflicts = {p: tuple(tuple(x) if x else None for x in sides) for p, sides in v[4].items()}
        return cls(v[1], ObjectId(v[2]), v[3], conflicts)  # type: ignore[arg-type]


@dataclass
class Status:
    """What differs between HEAD, the staging index and the working tree."""

    branch: str | None
    head: ObjectId | None
    staged: list[tuple[str, str]] = field(default_factory=list)  # (added|modified|deleted, path)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    merging: str | None = None

    @property
    def clean(self) -> bool:
        """No staged, unstaged or untracked changes, and no merge in progress."""
        return not (self.staged or self.modified or self.deleted or self.untracked or self.merging)


def _mode_of(st: os.stat_result) -> int:
    return MODE_EXEC if st.st_mode & 0o111 else MODE_FILE


#: temporary files of ``_write_file`` are ``.<name>.ms-tmp-<pid>`` (FORMAT §13 rule 6)
TMP_MARK = ".ms-tmp-"


def _tmp_pid(name: str) -> int | None:
    """The writer's pid if ``name`` is one of our temporary file names, else None."""
    stem, mark, pid = name.rpartition(TMP_MARK)
    if not mark or not stem.startswith(".") or not pid.isdigit() or pid.startswith("0"):
        return None
    return int(pid)


def _remove_stale_tmp(folder: Path) -> None:
    """Delete temporary files in ``folder`` left by writers that no longer run (killed ones)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        pid = _tmp_pid(name)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # its writer still runs (or its pid was reused): leave it
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):  # EPERM: alive, another user's
            continue
        with contextlib.suppress(OSError):
            (folder / name).unlink()


def _author() -> str:
    name = os.environ.get("MS_AUTHOR") or getpass.getuser()
    return name if "@" in name else f"{name}@{os.uname().nodename}"


def _delta_base(rel: str, size: int, prev: dict[str, TreeEntry]) -> TreeEntry | None:
    """The version of ``rel`` to take deltas against, from the parent commit's files.

    The same path; else (the next checkpoint in a folder of its own) the file of the same
    name whose size is closest.
    """
    e = prev.get(rel)
    if e is not None:
        return e
    name = rel.rpartition("/")[2]
    same = [e for p, e in prev.items() if p.rpartition("/")[2] == name]
    return min(same, key=lambda e: abs(e.size - size)) if same else None


class Repository:
    """A modelstore repository (open with ``Repository.open`` or create with ``init``)."""

    def __init__(self, workdir: Path, *, threads: int | None = None) -> None:
        self.workdir = workdir
        self.ms_dir = workdir / MS_DIR
        fmt = self.ms_dir / "FORMAT"
        try:
            parse_format_file(fmt.read_text())
        except FileNotFoundError:
            raise NotARepositoryError(
                f"{workdir} is not a modelstore repository (no .ms/FORMAT; run `ms init`)"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot read {fmt}: {exc}") from None
        self.db: MetaDB = open_metadb(self.ms_dir / "meta")
        self._closed = False
        try:
            with self.db.read() as txn:
                raw = txn.get("meta", b"config")
            if raw is None:
                raise NotARepositoryError(f"{workdir}/.ms has no config: the repository is damaged")
            self.config = RepoConfig.decode(raw)
        except BaseException:
            release_metadb(self.db)
            raise
        self.store = ChunkStore(
            self.ms_dir, self.db, self.config.chunker, self.config.pack_size, threads
        )
        self._apply_features()
        self.lock = RepoLock(self.ms_dir / "lock")
        self._lazy: LazyFetcher | None = None
        for name, settings in self.config.remotes.items():
            if settings.get("lazy"):
                opts = {k: v for k, v in settings.items() if k not in ("url", "lazy")}
                self._lazy = LazyFetcher(self.store, self.db, name, settings["url"], opts)
                self.store.fallback = self._lazy
                break
        self._dirty_dirs: set[Path] = set()

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str] = ".",
        *,
        chunker: ChunkerParams | None = None,
        pack_size: int | None = None,
        threads: int | None = None,
        planes: bool = True,
        tensor_aware: bool = True,
        delta: bool = True,
        delta_depth: int | None = None,
    ) -> Repository:
        """Create a repository in ``path`` (its working tree) and return it open.

        ``planes=False`` leaves out the byte-plane codec for floats (``codec-planes-v1``), so
        that versions of ms from before it can still open the repository.
        ``tensor_aware=False`` chunks safetensors files with plain CDC, like repositories made
        before ``chunking-tensor-aware-v1`` (to keep dedup with data chunked that way).
        ``delta=False`` leaves out XOR deltas against the previous version
        (``codec-xor-delta-v1``); ``delta_depth`` bounds their chains (a full copy after that
        many deltas in a row).
        """
        workdir = Path(path).absolute()
        ms = workdir / MS_DIR
        if (ms / "FORMAT").exists():
            raise RepositoryExistsError(f"a repository already exists at {workdir}")
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            for sub in ("", "meta", "packs", "tmp"):
                (ms / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {ms}: {exc}") from None
        cfg = RepoConfig(chunker=chunker or ChunkerParams())
        if planes:
            cfg.incompat.append(FEATURE_PLANES)
        if tensor_aware:
            cfg.compat.append(FEATURE_TENSOR_CHUNKING)
        if delta and planes and tensor_aware:
            cfg.incompat.append(FEATURE_DELTA)
        if delta_depth is not None:
            if not 0 <= delta_depth <= MAX_DELTA_DEPTH:
                raise BadArgumentError(f"--delta-depth must be 0..{MAX_DELTA_DEPTH}")
            cfg.delta_depth = delta_depth
        if pack_size is not None:
            cfg.pack_size = pack_size
        db = open_metadb(ms / "meta")

        def setup(txn: Txn) -> None:
            txn.put("meta", b"config", cfg.encode())
            refs.set_symbolic(txn, refs.HEAD, refs.branch_ref(refs.DEFAULT_BRANCH))

        try:
            db.write(setup)
        finally:
            release_metadb(db)
        # FORMAT last: a half-made repository is not mistaken for a real one
        tmp = ms / "FORMAT.tmp"
        with open(tmp, "w") as f:
            f.write(FORMAT_FILE_TEXT)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ms / "FORMAT")
        fsync_dir(ms)
        return cls(workdir, threads=threads)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] = ".",
        *,
        search_parents: bool = True,
        threads: int | None = None,
    ) -> Repository:
        """Open the repository at ``path`` or, by default, the nearest one above it."""
        start = Path(path).absolute()
        if not start.exists():
            raise NotARepositoryError(f"{start} does not exist")
        cur = start
        while True:
            if (cur / MS_DIR).is_dir():
                return cls(cur, threads=threads)
            if not search_parents or cur.parent == cur:
                raise NotARepositoryError(
                    f"not a modelstore repository: {start} (or any parent); run `ms init`"
                )
            cur = cur.parent

    def close(self) -> None:
        """Release threads, files and (when no one else in this process uses it) the DB."""
        if self._closed:
            return
        self._closed = True
        if self._lazy is not None:
            self._lazy.flush()
        self.store.close()
        release_metadb(self.db)

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer lock, after checking this ms may write this repository's format."""
        with self.db.read() as txn:
            raw = txn.get("meta", b"config")
        if raw is not None:
            RepoConfig.decode(raw, for_write=True)
        with self.lock:
            yield

    # -- objects ----------------------------------------------------------------------------
    def _get(self, txn: Txn, oid: bytes) -> Any:
        raw = txn.get("objects", oid)
        if raw is None:
            raise ObjectNotFoundError(f"object {oid.hex()[:16]} is not in the repository")
        return decode_object(raw, expect_id=oid)

    def get_commit(self, oid: bytes, txn: Txn | None = None) -> Commit:
        """Load a commit."""
        obj = self._with_txn(txn, lambda t: self._get(t, oid))
        if not isinstance(obj, Commit):
            raise BadArgumentError(f"{oid.hex()[:16]} is not a commit")
        return obj

    def get_tree(self, oid: bytes, txn: Txn | None = None) -> Tree:
        """Load a tree."""
        obj = self._with_txn(txn, lambda t: self._get(t, oid))
        if not isinstance(obj, Tree):
            raise FormatError(f"{oid.hex()[:16]} is not a tree")
        return obj

    def get_manifest(self, oid: bytes, txn: Txn | None = None) -> FileManifest:
        """Load a file manifest."""
        obj = self._with_txn(txn, lambda t: self._get(t, oid))
        if not isinstance(obj, FileManifest):
            raise FormatError(f"{oid.hex()[:16]} is not a file manifest")
        return obj

    def get_chunk_list(self, oid: ObjectId) -> ChunkList:
        """Load one segment of a large file's chunk list."""
        obj = self._with_txn(None, lambda t: self._get(t, oid))
        if not isinstance(obj, ChunkList):
            raise FormatError(f"{oid.hex()[:16]} is not a chunk list")
        return obj

    def manifest_chunks(self, m: FileManifest) -> Iterator[tuple[ChunkId, int]]:
        """Every ``(chunk_id, length)`` of a file, one segment in memory at a time."""
        return m.iter_chunks(self.get_chunk_list)

    def set_remote(self, name: str, url: str | None, **options: Any) -> None:
        """Add, change or (``url=None``) remove a remote in the repository config."""
        if not name or not all(c.isalnum() or c in "-_." for c in name) or name[0] == ".":
            raise BadArgumentError(f"invalid remote name {name!r}")

        def fn(txn: Txn) -> None:
            raw = txn.get("meta", b"config")
            assert raw is not None
            cfg = RepoConfig.decode(raw, for_write=True)
            if url is None:
                if cfg.remotes.pop(name, None) is None:
                    raise RefNotFoundError(f"no remote named {name!r}")
            else:
                cfg.remotes[name] = {"url": url, **options}
            txn.put("meta", b"config", cfg.encode())
            self.config = cfg

        with self._writing():
            self.db.write(fn)

    def enable_feature(self, name: str) -> bool:
        """Record an ``incompat`` feature in the config; False if it was already there.

        From then on versions of ms that do not know the feature refuse the repository, which
        is the point: it may now hold data they would misread (FORMAT §1).
        """
        if name not in KNOWN_INCOMPAT:
            raise BadArgumentError(f"unknown repository feature {name!r}")
        added = False

        def fn(txn: Txn) -> None:
            nonlocal added
            raw = txn.get("meta", b"config")
            assert raw is not None
            cfg = RepoConfig.decode(raw, for_write=True)
            added = name not in cfg.incompat
            if added:
                cfg.incompat.append(name)
                txn.put("meta", b"config", cfg.encode())
            self.config = cfg

        with self._writing():
            self.db.write(fn)
        self._apply_features()
        return added

    def _apply_features(self) -> None:
        """Tell the chunk store what the config allows new chunks to use."""
        self.store.planes = FEATURE_PLANES in self.config.incompat
        self.store.tensor_aware = FEATURE_TENSOR_CHUNKING in self.config.compat
        self.store.delta = FEATURE_DELTA in self.config.incompat
        self.store.delta_depth = self.config.delta_depth

    def remote_url(self, name: str) -> str:
        """The URL of a configured remote."""
        with self.db.read() as txn:
            raw = txn.get("meta", b"config")
        assert raw is not None
        remotes = RepoConfig.decode(raw).remotes
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise RefNotFoundError(f"no remote named {name!r} (known: {known}); `ms remote add`")
        return str(remotes[name]["url"])

    def merge_state(self, txn: Txn | None = None) -> MergeState | None:
        """The merge or revert in progress, if any."""

        def fn(t: Txn) -> MergeState | None:
            raw = t.get("meta", MERGE_STATE_KEY)
            return None if raw is None else MergeState.decode(raw)

        result: MergeState | None = self._with_txn(txn, fn)
        return result

    def _with_txn(self, txn: Txn | None, fn: Callable[[Txn], Any]) -> Any:
        if txn is not None:
            return fn(txn)
        with self.db.read() as t:
            return fn(t)

    @staticmethod
    def _put(txn: Txn, obj: FileManifest | Tree | Commit | Tag | ChunkList) -> ObjectId:
        oid, stored = encode_object(obj)
        txn.put("objects", oid, stored, overwrite=False)
        return oid

    # -- refs and revisions -----------------------------------------------------------------
    def head(self, txn: Txn | None = None) -> tuple[str | None, ObjectId | None]:
        """Return ``(branch name or None if detached, commit id or None if unborn)``."""

        def fn(t: Txn) -> tuple[str | None, ObjectId | None]:
            target, oid = refs.read_ref(t, refs.HEAD)
            if target is None:
                return None, oid
            final, oid = refs.resolve_ref(t, refs.HEAD)
            return final.removeprefix("refs/heads/"), oid

        result: tuple[str | None, ObjectId | None] = self._with_txn(txn, fn)
        return result

    def _move_ref(
        self,
        txn: Txn,
        name: str,
        old: ObjectId | None,
        new: ObjectId | None,
        command: str,
        message: str = "",
    ) -> None:
        """Move (or, with ``new=None``, delete) a ref by compare-and-swap and log the move.

        Follows symbolic refs (HEAD); when HEAD points at the moved branch, HEAD's own log
        records the move too, as in git. Runs inside the caller's write transaction.
        """
        final, current = refs.resolve_ref(txn, name)
        if current != old:
            have = current.hex()[:12] if current else "nothing"
            raise RefConflictError(f"{final} moved to {have} while this operation ran; retry it")
        if new is None:
            refs.delete_ref(txn, final, old)
        else:
            refs.set_if_equals(txn, final, old, new)
        reflog.append(txn, final, old, new, command, message)
        if final != refs.HEAD:
            target, _ = refs.read_ref(txn, refs.HEAD)
            if target == final:
                reflog.append(txn, refs.HEAD, old, new, command, message)

    def resolve(self, rev: str, txn: Txn | None = None) -> ObjectId:
        """Resolve a revision (``HEAD``, ``HEAD~2``, ``main^``, an id or prefix) to a commit id."""
        result: ObjectId = self._with_txn(txn, lambda t: self._resolve(t, rev))
        return result

    def _resolve(self, txn: Txn, rev: str) -> ObjectId:
        rev = rev.strip()
        if not rev:
            raise BadArgumentError("empty revision")
        # the base may itself end in digits (a hex prefix): split at the first ~ or ^
        j = min((k for k in (rev.find("~"), rev.find("^")) if k >= 0), default=len(rev))
        base, suffix = rev[:j], rev[j:]
        if base.endswith("}") and "@{" in base:
            oid = self._resolve_reflog(txn, base, rev)
        else:
            oid = self._resolve_base(txn, base, rev)
        pos = 0
        while pos < len(suffix):
            op = suffix[pos]
            pos += 1
            num_start = pos
            while pos < len(suffix) and suffix[pos].isdigit():
                pos += 1
            n = int(suffix[num_start:pos]) if pos > num_start else 1
            if op == "~":
                for _ in range(n):
                    oid = self._parent(txn, oid, 1, rev)
            elif op == "^":
                if n == 0:
                    continue
                oid = self._parent(txn, oid, n, rev)
            else:  # pragma: no cover - the loop above only lets ~ and ^ through
                raise BadArgumentError(f"bad revision {rev!r}")
        return oid

    def _resolve_reflog(self, txn: Txn, base: str, rev: str) -> ObjectId:
        """``REF@{N}``: the value REF had N moves ago (``@{0}`` is its current value)."""
        name, _, num = base[:-1].partition("@{")
        if not num.isdigit():
            raise BadArgumentError(f"bad revision {rev!r}: use REF@{{N}} with a number N")
        n = int(num)
        ref = self._full_ref(txn, name or "HEAD")
        log = reflog.entries(txn, ref)
        if n >= len(log) or log[-1 - n].new is None:
            raise RefNotFoundError(f"{name or 'HEAD'} has no entry {n} in its reflog")
        oid = log[-1 - n].new
        assert oid is not None
        if txn.get("objects", oid) is None:  # the entry outlived its expiry (FORMAT §15)
            raise RefNotFoundError(
                f"{name or 'HEAD'}@{{{n}}} is {oid.hex()[:12]}, which was garbage-collected "
                "(its reflog entry had expired when `ms gc` ran)"
            )
        return self._peel(txn, oid)

    def _full_ref(self, txn: Txn, name: str) -> str:
        """The full ref a short name means (HEAD, a branch, a tag, or refs/...)."""
        if name in ("HEAD", "@"):
            return refs.HEAD
        if name.startswith("refs/"):
            return name
        if name.startswith("@"):
            return f"refs/aliases/{name[1:]}"
        for full in (
            f"refs/heads/{name}",
            f"refs/tags/{name}",
            f"refs/remotes/{name}",
            f"refs/aliases/{name}",
        ):
            if txn.get("refs", full.encode()) is not None or reflog.entries(txn, full):
                return full
        raise RefNotFoundError(f"unknown ref {name!r}")

    def _peel(self, txn: Txn, oid: ObjectId) -> ObjectId:
        """Follow an annotated tag to its commit."""
        raw = txn.get("objects", oid)
        if raw is not None and raw[:1] == bytes([KIND_TAG]):
            tag = decode_object(raw, expect_id=oid)
            assert isinstance(tag, Tag)
            return tag.target
        return oid

    def _parent(self, txn: Txn, oid: ObjectId, n: int, rev: str) -> ObjectId:
        c = self.get_commit(oid, txn)
        if len(c.parents) < n:
            raise RefNotFoundError(f"revision {rev!r} goes past the start of history")
        return c.parents[n - 1]

    def _resolve_base(self, txn: Txn, base: str, rev: str) -> ObjectId:
        if base.startswith("@") and len(base) > 1:  # @production: a registry alias
            _, oid = refs.resolve_ref(txn, f"refs/aliases/{base[1:]}")
            if oid is None:
                raise RefNotFoundError(f"unknown alias {base!r} (see `ms alias list`)")
            return self._peel(txn, oid)
        if base in ("HEAD", "@"):
            _, oid = refs.resolve_ref(txn, refs.HEAD)
            if oid is None:
                raise RefNotFoundError("HEAD has no commits yet (make one with `ms commit`)")
            return oid
        candidates = (
            [base]
            if base.startswith("refs/")
            else [f"refs/heads/{base}", f"refs/tags/{base}", f"refs/remotes/{base}"]
        )
        for name in candidates:
            if txn.get("refs", name.encode()) is not None:
                _, oid = refs.resolve_ref(txn, name)
                if oid is not None:
                    return self._peel(txn, oid)
        if 4 <= len(base) <= 64 and all(c in "0123456789abcdef" for c in base.lower()):
            return self._resolve_prefix(txn, base.lower(), rev)
        raise RefNotFoundError(f"unknown revision {rev!r}")

    def _resolve_prefix(self, txn: Txn, hexpre: str, rev: str) -> ObjectId:
        even = hexpre[: len(hexpre) // 2 * 2]
        found: list[bytes] = []
        for k, v in txn.items("objects", bytes.fromhex(even)):
            if k.hex().startswith(hexpre) and v[:1] == b"\x03":
                found.append(k)
                if len(found) > 1:
                    raise BadArgumentError(f"revision {rev!r} is ambiguous; give more digits")
        if not found:
            raise RefNotFoundError(f"unknown revision {rev!r}")
        return ObjectId(found[0])

    # -- trees ------------------------------------------------------------------------------
    def walk_tree(
        self, tree_id: bytes, txn: Txn | None = None, prefix: str = ""
    ) -> dict[str, TreeEntry]:
        """All files under a tree, by slash-separated path."""

        def fn(t: Txn) -> dict[str, TreeEntry]:
            out: dict[str, TreeEntry] = {}
            stack = [(prefix, tree_id, 0)]
            while stack:
                pre, tid, depth = stack.pop()
                if depth > 256:
                    raise FormatError("trees nest too deeply")
                for e in self.get_tree(tid, t).entries:
                    p = f"{pre}{e.name}"
                    if e.is_dir:
                        stack.append((p + "/", e.id, depth + 1))
                    else:
                        out[p] = e
            return out

        result: dict[str, TreeEntry] = self._with_txn(txn, fn)
        return result

    def commit_files(self, commit_id: bytes | None, txn: Txn | None = None) -> dict[str, TreeEntry]:
        """All files of a commit (empty for None)."""
        if commit_id is None:
            return {}
        return self.walk_tree(self.get_commit(commit_id, txn).tree_id, txn)

    def lookup(self, commit_id: bytes, path: str, txn: Txn | None = None) -> TreeEntry | None:
        """The entry at ``path`` in a commit (a file or directory), or None."""
        parts = _split_path(path)
        tree_id = self.get_commit(commit_id, txn).tree_id
        if not parts:
            return TreeEntry("", True, 0o040000, 0, tree_id)
        entry: TreeEntry | None = None
        for i, name in enumerate(parts):
            tree = self.get_tree(tree_id, txn)
            entry = tree.get(name)
            if entry is None:
                return None
            if not entry.is_dir and i < len(parts) - 1:
                return None
            tree_id = entry.id
        return entry

    # -- working tree paths -----------------------------------------------------------------
    def relpath(self, path: str | os.PathLike[str]) -> str:
        """Turn a user path (relative to cwd, or absolute) into a repository path."""
        p = Path(os.path.abspath(path))
        try:
            rel = p.relative_to(self.workdir)
        except ValueError:
            raise PathError(f"{path} is outside the repository at {self.workdir}") from None
        parts = rel.parts
        if parts and parts[0] == MS_DIR:
            raise PathError(f"{path} is inside the .ms directory")
        return "/".join(parts)

    def _abs(self, rel: str) -> Path:
        return self.workdir.joinpath(*rel.split("/")) if rel else self.workdir

    def _ignore(self) -> Callable[[str], bool]:
        try:
            text = (self.workdir / IGNORE_FILE).read_text()
        except OSError:
            return lambda _p: False
        import pathspec

        spec = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
        return lambda p: bool(spec.match_file(p))

    def _walk(
        self, rel: str, ignored: Callable[[str], bool]
    ) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files under ``rel`` (repository paths), skipping .ms and ignored paths."""
        stack = [rel]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(self._abs(d))
            except FileNotFoundError:
                continue
            with it:
                for de in it:
                    p = f"{d}/{de.name}" if d else de.name
                    if de.name == MS_DIR:
                        continue
                    if de.is_dir(follow_symlinks=False):
                        if not ignored(p + "/"):
                            stack.append(p)
                    elif (
                        de.is_file(follow_symlinks=False)
                        and not ignored(p)
                        and _tmp_pid(de.name) is None  # a checkout's temporary file
                    ):
                        yield p, de.stat(follow_symlinks=False)

    # -- staging ----------------------------------------------------------------------------
    def _index(self, txn: Txn) -> dict[str, IndexEntry]:
        return {k.decode(): IndexEntry.decode(v) for k, v in txn.items("index")}

    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        progress: ProgressFn | None = None,
        on_total: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Stage files and folders (honouring .msignore); return what happened.

        A file whose stat data matches its staged entry is not read again. New chunks go to
        packs first; the manifests and staging entries are committed in one transaction after.
        """
        ignored = self._ignore()
        todo: list[tuple[str, os.stat_result]] = []
        seen: set[str] = set()
        for p in paths:
            rel = self.relpath(p)
            _check_repo_path(rel)
            full = self._abs(rel)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                raise PathError(f"{p}: no such file or directory") from None
            if statmod.S_ISDIR(st.st_mode):
                for sub, sst in self._walk(rel, ignored):
                    _check_repo_path(sub)
                    if sub not in seen:
                        seen.add(sub)
                        todo.append((sub, sst))
            elif statmod.S_ISREG(st.st_mode):
                if rel not in seen:
                    seen.add(rel)
                    todo.append((rel, st))
            else:
                raise PathError(f"{p}: not a regular file or folder (symlinks are not tracked)")
        result: dict[str, Any] = {"added": [], "unchanged": [], "bytes_read": 0, "new_bytes": 0}
        with self._writing():
            self._clean_tmp()
            with self.db.read() as txn:
                index = {
                    r: IndexEntry.decode(v)
                    for r, _ in todo
                    if (v := txn.get("index", r.encode())) is not None
                }
            staged: list[tuple[str, IndexEntry, FileManifest]] = []
            changed: list[str] = []
            for rel, st in todo:
                old = index.get(rel)
                if old is not None and old.matches(st):
                    result["unchanged"].append(rel)  # the stat cache: not read again
                else:
                    changed.append(rel)
            if on_total is not None:
                sizes = dict(todo)
                on_total(sum(sizes[rel].st_size for rel in changed))
            prev = self.head_files() if changed else {}
            if changed:
                sink = self.store.sink()
                try:
                    for rel in changed:
                        entry, manifest = self._ingest_file(rel, sink, progress, prev)
                        staged.append((rel, entry, manifest))
                        result["added"].append(rel)
                        result["bytes_read"] += manifest.size
                    sink.close()
                except OSError as exc:  # from the pack writer and finisher threads
                    sink.abort()
                    raise storage_error(exc, "writing packs") from None
                except BaseException:
                    sink.abort()
                    raise
                result["new_bytes"] = sink.new_bytes

            def commit_index(txn: Txn) -> None:
                for rel, entry, manifest in staged:
                    self._put(txn, manifest)
                    txn.put("index", rel.encode(), entry.encode())

            if staged:
                self.db.write(commit_index)
        return result

    def _ingest_file(
        self,
        rel: str,
        sink: Any,
        progress: ProgressFn | None,
        prev: dict[str, TreeEntry] | None = None,
    ) -> tuple[IndexEntry, FileManifest]:
        full = self._abs(rel)
        recorded = time.time_ns()
        try:
            with open(full, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                plan = self.delta_plan(rel, f, st.st_size, prev) if prev else None
                manifest = self.store.ingest(f, sink, progress, plan)
                st2 = os.fstat(f.fileno())
        except FileNotFoundError:
            raise PathError(f"{rel}: vanished while being added") from None
        except IsADirectoryError:
            raise PathError(f"{rel}: is a directory") from None
        except PermissionError:
            raise PathError(f"{rel}: permission denied") from None
        if (st.st_size, st.st_mtime_ns) != (st2.st_size, st2.st_mtime_ns) or (
            manifest.size != st.st_size
        ):
            raise PathError(f"{rel}: changed while being added; add it again")
        entry = IndexEntry(
            manifest.id,
            st.st_size,
            _mode_of(st),
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            recorded,
        )
        return entry, manifest

    def head_files(self) -> dict[str, TreeEntry]:
        """HEAD's files, the previous versions deltas are taken against ({}: no deltas here)."""
        if not self.store.delta:
            return {}
        with self.db.read() as txn:
            return self.commit_files(self.head(txn)[1], txn)

    def delta_plan(
        self,
        rel: str,
        f: SeekableReader,
        size: int,
        prev: dict[str, TreeEntry] | None = None,
    ) -> DeltaPlan | None:
        """The delta plan ``add`` would use for the working file ``rel`` now (FORMAT §8.2).

        ``scan`` with it gives the manifest that adding the file would give. ``prev``:
        ``head_files()``, when the caller plans several files.
        """
        base = _delta_base(rel, size, self.head_files() if prev is None else prev)
        return None if base is None else self._delta_plan(f, base)

    def _delta_plan(self, f: SeekableReader, base: TreeEntry) -> DeltaPlan | None:
        """Line a safetensors file up with its previous version, or None (FORMAT §8.2)."""
        if not is_safetensors(f):
            return None
        try:
            m = self.get_manifest(base.id)
            with ChunkedFile(self.store, m, "the previous version", self.get_chunk_list) as old:
                if not is_safetensors(old):
                    return None
                infos, _ = read_header(old)
        except MsError:  # not readable here (a lazy clone offline, damage): no deltas
            return None
        return delta_plan(f, infos, m.size, self.manifest_chunks(m))

    def _clean_tmp(self) -> None:
        # Leftovers of a crashed writer: we hold the lock, so no one else is writing there.
        tmp = self.ms_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        for p in tmp.iterdir():
            with contextlib.suppress(OSError):
                p.unlink()

    def rm(self, paths: Iterable[str], *, cached: bool = False) -> list[str]:
        """Unstage paths (and delete them from the working tree unless ``cached``)."""
        rels = [self.relpath(p) for p in paths]
        removed: list[str] = []
        with self._writing():

            def fn(txn: Txn) -> None:
                removed.clear()  # the DB may run fn again (map growth)
                index = self._index(txn)
                for rel in rels:
                    hits = [p for p in index if p == rel or p.startswith(rel + "/") or not rel]
                    if not hits:
                        raise PathError(f"{rel or '.'}: not tracked")
                    for p in hits:
                        txn.delete("index", p.encode())
                        removed.append(p)

            self.db.write(fn)
            if not cached:
                for p in removed:
                    with contextlib.suppress(FileNotFoundError):
                        self._unlink_tracked(p)
        return removed

    # -- status -----------------------------------------------------------------------------
    def status(self) -> Status:
        """Compare HEAD, the staging index and the working tree (stat cache first)."""
        with self.db.read() as txn:
            branch, head = self.head(txn)
            index = self._index(txn)
            head_files = self.commit_files(head, txn)
            st = Status(branch, head)
            state = self.merge_state(txn)
            if state is not None:
                st.merging = state.kind
                st.conflicts = sorted(state.conflicts)
            for p in sorted(set(index) | set(head_files)):
                ie, he = index.get(p), head_files.get(p)
                if ie is None:
                    st.staged.append(("deleted", p))
                elif he is None:
                    st.staged.append(("added", p))
                elif he.id != ie.manifest_id or he.mode != ie.mode:
                    st.staged.append(("modified", p))
            need_hash: list[tuple[str, IndexEntry]] = []
            for p, ie in sorted(index.items()):
                try:
                    fst = os.lstat(self._abs(p))
                except (FileNotFoundError, NotADirectoryError):
                    st.deleted.append(p)
                    continue
                if not statmod.S_ISREG(fst.st_mode):
                    st.modified.append(p)
                elif fst.st_size != ie.size or _mode_of(fst) != ie.mode:
                    st.modified.append(p)
                elif not ie.matches(fst):
                    need_hash.append((p, ie))
            for p, ie in need_hash:
                m = self.get_manifest(ie.manifest_id, txn)
                if _hash_file(self._abs(p)) != m.content_hash:
                    st.modified.append(p)
        st.modified.sort()
        ignored = self._ignore()
        st.untracked = sorted(p for p, _ in self._walk("", ignored) if p not in index)
        return st

    # -- commit -----------------------------------------------------------------------------
    def commit(
        self,
        message: str,
        *,
        author: str | None = None,
        when: int | None = None,
        allow_empty: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> ObjectId:
        """Record the staging index as a new commit on the current branch; return its id.

        Trees, the commit and the ref move are one write transaction: a commit is either
        entirely there or not at all, and the ref moves by compare-and-swap.
        """
        if not message.strip():
            raise BadArgumentError("empty commit message (pass -m MESSAGE)")
        ts = int(time.time()) if when is None else when
        tz = -time.altzone if time.localtime(ts).tm_isdst > 0 else -time.timezone
        who = author or _author()

        def fn(txn: Txn) -> ObjectId:
            _, parent = refs.resolve_ref(txn, refs.HEAD)
            state = self.merge_state(txn)
            if state is not None and state.conflicts:
                left = ", ".join(sorted(state.conflicts)[:5])
                raise UncommittedChangesError(
                    f"{len(state.conflicts)} conflict(s) left: {left}; resolve each with "
                    "`ms merge --resolve PATH --ours|--theirs|--file F`"
                )
            tree_id = self._write_trees(txn, self._index(txn))
            merging = state is not None and state.kind == "merge"
            if parent is not None and not allow_empty and not merging:
                if self.get_commit(parent, txn).tree_id == tree_id:
                    raise NothingToCommitError("nothing to commit, working tree matches HEAD")
            if parent is None and not allow_empty and txn.count("index") == 0:
                raise NothingToCommitError("nothing to commit (use `ms add` first)")
            parents: tuple[ObjectId, ...] = (parent,) if parent else ()
            if merging and state is not None and state.other not in parents:
                parents = (*parents, state.other)
            c = Commit(tree_id, parents, who, ts, tz // 60, message, extra or {})
            oid = self._put(txn, c)
            kind = state.kind if state is not None else "commit"
            self._move_ref(txn, refs.HEAD, parent, oid, kind, message.splitlines()[0])
            if state is not None:
                txn.delete("meta", MERGE_STATE_KEY)
            return oid

        with self._writing():
            oid: ObjectId = self.db.write(fn)
        return oid

    def _write_trees(self, txn: Txn, index: dict[str, IndexEntry]) -> ObjectId:
        return self._build_trees(index, lambda t: self._put(txn, t))[""]

    @staticmethod
    def _build_trees(
        index: dict[str, IndexEntry], put: Callable[[Tree], ObjectId]
    ) -> dict[str, ObjectId]:
        """Every directory's tree id (``""`` is the root), each tree passed to ``put``."""
        dirs: dict[str, list[TreeEntry]] = {"": []}
        for p in index:
            parts = p.split("/")
            for i in range(1, len(parts)):
                dirs.setdefault("/".join(parts[:i]), [])
        for p, ie in index.items():
            parent, _, name = p.rpartition("/")
            dirs[parent].append(
                TreeEntry(check_name(name), False, ie.mode, ie.size, ie.manifest_id)
            )
        # deepest first, so each directory's subtrees exist before its own tree is written
        ids: dict[str, ObjectId] = {}
        for d in sorted(dirs, key=lambda d: d.count("/") + (1 if d else 0), reverse=True):
            oid = ids[d] = put(Tree(tuple(dirs[d])))
            if d:
                parent, _, name = d.rpartition("/")
                dirs[parent].append(TreeEntry(name, True, 0o040000, 0, oid))
        return ids

    def staged_entry(self, path: str) -> TreeEntry | None:
        """What ``path`` (a file or a folder) will be in the next commit, from the staging index.

        A folder's id is the tree id the commit will give it, computed without writing.
        """
        rel = path.strip("/")
        with self.db.read() as txn:
            index = self._index(txn)
        if rel in index:
            ie = index[rel]
            return TreeEntry(rel.rpartition("/")[2] or rel, False, ie.mode, ie.size, ie.manifest_id)
        prefix = f"{rel}/" if rel else ""
        sub = {p: ie for p, ie in index.items() if p.startswith(prefix)}
        if not sub:
            return None
        tree_id = self._build_trees(sub, lambda t: encode_object(t)[0])[rel]
        size = sum(ie.size for ie in sub.values())
        return TreeEntry(rel.rpartition("/")[2], True, 0o040000, size, tree_id)

    # -- history ----------------------------------------------------------------------------
    def log(
        self, rev: str = "HEAD", limit: int | None = None, *, first_parent: bool = False
    ) -> Iterator[tuple[ObjectId, Commit]]:
        """Walk history from ``rev``, newest first, every commit after all its children.

        Merges bring in both sides (topological order, newest first among commits that are
        ready); ``first_parent`` follows only first parents, as ``git log --first-parent``.
        """
        try:
            start: ObjectId = self.resolve(rev)
        except RefNotFoundError:
            if rev == "HEAD":
                return
            raise
        with self.db.read() as txn:
            if first_parent:
                chain: list[tuple[ObjectId, Commit]] = []
                oid: ObjectId | None = start
                while oid is not None and (limit is None or len(chain) < limit):
                    c = self.get_commit(oid, txn)
                    chain.append((oid, c))
                    oid = c.parents[0] if c.parents else None
                ordered = chain
            else:
                ordered = self._topo(txn, start, limit)
        yield from ordered

    def _topo(self, txn: Txn, start: ObjectId, limit: int | None) -> list[tuple[ObjectId, Commit]]:
        commits: dict[bytes, Commit] = {}
        children: dict[bytes, int] = {}
        stack = [start]
        while stack:
            oid = stack.pop()
            if oid in commits:
                continue
            c = self.get_commit(oid, txn)
            commits[oid] = c
            for p in c.parents:
                children[p] = children.get(p, 0) + 1
                stack.append(p)
        import heapq

        ready = [(-commits[start].time, start)]
        out: list[tuple[ObjectId, Commit]] = []
        while ready and (limit is None or len(out) < limit):
            _, oid = heapq.heappop(ready)
            c = commits[oid]
            out.append((ObjectId(oid), c))
            for p in c.parents:
                children[p] -= 1
                if children[p] == 0:
                    heapq.heappush(ready, (-commits[p].time, p))
        return out

    # -- reading files ----------------------------------------------------------------------
    def file_manifest(self, rev: str, path: str) -> FileManifest:
        """The manifest of ``path`` in commit ``rev``."""
        return self._file_at(rev, path)[1]

    def _file_at(self, rev: str, path: str) -> tuple[str, FileManifest]:
        """``(where, manifest)``: where names the path and commit, for error messages."""
        with self.db.read() as txn:
            cid = self._resolve(txn, rev)
            e = self.lookup(cid, path, txn)
            if e is None:
                raise PathError(f"{path}: not in {rev}")
            if e.is_dir:
                raise PathError(f"{path}: is a directory in {rev}")
            return f"{path} in commit {cid.hex()[:12]}", self.get_manifest(e.id, txn)

    def open_file(self, path: str, rev: str = "HEAD") -> ChunkedFile:
        """A seekable, read-only file over ``path`` at ``rev``; reads chunks lazily, verified."""
        where, m = self._file_at(rev, path.strip("/"))
        return ChunkedFile(self.store, m, where, self.get_chunk_list)

    def iter_file(
        self, manifest: FileManifest, where: str = "", *, file_hash: bool = True
    ) -> Iterator[bytes]:
        """Yield a file's bytes chunk by chunk, each verified against its chunk id.

        With ``file_hash`` the whole-file BLAKE3 is checked too. Chunk ids plus the manifest's
        own id already pin every byte, so checkout skips it: it is a second, independent check
        that costs a sequential hash pass (~0.25 s per GiB here) on the hot path.
        """
        h = blake3() if file_hash else None
        try:
            for data in self.store.iter_chunks(cid for cid, _ in self.manifest_chunks(manifest)):
                if h is not None:
                    h.update(data)
                yield data
        except MsError as exc:  # name the file and commit (same error class)
            raise type(exc)(f"{where}: {exc.message}") from None
        if h is not None and h.digest() != manifest.content_hash:
            raise CorruptObjectError(f"{where}: file content does not match its hash")

    def cat(self, rev: str, path: str, out: BinaryIO) -> int:
        """Stream one file of a commit to ``out``; return the bytes written."""
        where, m = self._file_at(rev, path.strip("/"))
        n = 0
        for data in self.iter_file(m, where):
            out.write(data)
            n += len(data)
        return n

    def tensors(self, rev: str, path: str) -> list[TensorInfo]:
        """The tensors of a safetensors file at ``rev``, in file order, from its header only.

        Raises:
            PathError: If ``path`` is not a file in ``rev``.
            BadArgumentError: If the file is not a safetensors file (judged by content).
            FormatError: If its header is malformed.
        """
        with self.open_file(path, rev) as f:
            return _safetensors_header(f)

    def load_tensor(self, rev: str, path: str, name: str, *, raw: bool = False) -> npt.NDArray[Any]:
        """One tensor of a safetensors file at ``rev`` as a numpy array, shaped.

        Reads the header and then only the chunks the tensor's byte range spans, straight into
        the array's buffer. Dtypes follow ``tensors.decode`` (numpy has no bfloat16): BF16 is
        widened to float32 (exact), BOOL becomes bool, FP8 stays its raw uint8 bytes. With
        ``raw`` the stored bits are returned instead (BF16 as uint16, BOOL as uint8), which for
        BF16 halves the memory; ``torch.from_numpy(a).view(torch.bfloat16)`` turns that into
        a torch tensor without a copy.

        Raises:
            BadArgumentError: If the file has no tensor ``name``, or is not safetensors.
            PathError: If ``path`` is not a file in ``rev``.
        """
        with self.open_file(path, rev) as f:
            infos = _safetensors_header(f)
            info = next((t for t in infos if t.name == name), None)
            if info is None:
                shown = ", ".join(repr(t.name) for t in infos[:5])
                more = f", ... ({len(infos)} in all)" if len(infos) > 5 else ""
                raise BadArgumentError(
                    f"{f.name}: no tensor {name!r} (it has {shown or 'none'}{more})"
                )
            return _read_array(f, info, raw)

    # -- checkout ---------------------------------------------------------------------------
    def checkout(
        self,
        rev: str,
        paths: Iterable[str] | None = None,
        *,
        force: bool = False,
        to: str | os.PathLike[str] | None = None,
        progress: ProgressFn | None = None,
        on_total: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Restore the working tree (or ``paths``, or a separate folder ``to``) to ``rev``."""
        with self.db.read() as txn:
            target = self._resolve(txn, rev)
            files = self.commit_files(target, txn)
        path_list = [p for p in (paths or [])]
        if path_list:
            wanted = [self.relpath(p) if to is None else p.strip("/") for p in path_list]
            sel = {
                p: e
                for p, e in files.items()
                if any(p == w or p.startswith(w + "/") or not w for w in wanted)
            }
            for w in wanted:
                if not any(p == w or p.startswith(w + "/") or not w for p in files):
                    raise PathError(f"{w}: not in {rev}")
            files = sel
        if to is not None:
            dest = Path(to).absolute()
            if on_total is not None:
                on_total(sum(e.size for e in files.values()))
            written = 0
            for p, e in sorted(files.items()):
                self._write_file(dest, p, e, progress, target)
                written += 1
            self._sync_dirs()
            return {"commit": target.hex(), "written": written, "to": str(dest)}
        with self._writing():
            return self._checkout_inplace(
                rev, target, files, bool(path_list), force, progress, on_total
            )

    def _checkout_inplace(
        self,
        rev: str,
        target: ObjectId,
        files: dict[str, TreeEntry],
        partial: bool,
        force: bool,
        progress: ProgressFn | None,
        on_total: ProgressFn | None = None,
        command: str = "checkout",
    ) -> dict[str, Any]:
        st = self.status()
        if st.merging and not partial and not force:
            raise UncommittedChangesError(
                f"a {st.merging} is in progress; finish it with `ms commit`, or `ms merge --abort`"
            )
        dirty = set(st.modified) | set(st.deleted) | {p for _, p in st.staged}
        with self.db.read() as txn:
            index = self._index(txn)
        if partial:
            remove: list[str] = []
            touch = set(files)
        else:
            remove = [p for p in index if p not in files]
            touch = set(files) | set(remove)
        if not force:
            staged = {p for _, p in st.staged}
            conflicts = sorted(
                p
                for p in touch
                if p in dirty
                and (
                    p not in files
                    or p not in index
                    or index[p].manifest_id != files[p].id
                    or p in st.modified
                )
                # already as the target has it (a killed checkout got that far): nothing is lost
                and not (
                    p not in staged
                    and (self._holds(p, files[p]) if p in files else p in st.deleted)
                )
            )
            untracked = set(st.untracked)
            clobber = sorted(p for p in files if p in untracked and not self._holds(p, files[p]))
            if conflicts or clobber:
                bad = (conflicts + clobber)[:5]
                raise UncommittedChangesError(
                    f"checkout would overwrite local changes in {', '.join(bad)}"
                    f"{' ...' if len(conflicts) + len(clobber) > 5 else ''}; commit them, "
                    "or pass --force"
                )
        todo: list[tuple[str, TreeEntry]] = []
        for p, e in sorted(files.items()):
            cur = index.get(p)
            if cur is not None and self._in_place(p, cur, e):
                continue  # already there (stat cache, or a hash check when racily clean)
            todo.append((p, e))
        if on_total is not None:
            on_total(sum(e.size for _, e in todo))
        new_entries: dict[str, IndexEntry] = {}
        for p, e in todo:
            new_entries[p] = self._write_file(self.workdir, p, e, progress, target)
        written = len(todo)
        for p in remove:
            with contextlib.suppress(FileNotFoundError):
                self._unlink_tracked(p)
            self._prune_dirs(p)
        self._sync_dirs()
        branch = None
        if not partial:
            with self.db.read() as txn:
                if txn.get("refs", f"refs/heads/{rev}".encode()) is not None:
                    branch = f"refs/heads/{rev}"

        def fn(txn: Txn) -> None:
            if not partial:
                for p in remove:
                    txn.delete("index", p.encode())
                _, before = refs.resolve_ref(txn, refs.HEAD)
                txn.delete("meta", MERGE_STATE_KEY)  # only reachable with --force: discards it
                if branch is not None:
                    refs.set_symbolic(txn, refs.HEAD, branch)
                else:
                    txn.put("refs", refs.HEAD.encode(), b"\x01" + target)
                reflog.append(txn, refs.HEAD, before, target, command, f"moving to {rev}")
            for p, ie in new_entries.items():
                txn.put("index", p.encode(), ie.encode())

        self.db.write(fn)
        return {"commit": target.hex(), "written": written, "removed": len(remove)}

    def _in_place(self, rel: str, cur: IndexEntry, e: TreeEntry) -> bool:
        """``rel`` is staged as ``e`` and the working file still holds it: nothing to write."""
        return cur.manifest_id == e.id and cur.mode == e.mode and self._unchanged(rel, cur)

    def _unchanged(self, rel: str, cur: IndexEntry) -> bool:
        """Whether the working file still holds its staged content (stat cache, else hash)."""
        try:
            st = os.lstat(self._abs(rel))
        except OSError:
            return False
        if cur.matches(st):
            return True
        if not cur.stat_equal(st):
            return False
        return _hash_file(self._abs(rel)) == self.get_manifest(cur.manifest_id).content_hash

    def _holds(self, rel: str, e: TreeEntry) -> bool:
        """Whether the working file already holds ``e`` (content and mode).

        Writing ``e`` over such a file loses nothing: a checkout or merge that was killed
        after writing it left it so, and re-running that operation must not refuse.
        """
        try:
            st = os.lstat(self._abs(rel))
        except OSError:
            return False
        if not statmod.S_ISREG(st.st_mode) or st.st_size != e.size or _mode_of(st) != e.mode:
            return False
        return _hash_file(self._abs(rel)) == self.get_manifest(e.id).content_hash

    def _materialize(
        self, files: dict[str, TreeEntry], index: dict[str, IndexEntry], commit: bytes | None
    ) -> tuple[dict[str, IndexEntry], list[str]]:
        """Make the tracked working tree hold exactly ``files``; return ``(entries, removed)``.

        Writes what differs and deletes tracked paths that are not in ``files``.

        A file whose staged entry has the same content and whose stat data still match is not
        touched: switching between versions that share most files writes only the rest.
        """
        entries: dict[str, IndexEntry] = {}
        for p, e in sorted(files.items()):
            cur = index.get(p)
            if cur is not None and self._in_place(p, cur, e):
                entries[p] = cur
                continue
            entries[p] = self._write_file(self.workdir, p, e, None, commit)
        removed = []
        for p in index:
            if p not in files:
                try:
                    self._unlink_tracked(p)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise PathError(f"{p}: cannot remove ({exc.strerror})") from None
                self._prune_dirs(p)
                removed.append(p)
        self._sync_dirs()
        return entries, removed

    @staticmethod
    def _store_index(txn: Txn, old: dict[str, IndexEntry], new: dict[str, IndexEntry]) -> None:
        """Replace the staging index ``old`` by ``new`` (only the entries that differ)."""
        for p in old:
            if p not in new:
                txn.delete("index", p.encode())
        for p, ie in new.items():
            if old.get(p) != ie:
                txn.put("index", p.encode(), ie.encode())

    def _sync_dirs(self) -> None:
        """Make the renames of written files durable: one fsync per folder touched.

        Temporary files that a killed writer left in those folders go too, so re-running a
        crashed checkout or merge leaves nothing behind.
        """
        dirs, self._dirty_dirs = self._dirty_dirs, set()
        for d in dirs:
            _remove_stale_tmp(d)
            with contextlib.suppress(OSError):
                fsync_dir(d)

    def _unlink_tracked(self, rel: str) -> None:
        """Delete a tracked working file, but never through a symlinked parent folder.

        A folder replaced by a symlink (possibly to a place outside the working tree) no longer
        holds our file: there is nothing of ours to delete (FORMAT §16).
        """
        cur = self.workdir
        for name in rel.split("/")[:-1]:
            cur = cur / name
            if cur.is_symlink():
                return
        self._abs(rel).unlink()

    def _prune_dirs(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(len(parts)):  # never below a symlinked folder: it may lead outside
            if self._abs("/".join(parts[: i + 1])).is_symlink():
                del parts[i + 1 :]
                break
        while parts:
            with contextlib.suppress(OSError):
                self._abs("/".join(parts)).rmdir()
            parts.pop()

    def _write_file(
        self,
        root: Path,
        rel: str,
        e: TreeEntry,
        progress: ProgressFn | None,
        commit: bytes | None = None,
    ) -> IndexEntry:
        """Stream a file into a temporary name beside its target, fsync, rename into place."""
        parts = rel.split("/")
        for name in parts:
            check_name(name)
        dest = root.joinpath(*parts)
        parent = dest.parent
        # refuse to write through a symlinked directory: it could point outside the tree
        cur = root
        for name in parts[:-1]:
            cur = cur / name
            if cur.is_symlink():
                raise PathError(
                    f"{rel}: a parent folder is a symlink; refusing to write through it"
                )
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {parent}: {exc}") from None
        m = self.get_manifest(e.id)
        tmp = parent / f".{parts[-1]}.ms-tmp-{os.getpid()}"
        recorded = time.time_ns()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, e.mode)
            try:
                where = f"{rel} in commit {commit.hex()[:12]}" if commit else rel
                out = DirectFileWriter(fd, self.store.buffers, self.store.writer)
                try:
                    for data in self.iter_file(m, where, file_hash=False):
                        out.write(data)
                        if progress is not None:
                            progress(len(data))
                finally:
                    out.close()
                os.fchmod(fd, e.mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
            self._dirty_dirs.add(parent)
        except MsError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise storage_error(exc, f"writing {dest}") from None
        st = os.lstat(dest)
        return IndexEntry(
            e.id, st.st_size, e.mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, recorded
        )

    def restore(
        self, paths: Iterable[str], *, staged: bool = False, source: str | None = None
    ) -> list[str]:
        """Like git restore: working files from the index, or (``staged``) the index from HEAD."""
        rels = [self.relpath(p) for p in paths]
        done: list[str] = []
        with self._writing():
            with self.db.read() as txn:
                index = self._index(txn)
                _, head = refs.resolve_ref(txn, refs.HEAD)
                src = self._resolve(txn, source) if source else head
                src_files = self.commit_files(src, txn)

            def sel(d: dict[str, Any], rel: str) -> list[str]:
                return [p for p in d if p == rel or p.startswith(rel + "/") or not rel]

            if staged:

                def fn(txn: Txn) -> None:
                    done.clear()  # the DB may run fn again (map growth)
                    for rel in rels:
                        hits = set(sel(index, rel)) | set(sel(src_files, rel))
                        if not hits:
                            raise PathError(f"{rel}: not tracked")
                        for p in hits:
                            e = src_files.get(p)
                            if e is None:
                                txn.delete("index", p.encode())
                            else:
                                old = index.get(p)
                                ie = (
                                    IndexEntry(e.id, e.size, e.mode, 0, 0, 0, 0)
                                    if (old is None)
                                    else IndexEntry(
                                        e.id, e.size, e.mode, old.mtime_ns, old.ctime_ns, old.ino, 0
                                    )
                                )
                                txn.put("index", p.encode(), ie.encode())
                            done.append(p)

                self.db.write(fn)
                return done
            new_entries: dict[str, IndexEntry] = {}
            for rel in rels:
                hits = sel(src_files, rel) if source else sel(index, rel)
                if not hits:
                    raise PathError(f"{rel}: not tracked")
                for p in hits:
                    if source:
                        e = src_files[p]
                    else:
                        ie = index[p]
                        e = TreeEntry(p.rpartition("/")[2], False, ie.mode, ie.size, ie.manifest_id)
                    written = self._write_file(self.workdir, p, e, None)
                    if not source:
                        new_entries[p] = written
                    done.append(p)
            self._sync_dirs()
            if new_entries:
                self.db.write(
                    lambda txn: [
                        txn.put("index", p.encode(), ie.encode()) for p, ie in new_entries.items()
                    ]
                )
        return done

    # -- accounting -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Logical bytes (sum over commits of their files), stored bytes, chunk and pack counts."""
        s: StoreStats = self.store.stats()
        logical = 0
        commits = 0
        seen: set[bytes] = set()
        with self.db.read() as txn:
            heads = [oid for _, oid, _ in refs.list_refs(txn) if oid is not None]
            _, head = refs.resolve_ref(txn, refs.HEAD)
            if head is not None:
                heads.append(head)
            stack = list(heads)
            while stack:
                oid = stack.pop()
                if oid in seen:
                    continue
                seen.add(oid)
                c = self.get_commit(oid, txn)
                commits += 1
                logical += sum(e.size for e in self.walk_tree(c.tree_id, txn).values())
                stack.extend(c.parents)
            objects = txn.count("objects")
        return {
            "commits": commits,
            "logical_bytes": logical,
            "unique_bytes": s.raw_bytes,
            "stored_bytes": s.stored_bytes,
            "pack_bytes": s.pack_bytes,
            "chunks": s.chunks,
            "packs": s.packs,
            "objects": objects,
            "dedup_ratio": round(logical / s.stored_bytes, 3) if s.stored_bytes else None,
            "codecs": {
                name: {"chunks": n, "raw_bytes": r, "stored_bytes": st}
                for name, (n, r, st) in s.by_codec.items()
            },
            "delta_depth": self.config.delta_depth if self.store.delta else None,
        }


def _check_repo_path(rel: str) -> None:
    """Refuse a path that could not be stored in a tree (and read back) safely."""
    for name in rel.split("/") if rel else []:
        try:
            check_name(name)
        except FormatError:
            raise PathError(
                f"{rel}: the name {name!r} cannot be tracked (no control characters, "
                "backslashes, '.ms', '.' or '..'; at most 255 bytes)"
            ) from None


def _split_path(path: str) -> list[str]:
    p = path.strip().strip("/")
    if not p or p == ".":
        return []
    parts = PurePosixPath(p).parts
    for name in parts:
        if name in ("..", "."):
            raise PathError(f"{path}: '.' and '..' are not allowed in repository paths")
    return list(parts)


def _hash_file(path: Path) -> bytes:
    h = blake3(max_threads=blake3.AUTO)
    buf = bytearray(8 << 20)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(mv):
            h.update(mv[:n])
    return h.digest()


def _safetensors_header(f: ChunkedFile) -> list[TensorInfo]:
    """The tensors of a stored safetensors file; errors name the path and commit."""
    from modelstore import tensors as st

    if not st.is_safetensors(f):
        raise BadArgumentError(f"{f.name}: not a safetensors file")
    try:
        return st.read_header(f)[0]
    except FormatError as exc:
        raise FormatError(f"{f.name}: {exc.message}") from None


def _read_array(f: ChunkedFile, info: TensorInfo, raw: bool) -> npt.NDArray[Any]:
    """Read one tensor's byte range into a fresh array with a single ``readinto`` pass."""
    import numpy as np

    from modelstore.tensors import DTYPES

    dt = DTYPES[info.dtype]
    if info.dtype == "BF16":
        stored = "<u2"
    elif dt.opaque or info.dtype == "BOOL":
        stored = "u1"
    else:
        stored = str(dt.numpy)
    buf = np.empty(info.nbytes, dtype=np.uint8)
    view = buf.data
    f.seek(info.start)
    done = 0
    while done < info.nbytes:
        got = f.readinto(view[done:])
        if not got:
            raise FormatError(f"{f.name}: the file ends inside tensor {info.name!r}")
        done += got
    arr = buf.view(stored).reshape(info.shape)
    if raw:
        return arr
    if info.dtype == "BF16":
        wide = arr.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    if info.dtype == "BOOL":
        np.minimum(arr, 1, out=arr)  # any non-zero byte is True, as tensors.decode reads it
        return arr.view(np.bool_)
    return arr


class ChunkedFile(io.RawIOBase):
    """A read-only, seekable view of a stored file; fetches and verifies chunks as read.

    Holds one segment's chunk list and one chunk at a time, whatever the file's size.
    """

    def __init__(
        self,
        store: ChunkStore,
        manifest: FileManifest,
        name: str,
        load_list: Callable[[ObjectId], ChunkList],
    ) -> None:
        super().__init__()
        self._store = store
        self._m = manifest
        self._load_list = load_list
        self.name = name
        if manifest.segments:
            self._seg_offsets = [0, *itertools.accumulate(s.size for s in manifest.segments)]
        else:
            self._seg_offsets = [0, manifest.size]
        self._seg_idx = -1
        self._ids = b""
        self._offsets: list[int] = []
        self._pos = 0
        self._cache_key: tuple[int, int] = (-1, -1)
        self._cache = b""

    @property
    def size(self) -> int:
        """The file's size."""
        return self._m.size

    def readable(self) -> bool:  # noqa: D102
        return True

    def seekable(self) -> bool:  # noqa: D102
        return True

    def tell(self) -> int:  # noqa: D102
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:  # noqa: D102
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._m.size}[whence]
        new = base + offset
        if new < 0:
            raise BadArgumentError("negative seek position")
        self._pos = new
        return new

    def _segment(self, idx: int) -> None:
        if idx == self._seg_idx:
            return
        if self._m.segments:
            seg = self._m.segments[idx]
            cl = self._load_list(seg.id)
            ids, lens = cl.chunk_ids, cl.lengths()
        else:
            ids, lens = self._m.chunk_ids, self._m.lengths()
        base = self._seg_offsets[idx]
        self._ids = ids
        self._offsets = [base + o for o in (0, *itertools.accumulate(lens))]
        self._seg_idx = idx

    def _chunk(self, seg: int, idx: int) -> bytes:
        if (seg, idx) != self._cache_key:
            cid = self._ids[idx * ID_LEN : (idx + 1) * ID_LEN]
            try:
                self._cache = self._store.read_chunk(cid)
            except MsError as exc:  # name the file and commit (same error class)
                raise type(exc)(f"{self.name}: {exc.message}") from None
            self._cache_key = (seg, idx)
        return self._cache

    def readinto(self, b: Any) -> int:  # noqa: D102
        view = memoryview(b).cast("B")
        want = len(view)
        done = 0
        while done < want and self._pos < self._m.size:
            seg = bisect_right(self._seg_offsets, self._pos) - 1
            self._segment(seg)
            idx = bisect_right(self._offsets, self._pos) - 1
            data = self._chunk(seg, idx)
            start = self._pos - self._offsets[idx]
            n = min(want - done, len(data) - start)
            view[done : done + n] = memoryview(data)[start : start + n]
            done += n
            self._pos += n
        return done
