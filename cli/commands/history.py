"""Commands that read history: log, show, ls, cat, stats."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..render import emit_json, human_size, progress, say

if TYPE_CHECKING:
    from modelstore.datasets import DatasetSummary
    from modelstore.verify import Problem, RepairReport

__all__ = ["COMMANDS"]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command()
@click.argument("rev", default="HEAD")
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option("--graph", is_flag=True, help="Draw the history's branches and merges.")
@click.option("--first-parent", is_flag=True, help="Follow only the first parent of merges.")
@click.option("-n", "--max-count", "limit", type=click.IntRange(min=0), help="Show at most N.")
@click.option("--metrics", "metric_names", metavar="A,B", help="A table of these metrics.")
@click.option("--params", "param_names", metavar="A,B", help="...and of these params.")
@json_opt
def log(
    rev: str,
    oneline: bool,
    graph: bool,
    first_parent: bool,
    limit: int | None,
    metric_names: str | None,
    param_names: str | None,
    as_json: bool,
) -> None:
    """Show the commit history from REV (default HEAD), newest first."""
    from modelstore import api

    commits = api.log(".", rev, limit, first_parent=first_parent)
    if metric_names or param_names:
        _metrics_table(commits, metric_names, param_names, as_json)
        return
    if as_json:
        emit_json([c.to_json() for c in commits])
        return
    lanes = GraphLanes() if graph else None
    for c in commits:
        first = c.message.splitlines()[0] if c.message else ""
        prefix, after = lanes.place(c.id, c.parents) if lanes else ("", [])
        if oneline or lanes:
            say(f"{prefix}{c.id[:12]} {first}" if oneline else f"{prefix}commit {c.id}")
            if not oneline:
                pad = prefix.replace("*", "|")
                if len(c.parents) > 1:
                    say(pad + "Merge: " + " ".join(p[:12] for p in c.parents))
                say(f"{pad}Author: {c.author}")
                say(f"{pad}Date:   {c.date}")
                for line in c.message.splitlines():
                    say(f"{pad}    {line}")
            for line in after:
                say(line)
            continue
        say(f"commit {c.id}")
        if len(c.parents) > 1:
            say("Merge: " + " ".join(p[:12] for p in c.parents))
        say(f"Author: {c.author}")
        say(f"Date:   {c.date}")
        say("")
        for line in c.message.splitlines():
            say(f"    {line}")
        say("")


def _metrics_table(
    commits: list[Any], metric_names: str | None, param_names: str | None, as_json: bool
) -> None:
    cols = [("metrics", n) for n in (metric_names or "").split(",") if n] + [
        ("params", n) for n in (param_names or "").split(",") if n
    ]
    rows = [
        {
            "id": c.id,
            "message": c.message.splitlines()[0] if c.message else "",
            **{n: c.extra.get(kind, {}).get(n) for kind, n in cols},
        }
        for c in commits
    ]
    if as_json:
        emit_json(rows)
        return
    names = [n for _, n in cols]
    say(f"{'commit':12}  " + "  ".join(f"{n:>10}" for n in names) + "  message")
    for r in rows:
        vals = "  ".join(f"{'-' if r[n] is None else r[n]!s:>10}" for n in names)
        say(f"{r['id'][:12]}  {vals}  {r['message']}")


class GraphLanes:
    """A small `git log --graph`: one column per line of history being followed."""

    def __init__(self) -> None:
        self.cols: list[str] = []

    def place(self, cid: str, parents: list[str]) -> tuple[str, list[str]]:
        """Draw ``cid``'s row; return its prefix and the connector lines after it."""
        if cid not in self.cols:
            self.cols.append(cid)
        col = self.cols.index(cid)
        row = "".join("* " if i == col else "| " for i in range(len(self.cols)))
        after: list[str] = []
        before = len(self.cols)
        # lanes that were also waiting for this commit end here
        dups = [i for i, x in enumerate(self.cols) if x == cid and i != col]
        if not parents:
            self.cols.pop(col)
        else:
            self.cols[col] = parents[0]
            for p in parents[1:]:
                if p not in self.cols:
                    self.cols.insert(col + 1, p)
                    after.append("| " * col + "|\\")
        for i in reversed(dups):
            self.cols.pop(i)
        seen: set[str] = set()
        merged = [x for x in self.cols if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]
        if len(merged) < len(self.cols) or (len(self.cols) < before and parents):
            after.append("| " * max(len(merged) - 1, 0) + "|/")
        self.cols = merged
        return row, after


