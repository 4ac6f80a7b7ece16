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

stamp "1/3 embedded data set -> $DATA"
python data/synthetic/prepare.py --out "$DATA" --overwrite > "$OUT/prepare.log"
tail -n 13 "$OUT/prepare.log"
python data/split.py --config "$CFG" --root "$DATA"

stamp "2/3 baseline classifier (TGN stage 0)"
python Classification/train.py --config "$CFG" --output-dir "$OUT/classification_baseline" --overwrite \
  > "$OUT/classification_baseline.log" 2>&1 || { tail -n 20 "$OUT/classification_baseline.log"; exit 1; }

stamp "3/3 results"
python scripts/quickstart_report.py --out "$OUT" --seconds "$(( $(date +%s) - start ))"
