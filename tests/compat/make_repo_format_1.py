"""How tests/data/repo-format-1.tar.gz was made. Kept for the record: NEVER re-run it to
"fix" the compat test. The frozen repository is the point; every later version of modelstore
must open, read and verify it exactly as format 1 wrote it.

    python -m tests.compat.make_repo_format_1 OUT.tar.gz
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from blake3 import blake3

from modelstore import Repository
from modelstore.chunker import ChunkerParams, splitmix64_bytes

TINY = ChunkerParams(min_size=64, avg_size=256, max_size=1024)


def text(n_lines: int, seed: int) -> bytes:
    return "".join(f"row {i} value {(i * 2654435761 + seed) % 1000003}\n"
                   for i in range(n_lines)).encode()


def main(out: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    work = tmp / "repo"
    os.environ["MS_AUTHOR"] = "format-1 fixture <fixture@modelstore>"
    r = Repository.init(work, chunker=TINY, pack_size=64 << 10)
    (work / "data").mkdir()
    (work / "data" / "train.csv").write_bytes(text(60_000, 1))  # > 4096 chunks: segmented
    (work / "model.bin").write_bytes(splitmix64_bytes(7, 50_000))
    (work / "run.sh").write_bytes(b"#!/bin/sh\necho train\n")
    os.chmod(work / "run.sh", 0o755)
    r.add([str(work)])
    c1 = r.commit("format 1: first commit", when=1_790_000_000)
    (work / "model.bin").write_bytes(splitmix64_bytes(7, 50_000)[:-100] + b"z" * 100)
    (work / "empty.txt").write_bytes(b"")
    r.add([str(work)])
    c2 = r.commit("format 1: second commit", when=1_790_000_100)
    expect = {}
    for rev in (c1.hex(), c2.hex()):
        files = r.commit_files(bytes.fromhex(rev))
        expect[rev] = {p: blake3((lambda b: b)(
            b"".join(r.iter_file(r.get_manifest(e.id))))).hexdigest() for p, e in files.items()}
    r.close()
    (tmp / "expect.json").write_text(json.dumps({"head": c2.hex(), "commits": expect},
                                                indent=1, sort_keys=True))
    with tarfile.open(out, "w:gz") as tf:
        tf.add(work, arcname="repo")
        tf.add(tmp / "expect.json", arcname="expect.json")


if __name__ == "__main__":
    main(sys.argv[1])
