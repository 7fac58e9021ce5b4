"""Train a causal video DiT.

    accelerate launch train/train.py --config configs/tiny.yaml [key=value ...] [--resume latest|PATH]
    ca2vdm-train --config configs/tiny.yaml            # single process works too

SIGTERM or SIGUSR1 (a cluster preempting the job) stops the run after the current step with a checkpoint; it exits
with 128 + the signal's number (143 for SIGTERM) and continues exactly with --resume latest.
"""
from ca2vdm.cli.trainer import load_trainer_config, main_rank, run_trainer, trainer_parser


def main() -> None:
    parser = trainer_parser(__doc__, "OmegaConf YAML file with a model section, e.g. configs/tiny.yaml")
    args = parser.parse_intermixed_args()  # key=value overrides anywhere on the line
    config = load_trainer_config(parser, args, "model")
    out = run_trainer(parser, args, config, "model")
    if main_rank():
        print(f"done: checkpoints in {out / 'checkpoints'}")


if __name__ == "__main__":
    main()
