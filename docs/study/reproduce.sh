#!/usr/bin/env bash
# Regenerates docs/study/ (report.md, results.csv, results.json, PNG plots): every experiment of the
# reproduction study on the real photos of birds25-mini (100 photos per class), on a 2-core CPU.
#   bash docs/study/reproduce.sh            (from the repository root; ../shared/data/birds25-mini must exist)
# Budgets are cut to fit one 3-hour session on 2 CPU cores (two jobs at a time, one thread each):
# at 32 px every run has 5 epochs (new data: 3 seeds, our recipe and the study's; hyperparameter check;
# ablation); new data at 128 px: 3 epochs (fp32: bf16 autocast ran at 0.6 images/s on one thread here); progressive vs fixed 32 -> 64 px: 4 epochs.
# Runs with the same config are trained once (hparams/baseline = ablation/default). The new-data 32 px runs
# of our recipe feed the 32x32 photos at a 64 px input and its 128 px run mixes its batches (mixup / cutmix)
# (presets.PHOTO_SIZE_RECIPES; docs/results.md), the hyperparameter check and the ablation stay at a 32 px input
# (the study's).
# Finished runs are reused and interrupted ones resumed, so the script can be rerun after a stop.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/birds25-mini}
OUT=${OUT:-outputs/study}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--preset ours --data "$DATA" --output "$OUT" --set warmup_epochs=1 --set progress_bar=false --set log_with=none)
python examples/reproduce.py --experiment hparams --image-sizes 32 --set epochs=5 "${COMMON[@]}"
python examples/reproduce.py --experiment new-data --image-sizes 32 --seeds 0 1 2 --set epochs=5 "${COMMON[@]}" &
python examples/reproduce.py --experiment ablation --image-sizes 32 --set epochs=5 "${COMMON[@]}"
wait
python examples/reproduce.py --experiment new-data --image-sizes 128 --set epochs=3 "${COMMON[@]}" &
python examples/reproduce.py --experiment progressive --image-sizes 32 64 --set epochs=4 "${COMMON[@]}"
wait
# pretrained: skipped offline with the loader's message (no ImageNet weights on this machine), and so
# is its from-scratch baseline
python examples/reproduce.py --experiment pretrained --image-sizes 128 --set epochs=3 "${COMMON[@]}"
# one report over every run in the folder, copied into docs/study (no weights)
python examples/reproduce.py --report-only --output "$OUT" --title "Reproduction study on birds25-mini (real photos)" \
  --note "Regenerate: \`bash docs/study/reproduce.sh\` from the repository root (needs ../shared/data/birds25-mini; about 2.5 hours on a 2-core CPU)."
mkdir -p docs/study
cp "$OUT"/report.md "$OUT"/results.csv "$OUT"/results.json "$OUT"/*.png docs/study/
