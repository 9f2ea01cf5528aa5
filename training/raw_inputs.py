"""Raw images and captions in training: the teachers' fixed features and the student's raw inputs.

A tower with a backbone (``vision_backbone``/``vision_config``, ``text_backbone``/``text_config`` in
``--model_config``) reads raw inputs while the teachers keep fixed features (docs/METHOD.md, network 3: the
release fine-tunes its CNN on raw images, "teachers always take the pre-extracted features"):

- image side: ``image_features`` = the pooled output of the frozen pretrained image backbone, computed once
  per split and cached in ``<output_dir>/teacher_features/<split>.safetensors`` (a split that already has
  ``image_features`` keeps them); the student reads ``pixel_values`` made from the ``image`` column.
- text side: ``text_features`` = the bag of words of the ``text`` column over the words of at least
  ``bow_min_count`` training texts (a split that already has ``text_features`` keeps them); the student
  reads ``input_ids``/``attention_mask`` made from the ``text`` column.

The splits stay ``datasets.Dataset`` objects; ``with_transform`` turns each fetched batch of rows into model
inputs, which :class:`~modeling_crcgs.collator.CRCGSCollator` stacks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file

from modeling_crcgs.backbones import BackboneEncoder, resolve_backbone_config
from modeling_crcgs.bag_of_words import BagOfWords, build_bow_vocabulary
from modeling_crcgs.processing_crcgs import CRCGSProcessor, load_image
from modeling_crcgs.retrieval.encoding import RAW_COLUMNS
from modeling_crcgs.utils import move_into
from training.checkpointing import atomic_save_tensors

# Config keys that give a modality a backbone (which then reads RAW_COLUMNS[modality]).
_BACKBONE_KEYS = {"image": ("vision_config", "vision_backbone"), "text": ("text_config", "text_backbone")}
TEACHER_FEATURES_DIR = "teacher_features"


def raw_modalities(model_config: dict[str, Any]) -> tuple[str, ...]:
    """The modalities whose towers have a backbone in ``--model_config``."""
    return tuple(
        m for m, keys in _BACKBONE_KEYS.items() if any(model_config.get(k) is not None for k in keys)
    )


def required_columns(model_config: dict[str, Any], feature_columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns a split needs: a raw modality needs its raw column instead of its fixed features."""
    raw = raw_modalities(model_config)
    swap = {f"{m}_features": RAW_COLUMNS[m] for m in raw}
    return tuple(swap.get(column, column) for column in feature_columns)


