"""Tensor-aware chunking (issue 7 §1): bytes stored for edited copies of a bf16 checkpoint.

Commits a base checkpoint, then (a) a copy with one 8 MiB bf16 tensor inserted in the middle,
(b) a copy with tensors appended, (c) the base with its tensors in reverse order, each from the
base commit, and reports the bytes each adds to the store (``ChunkStore.stats().stored_bytes``)
against the issue's targets. Runs twice: tensor-aware chunking (the default) and plain CDC
(``tensor_aware=False``) as the baseline.

Usage: ``python -m bench.bench_tensor_dedup [--size 2GiB] [--repeats 1] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from bench.gen import MiB, TensorSpec, _Buf, _fill_piece, build_header, layout, parse_size
from modelstore.repository import Repository

INSERT_BYTES = 8 * MiB
#: targets: stored / raw size of the new tensors (a, b); stored / file size (c)
TARGETS = {"insert": 0.80, "append": 0.80, "reorder": 0.01}


def write_specs(path: Path, specs: Sequence[TensorSpec], seed: int = 0) -> int:
    """Write a safetensors file; a tensor's bytes depend only on (seed, its name)."""
    buf = _Buf()
    header = build_header(list(specs))
    total = len(header)
    with open(path, "wb") as fh:
        fh.write(header)
        for spec in specs:
            key = zlib.crc32(spec.name.encode())
            numel, done, piece = spec.numel, 0, 0
            while done < numel:
                n = min(4 * MiB, numel - done)
                fh.write(_fill_piece(buf, spec, n, [seed, key, piece]))
                done += n
                piece += 1
            total += spec.nbytes
    return total


def variants(size: int) -> dict[str, tuple[list[TensorSpec], int]]:
    """Tensor lists: base and the three edits, with the raw size of new tensors."""
    base = layout(size, "bf16")
    d = 2048
    ins = TensorSpec("inserted.weight", "bf16", (INSERT_BYTES // 2 // d, d), 0.02)
    mid = len(base) // 2
    app = [TensorSpec(f"appended.{i}.weight", "bf16", (1024, 2048), 0.02) for i in range(4)]
    return {
        "base": (base, 0),
        "insert": ([*base[:mid], ins, *base[mid:]], ins.nbytes),
        "append": ([*base, *app], sum(t.nbytes for t in app)),
        "reorder": (base[::-1], 0),
    }


def stored_bytes(repo: Repository) -> int:
    """Stored (compressed) bytes of all chunks in the repository."""
    return repo.store.stats().stored_bytes


def run_once(root: Path, size: int, tensor_aware: bool) -> dict[str, tuple[int, int, float]]:
    """{edit: (bytes added, reference size, seconds)} for one repository."""
    vs = variants(size)
    work = root / ("ta" if tensor_aware else "cdc")
    shutil.rmtree(work, ignore_errors=True)
    out: dict[str, tuple[int, int, float]] = {}
    with Repository.init(work, tensor_aware=tensor_aware) as r:
        ckpt = work / "model.safetensors"
        file_size = write_specs(ckpt, vs["base"][0])
        r.add([ckpt])
        r.commit("base")
        base_stored = stored_bytes(r)
        for name in ("insert", "append", "reorder"):
            specs, new_raw = vs[name]
            write_specs(ckpt, specs)
            before = stored_bytes(r)
            t0 = time.perf_counter()
            r.add([ckpt])
            dt = time.perf_counter() - t0
            added = stored_bytes(r) - before
            out[name] = (added, new_raw if new_raw else file_size, dt)
            write_specs(ckpt, vs["base"][0])  # each edit starts from the base
        out["base"] = (base_stored, file_size, 0.0)
    shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print ratios with PASS/MISS."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    root = Path(args.dir or tempfile.mkdtemp(prefix="ms-tdedup-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for aware in (True, False):
            runs = [run_once(root, size, aware) for _ in range(args.repeats)]
            label = "tensor-aware" if aware else "plain CDC"
            base_added, fsize, _ = runs[0]["base"]
            print(f"{label}: base {fsize / MiB:.0f} MiB stored {base_added / MiB:.1f} MiB")
            for name in ("insert", "append", "reorder"):
                ratio = statistics.median(r[name][0] / r[name][1] for r in runs)
                secs = statistics.median(r[name][2] for r in runs)
                added = statistics.median(r[name][0] for r in runs)
                ok = "PASS" if ratio <= TARGETS[name] else "MISS"
                ref = "new tensors" if name != "reorder" else "file"
                print(
                    f"  {name:8s} added {added / MiB:8.2f} MiB = {ratio:7.4f} x {ref} "
                    f"(target <= {TARGETS[name]}) {ok if aware else '(baseline)'}  add {secs:.1f}s"
                )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
