#!/usr/bin/env bash
# The main job on a local repository: make a checkpoint, commit two versions, show the dedup.
# Usage: bash examples/demo.sh [SIZE]   (SIZE defaults to 256MiB; run from the repo root)
set -euo pipefail
size="${1:-256MiB}"
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/ms-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$here"

echo "== generating a $size bf16 checkpoint and a second version with 10% of tensors changed"
python -m bench.gen "$work/v1.safetensors" --size "$size" --dtype bf16 --seed 0
python -m bench.gen "$work/v2.safetensors" --size "$size" --dtype bf16 --seed 0 --change-fraction 0.1

repo="$work/repo"
ms init "$repo"
cp "$work/v1.safetensors" "$repo/model.safetensors"
echo "== version 1"
ms -C "$repo" add model.safetensors
ms -C "$repo" commit -m "baseline" >/dev/null
before=$(du -sb "$repo/.ms" | cut -f1)
echo "== version 2 (10% of tensors retrained)"
cp "$work/v2.safetensors" "$repo/model.safetensors"
ms -C "$repo" status --short
ms -C "$repo" add model.safetensors
ms -C "$repo" commit -m "fine-tuned" >/dev/null
after=$(du -sb "$repo/.ms" | cut -f1)
ms -C "$repo" log --oneline
ms -C "$repo" stats
python - "$before" "$after" "$work/v1.safetensors" <<'PY'
import os, sys
before, after, f = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
size = os.path.getsize(f)
print(f"== the second version added {(after - before) / 2**20:.1f} MiB "
      f"({100 * (after - before) / size:.1f}% of the file); Git LFS or DVC would add 100%")
PY
echo "== restoring version 1 into a new folder and checking it"
ms -C "$repo" checkout HEAD~1 --to "$work/restored"
cmp "$work/restored/model.safetensors" "$work/v1.safetensors" && echo "byte-identical: OK"
