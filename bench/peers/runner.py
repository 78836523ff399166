"""Run modelstore, Git LFS, DVC, borg and restic through the same workloads; see __init__."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gen import format_size, parse_size
from bench.peers import report
from bench.peers.tools import Cmd, Tool, all_tools, try_install
from bench.peers.workloads import FAMILY_FILE, WORKLOADS, Workload
from bench.run import _reset_peak_rss

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOOLS = ("ms", "lfs", "dvc", "borg", "restic")


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    argv: list[str]
    rc: int
    wall: float
    maxrss_kib: int
    out: str

    def describe(self) -> str:
        return f"$ {' '.join(self.argv)}\n  exit {self.rc}: {self.out.strip()[-3000:]}"


class StepError(RuntimeError):
    pass


def run_cmd(cmd: Cmd, timeout: float = 3600.0) -> Proc:
    """Run one command; wall time and ru_maxrss from os.wait4.

    ru_maxrss of a reaped child is the peak of that child and of every descendant it
    waited for (git's LFS filter, dvc's workers): the largest single process of the tree.
    """
    env = {**os.environ, **cmd.env}
    _reset_peak_rss()
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(
                cmd.argv,
                cwd=cmd.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            return Proc(cmd.argv, 127, 0.0, 0, f"cannot start: {e}")
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Proc(cmd.argv, p.returncode, wall, ru.ru_maxrss, text)


def must(cmds: list[Cmd]) -> None:
    for c in cmds:
        p = run_cmd(c)
        if p.rc != 0:
            raise StepError(f"$ {' '.join(c.argv)}\n  exit {p.rc}: {p.out.strip()[-1500:]}")


def du(path: Path) -> int:
    if not path.exists():
        return 0
    p = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return report.parse_du(p.stdout)


def evict(paths: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (posix_fadvise DONTNEED)."""
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            try:
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def can_drop_caches() -> bool:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the bench


