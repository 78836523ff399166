"""Commands that change the repository or the working tree: init, add, status, commit, ..."""

from __future__ import annotations

import click

from ..render import emit_json, human_size, progress, say

__all__ = ["COMMANDS"]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option(
    "--float-codec/--no-float-codec",
    default=None,
    help="Store float tensors as byte planes (default for new repositories; ms versions "
    "before it cannot open such a repository). On an existing repository, --float-codec "
    "turns it on.",
)
@click.option(
    "--deltas/--no-deltas",
    default=None,
    help="Store the next version of a safetensors checkpoint as XOR deltas against the "
    "previous one (default for new repositories; ms versions before it cannot open such a "
    "repository). On an existing repository, --deltas turns it on.",
)
@click.option(
    "--delta-depth",
    type=click.IntRange(0, 32),
    default=None,
    metavar="N",
    help="At most N deltas in a row before a full copy (default 2): reading a version "
    "decodes up to N+1 chunks per chunk.",
)
@json_opt
def init(
    path: str,
    float_codec: bool | None,
    deltas: bool | None,
    delta_depth: int | None,
    as_json: bool,
) -> None:
    """Create a repository in PATH (default: here), stored in PATH/.ms."""
    import os

    from modelstore import api

    if (float_codec or deltas) and os.path.exists(os.path.join(path, ".ms", "FORMAT")):
        if delta_depth is not None:
            raise click.UsageError("--delta-depth is set when a repository is created")
        out: dict[str, object] = {"path": os.path.abspath(path)}
        if float_codec:
            added = api.enable_float_codec(path)
            out.update(float_codec=True, changed=added)
            if not as_json:
                say("float codec enabled" if added else "float codec was already enabled")
        if deltas:
            added = api.enable_deltas(path)
            out.update(deltas=True, changed=added or bool(out.get("changed")))
            if not as_json:
                say("deltas enabled" if added else "deltas were already enabled")
        if as_json:
            emit_json(out)
        return
    repo = api.init(
        path,
        planes=float_codec is not False,
        delta=deltas is not False,
        delta_depth=delta_depth,
    )
    try:
        if as_json:
            emit_json({"path": str(repo.workdir), "repo_id": repo.config.repo_id, "branch": "main"})
        else:
            say(f"Initialized empty modelstore repository in {repo.ms_dir}")
    finally:
        repo.close()


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_opt
def add(paths: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Stage files and folders (honours .msignore); unchanged files are not re-read."""
    from modelstore import api

    with progress("add", not (quiet or as_json)) as bar:
        res = api.add(
            ".",
            list(paths),
            progress=bar.update if bar else None,
            on_total=bar.set_total if bar else None,
        )
    if as_json:
        emit_json(res.to_json())
    elif not quiet:
        say(
            f"added {len(res.added)} file(s), {human_size(res.bytes_read)} read, "
            f"{human_size(res.new_bytes)} new in store; {len(res.unchanged)} unchanged"
        )


@click.command()
@click.option("-s", "--short", is_flag=True, help="One line per path.")
@json_opt
def status(short: bool, as_json: bool) -> None:
    """Show staged, modified, deleted and untracked files."""
    from modelstore import api

    st = api.status(".")
    if as_json:
        emit_json(api.status_json(st))
        return
    if short:
        for p in st.conflicts:
            say(f"UU {p}")
        codes = {"added": "A ", "modified": "M ", "deleted": "D "}
        for change, p in st.staged:
            say(f"{codes[change]} {p}")
        for p in st.modified:
            say(f" M {p}")
        for p in st.deleted:
            say(f" D {p}")
        for p in st.untracked:
            say(f"?? {p}")
        return
    where = (
        f"On branch {st.branch}"
        if st.branch
        else f"HEAD detached at {st.head.hex()[:12] if st.head else '?'}"
    )
    say(where)
    if st.head is None:
        say("No commits yet")
    if st.merging:
        say(f"\nYou are in the middle of a {st.merging}.")
        if st.conflicts:
            say("Unresolved conflicts (`ms merge --resolve PATH --ours|--theirs|--file F`):")
            for p in st.conflicts:
                say(f"  {'both changed:':14} {p}")
        else:
            say("All conflicts resolved: run `ms commit` to finish (or `ms merge --abort`).")
    if st.staged:
        say("\nChanges to be committed:")
        for change, p in st.staged:
            say(f"  {change + ':':10} {p}")
    if st.modified or st.deleted:
        say("\nChanges not staged for commit (use `ms add` or `ms restore`):")
        for p in st.modified:
            say(f"  {'modified:':10} {p}")
        for p in st.deleted:
            say(f"  {'deleted:':10} {p}")
    if st.untracked:
        say("\nUntracked files (use `ms add` to track):")
        for p in st.untracked:
            say(f"  {p}")
    if st.clean:
        say("nothing to commit, working tree clean")


@click.command()
@click.option("-m", "--message", required=True, help="The commit message.")
@click.option("--author", help="Override the author (default: $MS_AUTHOR or user@host).")
@click.option("--allow-empty", is_flag=True, help="Commit even if nothing changed.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME=VALUE",
    help="A metric (repeatable); numbers and booleans keep their type.",
)
@click.option(
    "--metrics-file", type=click.Path(dir_okay=False), help="Metrics from a JSON or YAML map."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A training parameter (repeatable).",
)
@click.option(
    "--params-file", type=click.Path(dir_okay=False), help="Params from a JSON or YAML map."
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="PATH|REV:PATH|URL",
    help="What this was trained on (repeatable).",
)
@click.option(
    "--no-capture",
    is_flag=True,
    help="Do not record git, Python, packages, command line, user and host.",
)
@json_opt
def commit(
    message: str,
    author: str | None,
    allow_empty: bool,
    metrics: tuple[str, ...],
    metrics_file: str | None,
    params: tuple[str, ...],
    params_file: str | None,
    inputs: tuple[str, ...],
    no_capture: bool,
    as_json: bool,
) -> None:
    """Record the staged files as a new commit, with its provenance; prints its id."""
    from modelstore import api
    from modelstore.lineage import load_values_file, parse_assignment

    m = load_values_file(metrics_file) if metrics_file else {}
    m.update(parse_assignment(x) for x in metrics)
    p = load_values_file(params_file) if params_file else {}
    p.update(parse_assignment(x) for x in params)
    info = api.commit(
        ".",
        message,
        author=author,
        allow_empty=allow_empty,
        metrics=m or None,
        params=p or None,
        inputs=list(inputs) or None,
        capture=not no_capture,
    )
    if as_json:
        emit_json(info.to_json())
    else:
        say(info.id)


@click.command()
@click.argument("rev")
@click.argument("paths", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Overwrite local changes.")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False),
    help="Write REV's files into this folder instead (the repository is untouched).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_opt
def checkout(
    rev: str, paths: tuple[str, ...], force: bool, to: str | None, quiet: bool, as_json: bool
) -> None:
    """Restore the working tree (or just PATHS) to REV."""
    from modelstore import api

    with progress("checkout", not (quiet or as_json)) as bar:
        res = api.checkout(
            ".",
            rev,
            list(paths) or None,
            force=force,
            to=to,
            progress=bar.update if bar else None,
            on_total=bar.set_total if bar else None,
        )
    if as_json:
        emit_json(res)
    elif not quiet:
        where = f" into {res['to']}" if to else ""
        say(f"checked out {res['commit'][:12]}{where}: {res['written']} file(s) written")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--cached", is_flag=True, help="Only unstage; keep the working files.")
@json_opt
def rm(paths: tuple[str, ...], cached: bool, as_json: bool) -> None:
    """Stop tracking PATHS and delete them (keep them with --cached)."""
    from modelstore import api

    removed = api.rm(".", list(paths), cached=cached)
    if as_json:
        emit_json({"removed": removed})
    else:
        for p in removed:
            say(f"rm {p}")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--staged", is_flag=True, help="Unstage: reset the index entry from HEAD.")
@click.option("-s", "--source", metavar="REV", help="Restore from this commit instead.")
@json_opt
def restore(paths: tuple[str, ...], staged: bool, source: str | None, as_json: bool) -> None:
    """Discard working-tree changes to PATHS (or unstage them with --staged)."""
    from modelstore import api

    done = api.restore(".", list(paths), staged=staged, source=source)
    if as_json:
        emit_json({"restored": done})
    else:
        for p in done:
            say(f"restored {p}")


COMMANDS = [init, add, status, commit, checkout, rm, restore]
