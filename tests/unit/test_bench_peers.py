"""The peers benchmark's pure parts: workload files, du parsing, statistics, tables, doc."""

import numpy as np
import pytest

from bench.gen import KiB, write_checkpoint
from bench.peers import report
from bench.peers.runner import peers_win, summarize, targets
from bench.peers.workloads import (
    CSV_HEADER,
    WORKLOADS,
    csv_plan,
    finetune_checkpoint,
    read_header,
    splice_checkpoint,
    write_csv_pair,
)

safetensors = pytest.importorskip("safetensors")


def _tensors(path):
    """{name: raw bytes}, after safetensors itself has validated the file."""
    with safetensors.safe_open(str(path), framework="np") as f:
        names = set(f.keys())
    start, _, entries = read_header(path)
    data = path.read_bytes()
    assert {e.name for e in entries} == names
    assert entries[-1].end + start == len(data)  # the data section is covered exactly
    return [(e.name, data[start + e.begin : start + e.end]) for e in entries]


@pytest.fixture
def v1(tmp_path):
    p = tmp_path / "v1.safetensors"
    write_checkpoint(p, 256 * KiB, dtype="mixed", seed=0)
    return p


def test_inserted_tensor_in_the_middle_shifts_later_data(v1, tmp_path):
    v2 = tmp_path / "v2.safetensors"
    info = splice_checkpoint(v1, v2, nbytes=4 * KiB, seed=3)
    old, new = _tensors(v1), _tensors(v2)
    pos = len(old) // 2
    assert info["position"] == pos and info["header_growth"] > 0
    assert [n for n, _ in new] == [n for n, _ in old[:pos]] + info["new_tensors"] + [
        n for n, _ in old[pos:]
    ]
    assert all(dict(new)[n] == b for n, b in old)  # old tensors unchanged
    added = dict(new)[info["new_tensors"][0]]
    assert len(added) == 4 * KiB and added != bytes(len(added))
    assert v2.stat().st_size == v1.stat().st_size + 4 * KiB + info["header_growth"]
    # the bytes after the insertion point moved: same content, other offsets
    s1, _, e1 = read_header(v1)
    s2, _, e2 = read_header(v2)
    last1, last2 = e1[-1], e2[-1]
    assert last2.begin + s2 != last1.begin + s1


def test_appended_tensors_go_last(v1, tmp_path):
    v2 = tmp_path / "v2.safetensors"
    info = splice_checkpoint(v1, v2, at=1 << 62, count=3, nbytes=2 * KiB)
    old, new = _tensors(v1), _tensors(v2)
    assert [n for n, _ in new] == [n for n, _ in old] + info["new_tensors"]
    assert new[: len(old)] == old
    assert len({b for n, b in new[len(old) :]}) == 3  # three different new tensors


def test_splice_rejects_sizes_that_are_not_whole_rows(v1, tmp_path):
    with pytest.raises(ValueError):
        splice_checkpoint(v1, tmp_path / "x", nbytes=1000)


def test_finetune_changes_every_tensor_but_few_exponents(v1, tmp_path):
    v2 = tmp_path / "v2.safetensors"
    info = finetune_checkpoint(v1, v2)
    assert v1.read_bytes()[: read_header(v1)[0]] == v2.read_bytes()[: read_header(v2)[0]]
    old, new = _tensors(v1), _tensors(v2)
    assert [n for n, _ in old] == [n for n, _ in new]
    assert all(a != b for (_, a), (_, b) in zip(old, new, strict=True))
    assert info["changed_fraction"] > 0.5
    assert info["exponent_changed_fraction"] < 0.1
    # small: bf16 values move by about 1% of their tensor's rms
    _, _, entries = read_header(v1)
    e = next(e for e in entries if e.dtype == "BF16" and e.nbytes >= 1024)
    a = (np.frombuffer(dict(old)[e.name], "<u2").astype(np.uint32) << 16).view(np.float32)
    b = (np.frombuffer(dict(new)[e.name], "<u2").astype(np.uint32) << 16).view(np.float32)
    rms = float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
    assert float(np.sqrt(np.mean((b - a).astype(np.float64) ** 2))) < 0.05 * rms
    assert finetune_checkpoint(v1, tmp_path / "again") == info  # seeded
    assert (tmp_path / "again").read_bytes() == v2.read_bytes()


@pytest.mark.parametrize("workers", [1, 2])
def test_csv_v2_is_v1_with_rows_inserted_mid_file_and_appended(tmp_path, workers):
    p1, p2 = tmp_path / "v1.csv", tmp_path / "v2.csv"
    info = write_csv_pair(p1, p2, 60 * KiB, rows_per_block=256, workers=workers)
    l1 = p1.read_text().splitlines(keepends=True)
    l2 = p2.read_text().splitlines(keepends=True)
    assert l1[0] == l2[0] == CSV_HEADER
    n_ins, n_app = info["inserted_rows"], info["appended_rows"]
    assert len(l2) == len(l1) + n_ins + n_app and n_ins > 0 and n_app > 0
    assert l2[len(l2) - n_app :] != l1[-n_app:]
    assert l2[: len(l2) - n_app][: len(l1)] != l1  # not just appended
    # find the insertion point: v2 = v1[:k] + inserted + v1[k:] + appended
    k = next(i for i, (a, b) in enumerate(zip(l1, l2, strict=False)) if a != b)
    assert l2[k + n_ins : len(l2) - n_app] == l1[k:]
    assert (k - 1) % 256 != 0  # not on a block boundary
    assert abs(k - len(l1) / 2) < 256  # in the middle block
    ids = [line.split(",", 1)[0] for line in l2[1:]]
    assert len(set(ids)) == len(ids)
    assert all(len(line.split(",")) == 6 for line in l2)
    assert info["bytes"] == p1.stat().st_size


