"""Per-feature input normalisation of the feature towers, fitted on the training split, saved with the model.

Pre-extracted features come in very different scales: a CNN's fc7 activations, a bag-of-words count vector, a
SIFT bag-of-visual-words histogram whose 128 entries sum to 1, LDA topic proportions. A tanh tower trained with
the release's learning rate on such inputs barely leaves its linear regime (a histogram entry is ~0.008), so
the model learns little; measured on real data (docs/REAL_DATA.md) standardising the inputs is worth as much as
every auxiliary CRCGS term together. :class:`FeatureNormalizer` therefore computes

    z = (phi(x) - mean) / std,     phi(x) = x  ("standardize")  or  sqrt(max(x, 0))  ("sqrt-standardize"),

per feature, with ``mean`` and ``std`` of ``phi(x)`` over the training split (``std`` floored at ``1e-6``
times the largest std, so a constant feature maps to 0 instead of dividing by 0). ``sqrt`` is the Hellinger
map for count histograms and proportions (Perronnin et al., "Improving the Fisher kernel for large-scale
image classification", ECCV 2010, Sec. 3.1: it flattens the bursty counts of frequent words).

The statistics are buffers, so they live in ``model.safetensors`` and ``AutoModel.from_pretrained`` users feed
raw features. A model whose config names no normalisation (``"none"``, the default) has no buffers and behaves
exactly as before.

The teachers see the normalised features too, as inputs and as reconstruction targets. Normalised targets are
signed, so a decoder that generates a normalised modality ends with its last Linear instead of the release's
ReLU (``CRCGSConfig.teacher_output_activation="auto"``): a ReLU output can only reach the positive half, and on
real data it stays at 0 from the first step, leaving the teachers untrained.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NORMALIZATIONS", "FeatureNormalizer", "check_normalization"]

# Names accepted by CRCGSConfig.{image,text}_feature_normalization.
NORMALIZATIONS = ("none", "standardize", "sqrt-standardize")
# A feature whose std is below this fraction of the largest std is treated as constant.
_RELATIVE_STD_FLOOR = 1e-6


def check_normalization(value: object, name: str) -> str:
    """``value`` itself when it names a normalisation; ValueError naming the field otherwise."""
    if value not in NORMALIZATIONS:
        raise ValueError(f"{name} must be one of {NORMALIZATIONS}, got {value!r}")
    return value


class FeatureNormalizer(nn.Module):
    """``(phi(x) - mean) / std`` per feature, with ``mean``/``std`` fitted by :meth:`fit` (module docstring).

    Args:
        num_features: width of the features. kind: ``"standardize"`` or ``"sqrt-standardize"``.

    Until :meth:`fit` runs (or weights load) the buffers are ``mean = 0`` and ``std = 1``: ``forward`` then
    applies only ``phi``. ``sqrt-standardize`` refuses negative inputs, which are not counts.
    """

    def __init__(self, num_features: int, kind: str):
        super().__init__()
        if kind not in NORMALIZATIONS[1:]:
            raise ValueError(f"kind must be one of {NORMALIZATIONS[1:]}, got {kind!r}")
        self.kind = kind
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def _phi(self, features: torch.Tensor, name: str) -> torch.Tensor:
        if self.kind == "standardize":
            return features
        if bool((features < 0).any()):
            raise ValueError(
                f"{name} has negative values, but its normalisation is 'sqrt-standardize' (for counts, histograms "
                "and proportions); use 'standardize' for signed features"
            )
        return features.sqrt()

    @torch.no_grad()
    def fit(self, features: torch.Tensor, name: str = "features") -> None:
        """Set ``mean``/``std`` from the training features ``(n, num_features)`` (float64 accumulation)."""
        if features.dim() != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"{name} must have shape (n, {self.mean.shape[0]}) to fit the normaliser, got {tuple(features.shape)}"
            )
        if features.shape[0] < 2:
            raise ValueError(f"{name}: fitting the normaliser needs at least 2 rows, got {features.shape[0]}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{name} contains NaN or infinite values; cannot fit the normaliser")
        mapped = self._phi(features.double(), name)
        mean, std = mapped.mean(0), mapped.std(0, unbiased=False)
        floor = float(std.max()) * _RELATIVE_STD_FLOOR
        std = torch.where(std > floor, std, torch.ones_like(std))  # constant features map to 0
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))

    def forward(self, features: torch.Tensor, name: str = "features") -> torch.Tensor:
        """(batch, num_features) -> (batch, num_features), normalised."""
        return (self._phi(features, name) - self.mean.to(features.dtype)) / self.std.to(features.dtype)

    def extra_repr(self) -> str:
        return f"{self.mean.shape[0]}, kind={self.kind!r}"
