#!/usr/bin/env bash
# Official release -> processed layout in data/<dataset>/processed.
#   bash scripts/01_prepare.sh dior /path/to/DIOR        (dota: the DOTA v1.0 folder with train/ and val/;
#   bash scripts/01_prepare.sh synthetic                  fgsc23: the class-folder release)
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: 01_prepare.sh DATASET [RAW_DIR] [extra flags]}
case "$DATASET" in
  synthetic) python data/synthetic/prepare.py --out data/synthetic/processed "${@:2}" ;;
  dior|dota|fgsc23) RAW=${2:?usage: 01_prepare.sh $DATASET RAW_DIR}
                    python "data/$DATASET/prepare.py" --raw "$RAW" --out "data/$DATASET/processed" "${@:3}" ;;
  *) echo "error: unknown data set '$DATASET'; choose synthetic, dior, dota or fgsc23" >&2; exit 2 ;;
esac
