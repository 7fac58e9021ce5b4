#!/usr/bin/env bash
# Every GPU measurement of issues 27 and 40 in one run, at most ~11 minutes on one H100/H200:
#   1. the CUDA tests (tests/test_cuda.py: FlexAttention vs SDPA, bf16 vs fp32, compiled vs eager, which SDPA kernel)
#   2. the XL benchmark: scripts/bench/ar_scaling.py --preset ca2vdm-xl --device cuda --dtype bf16 --frames 80
#      --steps 100, modes kv / none (OS-Fix) / full (OS-Ext), memory, MFU of the cached pass (random weights)
#   3. the compile speed-up of the cached chunk (kv vs kv+compile, XL, fewer steps)
#   4. training steps/s and MFU of the XL preset at bf16, activation checkpointing off and on
#   5. Wan: the memory estimate of the 1.3B + UMT5-XXL + VAE per size (scripts/bench/wan_memory.py, config
#      arithmetic) and Wan's VAE decoded chunk by chunk at 480x832 bf16 with random weights (scripts/bench/wan_vae.py:
#      seconds per chunk, peak memory, the feature cache flat, streamed == whole)
#   6. Wan 1.3B end to end at 480x832 bf16 with random weights, sampled as Self-Forcing (4 steps, chunks of 3 latent
#      frames), every chunk decoded by the VAE, an 81-frame video per mode (scripts/bench/wan_fps.py): frames per
#      second and time to first frame with the KV cache, recomputing the window, with TaylorSeer, compiled; peak memory
#   7. OUTDIR/summary.json and OUTDIR/summary.md (scripts/gpu_report.py), beside each step's JSON and log
#
#   scripts/gpu_check.sh OUTDIR             # on a machine whose PyTorch has CUDA (never reinstalls torch)
#   scripts/gpu_check.sh --dry-run OUTDIR   # the same path on the CPU with the tiny preset, in about a minute (CI)
#
# The project is used from this checkout (PYTHONPATH), never installed over the machine's torch. Python packages the
# steps import that are missing (einops, omegaconf, ...) are installed with pip under a constraint that pins torch to
# the installed version, so pip can never replace it. PYTHON picks the interpreter (default: the checkout's
# .venv/bin/python made by scripts/setup.sh when it exists, else python); one that cannot import torch stops the
# check at once with one line (no step runs).
# A step that fails or runs past its time limit is recorded in OUTDIR/steps.tsv and the summary, and the other steps
# still run; the exit status is 1 if any step failed.
set -uo pipefail

dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
if [ $# -ne 1 ]; then
    echo "usage: scripts/gpu_check.sh [--dry-run] OUTDIR" >&2
    exit 2
fi
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x "$root/.venv/bin/python" ]; then py=$root/.venv/bin/python
else py=python; fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c "import torch" > /dev/null 2>&1; then
    echo "error: $py cannot import torch; run bash scripts/setup.sh (it makes .venv), or point PYTHON at an" \
         "interpreter with PyTorch: PYTHON=/path/to/python scripts/gpu_check.sh ..." >&2
    exit 2
fi
mkdir -p "$out" || exit 2
: > "$out/steps.tsv"

if [ $dry -eq 0 ]; then
    "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else
'error: PyTorch sees no CUDA device; run scripts/gpu_check.sh --dry-run OUTDIR on a CPU')" || exit 2
    missing=$("$py" -c "import importlib.util as u; print(' '.join(p for m, p in [('einops', 'einops'),
('omegaconf', 'omegaconf'), ('safetensors', 'safetensors'), ('yaml', 'pyyaml'), ('tqdm', 'tqdm'), ('PIL', 'pillow'),
('av', 'av'), ('decord', 'decord'), ('pytest', 'pytest'), ('numpy', 'numpy')] if u.find_spec(m) is None))")
    if [ -n "$missing" ]; then
        echo "torch==$("$py" -c 'import torch; print(torch.__version__)')" > "$out/torch-constraint.txt"
        echo "installing $missing (torch pinned: $out/torch-constraint.txt)"
        "$py" -m pip install -q -c "$out/torch-constraint.txt" $missing || exit 2
    fi
    device=(--device cuda --dtype bf16)
    xl=(--preset ca2vdm-xl --frames 80 --steps 100)
    compile=(--preset ca2vdm-xl --frames 48 --steps 10)
    train=(--preset ca2vdm-xl --batch 2 --steps 10 --warmup 3)
    wan_vae=(--size 480x832 --chunks 10)
    wan_fps=(--size 480x832 --chunks 7)
    limits=(240 200 150 100 60 120 240)
else
    device=(--device cpu --dtype fp32)
    xl=(--preset tiny --frames 6 --steps 2)
    compile=(--preset tiny --frames 6 --steps 2 --compile-backend aot_eager)
    train=(--preset tiny --batch 1 --steps 2 --warmup 1)
    wan_vae=(--tiny --size 32x32 --chunks 3)
    wan_fps=(--tiny --size 32x32 --chunks 2 --compile-backend aot_eager)
    limits=(300 300 300 300 300 300 300)  # generous: a loaded CI machine; the dry run normally takes about a minute
fi

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log, record "name rc seconds"
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$out/steps.tsv"
    echo "   exit $rc after $((SECONDS - start))s (log: $out/$name.log)"
    tail -n 3 "$out/$name.log"
}

step cuda_tests "${limits[0]}" "$py" -m pytest -q -p no:cacheprovider -m cuda "$root/tests/test_cuda.py" \
    --junitxml "$out/cuda_tests.xml"
step xl_benchmark "${limits[1]}" "$py" "$root/scripts/bench/ar_scaling.py" "${xl[@]}" "${device[@]}" --repeats 1 \
    --label -1 --teacache-thresh --out-dir "$out/xl"
step compile_speedup "${limits[2]}" "$py" "$root/scripts/bench/ar_scaling.py" "${compile[@]}" "${device[@]}" \
    --repeats 1 --label -1 --teacache-thresh --modes kv --compile --out-dir "$out/compile"
step train_mfu "${limits[3]}" "$py" "$root/scripts/bench/train_mfu.py" "${train[@]}" "${device[@]}" \
    --out "$out/train_mfu.json"
step wan_memory "${limits[4]}" "$py" "$root/scripts/bench/wan_memory.py" --out "$out/wan_memory.json"
step wan_vae "${limits[5]}" "$py" "$root/scripts/bench/wan_vae.py" "${wan_vae[@]}" "${device[@]}" \
    --out "$out/wan_vae.json"
step wan_fps "${limits[6]}" "$py" "$root/scripts/bench/wan_fps.py" "${wan_fps[@]}" "${device[@]}" \
    --out "$out/wan_fps.json"
"$py" "$root/scripts/gpu_report.py" "$out" $([ $dry -eq 1 ] && echo --dry-run)