@click.command()
@click.argument("rev", default="HEAD", metavar="[REV | REV:PATH]")
@click.option(
    "--schema", is_flag=True, help="For REV:PATH (or PATH): a dataset's columns and statistics."
)
@json_opt
def show(rev: str, schema: bool, as_json: bool) -> None:
    """Show a commit's metadata and the files it holds, with sizes.

    With --schema, REV:PATH (or PATH, at HEAD) names a CSV, TSV or Parquet file: print its
    columns, their types, share of nulls and, for numeric columns, mean, std, min and max, and
    the row count (read in one streaming pass).
    """
    from modelstore import api
    from modelstore.errors import BadArgumentError

    if schema:
        summary = api.dataset_schema(".", rev)
        if as_json:
            emit_json(summary.to_json())
        else:
            _schema_table(summary)
        return
    if ":" in rev:
        raise BadArgumentError(
            f"{rev!r} names a file: add --schema for a dataset's columns, or use `ms cat`"
        )
    info, files = api.show(".", rev)
    if as_json:
        emit_json({"commit": info.to_json(), "files": [f.to_json() for f in files]})
        return
    say(f"commit {info.id}")
    say(f"Author: {info.author}")
    say(f"Date:   {info.date}")
    say("")
    for line in info.message.splitlines():
        say(f"    {line}")
    say("")
    for kind in ("metrics", "params"):
        values = info.extra.get(kind)
        if values:
            say(f"{kind}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    if info.extra.get("inputs"):
        from modelstore.lineage import describe_input

        say("inputs: " + ", ".join(describe_input(x) for x in info.extra["inputs"]))
    env = info.extra.get("environment")
    if env:
        git = env.get("git") or {}
        code = (
            f"git {git.get('commit', '')[:12]} ({git.get('branch')}"
            f"{', dirty' if git.get('dirty') else ''})"
            if git
            else "no git"
        )
        say(
            f"environment: {code}; python {env.get('python')}; "
            f"{len(env.get('packages', {}))} packages; by {env.get('user')} on {env.get('host')}"
        )
    if any(info.extra.get(k) for k in ("metrics", "params", "inputs", "environment")):
        say("")
    total = 0
    for f in files:
        total += f.size
        say(f"{human_size(f.size):>10}  {f.path}")
    say(f"{len(files)} file(s), {human_size(total)}")


def _stat(x: float | None, sig: int = 6) -> str:
    """Ints as they are; floats to ``sig`` digits, without an exponent below 1e15."""
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.0f}" if 10**sig <= abs(x) < 1e15 else f"{x:.{sig}g}"


def _schema_table(summary: DatasetSummary) -> None:
    """Columns of a ``DatasetSummary``: name, type, nulls, mean, std, min, max."""
    fmt = summary.format + (f" ({summary.delimiter!r})" if summary.format == "csv" else "")
    say(f"{summary.name}: {fmt}, {summary.rows} row(s), {len(summary.columns)} column(s)")
    if not summary.columns:
        return
    head = ("column", "type", "nulls", "mean", "std", "min", "max")
    rows = [
        (
            c.name,
            c.type,
            "-" if c.null_share is None else f"{100 * c.null_share:.1f}%",
            _stat(c.mean),
            _stat(c.std),
            _stat(c.min, 10),  # values from the file: shown (nearly) as written
            _stat(c.max, 10),
        )
        for c in summary.columns
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        left = f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}"
        right = "  ".join(f"{v:>{w}}" for v, w in zip(r[2:], widths[2:], strict=True))
        say(f"{left}  {right}")


@click.command(name="ls")
@click.argument("rev", default="HEAD")
@click.argument("path", default="")
@click.option("-r", "--recursive", is_flag=True, help="List every file below PATH.")
@json_opt
def ls_cmd(rev: str, path: str, recursive: bool, as_json: bool) -> None:
    """List the files and folders of PATH in commit REV."""
    from modelstore import api

    items = api.ls(".", rev, path, recursive)
    if as_json:
        emit_json([i.to_json() for i in items])
        return
    for i in items:
        name = i.path + ("/" if i.type == "dir" else "")
        say(f"{i.mode:>6} {i.type:4} {human_size(i.size):>10}  {name}")


@click.command()
@click.argument("spec", metavar="REV:PATH")
def cat(spec: str) -> None:
    """Stream one file of a commit to stdout (REV:PATH, or PATH for HEAD)."""
    from modelstore import api

    out = sys.stdout.buffer
    api.cat(".", spec, out)
    out.flush()


@click.command()
@json_opt
def stats(as_json: bool) -> None:
    """Logical bytes vs bytes stored, chunk and pack counts."""
    from modelstore import api

    s = api.stats(".")
    if as_json:
        emit_json(s)
        return
    say(f"commits:        {s['commits']}")
    say(f"logical bytes:  {human_size(s['logical_bytes'])} (all files of all commits)")
    say(f"unique bytes:   {human_size(s['unique_bytes'])} (after dedup, before compression)")
    say(f"stored bytes:   {human_size(s['stored_bytes'])} (after compression)")
    say(f"pack files:     {s['packs']} ({human_size(s['pack_bytes'])})")
    say(f"chunks:         {s['chunks']}")
    if s["codecs"]:
        parts = ", ".join(f"{name} {c['chunks']}" for name, c in s["codecs"].items())
        say(f"codecs:         {parts}")
    if s.get("delta_depth") is not None:
        delta = s["codecs"].get("delta")
        if delta:
            say(
                f"deltas:         {delta['chunks']} chunks, {human_size(delta['raw_bytes'])} "
                f"stored in {human_size(delta['stored_bytes'])} "
                f"(at most {s['delta_depth']} in a row)"
            )
        else:
            say(f"deltas:         none yet (at most {s['delta_depth']} in a row)")
    if s["dedup_ratio"]:
        say(f"space saving:   {s['dedup_ratio']}x")


