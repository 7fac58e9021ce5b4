"""Train a causal video DiT.

    accelerate launch train/train.py --config configs/tiny.yaml [key=value ...] [--resume latest|PATH]
    ca2vdm train --config configs/tiny.yaml            # single process works too (also ca2vdm-train)

SIGTERM or SIGUSR1 (a cluster preempting the job) stops the run after the current step with a checkpoint; it exits
with 128 + the signal's number (143 for SIGTERM) and continues exactly with --resume latest.
"""
from ca2vdm.cli.trainer import main_rank, trainer_command


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, out = trainer_command(__doc__, "OmegaConf YAML file with a model section, e.g. configs/tiny.yaml", "model",
                             argv, prog)
    if main_rank():
        print(f"done: checkpoints in {out / 'checkpoints'}")


if __name__ == "__main__":
    main()
