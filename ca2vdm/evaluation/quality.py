"""Reference-free quality of generated videos (``ca2vdm eval quality``): the Frechet distance between generated
and real clips in a detector's feature space (FVD's formula, :mod:`ca2vdm.evaluation.frechet`), per chunk index so
that drift shows as a curve and over all chunks, and the share of clips the detector names with the label asked for.

Videos are made through the Python API (:class:`~ca2vdm.generation.api.Pipeline`: the checkpoint's own sampler
settings unless overridden), ``videos`` of them with seeds ``seed, seed + 1, ...``; with ``label`` None they cycle
through the classes (video i has label i mod classes) and are compared with all real clips, otherwise with the real
clips of that class; videos of every class are also measured class by class (``per_label``: each class's videos
against its own real clips). Each chunk (the first frame excluded) is one clip.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ca2vdm.errors import SettingError
from ca2vdm.evaluation.detector import Detector
from ca2vdm.evaluation.frechet import Gaussian, frechet_distance
from ca2vdm.generation.api import Pipeline


def generated_clips(pipe: Pipeline, videos: int, chunks: int, label: int | None, seed: int, batch: int = 16
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(clips (videos, chunks, 3, L, H, W) in [-1, 1], labels (videos,), seconds per chunk of one video)."""
    classes = pipe.model.cfg.num_classes
    labels = [label if label is not None or not classes else i % classes for i in range(videos)]
    out, seconds = [None] * videos, 0.0
    for wanted in sorted(set(labels), key=str):
        rows = [i for i in range(videos) if labels[i] == wanted]
        for part in [rows[i:i + batch] for i in range(0, len(rows), batch)]:
            tic = time.perf_counter()
            made = [c.pixels for c in pipe.generate(chunks, label=wanted, seed=[seed + i for i in part],
                                                    batch=len(part)) if c.index >= 0]
            seconds += time.perf_counter() - tic
            video = torch.from_numpy(np.stack(made, axis=1))  # (B, K, L, H, W, 3) uint8
            for row, i in enumerate(part):
                out[i] = video[row].permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (K, 3, L, H, W)
    return torch.stack(out), torch.tensor([-1 if x is None else x for x in labels]), seconds / (videos * chunks)


def evaluate_quality(pipe: Pipeline, detector: Detector, videos: int, chunks: int, label: int | None = None,
                     seed: int = 0, real: dict[str, Gaussian] | None = None) -> dict:
    """The figures of ``videos`` videos of ``chunks`` chunks (see the module docstring). ``real``: the real clips'
    Gaussians ("all" and per class index); by default the detector's own."""
    real = detector.real if real is None else real
    key = "all" if label is None else str(label)
    if key not in real:
        raise SettingError("label", label, f"the real clips have no class {label} ({', '.join(sorted(real))})")
    if videos < 2:
        raise SettingError("videos", videos, "a Frechet distance needs at least 2 videos")
    clips, labels, seconds = generated_clips(pipe, videos, chunks, label, seed)
    features = torch.stack([detector.features(clips[:, k]) for k in range(chunks)], dim=1)  # (N, K, D)
    per_chunk = []
    for k in range(chunks):
        row = {"chunk": k, "frechet_distance": frechet_distance(Gaussian.fit(features[:, k]), real[key])}
        row.update(_accuracy(detector, features[:, k], labels))
        per_chunk.append(row)
    report = {"videos": videos, "chunks": chunks, "label": label, "seed": seed, "detector": detector.name,
              "frechet_distance": frechet_distance(Gaussian.fit(features.flatten(0, 1)), real[key]),
              **_accuracy(detector, features.flatten(0, 1), labels.repeat_interleave(chunks)),
              "per_chunk": per_chunk, "seconds_per_chunk": seconds, "sampler": pipe.settings.to_dict()}
    if label is None and (labels >= 0).any():  # the same videos, each class against its own real clips
        report["per_label"] = {str(c): _class_figures(detector, features[labels == c], c, real)
                               for c in labels.unique().tolist()}
    return report


def _class_figures(detector: Detector, features: torch.Tensor, label: int, real: dict[str, Gaussian]) -> dict:
    """The figures of one class's videos (features (n, K, D)): their Frechet distance to that class's real clips
    (all chunks pooled; None where the real clips have no such class) and their class accuracy."""
    pooled = features.flatten(0, 1)
    distance = frechet_distance(Gaussian.fit(pooled), real[str(label)]) if str(label) in real else None
    return {"videos": features.shape[0], "frechet_distance": distance,
            **_accuracy(detector, pooled, torch.full((len(pooled),), label))}


def _accuracy(detector: Detector, features: torch.Tensor, labels: torch.Tensor) -> dict:
    """{"class_accuracy": the share of labelled clips the detector names with their label} (None without labels or
    a classifying detector)."""
    known = labels >= 0
    if not detector.classifies or not known.any():
        return {"class_accuracy": None}
    return {"class_accuracy": (detector.classify(features[known]) == labels[known]).float().mean().item()}
