"""Wrong usage: every ``ms`` command, given no repository, an unknown revision, a bad option or
bad arguments, prints one line on stderr (no traceback) and the exit code documented in
docs/guide.md ("Exit codes"). The full matrix runs in-process through ``main()`` (the real
error mapping, fast); a representative subset runs as real processes, including a file that
vanishes while ``ms add`` reads the one before it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from modelstore.cli.main import cli, main

from modelstore import Repository, api, errors
from tests.conftest import make_data

ROOT = Path(__file__).resolve().parents[2]


def documented_exit_codes() -> dict[str, int]:
    """``class name -> exit code`` from ARCHITECTURE.md §5, each code listed in guide.md."""
    arch = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| `\w+` \|", arch, flags=re.MULTILINE)
    guide = (ROOT / "docs" / "guide.md").read_text()
    codes = set(re.findall(r"^\| (\d+) \| ", guide.split("## Exit codes", 1)[1], re.MULTILINE))
    assert rows and codes, "an exit code table in the docs is gone"
    assert {code for code, _ in rows} <= codes, "guide.md lacks a code ARCHITECTURE.md lists"
    return {name: int(code) for code, name in rows}


EXIT = documented_exit_codes()
USAGE = 2  # click's usage errors (documented: "click's own code for its errors")


def test_the_documented_exit_codes_are_the_real_ones() -> None:
    for name, code in EXIT.items():
        assert getattr(errors, name).exit_code == code, name
    assert set(EXIT) >= {n for n in errors.__all__ if n.endswith("Error")} | {"MsError"}


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += command_paths(cmd, (*prefix, name))
        else:
            out.append(" ".join((*prefix, name)))
    return sorted(out)


# For each command: arguments that are valid on their own, the exit code outside any
# repository, and (where it takes a revision, ref or named thing) arguments naming one that
# does not exist. ``{d}`` is a fresh directory outside the repository.
TABLE: dict[str, tuple[list[str], str, list[str] | None]] = {
    "add": (["a.txt"], "NotARepositoryError", None),
    "alias history": (["prod"], "NotARepositoryError", ["alias", "history", "nope"]),
    "alias list": ([], "NotARepositoryError", None),
    "alias set": (["prod", "HEAD"], "NotARepositoryError", ["alias", "set", "prod", "nope"]),
    "alias show": (["prod"], "NotARepositoryError", ["alias", "show", "nope"]),
    "branch": ([], "NotARepositoryError", ["branch", "b2", "nope"]),
    "cat": (["HEAD:a.txt"], "NotARepositoryError", ["cat", "nope:a.txt"]),
    "checkout": (["HEAD"], "NotARepositoryError", ["checkout", "nope"]),
    "clone": (["{d}/no-such-remote", "{d}/c"], "BadArgumentError", None),
    "commit": (["-m", "x"], "NotARepositoryError", None),
    "compare": (["HEAD", "HEAD"], "NotARepositoryError", ["compare", "HEAD", "nope"]),
    "diff": ([], "NotARepositoryError", ["diff", "nope"]),
    "export": (["HEAD", "{d}/x"], "NotARepositoryError", ["export", "nope", "{d}/x"]),
    "fetch": ([], "NotARepositoryError", ["fetch", "nope"]),
    "gc": (["--dry-run"], "NotARepositoryError", None),
    "init": (["{d}/a-file"], "usage", None),
    "lineage": ([], "NotARepositoryError", ["lineage", "nope"]),
    "log": ([], "NotARepositoryError", ["log", "nope"]),
    "ls": ([], "NotARepositoryError", ["ls", "nope"]),
    "merge": (["main"], "NotARepositoryError", ["merge", "nope"]),
    "pull": ([], "NotARepositoryError", ["pull", "nope"]),
    "push": ([], "NotARepositoryError", ["push", "origin", "nope"]),
    "reflog": ([], "NotARepositoryError", ["reflog", "nope"]),
    "remote add": (["o", "{d}/r"], "NotARepositoryError", None),
    "remote list": ([], "NotARepositoryError", None),
    "remote remove": (["o"], "NotARepositoryError", ["remote", "remove", "nope"]),
    "remote set-url": (["o", "{d}/r"], "NotARepositoryError", ["remote", "set-url", "nope", "x"]),
    "reset": (["HEAD"], "NotARepositoryError", ["reset", "nope"]),
    "restore": (["a.txt"], "NotARepositoryError", ["restore", "--source", "nope", "a.txt"]),
    "revert": (["HEAD"], "NotARepositoryError", ["revert", "nope"]),
    "rm": (["a.txt"], "NotARepositoryError", None),
    "rollback": (["prod"], "NotARepositoryError", ["rollback", "prod", "--to", "nope"]),
    "serve": (["{d}/no-such-dir", "--no-auth"], "BadArgumentError", None),
    "show": ([], "NotARepositoryError", ["show", "nope"]),
    "stats": ([], "NotARepositoryError", None),
    "status": ([], "NotARepositoryError", None),
    "switch": (["main"], "NotARepositoryError", ["switch", "nope"]),
    "tag": ([], "NotARepositoryError", ["tag", "t2", "nope"]),
    "verify": ([], "NotARepositoryError", None),
}
def test_the_table_covers_every_command() -> None:
    missing = sorted(set(command_paths()) - set(TABLE))
    assert not missing, f"add these new commands to TABLE in {__file__}: {missing}"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path,
        args: list[str]) -> tuple[int, str, str]:
    """``main(args)`` in ``cwd``: ``(exit code, stderr, stdout)``."""
    monkeypatch.chdir(cwd)  # restored afterwards, whatever -C did
    capsys.readouterr()
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.err, cap.out


def assert_one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ms: error: ") and "Traceback" not in err, err
    assert "internal error" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with one commit, a tag and an alias."""
    w = tmp_path_factory.mktemp("usage") / "w"
    r = Repository.init(w)
    (w / "a.txt").write_text("a\n")
    r.add([str(w / "a.txt")])
    r.commit("one")
    r.close()
    api.tag_create(w, "t1")
    api.alias_set(w, "prod", "HEAD")
    api.remote_add(w, "origin", str(w.parent / "remote"))
    return w


