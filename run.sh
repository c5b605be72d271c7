#!/usr/bin/env bash
# Quick start on a fresh machine: `bash run.sh demo` runs the demo, `bash run.sh test` the tests.
# Both create ./.venv on first use. torch is installed only where it is missing, pinned to a build
# that pairs with torchvision (transformers' video processors need it); an existing torch is kept.
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch, torchvision" >/dev/null 2>&1; then
    "$py" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$py" -m pip install -q -r requirements.txt -r requirements-dev.txt
export HF_HUB_OFFLINE=1
case "${1:-}" in
    demo)
        shift
        exec "$py" -m illava demo "$@"
        ;;
    test)
        shift
        "$py" -m pytest -q "$@"
        if command -v node >/dev/null 2>&1 && [ -d tests/web ]; then
            node --test tests/web/
        fi
        ;;
    *)
        echo "usage: bash run.sh demo [--model DIR] | bash run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
