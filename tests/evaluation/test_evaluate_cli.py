"""evaluation/run_evaluation.py: runs on a saved tiny model and a tiny synthetic dataset, writes the documented JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from crcgs_test_utils import save_tiny_crcgs_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_OPTIONS = {
    "num_items": 160,
    "num_labels": 6,
    "image_dim": 16,
    "vocab_size": 24,
    "words_per_label": 5,
    "num_query": 30,
    "num_validation": 10,
    "num_train": 60,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_crcgs_model(
        tmp_path_factory.mktemp("model"),
        image_input_dim=16,
        text_input_dim=24,
        num_labels=6,
        hash_bits=16,
        common_dim=8,
        converted_dim=8,
    )


def cli_args(model_dir, tmp_path, *extra):
    return [
        "--model_dir",
        str(model_dir),
        "--dataset",
        "synthetic",
        "--dataset_options",
        json.dumps(SYNTHETIC_OPTIONS),
        "--cache_dir",
        str(tmp_path / "cache"),
        "--batch_size",
        "7",
        *extra,
    ]


def test_cli_writes_documented_json(model_dir, tmp_path):
    from evaluation.run_evaluation import main

    out = tmp_path / "report"
    result = main(cli_args(model_dir, tmp_path, "--output_dir", str(out), "--top_k", "12"))
    written = json.loads((out / "eval_results.json").read_text())
    assert written["dataset"] == "synthetic" and written["hash_bits"] == 16
    assert (written["num_query"], written["num_database"]) == (30, 130)
    assert written["protocol"] == {"name": "hashing", "query_database_overlap": 0}
    assert written["baselines"]["cca"]["hamming"]["i2t"]["k"] == 12  # fitted on the 60 training items
    for space in ("hamming", "continuous"):
        for direction in ("i2t", "t2i"):
            entry = written[space][direction]
            assert entry["k"] == 12
            assert 0.0 <= entry["map_at_k"] <= 1.0 and 0.0 <= entry["map_all"] <= 1.0
            assert entry["map_all"] == result[space][direction]["map_all"]
    assert {p.name for p in out.iterdir()} == {
        "eval_results.json",
        "eval_summary.md",
        "pr_curve.png",
        "precision_at_k.png",
    }


def test_cli_defaults_output_to_its_own_folder_and_k_to_num_query(model_dir, tmp_path):
    from evaluation.run_evaluation import main

    model_files = {p: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    main(cli_args(model_dir, tmp_path))
    written = json.loads((model_dir / "evaluation" / "synthetic" / "eval_results.json").read_text())
    assert written["hamming"]["i2t"]["k"] == 30
    # the model folder's own files (a training evaluation among them) are untouched
    assert {p: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == model_files


def test_a_failure_while_writing_leaves_the_previous_report(model_dir, tmp_path, monkeypatch):
    import modeling_crcgs.retrieval.evaluation as evaluation_module
    from evaluation.run_evaluation import main

    out = tmp_path / "report"
    main(cli_args(model_dir, tmp_path, "--output_dir", str(out), "--top_k", "12"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_plot(result, path):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(evaluation_module, "_plot_precision_at_k", broken_plot)
    with pytest.raises(RuntimeError, match="plotting failed"):
        main(cli_args(model_dir, tmp_path, "--output_dir", str(out), "--top_k", "5"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no half-new set, no temp folder


def test_cli_bad_arguments(model_dir, tmp_path):
    from evaluation.run_evaluation import main

    with pytest.raises(ValueError, match="--model_dir"):
        main(cli_args(tmp_path / "missing", tmp_path))
    with pytest.raises(ValueError, match="--batch_size"):
        main([*cli_args(model_dir, tmp_path), "--batch_size", "0"])
    with pytest.raises(ValueError, match="--dataset: required"):
        main(["--model_dir", str(model_dir)])


@pytest.mark.slow
def test_script_runs_from_any_directory(tmp_path):
    # As a script from another folder: `evaluation` resolves through the editable install, and nothing
    # in evaluation/ shadows the `evaluate` library.
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluation" / "run_evaluation.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--model_dir" in completed.stdout and "--top_k" in completed.stdout


def test_dataset_options_come_from_the_runs_training_args(tmp_path):
    from evaluation.encode_dataset import DatasetArguments
    from evaluation.run_evaluation import dataset_of_run

    record = {"dataset": "synthetic", "data_dir": None, "dataset_options": {"num_train": 3000}}
    (tmp_path / "training_args.json").write_text(json.dumps(record))
    from_run = dataset_of_run(DatasetArguments(), str(tmp_path))
    assert (from_run.dataset, from_run.dataset_options) == ("synthetic", {"num_train": 3000})
    given = dataset_of_run(
        DatasetArguments(dataset="synthetic", dataset_options='{"num_train": 10}'), str(tmp_path)
    )
    assert given.dataset_options == {"num_train": 10}  # a given flag wins
    other = dataset_of_run(DatasetArguments(dataset="features", data_dir=str(tmp_path)), str(tmp_path))
    assert other.dataset == "features" and other.dataset_options == {}  # another dataset: nothing borrowed
    assert dataset_of_run(DatasetArguments(), str(tmp_path / "no-run")).dataset is None
