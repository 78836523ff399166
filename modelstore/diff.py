"""Layer 4.5: what changed between two versions of the tree: files, new chunk bytes, tensors.

A side is a commit, the staging index, or the working tree (its tracked files, as in git:
untracked files are not shown). ``diff`` follows git's rules: no revision compares the index
with the working tree, one compares that revision with the working tree (or, ``staged``, with
the index), two compare the first with the second.

For every changed file it reports the sizes and ``new_bytes``: the bytes of the distinct chunks
of the new version that the old version of the same path does not have, i.e. what storing the
change costs (a renamed file costs nothing; an added file costs all its distinct chunks).
Working files whose stat data match their staging entry are not read; the others are chunked
and hashed (``ChunkStore.scan``) without being stored.

When both versions of a modified file are datasets (CSV/TSV by name, Parquet by content), each
is summarized in one streaming pass (``modelstore.datasets``) and the summaries compared:
columns added, removed or retyped, rows, and per-column statistics (``FileDiff.dataset``).

When both versions of a modified file are safetensors (recognised by content), tensors are
compared one by one: added, removed, reshaped (dtype or shape), changed or unchanged. A tensor
whose byte range is covered in both versions by the same chunks (allowing for a shifted data
area) is unchanged without reading any of it; otherwise only the chunks that are not shared are
read and compared bytewise; only a tensor that really differs is read whole, in bounded pieces,
for its largest absolute difference and its relative L2 difference ``||new - old|| / ||old||``.

Memory: one file's chunk lists are held while that file is compared, as numpy arrays (40 bytes
per chunk and side, plus a sorted copy of the new ids: ~25 MB for a 20 GB file at the 64 KiB
average chunk); tensor data is read in pieces of at most ``PIECE_ELEMS`` elements (~40 MB).
"""

from __future__ import annotations

import contextlib
import math
import os
import stat as statmod
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelstore import datasets as ds
from modelstore import tensors as st
from modelstore.errors import (
    BadArgumentError,
    CorruptObjectError,
    FormatError,
    ObjectNotFoundError,
    PathError,
    RefNotFoundError,
    UnsupportedFormatError,
)
from modelstore.ids import ID_LEN, ObjectId
from modelstore.metadb import Txn
from modelstore.objects import MODE_EXEC, MODE_FILE, TreeEntry
from modelstore.repository import ChunkedFile, IndexEntry, Repository

__all__ = [
    "PIECE_ELEMS",
    "DiffResult",
    "DiffSide",
    "FileDiff",
    "TensorDiff",
    "TensorsDiff",
    "dataset_diff",
    "dataset_summary",
    "diff",
    "split_args",
]

#: elements of one tensor compared at a time (float64 working arrays of 8 MiB each)
PIECE_ELEMS = 1 << 20
#: bytes compared at a time when checking the chunks two versions do not share
PIECE_BYTES = 8 << 20
_ID = np.dtype((np.void, ID_LEN))

RepoLike = Repository | str | os.PathLike[str]


# -- results ----------------------------------------------------------------------------------
def _num(x: float | None) -> float | str | None:
    """JSON has no inf or nan: those become the strings "inf", "-inf", "nan"."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


@dataclass
class TensorDiff:
    """One tensor of a safetensors file that exists in either version.

    ``status`` is ``added``, ``removed``, ``reshaped`` (dtype or shape differ), ``changed`` or
    ``unchanged``. ``max_abs`` and ``rel_l2`` are set for changed tensors of numeric dtypes
    (``rel_l2`` is ``inf`` when the old tensor is all zeros, ``nan`` when a NaN appears on one
    side only). ``method`` says how it was decided: ``chunks`` (same chunks, no data read),
    ``bytes`` (only the chunks not shared were read), ``values`` (both tensors read).
    """

    name: str
    status: str
    old_dtype: str | None
    new_dtype: str | None
    old_shape: list[int] | None
    new_shape: list[int] | None
    max_abs: float | None = None
    rel_l2: float | None = None
    method: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as strings)."""
        d = asdict(self)
        d["max_abs"] = _num(self.max_abs)
        d["rel_l2"] = _num(self.rel_l2)
        return d


