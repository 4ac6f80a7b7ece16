#!/usr/bin/env bash
# DSVA on RSSDIVCS: one of the paper's six experiments, each a config configs/rssdivcs/<setting>_<split>.yaml
# (zsl_61 zsl_52 zsl_43 gzsl_61 gzsl_52 gzsl_43) that holds what differs from configs/rssdivcs.yaml, the flags
# every upstream script shares, and names its upstream script, seed and the paper's figures.
#   bash scripts/10_dsva.sh zsl_43 [extra flags for DSVA/train.py, e.g. --norm imagenet --epochs 2]
# Results in $RUNS/dsva/<experiment>/results.md: the best-on-test epoch (upstream's selection, to compare with the
# paper) and the last epoch. A flag DSVA/train.py does not take is an error before anything runs. Run again (e.g.
# after Ctrl-C), a run with a checkpoint continues (--resume is added), one without starts again.
# Environment overrides: CONFIG (YAML file, default configs/rssdivcs/<experiment>.yaml), DATA_ROOT (the RSSDIVCS
# folder, default data/rssdivcs/RSSDIVCS, from the authors' Google Drive: files/<split>_images.mat,
# files/ann_attr_finetune_<split>_splits.mat with the splits and the released class x attribute matrix 'att',
# files/attri_group_3.json and the images; the .mat's image paths are re-rooted at this folder), RUNS (default
# runs). Relative paths are relative to the repository root.
# CLIP weights: the config's flax-community/clip-rsicd (v1, as upstream): the Hugging Face folder in
# checkpoints/clip-rsicd if it is there, else downloaded from the Hub; another with --clip-pretrained (an
# open_clip checkpoint file, pretrained tag or Hugging Face folder of ViT-B-32).
# Code-faithful extra: --norm imagenet (upstream fed ImageNet statistics to CLIP; our default is CLIP's own).
# CLIP-annotated attributes instead of the released ones: --attributes runs/dsva_annotate/NAME/attributes.json
set -euo pipefail
source "$(dirname "$0")/env.sh"
EXPERIMENT=${1:?usage: scripts/10_dsva.sh EXPERIMENT [extra flags]; EXPERIMENT: zsl_61 zsl_52 zsl_43 gzsl_61 gzsl_52 gzsl_43}
CONFIG=${CONFIG:-configs/rssdivcs/$EXPERIMENT.yaml}
if [ ! -f "$CONFIG" ]; then
  echo "error: no experiment config $CONFIG; choose one of $(cd configs/rssdivcs && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')or set CONFIG=..." >&2
  exit 2
fi
DATA_ROOT=${DATA_ROOT:-data/rssdivcs/RSSDIVCS}
RUNS=${RUNS:-runs}
python DSVA/train.py --config "$CONFIG" --data-root "$DATA_ROOT" --name "$EXPERIMENT" \
  --output-dir "$RUNS/dsva/$EXPERIMENT" $(resume_flag "$RUNS/dsva/$EXPERIMENT" "${@:2}") "${@:2}"
