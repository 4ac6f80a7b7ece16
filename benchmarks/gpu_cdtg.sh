#!/usr/bin/env bash
# CDTG's training speed on one GPU (benchmarks/gpu_cdtg.py): FIR ops per implementation, the G + D step, the paper
# configuration's iteration per phase and amortised, torch.profiler's top kernels; about 3 minutes, nothing
# downloaded. Flags go to gpu_cdtg.py (--device cpu --smoke: a CPU dry run).
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
python benchmarks/gpu_cdtg.py "$@"
