"""`ms init --deltas/--no-deltas/--delta-depth` and what `ms stats` says about deltas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cli import run
from tests.integration.test_deltas import _model, _save, _step


def test_stats_counts_the_deltas_of_the_next_checkpoint(tmp_path: Path) -> None:
    w = tmp_path / "w"
    run("init", "--delta-depth", "2", str(w), cwd=tmp_path)
    m0 = _model()
    for k, m in enumerate((m0, _step(m0, 1))):
        _save(w / "model.safetensors", m)
        run("add", "model.safetensors", cwd=w)
        run("commit", "-m", f"v{k}", cwd=w)
    s = json.loads(run("stats", "--json", cwd=w))
    assert s["delta_depth"] == 2 and s["codecs"]["delta"]["chunks"] >= 6
    d = s["codecs"]["delta"]
    assert d["stored_bytes"] < 0.6 * d["raw_bytes"]
    text = run("stats", cwd=w)
    assert f"delta {d['chunks']}" in text and "(at most 2 in a row)" in text


def test_init_without_deltas_and_turning_them_on(tmp_path: Path) -> None:
    run("init", "--no-deltas", str(tmp_path / "a"), cwd=tmp_path)
    s = json.loads(run("stats", "--json", cwd=tmp_path / "a"))
    assert s["delta_depth"] is None
    out = json.loads(run("init", "--deltas", "--json", str(tmp_path / "a"), cwd=tmp_path))
    assert out["deltas"] is True and out["changed"] is True
    assert "already enabled" in run("init", "--deltas", str(tmp_path / "a"), cwd=tmp_path)
    s = json.loads(run("stats", "--json", cwd=tmp_path / "a"))
    assert s["delta_depth"] == 2


def test_wrong_delta_options_get_one_line_and_no_traceback(tmp_path: Path) -> None:
    ms = [sys.executable, "-m", "modelstore.cli.main"]
    bad = subprocess.run(
        [*ms, "init", "--delta-depth", "99", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "99 is not in the range" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x" / ".ms").exists()
    subprocess.run([*ms, "init", str(tmp_path / "y")], check=True, capture_output=True)
    late = subprocess.run(
        [*ms, "init", "--deltas", "--delta-depth", "3", str(tmp_path / "y")],
        capture_output=True,
        text=True,
    )
    assert late.returncode == 2 and "--delta-depth is set when a repository is created" in (
        late.stderr
    )
    assert "Traceback" not in late.stderr