@click.command()
@click.option("--read-data", is_flag=True, help="Also read and hash every stored chunk.")
@click.option(
    "--remote", "remote_name", metavar="NAME", help="Check remote NAME instead of this repository."
)
@click.option(
    "--repair",
    is_flag=True,
    help="Refetch damaged or missing chunks and objects from --from REMOTE (reads every chunk).",
)
@click.option("--from", "source", metavar="REMOTE", help="The good copy --repair fetches from.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_opt
def verify(
    read_data: bool,
    remote_name: str | None,
    repair: bool,
    source: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Check that every commit, tree, file, chunk and pack is present and intact.

    Each problem is printed with the files and commits it breaks. With --remote, a remote is
    checked instead; with --repair --from REMOTE, what is damaged or missing here is fetched
    again from that remote. Exits 0 when everything is (now) intact and 13 otherwise.
    """
    from modelstore import api

    if repair != (source is not None):
        raise click.UsageError("--repair and --from REMOTE go together")
    if repair and remote_name is not None:
        raise click.UsageError("--repair fixes this repository; it cannot take --remote")
    if source is not None:  # --repair (checked above)
        with progress("verify", not (quiet or as_json)) as bar:
            res = api.repair(".", source, progress=bar.update if bar else None)
        if as_json:
            emit_json(api.repair_json(res))
        else:
            _say_repair(res)
        if not res.ok:
            raise click.exceptions.Exit(13)
        return
    with progress("verify", read_data and not (quiet or as_json)) as bar:
        rep = api.verify(
            ".", read_data=read_data, remote=remote_name, progress=bar.update if bar else None
        )
    if as_json:
        emit_json(api.verify_json(rep))
    else:
        for p in rep.problems:
            for line in _problem_lines(p):
                say(line, err=True)
        what = (
            f"{rep.commits} commit(s), {rep.trees} tree(s), {rep.files} file(s), "
            f"{rep.chunks_checked} chunk reference(s), {rep.packs} pack(s)"
        )
        if read_data:
            what += f", {rep.chunks_read} chunk(s) read and hashed"
        if rep.remote:
            what += f" on {rep.remote}"
        say(f"checked {what}: " + ("no problems" if rep.ok else f"{len(rep.problems)} problem(s)"))
    if not rep.ok:
        raise click.exceptions.Exit(13)


#: files listed per problem (``--json`` lists them all), and commits per file
AFFECTS_SHOWN = 10
COMMITS_SHOWN = 3


def _problem_lines(p: Problem, head: str = "") -> list[str]:
    """One block: the problem (or ``head``), then each file it breaks and the commits."""
    lines = [head or f"{p.kind}: {p.detail}" + (f" ({p.where})" if p.where else "")]
    for a in p.affects[:AFFECTS_SHOWN]:
        n = len(a.commits)
        shown = ", ".join(c[:12] for c in a.commits[:COMMITS_SHOWN])
        more = ", ..." if n > COMMITS_SHOWN else ""
        lines.append(f"  affects: {a.path} in {n} commit{'' if n == 1 else 's'} ({shown}{more})")
    if len(p.affects) > AFFECTS_SHOWN:
        lines.append(f"  affects: {len(p.affects) - AFFECTS_SHOWN} more file(s) (--json lists all)")
    return lines


def _say_repair(res: RepairReport) -> None:
    """What was found, what was fetched again, what could not be, and what is still wrong."""
    if res.before.ok:
        say("no problems: nothing to repair")
        return
    say(f"found {len(res.before.problems)} problem(s):", err=True)
    for p in res.before.problems:
        for line in _problem_lines(p):
            say(line, err=True)
    line = (
        f"repaired {res.chunks_repaired} chunk(s) and {res.objects_repaired} object(s) from "
        f"{res.remote}: {res.packs_written} new pack(s), {human_size(res.bytes_fetched)} fetched"
    )
    if res.packs_retired:
        line += f"; {res.packs_retired} damaged pack(s) no longer used (`ms gc` deletes them)"
    say(line)
    for p in res.unrepaired:
        for text in _problem_lines(p, f"could not repair {p.detail}"):
            say(text, err=True)
    if res.after.ok:
        say("after repair: no problems")
        return
    say(f"after repair: {len(res.after.problems)} problem(s) remain:", err=True)
    for p in res.after.problems:
        for text in _problem_lines(p):
            say(text, err=True)


COMMANDS = [log, show, ls_cmd, cat, stats, verify]
