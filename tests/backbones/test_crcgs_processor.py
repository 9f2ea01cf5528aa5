"""CRCGSProcessor and the bag-of-words vectorizer (modeling_crcgs.processing_crcgs, modeling_crcgs.bag_of_words)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import modeling_crcgs  # noqa: F401  (registers CRCGSProcessor with AutoProcessor)
from modeling_crcgs.bag_of_words import BagOfWords, build_bow_vocabulary, text_words
from modeling_crcgs.processing_crcgs import CRCGSProcessor

CAPTIONS = [
    "A dog on the grass",
    "A red cat sits on the sea beach",
    "Dogs run in the city at night",
    "the sky",
]


def _png(path, seed: int, size=(40, 50)) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_vocabulary_keeps_words_by_document_frequency():
    texts = ["dog dog grass", "dog sky", "cat sky", ["Dog", "sea"]]
    assert build_bow_vocabulary(texts, min_count=2) == ["dog", "sky"]  # dog: 3 texts, sky: 2
    assert build_bow_vocabulary(texts, min_count=1, max_size=3) == ["dog", "sky", "cat"]
    assert "dog" not in build_bow_vocabulary(texts, stop_words={"dog"})
    with pytest.raises(ValueError, match="no word occurs in at least min_count=9"):
        build_bow_vocabulary(texts, min_count=9)
    with pytest.raises(ValueError, match="min_count must be a positive integer"):
        build_bow_vocabulary(texts, min_count=0)


@pytest.mark.parametrize("binary", [True, False])
def test_bag_of_words_matches_loop_reference(binary):
    vocabulary = build_bow_vocabulary(CAPTIONS)
    bow = BagOfWords(vocabulary, binary=binary)
    texts = [*CAPTIONS, "dog dog DOG unknownword", ["sky", "Sea", "sky"]]
    got = bow(texts)
    expected = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text_words(text):
            if word in vocabulary:
                expected[i, vocabulary.index(word)] += 1
    if binary:
        expected = np.minimum(expected, 1)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32 and got[4, vocabulary.index("dog")] == (1 if binary else 3)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (["a dog", "   "], r"text\[1\] is empty"),
        (["a dog", "!!!"], r"text\[1\] is empty"),
        (["a dog", []], r"text\[1\] is empty"),
        (["a dog", 3], r"text\[1\] must be a string or a list of tag strings"),
        ("a dog", "a single string"),
    ],
)
def test_bag_of_words_bad_texts(texts, match):
    with pytest.raises(ValueError, match=match):
        BagOfWords(["dog"])(texts)


def test_vocabulary_must_be_unique_words():
    with pytest.raises(ValueError, match=r"duplicated words \['dog'\]"):
        BagOfWords(["dog", "cat", "dog"])


def test_processor_handles_paths_pil_images_and_lists(tmp_path, image_processor, tokenizer):
    processor = CRCGSProcessor(image_processor, tokenizer).fit_bow(CAPTIONS, min_count=1)
    path = _png(tmp_path / "a.png", 0)
    batch = processor(images=[path, Image.open(path), Image.new("L", (17, 23))], text=CAPTIONS[:3])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    torch.testing.assert_close(batch["pixel_values"][0], batch["pixel_values"][1])  # path == opened image
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 3
    assert "token_type_ids" not in batch
    np.testing.assert_array_equal(
        batch["text_features"].numpy(), BagOfWords(processor.bow_vocabulary)(CAPTIONS[:3])
    )
    single = processor(images=path, text="a dog")
    assert single["pixel_values"].shape == (1, 3, 32, 32) and single["text_features"].shape == (
        1,
        processor.bow_dim,
    )
    tags = processor(text=[["dog", "grass"], ["sky"]])
    assert set(tags) == {"input_ids", "attention_mask", "text_features"}
    assert tags["text_features"][0, processor.bow_vocabulary.index("grass")] == 1
    no_bow = CRCGSProcessor(image_processor, tokenizer)(text="a dog")
    assert "text_features" not in no_bow and processor.bow_min_count == 1


def test_tokenizer_fixture_knows_the_caption_words(tokenizer):
    # transformers 5 ignores ``BertTokenizer(vocab_file=...)``: every word would become [UNK].
    ids = CRCGSProcessor(tokenizer=tokenizer)(text="a dog on the grass")["input_ids"][0]
    assert tokenizer.unk_token_id not in ids.tolist()
    assert len(tokenizer) > 20


def test_processor_round_trip_and_auto_processor(tmp_path, image_processor, tokenizer):
    processor = CRCGSProcessor(image_processor, tokenizer, bow_binary=False, max_length=12)
    processor.fit_bow(CAPTIONS, min_count=2)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["bow_vocabulary"] == processor.bow_vocabulary and saved["bow_min_count"] == 2
    images = [_png(tmp_path / "x.png", 1)]
    expected = processor(images=images, text=["the dog and the dog"])
    for loaded in (CRCGSProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(loaded, CRCGSProcessor)
        assert loaded.bow_vocabulary == processor.bow_vocabulary
        assert (loaded.bow_min_count, loaded.bow_binary, loaded.max_length) == (2, False, 12)
        got = loaded(images=images, text=["the dog and the dog"])
        assert sorted(got) == sorted(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])


def test_processor_bad_inputs(tmp_path, image_processor, tokenizer):
    processor = CRCGSProcessor(image_processor, tokenizer)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    good = _png(tmp_path / "good.png", 2)
    with pytest.raises(ValueError, match=r"images\[1\]: .*broken.png' does not decode as an image"):
        processor(images=[good, str(broken)])
    with pytest.raises(ValueError, match=r"images\[0\]: image file .*missing.png' does not exist"):
        processor(images=[os.path.join(tmp_path, "missing.png")])
    with pytest.raises(ValueError, match=r"images\[0\] must be a PIL image, a file path"):
        processor(images=[3.5])
    with pytest.raises(ValueError, match="images is an empty list"):
        processor(images=[])
    with pytest.raises(ValueError, match=r"text\[1\] is empty"):
        processor(text=["a dog", ""])
    with pytest.raises(ValueError, match="needs images, text, image_features or text_features"):
        processor()
    with pytest.raises(
        ValueError, match="needs an image_processor, a tokenizer, a bow_vocabulary or label_names"
    ):
        CRCGSProcessor(None, None)
    with pytest.raises(ValueError, match="has no image_processor"):
        CRCGSProcessor(None, tokenizer)(images=[good])
    with pytest.raises(ValueError, match="neither a tokenizer nor a bow_vocabulary"):
        CRCGSProcessor(image_processor, None)(text=["a dog"])


def test_processors_with_absent_parts_round_trip(tmp_path, image_processor):
    """A BoW model's processor is its vocabulary alone; an image-only one has no tokenizer."""
    bow_only = CRCGSProcessor(bow_vocabulary=build_bow_vocabulary(CAPTIONS, min_count=2), bow_min_count=2)
    bow_only.save_pretrained(tmp_path / "bow")
    files = sorted(os.listdir(tmp_path / "bow"))  # + the module files that trust_remote_code loads
    assert [f for f in files if not f.endswith(".py")] == [
        "processor_config.json"
    ] and "processing_crcgs.py" in files
    loaded = AutoProcessor.from_pretrained(tmp_path / "bow")
    assert loaded.image_processor is None and loaded.tokenizer is None and loaded.bow_min_count == 2
    batch = loaded(text=[["dog", "sky"], "the sea"])
    assert set(batch) == {"text_features"}
    np.testing.assert_array_equal(
        batch["text_features"].numpy(), bow_only(text=[["dog", "sky"], "the sea"])["text_features"].numpy()
    )

    image_only = CRCGSProcessor(image_processor, None)
    image_only.save_pretrained(tmp_path / "image")
    loaded = CRCGSProcessor.from_pretrained(tmp_path / "image")
    assert loaded.tokenizer is None and loaded.bow_vocabulary is None
    path = _png(tmp_path / "i.png", 3)
    torch.testing.assert_close(loaded(images=path)["pixel_values"], image_only(images=path)["pixel_values"])


def test_feature_processor_carries_label_names_and_checks_matrices(tmp_path):
    processor = CRCGSProcessor(label_names=["dog", "sky"])
    batch = processor(image_features=np.ones((3, 4)), text_features=[[0, 1], [1, 0], [1, 1]])
    assert batch["image_features"].dtype == torch.float32 and batch["text_features"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"image_features must be a 2-D .* got shape \(4,\)"):
        processor(image_features=np.ones(4))
    with pytest.raises(ValueError, match="label_names must be a non-empty list of unique strings"):
        CRCGSProcessor(label_names=["dog", "dog"])
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["label_names"] == ["dog", "sky"]
    assert saved["auto_map"]["AutoProcessor"] == "processing_crcgs.CRCGSProcessor"
    assert (tmp_path / "processing_crcgs.py").is_file() and (tmp_path / "bag_of_words.py").is_file()
    assert AutoProcessor.from_pretrained(tmp_path).label_names == ["dog", "sky"]
