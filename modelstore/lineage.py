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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from modelstore.errors import (
    BadArgumentError,
    MsError,
    NotARepositoryError,
    PathError,
    RefNotFoundError,
)
from modelstore.objects import TreeEntry
from modelstore.reflog import user_name
from modelstore.repository import MS_DIR, Repository

__all__ = [
    "capture",
    "export_record",
    "lineage",
    "load_values_file",
    "parse_assignment",
    "parse_ms_url",
    "provenance",
    "resolve_inputs",
    "is_repo",
    "split_ms_path",
]


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
    inputs: list[dict[str, Any]] | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``extra`` map of a commit (keys only when given)."""
    extra: dict[str, Any] = {}
    if metrics:
        extra["metrics"] = _check(metrics, "metrics")
    if params:
        extra["params"] = _check(params, "params")
    if inputs:
        extra["inputs"] = [_check(x, "inputs") for x in inputs]
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


# -- inputs: what a version was made from ---------------------------------------------------


def is_repo(folder: str) -> bool:
    """A folder holding ``.ms`` (the test ``ms://`` URLs are split by)."""
    return os.path.isdir(os.path.join(folder, MS_DIR))


def split_ms_path(
    path: str, is_repo: Callable[[str], bool] = is_repo
) -> tuple[str, str | None, str]:
    """``REPO[@REV][/PATH]`` (an ``ms://`` URL without the scheme) → ``(REPO, REV, PATH)``.

    The one rule for ``ms://`` URLs (the fsspec filesystem and ``--input`` share it): the
    separator is the first ``@`` whose left side is a repository folder (holding ``.ms``), so
    ``@`` may appear in folder names, in revisions (``@production``, ``main@{1}``) and in PATH;
    REV ends at the next ``/`` (write a ``/`` inside REV as ``%2F``) and is returned still
    percent-encoded. Without ``@REV`` the repository is the nearest folder holding ``.ms``
    along the path and REV is None.

    Raises:
        NotARepositoryError: If no prefix of the path is a repository folder.
        BadArgumentError: If ``@`` is followed by an empty revision.
    """
    at = path.find("@")
    while at > 0:
        repo = path[:at]
        if not repo.endswith("/") and is_repo(repo):
            rev, _, inner = path[at + 1 :].partition("/")
            if not rev:
                raise BadArgumentError(f"ms://{path}: empty revision after '@'")
            return repo, rev, inner.strip("/")
        at = path.find("@", at + 1)
    parts = path.split("/")
    for i in range(len(parts), 0, -1):
        repo = "/".join(parts[:i])
        if repo and is_repo(repo):
            return repo, None, "/".join(parts[i:]).strip("/")
    raise NotARepositoryError(
        f"ms://{path}: no modelstore repository (a folder with {MS_DIR}) in this path; "
        "expected ms://REPO[@REV]/PATH"
    )


def parse_ms_url(url: str) -> tuple[str, str, str]:
    """``ms://REPO[@REV]/PATH`` → ``(REPO, REV, PATH)``, REV decoded and ``HEAD`` if absent."""
    if not url.startswith("ms://"):
        raise BadArgumentError(f"{url!r}: expected ms://REPO@REV/PATH")
    repo, rev, path = split_ms_path(url[len("ms://") :])
    return repo, unquote(rev) if rev is not None else "HEAD", path


def _entry_record(repo: Repository, e: TreeEntry, path: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "path": path,
        "kind": "dir" if e.is_dir else "file",
        "id": e.id.hex(),
        "size": e.size,
    }
    if not e.is_dir:
        rec["blake3"] = repo.get_manifest(e.id).content_hash.hex()
    return rec


def _at_commit(repo: Repository, rev: str, path: str, spec: str) -> dict[str, Any]:
    cid = repo.resolve(rev)
    e = repo.lookup(cid, path)
    if e is None:
        raise PathError(f"input {spec!r}: {path or '/'} is not in {rev}")
    rec = _entry_record(repo, e, path)
    rec.update(rev=rev, commit=cid.hex())
    return rec


def _remote_of(repo: Repository, rev: str) -> str | None:
    """The remote a ``REMOTE/BRANCH`` revision names, if it does."""
    name = rev.split("~", 1)[0].split("^", 1)[0]
    if "/" in name and name.split("/", 1)[0] in repo.config.remotes:
        return name.split("/", 1)[0]
    return None


def resolve_inputs(repo: Repository, specs: list[str]) -> list[dict[str, Any]]:
    """Pin each input to a content id, so the record stays true when paths move on.

    - ``PATH``: a tracked path as staged for this commit (file manifest or folder tree id);
    - ``REV:PATH``: a path at a commit of this repository (``origin/main:PATH`` also records
      the remote's URL);
    - ``ms://REPO@REV/PATH``: a path at a commit of another modelstore repository on disk;
    - any other ``scheme://`` URL: recorded as given (data outside modelstore, no content id).
    """
    out: list[dict[str, Any]] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            raise BadArgumentError("empty --input")
        if spec.startswith("ms://"):
            other, rev, path = parse_ms_url(spec)
            loc = Path(other).expanduser().resolve()
            try:
                with Repository.open(loc, search_parents=False) as o:
                    rec = _at_commit(o, rev, path, spec)
                    rec["repo"] = str(o.workdir)
            except RefNotFoundError as exc:
                raise RefNotFoundError(f"input {spec!r}: {exc.message}") from None
            out.append(rec)
            continue
        if "://" in spec:
            out.append({"url": spec})
            continue
        rev, sep, path = spec.partition(":")
        if sep and rev:
            found: dict[str, Any] | None
            try:
                found = _at_commit(repo, rev, path.strip("/"), spec)
            except RefNotFoundError:
                found = None
            if found is not None:
                rec = found
                remote = _remote_of(repo, rev)
                if remote is not None:
                    rec.update(remote=remote, url=repo.remote_url(remote))
                out.append(rec)
                continue
        try:
            rel = repo.relpath(spec)
        except PathError:
            if os.path.isabs(spec):
                raise
            rel = spec.strip("/")  # called from outside the working tree: repository-relative
        e = repo.staged_entry(rel)
        if e is None:
            raise PathError(
                f"input {spec!r} is not tracked: `ms add` it first, or name a version as REV:PATH"
            )
        out.append(_entry_record(repo, e, rel))
    return out


def describe_input(rec: Any) -> str:
    """One line for an input record (older commits may hold plain strings)."""
    if not isinstance(rec, dict):
        return str(rec)
    if "url" in rec and "id" not in rec:
        return str(rec["url"])
    where = rec.get("path") or "/"
    if "repo" in rec:
        head = f"ms://{rec['repo']}@{rec.get('rev', '')}/{where}"
    elif "commit" in rec:
        head = f"{rec['commit'][:12]}:{where}"
    else:
        head = where
    return f"{head} ({rec.get('kind', '?')} {str(rec.get('id', ''))[:12]})"


# -- lineage: where a version came from, and what used it -----------------------------------


def _brief(oid: bytes, c: Any) -> dict[str, Any]:
    return {
        "commit": oid.hex(),
        "message": c.message.splitlines()[0] if c.message else "",
        "author": c.author,
        "time": c.time,
    }


def introduced_by(repo: Repository, commit_id: bytes, path: str) -> dict[str, Any] | None:
    """The oldest commit on ``commit_id``'s first-parent line whose ``path`` has today's id."""
    e = repo.lookup(commit_id, path)
    if e is None:
        return None
    found = None
    for oid, c in repo.log(commit_id.hex(), first_parent=True):
        cur = repo.lookup(oid, path)
        if cur is None or cur.id != e.id:
            break
        found = _brief(oid, c)
    return found


def _all_commits(repo: Repository) -> dict[bytes, tuple[Any, list[str]]]:
    """Every commit reachable from any ref (branches, tags, aliases, remotes), with its refs.

    One walk in one snapshot: each commit is read once, however many refs reach it.
    """
    from modelstore import refs as _refs

    seen: dict[bytes, tuple[Any, list[str]]] = {}
    with repo.db.read() as txn:
        starts = [(n, oid) for n, oid, _ in _refs.list_refs(txn, "refs/") if oid is not None]
        head = repo.head(txn)[1]
        if head is not None:
            starts.append(("HEAD", head))
        tips: list[tuple[str, bytes]] = []
        for name, oid in starts:
            try:
                tips.append((name, repo.resolve(oid.hex(), txn)))  # peels annotated tags
            except MsError:
                continue
        stack: list[bytes] = [tip for _, tip in tips]
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            c = repo.get_commit(cid, txn)
            seen[cid] = (c, [])
            stack.extend(p for p in c.parents if p not in seen)
    for name, tip in tips:
        seen[tip][1].append(_short_ref(name))
    return seen


def _short_ref(name: str) -> str:
    for pre, shown in (
        ("refs/heads/", ""),
        ("refs/tags/", "tag: "),
        ("refs/aliases/", "@"),
        ("refs/remotes/", ""),
    ):
        if name.startswith(pre):
            return shown + name.removeprefix(pre)
    return name


def _contains(repo: Repository, rec: dict[str, Any], at: bytes, path: str, oid: str) -> bool:
    """A folder input that held exactly this version of ``path`` (same place, same id)."""
    base = str(rec.get("path", ""))
    if rec.get("kind") != "dir" or "repo" in rec or not path.startswith(f"{base}/" if base else ""):
        return False
    commit = bytes.fromhex(rec["commit"]) if "commit" in rec else at
    try:
        e = repo.lookup(commit, path)
    except MsError:
        return False
    return e is not None and e.id.hex() == oid


def used_by(
    repo: Repository,
    *,
    content_id: str | None,
    commit_id: str | None,
    path: str | None = None,
) -> list[dict[str, Any]]:
    """Commits whose inputs name ``content_id`` (a file or folder version) or ``commit_id``.

    Newest first; each hit says how the input was named and which refs point at the commit.
    """
    hits: list[dict[str, Any]] = []
    commits = _all_commits(repo)
    for cid, (c, names) in commits.items():
        for rec in c.extra.get("inputs", []) or []:
            if not isinstance(rec, dict):
                continue
            if (
                (content_id and rec.get("id") == content_id)
                or (commit_id and rec.get("commit") == commit_id and "repo" not in rec)
                or (content_id and path and _contains(repo, rec, cid, path, content_id))
            ):
                hit = _brief(cid, c)
                hit["as"] = describe_input(rec)
                hit["refs"] = sorted(names)
                hits.append(hit)
                break
    gen = _generations({bytes.fromhex(h["commit"]) for h in hits}, commits)
    hits.sort(key=lambda h: (-h["time"], -gen[bytes.fromhex(h["commit"])], h["commit"]))
    return hits


def _generations(
    ids: set[bytes], commits: dict[bytes, tuple[Any, list[str]]]
) -> dict[bytes, int]:
    """Each commit's distance from its oldest root, so children sort before parents."""
    gen: dict[bytes, int] = {}
    for start in ids:
        stack = [start]
        while stack:
            oid = stack[-1]
            if oid in gen:
                stack.pop()
                continue
            parents = commits[oid][0].parents
            todo = [p for p in parents if p not in gen]
            if todo:
                stack.extend(todo)
                continue
            gen[oid] = 1 + max((gen[p] for p in parents), default=0)
            stack.pop()
    return gen


def lineage(repo: Repository, rev: str, path: str | None = None) -> dict[str, Any]:
    """Where ``rev`` (or ``rev:path``) came from, and which commits used it as an input."""
    cid = repo.resolve(rev)
    c = repo.get_commit(cid)
    env = c.extra.get("environment") or {}
    out: dict[str, Any] = {
        **_brief(cid, c),
        "rev": rev,
        "metrics": c.extra.get("metrics", {}),
        "params": c.extra.get("params", {}),
        "code": env.get("git"),
        "environment": {
            k: env[k] for k in ("python", "platform", "user", "host", "time", "argv") if k in env
        }
        | ({"packages": len(env["packages"])} if "packages" in env else {}),
    }
    if path is not None:
        path = path.strip("/")
        e = repo.lookup(cid, path)
        if e is None:
            raise PathError(f"{path or '/'}: not in {rev}")
        out["target"] = _entry_record(repo, e, path)
        out["introduced_by"] = introduced_by(repo, cid, path)
    inputs = []
    for rec in c.extra.get("inputs", []) or []:
        item: dict[str, Any] = dict(rec) if isinstance(rec, dict) else {"spec": str(rec)}
        item["describe"] = describe_input(rec)
        if isinstance(rec, dict) and "id" in rec and "repo" not in rec:
            at = bytes.fromhex(rec["commit"]) if "commit" in rec else cid
            try:
                item["produced_by"] = introduced_by(repo, at, rec.get("path", ""))
            except MsError:
                item["produced_by"] = None
        inputs.append(item)
    out["inputs"] = inputs
    if path is not None:
        out["used_by"] = used_by(
            repo, content_id=out["target"]["id"], commit_id=None, path=path
        )
    else:
        out["used_by"] = used_by(repo, content_id=None, commit_id=cid.hex())
    return out
