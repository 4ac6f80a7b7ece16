#!/usr/bin/env bash
# The test suite: installs what it needs on a fresh machine, then the lint (`ruff check .` from the repository
# root, with pyproject.toml's settings: ruff's default rules and lines of at most 110 characters) and pytest.
# A lint finding fails the script before any test runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ruff check .
python -m pytest tests "$@"
