"""XOR deltas against the previous version (issue 7 §3): bytes stored for fine-tuned checkpoints.

Usage: ``python -m bench.bench_delta [--size 1GiB] [--versions 6] [--lr 1e-4] [--repeat 1]
[--sweep-size 256MiB] [--json bench/results/delta.json]``

A base checkpoint v0 (``bench.gen`` transformer layout, bf16) and versions v1..vN in which
EVERY weight was updated by a few optimizer steps are generated in one streaming pass. The
weights live as fp32 "master" values: ``w0 ~ N(0, std)`` (std 0.02 for matrices, 1 for norms,
as ``bench.gen``), ``w_k = w_(k-1) + lr * sum_{3 steps} clip(N(0, 1), -3, 3)`` (Adam-like
steps move a weight by ~lr each); each file holds the master rounded to bf16 (round to
nearest even) or, for fp32, the master itself. Every piece of 4 Mi elements is regenerated
from its seeds, ``(seed, tensor, piece)`` for w0 and ``(seed, tensor, piece, version, step)``
for each update, so nothing bigger than a piece is ever held.

The versions are committed, in order, to two fresh repositories: ``delta=True`` (the
repository's default chain depth, 2: a chunk is stored whole again after 2 deltas in a row;
``--delta-depth``) and ``delta=False``
(the baseline: same tensor-aware chunking and float codec, no deltas). Per version: bytes
added to the store (``ChunkStore.stats().stored_bytes``), the ratio delta / plain, the share
of the version's chunks stored as deltas and their deepest chain, and add+commit MB/s.

Then, interleaved ``--repeat`` times (medians): ``cp`` + fsync of the file (the baseline),
checkout (``Repository.checkout(REV, to=NEW_DIR)``: materialise the file in a fresh folder,
fsync, rename) of the version with the deepest chain and of v0 from the delta repository,
and of the same deepest version from the plain one; each output is compared with its input
(``cmp``, untimed). ``os.sync()`` runs, untimed, before each measured step; inputs and packs
are in the page cache (warm, like ``bench.run``). With ``--repeat`` > 1 the v1 add+commit is
also repeated, each time in a copy of the repository as it was after v0.

A sweep (``--sweep-size``, ``0`` skips) stores v0 and v1 for lr in ``--sweep-lrs`` and dtype
in bf16, fp32 and reports v1's stored bytes with deltas / without.

Every ms operation and the generator run in a child process (``python -m bench.bench_delta
--child ...``) reaped with ``os.wait4``: its own peak RSS; times are taken inside the child
around the operation (the child's start-up and imports are not counted). This process never
imports numpy or modelstore and resets its peak RSS before each spawn (Linux copies it into
the child's ``ru_maxrss``). By default the children run a snapshot of ``modelstore/`` copied at
the start (``--no-snapshot``: the live sources), so that edits made meanwhile do not mix in.

Targets (issue 7 §3): v1 (every weight updated) stored at ≤ 0.60 of its plain compressed
size; checkout of the deepest delta version ≥ 0.5 GB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.gen import MiB, TensorSpec, layout, parse_size
from bench.run import _reset_peak_rss

ROOT = Path(__file__).resolve().parent.parent
FILE = "model.safetensors"
PIECE = 4 * MiB  # elements per piece: 16 MiB of fp32 master values
STEPS = 3  # optimizer steps between two saved versions
CLIP = 3.0
#: the issue's targets
RATIO_TARGET = 0.60
CHECKOUT_GBS = 0.5

# ---------------------------------------------------------------------------------- children
# Everything below up to ``Parent`` runs in child processes; numpy and modelstore are imported
# there only.


def _gen_piece(
    bufs: Any, spec: TensorSpec, n: int, key: list[int], lr: float, versions: int, out_dtype: str
) -> tuple[list[Any], list[int]]:
    """One piece of every version: ([array per version], [values changed vs the previous])."""
    import numpy as np

    from bench.gen import _fill_piece

    wbuf, nbuf, acc, tmp = bufs
    master = TensorSpec(spec.name, "fp32", spec.shape, spec.std)
    unit = TensorSpec(spec.name, "fp32", spec.shape, 1.0)
    _fill_piece(wbuf, master, n, key)
    w = wbuf.f32[:n]
    a = acc[:n]
    t = tmp[:n]
    outs: list[Any] = []
    changed: list[int] = []
    for k in range(versions + 1):
        if k:
            a.fill(0)
            for s in range(STEPS):
                _fill_piece(nbuf, unit, n, [*key, k, s])
                z = nbuf.f32[:n]
                np.clip(z, -CLIP, CLIP, out=z)
                np.add(a, z, out=a)
            np.multiply(a, np.float32(lr), out=a)
            np.add(w, a, out=w)
        if out_dtype == "fp32":
            out = w.copy()
        else:  # bf16, round to nearest even: (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            u = w.view(np.uint32)
            np.right_shift(u, 16, out=t)
            np.bitwise_and(t, 1, out=t)
            np.add(t, 0x7FFF, out=t)
            np.add(t, u, out=t)
            np.right_shift(t, 16, out=t)
            out = np.empty(n, dtype=np.uint16)
            np.copyto(out, t, casting="unsafe")
        if outs:
            prev = outs[-1]
            a16 = prev.view(np.uint32 if out_dtype == "fp32" else np.uint16)
            b16 = out.view(np.uint32 if out_dtype == "fp32" else np.uint16)
            changed.append(int(np.count_nonzero(a16 != b16)))
        outs.append(out)
    return outs, changed


def child_gen(req: dict[str, Any]) -> dict[str, Any]:
    """Write v0..vN of one checkpoint in one pass (``req``: size, dtype, lr, seed, outs)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from bench.gen import _Buf, build_header

    t0 = time.perf_counter()
    specs = layout(int(req["size"]), req["dtype"])
    outs = [Path(p) for p in req["outs"]]
    versions = len(outs) - 1
    header = build_header(specs)
    jobs = []
    for ti, spec in enumerate(specs):
        for pi, start in enumerate(range(0, spec.numel, PIECE)):
            jobs.append((spec, min(PIECE, spec.numel - start), [int(req["seed"]), ti, pi]))
    workers = max(1, min(os.cpu_count() or 1, 4))
    free = [
        (_Buf(), _Buf(), np.empty(PIECE, np.float32), np.empty(PIECE, np.uint32))
        for _ in range(workers + 1)
    ]
    changed = [0] * versions
    values = 0
    files = [open(p, "wb") for p in outs]
    try:
        for fh in files:
            fh.write(header)
        inflight: deque[Any] = deque()
        it = iter(jobs)
        with ThreadPoolExecutor(workers) as ex:
            while True:
                while free:
                    job = next(it, None)
                    if job is None:
                        break
                    b = free.pop()
                    fut = ex.submit(
                        _gen_piece, b, *job, float(req["lr"]), versions, req["out_dtype"]
                    )
                    inflight.append((b, fut))
                if not inflight:
                    break
                b, fut = inflight.popleft()
                arrays, ch = fut.result()
                for fh, arr in zip(files, arrays, strict=True):
                    fh.write(memoryview(arr).cast("B"))
                values += len(arrays[0])
                changed = [c + d for c, d in zip(changed, ch, strict=True)]
                del arrays
                free.append(b)
    finally:
        for fh in files:
            fh.close()
    dt = time.perf_counter() - t0
    size = outs[0].stat().st_size
    return {
        "bytes": size,
        "tensors": len(specs),
        "values": values,
        "changed_fraction": [c / max(1, values) for c in changed],
        "seconds": dt,
        "mb_per_s": size * len(outs) / dt / 1e6,
    }


