"""Benchmark: the byte-plane codec against zstd level 1 on generated float weights, per core.

Usage: ``python -m bench.bench_codec [--size 256MiB] [--dtypes bf16,fp16,fp32] [--repeat 5]
[--other 64MiB] [--e2e 1GiB] [--json OUT]``

For each dtype a ``bench.gen`` checkpoint (normal weights, same seed) is cut by the real
chunker, then every chunk is compressed and decompressed on one thread, as ingest and checkout
do per worker:

- ``zstd-1``: every chunk through zstd level 1 (the baseline: ``ms`` before the plane codec
  compressed float chunks exactly so);
- ``planes``: the ingest path of a repository with ``codec-planes-v1`` (``CodecChooser``, one
  per 8 MiB block as in ``ChunkStore._process_block``: estimates, plane or zstd, kept if it
  pays).

Speeds are bytes of raw chunk per second of this thread's CPU time (``time.thread_time``),
median of ``--repeat`` runs with the min-max spread: other processes on a shared 2-core
machine stretch wall time, far less CPU time. Compression is timed per chunk right after the
chunk was hashed (untimed), as an ingest worker does; decompression over the stored payloads
in order. A memcpy and a BLAKE3 pass over the same chunks are measured in the same run.
``--other`` measures what the estimate costs on data that is not floats (random bytes,
CSV-like text): CPU of the ingest codec path with and without the plane codec.
``--e2e SIZE`` also times ``ms init; ms add; ms commit; sync`` of a bf16 checkpoint in
repositories with and without the codec (wall, alternating, medians), with ``cp + sync`` of
the same file as the baseline, and reports the repositories' sizes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from blake3 import blake3

from bench.gen import parse_size, write_checkpoint
from modelstore.chunker import Chunker, ChunkerParams
from modelstore.compress import (
    CODEC_PLANES,
    CODEC_ZSTD,
    ZSTD_LEVEL,
    CodecChooser,
    decompress_chunk,
    estimate_planes,
)

#: the issue's targets (issue 7 §2), per core
RATIO_TARGET = {"bf16": 1.40, "fp32": 1.15}
COMPRESS_GBS = 0.8
DECOMPRESS_GBS = 1.5
BLOCK = 8 << 20  # ChunkStore ingest block: one CodecChooser per block

Chunks = list[tuple[int, int]]


def cut(data: memoryview) -> Chunks:
    """Chunk boundaries from the real chunker, fed in ingest-sized blocks."""
    c = Chunker(ChunkerParams())
    ends: list[int] = []
    for off in range(0, len(data), BLOCK):
        ends.extend(off + e for e in c.feed(data[off : off + BLOCK]))
    if c.finish():
        ends.append(len(data))
    starts = [0, *ends[:-1]]
    return list(zip(starts, ends, strict=True))


def cpu(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """CPU seconds of this thread for each of ``repeat`` runs, and the last result."""
    times: list[float] = []
    out: Any = None
    for _ in range(repeat):
        t0 = time.thread_time()
        out = fn()
        times.append(time.thread_time() - t0)
    return times, out


def gbs(nbytes: int, times: list[float]) -> dict[str, float]:
    """Median and spread of a throughput in GB/s."""
    rates = sorted(nbytes / t / 1e9 for t in times if t > 0)
    return {"median": statistics.median(rates), "min": rates[0], "max": rates[-1]}


def ingest_codec(data: memoryview, chunks: Chunks, planes: bool) -> list[tuple[int, Any]]:
    """What ``ChunkStore._process_block`` does for new chunks: one chooser per block."""
    out: list[tuple[int, Any]] = []
    chooser = CodecChooser(planes)
    block = 0
    for s, e in chunks:
        if e // BLOCK != block:
            block, chooser = e // BLOCK, CodecChooser(planes)
        out.append(chooser.compress(data[s:e], s))
    return out


def zstd_all(data: memoryview, chunks: Chunks) -> list[tuple[int, Any]]:
    """Baseline: every chunk through zstd level 1, no probe."""
    import zstandard

    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False)
    return [(CODEC_ZSTD, z.compress(data[s:e])) for s, e in chunks]


def warm_compress(
    data: memoryview, chunks: Chunks, planes: bool | None
) -> tuple[float, list[tuple[int, Any]]]:
    """CPU seconds of compressing each chunk right after hashing it, as ingest does.

    A worker hashes a chunk and then compresses the same bytes, which are in cache by then;
    only the compression is timed. ``planes=None``: the zstd-1 baseline.
    """
    import zstandard

    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False)
    out: list[tuple[int, Any]] = []
    chooser = CodecChooser(bool(planes))
    block = 0
    spent = 0.0
    clock = time.thread_time
    for s, e in chunks:
        if e // BLOCK != block:
            block, chooser = e // BLOCK, CodecChooser(bool(planes))
        piece = data[s:e]
        blake3(piece).digest()
        t0 = clock()
        got = (CODEC_ZSTD, z.compress(piece)) if planes is None else chooser.compress(piece, s)
        out.append(got)
        spent += clock() - t0
    return spent, out


def hash_all(data: memoryview, chunks: Chunks) -> list[bytes]:
    return [blake3(data[s:e]).digest() for s, e in chunks]


def decode_all(chunks: Chunks, stored: list[tuple[int, Any]]) -> int:
    n = 0
    for (s, e), (codec, payload) in zip(chunks, stored, strict=True):
        n += len(decompress_chunk(codec, payload, e - s))
    return n


def measure(data: memoryview, chunks: Chunks, repeat: int) -> dict[str, Any]:
    """Ratio and per-core speeds of zstd-1 and the plane codec on one buffer.

    The runs are interleaved (memcpy, BLAKE3, zstd-1, planes, in turn, ``repeat`` times), so
    that load from other processes hits both codecs alike; ``paired`` is the median of the
    per-round speed ratios planes / zstd-1.
    """
    total = len(data)
    codecs: dict[str, bool | None] = {"zstd-1": None, "planes": True}
    t: dict[str, list[float]] = {
        k: [] for k in ("memcpy", "blake3", "zstd-1 c", "zstd-1 d", "planes c", "planes d")
    }
    stored: dict[str, list[tuple[int, Any]]] = {}
    for i in range(repeat):
        t["memcpy"] += cpu(lambda: [bytes(data[s:e]) for s, e in chunks], 1)[0]
        t["blake3"] += cpu(functools.partial(hash_all, data, chunks), 1)[0]
        for name in list(codecs) if i % 2 == 0 else list(codecs)[::-1]:
            tc, stored[name] = warm_compress(data, chunks, codecs[name])
            td, _ = cpu(functools.partial(decode_all, chunks, stored[name]), 1)
            t[f"{name} c"].append(tc)
            t[f"{name} d"] += td
    res: dict[str, Any] = {
        "bytes": total,
        "chunks": len(chunks),
        "memcpy": gbs(total, t["memcpy"]),
        "blake3": gbs(total, t["blake3"]),
    }
    for name, st in stored.items():
        for (s, e), (codec, payload) in zip(chunks, st, strict=True):
            if decompress_chunk(codec, bytes(payload), e - s) != data[s:e]:
                raise AssertionError(f"{name}: chunk at {s} does not round-trip")
        counts: dict[int, int] = {}
        for codec, _ in st:
            counts[codec] = counts.get(codec, 0) + 1
        res[name] = {
            "ratio": total / sum(len(p) + 1 for _, p in st),  # + the tag byte
            "compress": gbs(total, t[f"{name} c"]),
            "decompress": gbs(total, t[f"{name} d"]),
            "codecs": counts,
        }
    for k in ("c", "d"):
        pairs = [z / p for z, p in zip(t[f"zstd-1 {k}"], t[f"planes {k}"], strict=True)]
        res["planes"]["paired_compress" if k == "c" else "paired_decompress"] = statistics.median(
            pairs
        )
    return res


def other_data(size: int, repeat: int) -> dict[str, Any]:
    """CPU of the ingest codec path on non-float data, with and without the plane codec."""
    rng = np.random.default_rng(5)
    rnd = memoryview(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    rows = rng.standard_normal((size // 48 + 1, 3))
    lines = [
        f"{i},{a:.6f},{b:.4e},{c:.3f},layer.{i % 48}.mlp\n".encode()
        for i, (a, b, c) in enumerate(rows.tolist())
    ]
    text = memoryview(b"".join(lines)[:size])
    out: dict[str, Any] = {}
    for name, data in (("random", rnd), ("text", text)):
        chunks = cut(data)
        t: dict[str, list[float]] = {"zstd only": [], "with planes": [], "blake3": []}
        ratio: dict[str, float] = {}
        labels = ["zstd only", "with planes"]
        for i in range(repeat):  # interleaved, like measure()
            for label in labels if i % 2 == 0 else labels[::-1]:
                planes = label == "with planes"
                dt, stored = cpu(functools.partial(ingest_codec, data, chunks, planes), 1)
                t[label] += dt
                ratio[label] = len(data) / sum(len(p) + 1 for _, p in stored)
            t["blake3"] += cpu(functools.partial(hash_all, data, chunks), 1)[0]
        row: dict[str, Any] = {}
        for label in ("zstd only", "with planes"):
            row[label] = {
                "cpu_s_per_gb": statistics.median(t[label]) / len(data) * 1e9,
                "spread": [min(t[label]) / len(data) * 1e9, max(t[label]) / len(data) * 1e9],
                "ratio": ratio[label],
            }
        row["blake3_cpu_s_per_gb"] = statistics.median(t["blake3"]) / len(data) * 1e9
        pairs = [b / a for a, b in zip(t["zstd only"], t["with planes"], strict=True)]
        # ingest hashes each chunk and the whole file: that, plus the codec, is its CPU per byte
        a = row["zstd only"]["cpu_s_per_gb"]
        row["overhead_pct_of_codec"] = 100 * (statistics.median(pairs) - 1)
        row["overhead_pct_of_ingest_cpu"] = (
            row["overhead_pct_of_codec"] * a / (a + 2 * row["blake3_cpu_s_per_gb"])
        )
        out[name] = row
    sample = memoryview(bytes(rnd[:4096]))
    n = 2000
    t0 = time.thread_time()
    for _ in range(n):
        estimate_planes(sample)
    out["estimate_us"] = (time.thread_time() - t0) / n * 1e6
    import zstandard

    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    t0 = time.thread_time()
    for _ in range(n):
        z.compress(sample)
    out["zstd_probe_us"] = (time.thread_time() - t0) / n * 1e6
    return out


def _ms() -> str:
    cand = Path(sys.executable).parent / "ms"
    return str(cand) if cand.exists() else (shutil.which("ms") or "ms")


def _wall(argv: list[str], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def end_to_end(src: Path, work: Path, repeat: int) -> dict[str, Any]:
    """``ms add`` + commit + sync of ``src`` into fresh repositories, with and without planes."""
    ms = _ms()
    size = src.stat().st_size
    walls: dict[str, list[float]] = {"cp+sync": [], "zstd": [], "planes": []}
    sizes: dict[str, int] = {}
    for i in range(repeat):
        os.sync()
        dst = work / "copy.bin"
        walls["cp+sync"].append(_wall(["sh", "-c", f"cp {src} {dst} && sync"]))
        dst.unlink()
        for mode in ("zstd", "planes") if i % 2 == 0 else ("planes", "zstd"):
            repo = work / f"repo-{mode}"
            shutil.rmtree(repo, ignore_errors=True)
            flag = "--float-codec" if mode == "planes" else "--no-float-codec"
            subprocess.run([ms, "init", flag, str(repo)], check=True, stdout=subprocess.DEVNULL)
            os.link(src, repo / "model.safetensors")
            os.sync()
            t = _wall([ms, "add", "-q", "model.safetensors"], repo)
            t += _wall([ms, "commit", "-m", "v1"], repo)
            t += _wall(["sync"])
            walls[mode].append(t)
            sizes[mode] = _du(repo / ".ms")
    out: dict[str, Any] = {"bytes": size}
    for k, v in walls.items():
        out[k] = {
            "mb_s": size / statistics.median(v) / 1e6,
            "spread": [size / max(v) / 1e6, size / min(v) / 1e6],
        }
    for mode in ("zstd", "planes"):
        out[mode]["repo_bytes"] = sizes[mode]
        out[mode]["vs_cp"] = out[mode]["mb_s"] / out["cp+sync"]["mb_s"]
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: dict[str, Any]) -> None:
    """Print the tables."""
    print(f"\nper core (CPU time of one thread), median of {results['repeat']} [min-max]\n")
    head = (
        f"{'dtype':<6}{'zstd-1 ratio':>13}{'planes ratio':>13}{'target':>8}  "
        f"{'compress GB/s':>24}  {'decompress GB/s':>24}  result"
    )
    print(head)
    print("-" * len(head))
    for dtype, r in results["dtypes"].items():
        z, p = r["zstd-1"], r["planes"]
        target = RATIO_TARGET.get(dtype)
        ok_ratio = target is None or p["ratio"] >= target
        ok_c = p["compress"]["median"] >= COMPRESS_GBS
        ok_d = p["decompress"]["median"] >= DECOMPRESS_GBS

        def sp(x: dict[str, float]) -> str:
            return f"{x['median']:.2f} [{x['min']:.2f}-{x['max']:.2f}]"

        print(
            f"{dtype:<6}{z['ratio']:>13.3f}{p['ratio']:>13.3f}"
            f"{(f'{target:.2f}' if target else '-'):>8}  {sp(p['compress']):>24}  "
            f"{sp(p['decompress']):>24}  "
            f"ratio {_verdict(ok_ratio)}, comp {_verdict(ok_c)}, decomp {_verdict(ok_d)}"
        )
        print(
            f"{'':<6}{'baselines same run:':>26}{'':>8}  zstd-1 {sp(z['compress']):>17}  "
            f"zstd-1 {sp(z['decompress']):>17}  memcpy {r['memcpy']['median']:.1f}, "
            f"BLAKE3 {r['blake3']['median']:.2f} GB/s"
        )
        print(
            f"{'':<6}{'planes / zstd-1 speed:':>26}{'':>8}  {p['paired_compress']:>24.2f}  "
            f"{p['paired_decompress']:>24.2f}  (median of paired runs)"
        )
    if "other" in results:
        o = results["other"]
        print(
            f"\nnon-float data, ingest codec path CPU s/GB (median): estimate "
            f"{o['estimate_us']:.1f} us per 4 KiB sample vs zstd probe {o['zstd_probe_us']:.1f} us"
        )
        for name in ("random", "text"):
            r = o[name]
            print(
                f"  {name:<7} zstd only {r['zstd only']['cpu_s_per_gb']:.3f}  with planes "
                f"{r['with planes']['cpu_s_per_gb']:.3f}  (+{r['overhead_pct_of_codec']:.1f}% of "
                f"the codec, +{r['overhead_pct_of_ingest_cpu']:.1f}% of ingest CPU with hashing)"
                f"  ratio {r['zstd only']['ratio']:.3f} / {r['with planes']['ratio']:.3f}"
            )
    if "e2e" in results:
        e = results["e2e"]
        gib = e["bytes"] / 2**30
        print(f"\nend to end: ms init; add; commit; sync of a {gib:.2f} GiB bf16 file")
        for k in ("cp+sync", "zstd", "planes"):
            r = e[k]
            extra = (
                f"  {r['vs_cp']:.2f}x cp+sync, .ms {r['repo_bytes'] / 2**20:.0f} MiB"
                if k != "cp+sync"
                else ""
            )
            lo, hi = r["spread"]
            print(f"  {k:<8} {r['mb_s']:7.0f} MB/s [{lo:.0f}-{hi:.0f}]{extra}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_codec", description=__doc__)
    ap.add_argument("--size", default="256MiB", help="checkpoint size per dtype")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--other", default="64MiB", help="size of the non-float runs (0: skip)")
    ap.add_argument("--e2e", default="0", help="size of the end-to-end add run (0: skip)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, metavar="OUT")
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="ms-bench-codec-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"repeat": a.repeat, "dtypes": {}}
    try:
        for dtype in a.dtypes.split(","):
            path = work / f"{dtype}.safetensors"
            write_checkpoint(path, parse_size(a.size), dtype=dtype, seed=a.seed)
            data = memoryview(path.read_bytes())
            path.unlink()
            r = measure(data, cut(data), a.repeat)
            results["dtypes"][dtype] = r
            print(
                f"{dtype}: {r['bytes'] / 2**20:.0f} MiB, {r['chunks']} chunks; "
                f"zstd-1 {r['zstd-1']['ratio']:.3f}, planes {r['planes']['ratio']:.3f} "
                f"(codecs {r['planes']['codecs']})",
                flush=True,
            )
            del data
        if parse_size(a.other):
            results["other"] = other_data(parse_size(a.other), a.repeat)
        if parse_size(a.e2e):
            src = work / "e2e.safetensors"
            write_checkpoint(src, parse_size(a.e2e), dtype="bf16", seed=a.seed)
            results["e2e"] = end_to_end(src, work, max(3, a.repeat // 2))
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    planes_used = all(
        r["planes"]["codecs"].get(CODEC_PLANES, 0) for r in results["dtypes"].values()
    )
    return 0 if planes_used else 1


if __name__ == "__main__":
    sys.exit(main())
