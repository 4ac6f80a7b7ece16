#!/usr/bin/env bash
# KMDN: head model, tail model, then mutual distillation, for DATASET (configs/DATASET.yaml).
#   bash scripts/03_kmdn.sh dior [extra flags for all three scripts, e.g. --device cpu]
# Runs land in runs/kmdn/DATASET/{head,tail,distill}/; CDTG reads runs/kmdn/DATASET/distill/tail_model.pt.
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: scripts/03_kmdn.sh DATASET [extra flags]}
CONFIG=configs/$DATASET.yaml
ROOT=data/$DATASET/processed
python KMDN/train.py --part head --config "$CONFIG" --data-root "$ROOT" --name "$DATASET" "${@:2}"
python KMDN/train.py --part tail --config "$CONFIG" --data-root "$ROOT" --name "$DATASET" "${@:2}"
python KMDN/distill.py --config "$CONFIG" --data-root "$ROOT" --name "$DATASET" "${@:2}"
python KMDN/test.py --config "$CONFIG" --data-root "$ROOT" --weights "runs/kmdn/$DATASET/distill/head_model.pt" \
  "runs/kmdn/$DATASET/distill/tail_model.pt"
