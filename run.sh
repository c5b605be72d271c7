#!/usr/bin/env bash
# Quick start on a fresh machine: `bash run.sh demo` runs the demo, `bash run.sh test` the tests.
# Both create ./.venv on first use. torch is installed only where it is missing, pinned to a build
# that pairs with torchvision (transformers' video processors need it); an existing torch is kept.
# `bash run.sh test` without arguments also tests the oldest supported transformers, in ./.venv-oldest.
set -euo pipefail
cd "$(dirname "$0")"

# Make (or update) the venv $1 with torch and the requirements; further arguments go to pip.
setup() {
    local venv=$1
    shift
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    fi
    "$venv/bin/python" -m pip install -q "$@" -r requirements.txt -r requirements-dev.txt
}

# Each family's exactness and merged-decoding tests on the oldest transformers it supports (the backbone
# registry's minimums, lowest first; a family's tests carry its sub-package's name), and the version checks
# on requirements.txt's floor.
test_oldest() {
    local py=.venv-oldest/bin/python
    local select="equals_vanilla or cached_decoding"
    local floor runs run version families
    floor=$(sed -n 's/^transformers>=\([0-9.]*\),.*/\1/p' requirements.txt)
    setup .venv-oldest "transformers==$floor"
    "$py" -m pytest -q -p no:cacheprovider -k transformers_range tests/test_transformers_range.py
    mapfile -t runs < <("$py" -c "from illava.backbones import oldest_releases
for release, families in oldest_releases(): print(release, *families)")
    [ ${#runs[@]} -gt 0 ] || { echo "the backbone registry named no family to test" >&2; return 1; }
    for run in "${runs[@]}"; do
        read -r version families <<< "$run"
        "$py" -m pip install -q "transformers==$version"
        # Collected as a user without Ray would collect them (this venv has none): Ray's tests skip, not fail.
        CI= "$py" -m pytest -q -p no:cacheprovider -k "($select) and (${families// / or })" tests
    done
}

setup .venv
py=.venv/bin/python
export HF_HUB_OFFLINE=1
case "${1:-}" in
    demo)
        shift
        exec "$py" -m illava demo "$@"
        ;;
    test)
        shift
        # The optional Ray engine is tested too; the demo never needs it.
        "$py" -m pip install -q -r requirements-ray.txt
        "$py" -m pytest -q "$@"
        if [ $# -eq 0 ]; then
            test_oldest
        fi
        if command -v node >/dev/null 2>&1 && [ -d tests/web ]; then
            node --test tests/web/
        fi
        ;;
    *)
        echo "usage: bash run.sh demo [--model DIR] | bash run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
