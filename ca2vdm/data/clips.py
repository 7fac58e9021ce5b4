"""Dataset of fixed-length clips sampled from a folder of videos."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ca2vdm.data.captions import load_captions
from ca2vdm.errors import DataError
from ca2vdm.io.video import open_video, read_frames, resize_center_crop

logger = logging.getLogger("ca2vdm.data")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv")
DEFAULT_MANIFEST = "labels.jsonl"
_REASONS_SHOWN = 3


def visible_files(root: Path) -> list[Path]:
    """Files under `root`, sorted by their path relative to it; hidden files/folders ignored.

    Symbolic links to folders are followed, each real folder once (in sorted order), so a folder linked twice is
    listed once and a link to an ancestor does not loop.
    """
    seen: set[tuple[int, int]] = set()
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        identity = os.stat(folder)
        if (identity.st_dev, identity.st_ino) in seen:
            subfolders.clear()
            continue
        seen.add((identity.st_dev, identity.st_ino))
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found += [Path(folder, name) for name in files if not name.startswith(".")]
    found = [path for path in found if path.is_file()]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def find_videos(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """All files under `root` with one of `extensions`, as :func:`visible_files` lists them."""
    suffixes = {ext.lower() for ext in extensions}
    return [path for path in visible_files(root) if path.suffix.lower() in suffixes]


def load_labels(manifest: Path) -> dict[str, int]:
    """Read {relative file path: label} from a JSONL manifest or a CSV with header `file,label`."""
    try:
        text = manifest.read_text()
    except OSError as error:
        raise ValueError(f"cannot read label manifest {manifest}: {error}") from error
    if manifest.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and not {"file", "label"} <= set(rows[0]):
            raise ValueError(f"label manifest {manifest} needs a header row `file,label`")
    else:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise ValueError(
                f"label manifest {manifest} is not valid JSONL ({error}); each line must be "
                '{"file": "relative/path.mp4", "label": 0}'
            ) from error
    labels = {}
    for line, row in enumerate(rows, start=1):
        try:
            label = int(row["label"])
            name = Path(row["file"]).as_posix()
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"label manifest {manifest}, entry {line}: expected a file and an integer label, got {row!r}"
            ) from error
        if label < 0:
            raise ValueError(f"label manifest {manifest}, entry {line}: label must be >= 0, got {label}")
        labels[name] = label
    return labels



def _summarise(skipped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_REASONS_SHOWN])
    more = f"; and {len(skipped) - _REASONS_SHOWN} more" if len(skipped) > _REASONS_SHOWN else ""
    return shown + more


# With attention sinks, the share of clips whose run starts right after the sinks. Only these show the layout of a
# video's first chunks, where the ring of the KV cache is not yet full and no frame lies between sinks and ring
# (``training.chunk_weights`` trains those chunks on them alone); the others show a ring at any distance.
CONTIGUOUS_SHARE = 0.5


class ClipDataset(Dataset):
    """Clip sampling shared by the video and latent datasets: item i of an epoch is a clip of video i % n (n videos,
    ``clips_per_video`` items each) at a position drawn from (seed, epoch, i). Items hold "video", "label" and
    "contiguous" (:meth:`contiguous`)."""
    videos: list
    clips_per_video: int
    seed: int
    num_frames: int
    frame_stride: int
    epoch: int = 0
    sink_frames: int = 0        # attention sinks: every clip starts with the video's first sink_frames frames

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds clip positions."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def clip_position(self, index: int) -> float:
        """Where item ``index``'s clip starts, as a fraction in [0, 1) of the possible start frames; with sinks, 0 (the
        run right after them) for a share ``CONTIGUOUS_SHARE`` of the items."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.sink_frames and rng.random() < CONTIGUOUS_SHARE:
            return 0.0
        return rng.random()

    def contiguous(self, position: float) -> bool:
        """Whether the clip at ``position`` is a run of consecutive (every ``frame_stride``-th) frames: always without
        sinks, with sinks when the run starts right after them."""
        return not self.sink_frames or position == 0.0

    def clip_segments(self, position: float, length: int) -> list[tuple[int, int]]:
        """Frame ranges (start, stop) of a clip in a video of ``length`` frames, each read every ``frame_stride``-th
        frame: one range at ``position``, or with ``sink_frames`` = k the video's first k frames and then a run of the
        clip's other frames at ``position`` among the starts after them (the layout of the KV cache with sinks).
        Every clip covers ``clip_span`` frames of the video."""
        first, stride = self.sink_frames * self.frame_stride, self.frame_stride
        run = (self.num_frames - self.sink_frames - 1) * stride + 1
        start = first + int(position * (length - first - run + 1))
        return ([(0, first)] if first else []) + [(start, start + run)]

    def clip_indices(self, position: float, length: int) -> list[int]:
        """The frame indices of :meth:`clip_segments`."""
        return [i for a, b in self.clip_segments(position, length) for i in range(a, b, self.frame_stride)]


