#!/usr/bin/env bash
# The classifier: `baseline` on the original training list, or `tgn` on original + CDTG-expanded lists.
#   bash scripts/06_classify.sh dior baseline
#   bash scripts/06_classify.sh dior tgn runs/cdtg/dior/expanded_train.txt
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: 06_classify.sh DATASET baseline|tgn [EXPANDED_LIST] [extra flags]}
MODE=${2:-baseline}
ROOT="data/$DATASET/processed"
case "$MODE" in
  baseline) python Classification/train.py --config "configs/$DATASET.yaml" --data-root "$ROOT" \
              --output-dir "runs/classification/$DATASET/baseline" "${@:3}" ;;
  tgn) LIST=${3:?usage: 06_classify.sh DATASET tgn EXPANDED_LIST}
       ORIGINAL=$(python -c "from common.layout import anno_path; print(anno_path('$ROOT', 'train'))")
       python Classification/train.py --config "configs/$DATASET.yaml" --data-root "$ROOT" \
         --train-list "$ORIGINAL" --train-list "$LIST" --output-dir "runs/classification/$DATASET/tgn" "${@:4}" ;;
  *) echo "error: unknown mode '$MODE'; choose baseline or tgn" >&2; exit 2 ;;
esac
