"""Layer 7: ``ms compare A B``: how two versions differ as experiments, not only as files.

Metrics with deltas, changed params, changed inputs (by content id), changed package versions,
the code commit, the Python and platform, and the file changes with their per-tensor and
per-dataset summaries (from ``diff``). Everything is read from the two commits' provenance,
so comparing needs no working tree and no data beyond what ``diff`` reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from modelstore import diff as _diff
from modelstore import lineage as _lineage
from modelstore.diff import DiffResult
from modelstore.repository import Repository

__all__ = ["CompareResult", "ValueChange", "compare", "flatten"]


def flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested maps as dotted names: ``{"per_class": {"cat": 0.9}}`` → ``per_class.cat``."""
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flatten(v, f"{name}.")
        else:
            yield name, v


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class ValueChange:
    """One metric, param, package or input on both sides.

    ``status``: ``changed``, ``added``, ``removed`` or ``same``. ``delta`` and ``rel`` (the
    change relative to the old value) are set for numbers on both sides.
    """

    name: str
    status: str
    old: Any = None
    new: Any = None
    delta: float | None = None
    rel: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _changes(old: dict[str, Any], new: dict[str, Any], *, numeric: bool) -> list[ValueChange]:
    out = []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            out.append(ValueChange(name, "removed", old=old[name]))
        elif name not in old:
            out.append(ValueChange(name, "added", new=new[name]))
        else:
            a, b = old[name], new[name]
            same = a == b and type(a) is type(b)
            ch = ValueChange(name, "same" if same else "changed", a, b)
            if numeric and _is_num(a) and _is_num(b):
                ch.delta = b - a
                # no relative change from zero (unless it stayed zero)
                ch.rel = (b - a) / abs(a) if a else (0.0 if b == a else None)
            out.append(ch)
    return out


def _input_key(rec: Any) -> str:
    """Inputs pair up by where they are (repository and path), not by their content."""
    if not isinstance(rec, dict):
        return str(rec)
    if "id" not in rec:
        return str(rec.get("url", rec))
    return f"{rec.get('repo', '')}|{rec.get('path', '')}"


def _input_name(rec: Any) -> str:
    """Where an input is, without its version: the path (in another repository: its URL)."""
    if isinstance(rec, dict) and "path" in rec:
        return str(rec["path"]) if "repo" not in rec else f"ms://{rec['repo']}/{rec['path']}"
    return _lineage.describe_input(rec)


def _inputs(old: list[Any], new: list[Any]) -> list[ValueChange]:
    a = {_input_key(r): r for r in old}
    b = {_input_key(r): r for r in new}
    out = []
    for key in sorted(a.keys() | b.keys()):
        ra, rb = a.get(key), b.get(key)
        name = _input_name(ra if ra is not None else rb)
        if rb is None:
            out.append(ValueChange(name, "removed", old=ra))
        elif ra is None:
            out.append(ValueChange(name, "added", new=rb))
        else:
            same = (ra.get("id") if isinstance(ra, dict) else ra) == (
                rb.get("id") if isinstance(rb, dict) else rb
            )
            out.append(ValueChange(name, "same" if same else "changed", ra, rb))
    return out


@dataclass
class CompareResult:
    """Two commits side by side (see the module docstring)."""

    old: dict[str, Any]
    new: dict[str, Any]
    metrics: list[ValueChange] = field(default_factory=list)
    params: list[ValueChange] = field(default_factory=list)
    inputs: list[ValueChange] = field(default_factory=list)
    packages: list[ValueChange] = field(default_factory=list)
    environment: list[ValueChange] = field(default_factory=list)
    code: ValueChange | None = None
    files: DiffResult | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``packages`` lists only the ones that differ)."""
        return {
            "old": self.old,
            "new": self.new,
            "metrics": [m.to_json() for m in self.metrics],
            "params": [p.to_json() for p in self.params],
            "inputs": [i.to_json() for i in self.inputs],
            "packages": [p.to_json() for p in self.packages if p.status != "same"],
            "environment": [e.to_json() for e in self.environment],
            "code": self.code.to_json() if self.code is not None else None,
            "files": self.files.to_json() if self.files is not None else None,
        }


def _side(oid: bytes, c: Any, rev: str) -> dict[str, Any]:
    return {
        "rev": rev,
        "commit": oid.hex(),
        "message": c.message.splitlines()[0] if c.message else "",
        "author": c.author,
        "time": c.time,
    }


def compare(
    repo: Repository, rev_a: str, rev_b: str, *, files: bool = True, tensors: bool = True
) -> CompareResult:
    """Compare commit ``rev_a`` (old) with ``rev_b`` (new).

    ``files``: include the file diff (with per-tensor summaries when ``tensors``).
    """
    a, b = repo.resolve(rev_a), repo.resolve(rev_b)
    ca, cb = repo.get_commit(a), repo.get_commit(b)
    xa, xb = ca.extra, cb.extra
    ea, eb = xa.get("environment") or {}, xb.get("environment") or {}
    res = CompareResult(_side(a, ca, rev_a), _side(b, cb, rev_b))
    res.metrics = _changes(
        dict(flatten(xa.get("metrics") or {})), dict(flatten(xb.get("metrics") or {})), numeric=True
    )
    res.params = _changes(
        dict(flatten(xa.get("params") or {})), dict(flatten(xb.get("params") or {})), numeric=True
    )
    res.inputs = _inputs(list(xa.get("inputs") or []), list(xb.get("inputs") or []))
    if ea.get("packages") or eb.get("packages"):
        res.packages = _changes(ea.get("packages") or {}, eb.get("packages") or {}, numeric=False)
    res.environment = _changes(
        {k: ea[k] for k in ("python", "platform") if k in ea},
        {k: eb[k] for k in ("python", "platform") if k in eb},
        numeric=False,
    )
    ga, gb = ea.get("git"), eb.get("git")
    if ga or gb:
        status = "same" if ga == gb else ("added" if not ga else "removed" if not gb else "changed")
        res.code = ValueChange("git", status, ga, gb)
    if files:
        res.files = _diff.diff(repo, rev_a, rev_b, tensors=tensors)
    return res
