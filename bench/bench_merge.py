"""Merge cost with big files: branches of a 2 GiB checkpoint that touched different files.

    python -m bench.bench_merge [--size 2GiB]

Prints the wall time of `ms merge` (a real three-way merge, not a fast-forward) next to the
`ms --version` start-up in the same run. The merge compares manifest ids only and writes just
the one small file that differs, so it should stay well under a second whatever the size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gen import parse_size, write_checkpoint


def ms(cwd: Path, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "modelstore.cli.main", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2GiB")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ms-merge-"))
    try:
        repo = work / "r"
        ms(work, "init", str(repo))
        write_checkpoint(repo / "a.safetensors", parse_size(args.size), seed=1)
        write_checkpoint(repo / "b.safetensors", parse_size(args.size), seed=2)
        ms(repo, "add", "-q", "a.safetensors", "b.safetensors")
        ms(repo, "commit", "-m", "base")
        ms(repo, "branch", "exp")
        (repo / "notes-main.txt").write_text("main\n")
        ms(repo, "add", "-q", "notes-main.txt")
        ms(repo, "commit", "-m", "main")
        ms(repo, "switch", "exp")
        (repo / "notes-exp.txt").write_text("exp\n")
        ms(repo, "add", "-q", "notes-exp.txt")
        ms(repo, "commit", "-m", "exp")
        ms(repo, "switch", "main")
        startup = min(ms(repo, "--version") for _ in range(5))
        t = ms(repo, "merge", "exp")
        print(
            f"merge of branches over 2 x {args.size} checkpoints: {t * 1000:.0f} ms "
            f"(ms --version: {startup * 1000:.0f} ms)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
