"""SYNTHETIC multi-label image-text pairs: the embedded default dataset, generated from a seed, no files.

Not real data. It imitates the statistics of MIRFLICKR-25K (24 labels, 1 to 5 labels per pair,
skewed label frequencies, binary bag-of-words texts) so that the whole pipeline (three training
stages, hashing, evaluation) runs in minutes on a laptop and retrieval is learnable but not trivial.
Figures obtained on it say nothing about the paper's datasets.

Generative recipe (``generate_synthetic``), all draws from ``numpy.random.default_rng(data_seed)``:

1. Label frequencies ``f_l ∝ (l + 1) ** -label_skew``; each item draws ``k`` in ``1..max_labels`` from
   ``labels_per_item_probs`` (default mean ~2.2) and ``k`` distinct labels with probability ∝ ``f``
   (Gumbel top-k).
2. Latent ``z_i = (y_i P) / sqrt(k_i) + latent_noise * e_i`` with label prototypes ``P ~ N(0, I)``
   (``latent_dim``) and ``e_i ~ N(0, I)``: items sharing labels are close, not identical.
3. Image features ``x_i = relu(tanh(z_i A / sqrt(latent_dim)) B / sqrt(hidden) + image_noise * n_i)``:
   a fixed random two-layer non-linear map (non-negative, like VGG fc7 activations).
4. Text ``t_i``: ``1 + Poisson(mean_words - 1)`` words drawn from the mixture
   ``(1 - background) * mean_{l in y_i} W_l + background * W_bg``, where each label's word
   distribution ``W_l`` puts Dirichlet weights on ``words_per_label`` random words (labels may share
   words) and ``W_bg`` is a Zipf background over the whole vocabulary; ``t_i`` is the binary BoW.

Optional raw inputs (for raw-input towers): ``with_text=True`` adds ``text`` strings made of
``synthetic_word_XXXX`` tokens (the words of the BoW), ``image_size > 0`` adds RGB PNG ``image``\\ s
rendered from ``z_i`` by another fixed random map.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from .common import ArrayRows, CRCGSBuilder, CRCGSBuilderConfig, SourceData, make_features

_CITATION = ""
_DESCRIPTION = (
    "SYNTHETIC multi-label image-text pairs generated deterministically from a seed (no real data): "
    "MIRFLICKR-like label statistics, image vectors from a fixed random non-linear map of label "
    "prototypes plus noise, binary bag-of-words texts from label-specific word distributions plus "
    "background words. For smoke runs, tests and tutorials only."
)
_HOMEPAGE = ""
_LICENSE = "Apache-2.0 (generated data)"


@dataclasses.dataclass
class SyntheticConfig(CRCGSBuilderConfig):
    """Sizes and generator knobs of the synthetic dataset (defaults: a few minutes of full training on 2 cores).

    num_items (`int`, defaults to 4000), num_labels (24), image_dim (512), vocab_size (500): sizes.
    data_seed (`int`, defaults to 0): seed of the generator (``seed`` is the split seed).
    label_skew (`float`, 1.0): exponent of the Zipf label frequencies.
    labels_per_item_probs (`tuple`): probabilities of 1, 2, ... labels per item (max 5 by default).
    latent_dim (64), hidden_dim (256), latent_noise (1.2), image_noise (0.6): image side.
    words_per_label (25), mean_words (8.0), background (0.5): text side.
    with_text (`bool`, False): add ``text`` strings; image_size (`int`, 0): add ``image`` PNGs of that size.
    Splits default to query 500, validation 500, train 2000 (random, ``seed``); database = non-query.
    """

    num_items: int = 4000
    num_labels: int = 24
    image_dim: int = 512
    vocab_size: int = 500
    data_seed: int = 0
    label_skew: float = 1.0
    labels_per_item_probs: tuple[float, ...] = (0.35, 0.3, 0.18, 0.11, 0.06)
    latent_dim: int = 64
    hidden_dim: int = 256
    latent_noise: float = 1.2
    image_noise: float = 0.6
    words_per_label: int = 25
    mean_words: float = 8.0
    background: float = 0.5
    with_text: bool = False
    image_size: int = 0
    num_query: int | None = 500
    num_validation: int | None = 500
    num_train: int | None = 2000


def synthetic_label_names(num_labels: int) -> list[str]:
    return [f"synthetic_label_{i:02d}" for i in range(num_labels)]


def _check_config(config: SyntheticConfig) -> None:
    positive = {
        name: getattr(config, name)
        for name in (
            "num_items",
            "num_labels",
            "image_dim",
            "vocab_size",
            "latent_dim",
            "hidden_dim",
            "words_per_label",
        )
    }
    bad = {name: value for name, value in positive.items() if int(value) < 1}
    if bad:
        raise ValueError(f"synthetic: sizes must be >= 1, got {bad}")
    probs = np.asarray(config.labels_per_item_probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size < 1 or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
        raise ValueError(
            f"synthetic: labels_per_item_probs must be probabilities summing to 1, got {config.labels_per_item_probs}"
        )
    if probs.size > config.num_labels:
        raise ValueError(
            f"synthetic: up to {probs.size} labels per item but only num_labels={config.num_labels}"
        )
    if not 0.0 <= config.background <= 1.0:
        raise ValueError(f"synthetic: background must lie in [0, 1], got {config.background}")
    if config.mean_words < 1.0:
        raise ValueError(f"synthetic: mean_words must be >= 1, got {config.mean_words}")
    if config.words_per_label > config.vocab_size:
        raise ValueError(
            f"synthetic: words_per_label={config.words_per_label} exceeds vocab_size={config.vocab_size}"
        )


def generate_synthetic(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Arrays ``labels`` (N, L) int8, ``image_features`` (N, image_dim) float32, ``text_features``
    (N, vocab_size) float32 binary BoW and ``latent`` (N, latent_dim), following the module docstring."""
    _check_config(config)
    rng = np.random.default_rng(config.data_seed)
    n, num_labels, vocab = config.num_items, config.num_labels, config.vocab_size

    # 1. labels: k ~ labels_per_item_probs, k distinct labels ∝ Zipf frequencies (Gumbel top-k)
    freq = (np.arange(num_labels) + 1.0) ** -config.label_skew
    k = rng.choice(
        np.arange(1, len(config.labels_per_item_probs) + 1), size=n, p=config.labels_per_item_probs
    )
    keys = np.log(freq / freq.sum()) + rng.gumbel(size=(n, num_labels))
    rank = np.empty((n, num_labels), dtype=np.int64)
    rank[np.arange(n)[:, None], np.argsort(-keys, axis=1)] = np.arange(num_labels)
    labels = (rank < k[:, None]).astype(np.int8)  # (n, L)

    # 2. latent from label prototypes
    prototypes = rng.standard_normal((num_labels, config.latent_dim))
    latent = labels @ prototypes / np.sqrt(k)[:, None] + config.latent_noise * rng.standard_normal(
        (n, config.latent_dim)
    )

    # 3. image features: fixed random non-linear map + noise
    first = rng.standard_normal((config.latent_dim, config.hidden_dim)) / np.sqrt(config.latent_dim)
    second = rng.standard_normal((config.hidden_dim, config.image_dim)) / np.sqrt(config.hidden_dim)
    hidden = np.tanh(latent @ first)  # (n, hidden_dim)
    image = np.maximum(hidden @ second + config.image_noise * rng.standard_normal((n, config.image_dim)), 0.0)

    # 4. texts: label word distributions + Zipf background, binary BoW
    label_words = np.zeros((num_labels, vocab))
    topics = np.argsort(rng.random((num_labels, vocab)), axis=1)[:, : config.words_per_label]
    label_words[np.arange(num_labels)[:, None], topics] = rng.dirichlet(
        np.ones(config.words_per_label), size=num_labels
    )
    background = 1.0 / (rng.permutation(vocab) + 1.0)
    background /= background.sum()
    mixture = (1.0 - config.background) * (labels @ label_words) / k[:, None] + config.background * background
    mixture /= mixture.sum(axis=1, keepdims=True)
    num_words = 1 + rng.poisson(config.mean_words - 1.0, size=n)
    counts = rng.multinomial(num_words, mixture)  # (n, vocab)
    return {
        "labels": labels,
        "image_features": image.astype(np.float32),
        "text_features": (counts > 0).astype(np.float32),
        "latent": latent,
        "render": rng.standard_normal((config.latent_dim, 3 * max(config.image_size, 1) ** 2)),
    }


