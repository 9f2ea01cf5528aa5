"""training/train.py on raw images and captions: tiny ViT and BERT towers under LoRA, trained and evaluated.

The data is a tiny MS-COCO-layout folder (PNG files, caption and instance annotations) written here; the
backbones are tiny random models saved as "pretrained" folders with their image processor / tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from crcgs_test_utils import TINY_NETWORKS, save_tiny_bert, save_tiny_vit, write_vocab
from PIL import Image
from transformers import AutoModel, AutoProcessor, BertModel, ViTModel

from dataset_scripts.mscoco import CATEGORIES
from modeling_crcgs import CRCGSProcessor
from modeling_crcgs.retrieval.evaluation import evaluate_retrieval, feature_level_view
from training.merge_lora import main as merge_main
from training.raw_inputs import RawTransform, prepare_raw_splits, required_columns
from training.train import main as train_main

LABEL_WORDS = {1: "person", 17: "cat", 18: "dog", 3: "car"}  # COCO category id -> caption word
COLORS = {1: (220, 40, 40), 17: (40, 220, 40), 18: (40, 40, 220), 3: (220, 220, 40)}
WORDS = "a an the of in is there here photo person cat dog car city and".split()
TINY_MODEL = {
    **TINY_NETWORKS,
    "vision_finetuning": "lora",
    "text_finetuning": "lora",
    "vision_lora": {"r": 4},
    "text_lora": {"r": 4},
    "tower_hidden_dims": [32, 32],
    "image_discriminator_dims": [16],
    "text_discriminator_dims": [16],
    "dis_iter": 1,
}


def write_coco(root: Path, num_images: int = 40) -> Path:
    """COCO-layout folder: ``train2014/*.png`` colored by label, two captions naming the labels each."""
    (root / "annotations").mkdir(parents=True)
    (root / "train2014").mkdir()
    rng = np.random.default_rng(0)
    ids = list(LABEL_WORDS)
    images, instances, captions = [], [], []
    for i in range(num_images):
        labels = [ids[i % 4]]
        if i % 3 == 0 and ids[(i // 4) % 4] != labels[0]:
            labels.append(ids[(i // 4) % 4])
        pixels = np.zeros((24, 24, 3), dtype=np.int64) + np.array(COLORS[labels[0]])
        pixels = np.clip(pixels + rng.integers(-30, 30, pixels.shape), 0, 255).astype(np.uint8)
        if len(labels) > 1:
            pixels[12:] = COLORS[labels[1]]
        name = f"COCO_train2014_{i:012d}.png"
        Image.fromarray(pixels).save(root / "train2014" / name)
        images.append({"id": 100 + i, "file_name": name, "width": 24, "height": 24})
        instances += [
            {"id": 1000 + 10 * i + j, "image_id": 100 + i, "category_id": c} for j, c in enumerate(labels)
        ]
        words = " and a ".join(LABEL_WORDS[c] for c in labels)
        captions.append(
            {"id": 5000 + 2 * i, "image_id": 100 + i, "caption": f"A photo of a {words} in the city"}
        )
        captions.append({"id": 5001 + 2 * i, "image_id": 100 + i, "caption": f"There is a {words} here"})
    categories = [{"id": k + 1, "name": name, "supercategory": "x"} for k, name in enumerate(CATEGORIES)]
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": instances, "categories": categories})
    )
    (root / "annotations" / "captions_train2014.json").write_text(
        json.dumps({"images": images, "annotations": captions})
    )
    return root


def write_backbones(root: Path) -> tuple[Path, Path]:
    """A tiny ViT (+ image processor) and a tiny BERT (+ tokenizer), saved as pretrained folders."""
    vocab = write_vocab(root / "vocab.txt", WORDS)
    return save_tiny_vit(root / "vit", seed=0), save_tiny_bert(root / "bert", vocab, seed=1)


def run_config(root: Path, vit: Path, bert: Path) -> dict:
    return {
        "dataset": "mscoco",
        "data_dir": str(root / "coco"),
        "cache_dir": str(root / "cache"),
        "dataset_options": {
            "annotation_splits": ["train"],
            "num_query": 8,
            "num_validation": 8,
            "num_train": 24,
            "vocab_size": 50,
        },
        "output_dir": str(root / "out"),
        "hash_bits": [8],
        "seed": 3,
        "teacher_epochs": 1,
        "teacher_batch_size": 8,
        "student_epochs": 2,
        "student_batch_size": 8,
        "student_learning_rate": 1e-3,
        "hash_epochs": 1,
        "hash_batch_size": 8,
        "eval_batch_size": 8,
        "model_config": {**TINY_MODEL, "vision_backbone": str(vit), "text_backbone": str(bert)},
    }


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw-run")
    write_coco(root / "coco")
    vit, bert = write_backbones(root)
    config = run_config(root, vit, bert)
    (root / "config.json").write_text(json.dumps(config))
    summary = train_main(["--config", str(root / "config.json")])
    return root, config, summary


def _load_splits(config: dict):
    from dataset_scripts import load_crcgs_dataset

    return load_crcgs_dataset(
        config["dataset"], config["data_dir"], cache_dir=config["cache_dir"], **config["dataset_options"]
    )


@pytest.mark.slow
def test_raw_run_writes_a_complete_model_folder(raw_run):
    root, _, summary = raw_run
    folder = root / "out" / "mscoco-8bits"
    assert summary["model_folders"]["8"] == str(folder)
    for name in (
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "eval_results.json",
    ):
        assert (folder / name).is_file(), name
    for adapter in ("image_adapter", "text_adapter"):
        assert (folder / adapter / "adapter_model.safetensors").is_file()
    result = json.loads((folder / "eval_results.json").read_text())
    assert (result["num_query"], result["num_database"], result["hash_bits"]) == (8, 32, 8)
    for space in ("hamming", "continuous"):
        for direction in ("i2t", "t2i"):
            assert 0.0 < result[space][direction]["map_all"] <= 1.0
    processor = json.loads((folder / "processor_config.json").read_text())
    assert processor["bow_vocabulary"] is None  # the dataset brings its own text_features (MS-COCO BoW)
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_finetuning"] == config["text_finetuning"] == "lora"
    assert config["image_input_dim"] == 32  # the teachers read the frozen ViT's pooled output


@pytest.mark.slow
def test_lora_trained_adapters_and_kept_the_pretrained_weights(raw_run):
    root, _, _ = raw_run
    model = AutoModel.from_pretrained(root / "out" / "mscoco-8bits")
    for tower, pretrained in (("image", ViTModel), ("text", BertModel)):
        reference = pretrained.from_pretrained(root / ("vit" if tower == "image" else "bert")).state_dict()
        backbone = getattr(model, f"{tower}_tower").encoder.backbone.base_model.model.state_dict()
        lora_b = [v for k, v in backbone.items() if "lora_B" in k]
        assert lora_b and any(bool(v.abs().sum() > 0) for v in lora_b), f"{tower}: LoRA B never trained"
        base = {k.replace(".base_layer", ""): v for k, v in backbone.items() if "lora_" not in k}
        assert set(base) == set(reference)
        for name, value in reference.items():
            torch.testing.assert_close(base[name], value, msg=f"{tower} backbone weight {name} moved")


@pytest.mark.slow
def test_reloaded_folder_reproduces_the_evaluation_and_merges(raw_run, tmp_path):
    root, config, _ = raw_run
    folder = root / "out" / "mscoco-8bits"
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(processor, CRCGSProcessor)
    splits = _load_splits(config)
    query = splits["query"]
    batch = processor(images=query["image"], text=query["text"])
    with torch.no_grad():
        u = model.get_image_features(pixel_values=batch["pixel_values"])
        v = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    # The evaluator's route (features of the fine-tuned backbones, then the feature-level model) is the same
    # computation, and reproduces the saved scores.
    raw_splits, _ = prepare_raw_splits(
        {name: splits[name] for name in splits}, config["model_config"], root / "out", _NoAccelerator()
    )
    feature_model, feature_query, feature_database = feature_level_view(
        model, raw_splits["query"], raw_splits["database"], processor=processor, batch_size=8
    )
    with torch.no_grad():
        torch.testing.assert_close(
            feature_model.get_image_features(torch.tensor(np.asarray(feature_query["image_features"]))), u
        )
        torch.testing.assert_close(
            feature_model.get_text_features(torch.tensor(np.asarray(feature_query["text_features"]))), v
        )
    again = evaluate_retrieval(feature_model, feature_query, feature_database, dataset_name="mscoco")
    saved = json.loads((folder / "eval_results.json").read_text())
    for space in ("hamming", "continuous"):
        for direction in ("i2t", "t2i"):
            assert again[space][direction]["map_all"] == pytest.approx(saved[space][direction]["map_all"])

    merged = AutoModel.from_pretrained(
        merge_main(["--model_dir", str(folder), "--output_dir", str(tmp_path / "m")])
    )
    with torch.no_grad():
        torch.testing.assert_close(merged.eval().get_image_features(pixel_values=batch["pixel_values"]), u)


@pytest.mark.slow
def test_evaluate_command_reproduces_the_training_evaluation(raw_run, tmp_path):
    from evaluation.run_evaluation import main as evaluate_main

    root, config, _ = raw_run
    folder = root / "out" / "mscoco-8bits"
    arguments = [
        "--dataset",
        "mscoco",
        "--data_dir",
        config["data_dir"],
        "--dataset_options",
        json.dumps(config["dataset_options"]),
        "--cache_dir",
        config["cache_dir"],
        "--batch_size",
        "8",
    ]
    result = evaluate_main(["--model_dir", str(folder), "--output_dir", str(tmp_path / "report"), *arguments])
    saved = json.loads((folder / "eval_results.json").read_text())
    assert json.loads((tmp_path / "report" / "eval_results.json").read_text())["hamming"] == result["hamming"]
    assert (result["num_query"], result["num_database"], result["hash_bits"]) == (8, 32, 8)
    for space in ("hamming", "continuous"):
        for direction in ("i2t", "t2i"):
            for key in ("map_all", "map_at_k", "k"):
                assert result[space][direction][key] == pytest.approx(saved[space][direction][key], abs=1e-9)

    # without its processor, a raw-input model cannot read the raw columns: the command says so
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(ValueError, match="--model_dir: the model has backbone towers .* no processor_conf"):
        evaluate_main(["--model_dir", str(bare), *arguments])


def test_raw_input_helpers_and_errors(tmp_path):
    assert required_columns({"vision_backbone": "x"}, ("image_features", "text_features", "labels")) == (
        "image",
        "text_features",
        "labels",
    )
    splits = {"train": _FakeSplit()}
    with pytest.raises(ValueError, match="raw texts need text_backbone"):
        prepare_raw_splits(splits, {"text_config": {"model_type": "bert"}}, tmp_path, _NoAccelerator())
    with pytest.raises(ValueError, match=r"text column: rows \[1\] are empty"):
        RawTransform(tokenizer=lambda *a, **k: {})({"text": ["a dog", "  "]})


class _NoAccelerator:
    """The part of ``accelerate.Accelerator`` that prepare_raw_splits uses, for one process."""

    def main_process_first(self):
        import contextlib

        return contextlib.nullcontext()


class _FakeSplit:
    column_names = ["image", "text", "labels", "index"]
