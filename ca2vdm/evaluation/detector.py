"""Feature networks for reference-free video quality: our small detector trained on the synthetic shapes, or a
TorchScript I3D file (the network FVD's implementations use), behind one interface (:class:`Detector`).

``ShapesDetector`` is a small 3-D convolutional network over clips of ``frames`` frames (one chunk) of 32x32 pixels.
It is trained (``ca2vdm train-detector``, :mod:`ca2vdm.evaluation.detector_training`) to name the shape and to
predict what drifts in long videos (the shape's colour, its size, the motion, the sharpness); its ``features`` (the
layer both heads read) are the space of the Frechet distance. Its file also holds the Gaussians of real clips'
features (all of them, and per class), so an evaluation needs no data. An I3D file gives features only: real clips
come from ``--data`` then, and there is no class accuracy.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from ca2vdm.errors import CheckpointError
from ca2vdm.evaluation.frechet import Gaussian
from ca2vdm.io.atomic import save_tensors_atomic

AUX = ("colour_r", "colour_g", "colour_b", "motion", "foreground", "sharpness")  # what the auxiliary head predicts


@dataclass(frozen=True)
class DetectorConfig:
    frames: int = 4         # frames per clip (a chunk of the demo model)
    resolution: int = 32    # clips are resized to this
    width: int = 32         # channels of the first convolution (doubled once)
    features: int = 32      # size of the feature vector (the Frechet distance's space)
    classes: int = 3


class ShapesDetector(nn.Module):
    """(N, 3, T, H, W) clips in [-1, 1] -> features (N, D); class logits and auxiliary predictions from them."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        layers, channels = [], [3, w, w, 2 * w, 2 * w]
        for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
            stride = (1, 1, 1) if i == 0 else (2 if i == 3 else 1, 2, 2)  # 32 -> 4 pixels, T -> T / 2
            layers += [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2 * w, cfg.features))
        self.classes = nn.Linear(cfg.features, cfg.classes)
        self.aux = nn.Linear(cfg.features, len(AUX))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.body(clips)  # (N, D)

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (N, classes), auxiliary predictions (N, len(AUX))) of features (N, D)."""
        return self.classes(F.silu(features)), self.aux(F.silu(features))


def save_detector(path: str | Path, model: ShapesDetector, real: dict[str, Gaussian], extra: dict) -> None:
    """Weights, config and the real clips' Gaussians (``real``: "all" and one per class index) in one file."""
    tensors = {f"model.{k}": v.detach().float().contiguous() for k, v in model.state_dict().items()}
    for name, g in real.items():
        tensors[f"real.{name}.mean"], tensors[f"real.{name}.cov"] = g.mean.float(), g.cov.float()
    save_tensors_atomic(Path(path), tensors, {"detector_config": json.dumps(asdict(model.cfg)),
                                              "info": json.dumps(extra)})


class Detector:
    """Features (and, for ours, class predictions) of clips, and the real clips' Gaussians if the file has them."""

    def __init__(self, module: nn.Module, resolution: int | None, frames: int | None, real: dict[str, Gaussian],
                 classifies: bool, name: str):
        self.module, self.resolution, self.frames, self.real = module.eval(), resolution, frames, real
        self.classifies, self.name = classifies, name

    def _prepare(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, H, W) in [-1, 1], resized to the detector's resolution when it has one."""
        if self.resolution is not None and clips.shape[-1] != self.resolution:
            n, c, t = clips.shape[:3]
            frames = clips.transpose(1, 2).reshape(n * t, c, *clips.shape[3:])
            frames = F.interpolate(frames, size=(self.resolution, self.resolution), mode="area")
            clips = frames.reshape(n, t, c, self.resolution, self.resolution).transpose(1, 2)
        return clips.float()

    @torch.no_grad()
    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, D) features of (N, 3, T, H, W) clips in [-1, 1]."""
        clips = self._prepare(clips)
        if isinstance(self.module, ShapesDetector):
            return self.module(clips)
        return self.module(clips, rescale=False, resize=True, return_features=True)  # FVD's I3D convention

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) predicted class of each clip (ours only)."""
        return self.module.heads(features)[0].argmax(dim=1)


def load_detector(path: str | Path) -> Detector:
    """Our detector (a .safetensors file written by :func:`save_detector`) or a TorchScript file (I3D)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"detector {path} not found; train ours with ca2vdm train-detector or pass a "
                              "TorchScript I3D file")
    if path.suffix != ".safetensors":
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is how FVD's I3D is published
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"detector {path} is neither our .safetensors detector nor a TorchScript file: "
                                  f"{str(e).splitlines()[0]}") from None
        return Detector(module, None, None, {}, False, path.name)
    try:
        with safe_open(str(path), framework="pt") as f:
            cfg = DetectorConfig(**json.loads(f.metadata()["detector_config"]))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # not a detector file, damaged, or written by another version
        raise CheckpointError(f"detector {path} cannot be read ({type(e).__name__}: {e}); write it with "
                              "ca2vdm train-detector") from None
    model = ShapesDetector(cfg)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    names = {k.split(".")[1] for k in tensors if k.startswith("real.")}
    real = {n: Gaussian(tensors[f"real.{n}.mean"].double(), tensors[f"real.{n}.cov"].double()) for n in names}
    return Detector(model, cfg.resolution, cfg.frames, real, True, path.name)