class Peers:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size = parse_size(args.size)
        self.csv_size = parse_size(args.csv_size) if args.csv_size else self.size
        self.repeat = max(1, args.repeat)
        self.own_work = args.workdir is None
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="ms-peers-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.src = self.work / "src"
        self.src.mkdir(exist_ok=True)
        want = [w.strip() for w in args.workloads.split(",") if w.strip()]
        known = {w.key: w for w in WORKLOADS}
        bad = [w for w in want if w not in known]
        if bad:
            raise SystemExit(f"unknown workload(s) {bad}; choose from {sorted(known)}")
        self.workloads = [w for w in WORKLOADS if w.key in want]
        ms = args.ms.split() if args.ms else None
        ms_env: dict[str, str] = {}
        self.snapshot_id = ""
        if args.snapshot:
            ms, ms_env = self.snapshot_ms()
        elif ms is None:
            from bench.run import find_ms

            ms = find_ms()
        tools = all_tools(ms, ms_env)
        wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
        bad = [t for t in wanted if t not in tools]
        if bad:
            raise SystemExit(f"unknown tool(s) {bad}; choose from {sorted(tools)}")
        self.tools: list[Tool] = []
        self.skipped: dict[str, str] = {}
        for key in wanted:
            t = tools[key]
            why = t.missing()
            if why and args.install:
                self.log(f"{t.label}: {why}; installing: {try_install(t)}")
                why = t.missing()
            if why:
                hint = " or ".join(
                    x
                    for x in (
                        f"apt-get install {' '.join(t.apt)}" if t.apt else "",
                        f"pip install {' '.join(t.pip)}" if t.pip else "",
                    )
                    if x
                )
                msg = f"{why}" + (f" (install with {hint}, or pass --install)" if hint else "")
                self.log(f"skipping {t.label}: {msg}")
                self.skipped[key] = msg
            else:
                self.tools.append(t)
        self.v1_files: dict[str, Path] = {}  # by family
        self.v2_files: dict[str, Path] = {}  # by workload
        self.gen_info: dict[str, dict[str, Any]] = {"v1": {}, "v2": {}}
        self.records: list[dict[str, Any]] = []
        self.failed = 0

    def log(self, msg: str) -> None:
        print(f"[peers] {msg}", file=sys.stderr, flush=True)

    def snapshot_ms(self) -> tuple[list[str], dict[str, str]]:
        """Copy modelstore/ and cli/ now and run ms from the copy (edits during the run
        by others do not leak into it); the copy's id is a hash of its sources."""
        snap = self.work / "ms-snapshot"
        shutil.rmtree(snap, ignore_errors=True)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "modelstore", snap / "modelstore", ignore=skip)
        shutil.copytree(ROOT / "cli", snap / "modelstore" / "cli", ignore=skip)
        h = hashlib.sha256()
        for f in sorted(snap.rglob("*.py")):
            h.update(str(f.relative_to(snap)).encode() + b"\0" + f.read_bytes())
        self.snapshot_id = h.hexdigest()[:12]
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(snap)], check=False)
        self.log(f"ms runs from a snapshot of the sources ({self.snapshot_id}) in {snap}")
        return [sys.executable, "-m", "modelstore.cli.main"], {"PYTHONPATH": str(snap)}

    # -- inputs ---------------------------------------------------------------

    def _child(self, argv: list[str]) -> dict[str, Any]:
        p = run_cmd(Cmd(argv, ROOT))
        if p.rc != 0:
            raise StepError(p.describe())
        info: dict[str, Any] = json.loads(p.out[p.out.index("{") :])
        return info

    def generate(self) -> None:
        py = sys.executable
        v1 = self.src / "ckpt-v1.safetensors"
        gen = [py, "-m", "bench.gen", "--size", str(self.size), "--json"]
        if any(w.family == "ckpt" for w in self.workloads):
            self.v1_files["ckpt"] = v1
            self.gen_info["v1"]["ckpt"] = self._child([*gen, str(v1), "--seed", "0"])
            self.log(f"generated checkpoint v1 ({format_size(self.size)})")
        for w in self.workloads:
            ext = ".csv" if w.family == "csv" else ".safetensors"
            out = self.src / f"{w.key}-v2{ext}"
            if w.key == "new":
                info = self._child([*gen, str(out), "--seed", "1"])
            elif w.key == "change10":
                info = self._child([*gen, str(out), "--seed", "0", "--change-fraction", "0.1"])
            elif w.key in ("finetune", "insert", "append"):
                info = self._child(
                    [py, "-m", "bench.peers.workloads", w.key, str(out), "--src", str(v1)]
                )
            else:  # csv: v1 and v2 in one pass
                csv1 = self.src / "csv-v1.csv"
                info = self._child(
                    [
                        py,
                        "-m",
                        "bench.peers.workloads",
                        "csv",
                        str(csv1),
                        "--v2",
                        str(out),
                        "--size",
                        str(self.csv_size),
                    ]
                )
                self.v1_files["csv"] = csv1
                self.gen_info["v1"]["csv"] = {"bytes": info["bytes"]}
                info["bytes"] = info.pop("v2_bytes")
                info["v1_bytes"] = self.gen_info["v1"]["csv"]["bytes"]
            self.v2_files[w.key] = out
            self.gen_info["v2"][w.key] = info
            self.log(f"generated {w.key} v2 ({out.stat().st_size / 2**20:.0f} MiB)")

    # -- one measured step ----------------------------------------------------

    def timed(self, cmds: list[Cmd], cold: list[Path]) -> dict[str, float]:
        """Run cmds (after an untimed sync), then sync: tool time, sync time, peak RSS."""
        os.sync()
        if self.args.cold:
            evict(cold)
        tool_s, rss = 0.0, 0
        for c in cmds:
            p = run_cmd(c)
            if p.rc != 0:
                raise StepError(f"$ {' '.join(c.argv)}\n  exit {p.rc}: {p.out.strip()[-1500:]}")
            tool_s += p.wall
            rss = max(rss, p.maxrss_kib)
        t0 = time.perf_counter()
        os.sync()
        sync_s = time.perf_counter() - t0
        return {"tool_s": tool_s, "sync_s": sync_s, "s": tool_s + sync_s, "rss_mb": rss / 1024}

    # -- one tool, one family, one repetition ---------------------------------

    def cycle(self, tool: Tool, family: str, wls: list[Workload], rep: int) -> None:
        runs = self.work / "runs"
        base = runs / tool.key
        snap = runs / f"{tool.key}.v1"
        name = FAMILY_FILE[family]
        v1 = self.v1_files[family]
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(snap, ignore_errors=True)
        base.mkdir(parents=True)
        head = {"tool": tool.key, "family": family, "rep": rep}
        try:
            must(tool.setup(base))
            ws = tool.ws(base)
            shutil.copyfile(v1, ws / name)
            step = self.timed(tool.ingest(base, name, "v1"), [ws / name])
            stored = du(tool.store(base))
            rec = {
                **head,
                "version": "v1",
                "bytes": v1.stat().st_size,
                "stored": stored,
                "ingest": step,
            }
            self.records.append(rec)
            self.log(
                f"  {tool.key:6} {family} v1: {rec['bytes'] / step['s'] / 1e6:6.0f} MB/s, "
                f"stored {stored / 2**20:.0f} MiB, rss {step['rss_mb']:.0f} MB"
            )
        except Exception as e:
            self.failed += 1
            traceback.print_exc()
            for w in wls:
                self.records.append(
                    {**head, "version": "v2", "workload": w.key, "error": f"v1: {e}"[:300]}
                )
            shutil.rmtree(base, ignore_errors=True)
            return
        if len(wls) > 1:
            subprocess.run(["cp", "-a", str(base), str(snap)], check=True)
        for k, w in enumerate(wls):
            try:
                if k > 0:
                    shutil.rmtree(base)
                    subprocess.run(["cp", "-a", str(snap), str(base)], check=True)
                self.one_v2(tool, base, name, w, head, stored)
            except Exception as e:
                self.failed += 1
                traceback.print_exc()
                self.records.append(
                    {**head, "version": "v2", "workload": w.key, "error": str(e)[:300]}
                )
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(snap, ignore_errors=True)

    def one_v2(
        self, tool: Tool, base: Path, name: str, w: Workload, head: dict[str, Any], stored1: int
    ) -> None:
        ws = tool.ws(base)
        v2 = self.v2_files[w.key]
        (ws / name).unlink()
        shutil.copyfile(v2, ws / name)
        ing = self.timed(tool.ingest(base, name, "v2"), [ws / name])
        stored = du(tool.store(base))
        out = base / "out"
        must(tool.restore_setup(base, out, name))
        rst = self.timed(tool.restore(base, out), [tool.store(base)])
        got = tool.restored(out, name)
        same = got is not None and subprocess.run(["cmp", "-s", str(got), str(v2)]).returncode == 0
        client = sum(du(p) for p in tool.client_dirs(base))
        nbytes = v2.stat().st_size
        rec = {
            **head,
            "version": "v2",
            "workload": w.key,
            "bytes": nbytes,
            "stored": stored,
            "added": stored - stored1,
            "ingest": ing,
            "restore": rst,
            "verified": same,
            "client_bytes": client,
        }
        if not same:
            self.failed += 1
            rec["error"] = f"restored file differs from v2 ({got})"
        self.records.append(rec)
        self.log(
            f"  {tool.key:6} {w.key:8} v2: {nbytes / ing['s'] / 1e6:6.0f} MB/s, "
            f"+{(stored - stored1) / 2**20:.1f} MiB, restore "
            f"{nbytes / rst['s'] / 1e6:.0f} MB/s{'' if same else ' MISMATCH'}"
        )

    # -- everything -----------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        mem = ""
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
        except OSError:
            pass
        fs = subprocess.run(["df", "-T", str(self.work)], capture_output=True, text=True)
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "--",
                "modelstore",
                "cli",
            ],
            capture_output=True,
            text=True,
        )
        return {
            "size": self.size,
            "size_text": format_size(self.size),
            "csv_size": self.csv_size,
            "repeat": self.repeat,
            "cache": "cold (posix_fadvise DONTNEED)" if self.args.cold else "warm",
            "drop_caches_permitted": can_drop_caches() if self.args.cold else None,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "memory": mem,
            "filesystem": (fs.stdout.splitlines()[-1].split()[1] if fs.returncode == 0 else "?"),
            "ms_revision": rev.stdout.strip(),
            "ms_uncommitted_files": len(dirty.stdout.splitlines()),
            "ms_snapshot": self.snapshot_id,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "versions": {t.key: t.version() for t in self.tools},
            "skipped": self.skipped,
        }

    def run(self) -> dict[str, Any]:
        need = 9 * self.size + 2 * self.csv_size
        free = shutil.disk_usage(self.work).free
        if free < need:
            self.log(
                f"warning: {free / 2**30:.1f} GiB free in {self.work}, ~{need / 2**30:.1f} "
                "GiB needed"
            )
        meta = self.meta()
        self.log(
            f"workdir {self.work}; tools {[t.key for t in self.tools]}; versions {meta['versions']}"
        )
        self.generate()
        fams: dict[str, list[Workload]] = {}
        for w in self.workloads:
            fams.setdefault(w.family, []).append(w)
        for rep in range(self.repeat):
            # rotate the tool order so that no tool always runs first (or after the same one)
            order = self.tools[rep % len(self.tools) :] + self.tools[: rep % len(self.tools)]
            for tool in order:
                for fam, wls in fams.items():
                    self.log(f"run {rep + 1}/{self.repeat}: {tool.label}, {fam}")
                    self.cycle(tool, fam, wls, rep)
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        return {
            "meta": meta,
            "inputs": self.gen_info,
            "records": self.records,
            "summary": summarize(
                meta,
                self.gen_info,
                self.records,
                [t.key for t in self.tools],
                {t.key: t.label for t in self.tools},
                self.workloads,
            ),
        }

    def cleanup(self) -> None:
        if self.args.keep:
            self.log(f"kept {self.work}")
        elif self.own_work:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            shutil.rmtree(self.src, ignore_errors=True)
            shutil.rmtree(self.work / "runs", ignore_errors=True)


