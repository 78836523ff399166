"""The ``ms serve`` command: remote repositories over HTTP for push, fetch, pull and clone."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="TCP port.")
@click.option(
    "--tokens",
    "tokens_file",
    type=click.Path(dir_okay=False),
    help='JSON file: {"TOKEN": {"user": ..., "scope": "read"|"write", "repos": ["*"]}}.',
)
@click.option("--no-auth", is_flag=True, help="No authentication (only on 127.0.0.1, for demos).")
def serve(path: str, host: str, port: int, tokens_file: str | None, no_auth: bool) -> None:
    """Serve the repositories under PATH (one per subdirectory) over HTTP.

    Clients use http://HOST:PORT/REPO as a remote URL, with their token in the remote's
    config or in MS_TOKEN. Tokens travel in clear text: beyond 127.0.0.1, put a TLS proxy
    in front.
    """
    if tokens_file is None and not no_auth:
        raise click.UsageError("pass --tokens FILE (or --no-auth for a local demo)")
    from modelstore.serve import serve as run

    run(path, host, port, tokens_file, no_auth=no_auth)


COMMANDS = [serve]
