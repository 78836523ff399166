"""``ms gc`` on a generated repository: wall time, bytes reclaimed, repack rate, peak RSS.

    python -m bench.bench_gc [--size 1GiB] [--workdir DIR]

The repository (``--size`` of checkpoint-like data in all):

- ``main``: ``model.safetensors`` (half of ``--size``), committed;
- branch ``exp``: 48 shards cut from another checkpoint (3/8 of ``--size``), added in one
  ``ms add``, so each 64 MiB pack holds several shards;
- ``main`` again: every third shard copied in and committed (deduplicated: its chunks stay in
  exp's packs);
- ``exp`` deleted.

``gc --expire-reflog now --prune-older-than 0`` then deletes two thirds of the shards: exp's
packs are about one third live, so they are rewritten (the live chunks copied, verified, into
new packs) rather than deleted. Rows: the dry run, the gc (MB/s of live data repacked), bytes
reclaimed against what was dropped, a second gc (nothing left to do), and ``verify
--read-data`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gen import parse_size
from bench.run import _precompile, _reset_peak_rss

SHARDS = 48


def timed(cwd: Path, *args: str) -> tuple[float, int, str]:
    """Wall seconds, the child's own peak RSS (KiB) and its stdout (small: JSON or a line)."""
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


def generate(path: Path, size: int, seed: int) -> None:
    here = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "bench.gen", str(path), "--size", str(size), "--seed", str(seed)],
        check=True,
        cwd=here,
        stdout=subprocess.DEVNULL,
    )


def split(src: Path, dest: Path, n: int) -> list[Path]:
    """Cut ``src`` into ``n`` files of equal size (the last takes the rest)."""
    dest.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    step = size // n
    out = []
    with open(src, "rb") as f:
        for i in range(n):
            p = dest / f"shard_{i:02d}.bin"
            want = step if i < n - 1 else size - step * (n - 1)
            with open(p, "wb") as g:
                while want:
                    block = f.read(min(want, 8 << 20))
                    g.write(block)
                    want -= len(block)
            out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    _precompile()
    size = parse_size(args.size)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ms-gc-"))
    ms = [sys.executable, "-m", "modelstore.cli.main"]
    try:
        repo = work / "r"
        repo.mkdir(parents=True)
        generate(repo / "model.safetensors", size // 2, 0)
        generate(work / "exp.safetensors", size * 3 // 8, 1)
        shards = split(work / "exp.safetensors", work / "shards", SHARDS)
        os.unlink(work / "exp.safetensors")
        timed(repo, *ms, "init", ".")
        timed(repo, *ms, "add", "-q", "model.safetensors")
        timed(repo, *ms, "commit", "-m", "base")
        timed(repo, *ms, "switch", "-c", "exp")
        shutil.copytree(work / "shards", repo / "shards")
        timed(repo, *ms, "add", "-q", "shards")
        timed(repo, *ms, "commit", "-m", "shards")
        timed(repo, *ms, "switch", "main")
        (repo / "kept").mkdir()
        kept = shards[::3]
        for p in kept:
            shutil.copyfile(p, repo / "kept" / p.name)
        timed(repo, *ms, "add", "-q", "kept")
        timed(repo, *ms, "commit", "-m", "keep a third")
        timed(repo, *ms, "branch", "-D", "exp")
        subprocess.run(["sync"], check=True)
        du_before = _du(repo / ".ms")
        gc = [*ms, "gc", "--json", "--expire-reflog", "now", "--prune-older-than", "0"]
        dry_s, _, dry_out = timed(repo, *gc, "--dry-run")
        gc_s, gc_rss, out = timed(repo, *gc)
        res = json.loads(out)
        subprocess.run(["sync"], check=True)
        du_after = _du(repo / ".ms")
        again_s, _, again = timed(repo, *gc)
        ver_s, _, _ = timed(repo, *ms, "verify", "--read-data")
        dropped = sum(p.stat().st_size for p in shards) - sum(p.stat().st_size for p in kept)
        mb = 1e6
        rows = [
            ("data in the repository", f"{(size // 2 + size * 3 // 8) / mb:,.0f} MB", ""),
            (
                "gc --dry-run",
                f"{dry_s:.2f} s",
                f"predicts {json.loads(dry_out)['bytes_reclaimed'] / mb:,.0f} MB",
            ),
            ("gc", f"{gc_s:.2f} s", f"peak RSS {gc_rss // 1024} MB"),
            (
                "  packs deleted / rewritten / written",
                f"{res['packs_deleted']} / {res['packs_rewritten']} / {res['packs_written']}",
                "",
            ),
            (
                "  live data repacked",
                f"{res['bytes_repacked'] / mb:,.0f} MB",
                f"{res['bytes_repacked'] / mb / res['seconds']:,.0f} MB/s over gc's own "
                f"{res['seconds']:.2f} s (start-up excluded)",
            ),
            (
                "  bytes reclaimed",
                f"{res['bytes_reclaimed'] / mb:,.0f} MB",
                f"dropped shards: {dropped / mb:,.0f} MB; du .ms: "
                f"{du_before / mb:,.0f} -> {du_after / mb:,.0f} MB",
            ),
            (
                "gc again (nothing to do)",
                f"{again_s:.2f} s",
                f"reclaimed {json.loads(again)['bytes_reclaimed']} B",
            ),
            ("verify --read-data afterwards", f"{ver_s:.2f} s", "ok"),
        ]
        for name, value, note in rows:
            print(f"{name:40} {value:>18}  {note}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
