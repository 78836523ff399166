"""Push and clone through a directory remote, against cp+sync measured in the same run.

    python -m bench.bench_remote [--size 2GiB] [--workdir DIR]

Rows: push of a new checkpoint (MB/s vs cp+sync), push of a second version with 10% of its
tensors changed (bytes sent as % of the file), a no-op push (wall time), and a clone of both
versions (MB/s vs cp+sync); each with the peak RSS of the ms process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gen import parse_size
from bench.run import _precompile, _reset_peak_rss


def timed(cwd: Path, *args: str) -> tuple[float, int, str]:
    """Wall seconds, the child's own peak RSS (KiB) and its stdout."""
    _reset_peak_rss()  # a child inherits the parent's high-water mark at exec otherwise
    t = time.perf_counter()
    p = subprocess.Popen(list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    out = p.stdout.read().decode() if p.stdout else ""
    err = p.stderr.read().decode() if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {err}")
    return wall, ru.ru_maxrss, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    _precompile()
    size = parse_size(args.size)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ms-remote-"))
    ms = [sys.executable, "-m", "modelstore.cli.main"]
    try:
        src = work / "v1.safetensors"
        # generate in child processes: numpy in this process would inflate children's peak RSS
        gen = [sys.executable, "-m", "bench.gen"]
        here = Path(__file__).resolve().parent.parent
        subprocess.run(
            [*gen, str(src), "--size", str(size), "--seed", "0"],
            check=True,
            cwd=here,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                *gen,
                str(work / "v2.safetensors"),
                "--size",
                str(size),
                "--seed",
                "0",
                "--change-fraction",
                "0.1",
            ],
            check=True,
            cwd=here,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["sync"], check=True)
        cp, _, _ = timed(work, "sh", "-c", f"cp {src} {work / 'cpcopy'} && sync")
        os.unlink(work / "cpcopy")
        repo = work / "r"
        timed(work, *ms, "init", str(repo))
        shutil.copyfile(src, repo / "model.safetensors")
        timed(repo, *ms, "add", "-q", "model.safetensors")
        timed(repo, *ms, "commit", "-m", "v1")
        timed(repo, *ms, "remote", "add", "origin", str(work / "remote"))
        subprocess.run(["sync"], check=True)
        p1, rss1, _ = timed(repo, "sh", "-c", " ".join(ms) + " push -q && sync")
        shutil.copyfile(work / "v2.safetensors", repo / "model.safetensors")
        timed(repo, *ms, "add", "-q", "model.safetensors")
        timed(repo, *ms, "commit", "-m", "v2")
        p2, rss2, out2 = timed(repo, *ms, "push", "--json")
        import json

        sent = json.loads(out2)["bytes"]
        p3, _, _ = timed(repo, *ms, "push", "-q")
        subprocess.run(["sync"], check=True)
        cl, rss4, _ = timed(
            work, "sh", "-c", " ".join(ms) + f" clone -q {work / 'remote'} {work / 'c'} && sync"
        )
        mb = size / 1e6
        rows = [
            ("cp+sync (baseline)", f"{mb / cp:,.0f} MB/s", ""),
            ("push new checkpoint + sync", f"{mb / p1:,.0f} MB/s", f"{cp / p1:.2f}x cp+sync"),
            (
                "push 10%-changed version: bytes sent",
                f"{100 * sent / size:.1f} % of file",
                "target <= 12 %",
            ),
            ("push 10%-changed version: wall", f"{p2:.2f} s", ""),
            ("no-op push", f"{p3 * 1000:.0f} ms", "target < 1 s"),
            (
                "clone (both versions) + sync",
                f"{mb / cl:,.0f} MB/s of file",
                f"{cp / cl:.2f}x cp+sync (target >= 0.8)",
            ),
            (
                "peak RSS push / push v2 / clone",
                f"{rss1 // 1024} / {rss2 // 1024} / {rss4 // 1024} MB",
                "target < 250 MB",
            ),
        ]
        for name, value, note in rows:
            print(f"{name:40} {value:>18}  {note}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