def child_init(req: dict[str, Any]) -> dict[str, Any]:
    import modelstore
    from modelstore.repository import Repository

    r = Repository.init(req["repo"], delta=req["delta"], delta_depth=req.get("depth"))
    try:
        return {
            "delta_depth": r.config.delta_depth,
            "features": list(r.config.incompat),
            "modelstore": str(Path(modelstore.__file__).parent),
        }
    finally:
        r.close()


def _chain_info(r: Any, rev: str) -> dict[str, Any]:
    """Codecs of the chunks of ``FILE`` in ``rev``, by raw bytes, and the deepest delta chain."""
    from modelstore.chunkstore import ChunkLoc
    from modelstore.compress import CODEC_DELTA, CODEC_NAMES, DELTA_HEAD, parse_delta

    m = r.file_manifest(rev, FILE)
    by_codec: dict[str, int] = {}
    depth_hist: dict[int, int] = {}
    chunks = 0
    with r.db.read() as txn:
        for cid, n in r.manifest_chunks(m):
            chunks += 1
            loc = r.store.locate(txn, cid)
            name = CODEC_NAMES.get(loc.codec, str(loc.codec))
            by_codec[name] = by_codec.get(name, 0) + n
            depth = 0
            if loc.codec == CODEC_DELTA:
                k = min(1 + DELTA_HEAD.size, loc.stored_len)
                head = r.store.read_stored(
                    ChunkLoc(loc.pack_id, loc.offset, k, loc.raw_len, loc.codec)
                )
                depth = parse_delta(memoryview(head)[1:]).depth
            depth_hist[depth] = depth_hist.get(depth, 0) + n
    return {
        "chunks": chunks,
        "raw_by_codec": by_codec,
        "raw_by_depth": {str(d): v for d, v in sorted(depth_hist.items())},
        "max_depth": max(depth_hist) if depth_hist else 0,
    }


