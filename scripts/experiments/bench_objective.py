"""Training objectives compared by wall-clock: ``diffusion.objective=chunk`` (one random chunk per clip) against
``all`` (every chunk per step, teacher forcing), on the same config, data, initial weights and held-out batch.

    python scripts/experiments/bench_objective.py --config configs/tiny.yaml --seconds 240 train.batch_size=16

The two runs alternate slices of ``--slice`` seconds of training until each has trained ``--seconds`` seconds, so
both see the same machine load (on a shared machine that matters more than anything else). The clock counts the
training compute of a step (loss, backward, optimizer, EMA); the training videos are decoded once into memory (the
clips are those the data set yields) and batching, the same for both objectives, is timed apart and reported. After
every slice both runs are evaluated on one fixed held-out batch (every 8th video of the data folder, never trained
on) with fixed noise, fixed clean-frame perturbation and fixed per-chunk times: the per-chunk flow loss of
:func:`ca2vdm.diffusion.teacher_forcing_flow_loss`, which equals the one-chunk loss of each chunk for the same draws
(tests/test_diffusion.py), so the values of the two runs compare. Both the raw weights and the EMA are evaluated.

The learning rate warms up over ``train.warmup_steps`` and then stays at ``train.lr`` (a time budget has no step
count for a decay). Without ``--data`` the synthetic shapes data set is written by ca2vdm make-data
into a temporary folder. Writes ``<out-dir>/objective.json`` and ``<out-dir>/objective.png``.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ca2vdm.cli.args import count, new_parser, number
from ca2vdm.cli.make_data import main as make_data
from ca2vdm.config import Config, load_config
from ca2vdm.config.options import Declared
from ca2vdm.data.clips import ClipDataset, VideoFolderDataset
from ca2vdm.io.plotting import plot_or_skip
from ca2vdm.io.results import write_results
from ca2vdm.io.video import read_frames, resize_center_crop
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.models.registry import build_model
from ca2vdm.training.diffusion_task import DiffusionTask
from ca2vdm.training.ema import EMA
from ca2vdm.training.losses import teacher_forcing_flow_loss

ROOT = Path(__file__).resolve().parents[2]

OBJECTIVES = ("chunk", "all")
HOLDOUT_EVERY = 8
SECONDS = Declared(float, "seconds", low=0, low_open=True, high=10 ** 7)


class InMemoryClips(ClipDataset):
    """The clips a :class:`VideoFolderDataset` yields (same (seed, epoch, index) -> video and start frame), from
    videos decoded once into memory: on a small machine decoding costs far more than a tiny model's step."""

    def __init__(self, source: VideoFolderDataset):
        self.videos, self.labels = source.videos, source.labels
        self.clips_per_video, self.seed, self.epoch = source.clips_per_video, source.seed, 0
        self.span, self.stride = source.clip_span, source.frame_stride
        self.frames = [resize_center_crop(read_frames(path, range(n)), source.resolution)  # (3, L, R, R) each
                       for path, n in zip(source.videos, source.lengths)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        position, j = self.clip_position(index), index % len(self.videos)
        video = self.frames[j]
        start = int(position * (video.shape[1] - self.span + 1))
        return {"video": video[:, start:start + self.span:self.stride],
                "label": torch.tensor(self.labels[j], dtype=torch.long)}


class Run:
    """One objective's training state: model, optimizer, EMA, its own pass over the data, its clocks."""

    def __init__(self, objective: str, config: Config, dataset: ClipDataset, device: torch.device):
        self.objective, self.config, self.device = objective, config, device
        self.task = DiffusionTask(config, device)
        torch.manual_seed(config.train.seed)  # the same initial weights for both objectives
        self.model = build_model(config.model).to(device).train()
        tc = config.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0)
        self.ema = EMA(self.model, tc.ema_decay)
        self.sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=tc.seed, drop_last=True)
        self.loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=self.sampler, drop_last=True)
        self.dataset, self.epoch, self.batches = dataset, -1, iter(())
        self.steps, self.train_seconds, self.data_seconds = 0, 0.0, 0.0
        self.history: list[dict] = []

    def _next_batch(self) -> dict:
        """The next batch of this run's own pass over the data (same order for both runs)."""
        while True:
            batch = next(self.batches, None)
            if batch is not None:
                return batch
            self.epoch += 1
            self.sampler.set_epoch(self.epoch)
            self.dataset.set_epoch(self.epoch)
            self.batches = iter(self.loader)

    def train_for(self, seconds: float) -> None:
        """Train until this slice has used ``seconds`` of training compute (the step that crosses it finishes)."""
        config, spent = self.config, 0.0
        config.diffusion.objective = self.objective
        while spent < seconds:
            tic = time.perf_counter()
            batch = self._next_batch()
            self.data_seconds += time.perf_counter() - tic
            tic = time.perf_counter()
            gen = torch.Generator(device=self.device).manual_seed(config.train.seed * 1_000_003 + self.steps)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
                loss = self.task.loss(self.model, batch, config, gen)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.model, self.steps)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.steps += 1
            spent += time.perf_counter() - tic
        self.train_seconds += spent


