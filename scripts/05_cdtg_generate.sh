#!/usr/bin/env bash
# CDTG: generate tail-class images with $OUT/train/generator.pt, turn them into an extra training list, and
# measure their quality (the config's sections cdtg_generate and cdtg_evaluate).
#   bash scripts/05_cdtg_generate.sh dior [extra flags, e.g. --r 0.1 --n-per-class 2000 --device cpu]
# Each extra flag goes to those of CDTG/generate.py, CDTG/expand.py and CDTG/evaluate.py that take it (--r to
# generate.py, --n-per-class to generate.py and expand.py, --clip-* and --max-per-class to evaluate.py, --device
# to generate.py and evaluate.py); a flag none of them takes is an error before anything runs.
# Writes the folder $OUT/generated/ (run again, e.g. after Ctrl-C, an unfinished one is continued with the same
# settings and a finished one left as it is; other settings: set GEN to another folder), the list
# $OUT/expanded_train.txt (for scripts/06_classify.sh DATASET tgn <list>), and quality.json / quality.md in the
# generated folder, with FID_cls/KID_cls (in the classifier's features) when the baseline classifier
# $RUNS/classification/DATASET/baseline/model_final.pt exists (scripts/06_classify.sh DATASET baseline);
# --fid-backbone inception adds Inception FID/KID.
# Environment overrides: CONFIG (YAML file, default configs/DATASET.yaml), DATA_ROOT (processed data, default
# data/DATASET/processed), RUNS (default runs), OUT (instead of $RUNS/cdtg/DATASET), GENERATOR (instead of
# $OUT/train/generator.pt), GEN, LIST, CLASSIFIER.
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: scripts/05_cdtg_generate.sh DATASET [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
DATA_ROOT=${DATA_ROOT:-data/$DATASET/processed}
RUNS=${RUNS:-runs}
OUT=${OUT:-$RUNS/cdtg/$DATASET}
GENERATOR=${GENERATOR:-$OUT/train/generator.pt}
GEN=${GEN:-$OUT/generated}
LIST=${LIST:-$OUT/expanded_train.txt}
CLASSIFIER=${CLASSIFIER:-$RUNS/classification/$DATASET/baseline/model_final.pt}
route_flags --env CONFIG=--config --env DATA_ROOT=--data-root --env GENERATOR=--weights --env GENERATOR=--ckpt \
  --env GEN=--output-dir --env GEN=--generated --env LIST=--out --env CLASSIFIER=--classifier \
  generate=CDTG/generate.py expand=CDTG/expand.py evaluate=CDTG/evaluate.py -- "${@:2}"
python CDTG/generate.py --config "$CONFIG" --weights "$GENERATOR" --output-dir "$GEN" "${generate[@]}"
python CDTG/expand.py --generated "$GEN" --out "$LIST" --data-root "$DATA_ROOT" --overwrite "${expand[@]}"
if [ -f "$CLASSIFIER" ]; then
  python CDTG/evaluate.py --config "$CONFIG" --generated "$GEN" --classifier "$CLASSIFIER" "${evaluate[@]}"
else
  echo "note: $CLASSIFIER not found; generation quality without the independent classifier (no FID_cls)"
  python CDTG/evaluate.py --config "$CONFIG" --generated "$GEN" "${evaluate[@]}"
fi
