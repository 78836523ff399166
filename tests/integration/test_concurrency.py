"""Several real processes on one repository: no lost commit, writers wait, readers don't."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from modelstore import Repository
from modelstore.errors import LockTimeoutError
from modelstore.lock import RepoLock

WORKER = r"""
import sys
from pathlib import Path
from modelstore import Repository
work, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ids = []
for i in range(n):
    p = work / f"{tag}-{i}.bin"
    p.write_bytes((tag * 5000 + str(i)).encode())
    with Repository.open(work) as r:
        r.add([str(p)])
        ids.append(r.commit(f"{tag} {i}", allow_empty=True).hex())
print(" ".join(ids))
"""


def test_two_processes_committing_lose_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    Repository.init(work).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(work), tag, "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    made = {c for out, _ in outs for c in out.split()}
    assert len(made) == 12
    with Repository.open(work) as r:
        history = {oid.hex() for oid, _ in r.log()}
        files = r.commit_files(r.resolve("HEAD"))
    assert made <= history
    assert {f"{t}-{i}.bin" for t in "ab" for i in range(6)} <= set(files)


def test_second_writer_waits_then_times_out_naming_the_holder(tmp_path: Path) -> None:
    work = tmp_path / "w"
    Repository.init(work).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from modelstore.lock import RepoLock; "
            "l=RepoLock(__import__('pathlib').Path(sys.argv[1])); l.acquire(); "
            "print('held', flush=True); time.sleep(30)",
            str(work / ".ms" / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        lock = RepoLock(work / ".ms" / "lock", timeout=0.5)
        try:
            lock.acquire()
            raise AssertionError("lock should be held")
        except LockTimeoutError as exc:
            assert f"pid {holder.pid}" in exc.message
        assert time.monotonic() - t0 >= 0.5
        # a reader is not blocked by the writer lock
        (work / "x").write_text("x")
        with Repository.open(work) as r:
            assert r.status().untracked == ["x"]
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: no stale lock
    with RepoLock(work / ".ms" / "lock", timeout=2):
        pass


def test_forked_child_reads_with_an_inherited_repository(tmp_path: Path) -> None:
    """Data-loader style: open in the parent, use pools there, then read in forked workers."""
    import os

    work = tmp_path / "w"
    r = Repository.init(work, pack_size=1 << 16)
    data = bytes(range(256)) * 2000
    (work / "d.bin").write_bytes(data)
    r.add([str(work / "d.bin")])
    r.commit("c")
    import io

    out = io.BytesIO()
    r.cat("HEAD", "d.bin", out)  # the parent's thread pool and descriptors are now in use
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                buf = io.BytesIO()
                r.cat("HEAD", "d.bin", buf)
                with r.open_file("d.bin") as f:
                    f.seek(1000)
                    ok = f.read(10) == data[1000:1010]
                code = 0 if ok and buf.getvalue() == data else 2
            finally:
                os._exit(code)
        pids.append(pid)
    import signal

    deadline = time.monotonic() + 30
    codes = {}
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    for pid in pids:  # a child stuck on the parent's (unforked) threads would hang: kill it
        if pid not in codes:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert sorted(codes.values()) == [0] * len(pids), f"children hung or failed: {codes}"
    out2 = io.BytesIO()
    r.cat("HEAD", "d.bin", out2)  # the parent still works
    assert out2.getvalue() == data
    r.close()


#: the repository the data-loader workers inherit (set in the parent before the pool forks)
_LOADER: dict[str, Repository] = {}


def _load(job: tuple[str, str, str, str, int, int]) -> tuple[int, bytes]:
    """One data-loader work item, run in a forked worker through the inherited repository."""
    import os

    r = _LOADER["repo"]
    kind, rev, path, name, off, n = job
    if kind == "tensor":
        return os.getpid(), r.load_tensor(rev, path, name).tobytes()
    if kind == "range":
        with r.open_file(path, rev) as f:
            f.seek(off)
            return os.getpid(), f.read(n)
    import io

    out = io.BytesIO()
    r.cat(rev, path, out)
    return os.getpid(), out.getvalue()


def test_data_loader_workers_forked_from_a_busy_parent_read_identical_bytes(
    tmp_path: Path,
) -> None:
    """As a torch DataLoader does: open in the parent, fork 4 pool workers, read tensors.

    The parent keeps a reader thread busy on the same repository while the pool forks (a
    pin-memory thread), and reads again afterwards; every worker result is byte-identical to
    the arrays that were written, and several workers took part.
    """
    import io
    import multiprocessing
    import threading

    import numpy as np
    from safetensors.numpy import save_file

    from tests.conftest import SMALL_CHUNKS

    work = tmp_path / "w"
    r = Repository.init(work, chunker=SMALL_CHUNKS, pack_size=32 << 10)
    rng = np.random.default_rng(7)
    versions = []
    for v in range(2):
        arrays = {f"layer{i}.weight": rng.standard_normal((64, 48 + i)).astype(np.float32)
                  for i in range(6)}
        save_file(arrays, str(work / "model.safetensors"))
        (work / "data.bin").write_bytes(bytes(rng.integers(0, 256, 300_000, dtype=np.uint8)))
        r.add([str(work / "model.safetensors"), str(work / "data.bin")])
        versions.append((r.commit(f"v{v}").hex(), arrays, (work / "data.bin").read_bytes()))
    jobs: list[tuple[str, str, str, str, int, int]] = []
    want: list[bytes] = []
    for rev, arrays, data in versions:
        for name, a in arrays.items():
            jobs.append(("tensor", rev, "model.safetensors", name, 0, 0))
            want.append(a.tobytes())
        for off in range(0, len(data), 37_000):
            jobs.append(("range", rev, "data.bin", "", off, 5_000))
            want.append(data[off : off + 5_000])
        jobs.append(("cat", rev, "data.bin", "", 0, 0))
        want.append(data)
    assert r.load_tensor("HEAD", "model.safetensors", "layer0.weight").shape == (64, 48)
    _LOADER["repo"] = r
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy() -> None:  # keeps transactions and pool reads going while the parent forks
        try:
            while not stop.is_set():
                out = io.BytesIO()
                r.cat(versions[0][0], "data.bin", out)
                assert out.getvalue() == versions[0][2]
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=busy)
    t.start()
    try:
        with multiprocessing.get_context("fork").Pool(4) as pool:
            got = pool.map_async(_load, jobs, chunksize=1).get(timeout=60)
    finally:
        stop.set()
        t.join()
        _LOADER.clear()
    assert not errors, errors
    assert [b for _, b in got] == want
    assert len({pid for pid, _ in got}) >= 2  # the work was spread over forked workers
    out = io.BytesIO()
    r.cat(versions[1][0], "data.bin", out)  # the parent still works
    assert out.getvalue() == versions[1][2]
    r.close()
