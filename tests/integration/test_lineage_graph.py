"""Inputs pinned to content ids, ``lineage`` both ways, and ``compare`` of two experiments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from blake3 import blake3

from modelstore import Repository, api
from modelstore.errors import BadArgumentError, NotARepositoryError, PathError, RefNotFoundError
from modelstore.lineage import parse_ms_url


def put(repo: Repository, rel: str, data: bytes) -> None:
    p = repo.workdir / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    repo.add([str(p)])


def cid(info: api.CommitInfo) -> bytes:
    return bytes.fromhex(info.id)


def test_inputs_are_pinned_to_content_ids(repo: Repository) -> None:
    put(repo, "data/train.csv", b"a,b\n1,2\n")
    put(repo, "data/val.csv", b"a,b\n3,4\n")
    c1 = api.commit(repo, "data v1", capture=False)
    put(repo, "data/train.csv", b"a,b\n1,2\n5,6\n")
    put(repo, "model.bin", b"weights")
    c2 = api.commit(repo, "train", inputs=["data/train.csv", "data", f"{c1.id[:10]}:data/val.csv"],
                    capture=False)
    staged_file, staged_dir, old_val = repo.get_commit(cid(c2)).extra["inputs"]
    train = repo.lookup(cid(c2), "data/train.csv")
    assert train is not None
    assert staged_file == {"path": "data/train.csv", "kind": "file", "id": train.id.hex(),
                           "size": 12, "blake3": blake3(b"a,b\n1,2\n5,6\n").hexdigest()}
    data_dir = repo.lookup(cid(c2), "data")
    assert data_dir is not None and data_dir.is_dir
    # the folder's id computed from the staging index is the tree id the commit got
    assert staged_dir["kind"] == "dir" and staged_dir["id"] == data_dir.id.hex()
    val = repo.lookup(cid(c1), "data/val.csv")
    assert val is not None
    assert old_val["commit"] == c1.id and old_val["id"] == val.id.hex()
    assert old_val["rev"] == c1.id[:10]


def test_input_errors(repo: Repository) -> None:
    put(repo, "a.bin", b"x")
    with pytest.raises(PathError, match="not tracked"):
        api.commit(repo, "m", inputs=["nope.csv"], capture=False)
    api.commit(repo, "m", capture=False)
    with pytest.raises(PathError, match="not in"):
        api.commit(repo, "m2", inputs=["HEAD:missing.bin"], allow_empty=True, capture=False)
    with pytest.raises(NotARepositoryError, match="no modelstore repository"):
        api.commit(repo, "m3", inputs=["ms:///nonexistent/x/data.csv"], allow_empty=True,
                   capture=False)
    with pytest.raises(BadArgumentError, match="empty revision"):
        parse_ms_url(f"ms://{repo.workdir}@/a.bin")
    w = str(repo.workdir)
    # the same rule as the ms:// filesystem: the first '@' after a repository folder
    assert parse_ms_url(f"ms://{w}@v2/train/x.csv") == (w, "v2", "train/x.csv")
    assert parse_ms_url(f"ms://{w}@@production/a") == (w, "@production", "a")
    assert parse_ms_url(f"ms://{w}@feature%2Fx/a") == (w, "feature/x", "a")
    assert parse_ms_url(f"ms://{w}/sub/a.bin") == (w, "HEAD", "sub/a.bin")


def test_input_from_another_repository_records_its_path_commit_and_id(
    repo: Repository, tmp_path: Path
) -> None:
    other = Repository.init(tmp_path / "datasets")
    put(other, "train.csv", b"x,y\n1,2\n")
    oc = api.commit(other, "dataset v1", capture=False)
    api.tag_create(other, "v1")
    e = other.lookup(cid(oc), "train.csv")
    other.close()
    assert e is not None
    put(repo, "model.bin", b"w")
    info = api.commit(repo, "trained on v1", capture=False,
                      inputs=[f"ms://{tmp_path / 'datasets'}@v1/train.csv"])
    (rec,) = repo.get_commit(cid(info)).extra["inputs"]
    assert rec["repo"] == str((tmp_path / "datasets").resolve())
    assert rec["commit"] == oc.id and rec["id"] == e.id.hex() and rec["rev"] == "v1"
    with pytest.raises(RefNotFoundError, match="ms://"):
        api.commit(repo, "x", allow_empty=True, capture=False,
                   inputs=[f"ms://{tmp_path / 'datasets'}@nosuch/train.csv"])


def test_lineage_forward_and_reverse(repo: Repository) -> None:
    put(repo, "data/train.csv", b"v1\n")
    d1 = api.commit(repo, "data v1", capture=False)
    put(repo, "model.bin", b"m1")
    m1 = api.commit(repo, "model 1", inputs=[f"{d1.id}:data/train.csv"],
                    metrics={"acc": 0.8}, capture=False)
    put(repo, "model.bin", b"m2")
    m2 = api.commit(repo, "model 2 on the same data", inputs=["data/train.csv"], capture=False)
    put(repo, "data/train.csv", b"v2\n")
    d2 = api.commit(repo, "data v2", capture=False)
    put(repo, "model.bin", b"m3")
    m3 = api.commit(repo, "model 3", inputs=["data"], capture=False)
    api.alias_set(repo, "production", m1.id, "first")

    back = api.lineage(repo, f"{m1.id}:model.bin")
    assert back["commit"] == m1.id and back["metrics"] == {"acc": 0.8}
    assert back["introduced_by"]["commit"] == m1.id
    (inp,) = back["inputs"]
    assert inp["produced_by"]["commit"] == d1.id and inp["commit"] == d1.id

    # reverse: which commits used data v1 -- directly, by the same content, not the later v2
    used = api.lineage(repo, f"{d1.id}:data/train.csv")["used_by"]
    assert [u["commit"] for u in used] == [m2.id, m1.id]
    assert "@production" in next(u for u in used if u["commit"] == m1.id)["refs"]
    # data v2 was used through a folder input
    assert [u["commit"] for u in api.lineage(repo, f"{d2.id}:data/train.csv")["used_by"]] == [
        m3.id]
    # REV alone: commits that name that commit in an input
    assert [u["commit"] for u in api.lineage(repo, d1.id)["used_by"]] == [m1.id]
    # the current version of the data was introduced by "data v2", not by the later commit
    assert api.lineage(repo, "HEAD:data/train.csv")["introduced_by"]["commit"] == d2.id
    with pytest.raises(PathError):
        api.lineage(repo, "HEAD:nope")


def test_compare_metrics_params_inputs_packages_code_and_files(repo: Repository) -> None:
    put(repo, "data/train.csv", b"v1\n")
    put(repo, "model.bin", b"m1")
    env_a = {"python": "3.11.7", "platform": "Linux",
             "packages": {"torch": "2.3.0", "numpy": "1.26"},
             "git": {"commit": "a" * 40, "branch": "main", "dirty": False}}
    oid_a = repo.commit("a", extra={"metrics": {"acc": 0.8, "loss": 0.5, "per": {"cat": 0.7}},
                                    "params": {"lr": 0.1, "opt": "adam", "bs": 32},
                                    "environment": env_a,
                                    "inputs": [{"path": "data/train.csv", "kind": "file",
                                                "id": "11" * 32, "size": 3}]})
    put(repo, "model.bin", b"m2-longer")
    env_b = {"python": "3.11.7", "platform": "Linux",
             "packages": {"torch": "2.4.0", "safetensors": "0.4"},
             "git": {"commit": "b" * 40, "branch": "main", "dirty": True}}
    oid_b = repo.commit("b", extra={"metrics": {"acc": 0.9, "loss": 0.5, "f1": 0.7,
                                                "per": {"cat": 0.75}},
                                    "params": {"lr": 0.05, "opt": "adam"},
                                    "environment": env_b,
                                    "inputs": [{"path": "data/train.csv", "kind": "file",
                                                "id": "22" * 32, "size": 3}]})
    res = api.compare(repo, oid_a.hex(), oid_b.hex()).to_json()
    m = {x["name"]: x for x in res["metrics"]}
    assert m["acc"]["status"] == "changed" and m["acc"]["delta"] == pytest.approx(0.1)
    assert m["acc"]["rel"] == pytest.approx(0.125)
    assert m["loss"]["status"] == "same" and m["loss"]["delta"] == 0
    assert m["f1"] == {"name": "f1", "status": "added", "old": None, "new": 0.7,
                       "delta": None, "rel": None}
    assert m["per.cat"]["delta"] == pytest.approx(0.05)
    p = {x["name"]: x["status"] for x in res["params"]}
    assert p == {"bs": "removed", "lr": "changed", "opt": "same"}
    assert [(x["name"], x["status"]) for x in res["inputs"]] == [("data/train.csv", "changed")]
    assert {x["name"]: (x["status"], x["old"], x["new"]) for x in res["packages"]} == {
        "numpy": ("removed", "1.26", None), "safetensors": ("added", None, "0.4"),
        "torch": ("changed", "2.3.0", "2.4.0")}
    assert res["code"]["status"] == "changed" and res["code"]["new"]["dirty"] is True
    assert res["environment"] == [
        {"name": "platform", "status": "same", "old": "Linux", "new": "Linux", "delta": None,
         "rel": None},
        {"name": "python", "status": "same", "old": "3.11.7", "new": "3.11.7", "delta": None,
         "rel": None}]
    files = res["files"]["files"]
    assert [(f["path"], f["status"]) for f in files] == [("model.bin", "modified")]
    assert api.compare(repo, "HEAD~1", "HEAD", files=False).files is None


def test_cli_compare_and_lineage(tmp_path: Path) -> None:
    w = tmp_path / "w"
    ms = [sys.executable, "-m", "modelstore.cli.main"]

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*ms, "-C", str(w), *args], capture_output=True, text=True)
        assert (p.returncode == 0) == ok, p.stderr
        return p

    w.mkdir()
    run("init")
    (w / "train.csv").write_text("a\n1\n")
    (w / "model.bin").write_bytes(b"1")
    run("add", "train.csv", "model.bin")
    run("commit", "-m", "one", "--metric", "acc=0.5", "--param", "lr=0.1", "--input",
        "train.csv", "--no-capture")
    (w / "model.bin").write_bytes(b"22")
    run("add", "model.bin")
    run("commit", "-m", "two", "--metric", "acc=0.75", "--param", "lr=0.1", "--input",
        "HEAD:train.csv", "--no-capture")
    out = run("compare", "HEAD~1", "HEAD").stdout
    assert "acc" in out and "+0.25 (+50.0%)" in out and "M  model.bin" in out
    assert "lr" not in out  # unchanged params are not listed
    j = json.loads(run("compare", "HEAD~1", "HEAD", "--json", "--no-files").stdout)
    assert j["files"] is None and j["metrics"][0]["new"] == 0.75
    lin = run("lineage", "HEAD~1:train.csv").stdout
    assert "introduced by" in lin and "two" in lin and "one" in lin
    j = json.loads(run("lineage", "HEAD", "--json").stdout)
    assert j["inputs"][0]["path"] == "train.csv" and j["used_by"] == []
    bad = run("compare", "HEAD", "nosuch", ok=False)
    assert bad.stderr.count("\n") == 1 and "nosuch" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("commit", "-m", "x", "--input", "missing.csv", "--allow-empty", ok=False)
    assert "not tracked" in bad.stderr
