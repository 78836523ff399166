"""Registry commands: aliases (production, staging...) and rollback."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ..render import emit_json, say

__all__ = ["COMMANDS"]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M")


@click.group()
def alias() -> None:
    """Movable names for commits (production, staging...); any REV accepts @NAME."""


@alias.command(name="set")
@click.argument("name")
@click.argument("rev")
@click.option("-m", "--message", default="", help="Why (kept in the audit trail).")
@json_opt
def alias_set(name: str, rev: str, message: str, as_json: bool) -> None:
    """Point alias NAME at REV."""
    from modelstore import api

    info = api.alias_set(".", name, rev, message)
    if as_json:
        emit_json(info.to_json())
    else:
        say(f"@{info.name} -> {info.commit[:12]}")


@alias.command(name="list")
@json_opt
def alias_list(as_json: bool) -> None:
    """List aliases."""
    from modelstore import api

    items = api.alias_list(".")
    if as_json:
        emit_json([a.to_json() for a in items])
        return
    for a in items:
        say(f"@{a.name:15} {a.commit[:12]}  {_when(a.time_ns)}  {a.user or ''}: {a.message or ''}")


@alias.command(name="show")
@click.argument("name")
@json_opt
def alias_show(name: str, as_json: bool) -> None:
    """Show where alias NAME points and its last move."""
    from modelstore import api

    a = api.alias_show(".", name)
    if as_json:
        emit_json(a.to_json())
    else:
        say(f"@{a.name} -> {a.commit}\nset {_when(a.time_ns)} by {a.user}: {a.message}")


@alias.command(name="history")
@click.argument("name")
@json_opt
def alias_history(name: str, as_json: bool) -> None:
    """Every move of alias NAME, newest first (who, when, why)."""
    from modelstore import api

    items = api.alias_history(".", name)
    if as_json:
        emit_json(items)
        return
    for e in items:
        new = (e["new"] or "deleted")[:12]
        say(f"{new:12} {_when(e['time_ns'])}  {e['user']}: {e['command']}: {e['message']}")


@click.command()
@click.argument("name")
@click.option("--to", "to", metavar="REV", help="Move it here instead of its previous target.")
@click.option("-m", "--message", default="", help="Why (kept in the audit trail).")
@json_opt
def rollback(name: str, to: str | None, message: str, as_json: bool) -> None:
    """Move alias NAME back to its previous target (or to REV)."""
    from modelstore import api

    info = api.rollback(".", name, to, message)
    if as_json:
        emit_json(info.to_json())
    else:
        say(f"@{info.name} rolled back to {info.commit[:12]}")


@click.command(name="export")
@click.argument("rev")
@click.argument("directory", type=click.Path(file_okay=False))
@json_opt
def export_cmd(rev: str, directory: str, as_json: bool) -> None:
    """Write REV's files into DIRECTORY with a modelstore.json (commit, provenance, BLAKE3s)."""
    from modelstore import api

    res = api.export(".", rev, directory)
    if as_json:
        emit_json(res)
    else:
        say(f"exported {res['commit'][:12]}: {res['written']} file(s) and {res['record']}")


COMMANDS = [alias, rollback, export_cmd]