@dataclass
class TensorsDiff:
    """The per-tensor comparison of two safetensors versions of one file."""

    tensors: list[TensorDiff]
    metadata_changed: bool
    bytes_read: int

    @property
    def counts(self) -> dict[str, int]:
        """Number of tensors per status (every status present, zero or not)."""
        out = dict.fromkeys(("added", "removed", "reshaped", "changed", "unchanged"), 0)
        for t in self.tensors:
            out[t.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "counts": self.counts,
            "metadata_changed": self.metadata_changed,
            "bytes_read": self.bytes_read,
            "tensors": [t.to_json() for t in self.tensors],
        }


@dataclass
class FileDiff:
    """One changed file: ``added``, ``removed``, ``modified`` or ``renamed`` (from ``old_path``).

    Sizes are None on the side where the file does not exist; ids are manifest ids (for a
    working file that was read, the id it would get if added). ``new_bytes``/``new_chunks``:
    distinct chunks of the new version not in the old version of the same path. ``dataset``:
    schema and statistics changes when both versions are CSV/TSV/Parquet (``dataset_error``
    says why a dataset could not be summarized).
    """

    path: str
    status: str
    old_size: int | None
    new_size: int | None
    new_bytes: int = 0
    new_chunks: int = 0
    old_path: str | None = None
    old_mode: str | None = None
    new_mode: str | None = None
    old_id: str | None = None
    new_id: str | None = None
    tensors: TensorsDiff | None = None
    tensor_error: str | None = None
    dataset: ds.DatasetDiff | None = None
    dataset_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["tensors"] = self.tensors.to_json() if self.tensors is not None else None
        d["dataset"] = self.dataset.to_json() if self.dataset is not None else None
        return d


@dataclass(frozen=True)
class DiffSide:
    """One side of a diff: ``commit`` (its id and the revision given), ``index`` or ``working``."""

    kind: str
    commit: str | None = None
    rev: str | None = None

    @property
    def label(self) -> str:
        """Short human name."""
        if self.kind == "commit":
            return f"{self.rev} ({self.commit[:12]})" if self.commit else f"{self.rev} (empty)"
        return "index" if self.kind == "index" else "working tree"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"kind": self.kind, "commit": self.commit, "rev": self.rev, "label": self.label}


@dataclass
class DiffResult:
    """Every changed file between two sides, in path order."""

    old: DiffSide
    new: DiffSide
    files: list[FileDiff] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        """Counts per status, total new chunk bytes, and the change in total size."""
        out = dict.fromkeys(("added", "removed", "modified", "renamed"), 0)
        for f in self.files:
            out[f.status] += 1
        out["files"] = len(self.files)
        out["new_bytes"] = sum(f.new_bytes for f in self.files)
        out["size_delta"] = sum((f.new_size or 0) - (f.old_size or 0) for f in self.files)
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "summary": self.summary,
            "files": [f.to_json() for f in self.files],
        }


# -- chunk lists ------------------------------------------------------------------------------
class _ChunkMap:
    """A file's chunk ids, lengths and start offsets as numpy arrays."""

    def __init__(self) -> None:
        self._ids = bytearray()
        self._lens = array("I")
        self.ids: npt.NDArray[np.void] = np.empty(0, dtype=_ID)
        self.lens: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.offsets: npt.NDArray[np.int64] = np.zeros(1, dtype=np.int64)

    def add(self, chunk_id: bytes, length: int) -> None:
        self._ids += chunk_id
        self._lens.append(length)

    def finish(self) -> _ChunkMap:
        self.ids = np.frombuffer(bytes(self._ids), dtype=_ID)
        self.lens = np.frombuffer(self._lens, dtype=np.uint32).astype(np.int64)
        self.offsets = np.zeros(len(self._lens) + 1, dtype=np.int64)
        np.cumsum(self.lens, out=self.offsets[1:])
        self._ids = bytearray()
        self._lens = array("I")
        return self

    @classmethod
    def of(cls, pairs: Iterable[tuple[bytes, int]]) -> _ChunkMap:
        m = cls()
        for cid, n in pairs:
            m.add(cid, n)
        return m.finish()


