#!/usr/bin/env bash
# DSVA on the embedded data set at CPU scale (about 2 minutes on 2 cores), the whole paper pipeline:
#   1. DSVA/annotate.py: the small CLIP fitted to the data set (checkpoints/synth_clip.pt) scores the data set's
#      20 attributes against 50 images of every class -> runs/dsva_annotate/synthetic/attributes.json;
#   2. a validation run: 2 of the 7 seen classes of split 43 held out; it picks the epoch and the calibrated
#      stacking gamma with the best validation figures -> runs/dsva/synthetic_val/;
#   3. the final run on all seen classes for that many epochs with that gamma -> runs/dsva/synthetic/results.md
#      (its last-epoch row is the honest figure; the best-on-test row is upstream's selection, for comparison).
#   bash scripts/11_dsva_synthetic.sh [config, default configs/synthetic.yaml] [more DSVA/train.py flags]
# Builds the data set (data/synthetic/prepare.py) and fits the CLIP (data/synthetic/train_clip.py) if missing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
CONFIG=${1:-configs/synthetic.yaml}
DATA=data/synthetic/processed
CLIP=checkpoints/synth_clip.pt
if [ ! -f "$DATA/classes.json" ]; then
  python data/synthetic/prepare.py --out "$DATA"
fi
if [ ! -f "$CLIP" ]; then
  python data/synthetic/train_clip.py --config "$CONFIG" --data "$DATA" --out "$CLIP"
fi
python DSVA/annotate.py --config "$CONFIG" --overwrite
python DSVA/train.py --config "$CONFIG" --name synthetic_val --ways 5 --val-classes 2 --overwrite "${@:2}"
python DSVA/train.py --config "$CONFIG" --name synthetic --val-run runs/dsva/synthetic_val --overwrite "${@:2}"
python DSVA/test.py --config "$CONFIG" --weights runs/dsva/synthetic/model_final.pt
