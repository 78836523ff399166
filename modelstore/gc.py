"""Layer 4: garbage collection: drop what no root reaches, in a repository or on a remote.

Local (``collect``, docs/FORMAT.md §15), under the writer lock for the whole run:

1. **mark**: from every root (refs, ``HEAD``, the staging index, a merge in progress, and
   reflog entries younger than the reflog expiry) walk tags, commits, trees, manifests and
   chunk lists down to chunk ids; live object and chunk ids are kept in sets (metadata-sized);
2. **plan**: one pass over the chunk index sums each pack's live bytes. Packs younger than the
   grace period are left as they are; an older pack with no live chunk is deleted, one whose
   live share is below the repack threshold is rewritten;
3. **repack**: the live chunks of those packs are copied as stored (verified, not
   recompressed) into new packs, written like any pack (tmp, fsync, rename, fsync dir);
4. **commit**: one transaction deletes unreachable objects and chunk entries, points the
   moved chunks at their new packs, adds the new packs' records and removes the old ones;
5. **delete files**, only then: the old packs, pack files no record names (crash debris) and
   ``tmp/`` files, these two only when older than the grace period.

A reachable chunk is readable at every instant: its new copy is durable before the index
names it, and the old copy goes only after. A reader in another process that located a chunk
in an older snapshot reads it again from its new place (``ChunkStore.read_current``).

Remote (``collect_remote``, FORMAT §12): objects come from the remote's bundles and chunk ids
from its pack indexes. A bundle is kept whole when it holds a live object or is young, and
then every object in it counts as live (so whatever the remote holds stays complete, which
push relies on); a pack is deleted when none of its chunks is live and it is older than the
grace period, measured by the remote's own clock. The refs are read again after marking and
the marking redone until they hold still, before anything is deleted. Nothing is rewritten
remotely: partly-live bundles and packs stay whole.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelstore import refs
from modelstore.backend import Backend, ObjectInfo, in_parallel
from modelstore.chunkstore import CHUNK_LOC, PACK_REC, ChunkLoc, ChunkStore, storage_error
from modelstore.compress import CODEC_DELTA, DELTA_HEAD, parse_delta
from modelstore.errors import (
    BadArgumentError,
    FormatError,
    ObjectNotFoundError,
    RefConflictError,
)
from modelstore.fileio import fsync_dir
from modelstore.ids import ID_LEN, ChunkId, ObjectId
from modelstore.lazy import forget_remote_data
from modelstore.metadb import Txn
from modelstore.objects import ChunkList, Commit, FileManifest, Tag, Tree, decode_object
from modelstore.pack import FOOTER, HEADER, INDEX_ENTRY, PackWriter
from modelstore.reflog import ReflogEntry
from modelstore.repository import IndexEntry, Repository

__all__ = [
    "DEFAULT_REFLOG_EXPIRY",
    "LOCAL_GRACE",
    "REMOTE_GRACE",
    "REPACK_THRESHOLD",
    "GcResult",
    "collect",
    "collect_remote",
    "parse_duration",
]

#: unreachable data younger than this is kept; locally we hold the writer lock, so this only
#: guards writers that do not take it (a lazy clone's read cache, a push's temporary packs)
LOCAL_GRACE = 3600.0
#: remotes have no lock: a push uploads packs and bundles before it moves refs and may run long
REMOTE_GRACE = 14 * 86400.0
#: reflog entries stop being roots after this long (git's gc.reflogExpire)
DEFAULT_REFLOG_EXPIRY = 90 * 86400.0
#: an old pack whose live share of chunk bytes is below this is rewritten
REPACK_THRESHOLD = 0.5
#: rounds of "mark, read the refs again" on a remote before giving up (someone keeps pushing)
MAX_REMOTE_ROUNDS = 5
#: the remote key gc overwrites to read the remote's clock (FORMAT §12)
CLOCK_KEY = "gc-clock"

ProgressFn = Callable[[int], None]
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_PACK_NAME = re.compile(r"[0-9a-f]{64}\.pack")
_READ_BATCH = 64


@dataclass
class GcResult:
    """What a gc dropped (or, in a dry run, would drop).

    ``bytes_reclaimed`` counts files: packs deleted, debris and temporary files, minus the
    packs written by repacking (and, on a remote, bundles). Space LMDB frees inside its file
    is reused by later writes rather than returned.
    """

    dry_run: bool = False
    remote: str | None = None
    objects_dropped: int = 0
    chunks_dropped: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    packs_written: int = 0
    bundles_deleted: int = 0
    debris_files: int = 0
    bytes_repacked: int = 0
    bytes_reclaimed: int = 0
    packs_kept_young: int = 0
    reflog_entries_expired: int = 0
    live_objects: int = 0
    live_chunks: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def parse_duration(
    value: str | float | None, *, allow_never: bool = False, what: str = "duration"
) -> float | None:
    """Seconds from ``14d``, ``12h``, ``30m``, ``45s``, ``2w`` (or sums: ``1d12h``), ``0``, ``now``.

    ``never`` (only where ``allow_never``) gives ``None``; a number is taken as seconds.

    Raises:
        BadArgumentError: Anything else, with one line saying what is accepted.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value < 0:
            raise BadArgumentError(f"bad {what} {value!r}: it cannot be negative")
        return float(value)
    text = value.strip().lower()
    if text in ("0", "now"):
        return 0.0
    if text == "never" and allow_never:
        return None
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        accepted = "a number with a unit s, m, h, d or w (14d, 12h, 30m), 0 or now"
        raise BadArgumentError(
            f"bad {what} {value!r}: use {accepted}" + (", or never" if allow_never else "")
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


# -- marking -------------------------------------------------------------------------------


class _Marker:
    """Walks objects to chunk ids, collecting live object and chunk ids.

    ``load`` returns an object's stored bytes, or None when it is absent. A root is *strict*
    (a ref, ``HEAD``, the staging index, a merge in progress): anything missing below it is
    damage, and gc stops rather than delete around it. Weak roots (reflog entries, objects of
    kept remote bundles) may name objects that an earlier gc collected; those are skipped.
    """

    def __init__(self, load: Callable[[bytes], bytes | None]) -> None:
        self.load = load
        self.objects: set[bytes] = set()
        self.chunks: set[bytes] = set()

    def mark(self, roots: Iterable[tuple[bytes, str]], *, strict: bool) -> None:
        """Mark everything reachable from ``roots`` (``(id, name for messages)``)."""
        stack: list[tuple[bytes, str]] = list(roots)
        live = self.objects
        while stack:
            oid, root = stack.pop()
            if oid in live:
                continue
            raw = self.load(oid)
            if raw is None:
                if strict:
                    raise ObjectNotFoundError(
                        f"object {oid.hex()[:16]} (reachable from {root}) is missing; gc deletes "
                        "nothing while reachable data is damaged (run `ms verify`)"
                    )
                continue
            obj = decode_object(raw, expect_id=oid)
            live.add(oid)
            if isinstance(obj, Tag):
                stack.append((obj.target, root))
            elif isinstance(obj, Commit):
                stack.append((obj.tree_id, root))
                stack.extend((p, root) for p in obj.parents)
            elif isinstance(obj, Tree):
                stack.extend((e.id, root) for e in obj.entries)
            elif isinstance(obj, FileManifest):
                self._add_chunks(obj.chunk_ids)
                stack.extend((s.id, root) for s in obj.segments)
            elif isinstance(obj, ChunkList):
                self._add_chunks(obj.chunk_ids)

    def _add_chunks(self, ids: bytes) -> None:
        self.chunks.update(ids[i : i + ID_LEN] for i in range(0, len(ids), ID_LEN))


def _local_roots(
    repo: Repository, txn: Txn, expire_before_ns: int | None
) -> tuple[list[tuple[bytes, str]], list[tuple[bytes, str]], int]:
    """``(strict roots, reflog roots, expired reflog entries)`` of a repository."""
    strict: list[tuple[bytes, str]] = []
    for name, oid, _ in refs.list_refs(txn, "refs/"):
        if oid is not None:
            strict.append((oid, name))
    _, head = refs.resolve_ref(txn, refs.HEAD)
    if head is not None:
        strict.append((head, "HEAD"))
    for key, raw in txn.items("index"):
        staged = IndexEntry.decode(raw).manifest_id
        strict.append((staged, f"staged {key.decode(errors='replace')}"))
    state = repo.merge_state(txn)
    if state is not None:
        strict.append((state.other, f"the {state.kind} in progress"))
        for path, sides in state.conflicts.items():
            strict.extend((bytes(side[0]), f"conflict {path}") for side in sides if side)
    weak: list[tuple[bytes, str]] = []
    expired = 0

    def entry(key: bytes, raw: bytes) -> None:
        nonlocal expired
        e = ReflogEntry.decode(raw)
        if expire_before_ns is not None and e.time_ns < expire_before_ns:
            expired += 1
            return
        where = f"reflog of {key[:-9].decode(errors='replace')}"
        weak.extend((oid, where) for oid in (e.old, e.new) if oid is not None)

    txn.scan("reflog", entry)
    return strict, weak, expired


# -- local gc ------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What a local gc will change, decided from one snapshot."""

    dead_objects: list[bytes]
    dead_chunks: list[bytes]
    delete_packs: dict[bytes, int]  # pack id -> file size
    rewrite_packs: dict[bytes, int]
    moves: list[tuple[bytes, ChunkLoc]]  # live chunks of rewritten packs, in pack order
    kept_young: int


def collect(
    repo: Repository,
    *,
    dry_run: bool = False,
    prune_older_than: float = LOCAL_GRACE,
    expire_reflog: float | None = DEFAULT_REFLOG_EXPIRY,
    repack_threshold: float = REPACK_THRESHOLD,
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> GcResult:
    """Collect the repository's garbage (see the module docstring); return what went.

    Args:
        repo: The repository; its writer lock is held for the whole run.
        dry_run: Decide everything, change nothing (the lock is still taken, so the numbers
            are exactly what a real run would do now).
        prune_older_than: Grace period in seconds: packs (and pack files, ``tmp/`` files)
            younger than this are not touched, reachable or not.
        expire_reflog: Reflog entries older than this many seconds stop being roots (``None``:
            never). Entries are never deleted (FORMAT §11.1).
        repack_threshold: Rewrite an old pack whose live share of chunk bytes is below this
            (0 never rewrites, 1 rewrites every pack holding any garbage).
        progress: Called with the number of stored bytes repacked, as they are copied.
        on_total: Called once with the number of bytes to repack, before copying.
    """
    if not 0.0 <= repack_threshold <= 1.0:
        raise BadArgumentError(f"repack threshold {repack_threshold} must lie between 0 and 1")
    started = time.monotonic()
    res = GcResult(dry_run=dry_run)
    store = repo.store
    with repo._writing():
        now = time.time()
        expire_ns = None if expire_reflog is None else int((now - expire_reflog) * 1e9)
        with repo.db.read() as txn:
            strict, weak, res.reflog_entries_expired = _local_roots(repo, txn, expire_ns)
            marker = _Marker(lambda oid: txn.get("objects", oid))
            marker.mark(strict, strict=True)
            marker.mark(weak, strict=False)
            if store.delta:  # a live delta keeps its base (and its base's base) live
                marker.chunks |= store.delta_closure(txn, marker.chunks)
            plan = _plan(txn, store, marker, now - prune_older_than, repack_threshold)
            records = set(txn.keys("packs"))
        res.live_objects, res.live_chunks = len(marker.objects), len(marker.chunks)
        del marker  # the sets are not needed past the plan
        res.objects_dropped = len(plan.dead_objects)
        res.chunks_dropped = len(plan.dead_chunks)
        res.packs_deleted = len(plan.delete_packs)
        res.packs_rewritten = len(plan.rewrite_packs)
        res.packs_kept_young = plan.kept_young
        res.bytes_repacked = sum(loc.stored_len for _, loc in plan.moves)
        freed = sum(plan.delete_packs.values()) + sum(plan.rewrite_packs.values())
        if dry_run:
            written = _estimate_packs(plan.moves, repo.config.pack_size)
            res.packs_written = len(written)
            freed -= sum(written)
        else:
            if on_total is not None and plan.moves:
                on_total(res.bytes_repacked)
            new_packs, new_locs = _repack(store, plan.moves, repo.config.pack_size, progress)
            try:
                if plan.dead_objects or plan.dead_chunks or plan.delete_packs or new_packs:
                    _commit(repo, plan, new_packs, new_locs)
            except BaseException:
                for pid, _ in new_packs:  # not indexed: nothing names them
                    store.pack_path(pid).unlink(missing_ok=True)
                raise
            res.packs_written = len(new_packs)
            freed -= sum(PACK_REC.unpack(rec)[1] for _, rec in new_packs)
            records.update(pid for pid, _ in new_packs)
            gone = [*plan.delete_packs, *plan.rewrite_packs]
            for pid in gone:
                store.forget_pack(pid)
            _unlink_all([store.pack_path(pid) for pid in gone])
        debris, debris_bytes = _leftovers(store, records, now - prune_older_than, dry_run)
        res.debris_files = debris
        res.bytes_reclaimed = freed + debris_bytes
    res.seconds = round(time.monotonic() - started, 3)
    return res


def _plan(
    txn: Txn, store: ChunkStore, marker: _Marker, young_after: float, threshold: float
) -> _Plan:
    """Decide, from one snapshot, which objects, chunk entries and packs go."""
    live_objects, live_chunks = marker.objects, marker.chunks
    dead_objects: list[bytes] = []
    txn.scan("objects", lambda k, _: None if k in live_objects else dead_objects.append(k))
    packs: dict[bytes, tuple[int, int]] = {}  # id -> (file size, chunk count)
    young: set[bytes] = set()
    for pid, rec in txn.items("packs"):
        _, size, count, created_ns = PACK_REC.unpack(rec)
        packs[pid] = (size, count)
        try:
            mtime = store.pack_path(pid).stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if max(created_ns / 1e9, mtime) > young_after:
            young.add(pid)
    live_bytes: dict[bytes, int] = dict.fromkeys(packs, 0)
    dead_chunks: list[bytes] = []
    kept_young: set[bytes] = set()  # young packs holding garbage

    def tally(cid: bytes, raw: bytes) -> None:
        if len(raw) != CHUNK_LOC.size or raw[0] != 1:
            raise FormatError("chunk index entry has an unknown version or size (upgrade ms?)")
        pid = raw[1:33]
        if cid in live_chunks:
            if pid in live_bytes:
                live_bytes[pid] += CHUNK_LOC.unpack(raw)[3]
        elif pid in young:
            kept_young.add(pid)
        else:
            dead_chunks.append(cid)

    txn.scan("chunks", tally)
    delete: dict[bytes, int] = {}
    rewrite: dict[bytes, int] = {}
    for pid, (size, count) in packs.items():
        if pid in young:
            continue
        data = size - HEADER.size - FOOTER.size - INDEX_ENTRY.size * count
        if live_bytes[pid] == 0:
            delete[pid] = size
        elif live_bytes[pid] < threshold * data:
            rewrite[pid] = size
    moves: list[tuple[bytes, ChunkLoc]] = []
    if rewrite:

        def pick(cid: bytes, raw: bytes) -> None:
            if raw[1:33] in rewrite and cid in live_chunks:
                _, pid, off, stored, raw_len, codec = CHUNK_LOC.unpack(raw)
                moves.append((cid, ChunkLoc(pid, off, stored, raw_len, codec)))

        txn.scan("chunks", pick)
        moves.sort(key=lambda m: (m[1].pack_id, m[1].offset))  # sequential reads
    return _Plan(dead_objects, dead_chunks, delete, rewrite, moves, len(kept_young))


def _estimate_packs(moves: list[tuple[bytes, ChunkLoc]], pack_size: int) -> list[int]:
    """Sizes of the packs repacking ``moves`` would write (a dry run's estimate)."""
    sizes: list[int] = []
    size = count = 0
    for _, loc in moves:
        size += loc.stored_len
        count += 1
        if HEADER.size + size >= pack_size:
            sizes.append(HEADER.size + size + INDEX_ENTRY.size * count + FOOTER.size)
            size = count = 0
    if count:
        sizes.append(HEADER.size + size + INDEX_ENTRY.size * count + FOOTER.size)
    return sizes


def _repack(
    store: ChunkStore,
    moves: list[tuple[bytes, ChunkLoc]],
    pack_size: int,
    progress: ProgressFn | None,
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Copy the stored bytes of ``moves`` into new durable packs (no record yet).

    Chunks are read and verified in batches on the store's pool, in order, a few batches
    ahead; bytes go out through the pack writer's direct-I/O buffers. Returns ``(new pack
    records, new chunk index values)``; on failure the new packs are deleted.
    """
    new_packs: list[tuple[bytes, bytes]] = []
    new_locs: list[tuple[bytes, bytes]] = []
    if not moves:
        return new_packs, new_locs
    store.tmp_dir.mkdir(exist_ok=True)
    writer: PackWriter | None = None

    def read(batch: list[tuple[bytes, ChunkLoc]]) -> list[bytes]:
        out = []
        for cid, loc in batch:
            stored = store.read_stored(loc)
            store.decode_verified(cid, loc, stored, strict=True)  # never copy damage
            out.append(stored)
        return out

    def finish(w: PackWriter) -> None:
        pack_hex, _ = w.finish(store.packs_dir)
        pid = bytes.fromhex(pack_hex)
        new_packs.append((pid, PACK_REC.pack(1, w.size, len(w.entries), time.time_ns())))
        for e in w.entries:
            loc = CHUNK_LOC.pack(1, pid, e.offset, e.stored_len, e.raw_len, e.codec)
            new_locs.append((e.chunk_id, loc))

    batches = [moves[i : i + _READ_BATCH] for i in range(0, len(moves), _READ_BATCH)]
    pending: deque[tuple[list[tuple[bytes, ChunkLoc]], Future[list[bytes]]]] = deque()
    try:
        for i in range(len(batches)):
            while len(pending) <= 2 * store.threads and i + len(pending) < len(batches):
                b = batches[i + len(pending)]
                pending.append((b, store.pool.submit(read, b)))
            batch, fut = pending.popleft()
            for (cid, loc), stored in zip(batch, fut.result(), strict=True):
                if writer is None:
                    name = f"gc-{os.getpid()}-{os.urandom(4).hex()}"
                    writer = PackWriter(store.tmp_dir, name, store.buffers, store.writer)
                writer.add(ChunkId(cid), loc.codec, memoryview(stored)[1:], loc.raw_len)
                if progress is not None:
                    progress(loc.stored_len)
                if writer.size >= pack_size:
                    w, writer = writer, None
                    finish(w)
        if writer is not None:
            w, writer = writer, None
            finish(w)
    except OSError as exc:
        _drop(store, writer, pending, new_packs)
        raise storage_error(exc, "repacking") from None
    except BaseException:
        _drop(store, writer, pending, new_packs)
        raise
    return new_packs, new_locs


def _drop(
    store: ChunkStore,
    writer: PackWriter | None,
    pending: deque[tuple[list[tuple[bytes, ChunkLoc]], Future[list[bytes]]]],
    new_packs: list[tuple[bytes, bytes]],
) -> None:
    """Undo a failed repack: nothing names its packs yet."""
    for _, fut in pending:
        fut.cancel()
    if writer is not None:
        writer.abort()
    for pid, _ in new_packs:
        store.pack_path(pid).unlink(missing_ok=True)


def _commit(
    repo: Repository,
    plan: _Plan,
    new_packs: list[tuple[bytes, bytes]],
    new_locs: list[tuple[bytes, bytes]],
) -> None:
    """The one transaction: drop dead entries, move live chunks, swap pack records."""
    old = {cid: loc for cid, loc in plan.moves}

    def fn(txn: Txn) -> None:
        for oid in plan.dead_objects:
            txn.delete("objects", oid)
        for cid in plan.dead_chunks:
            txn.delete("chunks", cid)
        for cid, value in new_locs:
            was = old[cid]
            now = txn.get("chunks", cid)
            if now is None or now[1:33] != was.pack_id:  # cannot happen under the lock
                raise RefConflictError(
                    f"chunk {cid.hex()[:16]} moved while gc ran; nothing was changed, run it again"
                )
            txn.put("chunks", cid, value)
        for pid, rec in new_packs:
            txn.put("packs", pid, rec)
        for pid in (*plan.delete_packs, *plan.rewrite_packs):
            txn.delete("packs", pid)

    repo.db.write(fn)


def _unlink_all(paths: Iterable[Path]) -> None:
    """Delete files (already unreferenced), then make the deletions durable per folder."""
    dirs: set[Path] = set()
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise storage_error(exc, f"deleting {p}") from None
        dirs.add(p.parent)
    for d in dirs:
        fsync_dir(d)


def _leftovers(
    store: ChunkStore, records: set[bytes], young_after: float, dry_run: bool
) -> tuple[int, int]:
    """Delete pack files no record names and ``tmp/`` files, if older than the grace period.

    Returns ``(files, bytes)``.
    """
    found: list[tuple[Path, int]] = []
    if store.packs_dir.is_dir():
        for sub in store.packs_dir.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                if not _PACK_NAME.fullmatch(p.name) or bytes.fromhex(p.name[:64]) in records:
                    continue
                st = _lstat(p)
                if st is not None and st.st_mtime <= young_after:
                    found.append((p, st.st_size))
    tmp_dirs: list[Path] = []
    if store.tmp_dir.is_dir():
        for p in store.tmp_dir.iterdir():  # a push's temporary packs sit in a folder
            st = _lstat(p)
            if st is None or st.st_mtime > young_after:
                continue
            if stat.S_ISDIR(st.st_mode):
                tmp_dirs.append(p)
                for q in p.rglob("*"):
                    qst = _lstat(q)
                    if qst is not None and stat.S_ISREG(qst.st_mode):
                        found.append((q, qst.st_size))
            else:
                found.append((p, st.st_size))
    if not dry_run:
        _unlink_all(p for p, _ in found)
        for d in tmp_dirs:
            shutil.rmtree(d, ignore_errors=True)
    return len(found), sum(n for _, n in found)


def _lstat(p: Path) -> os.stat_result | None:
    try:
        return p.lstat()
    except FileNotFoundError:
        return None


# -- remote gc -----------------------------------------------------------------------------

RefsOf = Callable[[Backend], dict[str, bytes]]
BundleOf = Callable[[Backend, str], list[tuple[ObjectId, bytes]]]


@dataclass
class _RemoteView:
    """What gc has read of a remote: listings, pack indexes, bundle contents."""

    infos: dict[str, ObjectInfo]
    idx_chunks: dict[bytes, bytes]  # pack id -> its .idx bytes
    bundles: dict[str, list[ObjectId]]  # bundle key -> object ids
    objects: dict[bytes, bytes]  # object id -> stored object


def collect_remote(
    repo: Repository,
    remote: str,
    be: Backend,
    *,
    refs_of: RefsOf,
    bundle_of: BundleOf,
    dry_run: bool = False,
    prune_older_than: float = REMOTE_GRACE,
    progress: ProgressFn | None = None,
    on_total: ProgressFn | None = None,
) -> GcResult:
    """Collect a remote's garbage (see the module docstring); return what went.

    Args:
        repo: The local repository, whose cache of what ``remote`` holds is updated.
        remote: The remote's name (for messages and that cache).
        be: The remote's backend.
        refs_of: Reads the remote's refs (``sync``'s reader, so the layout lives in one place).
        bundle_of: Reads one bundle's ``(object id, stored object)`` pairs.
        dry_run: Decide, delete nothing (the remote's clock is then not read: ages use ours).
        prune_older_than: Grace period in seconds, by the remote's clock.
        progress: Called with bytes of pack indexes and bundles downloaded.
        on_total: Called with the bytes to download, once per round.
    """
    started = time.monotonic()
    res = GcResult(dry_run=dry_run, remote=remote)
    now = time.time() if dry_run else _remote_now(be)
    view = _RemoteView({}, {}, {}, {})
    for _ in range(MAX_REMOTE_ROUNDS):
        before = refs_of(be)
        _read_remote(be, view, bundle_of, progress, on_total)
        marker, kept = _mark_remote(view, before, now - prune_older_than, remote)
        if refs_of(be) == before:
            break
    else:
        raise RefConflictError(
            f"refs on {remote} kept moving while gc marked; nothing was deleted, run it again"
        )
    marker.chunks |= _remote_delta_bases(be, view, marker.chunks)
    res.live_objects, res.live_chunks = len(marker.objects), len(marker.chunks)
    young_after = now - prune_older_than
    doomed: list[ObjectInfo] = []
    bundles_gone: set[bytes] = set()
    dropped: set[bytes] = set()
    for key, oids in view.bundles.items():
        if key not in kept:
            doomed.append(view.infos[key])
            bundles_gone.add(key.rsplit("/", 1)[1].encode())
            dropped.update(o for o in oids if o not in marker.objects)
    res.bundles_deleted, res.objects_dropped = len(bundles_gone), len(dropped)
    packs_gone: set[bytes] = set()
    for pid, files in _pack_files(view.infos).items():
        idx = view.idx_chunks.get(pid, b"")
        if any(idx[i : i + ID_LEN] in marker.chunks for i in range(0, len(idx), INDEX_ENTRY.size)):
            continue
        if not all(_older(f, young_after) for f in files):
            res.packs_kept_young += 1
            continue
        packs_gone.add(pid)
        res.chunks_dropped += len(idx) // INDEX_ENTRY.size
        doomed.extend(sorted(files, key=lambda f: not f.key.endswith(".idx")))  # .idx first
    res.packs_deleted = len(packs_gone)
    res.bytes_reclaimed = sum(f.size for f in doomed)
    if not dry_run:
        for f in doomed:
            be.delete(f.key)
        if packs_gone or bundles_gone:
            repo.db.write(lambda t: forget_remote_data(t, remote, packs_gone, bundles_gone))
    res.seconds = round(time.monotonic() - started, 3)
    return res


_HEADS_LOCK = threading.Lock()


def _remote_delta_bases(be: Backend, view: _RemoteView, live: set[bytes]) -> set[bytes]:
    """The delta bases (transitively) of the live chunks, read from their payload heads.

    Only delta-coded entries (codec 3 in the pack index) are read: one ranged read of 34
    bytes each, several at once.
    """
    # chunk id -> every delta copy (pack id, offset): copies in two packs may have two bases
    deltas: dict[bytes, list[tuple[bytes, int]]] = {}
    for pid, idx in view.idx_chunks.items():
        for i in range(0, len(idx) - INDEX_ENTRY.size + 1, INDEX_ENTRY.size):
            if idx[i + INDEX_ENTRY.size - 1] == CODEC_DELTA:
                cid, off, _, _, _ = INDEX_ENTRY.unpack_from(idx, i)
                deltas.setdefault(cid, []).append((pid, off))
    out: set[bytes] = set()
    heads: list[bytes] = []

    def head(copy: tuple[bytes, int]) -> None:
        pid, off = copy
        key = f"packs/{pid.hex()[:2]}/{pid.hex()}.pack"
        got = be.get(key, offset=off, length=1 + DELTA_HEAD.size)
        with _HEADS_LOCK:
            heads.append(got)

    todo = [c for c in live if c in deltas]
    while todo:
        heads.clear()
        in_parallel(head, [copy for c in todo for copy in deltas[c]])
        todo = []
        for stored in heads:
            base = parse_delta(memoryview(stored)[1:]).base_id
            if base not in live and base not in out:
                out.add(base)
                if base in deltas:
                    todo.append(base)
    return out


def _remote_now(be: Backend) -> float:
    """The remote's clock: the mtime of an object written just now (guards clock skew)."""
    be.put(CLOCK_KEY, b"modelstore gc reads the remote's clock from this object\n", overwrite=True)
    info = be.stat(CLOCK_KEY)
    if info is None or info.mtime is None:
        return time.time()
    return info.mtime


def _older(info: ObjectInfo, young_after: float) -> bool:
    """Older than the grace period by the remote's clock; an object of unknown age is not."""
    return info.mtime is not None and info.mtime <= young_after


def _pack_files(infos: dict[str, ObjectInfo]) -> dict[bytes, list[ObjectInfo]]:
    """The remote's pack ids and their files (``.pack`` and ``.idx``, either may be missing)."""
    out: dict[bytes, list[ObjectInfo]] = {}
    for key, info in infos.items():
        name = key.rsplit("/", 1)[1]
        stem, dot, ext = name.partition(".")
        if key.startswith("packs/") and dot and ext in ("pack", "idx") and len(stem) == 64:
            try:
                out.setdefault(bytes.fromhex(stem), []).append(info)
            except ValueError:
                continue  # not ours: never deleted
    return out


def _read_remote(
    be: Backend,
    view: _RemoteView,
    bundle_of: BundleOf,
    progress: ProgressFn | None,
    on_total: ProgressFn | None,
) -> None:
    """List the remote; download the pack indexes and bundles not read yet."""
    view.infos = {i.key: i for prefix in ("packs/", "meta/") for i in be.list(prefix)}
    new_idx: list[tuple[bytes, ObjectInfo]] = []
    for pid, files in _pack_files(view.infos).items():
        if pid not in view.idx_chunks:
            new_idx.extend((pid, f) for f in files if f.key.endswith(".idx"))
    new_bundles = [
        info
        for key, info in view.infos.items()
        if key.startswith("meta/") and key.endswith(".bundle") and key not in view.bundles
    ]
    if on_total is not None:
        on_total(sum(i.size for _, i in new_idx) + sum(i.size for i in new_bundles))
    for pid, info in new_idx:
        try:
            view.idx_chunks[pid] = be.get(info.key)
        except ObjectNotFoundError:
            continue  # deleted since the listing
        if progress is not None:
            progress(info.size)
    for info in new_bundles:
        try:
            pairs = bundle_of(be, info.key)
        except ObjectNotFoundError:
            continue
        for oid, raw in pairs:
            decode_object(raw, expect_id=oid)  # a bundle is untrusted input
            view.objects.setdefault(oid, raw)
        view.bundles[info.key] = [oid for oid, _ in pairs]
        if progress is not None:
            progress(info.size)
    gone = [k for k in view.bundles if k not in view.infos]
    if gone:  # deleted since an earlier round: forget the objects only they held
        for key in gone:
            del view.bundles[key]
        held = {oid for oids in view.bundles.values() for oid in oids}
        view.objects = {oid: raw for oid, raw in view.objects.items() if oid in held}


def _mark_remote(
    view: _RemoteView, roots: dict[str, bytes], young_after: float, remote: str
) -> tuple[_Marker, set[str]]:
    """Mark from the remote's refs; keep bundles that are young or hold a live object.

    Every object of a kept bundle counts as live too (a weak root), until nothing changes:
    then whatever the remote still holds has everything it refers to.
    """
    marker = _Marker(view.objects.get)
    try:
        marker.mark(((oid, f"{remote} {name}") for name, oid in roots.items()), strict=True)
    except ObjectNotFoundError as exc:
        raise ObjectNotFoundError(f"remote {remote} is incomplete: {exc.message}") from None
    kept: set[str] = set()
    fresh = {k for k in view.bundles if not _older(view.infos[k], young_after)}
    while True:
        fresh |= {
            k
            for k, oids in view.bundles.items()
            if k not in kept and any(o in marker.objects for o in oids)
        }
        if not fresh:
            return marker, kept
        kept |= fresh
        marker.mark(
            ((oid, k) for k in fresh for oid in view.bundles[k] if oid not in marker.objects),
            strict=False,
        )
        fresh = set()
