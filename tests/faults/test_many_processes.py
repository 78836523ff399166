"""Many processes on one repository: four writers on four branches, gc and a reader beside them.

A repository has one working tree and one staging index, and ``commit`` records that index on
the branch ``HEAD`` names: there is no worktree-less commit. Four processes that each commit
to their own branch therefore compose ``switch`` + write + ``add`` + ``commit`` under **one
hold of the writer lock** (``Repository.lock``, re-entrant for its thread, as a clean merge
composes stage + commit), so no other writer can switch the tree or restage the index in
between. Each writer measures how long it waited for the lock.

Meanwhile ``ms gc --prune-older-than 0`` runs in a loop (every writer stages a scratch file and
removes it again before committing, so there is always garbage, in packs shared with live
chunks, for gc to drop and repack), and a reader process that keeps one ``Repository`` open
reads every committed version of every branch again and again, byte by byte.

Also here: a writer SIGKILLed while it holds the lock mid-``add`` leaves no stale lock (the
kernel drops the ``flock``; only its pid note stays in the file), and the next writer proceeds
at once. Forked data-loader workers: ``tests/integration/test_concurrency.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelstore import Repository, api
from modelstore.chunker import splitmix64_bytes
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS
from tests.faults.crash_harness import MS, launch

pytestmark = pytest.mark.faults

WRITERS = 4
#: generous: no writer may time out; the waits actually seen are reported and bounded below it
LOCK_TIMEOUT = 120.0

#: file contents, shared by the writers, the reader and the final check
DATA = r"""
from modelstore.chunker import splitmix64_bytes

def numbered(k, i):
    return splitmix64_bytes(1000 * k + i, 30_000 + 9_000 * i)

def latest(k, i):
    base = splitmix64_bytes(77_000 + k, 150_000)
    return base[: 5_000 * i] + splitmix64_bytes(50_000 + 1000 * k + i, 4_000) + base[5_000 * i :]

def scratch(k, i):
    return splitmix64_bytes(90_000 + 1000 * k + i, 60_000)

def expected(k, i):
    files = {f"w{k}/f{j}.bin": numbered(k, j) for j in range(i + 1)}
    files[f"w{k}/latest.bin"] = latest(k, i)
    files["base.txt"] = b"shared by every branch\n"
    return files
"""

WRITER = DATA + r"""
import json, sys, time
from pathlib import Path
from modelstore import Repository, api

work, k, n, gc_count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
branch = f"w{k}"


def gc_runs() -> int:
    try:
        return int(gc_count.read_text() or 0)
    except (OSError, ValueError):
        return 0


with Repository.open(work) as r:
    for i in range(n):
        if i == n - 1:  # let gc finish a run over our garbage while we still write (else a
            want = max(gc_runs() + 1, 2)  # fast machine can finish before gc ever ran beside)
            deadline = time.monotonic() + 120
            while gc_runs() < want and time.monotonic() < deadline:
                time.sleep(0.05)
        t0 = time.monotonic()
        r.lock.acquire()  # one hold for switch + add + commit (the lock is re-entrant)
        waited = time.monotonic() - t0
        try:
            t1 = time.monotonic()
            api.switch(r, branch)
            d = work / branch
            d.mkdir(exist_ok=True)
            (d / f"f{i}.bin").write_bytes(numbered(k, i))
            (d / "latest.bin").write_bytes(latest(k, i))
            (d / "scratch.bin").write_bytes(scratch(k, i))
            r.add([str(d)])
            r.rm([str(d / "scratch.bin")])  # staged, then dropped: garbage for gc
            oid = r.commit(f"{branch} {i}")
            held = time.monotonic() - t1
        finally:
            r.lock.release()
        print(json.dumps({"i": i, "commit": oid.hex(), "waited": waited, "held": held}),
              flush=True)
"""

READER = DATA + r"""
import io, json, sys, time
from pathlib import Path
from modelstore import Repository
from modelstore.errors import RefNotFoundError

work, stop = Path(sys.argv[1]), Path(sys.argv[2])
rounds = files = busy = 0  # busy: rounds that read something while the others still ran
with Repository.open(work) as r:  # one handle for the whole run, as a training job keeps it
    while True:
        last = stop.exists()
        before = files
        for k in range(int(sys.argv[3])):
            try:
                history = list(r.log(f"w{k}"))
            except RefNotFoundError:
                continue
            for oid, c in history:
                if not c.message.startswith(f"w{k} "):
                    continue
                want = expected(k, int(c.message.split()[1]))
                got = r.commit_files(oid)
                assert set(got) == set(want), (c.message, sorted(got))
                for p, data in want.items():
                    out = io.BytesIO()
                    r.cat(oid.hex(), p, out)
                    assert out.getvalue() == data, f"{p} in {c.message} differs"
                    files += 1
        rounds += 1
        busy += files > before and not last
        if last:
            break
