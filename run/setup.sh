#!/usr/bin/env bash
# Set up bitcpm-ms on this machine: Python packages (pinned), this package (editable), the default corpus (Debian
# dict-gcide, needs root/apt; see run/setup_corpus.sh) and the C++ kernels (built with g++ and
# cached; otherwise they build on first use). Safe to re-run: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# silent when the pinned packages import; else one line: the versions found and why it reinstalls
if ! "$PY" run/check_env.py; then
    "$PY" -m pip install -q -r requirements.txt
fi
# the package itself, editable (console scripts bitcpm-train/-prepare/-export/-convert-hf; run/*.py
# import it); offline and without build isolation: setuptools is already installed
HERE="$(pwd)"
if ! (cd / && "$PY" -c "import os, sys, bitcpm_ms; sys.exit(os.path.dirname(os.path.dirname(bitcpm_ms.__file__)) != '$HERE')") \
        >/dev/null 2>&1 || ! command -v bitcpm-train >/dev/null 2>&1; then
    echo "setup: installing bitcpm-ms from $HERE (pip install -e .)"
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --no-deps --no-build-isolation -e .
fi
bash run/setup_corpus.sh
"$PY" -c "from bitcpm_ms.kernels.build import library_path; print('setup: kernels', library_path())" 2>/dev/null \
    | grep -v -E "WARNING|INFO" || echo "setup: kernels will be built on first use"