class VideoFolderDataset(ClipDataset):
    """Clips of `num_frames` frames (every `frame_stride`-th frame) from videos under `root`.

    Files are found recursively by extension (`extensions`), following symlinked
    folders; other files and hidden files/folders are ignored. A file with a video
    extension that cannot be opened (corrupt, truncated, not a video) or that is
    shorter than one clip is skipped and recorded in `self.skipped` as (path,
    reason); one warning summarises them unless `report_skipped` is False (the
    caller reports them, as `train()` does).

    Labels come from `manifest` (JSONL lines {"file": ..., "label": int} or a
    CSV with header `file,label`, paths relative to `root`; a relative manifest
    path is also looked up under `root`), else from `root/labels.jsonl` if
    present; `self.manifest` is the file used (None: no manifest, every label is
    0). Videos missing from the manifest get label 0.

    The clip start for item i is drawn from np.random.default_rng([seed, epoch, i]),
    so clips are reproducible given (seed, epoch, i); call `set_epoch` every epoch.
    With DataLoader workers, create a new iterator after `set_epoch` (do not use
    persistent_workers), so workers see the new epoch.

    A video that probed fine but fails to decode later is added to `skipped`
    (in the process that hit it) and the item falls back to the next usable
    video in order, at the same relative clip position, so the result depends
    only on (seed, epoch, i) and which files are broken.

    With `holdout_every` = n > 0 the usable videos are split by file order: every
    n-th is held out; `holdout` selects the held-out part instead of the rest.

    With `captions` (a caption manifest, :mod:`ca2vdm.data.captions`) items also
    hold "caption" (str); videos without a caption are skipped, and so are the
    manifest's unusable rows (both listed in `skipped`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int,
        frame_stride: int = 1,
        resolution: int = 32,
        manifest: str | None = None,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        seed: int = 0,
        clips_per_video: int = 1,
        report_skipped: bool = True,
        holdout_every: int = 0,
        holdout: bool = False,
        sink_frames: int = 0,
        captions: str | os.PathLike | None = None,
        caption_problem: Callable[[str], str | None] | None = None,
    ) -> None:
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        if not 0 <= sink_frames < num_frames:
            raise ValueError(f"sink_frames must be in [0, num_frames={num_frames}), got {sink_frames}")
        if num_frames < 1 or frame_stride < 1 or resolution < 1:
            raise ValueError(
                "num_frames, frame_stride and resolution must all be >= 1, got "
                f"{num_frames}, {frame_stride}, {resolution}"
            )
        self.root = Path(root)
        if self.root.is_file():
            raise DataError(f"data.root {self.root} is a file; point data.root at the folder that holds the videos")
        if not self.root.is_dir():
            raise DataError(
                f"video folder {self.root} does not exist; run ca2vdm make-data "
                f"--out {self.root} or point data.root at a folder of videos"
            )
        try:
            os.listdir(self.root)
        except OSError as error:
            raise DataError(
                f"cannot list video folder {self.root}: {error.strerror or error}; fix its permissions "
                "(e.g. chmod a+rx) or point data.root at another folder"
            ) from error
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.resolution = resolution
        self.seed = seed
        self.sink_frames = sink_frames
        self.clips_per_video = clips_per_video  # items per video per epoch (long videos hold many clips)
        self.epoch = 0
        self.clip_span = (num_frames - 1) * frame_stride + 1  # frames one clip covers
        self.skipped: list[tuple[str, str]] = []
        self.videos: list[Path] = []
        self.lengths: list[int] = []  # frames per usable video
        self._failed: set[int] = set()  # indices that failed at read time

        candidates = find_videos(self.root, tuple(extensions))
        for path in candidates:
            self._probe(path)
        if self.skipped and report_skipped:
            logger.warning(
                "skipped %d of %d video files under %s: %s",
                len(self.skipped), len(candidates), self.root, _summarise(self.skipped),
            )
        if not candidates:
            others = [p.relative_to(self.root).as_posix() for p in visible_files(self.root)]
            seen = f"; it holds {len(others)} other files, e.g. {', '.join(others[:3])}" if others else ""
            raise DataError(
                f"no video files in {self.root}: looking for extensions {', '.join(extensions)}{seen}. Fix: "
                f"point data.root at a folder of videos, or run ca2vdm make-data --out {self.root}"
            )
        if holdout_every:  # a split by file order: every holdout_every-th usable video is held out
            keep = [(i % holdout_every == holdout_every - 1) == holdout for i in range(len(self.videos))]
            self.videos = [v for v, k in zip(self.videos, keep) if k]
            self.lengths = [n for n, k in zip(self.lengths, keep) if k]
        if not self.videos:
            details = f" ({_summarise(self.skipped)})" if self.skipped else ""
            raise DataError(
                f"no usable videos in {self.root}: found {len(candidates)} files with extensions "
                f"{', '.join(extensions)}, skipped {len(self.skipped)}{details}. Fix: run "
                f"ca2vdm make-data --out {self.root} or point data.root at a folder "
                f"of videos at least {self.clip_span} frames long"
            )
        self.manifest = self._find_manifest(manifest)
        self.labels, self.num_classes = self._load_labels(self.manifest)
        self.captions = None if captions is None else self._keep_captioned(Path(captions), caption_problem)

    def _keep_captioned(self, manifest: Path, caption_problem: Callable[[str], str | None] | None) -> list[str]:
        """The caption of every usable video; videos without one, or whose caption the model cannot read
        (``caption_problem``: why, or None), and the manifest's bad rows are skipped and listed."""
        table, bad_rows = load_captions(manifest)
        self.skipped += bad_rows
        names = [video.relative_to(self.root).as_posix() for video in self.videos]
        problems = [None if name not in table or caption_problem is None else caption_problem(table[name])
                    for name in names]
        keep = [name in table and problem is None for name, problem in zip(names, problems)]
        self.skipped += [(str(v), f"no caption in {manifest}" if p is None else f"its caption in {manifest} {p}")
                         for v, p, k in zip(self.videos, problems, keep) if not k]
        if not any(keep):
            raise DataError(f"no video under {self.root} has a caption in {manifest} (e.g. {names[0]} has none); "
                            "its file entries must be paths relative to the video folder")
        self.videos, self.lengths, self.labels = ([x for x, k in zip(seq, keep) if k]
                                                  for seq in (self.videos, self.lengths, self.labels))
        return [table[name] for name, k in zip(names, keep) if k]

    def _probe(self, path: Path) -> None:
        try:
            length = len(open_video(path))
        except ValueError as error:
            self.skipped.append((str(path), str(error)))
            return
        if length < self.clip_span:
            self.skipped.append((
                str(path),
                f"too short: {length} frames, a clip needs {self.clip_span} "
                f"(num_frames={self.num_frames}, frame_stride={self.frame_stride})",
            ))
            return
        self.videos.append(path)
        self.lengths.append(length)

    def _find_manifest(self, manifest: str | None) -> Path | None:
        if manifest is None:
            path = self.root / DEFAULT_MANIFEST
            return path if path.is_file() else None
        path = Path(manifest)
        if not path.is_file() and not path.is_absolute() and (self.root / path).is_file():
            path = self.root / path
        if not path.is_file():
            raise DataError(f"label manifest {manifest} not found (also looked under {self.root})")
        return path

    def _load_labels(self, path: Path | None) -> tuple[list[int], int]:
        if path is None:
            return [0] * len(self.videos), 0
        try:
            table = load_labels(path)
        except ValueError as error:
            raise DataError(str(error)) from error
        names = [video.relative_to(self.root).as_posix() for video in self.videos]
        missing = [name for name in names if name not in table]
        if missing:
            logger.warning(
                "%d of %d videos are not in %s and get label 0, e.g. %s",
                len(missing), len(names), path, ", ".join(missing[:_REASONS_SHOWN]),
            )
        num_classes = max(table.values()) + 1 if table else 0
        return [table.get(name, 0) for name in names], num_classes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return {"video": (3, T, R, R) float32 in [-1, 1], "label": long scalar, "contiguous": bool scalar} (and
        "caption": str with captions)."""
        position = self.clip_position(index)  # one draw places the clip in whichever video ends up being read
        for offset in range(len(self.videos)):
            j = (index % len(self.videos) + offset) % len(self.videos)
            if j in self._failed:
                continue
            try:
                frames = read_frames(self.videos[j], self.clip_indices(position, self.lengths[j]))  # (T, H, W, 3)
            except ValueError as error:
                self._failed.add(j)
                self.skipped.append((str(self.videos[j]), f"failed at read time: {error}"))
                logger.warning("cannot decode %s, using the next video instead: %s", self.videos[j], error)
                continue
            item = {
                "video": resize_center_crop(frames, self.resolution),  # (3, T, R, R)
                "label": torch.tensor(self.labels[j], dtype=torch.long),
                "contiguous": torch.tensor(self.contiguous(position)),
            }
            if self.captions is not None:
                item["caption"] = self.captions[j]
            return item
        raise RuntimeError(
            f"none of the {len(self.videos)} videos in {self.root} could be decoded; "
            "see dataset.skipped for the reasons"
        )
