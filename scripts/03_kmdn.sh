#!/usr/bin/env bash
# KMDN: head model, tail model, mutual distillation, then the test of both distilled models, for DATASET.
#   bash scripts/03_kmdn.sh dior [extra flags, e.g. --model resnet18 --weights none --epochs 1 --device cpu]
# Each extra flag goes to the scripts that take it: --model and --weights to KMDN/train.py only (KMDN/distill.py
# takes the architecture from the stage-1 files), --epochs, --batch-size, --img-size to train.py and distill.py,
# --device to all three; a flag none of them takes is an error before anything runs (python -m common.flags).
# Runs land in $RUNS/kmdn/DATASET/{head,tail,distill}/; CDTG reads $RUNS/kmdn/DATASET/distill/tail_model.pt.
# Run again (e.g. after Ctrl-C), each run with a checkpoint continues (--resume), one without starts again, and a
# finished test report is kept.
# Environment overrides: CONFIG (YAML file, default configs/DATASET.yaml), DATA_ROOT (processed data, default
# data/DATASET/processed), RUNS (default runs).
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: scripts/03_kmdn.sh DATASET [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
DATA_ROOT=${DATA_ROOT:-data/$DATASET/processed}
RUNS=${RUNS:-runs}
route_flags --env CONFIG=--config --env DATA_ROOT=--data-root --env RUNS=--output-dir \
  --skip train=--part --skip test=--weights \
  train=KMDN/train.py distill=KMDN/distill.py test=KMDN/test.py -- "${@:2}"
KMDN=$RUNS/kmdn/$DATASET
for part in head tail; do
  python KMDN/train.py --part $part --config "$CONFIG" --data-root "$DATA_ROOT" --name "$DATASET" \
    --output-dir "$KMDN/$part" $(resume_flag "$KMDN/$part" "${train[@]}") "${train[@]}"
done
python KMDN/distill.py --config "$CONFIG" --data-root "$DATA_ROOT" --name "$DATASET" --output-dir "$KMDN/distill" \
  $(resume_flag "$KMDN/distill" "${distill[@]}") "${distill[@]}"
python KMDN/test.py --config "$CONFIG" --data-root "$DATA_ROOT" --weights "$KMDN/distill/head_model.pt" \
  "$KMDN/distill/tail_model.pt" "${test[@]}"
