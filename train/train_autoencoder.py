"""Train our own per-frame autoencoder (a diffusers architecture), for latent-space video models.

    accelerate launch train/train_autoencoder.py --config configs/ae-shapes128.yaml [key=value ...] [--resume latest]

Same loop, checkpoints, lock and exact resume as train/train.py. Each checkpoint holds an ``autoencoder/`` folder
(save_pretrained, with the measured latent scale): train the video model on it with
``codec.kind=autoencoder codec.path=<run>/checkpoints/step_N/autoencoder``. At the end the reconstruction PSNR on
held-out videos (every ``autoencoder.holdout_every``-th file) is printed and written to ``<run>/reconstruction.json``.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from accelerate import PartialState  # noqa: E402

from ca2vdm.autoencoder import EXPORT_DIR, AutoencoderTask, heldout_psnr  # noqa: E402
from ca2vdm.checkpoint import CheckpointError, CheckpointWriteError, RunLockedError, step_dirs  # noqa: E402
from ca2vdm.codec import CodecConfig, build_codec  # noqa: E402
from ca2vdm.config import ConfigError, load_config  # noqa: E402
from ca2vdm.data import DataError  # noqa: E402
from ca2vdm.training import NonFiniteLossError, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="OmegaConf YAML with autoencoder, data and train sections")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint directory")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. train.max_steps=100")
    args = parser.parse_args()
    try:
        config = load_config(args.config, args.overrides)
        out = train(config, resume=args.resume, progress_bar=not args.no_progress, task_type=AutoencoderTask)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    except (DataError, CheckpointError, CheckpointWriteError, NonFiniteLossError, RunLockedError) as e:
        parser.exit(1, f"error: {e}\n")
    if not PartialState().is_main_process:
        return
    exported = step_dirs(out / "checkpoints")[-1] / EXPORT_DIR
    codec = build_codec(CodecConfig(kind="autoencoder", path=str(exported)))
    value = heldout_psnr(codec, AutoencoderTask(config, "cpu").dataset(config, holdout=True))
    report = {"autoencoder": str(exported), "heldout_psnr_db": value, "factor": codec.factor,
              "latent_channels": codec.channels, "scaling_factor": codec.scaling, "shift_factor": codec.shift}
    (out / "reconstruction.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done: held-out reconstruction PSNR {value:.2f} dB; use codec.kind=autoencoder codec.path={exported}")


if __name__ == "__main__":
    main()
