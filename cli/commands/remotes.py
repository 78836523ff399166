"""Commands that talk to remotes: remote, push, fetch, pull, clone."""

from __future__ import annotations

from typing import Any

import click

from ..render import emit_json, human_size, progress, say

__all__ = ["COMMANDS"]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")


@click.group()
def remote() -> None:
    """Manage remotes: directories (e.g. a shared mount) or s3://bucket/prefix."""


@remote.command(name="add")
@click.argument("name")
@click.argument("url")
@click.option("--endpoint-url", help="S3-compatible endpoint (MinIO, Ceph, R2...).")
@click.option(
    "--token",
    help="Access token for an `ms serve` remote (else $MS_TOKEN); "
    "stored in the repository config in plain text.",
)
def remote_add(name: str, url: str, endpoint_url: str | None, token: str | None) -> None:
    """Add remote NAME at URL (a directory, s3://bucket/prefix or http(s)://host/repo)."""
    from modelstore import api

    opts = {"endpoint_url": endpoint_url} if endpoint_url else {}
    if token:
        opts["token"] = token
    api.remote_add(".", name, url, **opts)
    say(f"Added remote {name} -> {url}")


@remote.command(name="remove")
@click.argument("name")
def remote_remove(name: str) -> None:
    """Forget remote NAME (nothing on the remote is touched)."""
    from modelstore import api

    api.remote_remove(".", name)
    say(f"Removed remote {name}")


@remote.command(name="set-url")
@click.argument("name")
@click.argument("url")
def remote_set_url(name: str, url: str) -> None:
    """Change remote NAME's URL."""
    from modelstore import api

    api.remote_set_url(".", name, url)
    say(f"{name} -> {url}")


@remote.command(name="list")
@json_opt
def remote_list(as_json: bool) -> None:
    """List remotes."""
    from modelstore import api

    items = api.remotes(".")
    if as_json:
        emit_json(items)
        return
    for name, settings in sorted(items.items()):
        say(f"{name}\t{settings.get('url')}")


def _summary(verb: str, res: object) -> str:
    d = res.to_json()  # type: ignore[attr-defined]
    lines = _alias_lines(verb, d)
    if d["up_to_date"]:
        return "\n".join(["Everything up to date.", *lines])
    moved = ", ".join(
        f"{k.removeprefix('refs/')}={v[:12]}"
        for k, v in d["refs"].items()
        if not k.startswith("refs/aliases/")  # on lines of their own
    )
    head = (
        f"{verb}: {d['chunks']} chunk(s), {human_size(d['bytes'])} in {d['packs']} pack(s), "
        f"{d['objects']} object(s); refs: {moved or 'none'}"
    )
    return "\n".join([head, *lines])


def _alias_lines(verb: str, d: dict[str, Any]) -> list[str]:
    """One line per alias moved, and one per alias left alone because both sides moved it."""
    remote = d["remote"]
    where = f"on {remote}" if verb == "Pushed" else f"from {remote}"
    out = [f"@{name} -> {oid[:12]} ({where})" for name, oid in d["aliases"].items()]
    out += [
        f"@{name}: kept at {v['local'][:12]}; {remote} has {v['remote'][:12]} "
        f"(both moved it: `ms alias set {name} REV` to choose, then push)"
        for name, v in d["aliases_diverged"].items()
    ]
    return out


@click.command()
@click.argument("remote_name", metavar="[REMOTE]", default="origin")
@click.argument("refs", nargs=-1)
@click.option("--all", "all_branches", is_flag=True, help="Push every branch and alias.")
@click.option("--tags", is_flag=True, help="Push tags too.")
@click.option(
    "--aliases",
    is_flag=True,
    help="Push every alias too (--all implies it; one alias: name it, e.g. @production).",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite the remote branch (not fast-forward).")
@click.option(
    "--force-with-lease",
    is_flag=True,
    help="Overwrite only if the remote branch is still where we last fetched it.",
)
@quiet_opt
@json_opt
def push(
    remote_name: str,
    refs: tuple[str, ...],
    all_branches: bool,
    tags: bool,
    aliases: bool,
    force: bool,
    force_with_lease: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Send branches (default: the current one) and only the data the remote lacks.

    An alias moved on the remote since your last fetch is refused (fetch first) unless --force.
    """
    from modelstore import api

    with progress("push", not (quiet or as_json)) as bar:
        res = api.push(
            ".",
            remote_name,
            list(refs) or None,
            all_branches=all_branches,
            tags=tags,
            aliases=aliases,
            force=force,
            force_with_lease=force_with_lease,
            progress=bar.update if bar else None,
            on_total=bar.set_total if bar else None,
        )
    if as_json:
        emit_json(res.to_json())
    elif not quiet:
        say(_summary("Pushed", res))


@click.command()
@click.argument("remote_name", metavar="[REMOTE]", default="origin")
@quiet_opt
@json_opt
def fetch(remote_name: str, quiet: bool, as_json: bool) -> None:
    """Get the remote's branches (as REMOTE/BRANCH), tags, aliases and only the missing data.

    A local alias follows the remote's unless you moved it since the last fetch (then it is
    kept and reported).
    """
    from modelstore import api

    with progress("fetch", not (quiet or as_json)) as bar:
        res = api.fetch(
            ".",
            remote_name,
            progress=bar.update if bar else None,
            on_total=bar.set_total if bar else None,
        )
    if as_json:
        emit_json(res.to_json())
    elif not quiet:
        say(_summary("Fetched", res))


@click.command()
@click.argument("remote_name", metavar="[REMOTE]", default="origin")
@click.argument("branch", required=False)
@quiet_opt
@json_opt
def pull(remote_name: str, branch: str | None, quiet: bool, as_json: bool) -> None:
    """Fetch, then merge REMOTE/BRANCH into the current branch (exits 1 on conflicts)."""
    from modelstore import api

    with progress("pull", not (quiet or as_json)) as bar:
        res, merged = api.pull(".", remote_name, branch, progress=bar.update if bar else None)
    if as_json:
        emit_json({"fetch": res.to_json(), "merge": merged.to_json()})
    elif not quiet:
        say(_summary("Fetched", res))
        say(
            f"Merge: {merged.status}"
            + (f" ({', '.join(merged.conflicts)})" if merged.conflicts else "")
        )
    if merged.status == "conflicts":
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("url")
@click.argument("directory", required=False)
@click.option("-b", "--branch", help="Check out this branch (default: main).")
@click.option(
    "--lazy",
    is_flag=True,
    help="Fetch history only; file contents are read from the remote on demand.",
)
@quiet_opt
@json_opt
def clone(
    url: str, directory: str | None, branch: str | None, lazy: bool, quiet: bool, as_json: bool
) -> None:
    """Make a new repository from URL, fetch everything and check out a branch."""
    from modelstore import api

    with progress("clone", not (quiet or as_json)) as bar:
        repo = api.clone(
            url, directory, branch=branch, lazy=lazy, progress=bar.update if bar else None
        )
    try:
        if as_json:
            emit_json(
                {
                    "path": str(repo.workdir),
                    "head": api.log(repo, limit=1)[0].id if api.log(repo, limit=1) else None,
                }
            )
        elif not quiet:
            say(f"Cloned {url} into {repo.workdir}")
    finally:
        repo.close()


COMMANDS = [remote, push, fetch, pull, clone]
