#!/usr/bin/env bash
# Set up .venv on a fresh machine: PyTorch, then ca2vdm.
#   bash scripts/setup.sh            the CPU build of torch (a bare "torch" pulls gigabytes of CUDA)
#   bash scripts/setup.sh --cuda     PyTorch's CUDA 12.8 build of the same version instead (replacing a CPU build),
#                                    from PyTorch's own wheel index; TORCH_INDEX_URL picks another CUDA build, e.g.
#                                    https://download.pytorch.org/whl/cu126 for an older driver. Then, for flash-attn:
#                                    .venv/bin/pip install -e ".[flash]"
#   bash scripts/setup.sh --dry-run [--cuda]   print the commands it would run, run none
set -euo pipefail
TORCH_VERSION=2.13.0
CUDA_INDEX=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}
cuda=0
dry=0
for arg in "$@"; do
    case $arg in
        --cuda) cuda=1 ;;
        --dry-run) dry=1 ;;
        *) echo "error: unknown option $arg; usage: bash scripts/setup.sh [--cuda] [--dry-run]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
run() {  # run a command, or print it in a dry run
    if [ $dry -eq 1 ]; then echo "$*"; else "$@"; fi
}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv (python3 -m venv)"
    run python3 -m venv .venv
fi
if [ $cuda -eq 1 ]; then
    # the build tag (cu128) pins the CUDA wheel: a CPU build of the same version would otherwise count as installed
    if ! .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
        echo "setup: installing torch $TORCH_VERSION, the CUDA build from $CUDA_INDEX (a few GB)"
        run .venv/bin/pip install -q "torch==$TORCH_VERSION+$(basename "$CUDA_INDEX")" --index-url "$CUDA_INDEX"
    fi
elif ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing torch $TORCH_VERSION, the CPU build (about 200 MB; a few minutes)"
    run .venv/bin/pip install -q "torch==$TORCH_VERSION"
fi
echo "setup: installing ca2vdm and its test, plot and serve extras into .venv (pip install -e)"
run .venv/bin/pip install -q -e ".[test,plot,serve]"
# the browser test's Chromium: installed where this runs as root with apt (scripts/setup_browser.sh)
run bash scripts/setup_browser.sh
echo "setup: done; run .venv/bin/python infer/long_video.py or .venv/bin/python -m pytest -q tests"
