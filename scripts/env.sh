# Sourced by every numbered script: create .venv if absent, install the pinned requirements and this
# repository (editable) once, then activate it. Idempotent: a second run only checks a stamp file.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export PYTHONUNBUFFERED=1

# route_flags [common.flags options] ARRAY=SCRIPT ... -- FLAGS...: for a stage of several Python scripts, give each
# the extra flags its parser accepts, as the bash array ARRAY; a flag none accepts stops the script here, exit 2.
route_flags() {
  local code
  code=$(python -m common.flags --stage "$(basename "$0")" "$@") || exit $?
  eval "$code"
}
# resume_flag DIR FLAGS...: prints --resume when the run folder DIR holds a checkpoint (a run that this script
# started before, interrupted or finished: the same command continues it; a finished one only re-exports) and
# FLAGS hold neither --resume nor --overwrite.
resume_flag() {
  local dir=$1 flag
  shift
  for flag in "$@"; do
    case $flag in --resume|--overwrite) return 0 ;; esac
  done
  if [ -f "$dir/ckpt_last.pt" ]; then echo --resume; fi
}
