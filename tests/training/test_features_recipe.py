"""`--dataset features` without --config: the shipped recipe, fitted input normalisers, classic splits, CCA."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.train import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, size=150)
    image = rng.dirichlet(np.full(16, 0.5), size=150) + np.eye(3, 16)[classes] * 0.2  # histogram-like
    text = rng.normal(size=(150, 5)) * 40 + np.eye(3, 5)[classes] * 60 + 100  # large, shifted scale
    np.save(data / "image_features.npy", image.astype(np.float32))
    np.save(data / "text_features.npy", text.astype(np.float32))
    np.save(data / "labels.npy", classes.astype(np.int64))
    (data / "label_names.json").write_text(json.dumps(["art", "music", "sport"]))
    test = list(range(120, 150))
    splits = {"train": list(range(100)), "validation": list(range(100, 120)), "query": test, "database": test}
    (data / "splits.json").write_text(json.dumps(splits))
    summary = main(recipe_argv(data, root, root / "out"))
    return root, data, summary, text[:100], image[:100]


def recipe_argv(data, root, output):
    """The recipe's settings at a tiny size (as `--model_config`, which replaces the file's)."""
    return [
        "--dataset", "features", "--data_dir", str(data), "--cache_dir", str(root / "cache"),
        "--output_dir", str(output), "--hash_bits", "8",
        "--teacher_epochs", "1", "--student_epochs", "6", "--hash_epochs", "4", "--early_stopping_patience", "1",
        "--student_ema_decay", "0.9",
        "--model_config", json.dumps({"tower_hidden_dims": [32, 32], "common_dim": 16, "converted_dim": 16,
                                      "teacher_i2t_encoder_dims": [16], "teacher_i2t_decoder_dims": [16],
                                      "teacher_t2i_encoder_dims": [16], "teacher_t2i_decoder_dims": [16],
                                      "image_feature_normalization": "standardize",
                                      "text_feature_normalization": "standardize", "tower_input_dropout": 0.2,
                                      "tower_input_noise": 0.5, "distillation_weight": 0.0,
                                      "adversarial_weight": 0.0, "contrastive_weight": 0.0,
                                      "support_set_weight": 0.0, "retrieval_embedding": "label_posterior",
                                      "hash_similarity_weight": 0.0, "label_agreement_weight": 1.0}),
    ]  # fmt: skip


def test_recipe_is_recorded_and_normalisers_are_fitted_on_the_training_split(recipe_run):
    root, _, summary, train_text, train_image = recipe_run
    args = json.loads((root / "out" / "training_args.json").read_text())
    assert args["config"].endswith("training/configs/features.yaml") and args["early_stopping_patience"] == 1
    assert args["student_ema_decay"] == 0.9
    assert args["refit_student"] is True
    folder = root / "out" / "features-8bits"
    config = json.loads((folder / "config.json").read_text())
    assert config["text_feature_normalization"] == "standardize" and config["tower_input_dropout"] == 0.2
    assert config["tower_input_noise"] == 0.5 and config["label_agreement_weight"] == 1.0
    tensors = load_file(folder / "model.safetensors")
    np.testing.assert_allclose(tensors["text_normalizer.mean"].numpy(), train_text.mean(0), rtol=1e-5)
    np.testing.assert_allclose(tensors["text_normalizer.std"].numpy(), train_text.std(0), rtol=1e-4)
    np.testing.assert_allclose(tensors["image_normalizer.mean"].numpy(), train_image.mean(0), rtol=1e-5)


def test_classic_protocol_is_accepted_and_scored_beside_cca(recipe_run):
    root, _, summary, _, _ = recipe_run
    result = json.loads((root / "out" / "features-8bits" / "eval_results.json").read_text())
    assert result["num_query"] == result["num_database"] == 30
    assert result["protocol"] == {"name": "classic", "query_database_overlap": 30}
    cca = result["baselines"]["cca"]
    assert (
        set(cca) == {"method", "embedding_distance", "hamming", "continuous"}
        and 0 < cca["continuous"]["i2t"]["map_all"] <= 1
    )
    card = (root / "out" / "features-8bits" / "README.md").read_text()
    assert "baseline CCA" in card and "Protocol: classic" in card


def test_teachers_are_not_trained_when_no_student_term_uses_them(recipe_run):
    root, _, summary, _, _ = recipe_run  # as in the recipe, every auxiliary term is at weight 0
    assert "teachers" not in summary["stages"]
    assert set(summary["stages"]) == {"student", "student-refit", "hash-8"}  # the recipe refits the student
    folder = root / "out" / "features-8bits"
    assert not (folder / "teachers").exists() and not (root / "out" / "stages" / "teachers").exists()
    card = (folder / "README.md").read_text()
    assert "Two stages (student, hash head)" in card and "teachers/" not in card


def test_a_teachers_path_unused_by_the_student_puts_no_teachers_in_the_model_folder(recipe_run):
    # the teachers stage runs but is skipped (no term uses teachers), so --teachers_path is not loaded either
    root, data, _, _, _ = recipe_run
    output = root / "out_teachers_path"
    argv = recipe_argv(data, root, output) + ["--teachers_path", str(root / "out"), "--student_epochs", "1"]
    summary = main(argv)
    assert "teachers" not in summary["stages"]
    assert not (output / "features-8bits" / "teachers").exists()


def test_early_stopping_ends_a_unit_patience_epochs_after_its_best(recipe_run):
    _, _, summary, _, _ = recipe_run
    for unit in ("student", "hash-8"):
        stage = summary["stages"][unit]
        epochs = [entry["epoch"] for entry in stage["history"]]
        assert epochs[-1] <= stage["best_epoch"] + 1
        if len(epochs) < {"student": 6, "hash-8": 4}[unit]:  # stopped early: exactly patience epochs later
            assert epochs[-1] == stage["best_epoch"] + 1


def test_the_reloaded_model_takes_raw_features(recipe_run):
    root, data, _, _, _ = recipe_run
    from transformers import AutoModel

    import modeling_crcgs  # noqa: F401  (registers the model type)

    model = AutoModel.from_pretrained(root / "out" / "features-8bits").eval()
    raw = torch.from_numpy(np.load(data / "text_features.npy")[120:])
    manual = (raw - model.text_normalizer.mean) / model.text_normalizer.std
    expected = model.common_projection(model.text_tower(manual))
    assert torch.allclose(model.get_text_features(raw), expected, atol=1e-5)


def test_continuous_scores_rank_the_reloaded_models_label_posteriors_by_inner_product(recipe_run):
    root, data, _, _, _ = recipe_run
    from transformers import AutoModel

    import modeling_crcgs  # noqa: F401  (registers the model type)
    from modeling_crcgs.retrieval.metrics import mean_average_precision

    folder = root / "out" / "features-8bits"
    result = json.loads((folder / "eval_results.json").read_text())
    assert result["embedding_distance"] == "inner_product"
    assert result["baselines"]["cca"]["embedding_distance"] == "cosine"
    model = AutoModel.from_pretrained(folder).eval()
    image = torch.from_numpy(np.load(data / "image_features.npy")[120:])
    text = torch.from_numpy(np.load(data / "text_features.npy")[120:])
    labels = torch.nn.functional.one_hot(torch.from_numpy(np.load(data / "labels.npy")[120:]), 3)
    with torch.no_grad():
        image_posteriors = model.retrieval_embeddings(model.get_image_features(image))
        text_posteriors = model.retrieval_embeddings(model.get_text_features(text))
    assert image_posteriors.shape == (30, 3)
    i2t = mean_average_precision(image_posteriors, text_posteriors, labels, labels, distance="inner_product")
    assert result["continuous"]["i2t"]["map_all"] == pytest.approx(float(i2t), abs=1e-9)
    card = (folder / "README.md").read_text()
    assert "inner product, label posteriors" in card and "image_posteriors @ text_posteriors.T" in card


def test_the_student_is_validated_on_its_label_posteriors_by_inner_product(recipe_run):
    # the kept epoch's validation mAP is the inner-product mAP of the validated student's posteriors (its stage
    # weights; the recipe's model folder holds the student refitted on train + validation instead)
    root, data, summary, _, _ = recipe_run
    from transformers import AutoModel

    import modeling_crcgs  # noqa: F401  (registers the model type)
    from modeling_crcgs.retrieval.metrics import mean_average_precision

    model = AutoModel.from_pretrained(root / "out" / "features-8bits").eval()
    validated = load_file(root / "out" / "stages" / "student" / "best.safetensors")
    student = {k.removeprefix("crcgs."): v for k, v in validated.items() if k.startswith("crcgs.")}
    assert not model.load_state_dict(student, strict=False).unexpected_keys
    rows = slice(100, 120)
    image = torch.from_numpy(np.load(data / "image_features.npy")[rows])
    text = torch.from_numpy(np.load(data / "text_features.npy")[rows])
    labels = torch.nn.functional.one_hot(torch.from_numpy(np.load(data / "labels.npy")[rows]), 3)
    with torch.no_grad():
        a = model.retrieval_embeddings(model.get_image_features(image))
        b = model.retrieval_embeddings(model.get_text_features(text))
    i2t = float(mean_average_precision(a, b, labels, labels, distance="inner_product"))
    t2i = float(mean_average_precision(b, a, labels, labels, distance="inner_product"))
    student = summary["stages"]["student"]
    kept = next(entry for entry in student["history"] if entry["epoch"] == student["best_epoch"])
    assert kept["map"] == pytest.approx((i2t + t2i) / 2, abs=1e-6)
