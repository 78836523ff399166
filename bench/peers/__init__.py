"""modelstore vs the tools users would otherwise pick: Git LFS, DVC, borg and restic.

``python -m bench.peers [--size 1GiB] [--tools ms,lfs,dvc,borg,restic] [--repeat 3]
[--out bench/results/peers.json] [--png docs/benchmarks.png]``

Each tool gets the same workloads (``bench.peers.workloads``): a checkpoint v1, then a v2
that is a new checkpoint, a 10% change, a full fine-tune, an inserted tensor or appended
tensors; and a CSV dataset whose v2 has rows inserted in the middle and appended. For each
it measures ingest MB/s (the tool's commands plus a ``sync``), stored bytes after each
version (``du -sb`` of the store), bytes added by v2, restore MB/s of v2 into a new folder
(also + ``sync``; the copy is compared with v2) and peak RSS (``ru_maxrss`` from
``wait4``). Results go to a JSON file, a markdown table between the peers markers of
``docs/benchmarks.md``, and a PNG chart.
"""
