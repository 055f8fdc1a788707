#!/usr/bin/env bash
# Regenerates docs/study/new-data-128px/: the study's new-data runs at 128 px (our recipe and the study's, 3 epochs
# each, the budget of docs/study/reproduce.sh) with the current 128 px recipe (mixup / cutmix, weight decay 0.5), on a
# 2-core CPU, two runs at once with one thread each (12-14 min on the 2-core EPYC VM, 2026-12-06).
#   bash docs/study/new-data-128px/reproduce.sh      (from the repository root; needs ../shared/data/birds25-mini)
set -euo pipefail
cd "$(dirname "$0")/../../.."
DATA=${DATA:-../shared/data/birds25-mini}
OUT=${OUT:-outputs/study-128px}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python examples/reproduce.py --experiment new-data --image-sizes 128 --set epochs=3 --preset ours --data "$DATA" \
  --output "$OUT" --set warmup_epochs=1 --set progress_bar=false --set log_with=none
python examples/reproduce.py --report-only --output "$OUT" \
  --title "Reproduction study on birds25-mini: new data at 128 px with the current 128 px recipe" \
  --note "Regenerate: \`bash docs/study/new-data-128px/reproduce.sh\` from the repository root (needs ../shared/data/birds25-mini; about 15 minutes on a 2-core CPU). The other experiments: [../report.md](../report.md)."
mkdir -p docs/study/new-data-128px
cp "$OUT"/report.md "$OUT"/results.csv "$OUT"/results.json "$OUT"/*.png docs/study/new-data-128px/
