"""Training steps per second and model FLOP utilisation, with and without activation checkpointing.

    python scripts/bench/train_mfu.py --preset ca2vdm-xl --device cuda --dtype bf16 --batch 4
    python scripts/bench/train_mfu.py --preset tiny --steps 2 --warmup 1          # a dry run on the CPU

A randomly initialised model of ``--preset`` (random weights: timing only), made ready for training by
:func:`ca2vdm.parallelize.parallelize` (``train.activation_checkpointing`` off, then on), takes ``--warmup`` untimed
and ``--steps`` timed optimizer steps (AdamW) of the one-chunk training loss on random clips of the preset's full
length, under autocast at ``--dtype`` (float32 master weights, as accelerate's mixed precision trains). MFU counts the
forward and backward passes (3 forwards, ca2vdm/flops.py; the recomputation is overhead, not counted) over the
device's dense peak (``--peak-tflops`` or the table of known GPUs). Memory: CUDA's max_memory_allocated per mode.
"""
import time

import torch

from ca2vdm.cli.args import count, new_parser, number
from ca2vdm.config import MODEL_CONFIGS, Config, model_config
from ca2vdm.config.options import Declared
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.models.flops import mfu, peak_tflops, train_step_flops
from ca2vdm.models.registry import build_model
from ca2vdm.runtime.device import DTYPES, dtype_name, resolve_device, resolve_dtype
from ca2vdm.training.losses import causal_flow_loss
from ca2vdm.training.parallelize import parallelize

PEAK_TFLOPS = Declared(float, "a device's dense peak TFLOP/s", low=0, low_open=True, high=10 ** 6)


def run(preset: str, batch: int, checkpointing: bool, device: torch.device, dtype: torch.dtype, warmup: int,
        steps: int) -> dict:
    """Seconds per optimizer step (mean of ``steps`` after ``warmup``), the last loss and the peak memory."""
    torch.manual_seed(0)
    cfg = model_config(preset)
    config = Config(model=cfg)
    config.train.activation_checkpointing = checkpointing
    with torch.device(device):
        model = parallelize(build_model(cfg).train(), config, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device).manual_seed(1)
    video = torch.randn(batch, cfg.in_channels, cfg.clip_frames, cfg.resolution, cfg.resolution, generator=gen,
                        device=device)  # (B, C, T, H, W)
    labels = torch.zeros(batch, dtype=torch.long, device=device) if cfg.num_classes else None
    num_cond = cfg.clip_frames - cfg.chunk_frames  # every frame runs through the blocks
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            tic = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = causal_flow_loss(model, video, labels, num_cond, cfg.chunk_frames, 0.05, generator=gen)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    seconds = (time.perf_counter() - tic) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return {"seconds_per_step": seconds, "steps_per_second": 1 / seconds, "loss": loss.item(), "peak_mb": peak}


def main(argv=None) -> None:
    p = new_parser(__doc__)
    p.add_argument("--preset", choices=sorted(MODEL_CONFIGS), default="ca2vdm-xl",
                   help="model preset (random weights)")
    p.add_argument("--batch", type=count(1, 4096), default=2, help="clips per step")
    p.add_argument("--steps", type=count(1, 10 ** 6), default=10, help="timed optimizer steps per mode")
    p.add_argument("--warmup", type=count(0, 10 ** 6), default=3, help="untimed steps first (allocator, kernels)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="autocast dtype (default: bf16 on CUDA)")
    p.add_argument("--peak-tflops", type=number(PEAK_TFLOPS), default=None,
                   help="dense peak TFLOP/s (default: known GPUs)")
    p.add_output("--out", default="outputs/bench/train_mfu.json", help="JSON file for the figures")
    args = p.parse_args(argv)
    check_results_path(args.out)  # before the measurement, not after it
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cfg = model_config(args.preset)
    peak, source = peak_tflops(device, dtype, args.peak_tflops)
    flops = train_step_flops(cfg, args.batch, cfg.clip_frames)
    print(f"weights: random (preset {args.preset}: timing only); {device}, autocast {dtype_name(dtype)}")
    modes = {}
    for name, checkpointing in (("activation_checkpointing_off", False), ("activation_checkpointing_on", True)):
        modes[name] = run(args.preset, args.batch, checkpointing, device, dtype, args.warmup, args.steps)
        modes[name]["mfu"] = mfu(flops, modes[name]["seconds_per_step"], peak)
        print(f"{name}: {modes[name]}", flush=True)
    result = {"preset": args.preset, "weights": "random", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "dtype": dtype_name(dtype), "batch": args.batch, "clip_frames": cfg.clip_frames, "steps": args.steps,
              "flops_per_step": flops, "peak_tflops": peak, "peak_tflops_source": source, "modes": modes,
              "step_time_on_over_off": modes["activation_checkpointing_on"]["seconds_per_step"]
              / modes["activation_checkpointing_off"]["seconds_per_step"]}
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
