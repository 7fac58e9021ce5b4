"""What guards a training run from outside its loop: one run per output directory, and an orderly stop on a signal.

Lock: the main rank takes the output directory's :class:`~ca2vdm.training.run_lock.RunLock` and shares the outcome, so a
refused launch fails on every rank (no rank is left waiting for the others).

Preemption: SIGTERM (what SLURM and Kubernetes send before killing a job) and SIGUSR1 (what a cluster sends to warn
ahead, e.g. SLURM's ``--signal=USR1@120``) only set a flag. The loop asks :meth:`RunGuard.agree` once per optimizer
step whether any rank saw one: the flag rides in the all-reduce that already averages the logged loss, so the check
costs no extra collective, and every rank stops after the same step even when the signal reached only some of them
(a signal that lands in the middle of a step's collectives therefore cannot leave the ranks one step apart). The
loop then saves a checkpoint at that step, the lock is released, and :class:`Preempted` is raised; ``--resume
latest`` continues exactly as if the run had not stopped.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ca2vdm.errors import Ca2vdmError, opt
from ca2vdm.runtime.signals import StopSignals
from ca2vdm.training import run_lock

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what a cluster sends before it stops a job


class Preempted(Ca2vdmError):
    """Training stopped on a signal after saving a checkpoint; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}: checkpoint {checkpoint} saved; "
                         f"continue with {opt('resume', 'latest')}")


class RunGuard:
    """Context manager around a run: takes the output directory's lock on entry (every rank raises its error) and
    catches :data:`PREEMPTION_SIGNALS` until exit, when the lock is released and the previous handlers are restored.
    Signals can only be caught in the main thread: a run in another thread ends on them as before."""

    def __init__(self, accelerator: Accelerator, output_dir: str | Path):
        self.accelerator = accelerator
        self.lock = run_lock.RunLock(output_dir)
        self.signals = StopSignals(PREEMPTION_SIGNALS)
        self._catching = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> "RunGuard":
        error = None
        if self.accelerator.is_main_process:
            try:
                self.lock.acquire()
            except Exception as e:  # whatever it is, the other ranks must stop too
                error = e
        [error] = broadcast_object_list([error])
        if error is not None:
            raise error
        if self._catching:
            self.signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._catching:
            self.signals.__exit__(*exc)
        self.lock.release()

    def agree(self, loss: torch.Tensor) -> tuple[list[float], int]:
        """(the loss averaged over ranks, as a list: one value, or one per element of a 1-D ``loss``; the stop signal
        if any rank received one, else 0), from one all-reduce. The signal's number takes a second collective, only
        when a stop is agreed."""
        signum = self.signals.signum or 0
        flag = torch.tensor([float(signum > 0)], device=loss.device)
        *means, stop = self.accelerator.reduce(torch.cat([loss.detach().float().reshape(-1), flag]), "mean").tolist()
        if stop == 0:
            return means, 0
        signums = self.accelerator.gather(torch.tensor([signum], device=loss.device))  # (num_processes,)
        return means, int(signums.max())
