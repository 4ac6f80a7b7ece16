#!/usr/bin/env bash
# CDTG: train the class-conditional SWAGAN on DATASET's tail classes (configs/DATASET.yaml, section cdtg_train).
#   bash scripts/04_cdtg_train.sh dior [extra flags for CDTG/train.py, e.g. --resume, --mode code, --ckpt FILE]
# Reads the distilled tail model runs/kmdn/DATASET/distill/tail_model.pt (scripts/03_kmdn.sh); writes
# runs/cdtg/DATASET/train/ (ckpt_last.pt, samples/, metrics.jsonl, generator.pt).
# Environment overrides: CONFIG (YAML file), TAIL_MODEL (file), OUT (instead of runs/cdtg/DATASET).
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: scripts/04_cdtg_train.sh DATASET [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
TAIL_MODEL=${TAIL_MODEL:-runs/kmdn/$DATASET/distill/tail_model.pt}
OUT=${OUT:-runs/cdtg/$DATASET}
if [ ! -f "$TAIL_MODEL" ]; then
  echo "error: tail model $TAIL_MODEL does not exist; run scripts/03_kmdn.sh $DATASET first" >&2
  exit 2
fi
python CDTG/train.py --config "$CONFIG" --data-root "data/$DATASET/processed" --tail-model "$TAIL_MODEL" \
  --output-dir "$OUT/train" "${@:2}"