class RawTransform:
    """``datasets`` batch transform: the ``image``/``text`` columns -> ``pixel_values``/``input_ids``/``attention_mask``.

    The fixed-feature columns, ``labels`` and ``index`` pass through for the collator.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, passthrough: tuple[str, ...] = ()):
        self.image_processor, self.tokenizer, self.passthrough = image_processor, tokenizer, passthrough

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        out = {column: batch[column] for column in self.passthrough}
        if self.image_processor is not None:
            images = [load_image(image, f"image of row {i}") for i, image in enumerate(batch["image"])]
            out["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
        if self.tokenizer is not None:
            texts = batch["text"]
            empty = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
            if empty:
                raise ValueError(f"text column: rows {empty[:5]} are empty; expected a caption per row")
            tokens = self.tokenizer(
                texts, padding=True, truncation=True, return_tensors="pt", return_token_type_ids=False
            )
            out["input_ids"], out["attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return out


def _backbone_path(model_config: dict[str, Any], modality: str) -> str:
    config_key, path_key = _BACKBONE_KEYS[modality]
    path = model_config.get(path_key)
    if path is None or not Path(path).is_dir():
        raise ValueError(
            f"--model_config: raw {modality}s need {path_key} (a local pretrained folder holding the "
            f"{'image processor' if modality == 'image' else 'tokenizer'}), got {path!r}"
        )
    return str(path)


@torch.no_grad()
def frozen_image_features(
    encoder: BackboneEncoder, image_processor: Any, split: Any, batch_size: int
) -> torch.Tensor:
    """Pooled outputs of the frozen backbone for every row of ``split``, in order: (n, output_dim) float32."""
    encoder.eval()
    images = split.select_columns(["image"])
    parts = []
    for start in range(0, len(split), batch_size):
        rows = images[start : start + batch_size]["image"]
        pixels = image_processor(
            [load_image(image, f"image of row {start + i}") for i, image in enumerate(rows)],
            return_tensors="pt",
        )
        parts.append(encoder(pixel_values=pixels["pixel_values"]).float())
    return torch.cat(parts)


def cached_image_features(
    encoder: BackboneEncoder, image_processor: Any, split: Any, cache_file: Path, batch_size: int
) -> np.ndarray:
    """:func:`frozen_image_features`, read from ``cache_file`` when it holds this split (same ``index``)."""
    index = torch.as_tensor(
        np.asarray(split.select_columns(["index"]).with_format("numpy")["index"]), dtype=torch.int64
    )
    if cache_file.is_file():
        cached = load_file(str(cache_file))
        if (
            torch.equal(cached.get("index", torch.empty(0)), index)
            and cached["image_features"].shape[1] == encoder.output_dim
        ):
            return cached["image_features"].numpy()
    features = frozen_image_features(encoder, image_processor, split, batch_size)
    atomic_save_tensors({"image_features": features.contiguous(), "index": index}, cache_file)
    return features.numpy()


def prepare_raw_splits(
    splits: Any,
    model_config: dict[str, Any],
    output_dir: str | os.PathLike,
    accelerator: Any,
    bow_min_count: int = 1,
    bow_max_size: Optional[int] = None,
    batch_size: int = 64,
) -> tuple[Any, Optional[Any]]:
    """Give every split the teachers' fixed features and a raw-input transform; returns ``(splits, processor)``.

    ``processor`` (a :class:`~modeling_crcgs.CRCGSProcessor`: the raw towers' image processor and/or
    tokenizer, and the bag-of-words vocabulary built here) goes into the model folder; ``None`` (and the
    splits unchanged) for feature towers.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    raw = raw_modalities(model_config)
    if not raw:
        return splits, None
    image_processor = tokenizer = bow = None
    columns = splits["train"].column_names
    if "image" in raw:
        path = _backbone_path(model_config, "image")
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        if "image_features" not in columns:
            config = resolve_backbone_config(model_config.get("vision_config"), path, "vision_config")
            encoder = BackboneEncoder(config, path, modality="image", finetuning="frozen")
            # One cache per backbone (its path and config), so a changed backbone never reuses stale features.
            key = json.dumps([os.path.abspath(path), config.to_dict()], sort_keys=True, default=str)
            digest = hashlib.sha256(key.encode()).hexdigest()[:12]
            cache = Path(output_dir) / TEACHER_FEATURES_DIR
            for name in list(splits):
                with accelerator.main_process_first():  # the main process computes, the others read the cache
                    features = cached_image_features(
                        encoder,
                        image_processor,
                        splits[name],
                        cache / f"{name}-{digest}.safetensors",
                        batch_size,
                    )
                splits[name] = splits[name].add_column("image_features", list(features))
    if "text" in raw:
        tokenizer = AutoTokenizer.from_pretrained(_backbone_path(model_config, "text"), local_files_only=True)
        if "text_features" not in columns:
            vocabulary = build_bow_vocabulary(splits["train"]["text"], bow_min_count, bow_max_size)
            bow = BagOfWords(vocabulary)
            for name in list(splits):
                splits[name] = splits[name].add_column("text_features", list(bow(splits[name]["text"])))
    passthrough = tuple(
        c for c in ("image_features", "text_features", "labels", "index") if c in splits["train"].column_names
    )
    transform = RawTransform(image_processor, tokenizer, passthrough)
    for name in list(splits):
        splits[name] = splits[name].with_transform(transform)
    processor = CRCGSProcessor(
        image_processor,
        tokenizer,
        bow_vocabulary=bow.vocabulary if bow else None,
        bow_min_count=bow_min_count if bow else None,
    )
    return splits, processor


def save_processor(processor: Any, folder: str | os.PathLike) -> None:
    """Write ``processor``'s files into the model ``folder``: through a temp folder inside it + ``os.replace``."""
    move_into(processor.save_pretrained, folder)
