"""The peers benchmark's input files: checkpoint variants and a CSV dataset.

Every workload is a pair (v1, v2) of one file. The checkpoint workloads share v1, a
``bench.gen`` checkpoint (seed 0); their v2 is:

- ``new``: an unrelated checkpoint of the same architecture (``bench.gen`` seed 1);
- ``change10``: ``bench.gen --change-fraction 0.1`` (10% of the tensors get new values,
  every offset stays);
- ``finetune``: every weight perturbed, ``w -> round(w + e)`` with
  ``e ~ N(0, (0.01 * rms)^2)`` per 4 Mi-element piece: most bf16 values change their
  low byte, ~5% (mostly values near zero) their exponent (``finetune_checkpoint``);
- ``insert``: one 8 MiB bf16 tensor inserted in the middle of the tensor order, so the
  header grows and all later data shifts (``splice_checkpoint``);
- ``append``: four 8 MiB bf16 tensors added at the end (the header grows too, so every
  data offset shifts by its growth).

The CSV workload (``csv``) is generated rows; its v2 has 1% more rows inserted in the
middle (not at a block boundary) and 1% appended (``write_csv_pair``).

This module is run in a child process (``python -m bench.peers.workloads KIND ...``) so
that numpy and its buffers never enter the runner, whose peak RSS would leak into the
children it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
PIECE_ELEMS = 4 * MiB
COPY_BLOCK = 16 * MiB
NEW_TENSOR_BYTES = 8 * MiB
APPEND_COUNT = 4
FINETUNE_REL = 0.01
CSV_ROWS_PER_BLOCK = 65536
CSV_HEADER = "id,user,item,score,category,ts\n"
_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1}


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    family: str  # "ckpt" (shares the checkpoint v1) or "csv"
    what: str


WORKLOADS: tuple[Workload, ...] = (
    Workload("new", "new checkpoint", "ckpt", "v2 = an unrelated checkpoint, same architecture"),
    Workload("change10", "10% changed", "ckpt", "v2 = 10% of the tensors re-drawn"),
    Workload("finetune", "full fine-tune", "ckpt", "v2 = every weight + 1% noise"),
    Workload("insert", "inserted tensor", "ckpt", "v2 = one 8 MiB tensor inserted mid-file"),
    Workload("append", "appended tensors", "ckpt", "v2 = four 8 MiB tensors appended"),
    Workload("csv", "CSV insert+append", "csv", "v2 = 1% rows inserted mid-file + 1% appended"),
)
FAMILY_FILE = {"ckpt": "model.safetensors", "csv": "data.csv"}


# --------------------------------------------------------------------------- safetensors


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # offset in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: str | os.PathLike[str]) -> tuple[int, dict[str, Any], list[Entry]]:
    """(data start offset, ``__metadata__``, tensors in data order) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        doc = json.loads(f.read(n))
    meta = doc.pop("__metadata__", {})
    entries = [
        Entry(k, v["dtype"], tuple(v["shape"]), v["data_offsets"][0], v["data_offsets"][1])
        for k, v in doc.items()
    ]
    entries.sort(key=lambda e: e.begin)
    return 8 + n, meta, entries


def build_header(
    tensors: Sequence[tuple[str, str, tuple[int, ...]]], meta: dict[str, Any]
) -> bytes:
    """Header for tensors laid out back to back in this order (same style as bench.gen)."""
    doc: dict[str, Any] = {"__metadata__": meta} if meta else {}
    off = 0
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _copy_range(src: Any, dst: Any, offset: int, length: int) -> None:
    src.seek(offset)
    while length > 0:
        buf = src.read(min(COPY_BLOCK, length))
        if not buf:
            raise ValueError("short read: truncated safetensors file")
        dst.write(buf)
        length -= len(buf)


def new_bf16_tensor(nbytes: int, seed: Sequence[int]) -> bytes:
    """nbytes of bf16 N(0, 0.02^2) values (float32 truncated to its top 16 bits)."""
    import numpy as np

    n = nbytes // 2
    x = np.random.default_rng(list(seed)).standard_normal(n, dtype=np.float32)
    x *= np.float32(0.02)
    return (x.view(np.uint32) >> 16).astype("<u2").tobytes()


