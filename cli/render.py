"""Rendering for the CLI: human text or ``--json``, and progress bars on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

__all__ = ["Bar", "emit_json", "human_size", "progress", "say"]


def emit_json(value: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def say(text: str = "", *, err: bool = False) -> None:
    """Print a line for humans."""
    click.echo(text, err=err)


def human_size(n: int | float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "-"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{int(x)} B" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} PiB"  # pragma: no cover


class Bar:
    """Callbacks for the library: ``update(n)`` advances, ``set_total(n)`` sets the size."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, n: int) -> None:
        """Advance by ``n`` bytes."""
        self._bar.update(n)

    def set_total(self, total: int) -> None:
        """Set the total once it is known (shows the rate and the ETA)."""
        self._bar.reset(total=total)


@contextmanager
def progress(desc: str, enabled: bool) -> Iterator[Bar | None]:
    """A tqdm byte-progress bar (bytes, rate, ETA) on stderr when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(
        total=None,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        yield Bar(bar)
