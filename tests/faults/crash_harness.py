"""Crash harness: SIGKILL a real ``ms`` process at a seeded random moment, then check the damage.

Each operation (:data:`OPS`) builds a *template* once per session: a repository (and, for the
sync operations, a directory remote or an upstream) with a few committed versions of multi-MB
files, with 4 KiB chunks so that every version spans thousands of chunks and dozens of packs
(the operation itself writes 64 KiB packs: each one its own fsyncs and transaction). The
template records the BLAKE3 of every file of every committed version. It is then copied once
and the operation run on the copy without a kill: that measures its duration ``T`` (later the
median of that and of every trial that finished before its kill, as the load on a shared
machine changes) and records what a finished run leaves behind (index, tree id, remote ref,
pack files).

A trial (:func:`run_trial`) copies the template, starts ``ms ARGS`` (the CLI's ``main``, see
:data:`LAUNCH`) in its own process group, and sends ``SIGKILL`` to the group ``delay = frac * T``
after it has imported everything, ``frac`` drawn from ``random.Random(seed)``. Then:

1. ``ms verify --read-data`` exits 0 in the repository;
2. every committed version reads back byte-identical (every file of every version);
3. every staging index entry reads back whole (its chunks are durable and indexed);
4. operation-specific checks (after a push: the remote is fetchable and a fresh clone of it
   verifies and reads back whatever the remote's branch names);
5. re-running the same command succeeds (exit 0; ``commit`` whose kill landed after its
   transaction may say "nothing to commit", exit 9) and leaves exactly what the unkilled run
   left (the same index, tree, refs, files, pack bytes), and the repository verifies again.

Delays are measured from the moment the process has imported everything (:data:`LAUNCH`), so
they spread over the operation itself rather than over Python's start-up. Every trial is
classified by where the kill landed (:class:`Outcome`): ``before-writes`` (killed before the
operation changed any file: ``commit`` spends most of its time recording provenance),
``mid`` (killed with partial effects on disk), ``after-effect`` (its effect was complete, the
process had not exited yet) or ``finished`` (it exited on its own before the delay).

:func:`run_crash_point` kills the operation at an exact point instead (:data:`DIE_AT`: the
nth call of a given function SIGKILLs the process), then checks the same way.

A failure names the seed, operation and delay, and keeps the trial's files; set
``MODELSTORE_CRASH_LOG=FILE`` to append one JSON line per trial (not ``MS_*``: the tests'
``clean_env`` fixture clears those).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blake3 import blake3

from modelstore import Repository, api
from modelstore.chunker import ChunkerParams
from modelstore.config import RepoConfig
from modelstore.metadb import Txn
from modelstore.repository import IndexEntry
from modelstore.verify import verify
from tests.conftest import make_data

MS = [sys.executable, "-m", "modelstore.cli.main"]
#: 4 KiB average chunks: a 4 MB file is ~1000 chunks. Templates are built with 256 KiB packs
#: (a 4 MB file spans ~16); the killed operations write 64 KiB packs, so each one commits
#: dozens of packs, each in its own fsyncs and transaction, and a kill lands between them.
CHUNKS = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
TEMPLATE_PACK_SIZE = 256 << 10
PACK_SIZE = 64 << 10
#: the size unit of the templates' files (a "3 * UNIT" file is ~1.9 MB, ~480 chunks)
UNIT = 640 << 10
#: exit code of "nothing to commit" (NothingToCommitError)
NOTHING_TO_COMMIT = 9
#: every command gets this long before the harness calls it hung
TIMEOUT = 120


def digest(data: bytes) -> str:
    return blake3(data).hexdigest()


_LOW_NIBBLE = bytes(i & 0x0F for i in range(256))


def mixed(size: int, seed: int) -> bytes:
    """Checkpoint-like bytes: random runs (stored raw) between runs that compress (zstd)."""
    out = bytearray()
    rnd = make_data(size, seed)
    step = 96 << 10
    for i, pos in enumerate(range(0, size, step)):
        block = rnd[pos : pos + step]
        if i % 3 == 2:  # every third block: low-entropy bytes, as in sparse or quantized data
            block = block.translate(_LOW_NIBBLE)
        out += block
    return bytes(out)


def edited(data: bytes, seed: int) -> bytes:
    """``data`` with a few small edits: a new version that shares most chunks with the old."""
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(4):
        pos = rng.randrange(len(buf))
        buf[pos:pos] = make_data(700, rng.randrange(1 << 30))
    return bytes(buf)


# -- committed versions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """A committed version that must always read back: its commit and each file's BLAKE3."""

    label: str
    commit: str
    files: dict[str, str]


