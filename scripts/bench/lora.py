"""LoRA fine-tuning against a full fine-tune of the same model, and what an adapter does at inference, in one run.

    python scripts/bench/lora.py --adapter runs/demo-white/checkpoints/step_000200 --data data/shapes-white \
        --colour 255,255,255 --steps 15 --sheet docs/images/lora_white.png --out docs/results/lora.json
    python scripts/bench/lora.py --preset small --data data/shapes-white --steps 3 --batch-size 1 \
        --out docs/results/lora_small.json   # the cost alone, on a wider model of the same architecture

1. Cost (the goals: adapter <= 10 % of the base file, step >= 1.3x faster, optimizer state >= 5x smaller): --steps
   and 2 x --steps fine-tuning steps of --config from --base on --data, a full fine-tune and a LoRA one at the default
   settings (``train.lora={}``), one after the other. A step's CPU time is the difference of the two runs' CPU times
   over the extra steps (start-up left out; CPU time, so other jobs on the machine count little). Optimizer state and
   adapter size: the files of each run's last checkpoint. --preset NAME runs them on a model of the registry
   (``ca2vdm/config/model.py``) with random weights, saved in float16 as a shipped checkpoint is, instead of --base:
   the weight gradients LoRA saves, and the optimizer's work, grow with the model's width.
2. Exactness, with --adapter: the video of --base with the adapter folded in (``load_pipeline(lora=)``) against the
   same from a merged checkpoint (``ca2vdm merge-lora``'s function; float32 and the base's own precision), one
   model forward with live (unmerged) LoRA layers against the merged model, and scale 0 against the base.
3. The new colour: every label x --seeds, --chunks chunks each, from the base and from the adapted model; each video's
   foreground colour (``ca2vdm.evaluation.metrics.foreground_colour``) is called by the nearest of the synthetic
   palette's eight colours and --colour. --sheet writes the first frames of each video, base rows above adapted rows.
"""
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import ca2vdm
from ca2vdm.checkpoints.adapters import read_adapter, save_merged
from ca2vdm.checkpoints.weights import load_model, save_weights
from ca2vdm.cli.args import count, new_parser, rgb
from ca2vdm.config import LoraConfig, load_config
from ca2vdm.config.model import MODEL_CONFIGS, model_config
from ca2vdm.data.synthetic import PALETTE
from ca2vdm.evaluation.metrics import foreground_colour
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.io.video import save_contact_sheet
from ca2vdm.models import lora as layers
from ca2vdm.models.registry import build_model
from ca2vdm.training.loop import train

PALETTE_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "violet")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (data workers), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fine_tune(args, base: Path, out: Path, steps: int, lora: bool) -> float:
    """Fine-tune ``base`` for ``steps`` steps into ``out``; its CPU seconds."""
    overrides = [f"data.root={args.data}", f"train.output_dir={out}", f"train.init_from={base}",
                 f"train.batch_size={args.batch_size}", f"train.max_steps={steps}", f"train.save_every={steps}",
                 "train.log_every=1", "train.sample_every=0", "data.num_workers=0",
                 *([f"model.name={args.preset}"] if args.preset else []), *(["train.lora={}"] if lora else [])]
    config = load_config(args.config, overrides)
    tic = cpu_seconds()
    train(config, progress_bar=False)
    return cpu_seconds() - tic


def random_base(preset: str, path: Path) -> Path:
    """A model of the registry's ``preset`` with random weights, saved in float16 (as a shipped checkpoint)."""
    torch.manual_seed(0)
    model = build_model(model_config(preset))
    save_weights(path, {k: v.half() for k, v in model.state_dict().items()}, model.cfg)
    return path


