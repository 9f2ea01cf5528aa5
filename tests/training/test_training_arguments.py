"""Argument parsing of training/train.py: flags, YAML, JSON, overrides and validation errors."""

import dataclasses
import json

import pytest
import yaml

from training.arguments import load_config_file, parse_args


def test_flags_parse_into_the_three_groups():
    data, model, train = parse_args(
        ["--dataset", "synthetic", "--hash_bits", "16", "32", "64", "--seed", "3", "--output_dir", "o"]
    )
    assert data.dataset == "synthetic" and data.dataset_options == {}
    assert model.hash_bits == [16, 32, 64]
    assert train.seed == 3 and train.output_dir == "o"
    assert train.stages == ["teachers", "student", "hash"]
    assert train.student_adam_betas == [0.5, 0.999] and train.hash_batch_size == 100


def test_yaml_and_json_files_match_and_flags_override(tmp_path):
    values = {
        "dataset": "synthetic",
        "hash_bits": [32, 64],
        "student_epochs": 3,
        "model_config": {"support_set_weight": 0.0, "contrastive_temperature": 0.2},
        "dataset_options": {"num_items": 100},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "c.json").write_text(json.dumps(values))
    from_yaml = parse_args(["--config", str(tmp_path / "c.yaml")])
    from_json = parse_args(["--config", str(tmp_path / "c.json")])
    assert from_yaml[2].config.endswith("c.yaml") and from_json[2].config.endswith("c.json")
    assert from_yaml[:2] == from_json[:2]
    assert dataclasses.replace(from_yaml[2], config=None) == dataclasses.replace(from_json[2], config=None)
    assert from_yaml[1].model_config == {"support_set_weight": 0.0, "contrastive_temperature": 0.2}
    assert from_yaml[0].dataset_options == {"num_items": 100}
    overridden = parse_args(
        ["--config", str(tmp_path / "c.yaml"), "--student_epochs", "9", "--hash_bits", "16"]
    )
    assert overridden[2].student_epochs == 9 and overridden[1].hash_bits == [16]


def test_shipped_configs_parse_with_release_settings(tmp_path):
    _, model, train = parse_args(["--config", "training/configs/mscoco.yaml"])
    assert train.student_epochs == 60 and train.hash_epochs == 200 and train.student_lr_patience == 5
    assert model.model_config["modality_gap_loss_weight"] == 0.011
    assert model.model_config["contrastive_temperature"] == 0.1
    _, model, train = parse_args(["--config", "training/configs/nus_wide.yaml"])
    assert model.model_config["support_set_weight"] == 40.0 and train.student_epochs == 30
    _, model, train = parse_args(["--config", "training/configs/mirflickr25k.yaml"])
    assert model.model_config["support_set_temperature"] == 0.04 and train.hash_epochs == 30
    data, model, _ = parse_args(["--config", "training/configs/synthetic.yaml"])
    assert data.dataset == "synthetic" and model.hash_bits == [32, 64]


def test_features_folder_takes_the_shipped_recipe(tmp_path):
    data, model, train = parse_args(["--dataset", "features", "--data_dir", str(tmp_path)])
    assert data.data_dir == str(tmp_path) and train.config.endswith("training/configs/features.yaml")
    recipe = load_config_file("training/configs/features.yaml")
    assert model.model_config == recipe["model_config"]
    assert model.model_config["image_feature_normalization"] != "none"
    assert train.early_stopping_patience == recipe["early_stopping_patience"]
    assert train.student_ema_decay == recipe["student_ema_decay"]
    assert train.refit_student is recipe["refit_student"] is True
    # Flags still override the recipe.
    _, _, train = parse_args(["--dataset", "features", "--data_dir", str(tmp_path), "--student_epochs", "3"])
    assert train.student_epochs == 3


