#!/usr/bin/env bash
# Creates .venv inside the repo with every pinned dependency and installs the project editable.
# Idempotent: does nothing when .venv is already up to date with the requirement files.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.edgemoe-installed
PY=${PYTHON:-python3}
hash_inputs() { cat requirements.txt requirements-optional.txt requirements-train.txt requirements-fleet.txt setup.py | sha256sum | cut -d' ' -f1; }
want=$(hash_inputs)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[bootstrap] creating $VENV (about two minutes on a fresh machine)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-optional.txt -r requirements-train.txt \
  -r requirements-fleet.txt
# hls4ml only for its Apache-2.0 ap_types headers; its own dependencies are not needed.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps hls4ml==1.3.0
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "[bootstrap] done"
