"""A stand-in for a training job: a small model and a metrics file from a CSV and a seed.

Used by examples/experiments.sh. Deterministic: the same data, lr and steps give the same bytes.
Usage: python examples/train.py DATA.csv OUT_DIR --lr 3e-4 --steps 100 [--init PREV.safetensors]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--init", help="continue from this checkpoint (fine-tune)")
    a = ap.parse_args()
    with open(a.data, newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.array([float(r["feature"]) for r in rows])
    y = np.array([float(r["label"]) for r in rows])
    rng = np.random.default_rng(a.steps)
    if a.init:
        weights = load_file(a.init)
    else:
        weights = {
            f"layers.{i}.weight": rng.standard_normal((256, 256)).astype(np.float32) * 0.02
            for i in range(8)
        }
        weights["head.weight"] = rng.standard_normal((1, 256)).astype(np.float32)
    # "training": every weight moves a little; the head also learns from the data
    for name in weights:
        weights[name] = weights[name] + (a.lr * rng.standard_normal(weights[name].shape)).astype(
            np.float32
        )
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else 0.0
    resid = y - slope * x
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"))
    # a bad data batch (outliers in `label`) shows up as a worse error, as it would for real
    metrics = {
        "mse": round(float(np.mean(resid**2)), 6),
        "acc": round(float(np.mean(np.abs(resid) < 1.0)), 4),
        "rows": len(rows),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