@pytest.mark.parametrize("dataset", ["mirflickr25k", "nus_wide", "mscoco"])
def test_a_benchmark_without_config_takes_its_release_settings(dataset):
    _, model, train = parse_args(["--dataset", dataset])
    assert train.config.endswith(f"training/configs/{dataset}.yaml")
    assert model.model_config == load_config_file(f"training/configs/{dataset}.yaml")["model_config"]
    expected_ssl = {"mirflickr25k": 0.001, "nus_wide": 40.0, "mscoco": 0.001}[dataset]
    assert model.model_config["support_set_weight"] == expected_ssl


def test_synthetic_without_config_keeps_the_argument_defaults():
    _, model, train = parse_args(["--dataset", "synthetic"])
    assert train.config is None and model.model_config == {} and train.student_learning_rate == 1e-4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "--dataset"),
        (["--dataset", "features"], "--data_dir"),
        (["--dataset", "synthetic", "--hash_bits", "0"], "--hash_bits"),
        (["--dataset", "synthetic", "--hash_bits", "32", "32"], "distinct"),
        (["--dataset", "synthetic", "--stages", "hash", "teachers"], "--stages"),
        (["--dataset", "synthetic", "--stages", "pretrain"], "--stages"),
        (["--dataset", "synthetic", "--student_learning_rate", "-1"], "--student_learning_rate"),
        (
            ["--dataset", "synthetic", "--student_ema_decay", "1"],
            r"--student_ema_decay: expected a number in \(0, 1\)",
        ),
        (["--dataset", "synthetic", "--student_ema_decay", "0"], "--student_ema_decay"),
        (["--dataset", "synthetic", "--hash_adam_betas", "0.5"], "--hash_adam_betas"),
        (["--dataset", "synthetic", "--push_to_hub"], "--hub_model_id"),
        (["--dataset", "synthetic", "--hub_model_id", "noslash"], "org/name"),
        (["--dataset", "synthetic", "--model_config", "[1, 2]"], "--model_config"),
        (["--dataset", "synthetic", "--model_config", '{"hash_bits": 8}'], "hash_bits"),
        (["--dataset", "synthetic", "--report_to", "comet"], "--report_to"),
        (["--dataset", "synthetic", "--student_path", "/no/such/folder"], "--student_path"),
        (["--dataset", "synthetic", "--stages", "hash"], "--student_path"),
        (["--dataset", "synthetic", "--stages", "student", "hash"], "--teachers_path"),
    ],
)
def test_bad_values_raise_naming_the_argument(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_a_student_without_teacher_terms_needs_no_teachers_path(tmp_path):
    # the features recipe: distillation, adversarial and contrastive weights 0
    _, model, train = parse_args(
        ["--dataset", "features", "--data_dir", str(tmp_path), "--stages", "student"]
    )
    assert train.stages == ["student"] and model.teachers_path is None
    off = '{"distillation_weight": 0, "adversarial_weight": 0, "contrastive_weight": 0}'
    parse_args(["--dataset", "synthetic", "--stages", "student", "hash", "--model_config", off])
    adversarial_by_default = '{"distillation_weight": 0, "contrastive_weight": 0}'  # release w_ta 0.01
    with pytest.raises(ValueError, match="--teachers_path.*adversarial"):
        parse_args(
            ["--dataset", "synthetic", "--stages", "student", "--model_config", adversarial_by_default]
        )


def test_config_file_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("dataset: synthetic\nstudent_epoch: 3\n")
    with pytest.raises(ValueError, match="student_epoch"):
        load_config_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config_file(tmp_path / "list.yaml")
    (tmp_path / "c.toml").write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"\.yaml"):
        load_config_file(tmp_path / "c.toml")
    with pytest.raises(ValueError, match="--config"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match="not used"):
        parse_args(["--dataset", "synthetic", "--no_such_flag", "1"])