class HeldOut:
    """A fixed evaluation batch with fixed draws: every evaluation of every run sees exactly the same inputs."""

    def __init__(self, config: Config, root: Path, clips: int, repeats: int, task: DiffusionTask,
                 device: torch.device):
        mc = config.model
        dataset = VideoFolderDataset(root, num_frames=mc.clip_frames, frame_stride=config.data.frame_stride,
                                     resolution=mc.resolution * task.codec.factor, manifest=config.data.manifest,
                                     seed=config.train.seed + 1, clips_per_video=clips,
                                     report_skipped=False, holdout_every=HOLDOUT_EVERY, holdout=True)
        items = [dataset[i] for i in range(min(clips, len(dataset)))]
        video = torch.stack([item["video"] for item in items]).to(device)  # (N, C, T, H, W) pixels
        with torch.no_grad():
            video = task.codec.encode(video)
        self.video = video.repeat(repeats, 1, 1, 1, 1)  # (R*N, C, T, h, w): each clip with `repeats` draws
        labels = torch.tensor([int(item.get("label", 0)) for item in items], device=device)
        self.labels = labels.repeat(repeats) if mc.num_classes else None
        self.chunks, self.cond_noise = task.chunks, config.diffusion.cond_noise
        g = torch.Generator(device=device).manual_seed(12345)
        n, num_clean = self.video.shape[0], self.chunks[-1][0]
        self.noise = torch.randn(self.video.shape, generator=g, device=device)
        self.cond_eps = torch.randn((n, self.video.shape[1], num_clean, *self.video.shape[3:]), generator=g,
                                    device=device)
        self.t = torch.sigmoid(torch.randn((n, len(self.chunks)), generator=g, device=device))  # logit-normal
        self.size = n

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, batch: int = 32) -> list[float]:
        """Per-chunk flow loss (K,) of ``model`` on the held-out batch, in minibatches of ``batch`` clips."""
        model.eval()
        total = torch.zeros(len(self.chunks), device=self.noise.device)
        for i in range(0, self.size, batch):
            s = slice(i, i + batch)
            labels = None if self.labels is None else self.labels[s]
            terms = teacher_forcing_flow_loss(model, self.video[s], labels, self.chunks, self.cond_noise,
                                              noise=self.noise[s], cond_eps=self.cond_eps[s], t=self.t[s],
                                              per_chunk=True)
            total += terms * self.video[s].shape[0]
        model.train()
        return (total / self.size).tolist()


def evaluate(run: Run, held: HeldOut, ema_model: CausalVideoModel) -> None:
    """Append the run's eval losses (raw weights and EMA) at its current training time to its history."""
    raw = held.loss(run.model)
    ema_model.load_state_dict({k: v.to(ema_model.rope_cos.dtype) for k, v in run.ema.shadow.items()})
    ema = held.loss(ema_model)
    run.history.append({"seconds": round(run.train_seconds, 2), "steps": run.steps,
                        "clips": run.steps * run.config.train.batch_size,
                        "eval": sum(raw) / len(raw), "eval_per_chunk": raw,
                        "eval_ema": sum(ema) / len(ema), "eval_ema_per_chunk": ema})


