#!/usr/bin/env bash
# CDTG: train the class-conditional SWAGAN on DATASET's tail classes (the config's section cdtg_train).
#   bash scripts/04_cdtg_train.sh dior [extra flags for CDTG/train.py, e.g. --mode code, --init-weights FILE]
# Run again (e.g. after Ctrl-C), a run with a checkpoint continues (--resume is added), one without starts again.
# Reads the distilled tail model $RUNS/kmdn/DATASET/distill/tail_model.pt (scripts/03_kmdn.sh); writes
# $OUT/train/ (ckpt_last.pt, samples/, metrics.jsonl, generator.pt). A flag CDTG/train.py does not take is an
# error before anything runs.
# Environment overrides: CONFIG (YAML file, default configs/DATASET.yaml), DATA_ROOT (processed data, default
# data/DATASET/processed), RUNS (default runs), TAIL_MODEL (file), OUT (instead of $RUNS/cdtg/DATASET).
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: scripts/04_cdtg_train.sh DATASET [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
DATA_ROOT=${DATA_ROOT:-data/$DATASET/processed}
RUNS=${RUNS:-runs}
TAIL_MODEL=${TAIL_MODEL:-$RUNS/kmdn/$DATASET/distill/tail_model.pt}
OUT=${OUT:-$RUNS/cdtg/$DATASET}
if [ ! -f "$TAIL_MODEL" ]; then
  echo "error: tail model $TAIL_MODEL does not exist; run scripts/03_kmdn.sh $DATASET first" >&2
  exit 2
fi
python CDTG/train.py --config "$CONFIG" --data-root "$DATA_ROOT" --tail-model "$TAIL_MODEL" --output-dir "$OUT/train" \
  $(resume_flag "$OUT/train" "${@:2}") "${@:2}"
