"""Tiny random backbones (hidden size 32), a word-piece tokenizer and processors, built offline."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTImageProcessorPil, ViTModel

WORDS = "a an the dog dogs cat cats on in of grass sky sea red blue runs sits beach field city night".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def _vit_config() -> ViTConfig:
    """ViT with hidden size 32 on 32x32 images (16 patches of 8x8)."""
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
    )


def _bert_config() -> BertConfig:
    """BERT with hidden size 32 over :data:`VOCAB`."""
    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )


@pytest.fixture()
def vit_config() -> ViTConfig:
    return _vit_config()


@pytest.fixture()
def bert_config() -> BertConfig:
    return _bert_config()


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tokenizer(vocab_file) -> BertTokenizer:
    return BertTokenizer(vocab_file=vocab_file)


@pytest.fixture()
def image_processor() -> ViTImageProcessorPil:
    return ViTImageProcessorPil(size={"height": 32, "width": 32})


@pytest.fixture(scope="session")
def pretrained_bert_dir(tmp_path_factory, vocab_file) -> str:
    """A saved tiny BERT + its tokenizer: stands for a local pretrained text backbone."""
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(_bert_config()).save_pretrained(path)
    BertTokenizer(vocab_file=vocab_file).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def pretrained_vit_dir(tmp_path_factory) -> str:
    """A saved tiny ViT: stands for a local pretrained image backbone."""
    path = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(1)

    ViTModel(_vit_config()).save_pretrained(path)
    return str(path)
