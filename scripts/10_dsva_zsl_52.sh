#!/usr/bin/env bash
# DSVA on RSSDIVCS, split 52 (50/20 seen/unseen classes), ZSL: the flags and seed of upstream's
# script/02_ZSL_52_11.sh (SPEC 5.7). Paper: ZSL acc 64.2; upstream repo re-run: 63.8.
# Results in $RUNS/dsva/zsl_52/results.md: the best-on-test epoch (upstream's selection, to compare with the
# paper) and the last epoch.
# The proposal branch is on from the first epoch (upstream --pro_start_epoch -1); its loss weight is 0
# upstream but it changes the global branch's scores, and it makes an epoch about 5x slower: drop
# --proposal-start-epoch to turn it off.
#
#   bash scripts/10_dsva_zsl_52.sh [RSSDIVCS folder] [CLIP weights] [more DSVA/train.py flags]
# Both folders are optional (a first word starting with - begins the flags); a flag DSVA/train.py does not
# take is an error before anything runs. Environment overrides: CONFIG (YAML file, default
# configs/rssdivcs.yaml), RUNS (default runs). Relative paths are relative to the repository root.
#
# Shared flags: $CONFIG (section dsva). RSSDIVCS folder (default data/rssdivcs/RSSDIVCS, from the authors' Google Drive): files/52_images.mat,
# files/ann_attr_finetune_52_splits.mat (the splits and the released class x attribute matrix 'att'),
# files/attri_group_3.json and the images; the .mat's image paths are re-rooted at this folder.
# CLIP weights (default checkpoints/clip-rsicd): the Hugging Face folder of flax-community/clip-rsicd (v1, as
# upstream), or an open_clip checkpoint file or pretrained tag of ViT-B-32.
# Code-faithful extra: --norm imagenet (upstream fed ImageNet statistics to CLIP; our default is CLIP's own).
# CLIP-annotated attributes instead of the released ones: --attributes runs/dsva_annotate/NAME/attributes.json
set -euo pipefail
source "$(dirname "$0")/env.sh"
CONFIG=${CONFIG:-configs/rssdivcs.yaml}
RUNS=${RUNS:-runs}
ROOT=data/rssdivcs/RSSDIVCS
CLIP=checkpoints/clip-rsicd
if [ $# -gt 0 ] && [[ $1 != -* ]]; then ROOT=$1; shift; fi
if [ $# -gt 0 ] && [[ $1 != -* ]]; then CLIP=$1; shift; fi
run_routed --env CONFIG=--config --env RUNS=--output-dir \
  DSVA/train.py --config "$CONFIG" --data-root "$ROOT" --clip-pretrained "$CLIP" --split 52 \
  --mode zsl --regular 0 --l-regular 0 --proposal-start-epoch -1 --seed 3866 \
  --name zsl_52 --output-dir "$RUNS/dsva/zsl_52" -- "$@"
