#!/usr/bin/env bash
# Every stage that exists, at CPU scale, on the embedded synthetic data set; ends with a results table
# printed and saved to runs/quickstart/results.md. Idempotent: a second run rebuilds runs/quickstart/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
OUT=runs/quickstart
DATA=data/synthetic/processed
CFG=configs/synthetic.yaml
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[quickstart] $1 ($(( $(date +%s) - start )) s)"; }

stamp "1/4 embedded data set -> $DATA"
python data/synthetic/prepare.py --out "$DATA" --overwrite > "$OUT/prepare.log"
tail -n 13 "$OUT/prepare.log"
python data/split.py --config "$CFG" --root "$DATA"

stamp "2/4 baseline classifier (TGN stage 0)"
python Classification/train.py --config "$CFG" --output-dir "$OUT/classification_baseline" --overwrite \
  > "$OUT/classification_baseline.log" 2>&1 || { tail -n 20 "$OUT/classification_baseline.log"; exit 1; }

stamp "3/4 KMDN: head model, tail model, mutual distillation"
for part in head tail; do
  python KMDN/train.py --part $part --config "$CFG" --output-dir "$OUT/kmdn/$part" --overwrite \
    > "$OUT/kmdn_$part.log" 2>&1 || { tail -n 20 "$OUT/kmdn_$part.log"; exit 1; }
done
python KMDN/distill.py --config "$CFG" --output-dir "$OUT/kmdn/distill" --overwrite \
  > "$OUT/kmdn_distill.log" 2>&1 || { tail -n 20 "$OUT/kmdn_distill.log"; exit 1; }

stamp "4/4 results"
python scripts/quickstart_report.py --out "$OUT" --seconds "$(( $(date +%s) - start ))"
