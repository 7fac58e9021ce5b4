"""Export a training checkpoint's EMA weights (with config metadata) to one small safetensors file, or turn another
project's Wan weights into ours.

    ca2vdm export runs/demo/checkpoints/step_003000 checkpoints/demo.safetensors
    ca2vdm export runs/latent-demo/checkpoints/step_004400 checkpoints/latent-demo.safetensors \
        --autoencoder checkpoints/ae-shapes128
    ca2vdm export Wan2.1-T2V-1.3B-Diffusers checkpoints/wan-1.3b.safetensors --vae Wan2.1-T2V-1.3B-Diffusers/vae
    ca2vdm export self_forcing_dmd.pt checkpoints/self-forcing.safetensors
    ca2vdm export longlive_base.pt checkpoints/longlive.safetensors --preset longlive --lora lora.pt
    ca2vdm export causal_forcing.pt checkpoints/cf.safetensors model.positions=ring sampler.steps=4

Another project's weights: a diffusers folder (``transformer/config.json`` + ``diffusion_pytorch_model*
.safetensors``), Wan's folder or file, or a Self-Forcing / CausVid / Causal Forcing / LongLive ``.pt``
(docs/models.md). What the files do not record comes from a named size (``--model``: the latent frame size, the text
encoder) and a preset (``--preset``: the sampler's settings, the chunk and window layout of the project's own
inference); ``model.KEY=VALUE`` and ``sampler.KEY=VALUE`` override any of them. Nothing is downloaded.

A latent model's autoencoder must travel with it: ``--autoencoder DIR`` copies the autoencoder the checkpoint
recorded (its save_pretrained folder) to DIR and records DIR relative to the exported file, so the pair works from
any clone (``ca2vdm generate`` looks for the autoencoder beside the weights).

An existing dst is replaced only with ``--overwrite``; the source itself and any file inside a training checkpoint
folder are always refused (:mod:`ca2vdm.training.export`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ca2vdm.cli.args import new_parser
from ca2vdm.config import MODEL_CONFIGS, PRECISIONS
from ca2vdm.config.presets import PRESETS, preset_for
from ca2vdm.errors import CheckpointError, ConfigError, ExportError, SettingError, opt

WAN_SIZES = sorted(name for name, fields in MODEL_CONFIGS.items() if fields.get("arch") == "wan")
FOREIGN_FLAGS = ("preset", "model", "lora", "lora_alpha", "generator", "vae", "overrides")


def ship_autoencoder(src: str, dst: Path, directory: Path, overwrite: bool) -> dict:
    """Copy the recorded autoencoder folder to ``directory``; the codec metadata with its path relative to dst."""
    from ca2vdm.checkpoints.weights import metadata_of
    from ca2vdm.training.export import check_autoencoder_destination

    codec = metadata_of(src).codec
    if codec["kind"] == "pixel":
        sys.exit(f"{src} is a pixel model: it has no autoencoder to ship (drop --autoencoder)")
    if not Path(codec["path"]).is_dir():
        sys.exit(f"{src} recorded its autoencoder at {codec['path']}, which is not a directory here")
    check_autoencoder_destination(directory, codec["path"], overwrite)
    if directory.resolve() != Path(codec["path"]).resolve():
        shutil.copytree(codec["path"], directory, dirs_exist_ok=True)
    return {**codec, "path": os.path.relpath(directory, dst.parent)}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("src", what="the checkpoint being exported",
                help="checkpoint directory or .safetensors file; or another project's Wan weights")
    p.add_output("dst", replace=False, help="output .safetensors file (an existing one only with --overwrite)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="another project's weights: model.* and sampler.* settings to record (model.positions=ring)")
    p.add_argument("--dtype", choices=sorted(PRECISIONS), help="precision of the exported weights (default: fp16; "
                                                               "bf16 for another project's weights)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="another project's weights: whose sampler settings and "
                   "window layout to record (default: longlive with --lora, else by the file name, the known-model "
                   "table of ca2vdm/config/presets.py, else self-forcing for a .pt, wan for Wan's own weights)")
    p.add_argument("--model", choices=WAN_SIZES, help="another project's weights: the named size whose frame size and "
                   "text encoder they are used with (default: wan-1.3b)")
    p.add_input("--lora", type=Path, what="the LoRA (--lora)", help="LongLive's lora.pt, folded into the base weights")
    p.add_setting("--lora-alpha", default=None, kind=float, low=0, low_open=True,
                  help="the LoRA's alpha (default: its rank, as LongLive trains it)")
    p.add_argument("--generator", choices=("generator_ema", "generator", "model"),
                   help="which weights of a .pt (default: generator_ema, else generator, else model)")
    p.add_input("--vae", type=Path, what="the VAE folder (--vae)", help="another project's weights: the Wan VAE "
                "folder (AutoencoderKLWan, save_pretrained) to record as the codec")
    p.add_output("--autoencoder", kind="folder", type=Path,
                 help="latent models: copy their autoencoder to this directory and record it relative to dst")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dst (never the source itself nor "
                                                            "a file inside a training checkpoint folder)")
    return p.parse_intermixed_args(argv)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``model.positions=ring sampler.steps=8`` -> {"model": {"positions": "ring"}, "sampler": {"steps": 8}}."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not value or section not in ("model", "sampler") or not name.isidentifier():
            raise ConfigError(f"override {item!r} is not model.KEY=VALUE or sampler.KEY=VALUE (e.g. "
                              "model.positions=ring)")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def export_foreign(args: argparse.Namespace) -> Path:
    """Another project's weights -> ours (:func:`ca2vdm.checkpoints.formats.export_foreign`)."""
    from ca2vdm.checkpoints.formats import export_foreign as export
    from ca2vdm.runtime.device import DTYPES

    if args.autoencoder:
        raise ExportError(f"{opt('autoencoder')} ships a ca2vdm latent model's autoencoder; another project's Wan "
                          f"weights record their VAE folder with {opt('vae')}")
    src = Path(args.src)
    preset = args.preset or preset_for(src, lora=args.lora is not None)
    vae = args.vae or (src / "vae" if (src / "vae/config.json").is_file() else None)
    codec = {"kind": "diffusers", "path": str(vae.resolve()) if vae else None}
    overrides = parse_overrides(args.overrides)
    cfg, weights = export(src, args.dst, preset=preset, model=args.model or "wan-1.3b", overrides=overrides,
                          lora=args.lora, lora_alpha=args.lora_alpha, generator=args.generator,
                          dtype=DTYPES[args.dtype or "bf16"], codec=codec)
    print(f"read {src} as {weights.format} weights ({cfg.depth} blocks, {cfg.hidden_size} wide); recorded the "
          f"{preset} preset's sampler settings and window (chunks of {cfg.chunk_frames}, {cfg.max_context_frames} "
          f"frames of context, {cfg.sink_frames} sinks, {cfg.positions} positions)" + (
              "" if vae else "; no VAE folder given (--vae): record it before generating"))
    return Path(args.dst)


