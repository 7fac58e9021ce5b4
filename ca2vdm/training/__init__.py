"""Training: one loop (``loop``) for every trainer, each a task (``task``: what is trained: the video DiT in
``diffusion_task``, our autoencoder in ``autoencoder``, a few-step student in ``distill_task`` with its DMD and
trajectory losses (``dmd``), its own long rollouts (``distill_rollout``), the teacher and critic reading a window of
them through their own caches (``distill_window``) and the teacher's recorded trajectories (``ode_pairs``); a task's
model as a LoRA adapter in ``lora``), with its losses (``losses``), self-rollout (``rollout``), the EMA (``ema``),
trackers (``trackers``), the periodic samples every task writes through one writer (``samples``), activation
checkpointing and FSDP applied to a finished model (``parallelize``, ``sharded_state``), and what guards a run:
atomic checkpoint directories and resume (``checkpoint_dirs``, ``run_files``), the run lock (``run_lock``),
preemption (``run_guard``) and safe exports (``export``).

Imports every layer below (sampling for rollouts and sample videos, evaluation for the autoencoder's PSNR); never the
server or a command line.
"""
