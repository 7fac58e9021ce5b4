"""Training our detector (:class:`~ca2vdm.evaluation.detector.ShapesDetector`) on a labelled video folder, and the
real clips' Gaussians it ships with (``ca2vdm train-detector``).

Clips of ``frames`` consecutive frames are cut from every video (every ``holdout_every``-th video is held out and
gives the reported accuracy). The loss: cross-entropy on the shape, plus the mean squared error of the auxiliary
head on what drifts in long videos (the foreground colour, the motion, the foreground fraction, the sharpness, each
standardised), so that the features see them too.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ca2vdm.data.clips import DEFAULT_MANIFEST, VIDEO_EXTENSIONS, find_videos, load_labels
from ca2vdm.errors import DataError
from ca2vdm.evaluation.detector import AUX, DetectorConfig, ShapesDetector, save_detector
from ca2vdm.evaluation.frechet import Gaussian
from ca2vdm.evaluation.metrics import foreground_colour, foreground_fraction, motion, sharpness
from ca2vdm.io.video import read_video


def real_clips(root: str | Path, frames: int, resolution: int, clips_per_video: int, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clips (N, 3, T, H, W) in [-1, 1], labels (N,), video index (N,)) from every labelled video under ``root``:
    ``clips_per_video`` clips of ``frames`` consecutive frames each, at positions drawn from ``seed``."""
    root = Path(root)
    labels = load_labels(root / DEFAULT_MANIFEST) if (root / DEFAULT_MANIFEST).is_file() else {}
    videos = [p for p in find_videos(root, VIDEO_EXTENSIONS) if p.relative_to(root).as_posix() in labels]
    if not videos:
        raise DataError(f"{root} holds no labelled videos ({DEFAULT_MANIFEST}); make some with "
                        f"ca2vdm make-data --out {root}")
    gen = torch.Generator().manual_seed(seed)
    clips, classes, owner = [], [], []
    for i, path in enumerate(videos):
        video = read_video(path, size=resolution)  # (3, T, H, W)
        for start in torch.randint(video.shape[1] - frames + 1, (clips_per_video,), generator=gen).tolist():
            clips.append(video[:, start:start + frames])
            classes.append(labels[path.relative_to(root).as_posix()])
            owner.append(i)
    return torch.stack(clips), torch.tensor(classes), torch.tensor(owner)


def aux_targets(clips: torch.Tensor) -> torch.Tensor:
    """(N, len(AUX)) what the auxiliary head predicts, measured on each clip (a colour of 0 where no shape is)."""
    rows = []
    for clip in clips:
        colour = torch.nan_to_num(torch.as_tensor(foreground_colour(clip), dtype=torch.float32))
        rows.append(torch.cat([colour, torch.tensor([motion(clip), foreground_fraction(clip), sharpness(clip)])]))
    return torch.stack(rows)


def real_gaussians(features: torch.Tensor, labels: torch.Tensor) -> dict[str, Gaussian]:
    """The Gaussians of real clips' features: ``"all"``, and one per class index."""
    real = {"all": Gaussian.fit(features)}
    real.update({str(c): Gaussian.fit(features[labels == c]) for c in labels.unique().tolist()})
    return real


def train_detector(root: str | Path, out: str | Path, *, steps: int = 600, batch: int = 64, lr: float = 2e-3,
                   clips_per_video: int = 16, holdout_every: int = 8, seed: int = 0,
                   cfg: DetectorConfig = DetectorConfig(), log=print) -> dict:
    """Train the detector on ``root``'s videos, write it (with the real clips' Gaussians, from every clip) to ``out``;
    return the held-out class accuracy and what it was trained on."""
    torch.manual_seed(seed)
    clips, labels, owner = real_clips(root, cfg.frames, cfg.resolution, clips_per_video, seed)
    held = owner % holdout_every == holdout_every - 1
    targets = aux_targets(clips)
    mean, std = targets[~held].mean(dim=0), targets[~held].std(dim=0).clamp(min=1e-6)
    targets = (targets - mean) / std
    model = ShapesDetector(DetectorConfig(**{**cfg.__dict__, "classes": int(labels.max()) + 1}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    train_idx = torch.nonzero(~held).flatten()
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        pick = train_idx[torch.randint(len(train_idx), (batch,), generator=gen)]
        logits, aux = model.heads(model(clips[pick]))
        loss = F.cross_entropy(logits, labels[pick]) + F.mse_loss(aux, targets[pick])
        for group in optimizer.param_groups:  # cosine decay to 0
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps}: loss {loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        features = torch.cat([model(part) for part in clips.split(256)])
        accuracy = (model.heads(features[held])[0].argmax(dim=1) == labels[held]).float().mean().item()
    info = {"data": str(root), "clips": len(clips), "held_out_clips": int(held.sum()), "held_out_accuracy": accuracy,
            "steps": steps, "batch": batch, "aux": list(AUX)}
    save_detector(out, model, real_gaussians(features, labels), info)
    return info
