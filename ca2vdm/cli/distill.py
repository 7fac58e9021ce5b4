"""Distil a few-step causal student from a video model (Self-Forcing's DMD over the shared KV cache).

    ca2vdm make-ode-pairs --checkpoint checkpoints/demo.safetensors --out data/ode-demo --videos 256
    accelerate launch train/distill.py --config configs/distill-demo.yaml [key=value ...] [--resume latest|PATH]
    ca2vdm distill --config configs/distill-demo.yaml     # single process works too (also ca2vdm-distill)

Stage 1 (``distill.ode_steps`` steps): ODE regression on the teacher's recorded trajectories (``data.root``); stage 2:
DMD on the student's own rollouts, a critic stepped every step and the student every ``distill.critic_ratio``-th.
Same loop, lock, atomic checkpoints and exact resume as train/train.py; each checkpoint's ``ema.safetensors`` is a
student that samples with its own step count everywhere (``infer/long_video.py --checkpoint``). SIGTERM or SIGUSR1
stops the run after the current step with a checkpoint (exit 128 + the signal's number). docs/distillation.md.
"""
from ca2vdm.cli.trainer import main_rank, trainer_command


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, out = trainer_command(__doc__, "OmegaConf YAML with distill, data and train sections, e.g. "
                                 "configs/distill-demo.yaml", "distill", argv, prog)
    if main_rank():
        print(f"done: checkpoints in {out / 'checkpoints'}; export the student with ca2vdm export")


if __name__ == "__main__":
    main()
