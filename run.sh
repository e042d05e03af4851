#!/usr/bin/env bash
# The quick start: `bash run.sh main` (the main job) and `bash run.sh test` (the test suite).
# Each creates the virtual environment .venv on first use (or $REVSNN_VENV) and installs the
# package with its test extras from pyproject.toml; later calls reuse it until pyproject.toml
# changes. Extra arguments are passed on (`bash run.sh test -k neurons`). REVSNN_EXTRAS picks
# the extras installed (default `test`; CI uses `test,parity,tpu,events` to add torch,
# SpikingJelly, libtpu, tonic and aedat).
set -euo pipefail
cd "$(dirname "$0")"
venv=${REVSNN_VENV:-.venv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  echo "[run.sh] creating virtual environment $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
extras=${REVSNN_EXTRAS:-test}
stamp="$venv/.revsnn-installed-$( (cat pyproject.toml; echo "$extras") | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "[run.sh] installing revsnn-jax and its dependencies (pip install -e '.[$extras]')"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".[$extras]"
  rm -f "$venv"/.revsnn-installed-*
  touch "$stamp"
fi
what=${1:-}
[ $# -gt 0 ] && shift
case "$what" in
  main) exec "$venv/bin/revsnn" train --config default --workdir runs/default "$@" ;;
  test) exec "$venv/bin/python" -m pytest "$@" ;;
  *) echo "usage: bash run.sh main|test [arguments]" >&2; exit 2 ;;
esac
