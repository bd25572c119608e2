#!/usr/bin/env bash
# Set up bitcpm-ms on this machine: Python packages (pinned), this package (editable), the default corpus (Debian
# dict-gcide, needs root/apt; see run/setup_corpus.sh) and the C++ kernels (built with g++ and
# cached; otherwise they build on first use). Safe to re-run: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import mindspore, mindformers, sentencepiece, yaml, pytest, pyarrow, numpy, safetensors; \
assert mindspore.__version__ == '2.9.0' and mindformers.__version__ == '1.9.0'; \
assert numpy.__version__.split('.')[0] == '1'" >/dev/null 2>&1; then
    echo "setup: installing Python packages (requirements.txt; first time ~2 minutes, 2.5 GB)"
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