def child_ingest(req: dict[str, Any]) -> dict[str, Any]:
    """Put ``src`` at REPO/FILE (hard link: a new inode), add + commit it; stats before/after."""
    from modelstore.repository import Repository

    repo = Path(req["repo"])
    dst = repo / FILE
    dst.unlink(missing_ok=True)
    os.link(req["src"], dst)
    r = Repository.open(repo)
    try:
        before = r.store.stats()
        os.sync()
        t0 = time.perf_counter()
        res = r.add([dst])
        t1 = time.perf_counter()
        cid = r.commit(req["msg"])
        t2 = time.perf_counter()
        after = r.store.stats()
        out = {
            "commit": cid.hex(),
            "bytes": dst.stat().st_size,
            "add_s": t1 - t0,
            "commit_s": t2 - t1,
            "seconds": t2 - t0,
            "new_bytes": res.get("new_bytes"),
            "stored_before": before.stored_bytes,
            "stored_after": after.stored_bytes,
            "added": after.stored_bytes - before.stored_bytes,
            "raw_added": after.raw_bytes - before.raw_bytes,
            "chunks_added": after.chunks - before.chunks,
            "pack_bytes": after.pack_bytes,
        }
        if req.get("chain", True):
            try:
                out["chain"] = _chain_info(r, cid.hex())
            except Exception as e:  # internals may move while the feature is being built
                out["chain"] = {"error": f"{type(e).__name__}: {e}"}
        return out
    finally:
        r.close()


def child_checkout(req: dict[str, Any]) -> dict[str, Any]:
    from modelstore.repository import Repository

    r = Repository.open(req["repo"])
    try:
        os.sync()
        t0 = time.perf_counter()
        r.checkout(req["rev"], to=req["to"])
        dt = time.perf_counter() - t0
    finally:
        r.close()
    return {"seconds": dt, "bytes": (Path(req["to"]) / FILE).stat().st_size}


CHILD_OPS = {
    "gen": child_gen,
    "init": child_init,
    "ingest": child_ingest,
    "checkout": child_checkout,
}


def child_main(arg: str) -> int:
    req = json.loads(arg)
    res = CHILD_OPS[req["op"]](req)
    Path(req["result"]).write_text(json.dumps(res))
    return 0


# ------------------------------------------------------------------------------------ parent


class ChildError(RuntimeError):
    pass


