"""`ms diff`: human output, --stat, --json, --staged, --exit-code, paths after --, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from modelstore.cli.commands.diff import COMMANDS
from modelstore.cli.main import cli, main
from safetensors.numpy import save_file

from tests.conftest import make_data

# until cli/main.py registers the command (a no-op afterwards)
for _cmd in COMMANDS:
    if _cmd.name not in cli.commands:
        cli.add_command(_cmd)


def ms(capsys: pytest.CaptureFixture[str], *args: str, expect: int = 0) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == expect, f"ms {' '.join(args)} exited {code}, wanted {expect}: {out}{err}"
    return out + err


@pytest.fixture
def work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    w = tmp_path / "w"
    ms(capsys, "init", str(w))
    monkeypatch.chdir(w)
    rng = np.random.default_rng(0)
    save_file(
        {"w": rng.standard_normal((16, 16)).astype(np.float32), "b": np.zeros(4, np.float32)},
        "model.safetensors",
    )
    (w / "data.bin").write_bytes(make_data(20_000, seed=1))
    ms(capsys, "add", ".")
    ms(capsys, "commit", "-m", "v1")
    save_file(
        {"w": rng.standard_normal((16, 16)).astype(np.float32), "b": np.zeros((2, 2), np.float32)},
        "model.safetensors",
    )
    (w / "extra.bin").write_bytes(b"new file")
    ms(capsys, "add", ".")
    ms(capsys, "commit", "-m", "v2")
    return w


def test_diff_two_commits_human(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ms(capsys, "diff", "HEAD~1", "HEAD")
    lines = out.splitlines()
    assert any(line.startswith("M  model.safetensors") and "new" in line for line in lines)
    assert any(line.startswith("A  extra.bin") for line in lines)
    assert "2 file(s) changed (1 modified, 1 added)" in out
    assert "model.safetensors: 2 tensor(s): 1 changed, 1 reshaped" in out
    assert any(line.split()[:2] == ["changed", "w"] and "max_abs" in line for line in lines)
    assert any(
        line.split()[:2] == ["reshaped", "b"] and "[4] -> F32 [2, 2]" in line for line in lines
    )
    assert "data.bin" not in out


def test_diff_stat_json_and_no_tensors(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stat = ms(capsys, "diff", "--stat", "HEAD~1", "HEAD")
    assert "model.safetensors" in stat and "tensor(s)" not in stat
    doc = json.loads(ms(capsys, "diff", "--json", "HEAD~1", "HEAD"))
    assert set(doc) == {"old", "new", "summary", "files"}
    assert doc["old"]["rev"] == "HEAD~1" and len(doc["new"]["commit"]) == 64
    assert doc["summary"]["files"] == 2 and doc["summary"]["new_bytes"] > 0
    m = next(f for f in doc["files"] if f["path"] == "model.safetensors")
    assert set(m) >= {"status", "old_size", "new_size", "new_bytes", "new_chunks", "tensors"}
    assert m["tensors"]["counts"]["changed"] == 1
    assert {t["name"]: t["status"] for t in m["tensors"]["tensors"]} == {
        "w": "changed",
        "b": "reshaped",
    }
    plain = json.loads(ms(capsys, "diff", "--json", "--no-tensors", "HEAD~1", "HEAD"))
    assert all(f["tensors"] is None for f in plain["files"])


def test_diff_working_tree_staged_and_paths(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no differences" in ms(capsys, "diff")
    ms(capsys, "diff", "--exit-code")
    (work / "data.bin").write_bytes(make_data(20_000, seed=2))
    out = ms(capsys, "diff", "--exit-code", expect=1)
    assert out.startswith("M  data.bin")
    assert "no differences" in ms(capsys, "diff", "--staged")
    ms(capsys, "add", "data.bin")
    assert "M  data.bin" in ms(capsys, "diff", "--cached")
    out = ms(capsys, "diff", "HEAD~1", "--", "extra.bin")
    assert out.startswith("A  extra.bin") and "data.bin" not in out
    assert "no differences" in ms(capsys, "diff", "HEAD", "model.safetensors")
    assert "no differences" in ms(capsys, "diff", "--staged", "HEAD", "extra.bin")
    # a path that no longer exists needs --
    os.unlink("extra.bin")
    ms(capsys, "rm", "--cached", "extra.bin")
    ms(capsys, "diff", "HEAD", "extra.bin", expect=5)
    assert "D  extra.bin" in ms(capsys, "diff", "HEAD", "--", "extra.bin")


def test_diff_errors_exit_codes(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "unknown revision" in ms(capsys, "diff", "nope", expect=5)
    ms(capsys, "diff", "HEAD", "HEAD", "HEAD", "--", expect=2)
    ms(capsys, "diff", "--staged", "HEAD~1", "HEAD", expect=2)
    (work / "HEAD").write_bytes(b"ambiguous")
    assert "both a revision and a path" in ms(capsys, "diff", "HEAD", expect=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    ms(capsys, "diff", expect=3)
