#!/usr/bin/env bash
# Set up .venv on a fresh machine: the CPU build of torch (a bare "torch" pulls gigabytes of CUDA), then ca2vdm.
# On a GPU machine, install your CUDA torch build first and then `pip install -e ".[flash]"` for flash-attn.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test,plot,serve]"
