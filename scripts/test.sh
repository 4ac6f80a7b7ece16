#!/usr/bin/env bash
# The test suite: installs what it needs on a fresh machine, then runs pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -m pytest tests "$@"