def _ours(src: str) -> bool:
    """Whether ``src`` is a checkpoint of ours (a weights file with its config, or a training checkpoint)."""
    from ca2vdm.checkpoints.weights import read_metadata

    try:
        read_metadata(src)
    except CheckpointError:
        return False
    return True


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    from ca2vdm.checkpoints.weights import export_weights  # after the arguments: --help answers before torch loads
    from ca2vdm.runtime.device import DTYPES
    from ca2vdm.training.export import check_export_destination

    try:
        check_export_destination(args.src, args.dst, args.overwrite)
        if _ours(args.src):
            given = [name for name in FOREIGN_FLAGS if getattr(args, name) not in (None, [])]
            if given:
                raise ExportError(f"{args.src} is a ca2vdm checkpoint: {', '.join(given)} apply to another project's "
                                  "weights only; drop them")
            extra = {"codec": ship_autoencoder(args.src, Path(args.dst), args.autoencoder, args.overwrite)} \
                if args.autoencoder else None
            out = export_weights(args.src, args.dst, DTYPES[args.dtype or "fp16"], extra)
        else:
            out = export_foreign(args)
    except (ExportError, CheckpointError, ConfigError, SettingError) as e:
        sys.exit(f"error: {e.for_cli()}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)" + (f", autoencoder in {args.autoencoder}"
                                                               if args.autoencoder else ""))
