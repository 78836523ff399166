"""Seeded generator of checkpoint-like safetensors files.

The layout (tensor names, shapes, dtypes, order) depends only on the requested size
and dtype; tensor contents are seeded per tensor and per piece, so two files written
with the same seed are byte-identical, and a file written with ``change_fraction``
differs from the base file only inside the reported tensors (same offsets, same size).

Memory stays bounded: every tensor is produced in pieces of at most ``PIECE_ELEMS``
elements (16 MiB of float32), each from its own ``numpy.random.default_rng((seed,
tensor, piece, ...))``, on a few worker threads with reused buffers (~160 MB RSS).
Values are normal (std 0.02 for weights, 1 for norms); bf16 is the float32 truncated
to its top 16 bits, fp16 the float32 rounded to half precision.

Usage: ``python -m bench.gen OUT --size 2GiB --dtype bf16 --seed 0 [--change-fraction 0.1]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# numpy is imported lazily (inside the functions that use it) so that bench.run can
# import the size helpers without numpy: the runner's own peak RSS is copied into the
# ru_maxrss of every child it spawns, so the runner must stay small.

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

PIECE_ELEMS = 4 * MiB  # elements per piece: 16 MiB of float32 scratch, <= 16 MiB written
WEIGHT_STD = 0.02
NORM_STD = 1.0
DTYPES = ("bf16", "fp16", "fp32", "mixed")
_ST_DTYPE = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
_ITEMSIZE = {"bf16": 2, "fp16": 2, "fp32": 4}
# Constant metadata: it must not depend on seed/change parameters so that the header
# (and therefore every absolute offset) is identical between versions.
_METADATA = {"format": "pt", "generator": "modelstore bench.gen"}

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kb": 1000, "kib": KiB,
    "m": MiB, "mb": 1000**2, "mib": MiB,
    "g": GiB, "gb": 1000**3, "gib": GiB,
    "t": 1024 * GiB, "tb": 1000**4, "tib": 1024 * GiB,
}  # fmt: skip


def parse_size(text: str | int) -> int:
    """'2GiB' -> 2147483648, '512MiB', '1GB', '4096' (bytes)."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m or (m.group(2) or "").lower() not in _UNITS:
        raise ValueError(f"bad size: {text!r} (use e.g. 512MiB, 2GiB, 1GB, 4096)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def format_size(n: int) -> str:
    for unit, k in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return f"{n}B"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "bf16" | "fp16" | "fp32"
    shape: tuple[int, ...]
    std: float

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _ITEMSIZE[self.dtype]


def _round_to(x: float, m: int) -> int:
    return max(m, int(x // m) * m)


def layout(size_bytes: int, dtype: str = "bf16") -> list[TensorSpec]:
    """Transformer-like tensor list whose total data size is ~size_bytes.

    Depends only on (size_bytes, dtype). For "mixed", norms and the embedding/head
    are F32 and the per-layer matrices are BF16.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    mat_dt = dtype if dtype in ("fp16", "fp32") else "bf16"
    emb_dt = dtype if dtype in ("bf16", "fp16") else "fp32"
    norm_dt = emb_dt
    es_mat, es_emb = _ITEMSIZE[mat_dt], _ITEMSIZE[emb_dt]

    size = max(int(size_bytes), 64 * KiB)
    layers = round(8 + 4 * math.log2(size / (256 * MiB)))
    layers = min(48, max(4, layers))
    # per layer ~10.5 d^2 matrix elements (q,o: d*d; k,v: d*d/4; gate,up,down: d*8d/3);
    # embedding + head ~8 d^2 (vocab ~4d).
    d_raw = math.sqrt(size / (10.5 * layers * es_mat + 8 * es_emb))
    d = _round_to(d_raw, 64 if d_raw >= 1024 else 16)
    kv = _round_to(d / 4, 16)
    ff = _round_to(8 * d / 3, 64 if d >= 1024 else 16)

    per_layer: list[tuple[str, str, tuple[int, ...], float]] = [
        ("input_layernorm.weight", norm_dt, (d,), NORM_STD),
        ("self_attn.q_proj.weight", mat_dt, (d, d), WEIGHT_STD),
        ("self_attn.k_proj.weight", mat_dt, (kv, d), WEIGHT_STD),
        ("self_attn.v_proj.weight", mat_dt, (kv, d), WEIGHT_STD),
        ("self_attn.o_proj.weight", mat_dt, (d, d), WEIGHT_STD),
        ("post_attention_layernorm.weight", norm_dt, (d,), NORM_STD),
        ("mlp.gate_proj.weight", mat_dt, (ff, d), WEIGHT_STD),
        ("mlp.up_proj.weight", mat_dt, (ff, d), WEIGHT_STD),
        ("mlp.down_proj.weight", mat_dt, (d, ff), WEIGHT_STD),
    ]
    layer_specs = [
        TensorSpec(f"model.layers.{i}.{n}", dt, shape, std)
        for i in range(layers)
        for (n, dt, shape, std) in per_layer
    ]
    final_norm = TensorSpec("model.norm.weight", norm_dt, (d,), NORM_STD)
    used = sum(t.nbytes for t in layer_specs) + final_norm.nbytes
    header_est = 120 * (len(layer_specs) + 3) + 128
    vocab = max(16, (size - used - header_est) // (2 * d * es_emb))
    embed = TensorSpec("model.embed_tokens.weight", emb_dt, (vocab, d), WEIGHT_STD)
    head = TensorSpec("lm_head.weight", emb_dt, (vocab, d), WEIGHT_STD)
    return [embed, *layer_specs, final_norm, head]


def choose_changed(specs: list[TensorSpec], change_fraction: float, change_seed: int) -> list[int]:
    """Indices of exactly round(change_fraction * n) tensors, ~change_fraction of the bytes.

    Tensors are visited in a size-weighted random order (Efraimidis-Spirakis keys, so big
    tensors come first proportionally to their size) and taken while the byte budget
    allows; the remaining slots go to the smallest tensors (norms), chosen at random.
    """
    n = len(specs)
    if not 0.0 <= change_fraction <= 1.0:
        raise ValueError("change_fraction must be in [0, 1]")
    k = min(n, math.floor(change_fraction * n + 0.5))
    if k == 0:
        return []
    if k == n:
        return list(range(n))
    import numpy as np

    rng = np.random.default_rng([int(change_seed), 0x5EED])
    u = rng.random(n)
    sizes = np.array([t.nbytes for t in specs], dtype=np.float64)
    keys = np.log(u) / sizes  # larger is better; ~ u ** (1 / size)
    order = [int(i) for i in np.argsort(-keys, kind="stable")]
    budget = change_fraction * float(sizes.sum())
    chosen: list[int] = []
    used = 0.0
    for i in order:
        if len(chosen) >= k:
            break
        if used + sizes[i] / 2 <= budget:
            chosen.append(i)
            used += sizes[i]
    if len(chosen) < k:
        taken = set(chosen)
        rest = sorted((i for i in range(n) if i not in taken), key=lambda i: (sizes[i], u[i]))
        chosen.extend(rest[: k - len(chosen)])
    return sorted(chosen)


def build_header(specs: list[TensorSpec]) -> bytes:
    """Safetensors header: 8-byte LE length + JSON padded with spaces to a multiple of 8."""
    tensors: dict[str, Any] = {"__metadata__": _METADATA}
    off = 0
    for t in specs:
        tensors[t.name] = {
            "dtype": _ST_DTYPE[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [off, off + t.nbytes],
        }
        off += t.nbytes
    raw = json.dumps(tensors, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class _Buf:
    """Reusable scratch for one piece: float32 values and bf16 output."""

    def __init__(self) -> None:
        import numpy as np

        self.f32 = np.empty(PIECE_ELEMS, dtype=np.float32)
        self.u16 = np.empty(PIECE_ELEMS, dtype=np.uint16)
        self.r = np.empty((PIECE_ELEMS + 1) // 2, dtype=np.float32)
        self.theta = np.empty((PIECE_ELEMS + 1) // 2, dtype=np.float32)


def _fill_piece(buf: _Buf, spec: TensorSpec, n: int, seed_key: list[int]) -> memoryview:
    # N(0, std^2) by Box-Muller on float32 uniforms (vectorised log/sqrt/sin/cos). On the
    # 2-core bench machine this is ~3x faster than Generator.standard_normal(dtype=float32)
    # (~1 GB/s of bf16 vs ~300 MB/s), which would make generation the slowest step.
    import numpy as np

    f = buf.f32[:n]
    rng = np.random.default_rng(seed_key)
    half = (n + 1) // 2
    r, th = buf.r[:half], buf.theta[:half]
    rng.random(out=r, dtype=np.float32)
    rng.random(out=th, dtype=np.float32)
    np.subtract(np.float32(1.0), r, out=r)  # (0, 1]: log is finite
    np.log(r, out=r)
    np.multiply(r, np.float32(-2.0 * spec.std * spec.std), out=r)
    np.sqrt(r, out=r)
    np.multiply(th, np.float32(2.0 * math.pi), out=th)
    np.cos(th, out=f[:half])
    np.multiply(f[:half], r, out=f[:half])
    rest = n - half
    np.sin(th[:rest], out=f[half:])
    np.multiply(f[half:], r[:rest], out=f[half:])
    if spec.dtype == "fp32":
        return memoryview(f).cast("B")
    if spec.dtype == "fp16":
        h = buf.u16[:n].view(np.float16)
        np.copyto(h, f, casting="same_kind")  # round to nearest; small weights go subnormal
        return memoryview(h.view(np.uint16)).cast("B")
    # bf16 = top 16 bits of the float32 (truncation); little-endian -> odd uint16 halves
    out = buf.u16[:n]
    np.copyto(out, f.view(np.uint16)[1::2])
    return memoryview(out).cast("B")


def _pieces(
    specs: list[TensorSpec], changed: set[int], seed: int, change_seed: int
) -> list[tuple[TensorSpec, int, list[int]]]:
    jobs = []
    for ti, spec in enumerate(specs):
        variant = [1, int(change_seed)] if ti in changed else [0, 0]
        numel = spec.numel
        for pi, start in enumerate(range(0, numel, PIECE_ELEMS)):
            jobs.append((spec, min(PIECE_ELEMS, numel - start), [int(seed), ti, pi, *variant]))
    return jobs


def write_checkpoint(
    path: str | os.PathLike[str],
    size_bytes: int | str,
    *,
    dtype: str = "bf16",
    seed: int = 0,
    change_fraction: float = 0.0,
    change_seed: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write a checkpoint-like safetensors file of ~size_bytes; see module docstring.

    Returns a dict with "path", "bytes", "header_bytes", "tensors", "changed"
    (names), "changed_tensors", "changed_bytes", "seconds" and "mb_per_s".
    """
    t0 = time.perf_counter()
    specs = layout(parse_size(size_bytes), dtype)
    changed = choose_changed(specs, change_fraction, change_seed)
    header = build_header(specs)
    jobs = _pieces(specs, set(changed), seed, change_seed)
    workers = max(1, min(threads or os.cpu_count() or 1, 4))
    free = [_Buf() for _ in range(workers + 1)]
    inflight: deque[tuple[_Buf, Future[memoryview]]] = deque()
    total = len(header)
    with open(path, "wb") as fh, ThreadPoolExecutor(workers) as ex:
        fh.write(header)
        it = iter(jobs)
        exhausted = False
        while True:
            while free and not exhausted:
                job = next(it, None)
                if job is None:
                    exhausted = True
                    break
                buf = free.pop()
                inflight.append((buf, ex.submit(_fill_piece, buf, *job)))
            if not inflight:
                break
            buf, fut = inflight.popleft()
            mv = fut.result()
            fh.write(mv)
            total += mv.nbytes
            del mv
            free.append(buf)
    dt = time.perf_counter() - t0
    return {
        "path": str(path),
        "bytes": total,
        "header_bytes": len(header),
        "tensors": len(specs),
        "changed": [specs[i].name for i in changed],
        "changed_tensors": len(changed),
        "changed_bytes": sum(specs[i].nbytes for i in changed),
        "seconds": dt,
        "mb_per_s": total / dt / 1e6 if dt > 0 else float("inf"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gen", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", default="2GiB", help="approximate file size (e.g. 512MiB, 2GiB)")
    ap.add_argument("--dtype", default="bf16", choices=DTYPES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--change-fraction", type=float, default=0.0)
    ap.add_argument("--change-seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    a = ap.parse_args(argv)
    info = write_checkpoint(
        a.out,
        parse_size(a.size),
        dtype=a.dtype,
        seed=a.seed,
        change_fraction=a.change_fraction,
        change_seed=a.change_seed,
        threads=a.threads,
    )
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{info['path']}: {info['bytes']} bytes, {info['tensors']} tensors, "
            f"{info['changed_tensors']} changed ({info['changed_bytes']} bytes, "
            f"{100 * info['changed_bytes'] / max(1, info['bytes']):.1f}%), "
            f"{info['seconds']:.2f} s, {info['mb_per_s']:.0f} MB/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