class Builder:
    """Builds a template repository through the API, recording every committed version."""

    def __init__(self, path: Path, versions: list[Version] | None = None) -> None:
        if versions is None:
            self.repo = Repository.init(path, chunker=CHUNKS, pack_size=TEMPLATE_PACK_SIZE)
        else:  # a copy of the base history (see ``Templates.start``)
            self.repo = Repository.open(path)
        self.versions: list[Version] = list(versions or [])

    def write(self, files: dict[str, bytes], remove: tuple[str, ...] = ()) -> None:
        w = self.repo.workdir
        for name, data in files.items():
            (w / name).parent.mkdir(parents=True, exist_ok=True)
            (w / name).write_bytes(data)
        for name in remove:
            (w / name).unlink()
        if remove:
            self.repo.rm([str(w / n) for n in remove], cached=True)
        if files:
            self.repo.add([str(w / n) for n in files])

    def commit(self, label: str, files: dict[str, bytes], remove: tuple[str, ...] = ()) -> Version:
        self.write(files, remove)
        oid = self.repo.commit(label)
        v = Version(label, oid.hex(), tracked(self.repo, oid.hex()))
        self.versions.append(v)
        return v

    def close(self) -> None:
        self.repo.close()


def set_pack_size(path: Path, size: int) -> None:
    """Change the target pack size in a repository's config (FORMAT §10.1 ``pack_size``)."""
    with Repository.open(path) as r:

        def fn(txn: Txn) -> None:
            raw = txn.get("meta", b"config")
            assert raw is not None
            cfg = RepoConfig.decode(raw, for_write=True)
            cfg.pack_size = size
            txn.put("meta", b"config", cfg.encode())

        with r.lock:
            r.db.write(fn)


def tracked(repo: Repository, rev: str) -> dict[str, str]:
    """Path → BLAKE3 of every file of ``rev``, read back (verified) through the repository."""
    out = {}
    for p, e in repo.commit_files(repo.resolve(rev)).items():
        h = blake3()
        for data in repo.iter_file(repo.get_manifest(e.id), p, file_hash=True):
            h.update(data)
        out[p] = h.hexdigest()
    return out


def staged(repo: Repository) -> dict[str, IndexEntry]:
    """The staging index, decoded once."""
    with repo.db.read() as txn:
        return {k.decode(): IndexEntry.decode(v) for k, v in txn.items("index")}


