"""Benchmark: single-core chunker throughput vs single-thread BLAKE3 on the same data.

Usage: python bench/bench_chunker.py [--size-mib 512] [--block-mib 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import blake3

try:
    from modelstore.chunker import Chunker, ChunkerParams
except ImportError:  # run from a checkout: python bench/bench_chunker.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from modelstore.chunker import Chunker, ChunkerParams


def fill_random(buf: bytearray) -> None:
    step = 64 << 20
    mv = memoryview(buf)
    for off in range(0, len(buf), step):
        n = min(step, len(buf) - off)
        mv[off : off + n] = os.urandom(n)


def run_chunker(data: memoryview, params: ChunkerParams, block: int) -> tuple[float, int]:
    c = Chunker(params)
    n_chunks = 0
    t0 = time.perf_counter()
    for off in range(0, len(data), block):
        n_chunks += len(c.feed(data[off : off + block]))
    if c.finish():
        n_chunks += 1
    return time.perf_counter() - t0, n_chunks


def run_blake3(data: memoryview, block: int) -> float:
    t0 = time.perf_counter()
    h = blake3.blake3(max_threads=1)
    for off in range(0, len(data), block):
        h.update(data[off : off + block])
    h.digest()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--block-mib", type=int, default=8, help="feed/update block size")
    ap.add_argument("--runs", type=int, default=3, help="best of N")
    args = ap.parse_args()

    size = args.size_mib << 20
    block = args.block_mib << 20
    params = ChunkerParams()
    buf = bytearray(size)
    fill_random(buf)
    data = memoryview(buf)

    # warm up: page in the buffer, the gear table, and both code paths
    run_chunker(data, params, block)
    run_blake3(data, block)

    t_cdc, n_chunks = min(run_chunker(data, params, block) for _ in range(args.runs))
    t_b3 = min(run_blake3(data, block) for _ in range(args.runs))

    gbs_cdc = size / t_cdc / 1e9
    gbs_b3 = size / t_b3 / 1e9
    print(f"data: {args.size_mib} MiB random, block {args.block_mib} MiB, best of {args.runs}")
    print(
        f"params: min={params.min_size} avg={params.avg_size} max={params.max_size} "
        f"({params.algorithm})"
    )
    print(f"{'':<22}{'GB/s':>8}")
    print(f"{'chunker (1 core)':<22}{gbs_cdc:>8.2f}")
    print(f"{'blake3 (1 thread)':<22}{gbs_b3:>8.2f}")
    print(f"{'ratio chunker/blake3':<22}{gbs_cdc / gbs_b3:>8.2f}")
    print(f"chunks: {n_chunks}, mean chunk size {size / max(n_chunks, 1) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
