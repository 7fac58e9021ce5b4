"""Train a causal video DiT.

    accelerate launch train/train.py --config configs/tiny.yaml [key=value ...] [--resume latest|PATH]
    python train/train.py --config configs/tiny.yaml            # single process works too
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ca2vdm.checkpoint import CheckpointError, CheckpointWriteError, RunLockedError  # noqa: E402
from ca2vdm.config import ConfigError, load_config  # noqa: E402
from ca2vdm.data import DataError  # noqa: E402
from ca2vdm.training import NonFiniteLossError, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="OmegaConf YAML file, e.g. configs/tiny.yaml")
    parser.add_argument("--resume", default=None, help="'latest' (newest checkpoint in train.output_dir) or a "
                        "checkpoint directory")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. train.max_steps=100")
    args = parser.parse_args()
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:  # exit 2, like argparse's own usage errors
        parser.exit(2, f"error: {e}\n")
    try:
        out = train(config, resume=args.resume, progress_bar=not args.no_progress)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    except (DataError, CheckpointError, CheckpointWriteError, NonFiniteLossError, RunLockedError) as e:  # one line
        parser.exit(1, f"error: {e}\n")
    print(f"done: checkpoints in {out / 'checkpoints'}")


if __name__ == "__main__":
    main()
