#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one table of speed figures and a one-epoch run of every stage, about
# five minutes on one GPU, nothing downloaded. Flags go to gpu_check.py (--device cpu --smoke: a CPU dry run).
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
python benchmarks/gpu_check.py "$@"
