#!/usr/bin/env bash
# Both papers end to end, at CPU scale, on the embedded synthetic data set; ends with a results table printed and
# saved to runs/quickstart/results.md. Idempotent: a second run rebuilds runs/quickstart/ and reuses the cached
# small CLIPs in checkpoints/ while the data set and the CLIP code are unchanged.
set -euo pipefail
source "$(dirname "$0")/env.sh"
OUT=runs/quickstart
DATA=data/synthetic/processed
CFG=configs/synthetic.yaml
mkdir -p "$OUT" checkpoints
start=$(date +%s)
stamp() { echo "[quickstart] $1 ($(( $(date +%s) - start )) s)"; }
run() {  # run LOG CMD...: output to $OUT/LOG.log; on failure show its end and stop
  local log="$OUT/$1.log"; shift
  "$@" > "$log" 2>&1 || { tail -n 25 "$log"; echo "[quickstart] failed: $*  (log: $log)"; exit 1; }
}

stamp "1/8 embedded data set -> $DATA, head/tail split"
run prepare python data/synthetic/prepare.py --output-dir "$DATA" --overwrite
run split python data/split.py --config "$CFG" --data-root "$DATA" --overwrite
tail -n 3 "$OUT/split.log"

stamp "2/8 small CLIPs fitted to the embedded set (cached in checkpoints/)"
key=$(cat "$DATA/captions.jsonl" data/synthetic/clip_model.py data/synthetic/train_clip.py | sha1sum | cut -c1-16)
fit_clip() {  # fit_clip FILE FLAGS...: seen classes of split 43 for DSVA, --all-classes for CDTG
  local file=$1; shift
  if [ -f "$file" ] && [ "$(cat "$file.key" 2>/dev/null)" = "$key" ]; then
    echo "  $file is up to date"
  else
    run "clip_$(basename "$file" .pt)" python data/synthetic/train_clip.py --data-root "$DATA" --out "$file" "$@"
    echo "$key" > "$file.key"
  fi
}
fit_clip checkpoints/synth_clip.pt --exclude-unseen 43
fit_clip checkpoints/synth_clip_all.pt --all-classes

stamp "3/8 TGN baseline classifier on the long-tailed training set"
run classification_baseline python Classification/train.py --config "$CFG" \
  --output-dir "$OUT/classification_baseline" --overwrite

stamp "4/8 KMDN: head model, tail model, mutual distillation"
for part in head tail; do
  run "kmdn_$part" python KMDN/train.py --part $part --config "$CFG" --output-dir "$OUT/kmdn/$part" --overwrite
done
run kmdn_distill python KMDN/distill.py --config "$CFG" --output-dir "$OUT/kmdn/distill" --overwrite

stamp "5/8 CDTG: conditional SWAGAN on the tail classes (tail-model + CLIP guidance)"
run cdtg_train python CDTG/train.py --config "$CFG" --tail-model "$OUT/kmdn/distill/tail_model.pt" \
  --output-dir "$OUT/cdtg/train" --overwrite

stamp "6/8 CDTG: generate tail images, expand the training list, measure their quality"
rm -rf "$OUT/cdtg/generated"  # generate.py never overwrites; the quickstart owns this folder
run cdtg_generate python CDTG/generate.py --config "$CFG" --weights "$OUT/cdtg/train/generator.pt" \
  --output-dir "$OUT/cdtg/generated"
run cdtg_expand python CDTG/expand.py --generated "$OUT/cdtg/generated" --out "$OUT/cdtg/expanded_train.txt" \
  --data-root "$DATA" --overwrite
run cdtg_evaluate python CDTG/evaluate.py --config "$CFG" --generated "$OUT/cdtg/generated" \
  --classifier "$OUT/classification_baseline/model_final.pt"

stamp "7/8 TGN classifier on the original + generated tail images"
run classification_tgn python Classification/train.py --config "$CFG" --train-list "$DATA/anno/SYNTH_train.txt" \
  --train-list "$OUT/cdtg/expanded_train.txt" --output-dir "$OUT/classification_tgn" --overwrite

stamp "8/8 DSVA zero-shot: CLIP-annotated attributes, validation run, final run"
run dsva_annotate python DSVA/annotate.py --config "$CFG" --output-dir "$OUT/dsva_annotate" --overwrite
run dsva_val python DSVA/train.py --config "$CFG" --attributes "$OUT/dsva_annotate/attributes.json" \
  --output-dir "$OUT/dsva_val" --ways 5 --val-classes 2 --overwrite
run dsva python DSVA/train.py --config "$CFG" --attributes "$OUT/dsva_annotate/attributes.json" \
  --output-dir "$OUT/dsva" --val-run "$OUT/dsva_val" --overwrite

stamp "results"
python scripts/quickstart_report.py --output-dir "$OUT" --data-root "$DATA" --seconds "$(( $(date +%s) - start ))"
