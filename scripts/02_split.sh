#!/usr/bin/env bash
# Head/tail split -> <data root>/split.json (head percentage from the config's split section).
#   bash scripts/02_split.sh dior [extra flags for data/split.py, e.g. --head-percent 33]
# Environment overrides: CONFIG (YAML file, default configs/<dataset>.yaml), DATA_ROOT (processed data, default
# data/<dataset>/processed). A flag data/split.py does not take is an error before anything runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: 02_split.sh DATASET [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
DATA_ROOT=${DATA_ROOT:-data/$DATASET/processed}
python data/split.py --config "$CONFIG" --data-root "$DATA_ROOT" "${@:2}"
