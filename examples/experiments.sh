#!/usr/bin/env bash
# Tracking experiments and promoting models, end to end:
# data v1 -> train -> evaluate -> promote -> data v2 -> retrain -> promote -> regress -> rollback.
# Usage: bash examples/experiments.sh [WORKDIR]   (run from the repository root; needs numpy
# and safetensors, which `pip install -e '.[test]'` brings). docs/guide.md shows its output.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/ms-exp.XXXXXX")}"
mkdir -p "$work"
cd "$work"
export MS_AUTHOR="${MS_AUTHOR:-ana@lab}"
say() {
  local shown="" a
  for a in "$@"; do
    if [[ "$a" =~ [[:space:]] ]]; then shown+=" \"$a\""; else shown+=" $a"; fi
  done
  printf '\n$%s\n' "$shown"
  "$@"
}

# the project: training code in git, data and models in modelstore
git init -q . && git -c user.email=ana@lab -c user.name=ana commit -q --allow-empty -m "training code"
ms init . >/dev/null
mkdir -p data
python - <<'PY'
import csv, random
random.seed(1)
with open("data/train.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "feature", "label", "source"])
    for i in range(2000):
        x = random.gauss(0, 1)
        w.writerow([i, round(x, 4), round(2 * x + random.gauss(0, 0.3), 4), "web"])
PY
say ms add data
say ms commit -m "dataset v1: 2000 rows"

# train the baseline and record how it scored, on what, with which settings
python "$here/examples/train.py" data/train.csv . --lr 3e-4 --steps 100 >/dev/null
ms add model.safetensors >/dev/null
say ms commit -m "baseline" --metrics-file metrics.json --param lr=3e-4 --param steps=100 \
    --input data/train.csv
say ms alias set production HEAD -m "baseline passed evaluation"

# new data arrives: more rows, one of them a broken batch with outliers in `label`
python - <<'PY'
import csv, random
random.seed(2)
with open("data/train.csv", "a", newline="") as f:
    w = csv.writer(f)
    for i in range(2000, 2600):
        x = random.gauss(0.5, 1)
        y = 2 * x + random.gauss(0, 0.3) + (40 if i % 7 == 0 else 0)
        w.writerow([i, round(x, 4), round(y, 4), "partner"])
PY
ms add data >/dev/null
say ms commit -m "dataset v2: partner rows"
say ms diff HEAD~1 HEAD

# retrain from the production checkpoint on the new data, compare, promote
ms cat @production:model.safetensors > prev.safetensors
python "$here/examples/train.py" data/train.csv . --lr 1e-4 --steps 150 --init prev.safetensors >/dev/null
rm prev.safetensors
ms add model.safetensors >/dev/null
say ms commit -m "fine-tune on dataset v2" --metrics-file metrics.json --param lr=1e-4 \
    --param steps=150 --input data/train.csv
say ms log --metrics mse,acc --params lr
say ms compare @production HEAD
say ms alias set production HEAD -m "ship the fine-tune"

# production regresses: find out what it was trained on, and roll back in one command
say ms lineage @production:model.safetensors
say ms rollback production -m "fine-tune regressed: partner batch has label outliers"
say ms alias history production
say ms export @production "$work/deploy"
python - "$work/deploy" <<'PY'
import json, sys
from pathlib import Path
from blake3 import blake3
d = Path(sys.argv[1])
rec = json.loads((d / "modelstore.json").read_text())
for path, f in rec["files"].items():
    assert blake3((d / path).read_bytes()).hexdigest() == f["blake3"], path
print(f"deploy/{', '.join(rec['files'])} verified against commit {rec['commit'][:12]}")
PY
