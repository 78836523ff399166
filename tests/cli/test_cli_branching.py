"""CLI: branch, switch, tag, merge (conflicts, resolve, abort), reset, revert, reflog, graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def ms(cwd: Path, *args: str, code: int = 0) -> str:
    proc = subprocess.run([sys.executable, "-m", "modelstore.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == code, f"ms {' '.join(args)}: {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout + proc.stderr


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    ms(tmp_path, "init", str(w))
    (w / "m.bin").write_bytes(b"base")
    ms(w, "add", "m.bin")
    ms(w, "commit", "-m", "base")
    return w


def test_cli_branch_switch_merge_conflict_resolve_commit(work: Path) -> None:
    out = json.loads(ms(work, "branch", "exp", "--json"))
    assert out["created"] == "exp" and len(out["commit"]) == 64
    (work / "m.bin").write_bytes(b"ours")
    ms(work, "add", "m.bin")
    ms(work, "commit", "-m", "ours")
    ms(work, "switch", "exp")
    (work / "m.bin").write_bytes(b"theirs")
    ms(work, "add", "m.bin")
    ms(work, "commit", "-m", "theirs")
    ms(work, "switch", "main")
    res = json.loads(ms(work, "merge", "exp", "--json", code=1))
    assert res["status"] == "conflicts" and res["conflicts"] == ["m.bin"]
    st = json.loads(ms(work, "status", "--json"))
    assert st["merging"] == "merge" and st["conflicts"] == ["m.bin"]
    assert "UU m.bin" in ms(work, "status", "-s")
    ms(work, "commit", "-m", "early", code=8)
    ms(work, "merge", "--resolve", "m.bin", "--theirs")
    ms(work, "commit", "-m", "merged")
    assert (work / "m.bin").read_bytes() == b"theirs"
    log = json.loads(ms(work, "log", "--json"))
    assert len(log[0]["parents"]) == 2
    graph = ms(work, "log", "--graph", "--oneline")
    assert "|\\" in graph and "|/" in graph


def test_cli_merge_abort_and_strategy(work: Path) -> None:
    ms(work, "branch", "exp")
    (work / "m.bin").write_bytes(b"ours")
    ms(work, "add", "m.bin")
    ms(work, "commit", "-m", "ours")
    ms(work, "switch", "exp")
    (work / "m.bin").write_bytes(b"theirs")
    ms(work, "add", "m.bin")
    ms(work, "commit", "-m", "theirs")
    ms(work, "switch", "main")
    ms(work, "merge", "exp", code=1)
    ms(work, "merge", "--abort")
    assert json.loads(ms(work, "status", "--json"))["clean"]
    res = json.loads(ms(work, "merge", "exp", "-X", "theirs", "--json"))
    assert res["status"] == "merged" and (work / "m.bin").read_bytes() == b"theirs"


def test_cli_tag_reset_revert_reflog(work: Path) -> None:
    ms(work, "tag", "v1", "-m", "first")
    tags = json.loads(ms(work, "tag", "--json"))
    assert tags[0]["name"] == "v1" and tags[0]["annotated"] and tags[0]["message"] == "first"
    ms(work, "tag", "v1", code=4)  # immutable
    (work / "m.bin").write_bytes(b"v2")
    ms(work, "add", "m.bin")
    ms(work, "commit", "-m", "two")
    ms(work, "revert", "HEAD")
    assert (work / "m.bin").read_bytes() == b"base"
    ms(work, "reset", "--hard", "v1")
    assert (work / "m.bin").read_bytes() == b"base"
    entries = json.loads(ms(work, "reflog", "main", "--json"))
    assert [e["command"] for e in entries][:3] == ["reset", "revert", "commit"]
    assert "main@{1}" in ms(work, "reflog", "main")
    ms(work, "reset", "--hard", "main@{2}")
    assert (work / "m.bin").read_bytes() == b"v2"


def test_cli_branch_errors(work: Path) -> None:
    ms(work, "branch", "bad..name", code=2)
    ms(work, "switch", "nope", code=5)
    ms(work, "branch", "-d", "main", code=2)
    ms(work, "merge", code=2)
    ms(work, "merge", "--resolve", "m.bin", "--ours", code=2)  # no merge in progress
    ms(work, "reset", "--hard", "nosuchrev", code=5)
