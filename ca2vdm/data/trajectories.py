"""A teacher's recorded trajectories: the training data of a few-step student's ODE regression (stage 1 of
``train/distill.py``), written by ``ca2vdm make-ode-pairs`` (:mod:`ca2vdm.training.ode_pairs`).

Layout of a trajectory directory::

    index.json                      the teacher, the student's times, the clip's frames, labels, the shards
    shard_<n>.safetensors  ...      "points" (N, P, C, T, H, W) float16 and "labels" (N,) int64

Trajectory i is one clip of the teacher's video (its first frame and the chunks after it) sampled through the KV
cache; ``points[i, j]`` is the whole clip at the student's time ``times[j]`` (``times[0] = 1``: the noise;
``times[-1] = 0``: the teacher's video), each chunk on its own trajectory. Shards are read one item at a time, so
memory does not grow with their number. Every shard is checked when the data is opened (its header, its tensors and
their shapes against the index; a file cut short or damaged), so a bad one is one line naming it and the command that
re-makes it, before training starts.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from ca2vdm.errors import DataError

INDEX_NAME = "index.json"
SETTINGS_NAME = ".ode_pairs.json"  # written first by the recorder: marks an unfinished directory as ours


def read_trajectory_index(root: str | os.PathLike) -> dict:
    """The index of a trajectory directory, with a clear error when it is not a finished one."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        unfinished = (Path(root) / SETTINGS_NAME).is_file()
        raise DataError(f"data.root={root} holds no {INDEX_NAME}: " + (
            "its recording was stopped; finish it with ca2vdm make-ode-pairs ... --resume" if unfinished else
            f"record the teacher's trajectories first: ca2vdm make-ode-pairs --checkpoint TEACHER --out {root}"))
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path} cannot be read ({error}); record the trajectories again") from None


def shard_shape(index: dict) -> tuple[int, ...]:
    """(P, C, T, H, W): one trajectory of a recording with these settings (its index, or its settings file)."""
    model = index["model_config"]
    return len(index["times"]), model["in_channels"], index["frames"], model["resolution"], model["resolution"]


def shard_problem(path: Path, count: int, shape: tuple[int, ...]) -> str | None:
    """Why ``path`` is not a shard of ``count`` trajectories of ``shape`` (P, C, T, H, W): missing, empty, damaged or
    cut short (its header does not cover the file), other tensors, other shapes; None when it is one."""
    if not path.is_file():
        return "is missing"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        with safe_open(str(path), framework="pt") as f:
            names = sorted(f.keys())
            if names != ["labels", "points"]:
                return f"holds the tensors {names}, not points and labels"
            points, labels = f.get_slice("points").get_shape(), f.get_slice("labels").get_shape()
    except (SafetensorError, OSError) as e:
        return f"is damaged or cut short ({str(e).split(':')[-1].strip()})"
    if list(points) != [count, *shape] or list(labels) != [count]:
        return f"holds points {list(points)} and labels {list(labels)}, not {[count, *shape]} and [{count}]"
    return None


def remake_command(root: str | os.PathLike, index: dict) -> str:
    """The command that records a damaged or missing shard of ``root`` again (keeping the sound ones)."""
    words = ["ca2vdm", "make-ode-pairs", "--checkpoint", index["teacher"], "--out", str(root), "--videos",
             index["videos"], "--steps", index["steps"], "--null-share", index["null_share"], "--seed", index["seed"],
             "--shard-size", index["shard_size"], "--resume"]
    return shlex.join(map(str, words))


class TrajectoryDataset(Dataset):
    """Items {"points": (P, C, T, H, W) float32, "label": long} of a trajectory directory (the loop's data contract:
    ``skipped``, ``videos``, ``set_epoch``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.index = read_trajectory_index(root)
        self.entries = [(shard, row) for shard, count in self.index["shards"] for row in range(count)]
        self.videos = [f"trajectory {i}" for i in range(len(self.entries))]
        self.skipped: list[tuple[str, str]] = []
        if not self.entries:
            raise DataError(f"{self.root} holds no trajectories; record some with ca2vdm make-ode-pairs")
        try:
            shape = shard_shape(self.index)
            shards = [(str(name), int(count)) for name, count in self.index["shards"]]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{self.root / INDEX_NAME} is not a trajectory index ({type(e).__name__}: {e}); record "
                            "the trajectories again with ca2vdm make-ode-pairs") from None
        for name, count in shards:
            problem = shard_problem(self.root / name, count, shape)
            if problem:
                raise DataError(f"data.root={self.root}: the shard {name} {problem}; re-make it (the sound shards are "
                                f"kept): {remake_command(self.root, self.index)}")

    def set_epoch(self, epoch: int) -> None:
        """Nothing changes between epochs (the loop's sampler reorders the items)."""

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard, row = self.entries[index]
        with safe_open(str(self.root / shard), framework="pt") as f:
            points, label = f.get_slice("points")[row:row + 1][0], f.get_slice("labels")[row:row + 1][0]
        return {"points": points.float(), "label": label}
