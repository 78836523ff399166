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
