"""Linear CCA, the baseline every evaluation scores beside the model.

Canonical correlation analysis (Hotelling, "Relations between two sets of variates", Biometrika 1936) finds
projections ``P_x`` (image, ``d_x x r``) and ``P_t`` (text, ``d_t x r``) whose projected training features
are maximally correlated; it is the classic linear reference of cross-modal retrieval (Rasiwasia et al.,
ACM MM 2010) and of cross-modal hashing ("CCA" rows of hashing tables). Computed exactly, not iteratively:
with centred training features X, T and covariances ``S_xx = X'X/n + r_x I``, ``S_tt = T'T/n + r_t I``,
``S_xt = X'T/n`` (``r = regularization * trace(S) / d``, a small ridge for rank-deficient features),

    M = S_xx^{-1/2} S_xt S_tt^{-1/2} = U diag(rho) V',    P_x = S_xx^{-1/2} U,   P_t = S_tt^{-1/2} V,

keeping the ``r = min(d_x, d_t)`` pairs of directions, ordered by canonical correlation ``rho``.
Retrieval embeddings are ``(x - mean_x) P_x`` and ``(t - mean_t) P_t``, ranked by cosine.
Codes of K bits: the signs of the first K canonical variates when ``K <= r``; when the features allow fewer
than K directions (10-d topic vectors and 32-bit codes), the signs of K seeded Gaussian random projections of
the r variates (sign random projections, Charikar, STOC 2002, which preserve the angle that cosine ranks by).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .metrics import score_directions

__all__ = ["LinearCCA", "cca_baseline"]


def _inverse_sqrt(covariance: np.ndarray) -> np.ndarray:
    """``S^{-1/2}`` of a symmetric positive definite matrix (eigendecomposition)."""
    values, vectors = np.linalg.eigh(covariance)
    return (vectors / np.sqrt(values)) @ vectors.T


def _as_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


class LinearCCA:
    """Exact regularised CCA (module docstring).

    Args:
        regularization (`float`, defaults to 1e-4): ridge added to each covariance, relative to its mean variance.
        seed (`int`, defaults to 0): seed of the random projections used when more bits than directions are asked.

    Example:

    ```python
    >>> import numpy as np
    >>> from modeling_crcgs.retrieval.baselines import LinearCCA
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(200, 2))
    >>> x = np.hstack([z, rng.normal(size=(200, 3))]); t = z @ rng.normal(size=(2, 4)) + 0.1 * rng.normal(size=(200, 4))
    >>> cca = LinearCCA().fit(x, t)
    >>> bool(cca.correlations[0] > 0.9), cca.transform(x, "image").shape, cca.hash_codes(t, "text", 8).shape
    (True, (200, 4), (200, 8))

    ```
    """

    def __init__(self, regularization: float = 1e-4, seed: int = 0):
        if not regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {regularization!r}")
        self.regularization = float(regularization)
        self.seed = int(seed)

    def fit(self, image_features: Any, text_features: Any) -> LinearCCA:
        """Fit on paired training features ``(n, d_x)`` and ``(n, d_t)``; returns ``self``."""
        x = _as_matrix(image_features, "image_features")
        t = _as_matrix(text_features, "text_features")
        if x.shape[0] != t.shape[0]:
            raise ValueError(
                f"image_features and text_features must pair rows, got {x.shape[0]} and {t.shape[0]}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"CCA needs at least 2 training pairs, got {x.shape[0]}")
        self.means = {"image": x.mean(0), "text": t.mean(0)}
        x, t = x - self.means["image"], t - self.means["text"]
        n = x.shape[0]
        whiten = {}
        for name, centred in (("image", x), ("text", t)):
            covariance = centred.T @ centred / n
            ridge = self.regularization * max(np.trace(covariance) / covariance.shape[0], 1e-12)
            whiten[name] = _inverse_sqrt(covariance + ridge * np.eye(covariance.shape[0]))
        u, rho, vt = np.linalg.svd(whiten["image"] @ (x.T @ t / n) @ whiten["text"])
        rank = min(x.shape[1], t.shape[1])
        self.projections = {"image": whiten["image"] @ u[:, :rank], "text": whiten["text"] @ vt.T[:, :rank]}
        self.correlations = rho[:rank]
        return self

    def transform(self, features: Any, modality: str) -> np.ndarray:
        """Canonical variates ``(features - mean) P`` of one modality: ``(n, d) -> (n, r)`` float32."""
        if modality not in self.projections:
            raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
        array = _as_matrix(features, f"{modality}_features")
        if array.shape[1] != self.projections[modality].shape[0]:
            raise ValueError(
                f"{modality}_features must have {self.projections[modality].shape[0]} columns (as at fit), "
                f"got {array.shape[1]}"
            )
        return ((array - self.means[modality]) @ self.projections[modality]).astype(np.float32)

    def hash_codes(self, features: Any, modality: str, num_bits: int) -> np.ndarray:
        """int8 codes in {-1, +1} of shape ``(n, num_bits)`` (module docstring; sign(0) = +1)."""
        variates = self.transform(features, modality)
        rank = variates.shape[1]
        if num_bits <= rank:
            projected = variates[:, :num_bits]
        else:
            rng = np.random.default_rng(self.seed)
            projected = variates @ rng.standard_normal((rank, num_bits)).astype(np.float32)
        return np.where(projected >= 0, 1, -1).astype(np.int8)


def _split_arrays(split: Any) -> dict[str, np.ndarray]:
    view = split.select_columns(["image_features", "text_features", "labels"]).with_format("numpy")
    return {key: np.asarray(view[key]) for key in ("image_features", "text_features", "labels")}


def cca_baseline(
    train_split: Any, query_split: Any, database_split: Any, hash_bits: int, top_k: int
) -> dict[str, Any]:
    """Fit :class:`LinearCCA` on ``train_split`` and score it like the model on ``query_split`` / ``database_split``.

    Splits are ``datasets.Dataset`` objects with ``image_features``, ``text_features`` and ``labels``. Returns
    ``{"method", "hamming": {"i2t": {...}, "t2i": {...}}, "continuous": {...}}`` scored by the model's own
    :func:`~modeling_crcgs.retrieval.metrics.score_directions` (``map_all``, ``map_at_k``, ``k``; Hamming adds
    ``precision_at_radius_2``), as in ``eval_results.json``.
    """
    train, query, database = (_split_arrays(s) for s in (train_split, query_split, database_split))
    cca = LinearCCA().fit(train["image_features"], train["text_features"])
    encoded: dict[str, dict[str, torch.Tensor]] = {}
    for name, arrays in (("query", query), ("database", database)):
        encoded[name] = {"labels": torch.from_numpy(arrays["labels"])}
        for modality in ("image", "text"):
            features = arrays[f"{modality}_features"]
            encoded[name][f"{modality}_embeds"] = torch.from_numpy(cca.transform(features, modality))
            encoded[name][f"{modality}_codes"] = torch.from_numpy(
                cca.hash_codes(features, modality, hash_bits)
            )
    result: dict[str, Any] = {
        "method": f"linear CCA ({len(cca.correlations)} directions, fitted on the training split)",
        "embedding_distance": "cosine",
    }
    score_directions(encoded["query"], encoded["database"], top_k, result)  # the model's scorer
    return result