def splice_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    at: int | None = None,
    count: int = 1,
    nbytes: int = NEW_TENSOR_BYTES,
    seed: int = 7,
) -> dict[str, Any]:
    """Copy src to dst with `count` new bf16 tensors of `nbytes` inserted before tensor `at`.

    `at=None` is the middle of the tensor order; `at=len(tensors)` (or more) appends.
    Returns the names of the new tensors and where the first of them starts.
    """
    start, meta, entries = read_header(src)
    pos = len(entries) // 2 if at is None else min(at, len(entries))
    rows = nbytes // 2 // 1024
    if rows * 2048 != nbytes or rows < 1:
        raise ValueError("nbytes must be a positive multiple of 2 KiB")
    names = [f"bench.inserted.{i}.weight" for i in range(count)]
    new = [(n, "BF16", (rows, 1024)) for n in names]
    old = [(e.name, e.dtype, e.shape) for e in entries]
    header = build_header([*old[:pos], *new, *old[pos:]], meta)
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.write(header)
        for e in entries[:pos]:
            _copy_range(s, d, start + e.begin, e.nbytes)
        shift = d.tell()
        for i in range(count):
            d.write(new_bf16_tensor(nbytes, [seed, pos, i]))
        for e in entries[pos:]:
            _copy_range(s, d, start + e.begin, e.nbytes)
        total = d.tell()
    return {
        "bytes": total,
        "new_tensors": names,
        "position": pos,
        "new_data_offset": shift,
        "header_growth": len(header) - start,
    }


def _perturb(raw: bytes, dtype: str, seed: list[int], rel: float) -> tuple[bytes, int, int]:
    """raw values + N(0, (rel*rms)^2) noise -> (new raw, changed values, exponent changes)."""
    import numpy as np

    if dtype == "BF16":
        old = np.frombuffer(raw, dtype="<u2")
        x = (old.astype(np.uint32) << 16).view(np.float32)
    elif dtype in ("F16", "F32", "F64"):
        x = np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])
        x = x.astype(np.float32)
    else:  # integers etc. are left alone
        return raw, 0, 0
    rms = math.sqrt(float(np.dot(x, x)) / max(1, x.size))
    noise = np.random.default_rng(seed).standard_normal(x.size, dtype=np.float32)
    y = x + noise * np.float32(rel * rms)
    if dtype == "BF16":
        u = y.view(np.uint32)
        new = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype("<u2")
        diff = old ^ new
        exp_mask = 0x7F80
    else:
        old_v = np.frombuffer(raw, dtype={"F16": "<u2", "F32": "<u4", "F64": "<u8"}[dtype])
        new = y.astype({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])
        diff = old_v ^ new.view(old_v.dtype)
        exp_mask = {"F16": 0x7C00, "F32": 0x7F800000, "F64": 0x7FF0000000000000}[dtype]
    changed = int(np.count_nonzero(diff))
    exp_changed = int(np.count_nonzero(diff & diff.dtype.type(exp_mask)))
    return new.tobytes(), changed, exp_changed


def finetune_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    rel: float = FINETUNE_REL,
    seed: int = 11,
) -> dict[str, Any]:
    """Copy src to dst with every float value perturbed (same header, same offsets)."""
    start, _, entries = read_header(src)
    values = changed = exp_changed = 0
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.write(s.read(start))
        for ti, e in enumerate(entries):
            item = _ITEMSIZE[e.dtype]
            s.seek(start + e.begin)
            left, pi = e.nbytes, 0
            while left > 0:
                raw = s.read(min(PIECE_ELEMS * item, left))
                new, c, x = _perturb(raw, e.dtype, [seed, ti, pi], rel)
                d.write(new)
                values += len(raw) // item
                changed += c
                exp_changed += x
                left -= len(raw)
                pi += 1
        total = d.tell()
    return {
        "bytes": total,
        "values": values,
        "changed_fraction": changed / max(1, values),
        "exponent_changed_fraction": exp_changed / max(1, values),
    }


# --------------------------------------------------------------------------- CSV


def csv_rows(block: int, nrows: int, seed: Sequence[int]) -> str:
    """`nrows` CSV lines; ids are unique per (seed, block), so no two blocks share a row."""
    import numpy as np

    rng = np.random.default_rng([*seed, block])
    base = (int(seed[-1]) * 1_000_003 + block) * CSV_ROWS_PER_BLOCK * 4
    users = rng.integers(0, 2_000_000, nrows).tolist()
    items = rng.integers(0, 500_000, nrows).tolist()
    scores = rng.normal(3.0, 1.2, nrows).tolist()
    cats = rng.integers(0, 40, nrows).tolist()
    ts = (1_700_000_000 + np.sort(rng.integers(0, 86_400 * 365, nrows))).tolist()
    return "".join(
        f"{base + i},{u},{it},{s:.4f},cat_{c:02d},{t}\n"
        for i, (u, it, s, c, t) in enumerate(zip(users, items, scores, cats, ts, strict=True))
    )


