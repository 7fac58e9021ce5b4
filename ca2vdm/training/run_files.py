"""A training run's files outside the model state: atomic checkpoints of the whole state, the metrics log that is cut
back to the checkpoint on resume, and the report of unusable video files.

Checkpoint layout and the ``latest`` lookup are :mod:`ca2vdm.training.checkpoint_dirs`'s; this module is what the
training loop (:mod:`ca2vdm.training.loop`) writes through it, rank by rank.
"""
from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator

from ca2vdm.config import Config
from ca2vdm.errors import CheckpointWriteError, opt
from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.io.write_errors import describe_write_error
from ca2vdm.training import checkpoint_dirs, sharded_state
from ca2vdm.training.ema import EMA

SKIPPED_LOG = "skipped_videos.jsonl"


def report_skipped(skipped: list[tuple[str, str]], path: Path, accelerator: Accelerator, total: int | None) -> None:
    """Print one line about unusable video files and list them all in ``path`` (rewritten at start, appended to
    for files that fail while training)."""
    if total is not None:
        path.unlink(missing_ok=True)
    if not skipped:
        return
    with open(path, "a") as f:
        for file, reason in skipped:
            f.write(json.dumps({"file": file, "reason": reason}) + "\n")
    first = "; ".join(f"{file}: {reason}" for file, reason in skipped[:3])
    what = f"skipped {len(skipped)} of {total} video files" if total is not None else \
        f"{len(skipped)} video files failed to decode while training and were replaced by the next video"
    accelerator.print(f"data: {what} (all listed in {path}): {first}", flush=True)


def after_nonfinite(root: Path) -> str:
    """What a run stopped by a non-finite loss keeps, and what to do next."""
    previous = checkpoint_dirs.step_dirs(root)
    if previous:
        return (f"training stopped, the last good checkpoint {previous[-1]} is kept. Lower train.lr, or set "
                "train.nonfinite=skip")
    return (f"training stopped before its first checkpoint, so no checkpoint was written under {root}. Lower "
            f"train.lr (or set train.nonfinite=skip) and start again without {opt('resume')}")


def save_checkpoint(accelerator: Accelerator, ema: EMA, config: Config, root: Path, step: int, task,
                    sharded: sharded_state.ShardedState | None = None) -> Path:
    """Full training state + the task's published weights into ``root/step_<step>``, atomically; prune old ones.
    ``sharded``: the model and optimizer of an FSDP run, gathered into the same files an unsharded run writes."""
    final = root / f"step_{step:06d}"
    staging = checkpoint_dirs.staging_dir(final)
    try:
        if accelerator.is_main_process:
            checkpoint_dirs.discard(staging)  # left over by a run killed while saving
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))  # every rank writes its RNG state, the main rank the rest
        if sharded is not None:
            sharded.save(staging, accelerator.is_main_process)
        published = ema.gathered()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            task.save_weights(staging, published, config, step)
            checkpoint_dirs.publish(staging, final)
    except Exception as e:
        problem, fix = describe_write_error(e, root, "another train.output_dir")  # before the discard frees space
        checkpoint_dirs.discard(staging)
        previous = checkpoint_dirs.step_dirs(root)
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"could not write checkpoint {final}: {problem}; {kept}. {fix}, then rerun "
                                   f"with {opt('resume', 'latest')}") from e
    if accelerator.is_main_process:
        checkpoint_dirs.prune(root, config.train.keep_last)
    accelerator.wait_for_everyone()
    return final


def log_metrics(path: Path, **values) -> None:
    """Append one JSON line of ``values`` to the run's metrics log."""
    with open(path, "a") as f:
        f.write(json.dumps(values) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a killed run may have logged beyond its checkpoint, and a kill during a
    write leaves a torn last line); rewritten atomically so a second kill loses nothing."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn line
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))