def base_history(b: Builder) -> None:
    """v1 and v2 on ``main``: weights, a config, a dataset; v2 edits the weights, adds a head."""
    w = mixed(3 * UNIT, 1)
    v1 = b.commit("v1", {
        "model/weights.bin": w,
        "model/config.json": b'{"layers": 12}\n',
        "data/train.bin": mixed(UNIT, 2),
    })
    b.commit("v2", {
        "model/weights.bin": edited(w, 3),
        "model/head.bin": make_data(UNIT // 2, 4),
        "model/config.json": b'{"layers": 12, "head": true}\n',
    })
    api.tag_create(b.repo, "v1", v1.commit)


def worktree_files(root: Path) -> dict[str, str]:
    """Path → BLAKE3 of every file in a folder, skipping ``.ms/`` (debris included)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == root and d == ".ms")]
        for f in filenames:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = digest(p.read_bytes())
    return out


def fingerprint(roots: list[Path]) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``roots`` but our logs and LMDB's reader table."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in (w for root in roots for w in os.walk(root)):
        dirnames[:] = [d for d in dirnames if d != "logs"]
        for f in filenames:
            if f == "lock.mdb":  # readers register in it
                continue
            p = Path(dirpath) / f
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def ms(*args: str, cwd: Path, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*MS, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ ms {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}\n")
    return proc


def remote_ref(remote: Path, ref: str = "refs/heads/main") -> str | None:
    """A directory remote's value of ``ref`` (FORMAT §12: ``refs/<hex of the name>``)."""
    p = remote / "refs" / ref.encode().hex()
    return p.read_text().strip() if p.exists() else None


def local_ref(repo: Repository, ref: str) -> str | None:
    with repo.db.read() as txn:
        raw = txn.get("refs", ref.encode())
    if raw is None:
        return None
    return raw[1:].hex() if raw[:1] == b"\x01" else raw[1:].decode()


# -- operations ----------------------------------------------------------------------------------


@dataclass
class Trial:
    """One copy of a template: where things are, and what the unkilled run left."""

    root: Path
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def remote(self) -> Path:
        return self.root / "remote"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


#: makes a ``Builder`` at a path, holding a copy of the base history (v1, v2, tag v1)
Start = Callable[[Path], Builder]


class CrashOp:
    """One ``ms`` command to kill: how to build its template, run it and judge the result."""

    name = ""
    #: codes a re-run may exit with when the killed run had already finished its work
    rerun_codes_if_done: tuple[int, ...] = (0,)
    #: the operation whose template this one starts from (built once, shared)
    build_from = ""
    versions: list[Version]

    def build(self, t: Trial, start: Start) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def args(self, t: Trial) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def relocate(self, t: Trial) -> None:
        """Fix absolute paths recorded in the copy (remote URLs)."""

    def watched(self, t: Trial) -> list[Path]:
        """Where the operation writes (to tell a kill before any write from one in the middle)."""
        return [t.root]

    def done(self, t: Trial) -> bool:  # pragma: no cover - abstract
        """Whether the operation's effect is complete."""
        raise NotImplementedError

    def record(self, t: Trial) -> dict[str, Any]:
        """What a finished run leaves behind, compared by :meth:`check_result`."""
        return {}

    def check_after_kill(self, t: Trial) -> None:
        """Operation-specific checks right after the kill (generic ones run first)."""

    def check_result(self, t: Trial) -> None:  # pragma: no cover - abstract
        """After the re-run: the operation's result is exactly the unkilled run's."""
        raise NotImplementedError


def _set_origin(repo: Path, url: str) -> None:
    with Repository.open(repo) as r:
        r.set_remote("origin", url)


class AddOp(CrashOp):
    """``ms add .`` of a new 3.8 MB checkpoint and a rewritten 1.9 MB file."""

    name = "add"

    def build(self, t: Trial, start: Start) -> None:
        b = start(t.repo)
        b.close()
        (t.repo / "run").mkdir()
        (t.repo / "run" / "ckpt-3.bin").write_bytes(mixed(6 * UNIT, 30))
        (t.repo / "model" / "weights.bin").write_bytes(mixed(3 * UNIT, 31))
        (t.repo / "run" / "notes.txt").write_text("epoch 3\n" * 100)
        self.versions = b.versions

    def args(self, t: Trial) -> list[str]:
        return ["add", "-q", "."]

    def _ids(self, t: Trial) -> dict[str, str]:
        """Path → manifest id of every staging entry (its stat data differ between copies)."""
        with Repository.open(t.repo) as r:
            return {p: e.manifest_id.hex() for p, e in staged(r).items()}

    def record(self, t: Trial) -> dict[str, Any]:
        return {"ids": self._ids(t)}

    def done(self, t: Trial) -> bool:
        return self._ids(t) == t.expected["ids"]

    def check_result(self, t: Trial) -> None:
        assert self._ids(t) == t.expected["ids"], "staged manifests differ from the unkilled run's"
        # what is staged commits and reads back as the working files
        with Repository.open(t.repo) as r:
            oid = r.commit("after the crash")
            assert tracked(r, oid.hex()) == worktree_files(t.repo)


class CommitOp(CrashOp):
    """``ms commit`` of 400 staged small files in 40 folders plus a new 2.5 MB file."""

    name = "commit"
    rerun_codes_if_done = (0, NOTHING_TO_COMMIT)

    def build(self, t: Trial, start: Start) -> None:
        b = start(t.repo)
        files = {f"shards/{i // 10:03d}/s{i:04d}.txt": f"shard {i}\n".encode() * 20
                 for i in range(400)}
        files["model/extra.bin"] = mixed(4 * UNIT, 40)
        b.write(files)
        b.close()
        self.versions = b.versions

    def args(self, t: Trial) -> list[str]:
        return ["commit", "-m", "v3 after the crash"]

    def _head(self, t: Trial) -> str | None:
        with Repository.open(t.repo) as r:
            head = r.head()[1]
            return None if head is None else head.hex()

    def record(self, t: Trial) -> dict[str, Any]:
        with Repository.open(t.repo) as r:
            c = r.get_commit(r.resolve("HEAD"))
            return {"tree": c.tree_id.hex(), "files": tracked(r, "HEAD")}

    def done(self, t: Trial) -> bool:
        return self._head(t) != self.versions[-1].commit

    def check_result(self, t: Trial) -> None:
        with Repository.open(t.repo) as r:
            log = list(r.log())
            assert [c.message for _, c in log[:2]] == ["v3 after the crash", "v2"], (
                "exactly one new commit on top of v2"
            )
            assert log[0][1].parents == (bytes.fromhex(self.versions[-1].commit),)
            assert log[0][1].tree_id.hex() == t.expected["tree"]
            assert tracked(r, "HEAD") == t.expected["files"]


class CheckoutOp(CrashOp):
    """``ms checkout legacy``: switch branches, rewriting, creating and deleting ~6 MB.

    Its template serves ``checkout-to`` and ``merge`` too: ``main`` ("a side", HEAD), ``b``
    ("b side", forked from v2) and ``legacy`` (forked from v1).
    """

    name = "checkout"

    def build(self, t: Trial, start: Start) -> None:
        b = start(t.repo)
        api.switch(b.repo, "legacy", create=True, start="v1")
        b.commit("legacy", {
            "model/weights.bin": mixed(4 * UNIT, 50),
            "legacy/old-a.bin": mixed(3 * UNIT, 51),
            "legacy/old-b.bin": make_data(2 * UNIT, 52),
        }, remove=("data/train.bin",))
        api.switch(b.repo, "b", create=True, start="main")
        b.commit("b side", {
            "b/big1.bin": mixed(4 * UNIT, 70),
            "b/big2.bin": make_data(3 * UNIT, 71),
            "model/weights.bin": mixed(3 * UNIT, 72),
        }, remove=("data/train.bin",))
        api.switch(b.repo, "main")
        b.commit("a side", {  # last: versions[-1] is HEAD
            "a/big.bin": mixed(3 * UNIT, 73),
            "model/config.json": b'{"layers": 24, "head": true}\n',
        })
        b.close()
        self.versions = b.versions

    def args(self, t: Trial) -> list[str]:
        return ["checkout", "-q", "legacy"]

    def done(self, t: Trial) -> bool:
        with Repository.open(t.repo) as r:
            return r.head()[0] == "legacy"

    def check_result(self, t: Trial) -> None:
        legacy = next(v for v in self.versions if v.label == "legacy")
        with Repository.open(t.repo) as r:
            assert r.head() == ("legacy", bytes.fromhex(legacy.commit))
            st = r.status()
            assert st.clean, st
        assert worktree_files(t.repo) == legacy.files, "working tree differs from legacy"


class CheckoutToOp(CrashOp):
    """``ms checkout --to OUT HEAD`` (no lock; writes ~5 MB outside the repository)."""

    name = "checkout-to"
    build_from = "checkout"

    def args(self, t: Trial) -> list[str]:
        return ["checkout", "-q", "--to", str(t.root / "out"), "HEAD"]

    def done(self, t: Trial) -> bool:
        out = t.root / "out"
        return out.is_dir() and worktree_files(out) == self.versions[-1].files

    def check_result(self, t: Trial) -> None:
        assert worktree_files(t.root / "out") == self.versions[-1].files


class MergeOp(CrashOp):
    """``ms merge b``: a three-way merge taking files from both sides (~5 MB written)."""

    name = "merge"
    build_from = "checkout"

    def args(self, t: Trial) -> list[str]:
        return ["merge", "b", "-m", "merge b"]

    def record(self, t: Trial) -> dict[str, Any]:
        with Repository.open(t.repo) as r:
            c = r.get_commit(r.resolve("HEAD"))
            return {"tree": c.tree_id.hex(), "files": tracked(r, "HEAD")}

    def done(self, t: Trial) -> bool:
        with Repository.open(t.repo) as r:
            return len(r.get_commit(r.resolve("HEAD")).parents) == 2

    def check_result(self, t: Trial) -> None:
        ours = next(v for v in self.versions if v.label == "a side")
        theirs = next(v for v in self.versions if v.label == "b side")
        with Repository.open(t.repo) as r:
            head = r.resolve("HEAD")
            c = r.get_commit(head)
            assert c.parents == (bytes.fromhex(ours.commit), bytes.fromhex(theirs.commit))
            assert c.tree_id.hex() == t.expected["tree"]
            assert r.head()[0] == "main"
            st = r.status()
            assert st.clean, st
            assert tracked(r, "HEAD") == t.expected["files"]
        assert worktree_files(t.repo) == t.expected["files"]


class PushOp(CrashOp):
    """``ms push origin main`` of a new version (~6 MB new) to a directory remote."""

    name = "push"

    def build(self, t: Trial, start: Start) -> None:
        b = start(t.repo)
        api.remote_add(b.repo, "origin", str(t.remote))
        api.push(b.repo, "origin", ["main"])
        b.commit("v3", {"model/big.bin": mixed(6 * UNIT, 80),
                        "model/weights.bin": mixed(4 * UNIT, 81)})
        b.close()
        self.versions = b.versions

    def url(self, t: Trial) -> str:
        return str(t.remote)

    def relocate(self, t: Trial) -> None:
        _set_origin(t.repo, self.url(t))

    def args(self, t: Trial) -> list[str]:
        return ["push", "-q", "origin", "main"]

    def remote_main(self, t: Trial) -> str | None:
        return remote_ref(t.remote)

    def done(self, t: Trial) -> bool:
        return self.remote_main(t) == self.versions[-1].commit

    def _clone_reads(self, t: Trial, name: str) -> str:
        """A fresh clone of the remote verifies and reads back the version its main names."""
        dest = t.root / name
        with api.clone(self.url(t), str(dest)) as c:
            rep = verify(c, read_data=True)
            assert rep.ok, f"the fresh clone does not verify: {rep.problems}"
            head = c.resolve("main").hex()
            assert head in {v.commit for v in self.versions}, f"remote main {head} is unknown"
            for v in self.versions:
                if v.commit == head or _is_ancestor(c, v.commit, head):
                    assert tracked(c, v.commit) == v.files, f"{v.label} differs in the clone"
        shutil.rmtree(dest)
        return head

    def check_after_kill(self, t: Trial) -> None:
        assert self.remote_main(t) in {self.versions[1].commit, self.versions[-1].commit}
        self._clone_reads(t, "clone-after-kill")

    def check_result(self, t: Trial) -> None:
        assert self.remote_main(t) == self.versions[-1].commit
        with Repository.open(t.repo) as r:
            assert local_ref(r, "refs/remotes/origin/main") == self.versions[-1].commit
        assert self._clone_reads(t, "clone-after-rerun") == self.versions[-1].commit


def _is_ancestor(r: Repository, anc: str, desc: str) -> bool:
    return any(oid.hex() == anc for oid, _ in r.log(desc))


class PushServeOp(PushOp):
    """``ms push`` to a repository served by a real ``ms serve`` process (started on first use)."""

    name = "push-serve"
    build_from = "push"
    #: set by :func:`serving`: where to start the server, and the server once started
    base: Path | None = None
    server: Any = None

    def root(self) -> Path:
        cls = PushServeOp
        if cls.server is None:
            from tests.contract.conftest import start_serve

            assert cls.base is not None, "push-serve runs inside crash_harness.serving()"
            cls.server = start_serve(cls.base, None)  # --no-auth
        return Path(cls.server.root)

    def url(self, t: Trial) -> str:
        self.root()
        return f"{PushServeOp.server.url}/{t.expected['serve_repo']}"

    def relocate(self, t: Trial) -> None:
        name = t.expected.setdefault("serve_repo", f"crash-{uuid.uuid4().hex[:12]}")
        shutil.copytree(t.remote, self.root() / name)
        _set_origin(t.repo, self.url(t))

    def remote_main(self, t: Trial) -> str | None:
        return remote_ref(self.root() / t.expected["serve_repo"])

    def watched(self, t: Trial) -> list[Path]:
        return [t.root, self.root() / t.expected["serve_repo"]]


class FetchOp(CrashOp):
    """``ms fetch origin`` of two new upstream versions (~6 MB new) from a directory remote."""

    name = "fetch"

    def build(self, t: Trial, start: Start) -> None:
        up = start(t.root / "upstream")
        v1, v2 = up.versions
        api.remote_add(up.repo, "origin", str(t.remote))
        api.push(up.repo, "origin", ["main"])
        api.clone(str(t.remote), str(t.repo)).close()
        v3 = up.commit("v3", {"model/big.bin": mixed(6 * UNIT, 90)})
        v4 = up.commit("v4", {"model/weights.bin": mixed(4 * UNIT, 91)})
        api.push(up.repo, "origin", ["main"])
        up.close()
        self.versions = [v1, v2]  # what the local clone holds before the fetch
        self.upstream = [v3, v4]

    def relocate(self, t: Trial) -> None:
        _set_origin(t.repo, str(t.remote))

    def args(self, t: Trial) -> list[str]:
        return ["fetch", "-q", "origin"]

    def done(self, t: Trial) -> bool:
        with Repository.open(t.repo) as r:
            return local_ref(r, "refs/remotes/origin/main") == self.upstream[-1].commit

    def check_after_kill(self, t: Trial) -> None:
        with Repository.open(t.repo) as r:
            assert local_ref(r, "refs/remotes/origin/main") in {
                self.versions[-1].commit, self.upstream[-1].commit}

    def check_result(self, t: Trial) -> None:
        with Repository.open(t.repo) as r:
            assert local_ref(r, "refs/remotes/origin/main") == self.upstream[-1].commit
            for v in self.upstream:
                assert tracked(r, v.commit) == v.files, f"fetched {v.label} differs"
            assert r.head() == ("main", bytes.fromhex(self.versions[-1].commit))


class GcOp(CrashOp):
    """``ms gc --prune-older-than 0`` after deleting a branch: drops ~3.5 MB, repacks ~1.4 MB."""

    name = "gc"

    def build(self, t: Trial, start: Start) -> None:
        b = start(t.repo)
        pieces = [make_data(160 << 10, 100 + i) for i in range(27)]
        api.switch(b.repo, "exp", create=True)
        b.commit("exp", {"exp/all.bin": b"".join(pieces), "exp/dead.bin": mixed(2 * UNIT, 99)})
        self.dead = b.versions.pop()
        api.switch(b.repo, "main")
        # every third piece stays live: exp's packs are a third live, so gc rewrites them
        b.commit("v3", {"kept/third.bin": b"".join(pieces[::3])})
        api.branch_delete(b.repo, "exp", force=True)
        b.close()
        self.versions = b.versions

    def args(self, t: Trial) -> list[str]:
        return ["gc", "-q", "--prune-older-than", "0", "--expire-reflog", "now"]

    def _packs(self, t: Trial) -> list[tuple[str, int]]:
        return sorted((p.name, p.stat().st_size) for p in (t.repo / ".ms" / "packs").rglob("*")
                      if p.is_file())

    def record(self, t: Trial) -> dict[str, Any]:
        return {"packs": self._packs(t)}

    def done(self, t: Trial) -> bool:
        with Repository.open(t.repo) as r, r.db.read() as txn:
            return txn.get("objects", bytes.fromhex(self.dead.commit)) is None

    def check_result(self, t: Trial) -> None:
        assert self.done(t), "the deleted branch's commit was not collected"
        assert self._packs(t) == t.expected["packs"], "pack files differ from the unkilled gc's"
        assert not os.listdir(t.repo / ".ms" / "tmp")


OPS: dict[str, CrashOp] = {
    op.name: op
    for op in (AddOp(), CommitOp(), CheckoutOp(), CheckoutToOp(), MergeOp(), PushOp(),
               PushServeOp(), FetchOp(), GcOp())
}


# -- templates and trials ------------------------------------------------------------------------


@dataclass
class Template:
    op: CrashOp
    root: Path
    #: how long whole runs took (after their imports): the unkilled one, then every trial
    #: that finished before its kill; the load on a shared machine changes it by 2-3x
    samples: list[float]
    expected: dict[str, Any]

    @property
    def duration(self) -> float:
        """The median whole run: kill delays are spread over it."""
        return statistics.median(self.samples)


class Templates:
    """Builds each operation's template once, measuring an unkilled run on a copy."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._made: dict[str, Template] = {}
        self._history: Builder | None = None

    def start(self, path: Path) -> Builder:
        """A builder at ``path`` over a copy of the base history (built once)."""
        if self._history is None:
            b = Builder(self.base / "base-history")
            base_history(b)
            b.close()
            self._history = b
        shutil.copytree(self.base / "base-history", path, symlinks=True)
        return Builder(path, self._history.versions)

    def get(self, name: str) -> Template:
        if name not in self._made:
            self._made[name] = self._make(OPS[name])
        return self._made[name]

    def _make(self, op: CrashOp) -> Template:
        if op.build_from:  # templates are never modified: share the directory
            src = self.get(op.build_from)
            op.__dict__.update(src.op.__dict__)  # what its build recorded (versions, ...)
            root = src.root
        else:
            t = Trial(self.base / op.name)
            t.root.mkdir()
            t.logs.mkdir()
            op.build(t, self.start)
            set_pack_size(t.repo, PACK_SIZE)
            root = t.root
        run = copy_trial(root, self.base / f"{op.name}-unkilled", {})
        op.relocate(run)
        code, duration = measure(op.args(run), run.repo, run.logs / "unkilled.log")
        assert code == 0, f"unkilled {op.name} failed: {(run.logs / 'unkilled.log').read_text()}"
        expected = op.record(run)
        run.expected = {**run.expected, **expected}
        assert op.done(run), f"unkilled {op.name}: done() is false"
        op.check_result(run)
        shutil.rmtree(run.root)
        return Template(op, root, [duration], expected)


def copy_trial(src: Path, dest: Path, expected: dict[str, Any]) -> Trial:
    shutil.copytree(src, dest, symlinks=True)
    return Trial(dest, dict(expected))


@dataclass
class Outcome:
    seed: int
    op: str
    frac: float
    delay: float
    duration: float
    landed: str  # before-writes | mid | after-effect | finished
    rerun_code: int = -1
    seconds: float = 0.0

    def where(self) -> str:
        if self.seed < 0:
            return f"[crash point op={self.op} killed {self.landed}]"
        return (f"[crash trial seed={self.seed} op={self.op} delay={self.delay:.3f}s "
                f"({self.frac:.0%} of the unkilled {self.duration:.2f}s), kill landed: "
                f"{self.landed}]")


#: ``ms`` as the console script runs it (``modelstore.cli.main:main``), but with the imports
#: done first and a byte written to the pipe fd ``argv[1]`` when they are: the harness starts
#: its clock there, so kill delays spread over the operation, not over Python's start-up
#: (which takes 0.3-1 s here and does nothing to the repository).
LAUNCH = """
import os, sys
import modelstore.api, modelstore.gc, modelstore.merge, modelstore.sync, modelstore.verify
import modelstore.backend.http, modelstore.backend.local, modelstore.lineage
from modelstore.cli.main import main
fd = int(sys.argv[1])
os.write(fd, b"go")
os.close(fd)
sys.argv = ["ms", *sys.argv[2:]]
sys.exit(main(sys.argv[1:]))
"""


#: ``ms`` that SIGKILLs itself on the ``nth`` call of ``module:Class.function``: a crash at an
#: exact point (argv: the point, n, then the ``ms`` arguments). Nothing else is changed.
DIE_AT = """
import importlib, os, signal, sys
where, nth = sys.argv[1], int(sys.argv[2])
mod, _, attr = where.partition(":")
owner = importlib.import_module(mod)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)
calls = [0]

