"""Layer 4: ``verify``: check that everything reachable decodes, is indexed, and is present.

Checks, from the refs down (readers' order, the reverse of the write order):

- every ref (and HEAD) resolves to a commit object that decodes and matches its id;
- every commit's parents, trees and file manifests exist, decode and match their ids;
- every chunk a manifest lists is in the chunk index, its pack file exists, and the index
  entry lies inside the pack;
- every pack's own trailer index is intact (magic, version, index hash);
- every ref's reflog hash chain is intact (no entry edited or removed);
- with ``read_data``: every indexed chunk is read, decompressed and hashed against its id, and
  every reachable file's chunks add up to its size.

Problems are collected, not raised, so one run reports all of them with the commits and paths
they affect.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from modelstore import reflog, refs
from modelstore.chunkstore import PACK_REC, ChunkLoc, decode_loc
from modelstore.errors import MsError
from modelstore.lazy import remote_key
from modelstore.metadb import Txn
from modelstore.objects import ChunkList, Commit, FileManifest, Tag, Tree, decode_object
from modelstore.pack import pack_id_of, read_pack_trailer
from modelstore.repository import Repository

__all__ = ["Problem", "VerifyReport", "verify"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong, and where it shows."""

    kind: str
    detail: str
    where: str = ""


@dataclass
class VerifyReport:
    """What ``verify`` looked at and what it found."""

    commits: int = 0
    trees: int = 0
    files: int = 0
    chunks_checked: int = 0
    chunks_read: int = 0
    packs: int = 0
    reflog_entries: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problems found."""
        return not self.problems


def verify(
    repo: Repository, *, read_data: bool = False, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Check the repository (see the module docstring); never raises for damage it finds."""
    rep = VerifyReport()
    bad = rep.problems.append
    store = repo.store
    with repo.db.read() as txn:
        starts: list[tuple[str, bytes]] = []
        try:
            _, head = refs.resolve_ref(txn, refs.HEAD)
            if head is not None:
                starts.append(("HEAD", head))
            for name, oid, target in refs.list_refs(txn):
                if oid is not None:
                    starts.append((name, oid))
                elif target is not None and txn.get("refs", target.encode()) is None:
                    bad(Problem("ref", f"symbolic ref points to missing {target}", name))
        except MsError as exc:
            bad(Problem("ref", exc.message))

        def load(oid: bytes, where: str) -> Commit | Tree | FileManifest | ChunkList | Tag | None:
            raw = txn.get("objects", oid)
            if raw is None:
                bad(Problem("missing-object", f"object {oid.hex()[:16]} is missing", where))
                return None
            try:
                return decode_object(raw, expect_id=oid)
            except MsError as exc:
                bad(Problem("bad-object", exc.message, where))
                return None

        seen_commits: set[bytes] = set()
        seen_trees: set[bytes] = set()
        seen_manifests: set[bytes] = set()
        stack = list(starts)
        while stack:
            name, cid = stack.pop()
            if cid in seen_commits:
                continue
            seen_commits.add(cid)
            c = load(cid, f"commit {cid.hex()[:12]} ({name})")
            if isinstance(c, Tag):  # an annotated tag: check it, then its commit
                stack.append((f"{name}^{{}}", c.target))
                continue
            if not isinstance(c, Commit):
                if c is not None:
                    bad(Problem("bad-object", "not a commit", f"{name} -> {cid.hex()[:12]}"))
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
                t = load(tid, f"{where_c}: tree {prefix or '/'}")
                if not isinstance(t, Tree):
                    continue
                rep.trees += 1
                for e in t.entries:
                    path = f"{prefix}{e.name}"
                    if e.is_dir:
                        tstack.append((e.id, path + "/"))
                    elif e.id not in seen_manifests:
                        seen_manifests.add(e.id)
                        m = load(e.id, f"{where_c}: {path}")
                        if isinstance(m, FileManifest):
                            rep.files += 1
                            if m.size != e.size:
                                bad(
                                    Problem(
                                        "bad-object",
                                        "tree size differs from manifest",
                                        f"{where_c}: {path}",
                                    )
                                )
                            _check_chunks(repo, txn, m, f"{where_c}: {path}", rep)
        # packs: every pack file listed exists and its trailer index is intact
        for pack_id, rec in txn.items("packs"):
            rep.packs += 1
            ppath = store.pack_path(pack_id)
            try:
                size = os.path.getsize(ppath)
                if PACK_REC.unpack(rec)[1] != size:
                    bad(Problem("pack", "pack size differs from the pack table", str(ppath)))
                fd = os.open(ppath, os.O_RDONLY)
                try:
                    index, _ = read_pack_trailer(fd, size)
                finally:
                    os.close(fd)
                if pack_id_of(index) != pack_id:
                    bad(Problem("pack", "pack index does not match the pack's name", str(ppath)))
            except FileNotFoundError:
                bad(Problem("pack", "pack file is missing", str(ppath)))
            except MsError as exc:
                bad(Problem("pack", exc.message, str(ppath)))
        # the audit trail: every ref's reflog hash chain
        rep.reflog_entries, chain_problems = reflog.verify_chains(txn)
        for cp in chain_problems:
            bad(Problem("reflog", f"entry {cp.seq}: {cp.detail}", cp.ref))
        chunk_items = txn.items("chunks") if read_data else []
    for cid, raw in chunk_items:
        try:
            loc = decode_loc(raw)
            store.decode_verified(cid, loc, store.read_stored(loc))
            rep.chunks_read += 1
            if progress is not None:
                progress(loc.raw_len)
        except MsError as exc:
            bad(Problem("chunk", exc.message, f"chunk {cid.hex()[:16]}"))
    return rep


def _check_chunks(
    repo: Repository, txn: Txn, m: FileManifest, where: str, rep: VerifyReport
) -> None:
    sizes: dict[bytes, int] = {}
    lazy = repo._lazy.remote if repo._lazy is not None else None
    pairs = repo.manifest_chunks(m)  # one segment in memory at a time
    while True:
        try:
            cid, n = next(pairs)
        except StopIteration:
            break
        except MsError as exc:
            rep.problems.append(Problem("bad-object", f"chunk list: {exc.message}", where))
            return
        rep.chunks_checked += 1
        raw = txn.get("chunks", cid)
        if (
            raw is None
            and lazy is not None
            and txn.get("remote", remote_key(lazy, b"c", cid)) is not None
        ):
            continue  # a lazy clone: the chunk is on its remote, fetched when read
        if raw is None:
            rep.problems.append(
                Problem("missing-chunk", f"chunk {cid.hex()[:16]} is not in the index", where)
            )
            continue
        try:
            loc: ChunkLoc = decode_loc(raw)
        except MsError as exc:
            rep.problems.append(Problem("chunk", exc.message, where))
            continue
        if loc.raw_len != n:
            rep.problems.append(
                Problem("chunk", f"chunk {cid.hex()[:16]} length differs from the index", where)
            )
        if loc.pack_id not in sizes:
            try:
                sizes[loc.pack_id] = os.path.getsize(repo.store.pack_path(loc.pack_id))
            except OSError:
                sizes[loc.pack_id] = -1
        psize = sizes[loc.pack_id]
        if psize < 0:
            rep.problems.append(
                Problem("missing-pack", f"pack {loc.pack_id.hex()[:16]} is missing", where)
            )
        elif loc.offset + loc.stored_len > psize:
            rep.problems.append(
                Problem("chunk", f"chunk {cid.hex()[:16]} lies past the end of its pack", where)
            )
