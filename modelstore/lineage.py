"""Layer 4.5: provenance in the commit: metrics, params, inputs and the captured environment.

Everything goes into the commit's ``extra`` map, so it is hashed into the commit id and cannot
be rewritten silently. Values keep their types (int, float, bool, str, nested maps and lists);
the canonical encoding (codec.py) makes the id deterministic. ``capture()`` records the
enclosing git repository (commit, branch, dirty), Python, platform, the installed packages
(from distribution metadata, one pass, no subprocess per package), the command line, user,
host and time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelstore.errors import BadArgumentError
from modelstore.reflog import user_name

__all__ = ["capture", "export_record", "load_values_file", "parse_assignment", "provenance"]


def parse_value(text: str) -> Any:
    """``3`` → 3, ``3e-4`` → 0.0003, ``true`` → True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        return text
    if math.isnan(v) or math.isinf(v):
        raise BadArgumentError(f"{text!r}: NaN and infinity cannot be recorded")
    return v


def parse_assignment(text: str) -> tuple[str, Any]:
    """``name=value`` → ``(name, typed value)``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise BadArgumentError(f"{text!r}: expected NAME=VALUE")
    return name.strip(), parse_value(value.strip())


def _check(value: Any, where: str) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise BadArgumentError(f"{where}: NaN and infinity cannot be recorded")
    if isinstance(value, dict):
        return {str(k): _check(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_check(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def load_values_file(path: str) -> dict[str, Any]:
    """A JSON or YAML map of metrics or params."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BadArgumentError(f"{path}: {exc.strerror}") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise BadArgumentError(f"{path}: not valid JSON/YAML ({exc})") from None
    if not isinstance(data, dict):
        raise BadArgumentError(f"{path}: expected a map of NAME: VALUE")
    checked: dict[str, Any] = _check(data, path)
    return checked


def _git(cwd: Path, *args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def capture(workdir: Path) -> dict[str, Any]:
    """The environment a commit was made in (see the module docstring)."""
    from importlib import metadata

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "user": user_name(),
        "host": os.uname().nodename,
        "time": int(time.time()),
        "packages": dict(
            sorted(
                (str(d.metadata["Name"]).lower(), d.version)
                for d in metadata.distributions()
                if d.metadata["Name"]
            )
        ),
    }
    head = _git(workdir, "rev-parse", "HEAD")
    if head is not None:
        env["git"] = {
            "commit": head,
            "branch": _git(workdir, "rev-parse", "--abbrev-ref", "HEAD") or "",
            "dirty": bool(_git(workdir, "status", "--porcelain", "--untracked-files=no")),
        }
    return env


def provenance(
    *,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    inputs: list[str] | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``extra`` map of a commit (keys only when given)."""
    extra: dict[str, Any] = {}
    if metrics:
        extra["metrics"] = _check(metrics, "metrics")
    if params:
        extra["params"] = _check(params, "params")
    if inputs:
        extra["inputs"] = list(inputs)
    if environment:
        extra["environment"] = environment
    return extra


def export_record(repo: Any, commit_id: bytes) -> dict[str, Any]:
    """The ``modelstore.json`` that ``ms export`` writes beside the files.

    The commit, its provenance and every file's plain BLAKE3 (as ``b3sum`` prints it), so a
    deployment can prove what it runs.
    """
    c = repo.get_commit(commit_id)
    files = repo.commit_files(commit_id)
    return {
        "modelstore_export": 1,
        "commit": commit_id.hex(),
        "tree": c.tree_id.hex(),
        "message": c.message,
        "author": c.author,
        "time": c.time,
        "metrics": c.extra.get("metrics", {}),
        "params": c.extra.get("params", {}),
        "inputs": c.extra.get("inputs", []),
        "environment": c.extra.get("environment", {}),
        "files": {
            p: {
                "blake3": repo.get_manifest(e.id).content_hash.hex(),
                "size": e.size,
                "mode": f"{e.mode:o}",
            }
            for p, e in sorted(files.items())
        },
    }
