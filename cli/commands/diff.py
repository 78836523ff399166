"""The command that compares versions: diff (files, new chunk bytes, tensors, datasets)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click

from ..render import emit_json, human_size, say

if TYPE_CHECKING:
    from modelstore.datasets import DatasetDiff, StatChange
    from modelstore.diff import DiffResult, FileDiff, TensorDiff

__all__ = ["COMMANDS"]

_CODES = {"added": "A", "removed": "D", "modified": "M", "renamed": "R"}
_ORDER = ("changed", "reshaped", "added", "removed", "unchanged")


class _DiffCommand(click.Command):
    """Remembers the paths after ``--`` (click drops the separator itself)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["ms_diff_paths"] = args[i + 1 :]
            args = args[:i]
        return super().parse_args(ctx, args)


@click.command(cls=_DiffCommand)
@click.argument("args", nargs=-1, metavar="[REV [REV]] [--] [PATH...]")
@click.option("--stat", is_flag=True, help="Only the file summary, no tensor or dataset tables.")
@click.option(
    "--staged", "--cached", "staged", is_flag=True, help="Compare REV (default HEAD) to the index."
)
@click.option("--no-tensors", is_flag=True, help="Do not compare safetensors tensor by tensor.")
@click.option(
    "--no-datasets", is_flag=True, help="Do not summarize CSV/TSV/Parquet schemas and statistics."
)
@click.option("--exit-code", is_flag=True, help="Exit 1 if anything differs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def diff(
    ctx: click.Context,
    args: tuple[str, ...],
    stat: bool,
    staged: bool,
    no_tensors: bool,
    no_datasets: bool,
    exit_code: bool,
    as_json: bool,
) -> None:
    """Show changed files, the new chunk bytes they cost, and per-tensor changes.

    With no REV, compares the index with the working tree; with one, REV with the working tree
    (or, with --staged, with the index); with two, the first with the second. PATHs limit the
    diff to files at or below them. For safetensors files (recognised by content) each tensor
    is reported as added, removed, reshaped, changed (largest absolute and relative L2
    difference) or unchanged; unchanged tensors stored in the same chunks are not read. For
    CSV, TSV and Parquet files, columns added, removed or retyped, the row count and the
    statistics that changed (mean, std, min, max, nulls) are shown; both versions are read.
    """
    from modelstore import api
    from modelstore import diff as msdiff

    with api.open_repo(".") as repo:
        revs, paths = msdiff.split_args(repo, args, ctx.meta.get("ms_diff_paths"))
        res = msdiff.diff(
            repo,
            revs[0] if revs else None,
            revs[1] if len(revs) > 1 else None,
            paths,
            staged=staged,
            tensors=not (no_tensors or stat),
            datasets=not (no_datasets or stat),
        )
    if as_json:
        emit_json(res.to_json())
    else:
        _render(res, stat)
    if exit_code and res.files:
        raise click.exceptions.Exit(1)


def _name(f: FileDiff) -> str:
    return f"{f.old_path} -> {f.path}" if f.status == "renamed" else f.path


def _sizes(f: FileDiff) -> str:
    if f.status == "added":
        return human_size(f.new_size)
    if f.status in ("removed", "renamed") or f.old_size == f.new_size:
        return human_size(f.old_size)
    return f"{human_size(f.old_size)} -> {human_size(f.new_size)}"