def cost(args, work: Path) -> dict:
    """Step CPU time, optimizer state and adapter size of a full and a LoRA fine-tune."""
    base = random_base(args.preset, work / "base.safetensors") if args.preset else Path(args.base)
    runs = {}
    for name, lora in (("full", False), ("lora", True)):
        short, long = (fine_tune(args, base, work / f"{name}{n}", n, lora) for n in (args.steps, 2 * args.steps))
        final = work / f"{name}{2 * args.steps}/checkpoints/step_{2 * args.steps:06d}"
        state = torch.load(final / "optimizer.bin", map_location="cpu", weights_only=True)["state"]
        runs[name] = {"step_cpu_seconds": (long - short) / args.steps,
                      "checkpoint_folder_bytes": sum(f.stat().st_size for f in final.iterdir()),
                      "optimizer_file_bytes": (final / "optimizer.bin").stat().st_size,
                      "optimizer_state_numbers": sum(t.numel() for s in state.values() for t in s.values()
                                                     if torch.is_tensor(t) and t.ndim)}
        if lora:
            adapter = final / "adapter.safetensors"
            runs[name]["adapter_file_bytes"] = adapter.stat().st_size
            runs[name]["adapter_numbers"] = sum(t.numel() for t in load_file(adapter).values())
    base_numbers = sum(t.numel() for t in load_file(base).values())
    full, lora = runs["full"], runs["lora"]
    return {**runs, "model": args.preset or "the base's", "default_lora": vars(LoraConfig()),
            "base_file_bytes": base.stat().st_size, "base_numbers": base_numbers,
            "adapter_file_share_of_base_file": lora["adapter_file_bytes"] / base.stat().st_size,
            "adapter_share_of_base_numbers": lora["adapter_numbers"] / base_numbers,
            "step_speedup": full["step_cpu_seconds"] / lora["step_cpu_seconds"],
            "optimizer_state_ratio": full["optimizer_state_numbers"] / lora["optimizer_state_numbers"],
            "optimizer_file_ratio": full["optimizer_file_bytes"] / lora["optimizer_file_bytes"]}


def video(pipe, label: int, seed: int, chunks: int) -> torch.Tensor:
    """(C, T, H, W) model frames of one video."""
    return torch.cat([c.latents[0] for c in pipe.generate(chunks, label=label, seed=seed)], dim=1)


def exactness(args, work: Path) -> dict:
    """Folded-in adapter == merged checkpoint (float tolerance), live LoRA layers == merged, scale 0 == base."""
    base = ca2vdm.load_pipeline(args.base, "cpu")
    adapted = ca2vdm.load_pipeline(args.base, "cpu", lora=[(args.adapter, 1.0)])
    reference = video(adapted, 0, 0, args.chunks)
    result = {}
    for precision, dtype in (("fp32", torch.float32), ("base_precision", None)):
        merged = save_merged(args.base, [(args.adapter, 1.0)], work / f"merged-{precision}.safetensors", dtype)
        frames = video(ca2vdm.load_pipeline(merged, "cpu"), 0, 0, args.chunks)
        result[f"merged_{precision}_max_abs_diff"] = (frames - reference).abs().max().item()
    live, _ = load_model(args.base)
    adapter = read_adapter(args.adapter)
    layers.attach(live, adapter.tensors, adapter.settings, 1.0, "live")
    x = torch.randn(1, 3, live.cfg.clip_frames, live.cfg.resolution, live.cfg.resolution,
                    generator=torch.Generator().manual_seed(0))
    t, y = torch.rand(1, live.cfg.clip_frames, generator=torch.Generator().manual_seed(1)), torch.tensor([0])
    with torch.no_grad():
        result["unmerged_vs_merged_forward_max_abs_diff"] = (live(x, t, y) - adapted.model(x, t, y)).abs().max().item()
    zero = ca2vdm.load_pipeline(args.base, "cpu", lora=[(args.adapter, 0.0)])
    result["scale_0_equals_base"] = bool(torch.equal(video(zero, 0, 0, args.chunks), video(base, 0, 0, args.chunks)))
    return result


