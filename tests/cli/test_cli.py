"""The ``ms`` CLI in-process (click's runner) and as a real process: exit codes and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from modelstore.cli.main import cli, main

from modelstore.errors import (
    BadArgumentError,
    NotARepositoryError,
    PathError,
    RefNotFoundError,
    UncommittedChangesError,
)
from tests.conftest import make_data


def run(*args: str, cwd: Path, expect: int = 0) -> str:
    """Run ms in-process through main() so error mapping is exercised."""
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli, list(args), standalone_mode=False, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            from modelstore.errors import MsError

            exc = result.exception
            code = exc.exit_code if isinstance(exc, MsError) else -1
            out = f"{result.output}ERR {exc}"
        else:
            code = result.exit_code
            out = result.output
    finally:
        os.chdir(old)
    assert code == expect, f"ms {' '.join(args)} exited {code}, wanted {expect}: {out}"
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    run("init", str(w), cwd=tmp_path)
    return w


def test_cli_init_add_commit_log_show_json(work: Path) -> None:
    (work / "m.bin").write_bytes(make_data(100_000, 1))
    add = json.loads(run("add", "--json", "m.bin", cwd=work))
    assert add["added"] == ["m.bin"] and add["bytes_read"] == 100_000
    st = json.loads(run("status", "--json", cwd=work))
    assert st["staged"] == [{"change": "added", "path": "m.bin"}]
    assert st["branch"] == "main" and st["head"] is None and st["clean"] is False
    c = json.loads(run("commit", "-m", "first", "--json", cwd=work))
    assert len(c["id"]) == 64 and c["message"] == "first" and c["parents"] == []
    log = json.loads(run("log", "--json", cwd=work))
    assert [e["id"] for e in log] == [c["id"]]
    assert set(log[0]) >= {"id", "tree", "parents", "author", "time", "date", "message"}
    show = json.loads(run("show", "--json", cwd=work))
    assert show["commit"]["id"] == c["id"]
    assert show["files"] == [
        {
            "path": "m.bin",
            "type": "file",
            "size": 100_000,
            "mode": "644",
            "id": show["files"][0]["id"],
        }
    ]
    stats = json.loads(run("stats", "--json", cwd=work))
    assert stats["logical_bytes"] == 100_000 and stats["chunks"] >= 1 and stats["packs"] == 1
    assert stats["stored_bytes"] > 0
    ls = json.loads(run("ls", "--json", cwd=work))
    assert [i["path"] for i in ls] == ["m.bin"]


def test_cli_human_output(work: Path) -> None:
    (work / "a.txt").write_text("hello\n")
    run("add", "a.txt", cwd=work)
    cid = run("commit", "-m", "msg", cwd=work).strip()
    assert len(cid) == 64
    assert cid[:12] in run("log", "--oneline", cwd=work)
    assert "nothing to commit, working tree clean" in run("status", cwd=work)
    assert "a.txt" in run("show", "HEAD", cwd=work)


def test_cli_cat_and_checkout_to(work: Path, tmp_path: Path) -> None:
    data = make_data(50_000, 2)
    (work / "x.bin").write_bytes(data)
    run("add", "x.bin", cwd=work)
    run("commit", "-m", "c", cwd=work)
    proc = subprocess.run(
        [sys.executable, "-m", "modelstore.cli.main", "cat", "HEAD:x.bin"],
        cwd=work,
        capture_output=True,
        check=True,
    )
    assert proc.stdout == data
    out = json.loads(run("checkout", "HEAD", "--to", str(tmp_path / "o"), "--json", cwd=work))
    assert out["written"] == 1
    assert (tmp_path / "o" / "x.bin").read_bytes() == data


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("log", "nosuchrev"), RefNotFoundError.exit_code),
        (("cat", "HEAD:missing"), PathError.exit_code),
        (("add", "missing.bin"), PathError.exit_code),
        (("commit", "-m", "  "), BadArgumentError.exit_code),
    ],
)
def test_cli_error_exit_codes(work: Path, args: tuple[str, ...], code: int) -> None:
    (work / "a").write_text("a")
    run("add", "a", cwd=work)
    run("commit", "-m", "c", cwd=work)
    run(*args, cwd=work, expect=code)


def test_cli_not_a_repository(tmp_path: Path) -> None:
    run("status", cwd=tmp_path, expect=NotARepositoryError.exit_code)


def test_cli_checkout_refuses_local_changes(work: Path) -> None:
    (work / "a").write_text("1")
    run("add", "a", cwd=work)
    run("commit", "-m", "1", cwd=work)
    (work / "a").write_text("2")
    run("add", "a", cwd=work)
    run("commit", "-m", "2", cwd=work)
    (work / "a").write_text("local")
    run("checkout", "HEAD~1", cwd=work, expect=UncommittedChangesError.exit_code)


def test_cli_process_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    for args, code in (
        (["status"], NotARepositoryError.exit_code),
        (["log", "--max-count", "x"], 2),
        (["nosuchcommand"], 2),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "modelstore.cli.main", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip()


def test_cli_main_returns_exit_code(tmp_path: Path) -> None:
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["status"]) == NotARepositoryError.exit_code
        assert main(["init", "r"]) == 0
        assert main(["init", "r"]) == 4
        assert main(["-C", "r", "status"]) == 0
    finally:
        os.chdir(old)


def test_cli_version_and_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelstore.cli.main", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ms, version" in proc.stdout
    helptext = subprocess.run(
        [sys.executable, "-m", "modelstore.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for verb in (
        "init",
        "add",
        "status",
        "commit",
        "log",
        "show",
        "checkout",
        "cat",
        "ls",
        "rm",
        "restore",
        "stats",
    ):
        assert verb in helptext


def test_cli_installed_entry_point_is_ours() -> None:
    import modelstore.cli.main as m

    assert Path(m.__file__).parent.name == "cli"
    assert m.__name__ == "modelstore.cli.main"
