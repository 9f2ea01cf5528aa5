"""Tiny random CRCGS models and transformers backbones shared by the tests (and benchmarks/bench_towers.py).

Everything is built offline in well under a second. Tests import this module as ``crcgs_test_utils``
(``tests`` is on pytest's ``pythonpath``); benchmarks, run as ``python -m benchmarks.bench_*`` from the
repository root, import it as ``tests.crcgs_test_utils``. Each helper takes keyword overrides, so a test states only the sizes its
assertions depend on.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTImageProcessorPil, ViTModel

from modeling_crcgs import CRCGSConfig, CRCGSModel

# Network sizes of a tiny CRCGS model: 16-wide towers and spaces, one-layer teachers, small discriminators.
TINY_NETWORKS: dict[str, Any] = {
    "tower_hidden_dims": [16, 16, 16],
    "common_dim": 16,
    "converted_dim": 16,
    "teacher_i2t_encoder_dims": [32],
    "teacher_i2t_decoder_dims": [32],
    "teacher_t2i_encoder_dims": [32],
    "teacher_t2i_decoder_dims": [32],
    "image_discriminator_dims": [16, 8, 8],
    "text_discriminator_dims": [16, 8, 8],
}

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CAPTION_WORDS = (
    "a an the dog dogs cat cats on in of grass sky sea red blue runs sits beach field city night".split()
)


def tiny_crcgs_config(**fields: Any) -> CRCGSConfig:
    """A :class:`CRCGSConfig` with :data:`TINY_NETWORKS` sizes; ``fields`` set the dims and override sizes."""
    return CRCGSConfig(**{**copy.deepcopy(TINY_NETWORKS), **fields})


def tiny_crcgs_model(seed: int = 0, **fields: Any) -> CRCGSModel:
    """A randomly initialised :class:`CRCGSModel` (``torch.manual_seed(seed)``) in eval mode."""
    torch.manual_seed(seed)
    return CRCGSModel(tiny_crcgs_config(**fields)).eval()


def save_tiny_crcgs_model(path: str | Path, seed: int = 0, **fields: Any) -> Path:
    """Save :func:`tiny_crcgs_model` to ``path`` (config.json + model.safetensors) and return the path."""
    tiny_crcgs_model(seed, **fields).save_pretrained(path)
    return Path(path)


def tiny_vit_config(**overrides: Any) -> ViTConfig:
    """ViT with hidden size 32 on 32x32 images (16 patches of 8x8), two layers."""
    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
    )
    return ViTConfig(**{**fields, **overrides})


def tiny_bert_config(vocab_size: int, **overrides: Any) -> BertConfig:
    """BERT with hidden size 32 over ``vocab_size`` word pieces, two layers, 64 positions."""
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    return BertConfig(**{**fields, **overrides})


def tiny_image_processor() -> ViTImageProcessorPil:
    """The image processor of :func:`tiny_vit_config`: resize to 32x32."""
    return ViTImageProcessorPil(size={"height": 32, "width": 32})


def write_vocab(path: str | Path, words: Sequence[str] = CAPTION_WORDS) -> Path:
    """A word-piece ``vocab.txt``: :data:`WORDPIECE_SPECIALS` (ids 0-4), then ``words``."""
    path = Path(path)
    path.write_text("\n".join([*WORDPIECE_SPECIALS, *words]) + "\n", encoding="utf-8")
    return path


def save_tiny_vit(path: str | Path, seed: int = 0) -> Path:
    """A saved random :func:`tiny_vit_config` ViT + its image processor: a local "pretrained" backbone."""
    torch.manual_seed(seed)
    ViTModel(tiny_vit_config()).save_pretrained(path)
    tiny_image_processor().save_pretrained(path)
    return Path(path)


def save_tiny_bert(path: str | Path, vocab_file: str | Path, seed: int = 0) -> Path:
    """A saved random :func:`tiny_bert_config` BERT + its tokenizer over ``vocab_file``."""
    # transformers 5: the word-piece file is the ``vocab`` argument (a ``vocab_file=`` keyword is ignored).
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    torch.manual_seed(seed)
    BertModel(tiny_bert_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