def time_to_reach(history: list[dict], target: float, key: str) -> float | None:
    """Training seconds at which the eval curve first reaches ``target`` (linear between evaluations)."""
    for before, after in zip(history, history[1:]):
        if after[key] <= target:
            if before[key] <= target:
                return before["seconds"]
            frac = (before[key] - target) / (before[key] - after[key])
            return before["seconds"] + frac * (after["seconds"] - before["seconds"])
    return None


def value_at(history: list[dict], seconds: float, key: str) -> float:
    """The eval curve at ``seconds`` of training (linear between evaluations)."""
    for before, after in zip(history, history[1:]):
        if after["seconds"] >= seconds:
            frac = (seconds - before["seconds"]) / max(after["seconds"] - before["seconds"], 1e-9)
            return before[key] + frac * (after[key] - before[key])
    return history[-1][key]


def summarise(runs: dict[str, Run], key: str) -> dict:
    """Does ``all`` reach ``chunk``'s final eval loss in at most half of ``chunk``'s training time?"""
    chunk, full = runs["chunk"].history, runs["all"].history
    target, budget = chunk[-1][key], chunk[-1]["seconds"]
    reach = time_to_reach(full, target, key)
    return {"chunk_final": target, "all_final": full[-1][key], "chunk_seconds": budget,
            "all_seconds_to_reach_chunk_final": reach,
            "ratio": None if reach is None else reach / budget,
            "all_at_half_time": value_at(full, budget / 2, key),
            "reached_in_half_time": reach is not None and reach <= budget / 2}