def _new_bytes(old: _ChunkMap | None, new: _ChunkMap) -> tuple[int, int]:
    """Bytes and count of the distinct chunks of ``new`` that ``old`` does not have."""
    if not len(new.ids):
        return 0, 0
    uniq, first = np.unique(new.ids, return_index=True)
    lens = new.lens[first]
    if old is not None and len(old.ids):
        lens = lens[~np.isin(uniq, old.ids)]
    return int(lens.sum()), int(lens.size)


def _unshared(
    old: _ChunkMap, new: _ChunkMap, start: int, end: int, shift: int
) -> list[tuple[int, int]]:
    """Parts of ``new[start:end)`` not covered by a chunk that ``old`` has at ``offset - shift``.

    A chunk of the new version found with the same id at the shifted offset in the old version
    proves those bytes equal, so only the returned ranges (new-version offsets) can differ.
    """
    if start >= end:
        return []
    i0 = int(np.searchsorted(new.offsets, start, side="right")) - 1
    i1 = int(np.searchsorted(new.offsets, end, side="left"))
    ks = np.arange(i0, i1)
    n_old = len(old.ids)
    if n_old:
        want = new.offsets[ks] - shift
        j = np.searchsorted(old.offsets[:-1], want)
        jc = np.minimum(j, n_old - 1)
        same = (j < n_old) & (old.offsets[jc] == want) & (old.ids[jc] == new.ids[ks])
        bad = ks[~same]
    else:
        bad = ks
    if not len(bad):
        return []
    # runs of consecutive chunk indices become one byte range each
    breaks = np.flatnonzero(np.diff(bad) != 1)
    firsts = np.concatenate(([bad[0]], bad[breaks + 1]))
    lasts = np.concatenate((bad[breaks], [bad[-1]]))
    return [
        (max(start, int(new.offsets[a])), min(end, int(new.offsets[b + 1])))
        for a, b in zip(firsts, lasts, strict=True)
    ]


# -- tensors ----------------------------------------------------------------------------------
class _Counted:
    """Counts the bytes read through a seekable file."""

    def __init__(self, f: st.SeekableReader) -> None:
        self.f = f
        self.bytes_read = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def read(self, size: int = -1, /) -> bytes | None:
        data = self.f.read(size)
        self.bytes_read += len(data or b"")
        return data

    def readinto(self, buffer: memoryview, /) -> int | None:
        n = self.f.readinto(buffer)
        self.bytes_read += n or 0
        return n


def _same_bytes(
    fo: st.SeekableReader, fn: st.SeekableReader, ranges: list[tuple[int, int]], shift: int
) -> bool:
    step = 64 << 10  # small first, so a tensor that really changed is not read twice
    for a, b in ranges:
        pos = a
        while pos < b:
            n = min(step, b - pos)
            new = st.read_exact(fn, pos, n, "a tensor")
            if new != st.read_exact(fo, pos - shift, n, "a tensor"):
                return False
            pos += n
            step = min(2 * step, PIECE_BYTES)
    return True


def _compare_values(
    fo: st.SeekableReader, to: st.TensorInfo, fn: st.SeekableReader, tn: st.TensorInfo
) -> tuple[bool, float, float]:
    """``(changed, max_abs, rel_l2)`` of two tensors of one dtype and shape, piece by piece."""
    is_float = to.dtype.startswith(("F", "BF"))
    changed = nan_seen = False
    max_abs = diff_sq = ref_sq = 0.0
    total = to.numel
    with np.errstate(over="ignore", invalid="ignore"):
        for first in range(0, total, PIECE_ELEMS):
            count = min(PIECE_ELEMS, total - first)
            na = st.read_elements(fo, to, first, count)
            nb = st.read_elements(fn, tn, first, count)
            a = na.astype(np.float64)
            ref_sq += float(np.dot(a, a))
            eq = na == nb
            if is_float:
                eq |= np.isnan(na) & np.isnan(nb)
            if bool(eq.all()):
                continue
            changed = True
            d = np.abs(nb.astype(np.float64) - a)
            d[eq] = 0.0
            nans = np.isnan(d)
            if bool(nans.any()):
                nan_seen = True
                d[nans] = 0.0
            max_abs = max(max_abs, float(d.max()))
            diff_sq += float(np.dot(d, d))
    if not changed:
        return False, 0.0, 0.0
    if nan_seen:
        return True, math.nan, math.nan
    if ref_sq > 0:
        rel = math.sqrt(diff_sq) / math.sqrt(ref_sq)
    else:
        rel = math.inf if diff_sq > 0 else 0.0
    return True, max_abs, rel