def _render(res: DiffResult, stat: bool) -> None:
    if not res.files:
        say(f"no differences ({res.old.label} -> {res.new.label})")
        return
    width = min(60, max(len(_name(f)) for f in res.files))
    size_w = max(len(_sizes(f)) for f in res.files)
    for f in res.files:
        line = f"{_CODES[f.status]}  {_name(f):<{width}}  {_sizes(f):>{size_w}}"
        if f.status in ("added", "modified"):
            line += f"  +{human_size(f.new_bytes)} new"
        if f.old_mode and f.new_mode and f.old_mode != f.new_mode:
            line += f"  mode {f.old_mode} -> {f.new_mode}"
        say(line.rstrip())
    s = res.summary
    parts = [f"{s[k]} {k}" for k in ("modified", "added", "removed", "renamed") if s[k]]
    say(
        f"{s['files']} file(s) changed ({', '.join(parts)}); "
        f"{human_size(s['new_bytes'])} of new chunks ({res.old.label} -> {res.new.label})"
    )
    if stat:
        return
    for f in res.files:
        if f.tensor_error:
            say("")
            say(f"{f.path}: not compared tensor by tensor: {f.tensor_error}")
        if f.tensors is None:
            continue
        counts = f.tensors.counts
        say("")
        summary = ", ".join(f"{counts[k]} {k}" for k in _ORDER if counts[k])
        say(
            f"{f.path}: {len(f.tensors.tensors)} tensor(s): {summary or 'none'} "
            f"(read {human_size(f.tensors.bytes_read)})"
        )
        if f.tensors.metadata_changed:
            say("  __metadata__ changed")
        shown = [t for t in f.tensors.tensors if t.status != "unchanged"]
        shown.sort(key=lambda t: (_ORDER.index(t.status), t.name))
        name_w = min(60, max((len(t.name) for t in shown), default=0))
        rows = [(t, *_tensor_detail(t)) for t in shown]
        shape_w = max((len(shape) for _, shape, _ in rows), default=0)
        for t, shape, values in rows:
            say(f"  {t.status:<9} {t.name:<{name_w}}  {shape:<{shape_w}}  {values}".rstrip())
    for f in res.files:
        if f.dataset_error:
            say("")
            say(f"{f.path}: not compared as a dataset: {f.dataset_error}")
        if f.dataset is not None:
            say("")
            _render_dataset(f.path, f.dataset)


def _val(x: float | None, sig: int = 6, sign: str = "") -> str:
    """Ints as they are; floats to ``sig`` digits, without an exponent below 1e15."""
    if x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:{sign}d}"
    return f"{x:{sign}.0f}" if 10**sig <= abs(x) < 1e15 else f"{x:{sign}.{sig}g}"


def _change(name: str, s: StatChange) -> str:
    """``mean 2.5 -> 3 (+0.5)``; shares of nulls in percent, with enough decimals to differ."""
    if name == "null_share":
        pct = [None if v is None else 100 * v for v in (s.old, s.new, s.delta)]
        dec = 1
        if pct[2] is not None and 0 < abs(pct[2]) < 0.05:
            dec = min(6, 1 - math.floor(math.log10(abs(pct[2]))))
        old, new = (("-" if v is None else f"{v:.{dec}f}%") for v in pct[:2])
        share = "" if pct[2] is None else f" ({pct[2]:+.{dec}f}%)"
        return f"nulls {old} -> {new}{share}"
    by = "" if s.delta is None else f" ({_val(s.delta, 4, '+')})"
    return f"{name} {_val(s.old)} -> {_val(s.new)}{by}"


def _render_dataset(path: str, d: DatasetDiff) -> None:
    """Schema changes, rows old -> new, and the statistics that changed, per column."""
    fmt = d.new_format if d.old_format == d.new_format else f"{d.old_format} -> {d.new_format}"
    rows = (
        f"rows {d.old_rows} -> {d.new_rows} ({d.rows_delta:+d})"
        if d.rows_delta
        else f"{d.new_rows} rows"
    )
    if not d.changed:
        say(f"{path}: {fmt}, {rows}; schema and statistics unchanged")
        return
    say(f"{path}: {fmt}, {rows}")
    lines = [("added", c.name, c.type) for c in d.added]
    lines += [("removed", c.name, c.type) for c in d.removed]
    lines += [("retyped", c.name, f"{c.old_type} -> {c.new_type}") for c in d.retyped]
    lines += [
        ("changed", c.name, "  ".join(_change(k, s) for k, s in c.stats.items() if s.changed))
        for c in d.columns
        if c.changed
    ]
    name_w = min(40, max(len(n) for _, n, _ in lines)) if lines else 0
    for what, name, detail in lines:
        say(f"  {what:<8} {name:<{name_w}}  {detail}".rstrip())


def _shape(dtype: str | None, shape: list[int] | None) -> str:
    return f"{dtype} [{', '.join(str(d) for d in shape or [])}]"


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"


def _tensor_detail(t: TensorDiff) -> tuple[str, str]:
    """``(dtype and shape, differences)`` for one row of the tensor table."""
    if t.status == "added":
        return _shape(t.new_dtype, t.new_shape), ""
    if t.status == "removed":
        return _shape(t.old_dtype, t.old_shape), ""
    if t.status == "reshaped":
        return f"{_shape(t.old_dtype, t.old_shape)} -> {_shape(t.new_dtype, t.new_shape)}", ""
    if t.max_abs is None:
        return _shape(t.new_dtype, t.new_shape), ""
    return _shape(t.new_dtype, t.new_shape), f"max_abs {_fmt(t.max_abs)}  rel_l2 {_fmt(t.rel_l2)}"


COMMANDS = [diff]