def hook(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(owner, name, hook)
from modelstore.cli.main import main
sys.argv = ["ms", *sys.argv[3:]]
sys.exit(main(sys.argv[1:]))
"""


def die_at(argv: list[str], cwd: Path, where: str, nth: int, log: Path) -> int:
    """Run ``ms ARGV`` so that it kills itself at the ``nth`` call of ``where``; its exit code."""
    with open(log, "ab") as err:
        return subprocess.run([sys.executable, "-c", DIE_AT, where, str(nth), *argv], cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=TIMEOUT).returncode


def launch(argv: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``ms ARGV`` in its own process group; return it once it has imported everything."""
    r, w = os.pipe()
    try:
        with open(log, "ab") as err:
            proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(w), *argv], cwd=cwd,
                                    stdout=subprocess.DEVNULL, stderr=err, pass_fds=(w,),
                                    start_new_session=True)
        os.close(w)
        w = -1
        got = os.read(r, 2)  # EOF (b"") if it died first
        assert got == b"go", f"ms {' '.join(argv)} died while starting (see {log})"
        return proc, time.monotonic()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def measure(argv: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """Run ``ms ARGV`` to the end: its exit code and how long it ran after its imports."""
    proc, ready = launch(argv, cwd, log)
    code = proc.wait(timeout=TIMEOUT)
    return code, time.monotonic() - ready


def kill_after(argv: list[str], cwd: Path, delay: float, log: Path) -> float | None:
    """Run ``ms ARGV``; SIGKILL its process group ``delay`` s after its imports.

    Returns None if it was killed, else how long it ran (after its imports).
    """
    proc, ready = launch(argv, cwd, log)
    try:
        proc.wait(timeout=max(0.0, ready + delay - time.monotonic()))
        return time.monotonic() - ready
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group: any child it started dies too
        proc.wait(timeout=TIMEOUT)
        return None


def check_versions(repo: Path, versions: list[Version]) -> None:
    """Every committed version reads back byte-identical, and the index reads back whole."""
    with Repository.open(repo) as r:
        for v in versions:
            got = tracked(r, v.commit)
            assert got == v.files, f"committed version {v.label} ({v.commit[:12]}) changed"
        for p, e in staged(r).items():
            m = r.get_manifest(e.manifest_id)
            n = sum(len(b) for b in r.iter_file(m, p, file_hash=True))
            assert n == m.size, f"staged {p} reads back short"


def run_trial(templates: Templates, op_name: str, seed: int, work: Path) -> Outcome:
    """One kill-and-recover trial; raises AssertionError naming seed, op and delay."""
    tpl = templates.get(op_name)
    op = tpl.op
    rng = random.Random(seed)
    frac = rng.random()
    out = Outcome(seed, op_name, frac, frac * tpl.duration, tpl.duration, "?")
    t0 = time.monotonic()
    t = copy_trial(tpl.root, work / f"{op_name}-{seed}", tpl.expected)
    try:
        op.relocate(t)
        before = fingerprint(op.watched(t))
        ran = kill_after(op.args(t), t.repo, out.delay, t.logs / "killed.log")
        if ran is not None:
            out.landed = "finished"
            tpl.samples.append(ran)  # a whole run: the estimate follows the machine's load
        elif op.done(t):
            out.landed = "after-effect"
        else:
            out.landed = "mid" if fingerprint(op.watched(t)) != before else "before-writes"
        _check(t, op, out)
        out.seconds = time.monotonic() - t0
    except AssertionError as exc:
        raise AssertionError(f"{out.where()} (files kept in {t.root}): {exc}") from exc
    _log(out)
    shutil.rmtree(t.root, ignore_errors=True)
    return out


def run_crash_point(
    templates: Templates,
    op_name: str,
    where: str,
    nth: int,
    work: Path,
    after_kill: Callable[[Trial], None] | None = None,
) -> Trial:
    """Kill ``op`` at an exact point (see :data:`DIE_AT`), then check as :func:`run_trial` does.

    ``after_kill`` looks at the state the kill left before the checks and the re-run.
    """
    tpl = templates.get(op_name)
    op = tpl.op
    out = Outcome(-1, op_name, 0.0, 0.0, tpl.duration, f"at call {nth} of {where}")
    t = copy_trial(tpl.root, work / f"{op_name}-point", tpl.expected)
    try:
        op.relocate(t)
        code = die_at(op.args(t), t.repo, where, nth, t.logs / "killed.log")
        assert code == -signal.SIGKILL, (
            f"exit {code}: the crash point was never reached ({t.logs / 'killed.log'})"
        )
        if after_kill is not None:
            after_kill(t)
        _check(t, op, out)
    except AssertionError as exc:
        raise AssertionError(f"{out.where()} (files kept in {t.root}): {exc}") from exc
    return t


def _check(t: Trial, op: CrashOp, out: Outcome) -> None:
    proc = ms("verify", "--read-data", "-q", cwd=t.repo)
    assert proc.returncode == 0, f"verify after the kill: {proc.stdout}{proc.stderr}"
    check_versions(t.repo, op.versions)
    op.check_after_kill(t)
    was_done = op.done(t)
    proc = ms(*op.args(t), cwd=t.repo, log=t.logs / "cmds.log")
    out.rerun_code = proc.returncode
    ok = op.rerun_codes_if_done if was_done else (0,)
    assert proc.returncode in ok, f"re-run exited {proc.returncode}: {proc.stderr.strip()}"
    op.check_result(t)
    with Repository.open(t.repo) as r:  # every committed version stays reachable, so this
        rep = verify(r, read_data=True)  # also re-checks their bytes (ids pin them)
        assert rep.ok, f"verify after the re-run: {rep.problems}"


def _log(out: Outcome) -> None:
    path = os.environ.get("MODELSTORE_CRASH_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(out.__dict__) + "\n")


@contextlib.contextmanager
def serving(base: Path) -> Iterator[None]:
    """Let push-serve start ``ms serve`` under ``base`` when it first needs it; stop it after."""
    PushServeOp.base = base
    try:
        yield
    finally:
        if PushServeOp.server is not None:
            PushServeOp.server.stop()
        PushServeOp.base = PushServeOp.server = None


__all__ = ["OPS", "Outcome", "Templates", "Version", "run_crash_point", "run_trial", "serving"]
