"""The ``ca2vdm`` command: one entry point with a subcommand per tool, as ``accelerate`` and ``huggingface-cli`` have.

    ca2vdm --help                          # every subcommand, one line each
    ca2vdm generate --chunks 20            # ca2vdm SUB --help prints that tool's full help
    ca2vdm eval long-video outputs/long_video.mp4 --data data/shapes
    python -m ca2vdm.cli.main generate     # the same without the console script
    accelerate launch -m ca2vdm.cli.main encode-latents --config ...   # several processes

Only the chosen subcommand's module is imported; its parser is built from torch-free modules and the heavy imports
come after parsing, so every ``--help`` answers before torch loads. Each subcommand is a module of :mod:`ca2vdm.cli`
with ``main(argv, prog)``.
"""
from __future__ import annotations

import sys
from importlib import import_module

PROG = "ca2vdm"
# subcommand -> (its module, one line for the listing); a group (eval) maps to its own table of subcommands
EVALS = {
    "quality": ("ca2vdm.cli.eval_quality", "Frechet distance and class accuracy of a checkpoint's videos, per chunk"),
    "prompts": ("ca2vdm.cli.eval_prompts", "a text model's prompt adherence, prompt switches and their cost"),
    "long-video": ("ca2vdm.cli.eval_long_video", "drift of a long video, chunk by chunk, against the training data"),
}
COMMANDS: dict[str, tuple[str | dict, str]] = {
    "generate": ("ca2vdm.cli.generate", "generate a long video chunk by chunk with the shared KV cache"),
    "serve": ("ca2vdm.cli.serve", "serve the live demo page in the browser"),
    "train": ("ca2vdm.cli.train", "train a causal video DiT from a YAML config"),
    "distill": ("ca2vdm.cli.distill", "distil a few-step causal student from a video model (ODE regression, DMD)"),
    "train-autoencoder": ("ca2vdm.cli.train_autoencoder", "train a per-frame autoencoder for latent-space models"),
    "calibrate": ("ca2vdm.cli.calibrate", "calibrate TeaCache or MagCache for a checkpoint (stored in its metadata)"),
    "encode-latents": ("ca2vdm.cli.encode_latents", "encode a video folder into latent shards once, for training"),
    "export": ("ca2vdm.cli.export", "export a training checkpoint's EMA weights to one small safetensors file"),
    "merge-lora": ("ca2vdm.cli.merge_lora", "fold a LoRA adapter into its base checkpoint"),
    "make-data": ("ca2vdm.cli.make_data", "write a synthetic bouncing-shapes video dataset (or captioned shapes)"),
    "make-ode-pairs": ("ca2vdm.cli.make_ode_pairs", "record a teacher's trajectories for a student's ODE regression"),
    "train-detector": ("ca2vdm.cli.train_detector", "train the video feature network behind 'ca2vdm eval quality'"),
    "eval": (EVALS, "evaluate videos or a checkpoint: quality, prompts, long-video"),
}


def listing(prog: str, table: dict[str, tuple[str | dict, str]]) -> str:
    """The help of ``prog``: usage, then one line per subcommand (a group's subcommands each on their own line)."""
    rows = []
    for name, (target, line) in table.items():
        if isinstance(target, dict):
            rows += [(f"{name} {sub}", sub_line) for sub, (_, sub_line) in target.items()]
        else:
            rows.append((name, line))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"usage: {prog} COMMAND [ARGS ...]", "",
             "Long videos from a causal video diffusion transformer with a shared, bounded KV cache.",
             f"Each command's full help: {prog} COMMAND --help.", "", "commands:"]
    lines += [f"  {name:<{width}}{line}" for name, line in rows]
    return "\n".join(lines) + "\n"


def dispatch(argv: list[str], prog: str, table: dict[str, tuple[str | dict, str]]) -> None:
    """Run the subcommand ``argv[0]`` of ``table`` with the rest of ``argv``; the listing for ``-h`` / ``--help``."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(listing(prog, table))
        return
    if not argv or argv[0] not in table:
        sys.stderr.write(listing(prog, table).split("\n\n")[0] + "\n")
        problem = f"unknown command {argv[0]!r}" if argv else "a command is required"
        sys.stderr.write(f"{prog}: error: {problem} (choose from {', '.join(table)}; {prog} --help lists them)\n")
        raise SystemExit(2)
    name, rest = argv[0], argv[1:]
    target = table[name][0]
    if isinstance(target, dict):
        dispatch(rest, f"{prog} {name}", target)
    else:
        import_module(target).main(rest, prog=f"{prog} {name}")


def main(argv: list[str] | None = None) -> None:
    """``ca2vdm COMMAND [ARGS ...]``."""
    dispatch(sys.argv[1:] if argv is None else list(argv), PROG, COMMANDS)


if __name__ == "__main__":
    main()