def _tensor_diff(
    fo: st.SeekableReader, fn: st.SeekableReader, old: _ChunkMap, new: _ChunkMap
) -> TensorsDiff | None:
    """Compare two safetensors versions tensor by tensor; None if either is not safetensors."""
    co, cn = _Counted(fo), _Counted(fn)
    if not (st.is_safetensors(co) and st.is_safetensors(cn)):
        return None
    old_t, old_meta = st.read_header(co)
    new_t, new_meta = st.read_header(cn)
    by_old = {t.name: t for t in old_t}
    by_new = {t.name: t for t in new_t}
    out: list[TensorDiff] = []
    for name in sorted(set(by_old) | set(by_new)):
        to, tn = by_old.get(name), by_new.get(name)
        if to is None:
            assert tn is not None
            out.append(TensorDiff(name, "added", None, tn.dtype, None, list(tn.shape)))
            continue
        if tn is None:
            out.append(TensorDiff(name, "removed", to.dtype, None, list(to.shape), None))
            continue
        td = TensorDiff(name, "unchanged", to.dtype, tn.dtype, list(to.shape), list(tn.shape))
        out.append(td)
        if to.dtype != tn.dtype or to.shape != tn.shape:
            td.status = "reshaped"
            continue
        shift = tn.start - to.start
        ranges = _unshared(old, new, tn.start, tn.end, shift)
        td.method = "chunks"
        if not ranges:
            continue
        # few bytes not shared (chunks straddling a changed neighbour): compare just those;
        # mostly not shared: the value comparison below decides (and reads each byte once)
        if 2 * sum(b - a for a, b in ranges) < tn.nbytes:
            td.method = "bytes"
            if _same_bytes(co, cn, ranges, shift):
                continue
        td.method = "values"
        if st.DTYPES[tn.dtype].opaque:
            td.status = "changed"  # FP8: no arithmetic here, the bytes differ
            continue
        changed, td.max_abs, td.rel_l2 = _compare_values(co, to, cn, tn)
        if changed:
            td.status = "changed"
        else:
            td.max_abs = td.rel_l2 = None  # equal values in different bytes (-0.0, NaN payloads)
    return TensorsDiff(out, old_meta != new_meta, co.bytes_read + cn.bytes_read)


# -- sides ------------------------------------------------------------------------------------
@dataclass
class _Version:
    """One side's version of one path; a working file is read lazily (``scan``)."""

    manifest_id: ObjectId | None
    size: int
    mode: int
    work: Path | None = None
    chunks: _ChunkMap | None = None
    #: a working file's staged manifest: kept when the content is the same, however chunked
    staged: ObjectId | None = None


def _mode_of(st_mode: int) -> int:
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


def _dataset_diff(path: str, fo: st.SeekableReader, fn: st.SeekableReader) -> ds.DatasetDiff | None:
    """Summarize both versions and compare them; None unless both are datasets."""
    if ds.detect_format(fo, path) is None or ds.detect_format(fn, path) is None:
        return None
    return ds.diff_summaries(ds.summarize(fo, path), ds.summarize(fn, path))


