"""Layer 4: ``verify``: check that everything reachable decodes, is indexed and is present; repair.

Checks, from the refs down (readers' order, the reverse of the write order):

- every ref (and HEAD) resolves to a commit object that decodes and matches its id;
- every commit's parents, trees and file manifests exist, decode and match their ids;
- every chunk a manifest lists is in the chunk index, its pack file exists, and the index
  entry lies inside the pack;
- every pack's own trailer index is intact (magic, version, index hash, reserved bytes zero);
- every ref's reflog hash chain is intact (no entry edited or removed);
- with ``read_data``: every indexed chunk is read, decompressed and hashed against its id, and
  every reachable file's chunks add up to its size.

Problems are collected, not raised, so one run reports all of them. Each names the files and
commits it breaks (``Problem.affects``), found by a second walk that runs only when something
is wrong and remembers only the damaged ids, so a healthy repository costs one walk.

``verify_remote`` checks a remote (FORMAT §12) the same way, from its refs, bundles and pack
indexes. ``repair`` refetches damaged or missing chunks and objects from a remote into new
packs and moves the chunk index to them (FORMAT §15); damaged pack files are left as they are.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from blake3 import blake3

from modelstore import reflog, refs
from modelstore.backend import Backend, ObjectInfo
from modelstore.chunkstore import CHUNK_LOC, PACK_REC, ChunkLoc, ChunkStore, decode_loc
from modelstore.compress import (
    CODEC_DELTA,
    MAX_DELTA_DEPTH,
    apply_delta,
    decompress_chunk,
    parse_delta,
)
from modelstore.errors import CorruptObjectError, MsError, ObjectNotFoundError
from modelstore.ids import ID_LEN, ChunkId, ObjectId
from modelstore.lazy import remote_key
from modelstore.metadb import Txn
from modelstore.objects import ChunkList, Commit, FileManifest, Obj, Tag, Tree, decode_object
from modelstore.pack import (
    FOOTER,
    HEADER,
    INDEX_ENTRY,
    PACK_END_MAGIC,
    PACK_MAGIC,
    SUPPORTED_PACK_VERSIONS,
    PackEntry,
    PackWriter,
    pack_id_of,
    read_pack_trailer,
)
from modelstore.repository import Repository

__all__ = [
    "Affected",
    "Problem",
    "RepairReport",
    "VerifyReport",
    "repair",
    "verify",
    "verify_remote",
]

#: reads an object's stored bytes by id (``None``: absent)
Loader = Callable[[bytes], bytes | None]
#: reads a remote's refs (``sync``'s reader: the remote layout is read in one place)
RefsOf = Callable[[Backend], dict[str, bytes]]
#: reads one remote bundle's ``(object id, stored object)`` pairs
BundleOf = Callable[[Backend, str], list[tuple[ObjectId, bytes]]]
ProgressFn = Callable[[int], None]
#: what a problem is about: ``("c", chunk id)``, ``("o", object id)`` or ``("p", pack id)``
_Key = tuple[str, bytes]
_NO_KEYS: frozenset[_Key] = frozenset()
_PACK_FILE = re.compile(r"packs/[0-9a-f]{2}/([0-9a-f]{64})\.(pack|idx)")
#: chunks read per task of a ``--read-data`` pass
_READ_BATCH = 64
#: a chunk index up to this many entries is listed at once for ``--read-data``
_READ_SLICE = 1 << 16


@dataclass(frozen=True)
class Affected:
    """A file (or folder) that a problem breaks, and the commits holding that version of it."""

    path: str
    commits: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where it shows, and the files and commits it breaks."""

    kind: str
    detail: str
    where: str = ""
    affects: tuple[Affected, ...] = ()


@dataclass
class VerifyReport:
    """What ``verify`` (or ``verify_remote``) looked at and what it found.

    ``damaged_chunks`` (chunk id → its index entry, ``None`` when not indexed),
    ``damaged_objects``, ``damaged_packs`` and ``lost_packs`` (files missing or unreadable)
    are what ``repair`` works from; they are not part of the JSON.
    """

    commits: int = 0
    trees: int = 0
    files: int = 0
    chunks_checked: int = 0
    chunks_read: int = 0
    packs: int = 0
    reflog_entries: int = 0
    problems: list[Problem] = field(default_factory=list)
    remote: str = ""
    damaged_chunks: dict[bytes, bytes | None] = field(default_factory=dict, repr=False)
    damaged_objects: set[bytes] = field(default_factory=set, repr=False)
    damaged_packs: set[bytes] = field(default_factory=set, repr=False)
    lost_packs: set[bytes] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        """No problems found."""
        return not self.problems


