#!/usr/bin/env bash
# Official release -> processed layout in data/<dataset>/processed.
#   bash scripts/01_prepare.sh dior /path/to/DIOR [extra flags]   (dota: the DOTA v1.0 folder with train/ and val/;
#   bash scripts/01_prepare.sh synthetic [extra flags]             fgsc23: the class-folder release)
# Extra flags go to data/<dataset>/prepare.py (e.g. --overwrite); one it does not take is an error before anything
# runs. Environment overrides: DATA_ROOT (output folder, default data/<dataset>/processed), CONFIG (YAML file,
# default configs/<dataset>.yaml; its prepare_<dataset> section, if any, for the real data sets). Relative paths are
# relative to the repository root.
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: 01_prepare.sh DATASET [RAW_DIR] [extra flags]}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
DATA_ROOT=${DATA_ROOT:-data/$DATASET/processed}
case "$DATASET" in
  synthetic) python data/synthetic/prepare.py --output-dir "$DATA_ROOT" "${@:2}" ;;
  dior|dota|fgsc23) RAW=${2:?usage: 01_prepare.sh $DATASET RAW_DIR [extra flags]}
                    python "data/$DATASET/prepare.py" --config "$CONFIG" --raw "$RAW" --output-dir "$DATA_ROOT" "${@:3}" ;;
  *) echo "error: unknown data set '$DATASET'; choose synthetic, dior, dota or fgsc23" >&2; exit 2 ;;
esac
