#!/usr/bin/env bash
# The classifier: `baseline` on the original training list, or `tgn` on original + CDTG-expanded lists.
#   bash scripts/06_classify.sh dior baseline [extra flags]
#   bash scripts/06_classify.sh dior tgn runs/cdtg/dior/expanded_train.txt [extra flags]
# Extra flags go to Classification/train.py (e.g. --model resnet18 --epochs 1 --device cpu); one it does not take
# is an error before anything runs. Runs land in $RUNS/classification/DATASET/{baseline,tgn}/. Run again (e.g.
# after Ctrl-C), a run with a checkpoint continues (--resume is added), one without starts again.
# Environment overrides: CONFIG (YAML file, default configs/DATASET.yaml), DATA_ROOT (processed data, default
# data/DATASET/processed), RUNS (default runs).
set -euo pipefail
source "$(dirname "$0")/env.sh"
DATASET=${1:?usage: 06_classify.sh DATASET baseline|tgn [EXPANDED_LIST] [extra flags]}
MODE=${2:-baseline}
CONFIG=${CONFIG:-configs/$DATASET.yaml}
DATA_ROOT=${DATA_ROOT:-data/$DATASET/processed}
RUNS=${RUNS:-runs}
case "$MODE" in
  baseline) python Classification/train.py --config "$CONFIG" --data-root "$DATA_ROOT" \
              --output-dir "$RUNS/classification/$DATASET/baseline" \
              $(resume_flag "$RUNS/classification/$DATASET/baseline" "${@:3}") "${@:3}" ;;
  tgn) LIST=${3:?usage: 06_classify.sh DATASET tgn EXPANDED_LIST [extra flags]}
       ORIGINAL=$(python -c "import sys, common.layout as l; print(l.anno_path(sys.argv[1], 'train'))" "$DATA_ROOT")
       python Classification/train.py --config "$CONFIG" --data-root "$DATA_ROOT" \
         --train-list "$ORIGINAL" --train-list "$LIST" --output-dir "$RUNS/classification/$DATASET/tgn" \
         $(resume_flag "$RUNS/classification/$DATASET/tgn" "${@:4}") "${@:4}" ;;
  *) echo "error: unknown mode '$MODE'; choose baseline or tgn" >&2; exit 2 ;;
esac