class Parent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="ms-bdelta-")).absolute()
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.snapshot_id = None
        if args.snapshot:
            snap = self.work / "ms-snapshot"
            shutil.rmtree(snap, ignore_errors=True)
            shutil.copytree(
                ROOT / "modelstore",
                snap / "modelstore",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            h = hashlib.sha256()
            for f in sorted(snap.rglob("*.py")):
                h.update(str(f.relative_to(snap)).encode() + b"\0" + f.read_bytes())
            self.snapshot_id = h.hexdigest()[:12]
            self.env["PYTHONPATH"] = f"{snap}{os.pathsep}{ROOT}"
            self.log(f"children run a snapshot of modelstore/ ({self.snapshot_id}) in {snap}")
        else:
            self.env["PYTHONPATH"] = str(ROOT)
        self.peak_rss: dict[str, int] = {}  # op -> KiB

    def log(self, msg: str) -> None:
        print(f"[bench_delta] {msg}", file=sys.stderr, flush=True)

    def child(self, op: str, **req: Any) -> dict[str, Any]:
        """Run one operation in a child process; its result, wall time and peak RSS."""
        fd, result = tempfile.mkstemp(prefix="res-", suffix=".json", dir=self.work)
        os.close(fd)
        req = {"op": op, "result": result, **req}
        argv = [sys.executable, "-m", "bench.bench_delta", "--child", json.dumps(req)]
        _reset_peak_rss()
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(
                # not cwd=ROOT: ``-m`` puts the cwd first on sys.path, ahead of the snapshot
                argv,
                cwd=self.work,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            text = err.read().decode(errors="replace")
        try:
            if p.returncode != 0:
                raise ChildError(f"child {op} exited {p.returncode}:\n{text}")
            res: dict[str, Any] = json.loads(Path(result).read_text())
        finally:
            Path(result).unlink(missing_ok=True)
        res["wall"] = wall
        res["rss_mb"] = ru.ru_maxrss / 1024
        key = "ingest" if op == "ingest" else op
        self.peak_rss[key] = max(self.peak_rss.get(key, 0), ru.ru_maxrss)
        return res

    def rss_floor(self) -> float:
        _reset_peak_rss()
        p = subprocess.Popen([sys.executable, "-c", "pass"], env=self.env)
        _, _, ru = os.wait4(p.pid, 0)
        return ru.ru_maxrss / 1024

    # -- pieces ---------------------------------------------------------------------------
    def generate(self, tag: str, size: int, dtype: str, lr: float, versions: int) -> list[Path]:
        d = self.work / "src" / tag
        d.mkdir(parents=True, exist_ok=True)
        outs = [d / f"v{k}.safetensors" for k in range(versions + 1)]
        info = self.child(
            "gen",
            size=size,
            dtype=dtype,
            out_dtype=dtype,
            lr=lr,
            seed=self.args.seed,
            outs=[str(p) for p in outs],
        )
        self.gen_info = info
        self.log(
            f"generated {tag}: {versions + 1} x {info['bytes'] / MiB:.0f} MiB in "
            f"{info['seconds']:.1f} s ({info['mb_per_s']:.0f} MB/s), values changed per "
            f"version {', '.join(f'{c:.3f}' for c in info['changed_fraction'])}, "
            f"rss {info['rss_mb']:.0f} MB"
        )
        return outs

    def init(self, path: Path, delta: bool) -> dict[str, Any]:
        shutil.rmtree(path, ignore_errors=True)
        return self.child("init", repo=str(path), delta=delta, depth=self.args.delta_depth)

    def ingest(self, repo: Path, src: Path, msg: str, chain: bool = True) -> dict[str, Any]:
        return self.child("ingest", repo=str(repo), src=str(src), msg=msg, chain=chain)

    def checkout(self, repo: Path, rev: str, src: Path) -> float:
        """Seconds of a checkout of ``rev`` into a new folder; the output is compared."""
        to = self.work / "out"
        shutil.rmtree(to, ignore_errors=True)
        res = self.child("checkout", repo=str(repo), rev=rev, to=str(to))
        same = subprocess.run(["cmp", "-s", str(to / FILE), str(src)]).returncode == 0
        shutil.rmtree(to, ignore_errors=True)
        if not same:
            raise ChildError(f"checkout of {rev} from {repo} differs from {src}")
        return float(res["seconds"])

    def cp(self, src: Path) -> tuple[float, float]:
        """(cp, cp + fsync) seconds for a fresh copy of ``src``."""
        dst = self.work / "cp.out"
        dst.unlink(missing_ok=True)
        os.sync()
        t0 = time.perf_counter()
        subprocess.run(["cp", str(src), str(dst)], check=True)
        t1 = time.perf_counter()
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        t2 = time.perf_counter()
        dst.unlink()
        return t1 - t0, t2 - t0

    # -- the main series ------------------------------------------------------------------
    def main_series(self) -> dict[str, Any]:
        a = self.args
        size = parse_size(a.size)
        srcs = self.generate("main", size, "bf16", a.lr, a.versions)
        gen = self.gen_info
        repos = {"delta": self.work / "r-delta", "plain": self.work / "r-plain"}
        cfg = {k: self.init(p, k == "delta") for k, p in repos.items()}
        self.log(f"children import modelstore from {cfg['delta']['modelstore']}")
        snap_v0: dict[str, Path] = {}
        per: dict[str, list[dict[str, Any]]] = {k: [] for k in repos}
        for v, src in enumerate(srcs):
            for kind, repo in repos.items():
                res = self.ingest(repo, src, f"v{v}")
                per[kind].append(res)
                ch = res.get("chain", {})
                self.log(
                    f"{kind:5} v{v}: +{res['added'] / MiB:7.1f} MiB in {res['seconds']:.1f} s "
                    f"({res['bytes'] / res['seconds'] / 1e6:.0f} MB/s), max depth "
                    f"{ch.get('max_depth')}, rss {res['rss_mb']:.0f} MB"
                )
                if v == 0 and a.repeat > 1:
                    snap_v0[kind] = self.work / f"{repo.name}.v0"
                    shutil.rmtree(snap_v0[kind], ignore_errors=True)
                    shutil.copytree(repo, snap_v0[kind], symlinks=True)
        rows = []
        for v in range(len(srcs)):
            d, p = per["delta"][v], per["plain"][v]
            rows.append(
                {
                    "version": v,
                    "changed_fraction": gen["changed_fraction"][v - 1] if v else None,
                    "plain_added": p["added"],
                    "delta_added": d["added"],
                    "ratio": d["added"] / p["added"] if p["added"] else None,
                    "delta": d,
                    "plain": p,
                }
            )
        # v1 ingest repeats, in copies of the repositories as they were after v0
        ingest_v1: dict[str, list[float]] = {k: [per[k][1]["seconds"]] for k in repos}
        for _ in range(a.repeat - 1):
            for kind in repos:
                tmp = self.work / f"r-{kind}.again"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(snap_v0[kind], tmp, symlinks=True)
                res = self.ingest(tmp, srcs[1], "v1", chain=False)
                ingest_v1[kind].append(res["seconds"])
                shutil.rmtree(tmp, ignore_errors=True)
        for pth in snap_v0.values():
            shutil.rmtree(pth, ignore_errors=True)
        # checkouts
        depths = [(r["delta"].get("chain", {}).get("max_depth") or 0, r["version"]) for r in rows]
        deepest = max(depths, key=lambda t: (t[0], -t[1]))[1]
        if not any(dd for dd, _ in depths):
            deepest = min(cfg["delta"]["delta_depth"], a.versions)
        commits = {k: [r["commit"] for r in per[k]] for k in repos}
        t: dict[str, list[float]] = {
            "cp": [],
            "cp_fsync": [],
            "delta_deepest": [],
            "delta_v0": [],
            "plain_deepest": [],
        }
        for _ in range(a.repeat):
            c, cf = self.cp(srcs[deepest])
            t["cp"].append(c)
            t["cp_fsync"].append(cf)
            t["delta_deepest"].append(
                self.checkout(repos["delta"], commits["delta"][deepest], srcs[deepest])
            )
            t["delta_v0"].append(self.checkout(repos["delta"], commits["delta"][0], srcs[0]))
            t["plain_deepest"].append(
                self.checkout(repos["plain"], commits["plain"][deepest], srcs[deepest])
            )
            if a.checkout_all:
                for v in range(1, len(srcs)):
                    if v != deepest:
                        t.setdefault(f"delta_v{v}", []).append(
                            self.checkout(repos["delta"], commits["delta"][v], srcs[v])
                        )
            self.log("checkout s: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in t.items() if v))
        nbytes = gen["bytes"]
        out = {
            "size": nbytes,
            "tensors": gen["tensors"],
            "versions": a.versions,
            "lr": a.lr,
            "dtype": "bf16",
            "delta_depth": cfg["delta"]["delta_depth"],
            "features": cfg,
            "generate": {k: gen[k] for k in ("seconds", "mb_per_s", "rss_mb", "changed_fraction")},
            "rows": rows,
            "deepest_version": deepest,
            "checkout_seconds": t,
            "checkout_gbs": {k: nbytes / statistics.median(v) / 1e9 for k, v in t.items()},
            "checkout_by_version": [
                {
                    "version": v,
                    "max_depth": rows[v]["delta"].get("chain", {}).get("max_depth"),
                    "gbs": nbytes / statistics.median(ts) / 1e9,
                }
                for v in range(len(srcs))
                for ts in [
                    t.get(
                        "delta_v0" if v == 0 else "delta_deepest" if v == deepest else f"delta_v{v}"
                    )
                ]
                if ts
            ],
            "ingest_v1_seconds": ingest_v1,
            "ingest_v1_mbs": {k: nbytes / statistics.median(v) / 1e6 for k, v in ingest_v1.items()},
        }
        shutil.rmtree(self.work / "src" / "main", ignore_errors=True)
        for pth in repos.values():
            shutil.rmtree(pth, ignore_errors=True)
        return out

    def sweep(self) -> list[dict[str, Any]]:
        a = self.args
        size = parse_size(a.sweep_size)
        out = []
        for dtype in a.sweep_dtypes:
            for lr in a.sweep_lrs:
                tag = f"sweep-{dtype}-{lr:g}"
                srcs = self.generate(tag, size, dtype, lr, 1)
                gen = self.gen_info
                res: dict[str, Any] = {"dtype": dtype, "lr": lr, "size": gen["bytes"]}
                for kind in ("delta", "plain"):
                    repo = self.work / f"{tag}-{kind}"
                    self.init(repo, kind == "delta")
                    v0 = self.ingest(repo, srcs[0], "v0", chain=False)
                    v1 = self.ingest(repo, srcs[1], "v1")
                    res[kind] = {
                        "v0_added": v0["added"],
                        "v1_added": v1["added"],
                        "v1_seconds": v1["seconds"],
                        "chain": v1.get("chain"),
                    }
                    shutil.rmtree(repo, ignore_errors=True)
                res["changed_fraction"] = gen["changed_fraction"][0]
                res["ratio"] = res["delta"]["v1_added"] / res["plain"]["v1_added"]
                res["plain_ratio"] = gen["bytes"] / res["plain"]["v1_added"]
                self.log(
                    f"sweep {dtype} lr {lr:g}: v1 delta/plain {res['ratio']:.3f} "
                    f"(changed {res['changed_fraction']:.3f})"
                )
                out.append(res)
                shutil.rmtree(self.work / "src" / tag, ignore_errors=True)
        return out

    def meta(self, rss_floor: float) -> dict[str, Any]:
        def git(*cmd: str) -> str:
            try:
                return subprocess.run(
                    ["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False
                ).stdout.strip()
            except OSError:
                return ""

        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "git_head": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--", "modelstore")),
            "snapshot_id": self.snapshot_id,
            "loadavg": os.getloadavg(),
            "rss_floor_mb": rss_floor,
            "peak_rss_mb": {k: v / 1024 for k, v in self.peak_rss.items()},
            "argv": sys.argv[1:],
            "piece_elems": PIECE,
            "steps_per_version": STEPS,
        }


# ---------------------------------------------------------------------------------- printing


def _mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def print_main(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Print the per-version table and the summary; return the PASS/MISS rows."""
    print(
        f"\nbench_delta: {m['size'] / MiB:.0f} MiB bf16 checkpoint ({m['tensors']} tensors), "
        f"v0 + {m['versions']} versions, every weight updated: {STEPS} steps of "
        f"lr {m['lr']:g} * clip(N(0,1), ±{CLIP:g}) per version; delta_depth {m['delta_depth']}\n"
    )
    head = (
        "| version | values changed | plain added MiB | delta added MiB | delta / plain "
        "| delta-coded (raw) | max chain | add+commit MB/s plain | delta |"
    )
    print(head)
    print("|" + "---|" * 9)
    for r in m["rows"]:
        d, p = r["delta"], r["plain"]
        ch = d.get("chain", {})
        share = ch.get("raw_by_codec", {}).get("delta", 0) / d["bytes"] if "chunks" in ch else None
        cf = "" if r["changed_fraction"] is None else f"{r['changed_fraction']:.3f}"
        print(
            f"| v{r['version']} | {cf} "
            f"| {_mib(r['plain_added'])} | {_mib(r['delta_added'])} | {r['ratio']:.3f} "
            f"| {'?' if share is None else f'{share:.3f}'} | {ch.get('max_depth', '?')} "
            f"| {p['bytes'] / p['seconds'] / 1e6:.0f} | {d['bytes'] / d['seconds'] / 1e6:.0f} |"
        )
    later = m["rows"][1:]
    ratios = [r["ratio"] for r in later]
    mean = statistics.mean(ratios) if ratios else float("nan")
    total = sum(r["delta_added"] for r in later) / max(1, sum(r["plain_added"] for r in later))
    total_all = sum(r["delta_added"] for r in m["rows"]) / max(
        1, sum(r["plain_added"] for r in m["rows"])
    )
    g = m["checkout_gbs"]
    ing = m["ingest_v1_mbs"]
    dv = m["deepest_version"]
    v1 = m["rows"][1]["ratio"] if len(m["rows"]) > 1 else float("nan")
    res = [
        {"row": "v1 stored, delta / plain", "value": v1, "target": f"<= {RATIO_TARGET}",
         "result": "PASS" if v1 <= RATIO_TARGET else "MISS"},
        {"row": f"v1..v{m['versions']} mean of per-version ratios (with keyframes)",
         "value": mean, "target": "", "result": "INFO"},
        {"row": f"v1..v{m['versions']} total delta / plain", "value": total, "target": "",
         "result": "INFO"},
        {"row": f"v0..v{m['versions']} whole store delta / plain", "value": total_all,
         "target": "", "result": "INFO"},
        {"row": f"checkout v{dv} (deepest chain) from the delta repo, GB/s",
         "value": g["delta_deepest"], "target": f">= {CHECKOUT_GBS}",
         "result": "PASS" if g["delta_deepest"] >= CHECKOUT_GBS else "MISS"},
        {"row": "checkout v0 (keyframe) from the delta repo, GB/s", "value": g["delta_v0"],
         "target": "", "result": "INFO"},
        {"row": f"checkout v{dv} from the plain repo, GB/s", "value": g["plain_deepest"],
         "target": "", "result": "INFO"},
        {"row": "cp + fsync of the same file, GB/s", "value": g["cp_fsync"], "target": "",
         "result": "baseline"},
        {"row": "cp (no fsync), GB/s", "value": g["cp"], "target": "", "result": "baseline"},
        {"row": "add+commit v1 with deltas, MB/s", "value": ing["delta"], "target": "",
         "result": "INFO"},
        {"row": "add+commit v1 without deltas, MB/s", "value": ing["plain"], "target": "",
         "result": "INFO"},
        {"row": "add+commit v1 speed, delta / plain", "value": ing["delta"] / ing["plain"],
         "target": "", "result": "INFO"},
    ]  # fmt: skip
    byv = m.get("checkout_by_version", [])
    if len(byv) > 2:
        print(
            "\ncheckout from the delta repo, GB/s by version (chain depth): "
            + ", ".join(f"v{c['version']} ({c['max_depth']}) {c['gbs']:.3f}" for c in byv)
        )
    print()
    print("| row | value | target | result |")
    print("|---|---|---|---|")
    for r in res:
        print(f"| {r['row']} | {r['value']:.3f} | {r['target']} | {r['result']} |")
    return res


def print_sweep(sw: list[dict[str, Any]]) -> None:
    if not sw:
        return
    print(f"\nsweep: v1 stored with deltas / without, {sw[0]['size'] / MiB:.0f} MiB files")
    lrs = sorted({r["lr"] for r in sw})
    print("| dtype | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
    print("|---|" + "---|" * len(lrs))
    for dt in dict.fromkeys(r["dtype"] for r in sw):
        cells = []
        for lr in lrs:
            r = next((x for x in sw if x["dtype"] == dt and x["lr"] == lr), None)
            cells.append(
                ""
                if r is None
                else f"{r['ratio']:.3f} (values changed {r['changed_fraction']:.2f})"
            )
        print(f"| {dt} | " + " | ".join(cells) + " |")


# -------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.bench_delta", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="1GiB", help="checkpoint size (default 1GiB)")
    ap.add_argument("--versions", type=int, default=6, help="versions after v0 (default 6)")
    ap.add_argument("--lr", type=float, default=1e-4, help="update size per step (1e-4)")
    ap.add_argument("--delta-depth", type=int, default=None, help="default: the repo default")
    ap.add_argument("--repeat", type=int, default=1, help="checkout/cp/v1-ingest runs (median)")
    ap.add_argument("--sweep-size", default="256MiB", help="sweep file size; 0 skips the sweep")
    ap.add_argument("--sweep-lrs", default="1e-5,1e-4,1e-3")
    ap.add_argument("--sweep-dtypes", default="bf16,fp32")
    ap.add_argument("--no-main", action="store_true", help="only the sweep")
    ap.add_argument(
        "--checkout-all", action="store_true", help="also check out every other delta version"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="scratch dir (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--no-snapshot", dest="snapshot", action="store_false")
    ap.add_argument("--json", default=None, help="write the results as JSON to this file")
    a = ap.parse_args(argv)
    if a.child:
        return child_main(a.child)
    a.sweep_lrs = [float(x) for x in a.sweep_lrs.split(",") if x.strip()]
    a.sweep_dtypes = [x.strip() for x in a.sweep_dtypes.split(",") if x.strip()]
    for dt in a.sweep_dtypes:
        if dt not in ("bf16", "fp32"):
            ap.error(f"--sweep-dtypes: {dt!r} (use bf16, fp32)")
    if a.versions < 1 or a.repeat < 1:
        ap.error("--versions and --repeat must be >= 1")
    par = Parent(a)
    t0 = time.perf_counter()
    rc = 0
    doc: dict[str, Any] = {}
    try:
        floor = par.rss_floor()
        if not a.no_main:
            doc["main"] = par.main_series()
            doc["main"]["wall_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        doc["sweep"] = par.sweep() if parse_size(a.sweep_size) > 0 else []
        doc["sweep_wall_s"] = time.perf_counter() - t1
        doc["meta"] = par.meta(floor)
        doc["meta"]["wall_s"] = time.perf_counter() - t0
        if "main" in doc:
            doc["summary"] = print_main(doc["main"])
            rc = 0
        print_sweep(doc["sweep"])
        pk = doc["meta"]["peak_rss_mb"]
        print(
            "\npeak RSS (MB): "
            + ", ".join(f"{k} {v:.0f}" for k, v in sorted(pk.items()))
            + f" (floor: python -c pass {floor:.0f}); wall {doc['meta']['wall_s']:.0f} s"
        )
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
            print(f"wrote {a.json}")
    except ChildError as e:
        print(str(e), file=sys.stderr)
        rc = 1
    finally:
        if not a.keep:
            shutil.rmtree(par.work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