class _Differ:
    def __init__(self, repo: Repository, with_tensors: bool, with_datasets: bool = True) -> None:
        self.repo = repo
        self.with_tensors = with_tensors
        self.with_datasets = with_datasets
        self._head_files: dict[str, TreeEntry] | None = None  # for delta plans, read once

    def settle(self, path: str, v: _Version) -> None:
        """Give a working file whose stat data changed its manifest id (and chunk list)."""
        if v.manifest_id is not None:
            return
        assert v.work is not None
        chunks = _ChunkMap()
        try:
            with open(v.work, "rb", buffering=0) as f:
                before = os.fstat(f.fileno())
                if self._head_files is None:  # read once per diff, not per file
                    self._head_files = self.repo.head_files()
                plan = self.repo.delta_plan(path, f, before.st_size, self._head_files)
                m = self.repo.store.scan(f, chunks.add, plan)
                after = os.fstat(f.fileno())
        except FileNotFoundError:
            raise PathError(f"{path}: vanished while being compared") from None
        except PermissionError:
            raise PathError(f"{path}: permission denied") from None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            raise PathError(f"{path}: changed while being compared; run the diff again")
        v.manifest_id, v.size, v.chunks = m.id, m.size, chunks.finish()
        if v.staged is not None and m.id != v.staged:
            # the same bytes chunked another way (cut like the previous version, FORMAT §8.2)
            staged = self.repo.get_manifest(v.staged)
            if (staged.size, staged.content_hash) == (m.size, m.content_hash):
                v.manifest_id, v.chunks = v.staged, None

    def chunk_map(self, v: _Version) -> _ChunkMap:
        if v.chunks is not None:
            return v.chunks
        assert v.manifest_id is not None
        m = self.repo.get_manifest(v.manifest_id)
        return _ChunkMap.of(self.repo.manifest_chunks(m))

    @contextlib.contextmanager
    def open(self, path: str, v: _Version, where: str) -> Iterator[st.SeekableReader]:
        if v.work is not None:
            try:
                f = open(v.work, "rb")
            except FileNotFoundError:
                raise PathError(f"{path}: vanished while being compared") from None
            with f:
                yield f
            return
        assert v.manifest_id is not None
        m = self.repo.get_manifest(v.manifest_id)
        with ChunkedFile(self.repo.store, m, f"{path} {where}", self.repo.get_chunk_list) as cf:
            yield cf

    def modified(self, path: str, o: _Version, n: _Version, sides: tuple[str, str]) -> FileDiff:
        old_map, new_map = self.chunk_map(o), self.chunk_map(n)
        nb, nc = _new_bytes(old_map, new_map)
        fd = FileDiff(path, "modified", o.size, n.size, nb, nc)
        if self.with_tensors:
            try:
                with self.open(path, o, sides[0]) as fo, self.open(path, n, sides[1]) as fn:
                    fd.tensors = _tensor_diff(fo, fn, old_map, new_map)
            except CorruptObjectError:
                raise
            except FormatError as exc:  # a malformed safetensors header: report, carry on
                fd.tensor_error = exc.message
        if self.with_datasets:
            try:
                with self.open(path, o, sides[0]) as fo, self.open(path, n, sides[1]) as fn:
                    fd.dataset = _dataset_diff(path, fo, fn)
            except CorruptObjectError:
                raise
            except (FormatError, UnsupportedFormatError) as exc:  # ragged CSV, no pyarrow...
                fd.dataset_error = exc.message
        return fd


def _load_side(
    repo: Repository, txn: Txn, kind: str, commit: ObjectId | None, index: dict[str, IndexEntry]
) -> dict[str, _Version]:
    if kind == "commit":
        files = repo.commit_files(commit, txn)
        return {p: _Version(e.id, e.size, e.mode) for p, e in files.items()}
    if kind == "index":
        return {p: _Version(ie.manifest_id, ie.size, ie.mode) for p, ie in index.items()}
    out: dict[str, _Version] = {}
    for p, ie in index.items():
        full = repo.workdir.joinpath(*p.split("/"))
        try:
            fst = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            continue  # deleted from the working tree
        if not statmod.S_ISREG(fst.st_mode):
            continue
        mode = _mode_of(fst.st_mode)
        if ie.matches(fst):
            out[p] = _Version(ie.manifest_id, ie.size, mode, full)
        else:
            out[p] = _Version(None, fst.st_size, mode, full, staged=ie.manifest_id)
    return out


def _selected(p: str, rels: Sequence[str]) -> bool:
    return not rels or any(not r or p == r or p.startswith(r + "/") for r in rels)


