"""Provenance in the commit: exact metrics and params, inputs, captured environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelstore import Repository, api
from modelstore.errors import BadArgumentError
from modelstore.lineage import capture, load_values_file, parse_assignment


def staged(repo: Repository, data: bytes = b"w") -> None:
    (repo.workdir / "model.bin").write_bytes(data)
    repo.add([str(repo.workdir / "model.bin")])


def test_metrics_and_params_round_trip_exactly(repo: Repository) -> None:
    staged(repo)
    metrics = {"acc": 0.913, "loss": 0.21, "steps": 1200, "converged": True,
               "per_class": {"cat": 0.9, "dog": 0.95}}
    params = {"lr": 3e-4, "optimizer": "adamw", "layers": [12, 12], "seed": 0}
    info = api.commit(repo, "run 1", metrics=metrics, params=params,
                      inputs=["model.bin", "https://example.org/raw.csv"], capture=False)
    extra = repo.get_commit(bytes.fromhex(info.id)).extra
    assert extra["metrics"] == metrics and extra["params"] == params
    assert type(extra["metrics"]["steps"]) is int and type(extra["metrics"]["acc"]) is float
    assert [x.get("path", x.get("url")) for x in extra["inputs"]] == [
        "model.bin", "https://example.org/raw.csv"]
    assert "environment" not in extra


def test_commit_ids_are_deterministic(tmp_path: Path) -> None:
    ids = []
    for name in ("a", "b"):
        r = Repository.init(tmp_path / name)
        staged(r)
        oid = r.commit("same", when=1_700_000_000, author="x@y",
                       extra={"metrics": {"b": 2, "a": 1.5}, "params": {"lr": 0.1}})
        ids.append(oid)
        r.close()
    assert ids[0] == ids[1]


def test_capture_records_git_python_and_packages(tmp_path: Path) -> None:
    w = tmp_path / "proj"
    w.mkdir()
    subprocess.run(["git", "init", "-q", str(w)], check=True)
    (w / "train.py").write_text("print('hi')\n")
    subprocess.run(["git", "-C", str(w), "add", "train.py"], check=True)
    subprocess.run(["git", "-C", str(w), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-qm", "code"], check=True)
    head = subprocess.run(["git", "-C", str(w), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    env = capture(w)  # its cost is measured in bench/bench_lineage.py, not asserted here
    assert env["git"] == {"commit": head, "branch": env["git"]["branch"], "dirty": False}
    assert env["python"].count(".") == 2 and "blake3" in env["packages"]
    (w / "train.py").write_text("print('changed')\n")
    assert capture(w)["git"]["dirty"] is True
    r = Repository.init(w)
    staged(r)
    info = api.commit(r, "with capture")
    assert r.get_commit(bytes.fromhex(info.id)).extra["environment"]["git"]["commit"] == head
    r.close()


def test_values_parsing_and_files(tmp_path: Path) -> None:
    assert parse_assignment("lr=3e-4") == ("lr", 3e-4)
    assert parse_assignment("epochs=3") == ("epochs", 3)
    assert parse_assignment("fp16=true") == ("fp16", True)
    assert parse_assignment("opt=adamw") == ("opt", "adamw")
    with pytest.raises(BadArgumentError):
        parse_assignment("novalue")
    with pytest.raises(BadArgumentError):
        parse_assignment("x=nan")
    (tmp_path / "p.yaml").write_text("lr: 0.001\nbatch: 32\n")
    assert load_values_file(str(tmp_path / "p.yaml")) == {"lr": 0.001, "batch": 32}
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(BadArgumentError, match="map"):
        load_values_file(str(tmp_path / "m.json"))


def test_cli_commit_metrics_and_log_table(tmp_path: Path) -> None:
    w = tmp_path / "w"
    Repository.init(w).close()

    def ms(*args: str, code: int = 0) -> str:
        p = subprocess.run([sys.executable, "-m", "modelstore.cli.main", "-C", str(w), *args],
                           capture_output=True, text=True)
        assert p.returncode == code, p.stderr
        assert "Traceback" not in p.stderr
        return p.stdout

    (w / "m.bin").write_bytes(b"1")
    ms("add", "m.bin")
    ms("commit", "-m", "one", "--metric", "acc=0.9", "--param", "lr=3e-4", "--no-capture")
    (w / "m.bin").write_bytes(b"2")
    ms("add", "m.bin")
    (w / "metrics.json").write_text(json.dumps({"acc": 0.93}))
    ms("commit", "-m", "two", "--metrics-file", str(w / "metrics.json"), "--param", "lr=1e-4")
    rows = json.loads(ms("log", "--metrics", "acc", "--params", "lr", "--json"))
    assert [(r["acc"], r["lr"]) for r in rows] == [(0.93, 0.0001), (0.9, 0.0003)]
    assert "acc=0.93" in ms("show")
    ms("commit", "-m", "x", "--metric", "oops", code=2)


def test_export_writes_files_and_a_verifiable_record(repo: Repository, tmp_path: Path) -> None:
    from blake3 import blake3

    staged(repo, b"weights-v1")
    info = api.commit(repo, "v1", metrics={"acc": 0.9}, params={"lr": 0.1}, capture=False)
    out = tmp_path / "deploy"
    res = api.export(repo, "HEAD", str(out))
    assert res["commit"] == info.id
    rec = json.loads((out / "modelstore.json").read_text())
    assert rec["commit"] == info.id and rec["metrics"] == {"acc": 0.9}
    assert rec["files"]["model.bin"]["blake3"] == blake3(b"weights-v1").hexdigest()
    assert (out / "model.bin").read_bytes() == b"weights-v1"
