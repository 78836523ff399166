"""The guide's story, run for real: train -> evaluate -> promote -> regress -> rollback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None, reason="the story keeps its code in git")
def test_experiments_story_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "exp"
    p = subprocess.run(["bash", str(ROOT / "examples" / "experiments.sh"), str(work)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    # compare shows the regression and its cause: the data changed under the model
    assert "~ mse" in out and "~ data/train.csv" in out
    # lineage of the shipped model names dataset v2 as what produced its input
    lineage = out.split("$ ms lineage @production:model.safetensors", 1)[1]
    assert "<- " in lineage and "dataset v2: partner rows" in lineage
    assert "@production rolled back to" in out
    assert "verified against commit" in out

    def ms(*args: str) -> str:
        return subprocess.run(["ms", "-C", str(work), *args], capture_output=True, text=True,
                              env=env, check=True).stdout

    # after the rollback production is the baseline again, and the export is that commit
    prod = json.loads(ms("alias", "show", "production", "--json"))
    base = json.loads(ms("log", "--json"))[-2]  # newest first: ..., baseline, dataset v1
    assert base["message"] == "baseline" and prod["commit"] == base["id"]
    record = json.loads((work / "deploy" / "modelstore.json").read_text())
    assert record["commit"] == base["id"] and record["metrics"]["rows"] == 2000
    # the history records who moved production and why
    hist = json.loads(ms("alias", "history", "production", "--json"))
    assert [h["message"].split(":")[0] for h in hist][:1] == ["fine-tune regressed"]
