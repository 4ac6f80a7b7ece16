#!/usr/bin/env bash
# CDTG: generate tail-class images with runs/cdtg/DATASET/train/generator.pt, turn them into an extra training
# list, and measure their quality (configs/DATASET.yaml, sections cdtg_generate and cdtg_evaluate).
#   bash scripts/05_cdtg_generate.sh dior [extra flags for CDTG/generate.py, e.g. --r 0.1 --n-per-class 2000]
# Writes the NEW folder runs/cdtg/DATASET/generated/ (an existing one is refused: set GEN to another folder), the
# list runs/cdtg/DATASET/expanded_train.txt (for scripts/06_classify.sh DATASET tgn <list>), and quality.json /
# quality.md in the generated folder, with FID/KID when the baseline classifier
# runs/classification/DATASET/baseline/model_final.pt exists (scripts/06_classify.sh DATASET baseline).
# Environment overrides: CONFIG, OUT (instead of runs/cdtg/DATASET), GEN, LIST, CLASSIFIER.
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: scripts/05_cdtg_generate.sh DATASET [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
OUT=${OUT:-runs/cdtg/$DATASET}
GEN=${GEN:-$OUT/generated}
LIST=${LIST:-$OUT/expanded_train.txt}
CLASSIFIER=${CLASSIFIER:-runs/classification/$DATASET/baseline/model_final.pt}
python CDTG/generate.py --config "$CONFIG" --ckpt "$OUT/train/generator.pt" --output-dir "$GEN" "${@:2}"
python CDTG/expand.py --generated "$GEN" --out "$LIST" --data-root "data/$DATASET/processed" --overwrite
if [ -f "$CLASSIFIER" ]; then
  python CDTG/evaluate.py --config "$CONFIG" --generated "$GEN" --classifier "$CLASSIFIER"
else
  echo "note: $CLASSIFIER not found; generation quality without the independent classifier (no FID/KID)"
  python CDTG/evaluate.py --config "$CONFIG" --generated "$GEN"
fi