# --------------------------------------------------------------------------- summary


def summarize(
    meta: dict[str, Any],
    inputs: dict[str, Any],
    records: list[dict[str, Any]],
    tools: list[str],
    labels: dict[str, str],
    workloads: list[Workload],
) -> dict[str, Any]:
    """Medians (and ranges) over the runs, per (input, tool) for v1 and (workload, tool) for v2."""
    fam_titles = {"ckpt": "checkpoint", "csv": "CSV dataset"}
    families = [
        {"key": f, "title": fam_titles[f], "bytes": inputs["v1"].get(f, {}).get("bytes")}
        for f in dict.fromkeys(w.family for w in workloads)
    ]
    v1: dict[str, dict[str, Any]] = {}
    v2: dict[str, dict[str, Any]] = {}
    for f in families:
        for t in tools:
            rs = [
                r
                for r in records
                if r["tool"] == t and r["family"] == f["key"] and r["version"] == "v1"
            ]
            if rs:
                v1.setdefault(f["key"], {})[t] = {
                    "ingest_mbps": report.summarize(
                        [r["bytes"] / r["ingest"]["s"] / 1e6 for r in rs]
                    ),
                    "stored": report.median([r["stored"] for r in rs]),
                    "stored_range": [min(r["stored"] for r in rs), max(r["stored"] for r in rs)],
                    "rss_mb": max(r["ingest"]["rss_mb"] for r in rs),
                }
    for w in workloads:
        for t in tools:
            rs = [r for r in records if r["tool"] == t and r.get("workload") == w.key]
            if not rs:
                continue
            ok = [r for r in rs if not r.get("error")]
            if not ok:
                v2.setdefault(w.key, {})[t] = {"error": rs[0]["error"]}
                continue
            v2.setdefault(w.key, {})[t] = {
                "ingest_mbps": report.summarize([r["bytes"] / r["ingest"]["s"] / 1e6 for r in ok]),
                "restore_mbps": report.summarize(
                    [r["bytes"] / r["restore"]["s"] / 1e6 for r in ok]
                ),
                "stored": report.median([r["stored"] for r in ok]),
                "added": report.median([r["added"] for r in ok]),
                "added_range": [min(r["added"] for r in ok), max(r["added"] for r in ok)],
                "rss_mb": max(max(r["ingest"]["rss_mb"], r["restore"]["rss_mb"]) for r in ok),
                "ingest_rss_mb": max(r["ingest"]["rss_mb"] for r in ok),
                "restore_rss_mb": max(r["restore"]["rss_mb"] for r in ok),
                "client_bytes": report.median([r["client_bytes"] for r in ok]),
                "runs": len(ok),
                "failed_runs": len(rs) - len(ok),
            }
    wl_bytes = {w.key: inputs["v2"].get(w.key, {}).get("bytes") for w in workloads}
    return {
        "size_text": meta.get("size_text", ""),
        "tools": tools,
        "labels": labels,
        "families": families,
        "workloads": [
            {"key": w.key, "title": w.title, "what": w.what, "bytes": wl_bytes[w.key]}
            for w in workloads
        ],
        "v1": v1,
        "v2": v2,
    }


