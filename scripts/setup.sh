#!/usr/bin/env bash
# Set up .venv on a fresh machine: the CPU build of torch (a bare "torch" pulls gigabytes of CUDA), then ca2vdm.
# On a GPU machine, install your CUDA torch build first and then `pip install -e ".[flash]"` for flash-attn.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (python3 -m venv)"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch 2.13.0, the CPU build (about 200 MB; a few minutes)"
  .venv/bin/pip install -q torch==2.13.0
fi
echo "setup: installing ca2vdm and its test, plot and serve extras into .venv (pip install -e)"
.venv/bin/pip install -q -e ".[test,plot,serve]"
# the browser test's Chromium: installed where this runs as root with apt (scripts/setup_browser.sh)
bash scripts/setup_browser.sh
echo "setup: done; run .venv/bin/python infer/long_video.py or .venv/bin/python -m pytest -q tests"
