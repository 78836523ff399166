"""Commands for experiments: branch, switch, tag, merge, reset, revert, reflog."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ..render import emit_json, say

__all__ = ["COMMANDS"]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command()
@click.argument("name", required=False)
@click.argument("start", required=False, default="HEAD")
@click.option("-d", "--delete", "delete", is_flag=True, help="Delete NAME (only if merged).")
@click.option("-D", "force_delete", is_flag=True, help="Delete NAME even if not merged.")
@click.option("-m", "--move", "rename", is_flag=True, help="Rename: `ms branch -m OLD NEW`.")
@json_opt
def branch(
    name: str | None, start: str, delete: bool, force_delete: bool, rename: bool, as_json: bool
) -> None:
    """List branches, create NAME at START (default HEAD), delete (-d/-D) or rename (-m OLD NEW)."""
    from modelstore import api

    move = start if rename else None
    if rename and (name is None or start == "HEAD"):
        raise click.UsageError("rename with `ms branch -m OLD NEW`")
    if name is None:
        if delete or force_delete:
            raise click.UsageError("give the branch NAME")
        items = api.branches(".")
        if as_json:
            emit_json([b.to_json() for b in items])
        for b in [] if as_json else items:
            say(f"{'*' if b.current else ' '} {b.name:20} {b.commit[:12]}")
        return
    if delete or force_delete:
        was = api.branch_delete(".", name, force=force_delete)
        out = {"deleted": name, "was": was}
    elif move:
        api.branch_rename(".", name, move)
        out = {"renamed": name, "to": move}
    else:
        out = {"created": name, "commit": api.branch_create(".", name, start)}
    if as_json:
        emit_json(out)
    elif "deleted" in out:
        say(f"Deleted branch {name} (was {out['was'][:12]})")
    elif "renamed" in out:
        say(f"Renamed branch {name} to {move}")
    else:
        say(f"Created branch {name} at {out['commit'][:12]}")


@click.command()
@click.argument("name")
@click.option("-c", "--create", is_flag=True, help="Create the branch first (at HEAD or START).")
@click.option("--start", default="HEAD", help="Where a new branch starts (with -c).")
@click.option("-f", "--force", is_flag=True, help="Overwrite local changes.")
@json_opt
def switch(name: str, create: bool, start: str, force: bool, as_json: bool) -> None:
    """Switch to branch NAME, updating the working tree."""
    from modelstore import api

    res = api.switch(".", name, create=create, start=start, force=force)
    if as_json:
        emit_json(res)
    else:
        made = "a new branch " if create else ""
        say(f"Switched to {made}{name!r} ({res.get('written', 0)} file(s) written)")


@click.command()
@click.argument("name", required=False)
@click.argument("rev", required=False, default="HEAD")
@click.option("-m", "--message", help="Make an annotated tag with this message.")
@click.option("-d", "--delete", is_flag=True, help="Delete tag NAME.")
@json_opt
def tag(name: str | None, rev: str, message: str | None, delete: bool, as_json: bool) -> None:
    """List tags, or tag REV (default HEAD) as NAME; tags never move (delete and retag)."""
    from modelstore import api

    if name is None:
        if delete or message is not None:
            raise click.UsageError("give the tag NAME")
        items = api.tags(".")
        if as_json:
            emit_json([t.to_json() for t in items])
        for t in [] if as_json else items:
            note = f"  {t.message.splitlines()[0]}" if t.annotated and t.message else ""
            say(f"{t.name:20} {t.commit[:12]}{note}")
        return
    if delete:
        api.tag_delete(".", name)
        out = {"deleted": name}
    else:
        out = api.tag_create(".", name, rev, message).to_json()
    if as_json:
        emit_json(out)
    elif delete:
        say(f"Deleted tag {name}")
    else:
        say(f"Tagged {out['commit'][:12]} as {name}")


@click.command()
@click.argument("rev", required=False)
@click.option("-m", "--message", help="Message of the merge commit.")
@click.option(
    "-X",
    "strategy",
    type=click.Choice(["ours", "theirs"]),
    help="Settle every conflict with our or their version.",
)
@click.option("--resolve", "resolve_path", metavar="PATH", help="Resolve one conflicted path.")
@click.option("--ours", "side", flag_value="ours", help="With --resolve: keep our version.")
@click.option("--theirs", "side", flag_value="theirs", help="With --resolve: take theirs.")
@click.option(
    "--file", "from_file", metavar="LOCALPATH", help="With --resolve: use this file's contents."
)
@click.option("--abort", is_flag=True, help="Give up the merge in progress.")
@json_opt
def merge(
    rev: str | None,
    message: str | None,
    strategy: str | None,
    resolve_path: str | None,
    side: str | None,
    from_file: str | None,
    abort: bool,
    as_json: bool,
) -> None:
    """Merge REV into the current branch (fast-forward when possible).

    Conflicting paths stop the merge: resolve each with `ms merge --resolve PATH
    --ours|--theirs|--file LOCALPATH`, then `ms commit`; or `ms merge --abort`. Exits 1 when
    the merge stopped on conflicts.
    """
    from modelstore import api

    if abort:
        touched = api.merge_abort(".")
        if as_json:
            emit_json({"aborted": True, "restored": touched})
        else:
            say(f"Merge aborted; {len(touched)} path(s) restored")
        return
    if resolve_path is not None:
        done = api.merge_resolve(".", resolve_path, side=side, file=from_file)
        if as_json:
            emit_json({"resolved": done})
        else:
            say(f"Resolved {done}")
        return
    if rev is None:
        raise click.UsageError("give the REV to merge (or --resolve / --abort)")
    res = api.merge(".", rev, message=message, strategy=strategy)
    if as_json:
        emit_json(res.to_json())
    elif res.status == "up-to-date":
        say("Already up to date.")
    elif res.status == "fast-forward":
        say(
            f"Fast-forward to {res.commit[:12] if res.commit else ''}; "
            f"{len(res.changed)} file(s) updated"
        )
    elif res.status == "merged":
        say(f"Merged {rev}: {res.commit}; {len(res.changed)} file(s) updated")
    else:
        say(f"Merge stopped: {len(res.conflicts)} conflict(s):", err=True)
        for p in res.conflicts:
            say(f"  both changed: {p}", err=True)
        say(
            "Resolve each with `ms merge --resolve PATH --ours|--theirs|--file F`, then "
            "`ms commit`; or `ms merge --abort`.",
            err=True,
        )
    if res.status == "conflicts":
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("rev")
@click.option("--soft", "mode", flag_value="soft", help="Move the branch only.")
@click.option(
    "--mixed",
    "mode",
    flag_value="mixed",
    default=True,
    help="Also reset the staging index (default).",
)
@click.option("--hard", "mode", flag_value="hard", help="Also reset the working tree.")
@json_opt
def reset(rev: str, mode: str, as_json: bool) -> None:
    """Move the current branch to REV (--soft, --mixed or --hard)."""
    from modelstore import api

    res = api.reset(".", rev, mode)
    if as_json:
        emit_json(res)
    else:
        say(f"HEAD is now at {res['commit'][:12]} ({mode})")


@click.command()
@click.argument("rev")
@click.option("-m", "--message", help="Message of the revert commit.")
@json_opt
def revert(rev: str, message: str | None, as_json: bool) -> None:
    """Make a new commit that undoes REV."""
    from modelstore import api

    res = api.revert(".", rev, message=message)
    if as_json:
        emit_json(res.to_json())
    elif res.status == "conflicts":
        say(
            f"Revert stopped on {len(res.conflicts)} conflict(s): {', '.join(res.conflicts)}",
            err=True,
        )
    else:
        say(res.commit or "")
    if res.status == "conflicts":
        raise click.exceptions.Exit(1)


@click.command(name="reflog")
@click.argument("ref", default="HEAD")
@json_opt
def reflog_cmd(ref: str, as_json: bool) -> None:
    """Show every move of REF (default HEAD): REF@{N} names entry N."""
    from modelstore import api

    entries = api.reflog(".", ref)
    if as_json:
        emit_json(entries)
        return
    for e in entries:
        when = datetime.fromtimestamp(e["time_ns"] / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M")
        new = (e["new"] or "deleted")[:12]
        say(f"{new:12} {ref}@{{{e['index']}}} {when} {e['user']}: {e['command']}: {e['message']}")


COMMANDS = [branch, switch, tag, merge, reset, revert, reflog_cmd]