def _texts(bow: np.ndarray) -> list[str]:
    rows, cols = np.nonzero(bow)
    vocabulary = np.array([f"synthetic_word_{word:04d}" for word in range(bow.shape[1])])
    words = vocabulary[cols]
    return [" ".join(chunk) for chunk in np.split(words, np.searchsorted(rows, np.arange(1, bow.shape[0])))]


def _images(latent: np.ndarray, render: np.ndarray, size: int) -> list[dict[str, bytes]]:
    from PIL import Image

    pixels = 1.0 / (1.0 + np.exp(-(latent @ render) / np.sqrt(latent.shape[1])))
    pixels = np.round(255 * pixels).astype(np.uint8).reshape(-1, size, size, 3)
    out = []
    for item in pixels:
        buffer = io.BytesIO()
        Image.fromarray(item).save(buffer, format="PNG")
        out.append({"bytes": buffer.getvalue(), "path": None})
    return out


class Synthetic(CRCGSBuilder):
    """Builder of the synthetic dataset; ``data_dir`` is ignored (nothing is read)."""

    BUILDER_CONFIG_CLASS = SyntheticConfig
    BUILDER_CONFIGS = [SyntheticConfig(name="default", description="synthetic MIRFLICKR-like default")]
    DEFAULT_CONFIG_NAME = "default"
    CITATION, DESCRIPTION, HOMEPAGE, LICENSE = _CITATION, _DESCRIPTION, _HOMEPAGE, _LICENSE

    def _info(self):
        config = self.config
        features = make_features(
            synthetic_label_names(config.num_labels),
            image_dim=config.image_dim,
            text_dim=config.vocab_size,
            with_image=config.image_size > 0,
            with_text=config.with_text,
        )
        # every generator knob (SyntheticConfig's own fields); the split options are in the recipe already
        shared = {field.name for field in dataclasses.fields(CRCGSBuilderConfig)}
        generator = {
            field.name: getattr(config, field.name)
            for field in dataclasses.fields(SyntheticConfig)
            if field.name not in shared
        }
        return self.build_info(features, extra={"generator": generator})

    def _load_source(self) -> SourceData:
        config = self.config
        arrays = generate_synthetic(config)
        images = None
        if config.image_size > 0:
            images = _images(arrays["latent"], arrays["render"], config.image_size)
        return SourceData(
            labels=arrays["labels"],
            label_names=synthetic_label_names(config.num_labels),
            image_features=ArrayRows(arrays["image_features"], source="synthetic:image_features"),
            text_features=ArrayRows(arrays["text_features"], source="synthetic:text_features"),
            texts=_texts(arrays["text_features"]) if config.with_text else None,
            images=images,
            labels_source="synthetic:labels",
        )
