"""What provenance costs a commit (issue 5 target: capture adds < 300 ms), and lineage speed.

Usage: python -m bench.bench_lineage [--repeat 7] [--commits 300]
The baseline is a commit without capture measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from modelstore import Repository, api
from modelstore.lineage import capture


def _median_ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--commits", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "proj"
        w.mkdir()
        subprocess.run(["git", "init", "-q", str(w)], check=True)
        (w / "train.py").write_text("print('train')\n")
        subprocess.run(["git", "-C", str(w), "add", "train.py"], check=True)
        subprocess.run(["git", "-C", str(w), "-c", "user.email=a@b", "-c", "user.name=a",
                        "commit", "-qm", "code"], check=True)
        r = Repository.init(w)
        capture(w)  # warm the imports once, as a long-running process would have them
        cap = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            capture(w)
            cap.append(time.perf_counter() - t)
        plain, full = [], []
        for i in range(a.repeat):
            (w / "m.bin").write_bytes(b"%d" % i)
            r.add([str(w / "m.bin")])
            t = time.perf_counter()
            api.commit(r, f"plain {i}", capture=False)
            plain.append(time.perf_counter() - t)
            (w / "m.bin").write_bytes(b"%d-" % i)
            r.add([str(w / "m.bin")])
            t = time.perf_counter()
            api.commit(r, f"captured {i}", capture=True)
            full.append(time.perf_counter() - t)
        added = statistics.median(full) - statistics.median(plain)
        verdict = "PASS" if added < 0.3 else "MISS"
        print(f"capture alone: median {_median_ms(cap)} ms, max {round(max(cap) * 1000, 1)} ms")
        print(f"commit: {_median_ms(plain)} ms plain, {_median_ms(full)} ms with capture: "
              f"+{round(added * 1000, 1)} ms (target < 300 ms) {verdict}")
        (w / "data").mkdir()
        for i in range(a.commits):
            if i % 10 == 0:
                (w / "data" / "train.csv").write_text(f"a\n{i}\n")
                r.add([str(w / "data" / "train.csv")])
            (w / "m.bin").write_bytes(b"v%d" % i)
            r.add([str(w / "m.bin")])
            api.commit(r, f"c{i}", inputs=["data/train.csv"], metrics={"acc": i / a.commits},
                       capture=False)
        t = time.perf_counter()
        info = api.lineage(r, f"HEAD~{a.commits - 5}:data/train.csv")
        lin = time.perf_counter() - t
        t = time.perf_counter()
        api.compare(r, f"HEAD~{a.commits // 3}", "HEAD")
        cmp_ = time.perf_counter() - t
        print(f"lineage over {a.commits} commits: {round(lin * 1000, 1)} ms "
              f"({len(info['used_by'])} users found); compare with file diff: "
              f"{round(cmp_ * 1000, 1)} ms")
        r.close()


if __name__ == "__main__":
    main()
