"""Registry aliases travel with the repository: push, fetch, pull and clone, with a lease."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from modelstore.cli.main import cli

from modelstore import Repository, api
from modelstore.chunker import ChunkerParams
from modelstore.errors import RefConflictError, RefNotFoundError
from modelstore.verify import verify
from tests.conftest import make_data

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


def new_repo(path: Path) -> Repository:
    return Repository.init(path, chunker=SMALL, pack_size=64 << 10)


def commit(repo: Repository, data: bytes, msg: str) -> bytes:
    p = repo.workdir / "model.bin"
    p.write_bytes(data)
    repo.add([str(p)])
    return repo.commit(msg)


@pytest.fixture
def team(tmp_path: Path) -> tuple[Repository, Repository, list[bytes]]:
    """``a`` with three commits and @production on the second, pushed; ``b`` cloned from it."""
    a = new_repo(tmp_path / "a")
    a.set_remote("origin", str(tmp_path / "remote"))
    cs = [commit(a, make_data(20_000, i), f"v{i}") for i in range(1, 4)]
    api.alias_set(a, "production", cs[1].hex(), "passed eval")
    res = api.push(a, aliases=True)
    assert res.aliases == {"production": cs[1].hex()}
    assert res.refs["refs/aliases/production"] == cs[1].hex()
    b = api.clone(str(tmp_path / "remote"), str(tmp_path / "b"))
    return a, b, cs


def test_clone_brings_aliases_with_audit_entry(
    team: tuple[Repository, Repository, list[bytes]],
) -> None:
    a, b, cs = team
    assert b.resolve("@production") == cs[1]
    assert api.alias_show(b, "production").commit == cs[1].hex()
    hist = api.alias_history(b, "production")
    assert len(hist) == 1
    assert hist[0]["command"] == "fetch" and hist[0]["message"] == "origin"
    assert hist[0]["user"] == "tester@example" and hist[0]["old"] is None
    # the lease ref is not a branch, and the remote-tracking value is recorded
    assert b.resolve("refs/remote-aliases/origin/production") == cs[1]
    assert [x.name for x in api.branches(b)] == ["main"]
    out = io.BytesIO()
    b.cat("@production", "model.bin", out)
    assert out.getvalue() == make_data(20_000, 2)
    assert verify(b, read_data=True).ok
    a.close()
    b.close()


def test_rollback_pushed_from_one_clone_is_followed_by_the_other(
    team: tuple[Repository, Repository, list[bytes]],
) -> None:
    a, b, cs = team
    api.alias_set(a, "production", cs[2].hex(), "ship v3")
    assert api.push(a, aliases=True).aliases == {"production": cs[2].hex()}
    assert api.fetch(b).aliases == {"production": cs[2].hex()}
    assert b.resolve("@production") == cs[2]
    # b rolls back (backwards: no fast-forward) and pushes; a follows
    api.rollback(b, "production", message="v3 regressed")
    assert b.resolve("@production") == cs[1]
    pushed = api.push(b, "origin", ["@production"])
    assert pushed.aliases == {"production": cs[1].hex()}
    res = api.fetch(a)
    assert res.aliases == {"production": cs[1].hex()} and not res.up_to_date
    assert a.resolve("@production") == cs[1]
    hist = api.alias_history(a, "production")
    assert [h["command"] for h in hist] == ["fetch", "alias", "alias"]
    assert hist[0]["old"] == cs[2].hex() and hist[0]["new"] == cs[1].hex()
    # nothing moved since: a second fetch changes nothing and says so
    again = api.fetch(a)
    assert again.aliases == {} and again.aliases_diverged == {} and again.up_to_date
    assert len(api.alias_history(a, "production")) == 3
    a.close()
    b.close()


def test_push_refused_when_remote_alias_moved_since_fetch(
    team: tuple[Repository, Repository, list[bytes]],
) -> None:
    a, b, cs = team
    api.alias_set(b, "production", cs[0].hex(), "b's pick")
    api.push(b, "origin", ["@production"])
    api.alias_set(a, "production", cs[2].hex(), "a's pick")
    with pytest.raises(RefConflictError, match="since you last fetched it; fetch first"):
        api.push(a, aliases=True)
    assert api.fetch(b).up_to_date  # the remote still holds b's pick
    assert b.resolve("refs/remote-aliases/origin/production") == cs[0]
    # --force overrides the lease
    forced = api.push(a, aliases=True, force=True)
    assert forced.aliases == {"production": cs[2].hex()}
    assert a.resolve("refs/remote-aliases/origin/production") == cs[2]
    a.close()
    b.close()


def test_diverged_alias_is_reported_and_left_alone(
    team: tuple[Repository, Repository, list[bytes]],
) -> None:
    a, b, cs = team
    api.alias_set(b, "production", cs[0].hex(), "b's pick")
    api.push(b, "origin", ["@production"])
    api.alias_set(a, "production", cs[2].hex(), "a's pick")
    res = api.fetch(a)
    assert res.aliases == {}
    assert res.aliases_diverged == {"production": {"local": cs[2].hex(), "remote": cs[0].hex()}}
    assert a.resolve("@production") == cs[2]  # untouched
    assert api.alias_history(a, "production")[0]["message"] == "a's pick"
    assert a.resolve("refs/remote-aliases/origin/production") == cs[0]
    # still diverged on the next fetch, until the user chooses
    assert api.fetch(a).aliases_diverged["production"]["remote"] == cs[0].hex()
    api.alias_set(a, "production", cs[0].hex(), "agree with b")
    assert api.fetch(a).aliases_diverged == {}
    # having seen b's value, a may now move it: the lease holds
    api.alias_set(a, "production", cs[2].hex(), "a decides after all")
    assert api.push(a, aliases=True).aliases == {"production": cs[2].hex()}
    assert api.fetch(b).aliases == {"production": cs[2].hex()}
    a.close()
    b.close()


def test_alias_to_a_commit_on_no_branch_carries_its_data(tmp_path: Path) -> None:
    a = new_repo(tmp_path / "a")
    a.set_remote("origin", str(tmp_path / "remote"))
    c1 = commit(a, make_data(20_000, 1), "v1")
    c2 = commit(a, make_data(40_000, 7), "experiment")
    api.alias_set(a, "staging", c2.hex(), "try the experiment")
    api.reset(a, c1.hex(), "hard")  # c2 is now on no branch: only the alias names it
    api.push(a)
    b = api.clone(str(tmp_path / "remote"), str(tmp_path / "b"))
    with pytest.raises(RefNotFoundError):
        b.resolve("@staging")
    res = api.push(a, aliases=True)
    assert res.aliases == {"staging": c2.hex()} and res.chunks > 0 and res.objects > 0
    fetched = api.fetch(b)
    assert fetched.aliases == {"staging": c2.hex()} and fetched.chunks > 0
    assert b.resolve("@staging") == c2 and b.resolve("main") == c1
    out = io.BytesIO()
    b.cat("@staging", "model.bin", out)
    assert out.getvalue() == make_data(40_000, 7)
    assert verify(b, read_data=True).ok
    a.close()
    b.close()


def test_lazy_clone_resolves_alias_and_reads_on_demand(
    team: tuple[Repository, Repository, list[bytes]], tmp_path: Path
) -> None:
    a, b, cs = team
    lz = api.clone(str(tmp_path / "remote"), str(tmp_path / "lazy"), lazy=True)
    assert lz.resolve("@production") == cs[1]
    out = io.BytesIO()
    lz.cat("@production", "model.bin", out)
    assert out.getvalue() == make_data(20_000, 2)
    for r in (a, b, lz):
        r.close()


def test_pull_brings_aliases(team: tuple[Repository, Repository, list[bytes]]) -> None:
    a, b, cs = team
    api.alias_set(a, "staging", cs[2].hex(), "candidate")
    api.push(a, all_branches=True)  # --all sends aliases too
    fetched, merged = api.pull(b)
    assert fetched.aliases == {"staging": cs[2].hex()} and merged.status == "up-to-date"
    assert b.resolve("@staging") == cs[2]
    a.close()
    b.close()


def run(*args: str, cwd: Path) -> str:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_push_aliases_and_fetch_lines(
    team: tuple[Repository, Repository, list[bytes]],
) -> None:
    a, b, cs = team
    aw, bw = a.workdir, b.workdir
    a.close()
    b.close()
    run("alias", "set", "production", cs[2].hex(), "-m", "ship v3", cwd=aw)
    out = run("push", "--aliases", "-q", cwd=aw)
    assert out == ""
    run("rollback", "production", "-m", "regressed", cwd=aw)
    out = run("push", "--aliases", cwd=aw)
    assert f"@production -> {cs[1].hex()[:12]} (on origin)" in out
    assert "aliases/" not in out.splitlines()[0]  # alias moves get lines of their own
    js = json.loads(run("fetch", "--json", cwd=bw))
    assert js["aliases"] == {} and js["aliases_diverged"] == {}  # b's value is the remote's
    run("alias", "set", "production", cs[0].hex(), "-m", "b's pick", cwd=bw)
    run("alias", "set", "production", cs[2].hex(), "-m", "a again", cwd=aw)
    run("push", "--aliases", cwd=aw)
    out = run("fetch", cwd=bw)
    assert "Everything up to date." in out
    assert f"@production: kept at {cs[0].hex()[:12]}; origin has {cs[2].hex()[:12]}" in out
    run("alias", "set", "production", cs[2].hex(), cwd=bw)
    run("alias", "set", "production", cs[1].hex(), "-m", "b moves on", cwd=bw)
    run("push", "origin", "@production", cwd=bw)
    out = run("fetch", cwd=aw)
    assert f"@production -> {cs[1].hex()[:12]} (from origin)" in out
    js = json.loads(run("alias", "history", "production", "--json", cwd=aw))
    assert js[0]["command"] == "fetch" and js[0]["user"] == "tester@example"
