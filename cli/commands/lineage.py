"""Commands that look back across experiments: compare and lineage."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from ..render import emit_json, say

if TYPE_CHECKING:
    from modelstore.compare import CompareResult, ValueChange

__all__ = ["COMMANDS"]

_MARK = {"changed": "~", "added": "+", "removed": "-", "same": " "}


def _v(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return "-" if x is None else str(x)


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _delta(ch: ValueChange) -> str:
    if ch.delta is None:
        return ""
    rel = f" ({ch.rel:+.1%})" if ch.rel is not None else ""
    return f"{ch.delta:+.6g}{rel}"


def _table(title: str, rows: list[ValueChange], *, all_rows: bool) -> None:
    shown = [r for r in rows if all_rows or r.status != "same"]
    if not shown:
        return
    say(f"{title}:")
    width = max(len(r.name) for r in shown)
    for r in shown:
        old, new = _v(r.old), _v(r.new)
        say(f"  {_MARK[r.status]} {r.name:<{width}}  {old:>12} -> {new:<12} {_delta(r)}")


@click.command()
@click.argument("rev_a", metavar="A")
@click.argument("rev_b", metavar="B")
@click.option("--no-files", is_flag=True, help="Skip the file diff (only provenance).")
@click.option("--no-tensors", is_flag=True, help="Do not compare safetensors tensor by tensor.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def compare(rev_a: str, rev_b: str, no_files: bool, no_tensors: bool, as_json: bool) -> None:
    """Compare two versions as experiments: A is the old one, B the new one.

    Prints metrics with their deltas, changed params, changed inputs (by content id), changed
    package versions, the code commit, Python and platform, then the file changes with their
    per-tensor (safetensors) and per-dataset (CSV, Parquet) summaries.
    """
    from modelstore import api

    res = api.compare(".", rev_a, rev_b, files=not no_files, tensors=not no_tensors)
    if as_json:
        emit_json(res.to_json())
        return
    _render(res)


def _render(res: CompareResult) -> None:
    from .diff import _render as render_diff

    for side, label in ((res.old, "A"), (res.new, "B")):
        say(f"{label}: {side['commit'][:12]} {side['rev']}  {side['message']}")
    say("")
    _table("metrics", res.metrics, all_rows=True)
    _table("params", res.params, all_rows=False)
    inputs = [i for i in res.inputs if i.status != "same"]
    if inputs:
        say("inputs:")
        for i in inputs:
            ids = [(x.get("id") or "")[:12] if isinstance(x, dict) else "" for x in (i.old, i.new)]
            change = f"  {ids[0] or '-'} -> {ids[1] or '-'}" if any(ids) else ""
            say(f"  {_MARK[i.status]} {i.name}{change}")
    if res.code is not None and res.code.status != "same":
        a, b = res.code.old or {}, res.code.new or {}
        say(
            f"code: git {a.get('commit', '-')[:12]}{'*' if a.get('dirty') else ''} -> "
            f"{b.get('commit', '-')[:12]}{'*' if b.get('dirty') else ''}"
        )
    _table("environment", res.environment, all_rows=False)
    _table("packages", res.packages, all_rows=False)
    if not any(
        r.status != "same" for r in (*res.metrics, *res.params, *res.inputs, *res.packages)
    ) and (res.code is None or res.code.status == "same"):
        say("provenance: no differences")
    if res.files is not None:
        say("")
        if res.files.files:
            say("files:")
            render_diff(res.files, False)
        else:
            say("files: no differences")


@click.command(name="lineage")
@click.argument("spec", metavar="REV[:PATH]", default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def lineage_cmd(spec: str, as_json: bool) -> None:
    """Where a version came from, and what used it.

    For REV: its inputs (each with the commit that produced that data version), code commit,
    environment, metrics and params, and the commits that name REV in an input. For REV:PATH:
    also the commit that introduced this version of PATH, and every commit that used exactly
    this content (by id) as an input, on any branch, tag or alias.
    """
    from modelstore import api

    info = api.lineage(".", spec)
    if as_json:
        emit_json(info)
        return
    who = f"{info['author']}, {_when(info['time'])}"
    say(f"commit {info['commit'][:12]}  {info['message']}  ({who})")
    target = info.get("target")
    if target is not None:
        say(f"{target['kind']} {target['path'] or '/'}  id {target['id'][:12]}  {target['size']} B")
        intro = info.get("introduced_by")
        if intro:
            say(f"  introduced by {intro['commit'][:12]}  {intro['message']}")
    for kind in ("metrics", "params"):
        if info[kind]:
            say(f"{kind}: " + ", ".join(f"{k}={_v(v)}" for k, v in sorted(info[kind].items())))
    code = info.get("code")
    if code:
        dirty = ", dirty" if code.get("dirty") else ""
        say(f"code: git {code.get('commit', '')[:12]} ({code.get('branch', '')}{dirty})")
    env = info.get("environment") or {}
    if env:
        say(
            f"environment: python {env.get('python', '?')} on {env.get('platform', '?')}; "
            f"{env.get('packages', 0)} packages; "
            f"by {env.get('user', '?')} on {env.get('host', '?')}"
        )
    say("inputs:" if info["inputs"] else "inputs: none recorded")
    for rec in info["inputs"]:
        prod = rec.get("produced_by")
        tail = f"  <- {prod['commit'][:12]} {prod['message']}" if prod else ""
        say(f"  {rec['describe']}{tail}")
    say("used by:" if info["used_by"] else "used by: no commit names this version as an input")
    for hit in info["used_by"]:
        refs = f" ({', '.join(hit['refs'])})" if hit["refs"] else ""
        say(f"  {hit['commit'][:12]}{refs}  {hit['message']}  [as {hit['as']}]")


COMMANDS = [compare, lineage_cmd]