def _beats(r: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """What r does better than mine: fewer bytes (v1 stored, v2 added), more MB/s, less RSS."""
    what = []
    for key, title in (("stored", "stored"), ("added", "added")):
        if key in r and (key == "added" or "added" not in r) and r[key] < mine[key]:
            what.append(f"{report.fmt_bytes(r[key])} {title} vs {report.fmt_bytes(mine[key])}")
    for key, title in (("ingest_mbps", "ingest"), ("restore_mbps", "restore")):
        if key in r and round(r[key]["median"]) > round(mine[key]["median"]):
            what.append(f"{title} {r[key]['median']:.0f} vs {mine[key]['median']:.0f} MB/s")
    rss = ("ingest_rss_mb", "restore_rss_mb") if "ingest_rss_mb" in mine else ("rss_mb",)
    for key in rss:
        if key in r and round(r[key]) < round(mine[key]):
            title = {"ingest_rss_mb": "ingest RSS", "restore_rss_mb": "restore RSS"}.get(key, "RSS")
            what.append(f"{title} {r[key]:.0f} vs {mine[key]:.0f} MB")
    return what


def peers_win(summary: dict[str, Any], ms: str = "ms") -> list[str]:
    """One line per input or workload where a peer beats ms on bytes, throughput or RSS."""
    lines = []
    lab = summary["labels"]
    rows = [(f"{f['title']} v1", summary["v1"].get(f["key"], {})) for f in summary["families"]]
    rows += [(w["title"], summary["v2"].get(w["key"], {})) for w in summary["workloads"]]
    for title, res in rows:
        mine = res.get(ms)
        if not mine or mine.get("error"):
            continue
        wins = []
        for t, r in res.items():
            if t != ms and not r.get("error") and (what := _beats(r, mine)):
                wins.append(f"{lab[t]} ({', '.join(what)})")
        if wins:
            lines.append(f"- {title}: " + "; ".join(wins))
    return lines


def targets(summary: dict[str, Any], ms: str = "ms") -> list[str]:
    """The issue's targets for ms: fewest stored bytes everywhere, ingest ahead of borg+restic."""
    out = []
    for w in summary["workloads"]:
        res = {t: r for t, r in summary["v2"].get(w["key"], {}).items() if not r.get("error")}
        mine = res.get(ms)
        if mine is None:
            continue
        fewest = all(mine["stored"] <= r["stored"] for r in res.values())
        slow = [
            summary["labels"][t]
            for t in ("borg", "restic")
            if t in res and res[t]["ingest_mbps"]["median"] >= mine["ingest_mbps"]["median"]
        ]
        out.append(
            f"- {w['title']}: fewest stored bytes {'yes' if fewest else 'NO'}; ingest ahead "
            f"of borg and restic {'yes' if not slow else 'NO (behind ' + ', '.join(slow) + ')'}"
        )
    return out


def render(doc: dict[str, Any], md_path: Path | None, png_path: Path | None) -> str:
    """Markdown block (meta, versions, tables, chart, computed wins); splice it into md_path."""
    meta, summary = doc["meta"], doc["summary"]
    lab = summary["labels"]
    vers = report.md_table(
        ("tool", "version"), [[lab.get(k, k), v] for k, v in meta["versions"].items()]
    )
    skipped = "".join(f"\n- skipped {k}: {v}" for k, v in meta.get("skipped", {}).items())
    wins = peers_win(summary) or ["- none: modelstore is ahead on bytes, MB/s and RSS"]
    block = [
        f"Run {meta['started']}: inputs {meta['size_text']} (checkpoint) and "
        f"{meta['csv_size'] / 2**30:.2f} GiB (CSV), {meta['repeat']} runs each, page cache "
        f"{meta['cache']}; {meta['cpus']} CPUs, {meta['memory']}, {meta['filesystem']}, "
        f"{meta['platform']}; modelstore at {meta['ms_revision']} "
        f"(+{meta['ms_uncommitted_files']} uncommitted files"
        + (f", sources snapshot {meta['ms_snapshot']}" if meta.get("ms_snapshot") else "")
        + f").{skipped}",
        "",
        vers,
        "",
        report.tables(summary),
        "",
    ]
    if png_path is not None and md_path is not None:
        rel = os.path.relpath(png_path, md_path.parent)
        block += [f"![bytes added by v2 and ingest MB/s per workload and tool]({rel})", ""]
    block += ["Where a peer beats modelstore in this run (computed by the runner):", "", *wins]
    block += ["", "modelstore's targets (issue 7), per workload:", "", *targets(summary)]
    text = "\n".join(block)
    if md_path is not None:
        old = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
        md_path.write_text(report.splice(old, text))
    return text


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="modelstore vs Git LFS, DVC, borg and restic on the same workloads",
    )
    ap.add_argument("--size", default="1GiB", help="checkpoint size (default 1GiB)")
    ap.add_argument("--csv-size", default=None, help="CSV v1 size (default: --size)")
    ap.add_argument("--tools", default=",".join(DEFAULT_TOOLS), help="comma list")
    ap.add_argument("--workloads", default=",".join(w.key for w in WORKLOADS), help="comma list")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool (median reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/peers.json")
    ap.add_argument("--png", default=str(ROOT / "docs/benchmarks.png"), help="'' = no chart")
    ap.add_argument(
        "--doc",
        default=str(ROOT / "docs/benchmarks.md"),
        help="markdown file whose peers markers get the table ('' = none)",
    )
    ap.add_argument("--workdir", default=None, help="scratch dir (default: a new one in $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="evict inputs/stores from the page cache before each timed step",
    )
    ap.add_argument(
        "--install",
        action="store_true",
        help="apt-get/pip install missing peers instead of skipping them",
    )
    ap.add_argument("--ms", default=None, help="ms command (default: the ms next to python)")
    ap.add_argument(
        "--snapshot",
        action="store_true",
        help="run ms from a copy of modelstore/ and cli/ taken at the start",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="re-make the table, doc and chart from --out without running",
    )
    a = ap.parse_args(argv)
    doc_path = Path(a.doc) if a.doc else None
    failed = 0
    if a.render_only:
        doc = json.loads(a.out.read_text())
    else:
        from bench.run import _precompile

        _precompile()
        bench = Peers(a)
        try:
            doc = bench.run()
        finally:
            bench.cleanup()
        failed = bench.failed
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {a.out}", file=sys.stderr)
    png = Path(a.png) if a.png else None
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        if not report.chart(doc["summary"], png):
            print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
            png = None
    print(render(doc, doc_path, png))
    return 1 if failed else 0