def test_transformers_names_set_every_stage_that_its_own_flag_does_not(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    _, _, args = parse_args(
        [
            "--dataset", "synthetic",
            "--num_train_epochs", "3", "--student_epochs", "5",
            "--per_device_train_batch_size", "4", "--hash_batch_size=10",
            "--learning_rate", "0.01", "--teacher_learning_rate", "0.5",
            "--save_total_limit", "1", "--hub_private_repo", "true",
        ]
    )  # fmt: skip
    assert (args.teacher_epochs, args.student_epochs, args.hash_epochs) == (3, 5, 3)
    # per device x 2 processes = the global batch; an explicit stage flag keeps its (global) value
    assert (args.teacher_batch_size, args.student_batch_size, args.hash_batch_size) == (8, 8, 10)
    assert args.teacher_learning_rate == 0.5
    assert args.student_learning_rate == args.discriminator_learning_rate == args.hash_learning_rate == 0.01
    assert args.checkpoints_total_limit == 1 and args.hub_private is True


def test_without_transformers_names_the_stage_values_stay():
    _, _, args = parse_args(["--dataset", "synthetic"])
    _, _, ref = parse_args(["--dataset", "synthetic", "--student_epochs", str(args.student_epochs)])
    assert (args.teacher_epochs, args.student_batch_size, args.hash_learning_rate) == (
        ref.teacher_epochs,
        ref.student_batch_size,
        ref.hash_learning_rate,
    )
    with pytest.raises(ValueError, match="num_train_epochs"):
        parse_args(["--dataset", "synthetic", "--num_train_epochs", "0"])


def test_hub_token_is_not_written_to_the_resolved_arguments():
    from training.arguments import resolved_arguments

    data_args, model_args, args = parse_args(["--dataset", "synthetic", "--hub_token", "hf_secret"])
    assert args.hub_token == "hf_secret"
    assert "hf_secret" not in json.dumps(resolved_arguments(data_args, model_args, args), default=str)


def test_model_config_typo_is_refused_naming_the_closest_field():
    with pytest.raises(
        ValueError, match="--model_config: CRCGSConfig has no field 'commn_dim'; did you mean 'common_dim'"
    ):
        parse_args(["--dataset", "synthetic", "--model_config", json.dumps({"commn_dim": 64})])


def test_model_config_flag_updates_the_config_files_mapping_key_by_key(tmp_path):
    recipe = yaml.safe_load(open("training/configs/features.yaml"))["model_config"]
    data = tmp_path / "data"
    data.mkdir()
    argv = ["--dataset", "features", "--data_dir", str(data)]
    _, model_args, _ = parse_args(argv)
    assert model_args.model_config == recipe
    _, model_args, _ = parse_args([*argv, "--model_config", json.dumps({"contrastive_weight": 0.03})])
    assert model_args.model_config == {**recipe, "contrastive_weight": 0.03}
    assert recipe["contrastive_weight"] == 0.0  # the flag's value wins over the file's
    _, model_args, _ = parse_args([*argv, "--model_config={}"])
    assert model_args.model_config == recipe
    config = tmp_path / "run.yaml"
    config.write_text("dataset: synthetic\ndataset_options: {num_train: 50, seed: 3}\n")
    data_args, _, _ = parse_args(["--config", str(config), "--dataset_options", '{"seed": 4}'])
    assert data_args.dataset_options == {"num_train": 50, "seed": 4}
    with pytest.raises(ValueError, match="--model_config: 'num_labels' is set from the data"):
        parse_args([*argv, "--model_config", json.dumps({"num_labels": 3})])


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("bad.yaml", "dataset: synthetic\nseed: [1, 2\nhash_bits: 8\n", "line 3"),
        ("tabs.yaml", "dataset: synthetic\n\tseed: 3\n", "line 2"),
        ("bad.json", '{"dataset": "synthetic",}', "not valid JSON"),
    ],
)
def test_config_file_syntax_error_names_the_file_and_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=f"--config: {path}.*{where}"):
        load_config_file(path)
