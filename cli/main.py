"""The ``ms`` entry point: global options, the command group, and errors -> exit codes.

This is the one place where an ``MsError`` becomes one line on stderr and its exit code; no
traceback is shown for anything a user can cause. Set ``MS_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from modelstore import __version__
from modelstore.errors import MsError

from .commands import branching, diff, history, lineage, maintenance, registry, remotes, serve, work

__all__ = ["cli", "main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: click >= 8.2 raises this usage error to show the help of a group run without a command
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_Never", (click.UsageError,), {})
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="ms")
@click.option(
    "-C",
    "chdir",
    metavar="PATH",
    type=click.Path(file_okay=False),
    help="Run as if ms was started in PATH.",
)
@click.pass_context
def cli(ctx: click.Context, chdir: str | None) -> None:
    """modelstore: version large ML checkpoints and datasets like code.

    Files are split into content-defined chunks, deduplicated, compressed and packed; commits,
    branches and history work as in git. Run `ms COMMAND -h` for help on a command.
    """
    ctx.ensure_object(dict)
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise click.UsageError(f"cannot change to {chdir}: {exc.strerror}") from None


for module in (work, history, branching, diff, lineage, remotes, serve, registry, maintenance):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and exit with) its exit code."""
    debug = bool(os.environ.get("MS_DEBUG"))
    try:
        rv = cli.main(args=argv, prog_name="ms", standalone_mode=False)
        # without standalone mode click returns the code of a ctx.exit()/Exit instead
        code = rv if isinstance(rv, int) else 0
    except MsError as exc:
        if debug:
            raise
        click.echo(f"ms: error: {exc.message}", err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except _NO_ARGS_IS_HELP as exc:  # `ms` or `ms remote` alone: the help, as click shows it
        exc.show()
        code = exc.exit_code
    except click.UsageError as exc:  # one line like every other error, and where to look
        where = exc.ctx.command_path if exc.ctx is not None else "ms"
        click.echo(f"ms: error: {exc.format_message()} (see `{where} -h`)", err=True)
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code if exc.exit_code else EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("ms: aborted", err=True)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("ms: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`ms cat ... | head`): not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    except OSError as exc:
        if debug:
            raise
        hint = " (free disk space and retry)" if exc.errno == errno.ENOSPC else ""
        click.echo(
            f"ms: error: {exc.strerror or exc}{': ' + exc.filename if exc.filename else ''}{hint}",
            err=True,
        )
        code = 16 if exc.errno == errno.ENOSPC else 15
    except Exception as exc:  # a bug: one line, not a traceback (MS_DEBUG=1 shows it)
        if debug:
            raise
        click.echo(
            f"ms: internal error: {type(exc).__name__}: {exc} "
            "(please report it; MS_DEBUG=1 shows the traceback)",
            err=True,
        )
        code = 70
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