@dataclass
class RepairReport:
    """What ``repair`` found, fixed from the remote, and could not fix.

    ``after`` is the repository as it is now; ``unrepaired`` says why each damaged chunk or
    object it could not replace stays broken (the remote lacks it too, or its copy is damaged).
    """

    remote: str
    before: VerifyReport
    after: VerifyReport
    chunks_repaired: int = 0
    objects_repaired: int = 0
    packs_written: int = 0
    packs_retired: int = 0
    bytes_fetched: int = 0
    unrepaired: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing is wrong any more."""
        return self.after.ok


class _Found:
    """Problems in the order found, each with the chunk, object or pack it is about."""

    def __init__(self) -> None:
        self.items: list[tuple[Problem, _Key | None]] = []
        self._seen: set[tuple[str, str, _Key]] = set()
        self._kinds: set[tuple[str, _Key]] = set()

    def add(self, kind: str, detail: str, where: str = "", key: _Key | None = None) -> None:
        """Record a problem; the same problem met again (a chunk shared by files) is one."""
        if key is not None:
            if (kind, detail, key) in self._seen:
                return
            self._seen.add((kind, detail, key))
            self._kinds.add((kind, key))
        self.items.append((Problem(kind, detail, where), key))

    def has(self, kind: str, key: _Key) -> bool:
        """Whether a problem of ``kind`` about ``key`` was recorded."""
        return (kind, key) in self._kinds

    def keys(self) -> set[_Key]:
        """Every chunk, object and pack a problem is about."""
        return {k for _, k in self.items if k is not None}

    def problems(self, affects: dict[_Key, tuple[Affected, ...]]) -> list[Problem]:
        """The problems, each with the files and commits its key breaks."""
        return [
            replace(p, affects=affects[k]) if k is not None and k in affects else p
            for p, k in self.items
        ]


class _Walk:
    """The walk from the refs down, shared by the local and the remote check."""

    def __init__(
        self,
        load: Loader,
        found: _Found,
        rep: VerifyReport,
        check_chunk: Callable[[bytes, int, str], None],
        missing_note: str = "",
    ) -> None:
        self.load = load
        self.found = found
        self.rep = rep
        self.check_chunk = check_chunk
        self.missing_note = missing_note

    def obj(self, oid: bytes, where: str) -> Obj | None:
        """Load and check one object; report it (and return None) when missing or damaged."""
        raw = self.load(oid)
        if raw is None:
            self.found.add(
                "missing-object",
                f"object {oid.hex()[:16]} is missing{self.missing_note}",
                where,
                ("o", oid),
            )
            self.rep.damaged_objects.add(oid)
            return None
        try:
            return decode_object(raw, expect_id=oid)
        except MsError as exc:
            self.found.add("bad-object", exc.message, where, ("o", oid))
            self.rep.damaged_objects.add(oid)
            return None

    def run(self, starts: list[tuple[str, bytes]]) -> None:
        """Check everything reachable from ``starts`` (``(ref name, id)``)."""
        rep, found = self.rep, self.found
        seen_commits: set[bytes] = set()
        seen_trees: set[bytes] = set()
        seen_manifests: set[bytes] = set()
        stack = list(starts)
        while stack:
            name, cid = stack.pop()
            if cid in seen_commits:
                continue
            seen_commits.add(cid)
            c = self.obj(cid, f"commit {cid.hex()[:12]} ({name})")
            if isinstance(c, Tag):  # an annotated tag: check it, then its commit
                stack.append((f"{name}^{{}}", c.target))
                continue
            if not isinstance(c, Commit):
                if c is not None:
                    found.add("bad-object", "not a commit", f"{name} -> {cid.hex()[:12]}")
                continue
            rep.commits += 1
            stack.extend((f"{name}^", p) for p in c.parents)
            tstack = [(c.tree_id, "")]
            where_c = f"commit {cid.hex()[:12]}"
            while tstack:
                tid, prefix = tstack.pop()
                if tid in seen_trees:
                    continue
                seen_trees.add(tid)
                t = self.obj(tid, f"{where_c}: tree {prefix or '/'}")
                if not isinstance(t, Tree):
                    continue
                rep.trees += 1
                for e in t.entries:
                    path = f"{prefix}{e.name}"
                    if e.is_dir:
                        tstack.append((e.id, path + "/"))
                    elif e.id not in seen_manifests:
                        seen_manifests.add(e.id)
                        m = self.obj(e.id, f"{where_c}: {path}")
                        if isinstance(m, FileManifest):
                            rep.files += 1
                            if m.size != e.size:
                                found.add(
                                    "bad-object",
                                    "tree size differs from manifest",
                                    f"{where_c}: {path}",
                                    ("o", e.id),
                                )
                            self._manifest(m, f"{where_c}: {path}")

    def _manifest(self, m: FileManifest, where: str) -> None:
        if not m.segments:
            for cid, n in m.chunks():
                self.rep.chunks_checked += 1
                self.check_chunk(cid, n, where)
            return
        for seg in m.segments:  # one chunk list in memory at a time
            cl = self.obj(seg.id, f"{where} (chunk list {seg.id.hex()[:16]})")
            if cl is None:
                continue
            if not isinstance(cl, ChunkList):
                self.found.add(
                    "bad-object", f"{seg.id.hex()[:16]} is not a chunk list", where, ("o", seg.id)
                )
                continue
            if cl.chunk_count != seg.chunks or sum(cl.lengths()) != seg.size:
                self.found.add(
                    "bad-object",
                    f"chunk list {seg.id.hex()[:16]} disagrees with its manifest",
                    where,
                    ("o", seg.id),
                )
                continue
            for cid, n in cl.chunks():
                self.rep.chunks_checked += 1
                self.check_chunk(cid, n, where)


# -- the local repository ---------------------------------------------------------------------


def verify(
    repo: Repository, *, read_data: bool = False, progress: ProgressFn | None = None
) -> VerifyReport:
    """Check the repository (see the module docstring); never raises for damage it finds."""
    return _verify_local(repo, read_data=read_data, progress=progress)


def _local_starts(txn: Txn, found: _Found) -> list[tuple[str, bytes]]:
    starts: list[tuple[str, bytes]] = []
    try:
        _, head = refs.resolve_ref(txn, refs.HEAD)
        if head is not None:
            starts.append(("HEAD", head))
        for name, oid, target in refs.list_refs(txn):
            if oid is not None:
                starts.append((name, oid))
            elif target is not None and txn.get("refs", target.encode()) is None:
                found.add("ref", f"symbolic ref points to missing {target}", name)
    except MsError as exc:
        found.add("ref", exc.message)
    return starts


class _LocalChunks:
    """Checks one chunk reference against the chunk index and the pack files on disk."""

    def __init__(self, repo: Repository, txn: Txn, found: _Found, rep: VerifyReport) -> None:
        self.repo, self.txn, self.found, self.rep = repo, txn, found, rep
        self.lazy = repo._lazy.remote if repo._lazy is not None else None
        self.sizes: dict[bytes, int] = {}  # pack id -> file size, -1 when missing
        self.deltas: set[bytes] = set()  # delta chunks whose base was checked

    def __call__(self, cid: bytes, n: int, where: str) -> None:
        txn, found, rep = self.txn, self.found, self.rep
        key = ("c", cid)
        raw = txn.get("chunks", cid)
        if raw is None:
            if (
                self.lazy is not None
                and txn.get("remote", remote_key(self.lazy, b"c", cid)) is not None
            ):
                return  # a lazy clone: the chunk is on its remote, fetched when read
            found.add("missing-chunk", f"chunk {cid.hex()[:16]} is not in the index", where, key)
            rep.damaged_chunks[cid] = None
            return
        try:
            loc: ChunkLoc = decode_loc(raw)
        except MsError as exc:
            found.add("chunk", f"chunk {cid.hex()[:16]}: {exc.message}", where, key)
            rep.damaged_chunks[cid] = raw
            return
        if loc.raw_len != n:
            found.add("chunk", f"chunk {cid.hex()[:16]} length differs from the index", where, key)
            rep.damaged_chunks[cid] = raw
        psize = self.sizes.get(loc.pack_id)
        if psize is None:
            try:
                psize = os.path.getsize(self.repo.store.pack_path(loc.pack_id))
            except OSError:
                psize = -1
            self.sizes[loc.pack_id] = psize
        if psize < 0:
            path = self.repo.store.pack_path(loc.pack_id)
            found.add(
                "missing-pack",
                f"pack {loc.pack_id.hex()[:16]} is missing ({path})",
                where,
                ("p", loc.pack_id),
            )
            rep.damaged_chunks[cid] = raw
            rep.damaged_packs.add(loc.pack_id)
            rep.lost_packs.add(loc.pack_id)
        elif loc.offset + loc.stored_len > psize:
            found.add("chunk", f"chunk {cid.hex()[:16]} lies past the end of its pack", where, key)
            rep.damaged_chunks[cid] = raw
        elif loc.codec == CODEC_DELTA and cid not in self.deltas:
            self.deltas.add(cid)  # its base must be here too (and its base's base)
            try:
                base = self.repo.store.delta_base(loc)
            except MsError as exc:
                found.add("chunk", f"chunk {cid.hex()[:16]}: {exc.message}", where, key)
                rep.damaged_chunks[cid] = raw
                return
            if base is not None:
                self(base, loc.raw_len, f"{where} (delta base of chunk {cid.hex()[:16]})")


def _verify_local(
    repo: Repository,
    *,
    read_data: bool,
    progress: ProgressFn | None,
    read_only: set[bytes] | None = None,
    overlay: dict[bytes, bytes] | None = None,
    name_files: bool = True,
) -> VerifyReport:
    """``verify``; ``read_only``: read and hash just these chunks (after a repair).

    ``overlay``: objects to see as stored (a repair's refetched ones, before they are);
    ``name_files``: work out which files each problem breaks.
    """
    extra = overlay or {}
    rep = VerifyReport()
    found = _Found()
    bad = found.add
    store = repo.store
    with repo.db.read() as txn:
        starts = _local_starts(txn, found)
        walk = _Walk(
            lambda oid: extra.get(oid) or txn.get("objects", oid),
            found,
            rep,
            _LocalChunks(repo, txn, found, rep),
        )
        walk.run(starts)
        # packs: every pack file listed exists and its trailer index is intact
        for pack_id, rec in txn.items("packs"):
            rep.packs += 1
            ppath = store.pack_path(pack_id)
            key = ("p", pack_id)
            try:
                size = os.path.getsize(ppath)
                if PACK_REC.unpack(rec)[1] != size:
                    bad("pack", "pack size differs from the pack table", str(ppath), key)
                    rep.damaged_packs.add(pack_id)
                fd = os.open(ppath, os.O_RDONLY)
                try:
                    index, _ = read_pack_trailer(fd, size, strict=True)
                finally:
                    os.close(fd)
                if pack_id_of(index) != pack_id:
                    bad("pack", "pack index does not match the pack's name", str(ppath), key)
                    rep.damaged_packs.add(pack_id)
            except FileNotFoundError:
                rep.damaged_packs.add(pack_id)
                rep.lost_packs.add(pack_id)
                if not found.has("missing-pack", key):  # else already named, with its files
                    bad("pack", "pack file is missing", str(ppath), key)
            except OSError as exc:  # e.g. EIO, or not a regular file: report it, go on
                bad("pack", f"cannot read the pack: {exc.strerror or exc}", str(ppath), key)
                rep.damaged_packs.add(pack_id)
                rep.lost_packs.add(pack_id)
            except MsError as exc:
                bad("pack", exc.message, str(ppath), key)
                rep.damaged_packs.add(pack_id)
        # the audit trail: every ref's reflog hash chain
        rep.reflog_entries, chain_problems = reflog.verify_chains(txn)
        for cp in chain_problems:
            bad("reflog", f"entry {cp.seq}: {cp.detail}", cp.ref)
    if read_only is not None:
        with repo.db.read() as txn:
            items = [(c, raw) for c in sorted(read_only) if (raw := txn.get("chunks", c))]
        _read_chunks(store, items, found, rep, progress)
    elif read_data:
        with repo.db.read() as txn:
            whole = txn.count("chunks") <= _READ_SLICE
        # a large index is read a 256th at a time (by first byte): memory stays bounded
        for prefix in [b""] if whole else [bytes([b]) for b in range(256)]:
            with repo.db.read() as txn:
                items = txn.items("chunks", prefix)
            _read_chunks(store, items, found, rep, progress)
    keys = found.keys() if name_files else set()
    affects: dict[_Key, tuple[Affected, ...]] = {}
    if keys:
        with repo.db.read() as txn:
            affects = _affects(lambda oid: txn.get("objects", oid), starts, keys, _pack_of(txn))
    rep.problems = found.problems(affects)
    return rep


def _pack_of(txn: Txn) -> Callable[[bytes], bytes | None]:
    def pack_of(cid: bytes) -> bytes | None:
        raw = txn.get("chunks", cid)
        return raw[1 : 1 + ID_LEN] if raw is not None and len(raw) == CHUNK_LOC.size else None

    return pack_of


def _read_chunks(
    store: ChunkStore,
    items: list[tuple[bytes, bytes]],
    found: _Found,
    rep: VerifyReport,
    progress: ProgressFn | None,
) -> None:
    """Read, decompress and hash ``(chunk id, index entry)`` pairs on the store's pool.

    Chunks of packs already known to be missing or unreadable are not read again (their
    pack's problem names them) but count as damaged, for ``repair``.
    """
    lost = rep.lost_packs

    def check(batch: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, int, str | None]]:
        out: list[tuple[bytes, bytes, int, str | None]] = []
        for cid, raw in batch:
            try:
                loc = decode_loc(raw)
                if loc.pack_id in lost:
                    out.append((cid, raw, 0, ""))
                    continue
                got = store.read_current(cid, loc)  # survives a gc running beside us
                if got is None:  # collected since our snapshot: nothing left to check
                    continue
                store.decode_verified(cid, got[1], got[0], strict=True)
                out.append((cid, raw, loc.raw_len, None))
            except MsError as exc:  # "(run `ms verify`)" would be advice to run what runs
                out.append((cid, raw, 0, exc.message.replace(" (run `ms verify`)", "")))
        return out

    batches = [items[i : i + _READ_BATCH] for i in range(0, len(items), _READ_BATCH)]
    for results in store.pool.map(check, batches):
        for cid, raw, n, error in results:
            if error is None:
                rep.chunks_read += 1
                if progress is not None:
                    progress(n)
                continue
            rep.damaged_chunks[cid] = raw
            if error:
                found.add("chunk", error, f"chunk {cid.hex()[:16]}", ("c", cid))


# -- which files and commits a problem breaks -------------------------------------------------


def _affects(
    load: Loader,
    starts: Iterable[tuple[str, bytes]],
    keys: set[_Key],
    pack_of: Callable[[bytes], bytes | None],
) -> dict[_Key, tuple[Affected, ...]]:
    """For each key, the paths below the reachable commits that it breaks, and those commits.

    A second walk, run only when something was found. Per tree and per manifest it remembers
    only which keys lie below (usually none), so memory follows the damage and the number of
    distinct files and folders, not the number of chunks.
    """
    objects = {k for t, k in keys if t == "o"}
    chunks = {k for t, k in keys if t == "c"}
    packs = {k for t, k in keys if t == "p"}

    def decode(oid: bytes) -> Obj | None:
        raw = load(oid)
        if raw is None:
            return None
        try:
            return decode_object(raw, expect_id=oid)
        except MsError:
            return None

    by_manifest: dict[bytes, frozenset[_Key]] = {}

    def of_manifest(mid: bytes) -> frozenset[_Key]:
        got = by_manifest.get(mid)
        if got is not None:
            return got
        hit: set[_Key] = set()
        if mid in objects:
            hit.add(("o", mid))
        m = decode(mid)
        if isinstance(m, FileManifest):
            for ids in _chunk_id_runs(m, decode, objects, hit):
                if not (chunks or packs):
                    continue
                for i in range(0, len(ids), ID_LEN):
                    cid = ids[i : i + ID_LEN]
                    if cid in chunks:
                        hit.add(("c", cid))
                    if packs:
                        pid = pack_of(cid)
                        if pid is not None and pid in packs:
                            hit.add(("p", pid))
        got = by_manifest[mid] = frozenset(hit) if hit else _NO_KEYS
        return got

    by_tree: dict[bytes, tuple[tuple[str, frozenset[_Key]], ...]] = {}

    def of_tree(root: bytes) -> tuple[tuple[str, frozenset[_Key]], ...]:
        stack = [root]
        opened: dict[bytes, Tree] = {}
        while stack:
            tid = stack[-1]
            if tid in by_tree:
                stack.pop()
                continue
            t = opened.get(tid)
            if t is None:
                obj = decode(tid)
                if not isinstance(obj, Tree):
                    by_tree[tid] = (("", frozenset({("o", tid)})),) if tid in objects else ()
                    stack.pop()
                    continue
                opened[tid] = obj
                kids = [
                    e.id
                    for e in obj.entries
                    if e.is_dir and e.id not in by_tree and e.id not in opened
                ]
                if kids:
                    stack.extend(kids)
                    continue
                t = obj
            stack.pop()
            del opened[tid]
            rows: list[tuple[str, frozenset[_Key]]] = []
            for e in t.entries:
                if e.is_dir:
                    rows.extend(
                        (f"{e.name}/{p}" if p else f"{e.name}/", ks)
                        for p, ks in by_tree.get(e.id, ())
                    )
                else:
                    ks = of_manifest(e.id)
                    if ks:
                        rows.append((e.name, ks))
            by_tree[tid] = tuple(rows)
        return by_tree[root]

    out: dict[_Key, dict[str, list[str]]] = {}
    seen: set[bytes] = set()
    stack = [oid for _, oid in reversed(list(starts))]  # HEAD first: newest commits first
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        c = decode(cid)
        if isinstance(c, Tag):
            stack.append(c.target)
            continue
        if not isinstance(c, Commit):
            continue
        stack.extend(reversed(c.parents))
        for path, ks in of_tree(c.tree_id):
            for k in ks:
                out.setdefault(k, {}).setdefault(path or "/", []).append(cid.hex())
    return {k: tuple(Affected(p, tuple(cs)) for p, cs in files.items()) for k, files in out.items()}


def _chunk_id_runs(
    m: FileManifest, decode: Callable[[bytes], Obj | None], objects: set[bytes], hit: set[_Key]
) -> Iterator[bytes]:
    """The manifest's chunk ids, inline or one segment at a time; bad segments are noted."""
    if not m.segments:
        yield m.chunk_ids
        return
    for seg in m.segments:
        if seg.id in objects:
            hit.add(("o", seg.id))
            continue
        cl = decode(seg.id)
        if isinstance(cl, ChunkList):
            yield cl.chunk_ids


# -- a remote ---------------------------------------------------------------------------------


def verify_remote(
    be: Backend,
    *,
    refs_of: RefsOf,
    bundle_of: BundleOf,
    name: str = "",
    read_data: bool = False,
    progress: ProgressFn | None = None,
) -> VerifyReport:
    """Check a remote (FORMAT §12) from its refs down; never raises for damage it finds.

    Every ref must name a commit (or, for a tag, a tag object) that some bundle holds; every
    bundle must match its name and every object in it its id; everything reachable must be
    there, and every chunk a manifest lists must be in some pack's ``.idx``. Each ``.idx``
    must match its name and its pack's trailer (header, footer, size, index hash). With
    ``read_data`` every pack is streamed (bounded memory) and each chunk decompressed and
    hashed. Like a gc of a remote, it holds the remote's objects in memory.
    """
    rep = VerifyReport(remote=name)
    found = _Found()
    try:
        remote_refs = refs_of(be)
    except MsError as exc:
        found.add("ref", f"cannot read the remote's refs: {exc.message}", "refs/")
        remote_refs = {}
    chunk_at, intact = _remote_packs(be, found, rep)
    objects: dict[bytes, bytes] = {}
    for info in be.list("meta/"):
        if not info.key.endswith(".bundle"):
            continue
        try:
            pairs = bundle_of(be, info.key)
        except ObjectNotFoundError:
            continue  # deleted since the listing (a gc there)
        except MsError as exc:
            found.add("bundle", exc.message, info.key)
            continue
        for oid, raw in pairs:
            try:
                decode_object(raw, expect_id=oid)
            except MsError as exc:
                where = f"{info.key}: object {oid.hex()[:16]}"
                found.add("bad-object", exc.message, where, ("o", oid))
                continue
            objects.setdefault(oid, raw)

    named: set[bytes] = set()  # chunks a reachable manifest names

    def check(cid: bytes, n: int, where: str) -> None:
        named.add(cid)
        got = chunk_at.get(cid)
        if got is None:
            found.add(
                "missing-chunk",
                f"chunk {cid.hex()[:16]} is in no pack index on the remote",
                where,
                ("c", cid),
            )
        elif got[1] != n:
            found.add(
                "chunk",
                f"chunk {cid.hex()[:16]} length differs from the pack index",
                where,
                ("c", cid),
            )
        # a chunk in a damaged or missing pack: that pack's problem names the files

    starts = sorted(remote_refs.items())
    _Walk(objects.get, found, rep, check, " (no bundle on the remote holds it)").run(starts)
    if read_data:

        def copy_of(cid: bytes) -> tuple[int, int, bytes] | None:
            got = chunk_at.get(cid)
            if got is None:
                return None
            pid, raw_len, off, stored_len, codec = got
            key = f"packs/{pid.hex()[:2]}/{pid.hex()}.pack"
            return codec, raw_len, be.get(key, offset=off, length=stored_len)

        for pid, idx in intact:
            _read_remote_pack(be, pid, idx, found, rep, progress, copy_of, named)
    keys = found.keys()
    affects: dict[_Key, tuple[Affected, ...]] = {}
    if keys:

        def pack_of(cid: bytes) -> bytes | None:
            got = chunk_at.get(cid)
            return None if got is None else got[0]

        affects = _affects(objects.get, starts, keys, pack_of)
    rep.problems = found.problems(affects)
    return rep


def _remote_packs(
    be: Backend, found: _Found, rep: VerifyReport
) -> tuple[dict[bytes, tuple[bytes, int, int, int, int]], list[tuple[bytes, bytes]]]:
    """Check each ``.idx`` against its name and its pack; map chunk id → its copy.

    A copy is ``(pack id, raw length, offset, stored length, codec)``.

    Returns that map and the intact packs ``(pack id, .idx bytes)``. A chunk listed by an
    intact pack is mapped to it rather than to a damaged one. A ``.pack`` without ``.idx`` is
    a push that stopped in between: not data yet, not a problem.
    """
    files: dict[bytes, dict[str, ObjectInfo]] = {}
    for info in be.list("packs/"):
        m = _PACK_FILE.fullmatch(info.key)
        if m is not None:
            files.setdefault(bytes.fromhex(m.group(1)), {})[m.group(2)] = info
    chunk_at: dict[bytes, tuple[bytes, int, int, int, int]] = {}
    intact: list[tuple[bytes, bytes]] = []
    for pid, have in sorted(files.items()):
        if "idx" not in have:
            continue
        stem = f"packs/{pid.hex()[:2]}/{pid.hex()}"
        try:
            idx = be.get(f"{stem}.idx")
        except ObjectNotFoundError:
            continue  # deleted since the listing (a gc there)
        rep.packs += 1
        key = ("p", pid)
        if len(idx) % INDEX_ENTRY.size:
            found.add("pack", "pack index is not whole entries", f"{stem}.idx", key)
            rep.damaged_packs.add(pid)
            continue
        problem = where = ""
        if pack_id_of(idx) != pid:
            problem, where = "pack index does not match its name", f"{stem}.idx"
        elif "pack" not in have:
            found.add(
                "missing-pack", "pack file is missing (its .idx is there)", f"{stem}.pack", key
            )
            rep.damaged_packs.add(pid)
        else:
            where = f"{stem}.pack"
            try:
                problem = _remote_trailer_problem(be, where, have["pack"].size, idx)
            except ObjectNotFoundError:
                problem = "pack file is missing (its .idx is there)"
            except MsError as exc:
                problem = f"cannot read the pack: {exc.message}"
        if problem:
            found.add("pack", problem, where, key)
            rep.damaged_packs.add(pid)
        ok = pid not in rep.damaged_packs
        for cid, off, stored_len, raw_len, codec in INDEX_ENTRY.iter_unpack(idx):
            cur = chunk_at.get(cid)
            if cur is None or (ok and cur[0] in rep.damaged_packs):
                chunk_at[cid] = (pid, raw_len, off, stored_len, codec)
        if ok:
            intact.append((pid, idx))
    return chunk_at, intact


def _remote_trailer_problem(be: Backend, key: str, size: int, idx: bytes) -> str:
    """What is wrong between a remote pack's header and trailer and its ``.idx`` ("" if nothing).

    Reads the 16-byte header and the trailer (index and footer) by range: no chunk data.
    """
    index_offset = size - FOOTER.size - len(idx)
    if index_offset < HEADER.size:
        return f"pack is shorter ({size} bytes) than its index and footer"
    magic, version, reserved = HEADER.unpack(be.get(key, offset=0, length=HEADER.size))
    if magic != PACK_MAGIC or version not in SUPPORTED_PACK_VERSIONS or reserved != bytes(9):
        return "pack header is damaged"
    tail = be.get(key, offset=index_offset, length=len(idx) + FOOTER.size)
    io, count, rsv, index_hash, rsv2, end = FOOTER.unpack_from(tail, len(idx))
    if end != PACK_END_MAGIC or rsv != 0 or rsv2 != bytes(8):
        return "pack footer is damaged"
    if io != index_offset or count != len(idx) // INDEX_ENTRY.size:
        return "pack footer does not match its .idx (size or count)"
    if tail[: len(idx)] != idx:
        return "pack's trailer index differs from its .idx"
    if blake3(idx).digest() != index_hash:
        return "pack index does not match the hash in its footer"
    for _, off, stored, _, _ in INDEX_ENTRY.iter_unpack(idx):
        if off < HEADER.size or stored < 1 or off + stored > index_offset:
            return "pack index entry points outside the pack"
    return ""


#: gives a copy of a chunk, ``(codec, raw length, stored bytes)``, or None: not there
CopyOf = Callable[[bytes], "tuple[int, int, bytes] | None"]


def _decode(stored: bytes, raw_len: int, copy_of: CopyOf, depth: int = 0) -> bytes:
    """Decode stored bytes; a delta's base is read through ``copy_of`` and checked by its id."""
    if stored[0] != CODEC_DELTA:
        return decompress_chunk(stored[0], memoryview(stored)[1:], raw_len, native=False)
    head = parse_delta(memoryview(stored)[1:])
    if depth >= MAX_DELTA_DEPTH:
        raise CorruptObjectError(f"a delta chain is longer than {MAX_DELTA_DEPTH}")
    got = copy_of(head.base_id)
    if got is None:
        raise ObjectNotFoundError(f"its delta base {head.base_id.hex()[:16]} is not there")
    codec, base_len, base_stored = got
    if not base_stored or base_stored[0] != codec:
        raise CorruptObjectError(f"its delta base {head.base_id.hex()[:16]} has a bad codec tag")
    base = _decode(base_stored, base_len, copy_of, depth + 1)
    if blake3(base).digest() != head.base_id:
        raise CorruptObjectError(
            f"its delta base {head.base_id.hex()[:16]} does not match its hash"
        )
    return apply_delta(head, base, raw_len, native=False)


def _raw_of(cid: bytes, copy_of: CopyOf) -> bytes:
    """The raw bytes of chunk ``cid`` from a copy, checked against its id."""
    got = copy_of(cid)
    if got is None:
        raise ObjectNotFoundError(f"delta base {cid.hex()[:16]} is not there")
    codec, raw_len, stored = got
    if not stored or stored[0] != codec:
        raise CorruptObjectError(f"delta base {cid.hex()[:16]} has a bad codec tag")
    raw = _decode(stored, raw_len, copy_of)
    if blake3(raw).digest() != cid:
        raise CorruptObjectError(f"delta base {cid.hex()[:16]} does not match its hash")
    return raw


def _chunk_error(
    cid: bytes, codec: int, raw_len: int, stored: bytes, copy_of: CopyOf
) -> str | None:
    """Why stored chunk bytes are not the chunk ``cid`` (None: they are).

    A delta is applied to its base, found through ``copy_of``.
    """
    if not stored or stored[0] != codec:
        return "has a bad codec tag"
    try:
        raw = _decode(stored, raw_len, copy_of)
    except MsError as exc:
        return f"does not decompress: {exc.message}"
    if blake3(raw).digest() != cid:
        return "does not match its hash"
    return None


def _read_remote_pack(
    be: Backend,
    pid: bytes,
    idx: bytes,
    found: _Found,
    rep: VerifyReport,
    progress: ProgressFn | None,
    copy_of: CopyOf,
    named: set[bytes],
) -> None:
    """Stream one remote pack and check every chunk its ``.idx`` lists, in offset order.

    A delta no reachable manifest names is skipped: a pack gc kept whole may hold dead
    deltas whose bases are gone (live bases are checked through the deltas that need them).

    Memory holds one streamed block plus one chunk, whatever the pack's size.
    """
    key = f"packs/{pid.hex()[:2]}/{pid.hex()}.pack"
    entries = sorted(INDEX_ENTRY.iter_unpack(idx), key=lambda e: int(e[1]))
    buf = bytearray()
    start = 0  # file offset of buf[0]
    try:
        stream = be.get_stream(key)
    except MsError as exc:
        found.add("pack", f"cannot read the pack: {exc.message}", key, ("p", pid))
        return
    try:
        for cid, off, stored_len, raw_len, codec in entries:
            if off < start:
                found.add("pack", "pack index entries overlap", key, ("p", pid))
                continue
            while start + len(buf) < off + stored_len:
                block = next(stream, None)
                if block is None:
                    break
                buf += block
            if start + len(buf) < off + stored_len:
                found.add("pack", "pack is shorter than its index says", key, ("p", pid))
                return
            a = off - start
            data = bytes(buf[a : a + stored_len])
            del buf[: a + stored_len]
            start = off + stored_len
            if codec == CODEC_DELTA and cid not in named:
                continue
            error = _chunk_error(cid, codec, raw_len, data, copy_of)
            if error is not None:
                where = f"chunk {cid.hex()[:16]}"
                found.add("chunk", f"chunk {cid.hex()[:16]} in {key} {error}", where, ("c", cid))
            else:
                rep.chunks_read += 1
            if progress is not None:
                progress(stored_len)
    except MsError as exc:  # the connection or the store failed half-way
        found.add("pack", f"cannot read the pack: {exc.message}", key, ("p", pid))
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


# -- repair -----------------------------------------------------------------------------------


def repair(
    repo: Repository,
    remote: str,
    be: Backend,
    *,
    bundle_of: BundleOf,
    progress: ProgressFn | None = None,
) -> RepairReport:
    """Verify (reading every chunk), then refetch what is damaged or missing from ``remote``.

    FORMAT §15 (repair), under the writer lock: every copy is checked against its id before
    it is stored; chunks go into new packs that are made durable and read back before the
    chunk index moves to them (one transaction per pack, from the damaged location only);
    objects are stored after the chunks they name (§13 rule 2). Chunks of a damaged pack that
    still read correctly are copied from it. Damaged pack files are never modified: once no
    index entry names one, its record goes, and gc deletes the file.
    """
    with repo._writing():
        before = _verify_local(repo, read_data=True, progress=progress)
        res = RepairReport(remote, before, before)
        if before.ok:
            return res
        src = _RemoteCopies(repo, remote, be, bundle_of)
        lost: dict[_Key, str] = {}
        objs = src.objects(set(before.damaged_objects), lost)
        # what the refetched objects make reachable may lack chunks (a missing tree hid them)
        seen = _verify_local(repo, read_data=False, progress=None, overlay=objs, name_files=False)
        want = {**seen.damaged_chunks, **before.damaged_chunks}
        if before.damaged_packs:  # every chunk a damaged pack holds moves out of it
            packs = before.damaged_packs

            def held(cid: bytes, entry: bytes) -> None:
                if entry[1 : 1 + ID_LEN] in packs:
                    want.setdefault(cid, entry)

            with repo.db.read() as txn:
                txn.scan("chunks", held)
        known_bad = before.damaged_chunks.keys() | seen.damaged_chunks.keys()
        _recover_chunks(repo, src, want, known_bad, res, lost)
        fresh = set(want)
        for _ in range(MAX_DELTA_DEPTH):  # a refetched delta may need a base not here
            bases = _missing_bases(repo, fresh) - {c for _, c in lost}
            if not bases:
                break
            _recover_chunks(repo, src, dict.fromkeys(bases), bases, res, lost)
            want.update(dict.fromkeys(bases))
            fresh = bases
        _store_objects(repo, objs, res)
        res.packs_retired = _retire_packs(repo, before.damaged_packs)
        res.after = _verify_local(repo, read_data=False, progress=None, read_only=set(want))
        if lost:
            throwaway = _Found()
            with repo.db.read() as txn:
                starts = _local_starts(txn, throwaway)
                affects = _affects(
                    lambda oid: txn.get("objects", oid), starts, set(lost), _pack_of(txn)
                )
            for (kind, ident), why in lost.items():
                what = "chunk" if kind == "c" else "object"
                got = affects.get((kind, ident), ())
                note = "" if got else "; no commit a ref reaches uses it"
                res.unrepaired.append(
                    Problem("unrepaired", f"{what} {ident.hex()[:16]}: {why}{note}", "", got)
                )
    return res


def _missing_bases(repo: Repository, chunk_ids: set[bytes]) -> set[bytes]:
    """The delta bases of ``chunk_ids`` that are not indexed here."""
    out: set[bytes] = set()
    store = repo.store
    with repo.db.read() as txn:
        for cid in chunk_ids:
            loc = store.locate(txn, cid)
            try:
                base = None if loc is None else store.delta_base(loc)
            except MsError:
                continue  # the verify after the repair reports it
            if base is not None and not store.has(txn, base):
                out.add(base)
    return out


class _RemoteCopies:
    """Finds the remote's copies of chunks and objects (its cache first, FORMAT §12)."""

    def __init__(self, repo: Repository, name: str, be: Backend, bundle_of: BundleOf) -> None:
        self.repo, self.name, self.be, self.bundle_of = repo, name, be, bundle_of

    def chunk_copies(
        self, wanted: set[bytes], *, everywhere: bool
    ) -> dict[bytes, list[tuple[bytes, int, int, int, int]]]:
        """Where the remote holds each wanted chunk: ``(pack id, offset, stored, raw, codec)``.

        Reads the ``.idx`` of the packs the cache names; ``everywhere``: every ``.idx`` the
        remote lists. A pack index that does not match its name is not trusted.
        """
        found: dict[bytes, list[tuple[bytes, int, int, int, int]]] = {}
        pids: set[bytes] = set()
        if everywhere:
            for info in self.be.list("packs/"):
                m = _PACK_FILE.fullmatch(info.key)
                if m is not None and m.group(2) == "idx":
                    pids.add(bytes.fromhex(m.group(1)))
        else:
            with self.repo.db.read() as txn:
                for cid in wanted:
                    pid = txn.get("remote", remote_key(self.name, b"c", cid))
                    if pid is not None and len(pid) == ID_LEN:
                        pids.add(pid)
        for pid in sorted(pids):
            try:
                idx = self.be.get(f"packs/{pid.hex()[:2]}/{pid.hex()}.idx")
            except ObjectNotFoundError:
                continue
            if len(idx) % INDEX_ENTRY.size or pack_id_of(idx) != pid:
                continue
            for cid, off, stored, raw_len, codec in INDEX_ENTRY.iter_unpack(idx):
                if cid in wanted:
                    found.setdefault(cid, []).append((pid, off, stored, raw_len, codec))
        return found

    def objects(self, wanted: set[bytes], lost: dict[_Key, str]) -> dict[bytes, bytes]:
        """The remote's verified copies of ``wanted``, and of what they name that is bad here.

        What they name is fetched when missing or damaged here too (a missing tree's files,
        say); what cannot be had goes to ``lost``. Bundles the cache names are read first,
        then the others, one at a time.
        """
        pending = set(wanted)
        got: dict[bytes, bytes] = {}
        why: dict[bytes, str] = {}
        locator: dict[bytes, str] = {}
        with self.repo.db.read() as txn:
            for oid in pending:
                name = txn.get("remote", remote_key(self.name, b"o", oid))
                if name is not None and name.endswith(b".bundle"):
                    locator[oid] = f"meta/{name.decode('ascii', 'replace')}"
        unread: list[str] | None = None
        read: set[str] = set()
        while pending:
            key = next((locator[o] for o in sorted(pending) if o in locator), None)
            if key is None:
                if unread is None:
                    unread = sorted(
                        i.key for i in self.be.list("meta/") if i.key.endswith(".bundle")
                    )
                unread = [k for k in unread if k not in read]
                if not unread:
                    break
                key = unread.pop(0)
            read.add(key)
            try:
                pairs = self.bundle_of(self.be, key)
            except MsError as exc:
                pairs = []
                for o in pending:
                    if locator.get(o) == key:
                        why[o] = f"{self.name}'s bundle {key} is unreadable: {exc.message}"
            for oid, _ in pairs:
                locator.setdefault(oid, key)
            for o in [o for o in pending if locator.get(o) == key]:
                del locator[o]  # read now: found below, or to be looked for elsewhere
            with self.repo.db.read() as txn:
                for oid, raw in pairs:
                    if oid not in pending:
                        continue
                    try:
                        obj = decode_object(raw, expect_id=oid)
                    except MsError as exc:
                        why[oid] = f"{self.name}'s copy is damaged too ({key}: {exc.message})"
                        continue
                    pending.discard(oid)
                    got[oid] = raw
                    for child in _children(obj):
                        if child not in got and child not in pending and _bad_here(txn, child):
                            pending.add(child)
        for oid in pending:
            lost[("o", oid)] = why.get(oid, f"{self.name} does not have it")
        return got


def _children(obj: Obj) -> list[bytes]:
    if isinstance(obj, Tag):
        return [obj.target]
    if isinstance(obj, Commit):
        return [obj.tree_id, *obj.parents]
    if isinstance(obj, Tree):
        return [e.id for e in obj.entries]
    if isinstance(obj, FileManifest):
        return [s.id for s in obj.segments]
    return []


def _bad_here(txn: Txn, oid: bytes) -> bool:
    """Whether the local copy of an object is missing or damaged."""
    raw = txn.get("objects", oid)
    if raw is None:
        return True
    try:
        decode_object(raw, expect_id=oid)
    except MsError:
        return True
    return False


def _recover_chunks(
    repo: Repository,
    src: _RemoteCopies,
    want: dict[bytes, bytes | None],
    known_bad: set[bytes],
    res: RepairReport,
    lost: dict[_Key, str],
) -> None:
    """Put a good copy of every wanted chunk into new packs, then move the index to it.

    The local copy when it was not found bad and still reads correctly (a chunk of a pack
    whose trailer is damaged), else the remote's.
    """
    store = repo.store

    def copy_of(cid: bytes) -> tuple[int, int, bytes] | None:
        """A delta base: a copy being repaired, the local one, else the remote's."""
        got = out.fresh.get(cid)
        if got is not None:
            return got
        with repo.db.read() as txn:
            loc = store.locate(txn, cid)
        if loc is not None and cid not in known_bad:
            try:
                return loc.codec, loc.raw_len, store.read_stored(loc)
            except MsError:
                pass
        for everywhere in (False, True):
            for pid, off, stored_len, raw_len, codec in src.chunk_copies(
                {cid}, everywhere=everywhere
            ).get(cid, []):
                key = f"packs/{pid.hex()[:2]}/{pid.hex()}.pack"
                try:
                    return codec, raw_len, src.be.get(key, offset=off, length=stored_len)
                except MsError:
                    continue
        return None

    out = _NewPacks(repo, res, copy_of)
    try:
        remote_wanted: set[bytes] = set()
        for cid, old in want.items():
            if old is None or cid in known_bad:
                remote_wanted.add(cid)
                continue
            try:
                loc = decode_loc(old)
                stored = store.read_stored(loc)
                store.decode_verified(cid, loc, stored, strict=True)
            except MsError:
                remote_wanted.add(cid)
                continue
            out.add(cid, stored, loc.raw_len, old)
        why: dict[bytes, str] = {}
        tried: set[tuple[bytes, bytes]] = set()
        for everywhere in (False, True):  # the packs the cache names, then every pack
            if not remote_wanted:
                break
            copies = src.chunk_copies(remote_wanted, everywhere=everywhere)

            order = {cid: (c[0][0], c[0][1]) for cid, c in copies.items()}
            for cid in sorted(remote_wanted, key=lambda c: order.get(c, (b"", 0))):  # by offset
                for pid, off, stored_len, raw_len, codec in copies.get(cid, []):
                    if (cid, pid) in tried:
                        continue
                    tried.add((cid, pid))
                    key = f"packs/{pid.hex()[:2]}/{pid.hex()}.pack"
                    try:
                        data = src.be.get(key, offset=off, length=stored_len)
                    except MsError as exc:
                        why[cid] = f"cannot read {src.name}'s copy: {exc.message}"
                        continue
                    error = _chunk_error(cid, codec, raw_len, data, copy_of)
                    if error is not None:
                        why[cid] = f"{src.name}'s copy is damaged too ({key} {error})"
                        continue
                    res.bytes_fetched += len(data)
                    out.add(cid, data, raw_len, want[cid])
                    remote_wanted.discard(cid)
                    break
        for cid in remote_wanted:
            lost[("c", cid)] = why.get(cid, f"{src.name} does not have it")
        out.flush()
    except BaseException:
        out.abort()
        raise


class _NewPacks:
    """Repaired chunks into new packs: durable, read back, then the index moves (FORMAT §15)."""

    def __init__(self, repo: Repository, res: RepairReport, copy_of: CopyOf) -> None:
        self.repo, self.res, self.copy_of = repo, res, copy_of
        self.writer: PackWriter | None = None
        self.old: dict[bytes, bytes | None] = {}
        #: copies in the pack being written, as delta bases for the chunks after them
        self.fresh: dict[bytes, tuple[int, int, bytes]] = {}

    def add(self, cid: bytes, stored: bytes, raw_len: int, old: bytes | None) -> None:
        """Append a verified chunk (stored bytes: tag + payload); ``old``: its index entry."""
        if self.writer is None:
            store = self.repo.store
            store.tmp_dir.mkdir(exist_ok=True)
            self.writer = PackWriter(store.tmp_dir, f"repair-{os.getpid()}-{os.urandom(6).hex()}")
        self.writer.add(ChunkId(cid), stored[0], memoryview(stored)[1:], raw_len)
        self.old[cid] = old
        self.fresh[cid] = (stored[0], raw_len, stored)
        if self.writer.size >= self.repo.config.pack_size:
            self.flush()

    def flush(self) -> None:
        """Finish the pack being written (fsync, rename), read it back, then index it."""
        w, self.writer = self.writer, None
        if w is None:
            return
        old, self.old = self.old, {}
        store = self.repo.store
        try:
            pack_hex, path = w.finish(store.packs_dir)
        except BaseException:
            w.abort()
            raise
        pid = bytes.fromhex(pack_hex)
        entries = _read_back(store, pid, str(path), self.copy_of)  # the disk holds it
        size = os.path.getsize(path)
        moved: list[bytes] = []

        def index(txn: Txn) -> None:
            moved.clear()  # the transaction may run again (map growth)
            txn.put("packs", pid, PACK_REC.pack(1, size, len(entries), time.time_ns()))
            for e in entries:
                if txn.get("chunks", e.chunk_id) != old[e.chunk_id]:
                    continue  # it moved since verify looked: leave the new entry alone
                loc = CHUNK_LOC.pack(1, pid, e.offset, e.stored_len, e.raw_len, e.codec)
                txn.put("chunks", e.chunk_id, loc)  # the repair exception to §13 rule 5
                moved.append(e.chunk_id)

        self.repo.db.write(index)
        self.fresh.clear()  # indexed now: found as local copies
        store.forget_pack(pid)  # a cached descriptor may be of a damaged file by this name
        self.res.packs_written += 1
        self.res.chunks_repaired += len(moved)

    def abort(self) -> None:
        """Drop the pack being written; packs already indexed stay."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def _read_back(store: ChunkStore, pid: bytes, path: str, copy_of: CopyOf) -> list[PackEntry]:
    """Check a pack just written, trailer and every chunk, before anything names it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        idx, entries = read_pack_trailer(fd, os.fstat(fd).st_size, strict=True)
        if pack_id_of(idx) != pid:
            raise CorruptObjectError(f"repaired pack {path} does not match its name")
        for e in entries:
            stored = os.pread(fd, e.stored_len, e.offset)
            loc = ChunkLoc(pid, e.offset, e.stored_len, e.raw_len, e.codec)
            store.decode_verified(
                e.chunk_id, loc, stored, lambda b: _raw_of(b, copy_of), strict=True
            )
    finally:
        os.close(fd)
    return entries


def _store_objects(repo: Repository, objs: dict[bytes, bytes], res: RepairReport) -> None:
    """Store refetched objects (verified), replacing only copies that are missing or damaged."""
    if not objs:
        return

    def put(txn: Txn) -> int:
        n = 0
        for oid, raw in objs.items():
            if not _bad_here(txn, oid):
                continue
            txn.put("objects", oid, raw)  # overwrites a damaged copy: the repair exception
            n += 1
        return n

    res.objects_repaired = repo.db.write(put)


def _retire_packs(repo: Repository, packs: set[bytes]) -> int:
    """Drop the records of damaged packs that no chunk entry names any more.

    Their files stay as they are; gc deletes pack files no record names (FORMAT §15).
    """
    if not packs:
        return 0

    def drop(txn: Txn) -> list[bytes]:
        named: set[bytes] = set()

        def note(_: bytes, v: bytes) -> None:
            if v[1 : 1 + ID_LEN] in packs:
                named.add(v[1 : 1 + ID_LEN])

        txn.scan("chunks", note)
        gone = [p for p in packs if p not in named and txn.get("packs", p) is not None]
        for p in gone:
            txn.delete("packs", p)
        return gone

    gone = repo.db.write(drop)
    for p in gone:
        repo.store.forget_pack(p)
    return len(gone)
