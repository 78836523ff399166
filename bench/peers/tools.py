"""How each tool is driven: set-up, ingest of one version, its store, restore to a new folder.

Every tool works on ``BASE/ws`` (the workspace that holds the one tracked file). Stores:

- ``ms``: ``ws/.ms`` (``ms init``; ``ms add`` + ``ms commit``; ``ms checkout HEAD --to``).
- ``lfs``: ``ws/.git`` including ``.git/lfs/objects`` (``git lfs track``; ``git add`` +
  ``git commit``; restore = ``git worktree add --detach OUT HEAD``, whose checkout runs
  the LFS smudge filter from the local object store, like ``ms checkout --to``).
- ``dvc``: ``ws/.dvc`` (``dvc init --no-scm``; ``dvc add``; restore = a new workspace
  with ``dvc init --no-scm``, the ``.dvc`` file and ``dvc cache dir`` pointing at the
  store (untimed), then ``dvc checkout`` (timed)).
- ``borg``: ``BASE/repo`` (``borg init -e none``; ``borg create REPO::vN .`` with its
  defaults: lz4, buzhash 19,23,21,4095; ``borg extract``).
- ``restic``: ``BASE/repo`` (``restic init`` with defaults: repository v2, zstd ``auto``,
  always encrypted; ``restic backup .``; ``restic restore latest --target OUT``).

Client-side caches (borg's chunk index, restic's cache, dvc's site cache) live in BASE
too; they are reported apart (``client_bytes``), not as stored bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Cmd:
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


def _version(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        p = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return (p.stdout.strip() or p.stderr.strip()).splitlines()[0] if p.returncode == 0 else "?"


class Tool:
    key = ""
    label = ""
    exes: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()  # Debian packages that provide it
    pip: tuple[str, ...] = ()  # or PyPI packages

    def missing(self) -> str | None:
        gone = [e for e in self.exes if shutil.which(e) is None]
        return f"{', '.join(gone)} not found on PATH" if gone else None

    def version(self) -> str:
        return _version([self.exes[0], "--version"])

    def env(self, base: Path) -> dict[str, str]:
        return {}

    def ws(self, base: Path) -> Path:
        return base / "ws"

    def store(self, base: Path) -> Path:
        raise NotImplementedError

    def client_dirs(self, base: Path) -> list[Path]:
        return []

    def setup(self, base: Path) -> list[Cmd]:
        raise NotImplementedError

    def ingest(self, base: Path, name: str, tag: str) -> list[Cmd]:
        raise NotImplementedError

    def restore_setup(self, base: Path, out: Path, name: str) -> list[Cmd]:
        return []

    def restore(self, base: Path, out: Path) -> list[Cmd]:
        raise NotImplementedError

    def restored(self, out: Path, name: str) -> Path | None:
        """Where the restored copy of the tracked file is (None: not found)."""
        p = out / name
        if p.is_file():
            return p
        hits = [q for q in out.rglob(name) if q.is_file()]
        return hits[0] if len(hits) == 1 else None

    def cmd(self, argv: list[str], cwd: Path, base: Path) -> Cmd:
        return Cmd(argv, cwd, self.env(base))


class Ms(Tool):
    key, label, exes = "ms", "modelstore", ("ms",)

    def __init__(self, ms: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.ms = ms or [sys.executable, "-m", "modelstore.cli.main"]
        self.extra_env = env or {}

    def missing(self) -> str | None:
        return None if Path(self.ms[0]).exists() or shutil.which(self.ms[0]) else "ms not found"

    def version(self) -> str:
        return _version([*self.ms, "--version"], self.extra_env)

    def env(self, base: Path) -> dict[str, str]:
        return {"MS_AUTHOR": "bench <bench@example>", **self.extra_env}

    def store(self, base: Path) -> Path:
        return self.ws(base) / ".ms"

    def setup(self, base: Path) -> list[Cmd]:
        return [self.cmd([*self.ms, "init", str(self.ws(base))], base, base)]

    def ingest(self, base: Path, name: str, tag: str) -> list[Cmd]:
        ws = self.ws(base)
        return [
            self.cmd([*self.ms, "add", "-q", name], ws, base),
            self.cmd([*self.ms, "commit", "-m", tag], ws, base),
        ]

    def restore(self, base: Path, out: Path) -> list[Cmd]:
        ws = self.ws(base)
        return [self.cmd([*self.ms, "checkout", "-q", "HEAD", "--to", str(out)], ws, base)]


class GitLfs(Tool):
    key, label, exes = "lfs", "Git LFS", ("git", "git-lfs")
    apt = ("git", "git-lfs")

    def version(self) -> str:
        return f"{_version(['git-lfs', 'version'])}; {_version(['git', '--version'])}"

    def env(self, base: Path) -> dict[str, str]:
        # a private global config: nothing is read from or written to ~/.gitconfig
        return {
            "GIT_CONFIG_GLOBAL": str(base / "gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example",
        }

    def store(self, base: Path) -> Path:
        return self.ws(base) / ".git"

    def setup(self, base: Path) -> list[Cmd]:
        ws = self.ws(base)
        (base / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
        return [
            self.cmd(["git", "init", "-q", str(ws)], base, base),
            self.cmd(["git", "lfs", "install", "--local"], ws, base),
            self.cmd(["git", "lfs", "track", "*.safetensors", "*.csv"], ws, base),
            self.cmd(["git", "add", ".gitattributes"], ws, base),
            self.cmd(["git", "commit", "-q", "-m", "lfs"], ws, base),
        ]

    def ingest(self, base: Path, name: str, tag: str) -> list[Cmd]:
        ws = self.ws(base)
        return [
            self.cmd(["git", "add", name], ws, base),
            self.cmd(["git", "commit", "-q", "-m", tag], ws, base),
        ]

    def restore(self, base: Path, out: Path) -> list[Cmd]:
        return [
            self.cmd(
                ["git", "worktree", "add", "-q", "--detach", str(out), "HEAD"], self.ws(base), base
            )
        ]


class Dvc(Tool):
    key, label, exes = "dvc", "DVC", ("dvc",)
    pip = ("dvc",)

    def env(self, base: Path) -> dict[str, str]:
        return {
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(base / "dvc-site"),
            "DVC_GLOBAL_CONFIG_DIR": str(base / "dvc-global"),
        }

    def store(self, base: Path) -> Path:
        return self.ws(base) / ".dvc"

    def client_dirs(self, base: Path) -> list[Path]:
        return [base / "dvc-site"]

    def setup(self, base: Path) -> list[Cmd]:
        ws = self.ws(base)
        ws.mkdir(parents=True, exist_ok=True)
        return [
            self.cmd(["dvc", "init", "-q", "--no-scm"], ws, base),
            self.cmd(["dvc", "config", "core.analytics", "false"], ws, base),
        ]

    def ingest(self, base: Path, name: str, tag: str) -> list[Cmd]:
        return [self.cmd(["dvc", "add", "-q", name], self.ws(base), base)]

    def restore_setup(self, base: Path, out: Path, name: str) -> list[Cmd]:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.ws(base) / f"{name}.dvc", out / f"{name}.dvc")
        return [
            self.cmd(["dvc", "init", "-q", "--no-scm"], out, base),
            self.cmd(["dvc", "config", "core.analytics", "false"], out, base),
            self.cmd(["dvc", "cache", "dir", str(self.store(base) / "cache")], out, base),
        ]

    def restore(self, base: Path, out: Path) -> list[Cmd]:
        return [self.cmd(["dvc", "checkout", "-q"], out, base)]


class Borg(Tool):
    key, label, exes = "borg", "borg", ("borg",)
    apt = ("borgbackup",)

    def env(self, base: Path) -> dict[str, str]:
        return {
            "BORG_BASE_DIR": str(base / "borg-home"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def store(self, base: Path) -> Path:
        return base / "repo"

    def client_dirs(self, base: Path) -> list[Path]:
        return [base / "borg-home"]

    def setup(self, base: Path) -> list[Cmd]:
        self.ws(base).mkdir(parents=True, exist_ok=True)
        return [self.cmd(["borg", "init", "-e", "none", str(self.store(base))], base, base)]

    def ingest(self, base: Path, name: str, tag: str) -> list[Cmd]:
        return [
            self.cmd(["borg", "create", f"{self.store(base)}::{tag}", "."], self.ws(base), base)
        ]

    def restore_setup(self, base: Path, out: Path, name: str) -> list[Cmd]:
        out.mkdir(parents=True, exist_ok=True)
        return []

    def restore(self, base: Path, out: Path) -> list[Cmd]:
        # the last archive is v2 (its name is the tag the runner gave it)
        return [self.cmd(["borg", "extract", f"{self.store(base)}::v2"], out, base)]


class Restic(Tool):
    key, label, exes = "restic", "restic", ("restic",)
    apt = ("restic",)

    def version(self) -> str:
        return _version(["restic", "version"])

    def env(self, base: Path) -> dict[str, str]:
        return {
            "RESTIC_REPOSITORY": str(self.store(base)),
            "RESTIC_PASSWORD_FILE": str(base / "restic-password"),
            "RESTIC_CACHE_DIR": str(base / "restic-cache"),
        }

    def store(self, base: Path) -> Path:
        return base / "repo"

    def client_dirs(self, base: Path) -> list[Path]:
        return [base / "restic-cache"]

    def setup(self, base: Path) -> list[Cmd]:
        self.ws(base).mkdir(parents=True, exist_ok=True)
        (base / "restic-password").write_text("bench\n")
        return [self.cmd(["restic", "init", "-q"], base, base)]

    def ingest(self, base: Path, name: str, tag: str) -> list[Cmd]:
        return [
            self.cmd(
                ["restic", "backup", "-q", "--host", "bench", "--tag", tag, "."],
                self.ws(base),
                base,
            )
        ]

    def restore(self, base: Path, out: Path) -> list[Cmd]:
        return [self.cmd(["restic", "restore", "-q", "latest", "--target", str(out)], base, base)]


def all_tools(ms: list[str] | None = None, ms_env: dict[str, str] | None = None) -> dict[str, Tool]:
    tools: list[Tool] = [Ms(ms, ms_env), GitLfs(), Dvc(), Borg(), Restic()]
    return {t.key: t for t in tools}


def try_install(tool: Tool, log: object = print) -> str:
    """Install a missing tool with apt-get or pip; returns what happened (a message)."""
    msgs: list[str] = []
    if tool.apt and shutil.which("apt-get") and os.geteuid() == 0:
        p = subprocess.run(
            ["apt-get", "install", "-y", "-q", *tool.apt],
            capture_output=True,
            text=True,
            check=False,
        )
        msgs.append(f"apt-get install {' '.join(tool.apt)}: exit {p.returncode}")
    if tool.pip and tool.missing():
        p = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *tool.pip],
            capture_output=True,
            text=True,
            check=False,
        )
        msgs.append(f"pip install {' '.join(tool.pip)}: exit {p.returncode}")
    if not msgs:
        msgs.append("no package manager to install it with")
    return "; ".join(msgs)
