"""Pure helpers of the peers benchmark: du parsing, statistics, tables, the doc and the chart."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
BEGIN = "<!-- peers:begin -->"
END = "<!-- peers:end -->"


def parse_du(text: str) -> int:
    """Bytes from the last line of ``du -sb`` / ``du -scb`` output ('123\\tpath')."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty du output")
    head = lines[-1].split(maxsplit=1)[0]
    if not head.isdigit():
        raise ValueError(f"not du -b output: {lines[-1]!r}")
    return int(head)


def median(xs: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summarize(xs: Sequence[float]) -> dict[str, float]:
    """median, min, max and n of a list of numbers."""
    vals = [float(x) for x in xs]
    return {
        "median": median(vals),
        "min": min(vals, default=float("nan")),
        "max": max(vals, default=float("nan")),
        "n": float(len(vals)),
    }


def fmt_bytes(n: float | None) -> str:
    """Bytes as MiB or GiB with 3 significant figures ('-' for None)."""
    if n is None or n != n:
        return "-"
    if abs(n) >= 1024 * MiB:
        return f"{n / (1024 * MiB):.2f} GiB"
    if abs(n) >= 100 * MiB:
        return f"{n / MiB:.0f} MiB"
    if abs(n) >= 10 * MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n / MiB:.2f} MiB"


def fmt_rate(s: dict[str, float] | None) -> str:
    """'412 (398-430)': median MB/s and the range over the runs."""
    if not s or s["median"] != s["median"]:
        return "-"
    if s.get("n", 1) <= 1 or round(s["min"]) == round(s["max"]):
        return f"{s['median']:.0f}"
    return f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A GitHub markdown table; columns in `right` are right-aligned."""
    align = ["---:" if i in right else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


V1_HEAD = ("input (v1)", "tool", "ingest MB/s", "stored after v1", "% of file", "peak RSS")
V2_HEAD = (
    "workload",
    "tool",
    "ingest v2 MB/s",
    "stored after v2",
    "added by v2",
    "% of file",
    "restore MB/s",
    "peak RSS ingest / restore",
)


def tables(summary: dict[str, Any]) -> str:
    """Two markdown tables: the v1 ingests (one per input) and one row per workload x tool.

    The fewest bytes added by v2 in each workload is in bold.
    """
    tools = summary["tools"]
    v1_rows = []
    for fam in summary["families"]:
        for t in tools:
            r = summary["v1"].get(fam["key"], {}).get(t)
            if r is None:
                continue
            v1_rows.append(
                [
                    fam["title"],
                    summary["labels"][t],
                    fmt_rate(r.get("ingest_mbps")),
                    fmt_bytes(r.get("stored")),
                    _pct(r.get("stored"), fam["bytes"]),
                    f"{r['rss_mb']:.0f} MB" if r.get("rss_mb") else "-",
                ]
            )
    v2_rows = []
    for wl in summary["workloads"]:
        res = summary["v2"].get(wl["key"], {})
        added = [res[t]["added"] for t in tools if t in res and res[t].get("added") is not None]
        best = min(added, default=None)
        for t in tools:
            r = res.get(t)
            if r is None:
                continue
            add = fmt_bytes(r.get("added"))
            if best is not None and r.get("added") == best and len(added) > 1:
                add = f"**{add}**"
            if r.get("error"):
                why = " ".join(r["error"].split()).replace("|", "/")[:80]
                v2_rows.append([wl["title"], summary["labels"][t], "FAIL", "-", "-", "-", "-", why])
                continue
            v2_rows.append(
                [
                    wl["title"],
                    summary["labels"][t],
                    fmt_rate(r.get("ingest_mbps")),
                    fmt_bytes(r.get("stored")),
                    add,
                    _pct(r.get("added"), wl["bytes"]),
                    fmt_rate(r.get("restore_mbps")),
                    _rss_pair(r),
                ]
            )
    return (
        md_table(V1_HEAD, v1_rows, right=(2, 3, 4, 5))
        + "\n\n"
        + md_table(V2_HEAD, v2_rows, right=(2, 3, 4, 5, 6, 7))
    )


def _rss_pair(r: dict[str, Any]) -> str:
    if "ingest_rss_mb" in r and "restore_rss_mb" in r:
        return f"{r['ingest_rss_mb']:.0f} / {r['restore_rss_mb']:.0f} MB"
    return f"{r['rss_mb']:.0f} MB" if r.get("rss_mb") else "-"


def _pct(n: float | None, of: float | None) -> str:
    if n is None or not of:
        return "-"
    return f"{100 * n / of:.1f} %"


def splice(doc: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """Replace what is between the markers (kept) with block; append both if absent."""
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    new = f"{begin}\n{block.strip()}\n{end}"
    if pat.search(doc):
        return pat.sub(lambda _m: new, doc, count=1)
    return doc.rstrip("\n") + "\n\n" + new + "\n"


def chart(summary: dict[str, Any], path: Path) -> bool:
    """PNG: bytes added by v2 (log scale) and v2 ingest MB/s, per workload and tool.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tools = summary["tools"]
    wls = summary["workloads"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8.5), constrained_layout=True)
    width = 0.8 / max(1, len(tools))
    lowest = [float("inf")]
    for j, t in enumerate(tools):
        xs, added, rate, lo, hi = [], [], [], [], []
        for i, wl in enumerate(wls):
            r = summary["v2"].get(wl["key"], {}).get(t)
            if not r or r.get("added") is None:
                continue
            xs.append(i + (j - (len(tools) - 1) / 2) * width)
            added.append(max(r["added"], 1) / MiB)
            lowest[0] = min(lowest[0], added[-1])
            m = r["ingest_mbps"]
            rate.append(m["median"])
            lo.append(m["median"] - m["min"])
            hi.append(m["max"] - m["median"])
        label = summary["labels"][t]
        ax1.bar(xs, added, width, label=label)
        ax2.bar(xs, rate, width, yerr=[lo, hi], capsize=2, label=label)
    names = [wl["title"] for wl in wls]
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(wls)), names)
        ax.grid(axis="y", alpha=0.3)
    ax1.set_yscale("log")
    low = lowest[0] if math.isfinite(lowest[0]) else 1.0
    ax1.set_ylim(bottom=10 ** math.floor(math.log10(max(0.01, low / 2))))
    ax1.set_ylabel("MiB added to the store by v2 (log)")
    ax1.set_title(f"Bytes added by v2 (fewer is better), {summary['size_text']} inputs")
    handles, names_ = ax1.get_legend_handles_labels()
    fig.legend(handles, names_, loc="outside upper center", ncol=len(tools))
    ax2.set_ylabel("MB/s (median, bar = min-max)")
    ax2.set_title("Ingest throughput of v2, tool + sync (more is better)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
