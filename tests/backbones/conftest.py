"""Tiny random backbones (hidden size 32), a word-piece tokenizer and processors, built offline."""

from __future__ import annotations

import pytest
from crcgs_test_utils import (
    CAPTION_WORDS,
    WORDPIECE_SPECIALS,
    save_tiny_bert,
    save_tiny_vit,
    tiny_bert_config,
    tiny_image_processor,
    tiny_vit_config,
    write_vocab,
)
from transformers import BertConfig, BertTokenizer, ViTConfig, ViTImageProcessorPil


@pytest.fixture()
def vit_config() -> ViTConfig:
    return tiny_vit_config()


@pytest.fixture()
def bert_config() -> BertConfig:
    return tiny_bert_config(len(WORDPIECE_SPECIALS) + len(CAPTION_WORDS))


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory) -> str:
    return str(write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", CAPTION_WORDS))


@pytest.fixture(scope="session")
def tokenizer(vocab_file) -> BertTokenizer:
    return BertTokenizer(vocab=vocab_file)


@pytest.fixture()
def image_processor() -> ViTImageProcessorPil:
    return tiny_image_processor()


@pytest.fixture(scope="session")
def pretrained_bert_dir(tmp_path_factory, vocab_file) -> str:
    """A saved tiny BERT + its tokenizer: stands for a local pretrained text backbone."""
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), vocab_file, seed=0))


@pytest.fixture(scope="session")
def pretrained_vit_dir(tmp_path_factory) -> str:
    """A saved tiny ViT (+ image processor): stands for a local pretrained image backbone."""
    return str(save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"), seed=1))