def _csv_job(job: tuple[int, int, tuple[int, ...]]) -> bytes:
    return csv_rows(job[0], job[1], job[2]).encode()


def csv_plan(size: int, rows_per_block: int = CSV_ROWS_PER_BLOCK) -> tuple[int, int, int]:
    """(blocks, inserted rows, appended rows) for a ~`size`-byte CSV (~47 bytes a row)."""
    rows = max(rows_per_block, size // 47)
    blocks = max(2, round(rows / rows_per_block))
    extra = max(1, round(0.01 * blocks * rows_per_block))
    return blocks, extra, extra


def write_csv_pair(
    v1: str | os.PathLike[str],
    v2: str | os.PathLike[str],
    size: int,
    *,
    seed: int = 0,
    rows_per_block: int = CSV_ROWS_PER_BLOCK,
    workers: int = 2,
) -> dict[str, Any]:
    """Write v1 (~size bytes of rows) and v2 = v1 + rows inserted mid-file + rows appended.

    The inserted rows go after row ``rows_per_block // 2 + 17`` of the middle block (not on
    a block boundary). Blocks are made on `workers` processes, in order.
    """
    blocks, n_ins, n_app = csv_plan(size, rows_per_block)
    mid = blocks // 2
    jobs: list[tuple[int, int, tuple[int, ...]]] = [
        (b, rows_per_block, (seed, 0)) for b in range(blocks)
    ]
    ins_job = (0, n_ins, (seed, 1))
    app_job = (0, n_app, (seed, 2))
    cut_row = min(rows_per_block - 1, rows_per_block // 2 + 17)

    def produce() -> Iterator[bytes]:
        order = [ins_job, app_job, *jobs]  # the two small extras first, then file order
        if workers <= 1:
            yield from map(_csv_job, order)
            return
        with ProcessPoolExecutor(workers) as ex:
            yield from ex.map(_csv_job, order, chunksize=1)

    with open(v1, "wb") as f1, open(v2, "wb") as f2:
        f1.write(CSV_HEADER.encode())
        f2.write(CSV_HEADER.encode())
        it = produce()
        inserted, appended = next(it), next(it)
        for b, data in enumerate(it):
            f1.write(data)
            if b == mid:
                cut = _nth_newline(data, cut_row)
                f2.write(data[:cut])
                f2.write(inserted)
                f2.write(data[cut:])
            else:
                f2.write(data)
        f2.write(appended)
        s1, s2 = f1.tell(), f2.tell()
    return {
        "bytes": s1,
        "v2_bytes": s2,
        "rows": blocks * rows_per_block,
        "inserted_rows": n_ins,
        "appended_rows": n_app,
        "inserted_bytes": len(inserted),
        "appended_bytes": len(appended),
    }


def _nth_newline(data: bytes, n: int) -> int:
    """Offset just after the n-th (1-based) newline of data."""
    pos = -1
    for _ in range(n):
        pos = data.index(b"\n", pos + 1)
    return pos + 1


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.workloads")
    ap.add_argument("kind", choices=("finetune", "insert", "append", "csv"))
    ap.add_argument("out", type=Path, help="v2 (for csv: v1; v2 is --v2)")
    ap.add_argument("--src", type=Path, help="the v1 checkpoint (checkpoint kinds)")
    ap.add_argument("--v2", type=Path, help="csv: where v2 goes")
    ap.add_argument("--size", type=int, default=0, help="csv: bytes of v1")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.kind == "csv":
        if a.v2 is None or a.size <= 0:
            ap.error("csv needs --v2 and --size")
        info = write_csv_pair(a.out, a.v2, a.size)
    else:
        if a.src is None:
            ap.error(f"{a.kind} needs --src")
        if a.kind == "finetune":
            info = finetune_checkpoint(a.src, a.out)
        elif a.kind == "insert":
            info = splice_checkpoint(a.src, a.out)
        else:
            info = splice_checkpoint(a.src, a.out, at=1 << 62, count=APPEND_COUNT)
    info["seconds"] = time.perf_counter() - t0
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