def _fill(args: list[str], d: Path) -> list[str]:
    return [a.replace("{d}", str(d)) for a in args]


@pytest.mark.parametrize("cmd", sorted(TABLE))
def test_outside_a_repository(cmd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    args, err_class, _ = TABLE[cmd]
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    (outside / "a.txt").write_text("a\n")
    (tmp_path / "a-file").write_text("not a folder\n")
    code, err, _ = run(monkeypatch, capsys, outside, [*cmd.split(), *_fill(args, tmp_path)])
    line = assert_one_line(err)
    assert code == (USAGE if err_class == "usage" else EXIT[err_class]), line
    if err_class == "NotARepositoryError":
        assert "not a modelstore repository" in line and "ms init" in line
    assert not (outside / ".ms").exists()


def test_a_missing_or_broken_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run(monkeypatch, capsys, tmp_path, ["-C", str(tmp_path / "nope"), "status"])
    assert code == USAGE and "cannot change to" in assert_one_line(err)
    (tmp_path / "half" / ".ms").mkdir(parents=True)  # a half-made repository: no FORMAT
    code, err, _ = run(monkeypatch, capsys, tmp_path, ["-C", str(tmp_path / "half"), "log"])
    assert code == EXIT["NotARepositoryError"] and "ms init" in assert_one_line(err)
    (tmp_path / "half" / ".ms" / "FORMAT").write_text("something else\n")
    code, err, _ = run(monkeypatch, capsys, tmp_path, ["-C", str(tmp_path / "half"), "log"])
    assert code == EXIT["FormatError"], err
    assert_one_line(err)
    (tmp_path / "half" / ".ms" / "FORMAT").write_text("modelstore repository format 9\n")
    code, err, _ = run(monkeypatch, capsys, tmp_path, ["-C", str(tmp_path / "half"), "log"])
    assert code == EXIT["UnsupportedFormatError"] and "upgrade" in assert_one_line(err)


@pytest.mark.parametrize("cmd", sorted(c for c in TABLE if TABLE[c][2] is not None))
def test_an_unknown_revision_or_name(cmd: str, work: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = TABLE[cmd][2]
    assert args is not None
    code, err, _ = run(monkeypatch, capsys, work, ["-C", str(work), *_fill(args, tmp_path)])
    line = assert_one_line(err)
    assert code == EXIT["RefNotFoundError"], line
    assert "nope" in line


@pytest.mark.parametrize("cmd", sorted(TABLE))
def test_an_unknown_option(cmd: str, work: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = run(monkeypatch, capsys, work, [*cmd.split(), "--no-such-option"])
    line = assert_one_line(err)
    assert code == USAGE and out == ""
    assert "No such option '--no-such-option'" in line and f"(see `ms {cmd} -h`)" in line


BAD_ARGUMENTS = [
    (["add"], "Missing argument"),
    (["commit"], "Missing option '-m'"),
    (["commit", "-m", " "], "empty commit message"),
    (["checkout"], "Missing argument"),
    (["checkout", "HEAD", "../outside"], "outside the repository"),
    (["cat", "HEAD:"], "give REV:PATH"),
    (["cat", "HEAD:../../etc/passwd"], "not allowed"),
    (["log", "-n", "-1"], "-1 is not in the range"),
    (["log", "-n", "many"], "is not a valid integer"),
    (["branch", "bad..name"], "invalid"),
    (["branch", "-d"], "NAME"),
    (["switch", "-c", "-x"], "No such option"),
    (["tag", "-d"], "NAME"),
    (["tag", "-m", "a message"], "NAME"),
    (["tag", "bad..tag"], "invalid"),
    (["reset"], "Missing argument"),
    (["merge", "--resolve", "a.txt"], "ours"),
    (["alias", "set", "bad..alias", "HEAD"], "invalid"),
    (["remote", "add", "bad/name", "/tmp/x"], "remote name"),
    (["serve", "--port", "http"], "is not a valid integer"),
    (["serve", ".", "--no-auth", "--host", "0.0.0.0"], "only allowed on 127.0.0.1"),
    (["clone"], "Missing argument"),
    (["rm"], "Missing argument"),
    (["rm", "never-tracked.txt"], "not tracked"),
    (["add", "missing.bin"], "no such file"),
    (["add", ".ms/FORMAT"], ".ms"),
    (["restore"], "Missing argument"),
    (["nosuchcommand"], "No such command"),
]


@pytest.mark.parametrize(("args", "words"), BAD_ARGUMENTS, ids=lambda v: " ".join(v) if
                         isinstance(v, list) else None)
def test_bad_arguments(args: list[str], words: str, work: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run(monkeypatch, capsys, work, args)
    line = assert_one_line(err)
    assert words in line, line
    documented = {USAGE, EXIT["BadArgumentError"], EXIT["PathError"], EXIT["RefNotFoundError"]}
    assert code in documented, (code, line)


# -- real processes -------------------------------------------------------------------------------


def ms(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelstore.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_real_processes_print_one_line_and_the_documented_code(work: Path, tmp_path: Path) -> None:
    for args, cwd, code in (
        (["status"], tmp_path, EXIT["NotARepositoryError"]),
        (["checkout", "nope"], work, EXIT["RefNotFoundError"]),
        (["add", "--bogus"], work, USAGE),
        (["-C", str(tmp_path / "missing"), "log"], tmp_path, USAGE),
        (["cat", "HEAD:missing.txt"], work, EXIT["PathError"]),
        (["init", str(work)], tmp_path, EXIT["RepositoryExistsError"]),
    ):
        proc = ms(*args, cwd=cwd)
        assert proc.returncode == code, (args, proc.stderr)
        assert_one_line(proc.stderr)


def _wait_until_open(pid: int, path: Path, timeout: float = 30.0) -> bool:
    """Wait until process ``pid`` has ``path`` open (``/proc``); False if it exits first."""
    deadline = time.monotonic() + timeout
    target = str(path)
    while time.monotonic() < deadline:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
        time.sleep(0.0005)
    return False


def test_a_file_that_vanishes_mid_add(tmp_path: Path) -> None:
    """``ms add big small``: small is deleted while big is being read; one line, exit 7."""
    r = Repository.init(tmp_path / "w")
    r.close()
    w = tmp_path / "w"
    with open(w / "big.bin", "wb") as f:
        f.truncate(256 << 20)  # sparse: instant to make, a moment to read
    (w / "small.bin").write_bytes(make_data(1000, 1))
    proc = subprocess.Popen([sys.executable, "-m", "modelstore.cli.main", "-C", str(w), "add",
                             "-q", "big.bin", "small.bin"], stderr=subprocess.PIPE, text=True)
    try:
        if not _wait_until_open(proc.pid, w / "big.bin"):
            pytest.fail("ms add never opened big.bin")
        (w / "small.bin").unlink()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT["PathError"], err
    assert "small.bin: vanished while being added" in assert_one_line(err)
    r = Repository.open(w)
    assert r.status().staged == [] and not os.listdir(r.ms_dir / "tmp")  # all or nothing
    from modelstore.verify import verify

    assert verify(r, read_data=True).ok
    r.close()
    assert ms("add", "-q", "big.bin", cwd=w).returncode == 0  # and it simply works again


def test_a_file_that_vanishes_or_changes_during_add_in_process(tmp_path: Path) -> None:
    """The same through the library, made deterministic by the progress callback."""
    from modelstore.errors import PathError

    r = Repository.init(tmp_path / "w")
    (r.workdir / "a.bin").write_bytes(make_data(3 << 20, 1))
    (r.workdir / "b.bin").write_bytes(make_data(1000, 2))

    def delete_b(_n: int) -> None:
        (r.workdir / "b.bin").unlink(missing_ok=True)

    with pytest.raises(PathError, match=r"b\.bin: vanished while being added"):
        r.add([str(r.workdir / "a.bin"), str(r.workdir / "b.bin")], progress=delete_b)

    def grow_a(_n: int) -> None:
        with open(r.workdir / "a.bin", "ab") as f:
            f.write(b"more")

    with pytest.raises(PathError, match=r"a\.bin: changed while being added"):
        r.add([str(r.workdir / "a.bin")], progress=grow_a)
    assert r.status().staged == []
    r.add([str(r.workdir / "a.bin")])
    assert r.status().staged == [("added", "a.bin")]
    r.close()