def _open_repo(repo: RepoLike) -> contextlib.AbstractContextManager[Repository]:
    if isinstance(repo, Repository):
        return contextlib.nullcontext(repo)
    return Repository.open(repo)


def _is_rev(repo: Repository, arg: str) -> bool:
    try:
        repo.resolve(arg)
    except (RefNotFoundError, BadArgumentError, ObjectNotFoundError, FormatError):
        return False
    return True


def split_args(
    repo: Repository, args: Sequence[str], after_dashdash: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Split ``ms diff`` arguments into at most two revisions and paths, as git does.

    Args:
        repo: The repository (to resolve revisions).
        args: Arguments before ``--`` (all of them when there was none).
        after_dashdash: Arguments after ``--`` (always paths), or None when there was no ``--``.

    Returns:
        ``(revisions, paths)``.

    Raises:
        BadArgumentError: More than two revisions, or an argument that is both a revision and
            an existing path (write ``REV -- PATH`` or ``./PATH``).
        RefNotFoundError: An argument that is neither a revision nor an existing path.
    """
    if after_dashdash is not None:
        if len(args) > 2:
            raise BadArgumentError("give at most two revisions before --")
        for a in args:
            repo.resolve(a)  # a clear error for a bad revision
        return list(args), list(after_dashdash)
    revs: list[str] = []
    paths: list[str] = []
    for a in args:
        exists = os.path.lexists(a)
        if not paths and len(revs) < 2 and _is_rev(repo, a):
            if exists:
                raise BadArgumentError(
                    f"{a!r} is both a revision and a path: write `ms diff {a} --` for the "
                    f"revision or `ms diff -- {a}` for the path"
                )
            revs.append(a)
        elif exists:
            paths.append(a)
        else:
            raise RefNotFoundError(
                f"{a!r}: unknown revision or path not in the working tree "
                "(use `--` before paths that no longer exist)"
            )
    return revs, paths


def diff(
    repo: RepoLike,
    rev_a: str | None = None,
    rev_b: str | None = None,
    paths: Iterable[str] = (),
    *,
    staged: bool = False,
    tensors: bool = True,
    datasets: bool = True,
) -> DiffResult:
    """Compare two sides of the repository.

    Args:
        repo: An open repository, or a path to open (and close again).
        rev_a: The old side's revision; None for the index (or, with ``staged``, HEAD).
        rev_b: The new side's revision; None for the working tree (or, ``staged``, the index).
        paths: Only files at or below these paths (relative to the current directory).
        staged: Compare ``rev_a`` (default HEAD) with the index instead of the working tree.
        tensors: Compare safetensors files tensor by tensor.
        datasets: Compare the schema and statistics of CSV/TSV/Parquet files (reads both
            versions of each modified one whole).

    Returns:
        The changed files, in path order.

    Raises:
        BadArgumentError: ``rev_b`` without ``rev_a``, or ``staged`` with two revisions.
        RefNotFoundError: An unknown revision.
    """
    if rev_b is not None and rev_a is None:
        raise BadArgumentError("give the old revision too (ms diff OLD NEW)")
    if staged and rev_b is not None:
        raise BadArgumentError("--staged compares one revision with the index; give at most one")
    with _open_repo(repo) as r:
        rels = [r.relpath(p) for p in paths]
        with r.db.read() as txn:
            index = r._index(txn)  # the staging index (read only)
            old_c: ObjectId | None = None
            new_c: ObjectId | None = None
            if rev_a is None and not staged:
                old, new = DiffSide("index"), DiffSide("working")
            else:
                rev = rev_a or "HEAD"
                if rev_a is None:
                    _, old_c = r.head(txn)  # an unborn HEAD is an empty side
                else:
                    old_c = r.resolve(rev, txn)
                old = DiffSide("commit", old_c.hex() if old_c else None, rev)
                if rev_b is not None:
                    new_c = r.resolve(rev_b, txn)
                    new = DiffSide("commit", new_c.hex(), rev_b)
                else:
                    new = DiffSide("index" if staged else "working")
            old_files = _load_side(r, txn, old.kind, old_c, index)
            new_files = _load_side(r, txn, new.kind, new_c, index)
        return _diff_sides(r, old, new, old_files, new_files, rels, tensors, datasets)


def _where(side: DiffSide) -> str:
    if side.kind == "commit":
        return f"in commit {(side.commit or '')[:12]}"
    return "in the index" if side.kind == "index" else "in the working tree"


def _diff_sides(
    repo: Repository,
    old: DiffSide,
    new: DiffSide,
    old_files: dict[str, _Version],
    new_files: dict[str, _Version],
    rels: Sequence[str],
    with_tensors: bool,
    with_datasets: bool = True,
) -> DiffResult:
    differ = _Differ(repo, with_tensors, with_datasets)
    sides = (_where(old), _where(new))
    paths = sorted(p for p in set(old_files) | set(new_files) if _selected(p, rels))
    # removed paths by manifest id, so an added file with the same content is a rename
    gone: dict[bytes, list[str]] = {}
    for p in paths:
        o = old_files.get(p)
        if o is not None and p not in new_files and o.manifest_id is not None:
            gone.setdefault(o.manifest_id, []).append(p)
    renamed_from: set[str] = set()
    files: list[FileDiff] = []
    for p in paths:
        o, n = old_files.get(p), new_files.get(p)
        if n is None:
            continue  # removed: listed after the renames are known
        differ.settle(p, n)
        assert n.manifest_id is not None
        new_id = n.manifest_id.hex()
        if o is None:
            sources = gone.get(n.manifest_id)
            if sources:
                src = sources.pop(0)
                renamed_from.add(src)
                s = old_files[src]
                fd = FileDiff(p, "renamed", s.size, n.size, old_path=src)
                fd.old_mode, fd.new_mode = f"{s.mode:o}", f"{n.mode:o}"
                fd.old_id = fd.new_id = new_id
                files.append(fd)
            else:
                nb, nc = _new_bytes(None, differ.chunk_map(n))
                files.append(
                    FileDiff(
                        p, "added", None, n.size, nb, nc, new_mode=f"{n.mode:o}", new_id=new_id
                    )
                )
            n.chunks = None
            continue
        assert o.manifest_id is not None
        if o.manifest_id == n.manifest_id and o.mode == n.mode:
            n.chunks = None
            continue
        if o.manifest_id == n.manifest_id:
            fd = FileDiff(p, "modified", o.size, n.size)  # the mode alone changed
        else:
            fd = differ.modified(p, o, n, sides)
        fd.old_mode, fd.new_mode = f"{o.mode:o}", f"{n.mode:o}"
        fd.old_id, fd.new_id = o.manifest_id.hex(), new_id
        files.append(fd)
        n.chunks = None
    for p in paths:
        o = old_files.get(p)
        if o is not None and p not in new_files and p not in renamed_from:
            assert o.manifest_id is not None
            files.append(
                FileDiff(
                    p, "removed", o.size, None, old_mode=f"{o.mode:o}", old_id=o.manifest_id.hex()
                )
            )
    files.sort(key=lambda f: f.path)
    return DiffResult(old, new, files)


def dataset_summary(repo: RepoLike, path: str, rev: str = "HEAD") -> ds.DatasetSummary:
    """Schema and statistics of the dataset at ``path`` in ``rev``, streamed from the store.

    Raises:
        BadArgumentError: The file is not a dataset (CSV, TSV or Parquet).
        PathError: No such file in ``rev``.
        FormatError: A malformed dataset (a ragged CSV row, a damaged Parquet file).
    """
    with _open_repo(repo) as r, r.open_file(path, rev) as f:
        return ds.summarize(f, path)


def dataset_diff(
    repo: RepoLike, old_rev: str, new_rev: str, path: str, new_path: str | None = None
) -> ds.DatasetDiff:
    """How the dataset ``path`` (``new_path`` on the new side) changed from one revision to another.

    Raises the errors of :func:`dataset_summary`.
    """
    with _open_repo(repo) as r:
        old = dataset_summary(r, path, old_rev)
        new = dataset_summary(r, new_path or path, new_rev)
    return ds.diff_summaries(old, new)
