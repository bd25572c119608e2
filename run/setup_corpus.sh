#!/usr/bin/env bash
# Install the default corpus: GCIDE (GNU Collaborative International Dictionary of English),
# Debian package dict-gcide, licence GPL-2.0-or-later. Provides /usr/share/dictd/gcide.dict.dz (+ .index).
# The corpus is read from there at data-preparation time; nothing is copied into the repository.
#
#   bash run/setup_corpus.sh            # install if missing (needs root + apt-get)
#   bash run/setup_corpus.sh --prepare  # ... then prepare the default dataset (run/prepare_data.py)
set -euo pipefail
GCIDE="${BITCPM_GCIDE:-/usr/share/dictd/gcide.dict.dz}"
here="$(cd "$(dirname "$0")/.." && pwd)"

if [ -f "$GCIDE" ]; then
    echo "setup_corpus: $GCIDE present ($(stat -c %s "$GCIDE") bytes)"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup_corpus: $GCIDE missing and no apt-get here. Install the dictd GCIDE files" >&2
        echo "  (Debian/Ubuntu package dict-gcide) elsewhere and set BITCPM_GCIDE=/path/gcide.dict.dz," >&2
        echo "  or prepare your own corpus: python run/prepare_data.py --input PATH ..." >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "setup_corpus: $GCIDE missing; installing needs root. Run:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y dict-gcide" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends dict-gcide
    [ -f "$GCIDE" ] || { echo "setup_corpus: dict-gcide installed but $GCIDE not found" >&2; exit 1; }
    echo "setup_corpus: installed dict-gcide -> $GCIDE"
fi

if [ "${1:-}" = "--prepare" ]; then
    shift
    cd "$here"
    exec python3 run/prepare_data.py "$@"
fi
