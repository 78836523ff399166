"""Registry aliases: set, @alias revisions, history with who and why, rollback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelstore import Repository, api
from modelstore.errors import BadArgumentError, RefNotFoundError
from modelstore.verify import verify


def commit(repo: Repository, data: bytes, msg: str) -> bytes:
    p = repo.workdir / "model.bin"
    p.write_bytes(data)
    repo.add([str(p)])
    return repo.commit(msg)


def test_alias_set_resolve_history_and_rollback(repo: Repository) -> None:
    c1 = commit(repo, b"v1", "v1")
    c2 = commit(repo, b"v2", "v2")
    c3 = commit(repo, b"v3", "v3")
    api.alias_set(repo, "production", c1.hex(), "first release")
    api.alias_set(repo, "production", "HEAD~1", "better eval")
    assert repo.resolve("@production") == c2
    assert repo.resolve("@production~1") == c1
    api.alias_set(repo, "production", "HEAD", "ship v3")
    hist = api.alias_history(repo, "production")
    assert [h["message"] for h in hist] == ["ship v3", "better eval", "first release"]
    assert hist[0]["user"] == "tester@example" and hist[0]["old"] == c2.hex()
    back = api.rollback(repo, "production", message="v3 regressed")
    assert back.commit == c2.hex() and repo.resolve("@production") == c2
    assert api.alias_history(repo, "production")[0]["command"] == "rollback"
    assert repo.resolve("@production@{1}") == c3
    api.rollback(repo, "production", to=c1.hex())
    assert repo.resolve("@production") == c1
    assert [a.name for a in api.alias_list(repo)] == ["production"]
    assert verify(repo).ok


def test_alias_errors(repo: Repository) -> None:
    c1 = commit(repo, b"v1", "v1")
    with pytest.raises(RefNotFoundError):
        repo.resolve("@nope")
    api.alias_set(repo, "staging", c1.hex())
    with pytest.raises(BadArgumentError, match="no earlier target"):
        api.rollback(repo, "staging")
    with pytest.raises(BadArgumentError):
        api.alias_set(repo, "bad name", c1.hex())


def test_alias_cli(tmp_path: Path) -> None:
    w = tmp_path / "w"
    r = Repository.init(w)
    commit(r, b"a", "a")
    commit(r, b"b", "b")
    r.close()

    def ms(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "modelstore.cli.main", "-C", str(w), *args],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout

    ms("alias", "set", "production", "HEAD~1", "-m", "release")
    ms("alias", "set", "production", "HEAD", "-m", "next")
    assert json.loads(ms("alias", "show", "production", "--json"))["message"] == "next"
    ms("rollback", "production", "-m", "bad")
    shown = json.loads(ms("log", "@production", "--json"))
    assert shown[0]["message"] == "a"
    assert "bad" in ms("alias", "history", "production")