def test_csv_plan_scales_with_size():
    blocks, ins, app = csv_plan(1 << 30)
    assert 300 < blocks < 400 and ins == app == round(0.01 * blocks * 65536)


def test_parse_du():
    assert report.parse_du("123456\t/tmp/x/.ms\n") == 123456
    assert report.parse_du("10\ta\n20\tb\n30\ttotal\n") == 30
    with pytest.raises(ValueError):
        report.parse_du("")
    with pytest.raises(ValueError):
        report.parse_du("du: cannot access 'x': No such file or directory")


def test_statistics_and_formatting():
    assert report.median([3, 1, 2]) == 2
    assert report.median([4, 1, 2, 3]) == 2.5
    s = report.summarize([100.2, 98.7, 130.0])
    assert s == {"median": 100.2, "min": 98.7, "max": 130.0, "n": 3.0}
    assert report.fmt_rate(s) == "100 (99-130)"
    assert report.fmt_rate(report.summarize([50.0])) == "50"
    assert report.fmt_bytes(None) == "-"
    assert report.fmt_bytes(3 * 2**30) == "3.00 GiB"
    assert report.fmt_bytes(512 * 2**20) == "512 MiB"
    assert report.fmt_bytes(12.5 * 2**20) == "12.5 MiB"
    assert report.fmt_bytes(-(2**20)) == "-1.00 MiB"


def test_splice_replaces_between_markers_and_appends_when_absent():
    doc = f"# T\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n"
    new = report.splice(doc, "| a |\n")
    assert "old" not in new and "| a |" in new and new.endswith("after\n")
    assert report.splice(new, "| a |") == new
    assert report.splice("# T\n", "x").endswith(f"{report.BEGIN}\nx\n{report.END}\n")


M = 2**20


def _records():
    recs = []
    for rep, slow in enumerate((1.0, 1.2, 0.9)):
        for tool, stored1, added, secs in (
            ("ms", 600 * M, 60 * M, 2.0),
            ("borg", 1000 * M, 200 * M, 1.0),
        ):
            recs.append(
                {
                    "tool": tool,
                    "family": "ckpt",
                    "rep": rep,
                    "version": "v1",
                    "bytes": 1000e6,
                    "stored": stored1,
                    "ingest": {"s": secs * slow, "rss_mb": 50.0},
                }
            )
            recs.append(
                {
                    "tool": tool,
                    "family": "ckpt",
                    "rep": rep,
                    "version": "v2",
                    "workload": "insert",
                    "bytes": 1000e6,
                    "stored": stored1 + added,
                    "added": added,
                    "ingest": {"s": secs * slow, "rss_mb": 60.0},
                    "restore": {"s": 1.0, "rss_mb": 70.0 + rep},
                    "client_bytes": 0,
                }
            )
    recs.append(
        {
            "tool": "borg",
            "family": "ckpt",
            "rep": 0,
            "version": "v2",
            "workload": "append",
            "error": "v1: boom\n| x",
        }
    )
    return recs


def test_summary_tables_and_wins():
    wls = [w for w in WORKLOADS if w.key in ("insert", "append")]
    inputs = {"v1": {"ckpt": {"bytes": 1000 * M}}, "v2": {"insert": {"bytes": 1000 * M}}}
    s = summarize(
        {"size_text": "1GiB"},
        inputs,
        _records(),
        ["ms", "borg"],
        {"ms": "modelstore", "borg": "borg"},
        wls,
    )
    ins = s["v2"]["insert"]
    assert ins["ms"]["added"] == 60 * M and ins["borg"]["added"] == 200 * M
    assert ins["ms"]["ingest_mbps"]["median"] == pytest.approx(500.0)
    assert ins["ms"]["rss_mb"] == 72.0 and ins["ms"]["runs"] == 3
    assert s["v2"]["append"]["borg"] == {"error": "v1: boom\n| x"}
    text = report.tables(s)
    assert "| checkpoint | modelstore | 500 (417-556) | 600 MiB | 60.0 % | 50 MB |" in text
    row = "| inserted tensor | modelstore | 500 (417-556) | 660 MiB | **60.0 MiB** | 6.0 % |"
    assert row in text  # the fewest bytes added, in bold
    assert "| 200 MiB | 20.0 % | 1000 | 60 / 72 MB |" in text
    assert "FAIL" in text and "v1: boom / x" in text  # one line, no stray pipe
    assert all(line.count("|") == 9 for line in text.split("\n\n")[1].splitlines())
    wins = peers_win(s)
    assert wins == [
        "- checkpoint v1: borg (ingest 1000 vs 500 MB/s)",
        "- inserted tensor: borg (ingest 1000 vs 500 MB/s)",
    ]
    s["v2"]["insert"]["borg"]["restore_rss_mb"] = 10.0
    assert peers_win(s)[1] == (
        "- inserted tensor: borg (ingest 1000 vs 500 MB/s, restore RSS 10 vs 72 MB)"
    )
    assert targets(s) == [
        "- inserted tensor: fewest stored bytes yes; ingest ahead of borg and restic "
        "NO (behind borg)"
    ]
