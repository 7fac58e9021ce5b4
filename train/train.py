"""Train a causal video DiT.

    accelerate launch train/train.py --config configs/tiny.yaml [key=value ...] [--resume latest|PATH]
    python train/train.py --config configs/tiny.yaml            # single process works too

SIGTERM or SIGUSR1 (a cluster preempting the job) stops the run after the current step with a checkpoint; it exits
with 128 + the signal's number (143 for SIGTERM) and continues exactly with --resume latest.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from accelerate import PartialState  # noqa: E402

from ca2vdm.cli import load_trainer_config, run_trainer, trainer_parser  # noqa: E402


def main() -> None:
    parser = trainer_parser(__doc__, "OmegaConf YAML file with a model section, e.g. configs/tiny.yaml")
    args = parser.parse_intermixed_args()  # key=value overrides anywhere on the line
    config = load_trainer_config(parser, args, "model")
    out = run_trainer(parser, args, config)
    if PartialState().is_main_process:
        print(f"done: checkpoints in {out / 'checkpoints'}")


if __name__ == "__main__":
    main()