def colours(args) -> tuple[dict, np.ndarray]:
    """Foreground colours of the base's and the adapted model's videos, and their first frames for the sheet."""
    names = [*PALETTE_NAMES, "new"]
    bank = np.concatenate([PALETTE / 255, np.array(args.colour, dtype=np.float32)[None] / 255])  # (9, 3)
    result, rows = {}, []
    for name, lora in (("base", None), ("adapted", [(args.adapter, 1.0)])):
        pipe = ca2vdm.load_pipeline(args.base, "cpu", lora=lora)
        calls, distances = [], []
        for label in range(pipe.model.cfg.num_classes):
            for seed in range(args.seeds):
                frames = video(pipe, label, seed, args.chunks)
                colour = foreground_colour(frames)
                nearest = int(np.nanargmin(np.linalg.norm(bank - colour, axis=1))) if np.isfinite(colour).all() else -1
                calls.append(names[nearest] if nearest >= 0 else "none")
                distances.append(float(np.linalg.norm(colour - bank[-1])))
                rows.append(((frames[:, :8].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy())
        result[name] = {"videos": len(calls), "called_new_colour": calls.count("new") / len(calls),
                        "calls": {c: calls.count(c) for c in sorted(set(calls))},
                        "mean_distance_to_new_colour": float(np.mean(distances))}
    return result, np.concatenate(rows)


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("--base", default="checkpoints/demo.safetensors", help="the base checkpoint")
    p.add_input("--config", default="configs/demo.yaml", help="the base's training config")
    p.add_input("--data", required=True, help="videos to fine-tune on (the cost runs)")
    p.add_input("--adapter", default=None, help="an adapter trained on --base (exactness, colour; without it: the "
                   "cost alone)")
    p.add_argument("--preset", default=None, choices=sorted(MODEL_CONFIGS),
                   help="measure the cost on this registry model with random weights instead of --base")
    p.add_argument("--colour", type=rgb, default=(255, 255, 255),
                   help="R,G,B of the colour the adapter teaches")
    p.add_argument("--steps", type=count(1, 10 ** 6), default=10, help="fine-tuning steps of the shorter cost runs")
    p.add_argument("--batch-size", type=count(1, 4096), default=8, help="training batch of the cost runs")
    p.add_argument("--seeds", type=count(1, 1000), default=4, help="videos per label for the colour statistics")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=5, help="chunks per video")
    p.add_output("--sheet", default=None, help="contact sheet PNG: base rows, then adapted rows")
    p.add_output("--out", default="outputs/bench/lora.json", help="the JSON report")
    args = p.parse_args()
    check_results_path(args.out, [args.base, args.config, args.data] + ([args.adapter] if args.adapter else []))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        report = {"base": args.preset or args.base, "adapter": args.adapter, "data": args.data,
                  "config": args.config, "steps": args.steps, "batch_size": args.batch_size,
                  "cost": cost(args, Path(work))}
        if args.adapter:
            report["exactness"] = exactness(args, Path(work))
    if args.adapter:
        report["colour"], sheet = colours(args)
    c = report["cost"]
    print(f"{report['base']}: adapter {c['lora']['adapter_file_bytes'] / 1e3:.0f} KB = "
          f"{100 * c['adapter_file_share_of_base_file']:.1f} % of the base file ({c['base_file_bytes'] / 1e6:.1f} MB); "
          f"{100 * c['adapter_share_of_base_numbers']:.1f} % of its numbers")
    print(f"step CPU time: full {c['full']['step_cpu_seconds']:.2f} s, LoRA {c['lora']['step_cpu_seconds']:.2f} s "
          f"({c['step_speedup']:.2f}x); optimizer state {c['optimizer_state_ratio']:.1f}x smaller")
    if args.adapter:
        print("exactness: " + ", ".join(f"{k} {v}" for k, v in report["exactness"].items()))
    for name, r in report.get("colour", {}).items():
        print(f"{name}: {100 * r['called_new_colour']:.0f} % of {r['videos']} videos in the new colour {r['calls']}")
    write_results(args.out, report, [args.base, args.config, args.data] + ([args.adapter] if args.adapter else []))
    if args.sheet and args.adapter:
        save_contact_sheet(sheet, args.sheet, frames_per_row=8 * args.seeds)


if __name__ == "__main__":
    main()
