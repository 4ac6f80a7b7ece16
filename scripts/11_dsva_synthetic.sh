#!/usr/bin/env bash
# DSVA on the embedded data set at CPU scale (about 2 minutes on 2 cores), the whole paper pipeline:
#   1. DSVA/annotate.py: the small CLIP fitted to the data set (checkpoints/synth_clip.pt) scores the data set's
#      20 attributes against 50 images of every class -> $RUNS/dsva_annotate/synthetic/attributes.json;
#   2. a validation run: 2 of the 7 seen classes of split 43 held out; it picks the epoch and the calibrated
#      stacking gamma with the best validation figures -> $RUNS/dsva/synthetic_val/;
#   3. the final run on all seen classes for that many epochs with that gamma -> $RUNS/dsva/synthetic/results.md
#      (its last-epoch row is the honest figure; the best-on-test row is upstream's selection, for comparison).
#   bash scripts/11_dsva_synthetic.sh [extra flags, e.g. --epochs 2 --device cpu]
# Each extra flag goes to those of DSVA/annotate.py, DSVA/train.py (both runs) and DSVA/test.py that take it; one
# none of them takes is an error before anything runs.
# Environment overrides: CONFIG (YAML file, default configs/synthetic.yaml; a first word not starting with - is
# also taken as the config, the older form), DATA_ROOT (default data/synthetic/processed), RUNS (default runs).
# Builds the data set (data/synthetic/prepare.py) and fits the CLIP (data/synthetic/train_clip.py) if missing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
CONFIG=${CONFIG:-configs/synthetic.yaml}
if [ $# -gt 0 ] && [[ $1 != -* ]]; then CONFIG=$1; shift; fi
DATA_ROOT=${DATA_ROOT:-data/synthetic/processed}
RUNS=${RUNS:-runs}
route_flags --env CONFIG=--config --env DATA_ROOT=--data-root --env RUNS=--output-dir --skip annotate=--output-dir \
  --skip train=--val-run --skip test=--weights \
  annotate=DSVA/annotate.py train=DSVA/train.py test=DSVA/test.py -- "$@"
CLIP=checkpoints/synth_clip.pt
ATTRIBUTES=$RUNS/dsva_annotate/synthetic
if [ ! -f "$DATA_ROOT/classes.json" ]; then
  python data/synthetic/prepare.py --output-dir "$DATA_ROOT"
fi
if [ ! -f "$CLIP" ]; then
  python data/synthetic/train_clip.py --config "$CONFIG" --data-root "$DATA_ROOT" --out "$CLIP"
fi
python DSVA/annotate.py --config "$CONFIG" --data-root "$DATA_ROOT" --output-dir "$ATTRIBUTES" --overwrite "${annotate[@]}"
python DSVA/train.py --config "$CONFIG" --data-root "$DATA_ROOT" --attributes "$ATTRIBUTES/attributes.json" \
  --name synthetic_val --output-dir "$RUNS/dsva/synthetic_val" --ways 5 --val-classes 2 --overwrite "${train[@]}"
python DSVA/train.py --config "$CONFIG" --data-root "$DATA_ROOT" --attributes "$ATTRIBUTES/attributes.json" \
  --name synthetic --output-dir "$RUNS/dsva/synthetic" --val-run "$RUNS/dsva/synthetic_val" --overwrite "${train[@]}"
python DSVA/test.py --config "$CONFIG" --weights "$RUNS/dsva/synthetic/model_final.pt" "${test[@]}"
