#!/usr/bin/env bash
# Head/tail split -> data/<dataset>/processed/split.json (head percentage from configs/<dataset>.yaml).
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: 02_split.sh DATASET [extra flags]}
python data/split.py --config "configs/$DATASET.yaml" --root "data/$DATASET/processed" "${@:2}"
