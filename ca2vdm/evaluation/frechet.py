"""The Frechet distance between two Gaussians fitted to feature vectors: FVD's (and FID's) formula, whatever the
feature network (Heusel et al. 2017; Unterthiner et al. 2018).

    d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

``Tr((S_1 S_2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of ``A S_2 A`` with
``A = S_1^(1/2)``: that product is symmetric and positive semi-definite, and has the eigenvalues of ``S_1 S_2``, so
two symmetric eigendecompositions in float64 replace a general matrix square root (tested against
``scipy.linalg.sqrtm``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Gaussian:
    """Mean (D,) and covariance (D, D) of feature vectors, float64."""
    mean: torch.Tensor
    cov: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor) -> Gaussian:
        """The Gaussian of ``features`` (N, D), N >= 2 (unbiased covariance, as FVD's implementations)."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need (N >= 2, D) features to fit a Gaussian, got shape {tuple(features.shape)}")
        x = features.detach().double().cpu()
        return cls(x.mean(dim=0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]))


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """The Frechet distance (squared, as FVD reports it) between two Gaussians of the same dimension."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"features of different sizes: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)}")
    root = _sqrt_psd(a.cov)
    cross = torch.linalg.eigvalsh((root @ b.cov @ root + (root @ b.cov @ root).T) / 2).clamp(min=0).sqrt().sum()
    value = (a.mean - b.mean).square().sum() + torch.trace(a.cov) + torch.trace(b.cov) - 2 * cross
    return max(float(value), 0.0)
