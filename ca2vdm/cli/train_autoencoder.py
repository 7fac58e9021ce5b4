"""Train our own per-frame autoencoder (a diffusers architecture), for latent-space video models.

    accelerate launch train/train_autoencoder.py --config configs/ae-shapes128.yaml [key=value ...] [--resume latest]
    ca2vdm train-autoencoder --config configs/ae-tiny.yaml         # also ca2vdm-train-autoencoder

Same loop, checkpoints, lock and exact resume as train/train.py. Each checkpoint holds an ``autoencoder/`` folder
(save_pretrained, with the measured latent scale): train the video model on it with
``codec.kind=autoencoder codec.path=<run>/checkpoints/step_N/autoencoder``. At the end the reconstruction PSNR on
held-out videos (every ``autoencoder.holdout_every``-th file) is printed and written to ``<run>/reconstruction.json``.
SIGTERM or SIGUSR1 stops the run after the current step with a checkpoint (exit 128 + the signal's number).
"""
from ca2vdm.cli.trainer import main_rank, trainer_command


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config, out = trainer_command(__doc__, "OmegaConf YAML with autoencoder, data and train sections, e.g. "
                                      "configs/ae-tiny.yaml", "autoencoder", argv, prog)
    if not main_rank():
        return
    from ca2vdm.config import CodecConfig
    from ca2vdm.encoders.codec import build_codec
    from ca2vdm.io.results import write_results
    from ca2vdm.training.autoencoder import EXPORT_DIR, AutoencoderTask, heldout_psnr
    from ca2vdm.training.checkpoint_dirs import step_dirs

    exported = step_dirs(out / "checkpoints")[-1] / EXPORT_DIR
    codec = build_codec(CodecConfig(kind="autoencoder", path=str(exported)))
    value = heldout_psnr(codec, AutoencoderTask(config, "cpu").dataset(config, holdout=True))
    report = {"autoencoder": str(exported), "heldout_psnr_db": value, "factor": codec.factor,
              "latent_channels": codec.channels, "scaling_factor": codec.scaling, "shift_factor": codec.shift}
    write_results(out / "reconstruction.json", report)
    print(f"done: held-out reconstruction PSNR {value:.2f} dB; use codec.kind=autoencoder codec.path={exported}")


if __name__ == "__main__":
    main()
