"""The encoder with transformers backbone towers: raw image/text columns go through a CRCGSProcessor."""

import datasets
import numpy as np
import pytest
import torch
from crcgs_test_utils import (
    WORDPIECE_SPECIALS,
    tiny_bert_config,
    tiny_crcgs_model,
    tiny_image_processor,
    tiny_vit_config,
    write_vocab,
)
from PIL import Image
from transformers import BertTokenizer

from modeling_crcgs import pack_codes
from modeling_crcgs.processing_crcgs import CRCGSProcessor
from modeling_crcgs.retrieval.encoding import encode_dataset_to_shards, encode_split_arrays, load_shards

WORDS = "a the dog cat on in grass sky sea red blue runs sits beach".split()


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    vocab_file = write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", WORDS)
    return CRCGSProcessor(tiny_image_processor(), BertTokenizer(str(vocab_file)))


@pytest.fixture(scope="module")
def model():
    return tiny_crcgs_model(
        image_input_dim=8,
        text_input_dim=8,
        num_labels=3,
        hash_bits=16,
        tower_hidden_dims=[16, 16],
        converted_dim=8,
        vision_config=tiny_vit_config(num_hidden_layers=1),
        text_config=tiny_bert_config(
            len(WORDPIECE_SPECIALS) + len(WORDS), num_hidden_layers=1, max_position_embeddings=32
        ),
    )


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, size=(24 + i, 20, 3), dtype=np.uint8)) for i in range(11)]
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 7))) for _ in range(11)]
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "index": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict(
        {"image": images, "text": texts, "index": list(range(11))}, features=features
    )


def test_raw_columns_match_a_per_row_reference(tmp_path, model, processor, split):
    encoded = encode_split_arrays(model, split, batch_size=4, processor=processor)
    for i in (0, 5, 10):
        row = split[i]
        with torch.no_grad():
            pixels = processor(images=[row["image"]])["pixel_values"]
            u = model.get_image_features(pixel_values=pixels)
            tokens = processor(text=[row["text"]])
            v = model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        np.testing.assert_allclose(encoded["image_embeds"][i], u[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(encoded["text_embeds"][i], v[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(
            encoded["image_codes"][i], pack_codes(model.hash_codes_from_embeddings(u))[0]
        )
        np.testing.assert_array_equal(
            encoded["text_codes"][i], pack_codes(model.hash_codes_from_embeddings(v))[0]
        )

    # the shard writer takes the same path; padding of texts within a batch does not change the codes
    encode_dataset_to_shards(
        model, split, tmp_path, batch_size=3, shard_size=5, processor=processor, show_progress=False
    )
    shards = load_shards(tmp_path)
    np.testing.assert_array_equal(shards["image_codes"], encoded["image_codes"])
    np.testing.assert_array_equal(shards["text_codes"], encoded["text_codes"])


def test_backbone_tower_needs_raw_column_and_processor(model, split):
    with pytest.raises(ValueError, match="image tower needs a 'image' column and a processor"):
        encode_split_arrays(model, split, modalities=("image",))
    with pytest.raises(ValueError, match="text tower needs a 'text' column and a processor"):
        encode_split_arrays(model, split.remove_columns(["text"]), modalities=("text",), processor=object())
