"""Commands that read history: log, show, ls, cat, stats."""

from __future__ import annotations

import sys

import click

from ..render import emit_json, human_size, progress, say

__all__ = ["COMMANDS"]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command()
@click.argument("rev", default="HEAD")
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option("-n", "--max-count", "limit", type=click.IntRange(min=0), help="Show at most N.")
@json_opt
def log(rev: str, oneline: bool, limit: int | None, as_json: bool) -> None:
    """Show the commit history from REV (default HEAD)."""
    from modelstore import api

    commits = api.log(".", rev, limit)
    if as_json:
        emit_json([c.to_json() for c in commits])
        return
    for c in commits:
        first = c.message.splitlines()[0] if c.message else ""
        if oneline:
            say(f"{c.id[:12]} {first}")
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


@click.command()
@click.argument("rev", default="HEAD")
@json_opt
def show(rev: str, as_json: bool) -> None:
    """Show a commit's metadata and the files it holds, with sizes."""
    from modelstore import api

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
    total = 0
    for f in files:
        total += f.size
        say(f"{human_size(f.size):>10}  {f.path}")
    say(f"{len(files)} file(s), {human_size(total)}")


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
    if s["dedup_ratio"]:
        say(f"space saving:   {s['dedup_ratio']}x")


@click.command()
@click.option("--read-data", is_flag=True, help="Also read and hash every stored chunk.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_opt
def verify(read_data: bool, quiet: bool, as_json: bool) -> None:
    """Check that every commit, tree, file, chunk and pack is present and intact.

    Exits 0 when the repository is healthy and 13 when anything is damaged or missing.
    """
    from modelstore import api

    with progress("verify", read_data and not (quiet or as_json)) as bar:
        rep = api.verify(".", read_data=read_data, progress=bar.update if bar else None)
    if as_json:
        emit_json(api.verify_json(rep))
    else:
        for p in rep.problems:
            say(f"{p.kind}: {p.detail}" + (f" ({p.where})" if p.where else ""), err=True)
        what = (
            f"{rep.commits} commit(s), {rep.trees} tree(s), {rep.files} file(s), "
            f"{rep.chunks_checked} chunk reference(s), {rep.packs} pack(s)"
        )
        if read_data:
            what += f", {rep.chunks_read} chunk(s) read and hashed"
        say(f"checked {what}: " + ("no problems" if rep.ok else f"{len(rep.problems)} problem(s)"))
    if not rep.ok:
        raise click.exceptions.Exit(13)


COMMANDS = [log, show, ls_cmd, cat, stats, verify]