print(json.dumps({"rounds": rounds, "busy": busy, "files": files}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "MS_LOCK_TIMEOUT": str(LOCK_TIMEOUT)}


def _expected(k: int, i: int) -> dict[str, bytes]:
    ns: dict[str, object] = {}
    exec(DATA, ns)  # the same definitions the child processes run
    fn = ns["expected"]
    assert callable(fn)
    result: dict[str, bytes] = fn(k, i)
    return result


def _gc_loop(
    work: Path, stop: threading.Event, runs: list[dict[str, Any]], count: Path
) -> None:
    """Run ``ms gc --prune-older-than 0`` back to back until told to stop; ``count`` says how
    many runs finished, so the writers can wait for gc to have run beside them."""
    while not stop.is_set():
        t0 = time.monotonic()
        proc = subprocess.run([*MS, "gc", "-q", "--json", "--prune-older-than", "0"], cwd=work,
                              capture_output=True, text=True, env=_env(), timeout=300)
        run: dict[str, Any] = {"code": proc.returncode, "seconds": time.monotonic() - t0,
                                  "stderr": proc.stderr.strip()}
        if proc.returncode == 0:
            run.update(json.loads(proc.stdout))
        runs.append(run)
        count.write_text(str(len(runs)))


def test_four_writers_gc_and_a_reader_lose_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    r = Repository.init(work, chunker=SMALL_CHUNKS, pack_size=64 << 10)
    (work / "base.txt").write_bytes(b"shared by every branch\n")
    r.add([str(work / "base.txt")])
    base = r.commit("base")
    for k in range(WRITERS):
        api.branch_create(r, f"w{k}")
    r.close()
    n = 5
    stop_file = tmp_path / "stop-reading"
    gc_count = tmp_path / "gc-runs"
    t0 = time.monotonic()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(work), str(k), str(n),
                                 str(gc_count)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env()) for k in range(WRITERS)]
    reader = subprocess.Popen([sys.executable, "-c", READER, str(work), str(stop_file),
                               str(WRITERS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env())
    gc_runs: list[dict[str, Any]] = []
    stop_gc = threading.Event()
    gc_thread = threading.Thread(target=_gc_loop, args=(work, stop_gc, gc_runs, gc_count))
    gc_thread.start()
    try:
        outs = [w.communicate(timeout=240) for w in writers]
    finally:
        stop_gc.set()
        gc_thread.join(timeout=300)
        stop_file.touch()
    r_out, r_err = reader.communicate(timeout=240)
    elapsed = time.monotonic() - t0

    # every writer finished without a lock timeout and reported every commit
    reports: list[list[dict[str, float | int | str]]] = []
    for k, (w, (out, err)) in enumerate(zip(writers, outs, strict=True)):
        assert w.returncode == 0, f"writer {k}: {err}"
        reports.append([json.loads(line) for line in out.splitlines()])
        assert [x["i"] for x in reports[k]] == list(range(n)), out
    waits = [float(x["waited"]) for rep in reports for x in rep]
    helds = [float(x["held"]) for rep in reports for x in rep]
    assert reader.returncode == 0, f"reader: {r_err}"
    seen = json.loads(r_out)
    assert all(g["code"] == 0 for g in gc_runs), [g["stderr"] for g in gc_runs]
    collected = sum(int(g["chunks_dropped"]) for g in gc_runs)
    print(f"\n{WRITERS} writers x {n} commits, {len(gc_runs)} gc runs (dropped {collected} "
          f"chunks, rewrote {sum(int(g['packs_rewritten']) for g in gc_runs)} packs), "
          f"reader: {seen['busy']} rounds during the writes, {seen['files']} files checked; "
          f"lock wait max "
          f"{max(waits):.2f}s mean {sum(waits) / len(waits):.2f}s, hold max {max(helds):.2f}s; "
          f"{elapsed:.1f}s")
    assert len(gc_runs) >= 2 and collected > 0, gc_runs  # gc really ran beside the writers
    assert seen["busy"] >= 2  # the reader read committed versions while writers and gc ran
    # waits are bounded: well inside the timeout, and never longer than everyone else held the
    # lock in all (else it sat idle while a writer waited: a stale lock or a lost wake-up)
    assert max(waits) < LOCK_TIMEOUT / 2
    busy = sum(helds) + sum(float(g["seconds"]) for g in gc_runs)
    assert max(waits) <= busy + 1.0, (max(waits), busy)

    # no lost commit: each branch's history holds every commit its writer reported, in order,
    # each reading back exactly what was written
    with Repository.open(work) as r:
        for k, rep in enumerate(reports):
            history = [oid.hex() for oid, _ in r.log(f"w{k}")]
            assert history == [x["commit"] for x in reversed(rep)] + [base.hex()]
            for x in rep:
                cid = str(x["commit"])
                want = _expected(k, int(x["i"]))
                assert set(r.commit_files(bytes.fromhex(cid))) == set(want)
                for p, data in want.items():
                    assert _read(r, cid, p) == data
    proc = subprocess.run([*MS, "verify", "--read-data", "-q"], cwd=work, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _read(r: Repository, rev: str, path: str) -> bytes:
    import io

    out = io.BytesIO()
    r.cat(rev, path, out)
    return out.getvalue()


def test_writer_killed_holding_the_lock_leaves_no_stale_lock(tmp_path: Path) -> None:
    """SIGKILL ``ms add`` while it holds the lock and writes packs; the next writer goes on."""
    work = tmp_path / "w"
    r = Repository.init(work, chunker=SMALL_CHUNKS, pack_size=64 << 10)
    (work / "kept.bin").write_bytes(splitmix64_bytes(1, 200_000))
    r.add([str(work / "kept.bin")])
    kept = r.commit("kept")
    r.close()
    (work / "big.bin").write_bytes(splitmix64_bytes(2, 8 << 20))
    lock = work / ".ms" / "lock"
    proc, _ = launch(["add", "-q", "big.bin"], work, tmp_path / "add.log")
    try:
        # wait until it holds the lock and has finished packs on disk, but is not done
        deadline = time.monotonic() + 60
        packs = work / ".ms" / "packs"
        while time.monotonic() < deadline and proc.poll() is None:
            held = lock.exists() and f"pid {proc.pid} " in lock.read_text()
            if held and sum(1 for _ in packs.rglob("*.pack")) > 8:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "ms add finished before it could be killed: make it bigger"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the dead writer's note is still in the file, but the kernel released its flock
    assert f"pid {proc.pid} (ms add)" in lock.read_text()
    leftovers = list((work / ".ms" / "tmp").iterdir())
    with Repository.open(work) as r:
        assert all(p != "big.bin" for _, p in r.status().staged)  # its index txn never ran
        t0 = time.monotonic()
        with r.lock:  # default timeout 5 s in tests; it must not wait at all
            waited = time.monotonic() - t0
        assert waited < 1.0, f"waited {waited:.2f}s for a dead writer's lock"
        assert verify(r, read_data=True).ok
    # the next writer proceeds, cleans the dead one's temporary pack, and everything verifies
    env = {**os.environ, "MS_LOCK_TIMEOUT": "2"}
    for args in (["add", "-q", "big.bin"], ["commit", "-m", "after the kill", "--no-capture"]):
        done = subprocess.run([*MS, *args], cwd=work, capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
    assert not list((work / ".ms" / "tmp").iterdir())
    print(f"\nkilled holder pid {proc.pid}; its tmp/ leftovers {[p.name for p in leftovers]}; "
          f"next writer waited {waited * 1000:.1f} ms")
    with Repository.open(work) as r:
        assert _read(r, "HEAD", "big.bin") == (work / "big.bin").read_bytes()
        assert _read(r, kept.hex(), "kept.bin") == splitmix64_bytes(1, 200_000)
        assert verify(r, read_data=True).ok
    assert lock.read_text() == ""  # released cleanly this time: the note is truncated


def test_parallel_reads_over_more_packs_than_cached_descriptors(tmp_path: Path) -> None:
    """Threads reading chunks of 300 packs at random (the store caches 64 pack descriptors).

    A descriptor evicted by one thread while another was reading through it could be reused
    for another pack, so the reader got another pack's bytes ("bad codec tag"): a false
    corruption report from ``verify --read-data``, or a failed checkout.
    """
    import random

    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=16 << 10)
    (r.workdir / "d.bin").write_bytes(splitmix64_bytes(5, 5 << 20))
    r.add([str(r.workdir / "d.bin")])
    r.commit("many packs")
    with r.db.read() as txn:
        chunks = [bytes(k) for k in txn.keys("chunks")]
    assert sum(1 for _ in (r.ms_dir / "packs").rglob("*.pack")) > 256
    errors: list[BaseException] = []

    def read(seed: int) -> None:
        order = random.Random(seed).sample(chunks, len(chunks))
        try:
            for cid in order:
                r.store.read_chunk(cid)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    for _ in range(2):
        rep = verify(r, read_data=True)
        assert rep.ok, rep.problems[:3]
    r.close()
