"""Generate a long video chunk by chunk with the shared KV cache, streaming frames into an mp4.

    ca2vdm generate --chunks 20                          # shipped checkpoint -> outputs/long_video.mp4
    python infer/long_video.py --chunks 20               # the same (so is ca2vdm-generate --chunks 20)
    ca2vdm generate --checkpoint runs/demo/checkpoints/step_003000 --label 2 --preview
    ca2vdm generate --checkpoint checkpoints/text-demo.safetensors --prompt "a red circle" --switch 10="a blue square"
    ca2vdm generate --lora runs/demo-white/checkpoints/step_000300 --label 1   # a LoRA adapter (docs/training.md)
    ca2vdm generate --base Wan2.1-T2V-1.3B-Diffusers --checkpoint self_forcing_dmd.pt --prompt "a fox" --chunks 60 \
        --switch 20="a fox in the snow" --offload-text-encoder        # a downloaded Wan folder (docs/models.md)

Outputs: without --out the video goes to outputs/long_video.mp4, this tool's scratch file, replaced by every run
(which says so, and removes the earlier run's contact sheet beside it unless it writes a new one with --preview).
A file given with --out that exists is refused unless --overwrite. An output is never the checkpoint (or a file in
a checkpoint directory), the --first-frame input, a device, or another output of the run.

Ctrl-C or SIGTERM stops after the current denoising step and keeps the finished chunks as a playable mp4
(exit status 130 or 143).

Many videos (seeds --seed .. --seed + N - 1, one mp4 each beside --out, named by seed; see
ca2vdm/generation/many.py):

    ca2vdm generate --num-videos 8 --batch 4 --out outputs/many/video.mp4
    accelerate launch --multi_gpu --num_processes 2 infer/long_video.py --num-videos 8 --out outputs/many/video.mp4
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ca2vdm.cli.args import (
    FLAGS,
    add_base_flags,
    add_sampler_flags,
    count,
    lora_spec,
    new_parser,
    positive_int,
    sampler_overrides,
    seed,
)
from ca2vdm.config import PRECISIONS, SWITCH_MODES
from ca2vdm.errors import Ca2vdmError
from ca2vdm.io.paths import DEFAULT_CHECKPOINT, DEFAULT_OUT, VIDEO_NAME

# the generate command's own names for settings in messages (a video's contact sheet is the --preview sheet)
GENERATE_FLAGS = {**FLAGS, "preview": "the --preview sheet"}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("--checkpoint", default=None,
                   help="weights (.safetensors) or a training checkpoint directory (default: the shipped demo model, "
                        "checkpoints/demo.safetensors)")
    p.add_output("--out", kind="video", default=None,
                   help=f"output mp4, written atomically; an existing file is refused unless --overwrite. A "
                        f"directory (or a path ending in /) gets {VIDEO_NAME} inside it, created if needed. Default: "
                        f"{DEFAULT_OUT}, the scratch output that every run without --out replaces")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out video (and its --preview sheet)")
    p.add_argument("--chunks", type=positive_int, default=20, help="number of chunks to generate (default 20)")
    p.add_argument("--seed", type=seed, default=0, help="random seed, 0 .. 2**64 - 1 (same seed, same video)")
    p.add_input("--first-frame", default=None,
                   help="image or video to continue; a video is streamed into the output, and only its last frames "
                        "(those that can still influence the next chunk) are run through the model")
    p.add_argument("--label", type=count(0), default=None,
                   help="class label, one of the model's (demo model: 0 circle, 1 square, 2 triangle)")
    p.add_argument("--prompt", default=None,
                   help="a text model's prompt (text-demo: e.g. 'a small blue triangle drifting left slowly'; at most "
                        "model.text_tokens tokens)")
    p.add_argument("--switch", dest="switches", action="append", type=switch_arg, default=[], metavar="CHUNK=NEW",
                   help="from chunk CHUNK (0-based) on, a new prompt (text) or label (a whole number); repeatable, "
                        "e.g. --switch 10='a blue square'")
    p.add_argument("--switch-mode", choices=SWITCH_MODES, default="recache",
                   help="what a switch does to the cached window: recache (default: run it once more under the new "
                        "prompt or label), keep (its old K/V) or reset (drop it: a cut)")
    p.add_argument("--lora", type=lora_spec, action="append", default=[], metavar="PATH[:SCALE]",
                   help="a LoRA adapter trained on --checkpoint (a train.lora run's adapter.safetensors or checkpoint "
                        "folder), folded into the weights times SCALE (default 1); repeatable: adapters stack")
    add_sampler_flags(p)
    add_base_flags(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=list(PRECISIONS), default=None,
                   help="precision of the weights and the KV cache (rotary phases and softmax statistics stay fp32); "
                        "default: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--fps", type=count(1, 240), default=8, help="frame rate of the mp4, 1 .. 240")
    p.add_input("--codec-path", default=None,
                   help="the autoencoder's save_pretrained folder, if not where the checkpoint recorded it")
    p.add_output("--stats", default=None,
                   help="write per-chunk timings and model evaluations to this JSON file (replaced if it exists)")
    p.add_argument("--preview", action="store_true", help="also write a contact sheet PNG beside the mp4")
    p.add_argument("--verbose", action="store_true", help="a progress bar per denoising step too")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks once per process before the first chunk (its seconds "
                        "are reported apart, as compile_seconds in --stats)")
    p.add_argument("--num-videos", type=positive_int, default=None,
                   help="generate N videos, seeds --seed .. --seed + N - 1, each to <out stem>_seed<seed>.mp4; under "
                        "accelerate launch / torchrun the seeds are split across the processes")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="with --num-videos: videos generated together in one batched pass (default 1)")
    args = p.parse_args(argv)
    try:
        args.sampler = sampler_overrides(args)
    except Ca2vdmError as e:
        p.error(e.for_cli(GENERATE_FLAGS))
    return args


def switch_arg(text: str) -> tuple[int, str | int]:
    """argparse type of --switch: CHUNK=PROMPT, or CHUNK=LABEL for a label model."""
    index, sep, new = text.partition("=")
    if not sep or not index.strip().lstrip("-").isdigit() or not new.strip():
        raise argparse.ArgumentTypeError(f"expected CHUNK=PROMPT or CHUNK=LABEL (e.g. 10='a blue square'), got "
                                         f"{text!r}")
    new = new.strip()
    return int(index), int(new) if new.isdigit() else new


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    if args.num_videos is None and args.batch != 1:
        sys.exit("error: --batch needs --num-videos (the number of videos to generate)")
    switches = dict(args.switches)
    if len(switches) != len(args.switches):
        sys.exit("error: --switch: one switch per chunk (a chunk is given twice)")
    from ca2vdm.generation.many import generate_videos  # after the arguments: --help answers before torch loads
    from ca2vdm.generation.video_files import GenerationOptions, generate_video
    from ca2vdm.runtime.signals import Stopped, StopSignals

    opts = GenerationOptions(chunks=args.chunks, seed=args.seed, label=args.label, first_frame=args.first_frame,
                             prompt=args.prompt, switches=switches, switch_mode=args.switch_mode,
                             sampler=args.sampler, teacache_thresh=args.teacache_thresh, device=args.device,
                             dtype=args.dtype, codec_path=args.codec_path, compile=args.compile, fps=args.fps,
                             preview=args.preview, verbose=args.verbose, stats=args.stats,
                             overwrite=args.overwrite or args.out is None, lora=args.lora, base=args.base,
                             size=args.size, offload_text_encoder=args.offload_text_encoder)
    checkpoint = args.checkpoint or (None if args.base else DEFAULT_CHECKPOINT)
    out = args.out or DEFAULT_OUT
    scratch = args.out is None and args.num_videos is None and out.exists()  # replaced, and said so
    with StopSignals() as stop:
        try:
            if args.num_videos is not None:
                stats = generate_videos(checkpoint, out, opts, args.num_videos, args.batch, stop)
            else:
                stats = generate_video(checkpoint, out, opts, stop)
        except Stopped as stopped:
            print(stopped_message(stopped, args.chunks), file=sys.stderr)
            sys.exit(128 + stopped.signum)
        except Ca2vdmError as e:
            sys.exit(f"error: {e.for_cli(GENERATE_FLAGS)}")
        except (ValueError, OSError, FloatingPointError) as e:
            sys.exit(f"error: {e}")
    if args.num_videos is not None:
        count = len(stats["videos"])
        print(f"wrote {count} video{'s' * (count != 1)}: " + ", ".join(v["video"] for v in stats["videos"]))
        return
    gpu = f"peak GPU memory {stats['peak_gpu_mb']:.0f} MB, " if "peak_gpu_mb" in stats else ""
    print(f"wrote {stats['video']}: {stats['frames']} frames in {stats['seconds']:.1f}s "
          f"({gpu}peak RSS {stats['peak_rss_mb']:.0f} MB)" + (f", preview {stats['preview']}" if args.preview else ""))
    if scratch:
        print(replaced_scratch(out, args.preview))


def replaced_scratch(out: Path, preview: bool) -> str:
    """What a run without --out did to the scratch video it replaced: said in one line, and the earlier run's
    contact sheet beside it, which shows another video, removed unless this run wrote a new one."""
    sheet = out.with_suffix(".png")
    stale = not preview and sheet.is_file()
    if stale:
        sheet.unlink()
    return (f"replaced the earlier {out}" + (f" and removed its contact sheet {sheet}" if stale else "") +
            ": runs without --out write this scratch file; give --out to keep a video")


def stopped_message(stopped, chunks: int) -> str:
    """One line: which signal stopped the run, and what was kept where."""
    name = signal.Signals(stopped.signum).name
    if stopped.stats is None:
        return f"stopped by {name} before the first chunk was finished; nothing written"
    stats = stopped.stats
    if "videos" in stats:
        return f"stopped by {name}: kept " + ", ".join(f"{len(v['chunks'])} chunks in {v['video']}"
                                                       for v in stats["videos"])
    return (f"stopped by {name}: kept {len(stats['chunks'])} of {chunks} chunks ({stats['frames']} frames) in "
            f"{stats['video']}")


if __name__ == "__main__":
    main()