def plot(result: dict, path: Path) -> None:
    """Eval loss vs training seconds and vs steps (raw weights solid, EMA dashed), and the final loss per chunk."""
    import matplotlib.pyplot as plt

    fig, (ax, sx, bx) = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [2, 1.4, 1]})
    colours = {"chunk": "tab:blue", "all": "tab:orange"}
    for name, run in result["runs"].items():
        h = run["history"][1:]  # the untrained model's loss would flatten the scale
        for axis, x in ((ax, "seconds"), (sx, "steps")):
            axis.plot([p[x] for p in h], [p["eval"] for p in h], "-o", ms=3, color=colours[name],
                      label=f"objective={name} ({run['steps']} steps)")
            axis.plot([p[x] for p in h], [p["eval_ema"] for p in h], "--", color=colours[name], alpha=0.6,
                      label=f"objective={name}, EMA")
    s = result["summary"]["raw"]
    ax.axhline(s["chunk_final"], color="grey", lw=0.8, ls=":")
    ax.axvline(s["chunk_seconds"] / 2, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="training compute seconds (each run; slices alternated)",
           ylabel="held-out flow loss (fixed noise, mean over chunks)",
           title=f"{Path(result['config']).name}: eval loss vs wall-clock")
    sx.set(xlabel="training steps", title="eval loss vs steps")
    ax.legend(fontsize=8)
    width = 0.38
    for i, (name, run) in enumerate(result["runs"].items()):
        values = run["history"][-1]["eval_per_chunk"]
        bx.bar([k + (i - 0.5) * width for k in range(len(values))], values, width, color=colours[name], label=name)
    bx.set(xlabel="chunk (0 = first frame)" if result["model"]["first_frame_chunk"] else "chunk",
           ylabel="final held-out loss", title="final loss per chunk")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = new_parser(__doc__)
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. train.batch_size=16)")
    p.add_input("--config", default=str(ROOT / "configs/demo.yaml"), help="training config both objectives use")
    p.add_argument("--data", type=Path, help="video folder (written with ca2vdm make-data if missing)")
    p.add_argument("--seconds", type=number(SECONDS), default=240, help="training compute seconds per objective")
    p.add_argument("--slice", type=number(SECONDS), default=15, help="seconds per alternating slice")
    p.add_argument("--eval-clips", type=count(1, 10 ** 5), default=32,
                   help="held-out clips (each evaluated --eval-repeats times)")
    p.add_argument("--eval-repeats", type=count(1, 1000), default=2,
                   help="independent fixed draws per held-out clip")
    p.add_argument("--threads", type=count(1, 1024), default=1,
                   help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when present)")
    p.add_output("--out-dir", kind="folder", type=Path, default=ROOT / "outputs/bench",
                   help="folder for objective.json and the plot")
    p.add_input("--plot-only", type=Path, help="redraw the plot of this objective.json into --out-dir and stop")
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    if args.plot_only:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        plot_or_skip(plot, json.loads(args.plot_only.read_text()), path=args.out_dir / "objective.png")
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "shapes"
        config = load_config(args.config, [*args.overrides, f"data.root={data}", f"train.output_dir={tmp}/run"])
        if not data.is_dir() or not any(data.iterdir()):
            size = config.model.resolution  # pixel codec: frames at the model's size decode fastest
            make_data(["--out", str(data), "--size", str(size)])
        mc = config.model
        task = DiffusionTask(config, device)
        train_set = InMemoryClips(VideoFolderDataset(
            data, num_frames=mc.clip_frames, frame_stride=config.data.frame_stride,
            resolution=mc.resolution * task.codec.factor, manifest=config.data.manifest, seed=config.train.seed,
            clips_per_video=config.data.clips_per_video, report_skipped=False, holdout_every=HOLDOUT_EVERY))
        held = HeldOut(config, data, args.eval_clips, args.eval_repeats, task, device)
        # each run its own copy of the data set: its epoch (which seeds clip positions) is the run's own
        runs = {name: Run(name, config, copy.copy(train_set), device) for name in OBJECTIVES}
        ema_model = build_model(mc).to(device)
        load = [os.getloadavg()]
        for run in runs.values():
            evaluate(run, held, ema_model)
        tic = time.perf_counter()
        while any(r.train_seconds < args.seconds for r in runs.values()):
            for run in runs.values():  # alternate: each slice of one is followed by a slice of the other
                if run.train_seconds < args.seconds:
                    run.train_for(min(args.slice, args.seconds - run.train_seconds))
                    evaluate(run, held, ema_model)
                    h = run.history[-1]
                    print(f"{run.objective:5} {h['seconds']:7.1f}s {h['steps']:6d} steps  eval {h['eval']:.4f}  "
                          f"ema {h['eval_ema']:.4f}", flush=True)
            load.append(os.getloadavg())
        wall = time.perf_counter() - tic

    result = {
        "config": str(args.config), "overrides": args.overrides, "seconds_per_objective": args.seconds,
        "slice_seconds": args.slice, "eval_clips": held.size, "threads": args.threads, "device": str(device),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_average_1min": [round(x[0], 2) for x in load]},
        "wall_seconds_total": round(wall, 1),
        "model": {k: getattr(mc, k) for k in ("name", "resolution", "hidden_size", "depth", "chunk_frames",
                                              "max_context_frames", "prefix_frames", "first_frame_chunk")},
        "train": {"batch_size": config.train.batch_size, "lr": config.train.lr,
                  "warmup_steps": config.train.warmup_steps, "ema_decay": config.train.ema_decay},
        "chunks": task.chunks,
        "runs": {name: {"steps": r.steps, "train_seconds": round(r.train_seconds, 2),
                        "data_seconds": round(r.data_seconds, 2), "steps_per_s": r.steps / r.train_seconds,
                        "history": r.history} for name, r in runs.items()},
        "summary": {"raw": summarise(runs, "eval"), "ema": summarise(runs, "eval_ema")},
    }
    write_results(args.out_dir / "objective.json", result, [args.config])
    drawn = plot_or_skip(plot, result, path=args.out_dir / "objective.png")
    for kind, s in result["summary"].items():
        ratio = "never" if s["ratio"] is None else f"after {s['ratio']:.2f} of chunk's time"
        print(f"[{kind}] chunk final {s['chunk_final']:.4f} ({s['chunk_seconds']:.0f}s); all final "
              f"{s['all_final']:.4f}; all reaches chunk's final {ratio}; at half time all = "
              f"{s['all_at_half_time']:.4f} -> reached in half the time: {s['reached_in_half_time']}")
    print(f"wrote {args.out_dir / 'objective.json'}" + (f" and {args.out_dir / 'objective.png'}" if drawn else ""))


if __name__ == "__main__":
    main()
