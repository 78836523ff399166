"""Repository maintenance: gc."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..render import emit_json, human_size, progress, say

if TYPE_CHECKING:
    from modelstore.gc import GcResult

__all__ = ["COMMANDS"]


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="Say what would go; change nothing.")
@click.option(
    "--prune-older-than",
    metavar="DURATION",
    help="Grace period: keep unreachable data younger than this (14d, 12h, 30m, 0 or now; "
    "default 1h here, 14d on a remote).",
)
@click.option(
    "--expire-reflog",
    metavar="DURATION",
    default="90d",
    show_default=True,
    help="Reflog entries older than this stop protecting commits (or `never`, or `now`).",
)
@click.option(
    "--repack-threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Rewrite packs whose live share is below this (0 never, 1 any pack with garbage).",
)
@click.option("--remote", "remote_name", metavar="NAME", help="Collect on remote NAME instead.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gc(
    dry_run: bool,
    prune_older_than: str | None,
    expire_reflog: str,
    repack_threshold: float,
    remote_name: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Delete data that no branch, tag, alias, reflog entry or staged file reaches.

    Packs left mostly empty are rewritten; data younger than the grace period is kept, so an
    add or push running elsewhere is safe. Reachable data is never deleted.
    """
    from modelstore import api

    with progress("gc", not (quiet or as_json)) as bar:
        res = api.gc(
            ".",
            remote=remote_name,
            dry_run=dry_run,
            prune_older_than=prune_older_than,
            expire_reflog=expire_reflog,
            repack_threshold=repack_threshold,
            progress=bar.update if bar else None,
            on_total=bar.set_total if bar else None,
        )
    if as_json:
        emit_json(res.to_json())
    else:
        say(summary(res))


def summary(res: GcResult) -> str:
    """One line: what went (or would go) and the bytes reclaimed."""
    would = "would " if res.dry_run else ""
    where = f"gc {res.remote}" if res.remote else "gc"
    if res.dry_run:
        where += " (dry run)"
    if res.remote:
        dropped = (
            f"{res.bundles_deleted} bundle(s) ({res.objects_dropped} object(s)), "
            f"{res.packs_deleted} pack(s) ({res.chunks_dropped} chunk(s))"
        )
        line = f"{where}: {would}{'delete' if would else 'deleted'} {dropped}"
    else:
        dropped = (
            f"{res.objects_dropped} object(s), {res.chunks_dropped} chunk(s), "
            f"{res.packs_deleted} pack(s)"
        )
        rewrote = f"{res.packs_rewritten} pack(s) into {res.packs_written}"
        line = (
            f"{where}: {would}{'drop' if would else 'dropped'} {dropped}; "
            f"{would}{'rewrite' if would else 'rewrote'} {rewrote}"
        )
        if res.debris_files:
            line += f"; {would}{'remove' if would else 'removed'} {res.debris_files} leftover(s)"
    line += f"; {would}{'reclaim' if would else 'reclaimed'} {human_size(res.bytes_reclaimed)}"
    if res.packs_kept_young:
        line += f" (kept {res.packs_kept_young} pack(s) younger than the grace period)"
    return line


COMMANDS = [gc]
