"""A tiny end-to-end run of training/train.py: the output folder, loading, protection, resume, Hub."""

import json
import sys
from pathlib import Path

import pytest
import torch
from kill_resume import run_and_kill, run_to_end
from safetensors.torch import load_file
from tiny_training_config import TINY_DATASET, TINY_MODEL, tiny_config, write_config

from training.logging_utils import read_log
from training.publishing import HubPushError, push_folders
from training.train import main


def _argv(config_path: Path, *extra: str) -> list[str]:
    return ["--config", str(config_path), *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    config = write_config(root / "tiny.json", tiny_config(root / "out"))
    summary = main(_argv(config))
    return root / "out", config, summary


def test_output_folder_layout(finished_run):
    out, _, summary = finished_run
    for bits in (8, 16):
        folder = out / f"synthetic-{bits}bits"
        assert summary["model_folders"][str(bits)] == str(folder)
        for name in (
            "config.json",
            "model.safetensors",
            "eval_results.json",
            "eval_summary.md",
            "training_args.json",
            "README.md",
            "loss_curves.png",
            "teachers/model.safetensors",
            "teachers/config.json",
        ):
            assert (folder / name).is_file(), name
        assert list(folder.glob("*.png"))
        result = json.loads((folder / "eval_results.json").read_text())
        assert result["hash_bits"] == bits and result["num_query"] == 50 and result["num_database"] == 250
        args = json.loads((folder / "training_args.json").read_text())
        assert args["hash_bits"] == bits and args["dataset"] == "synthetic" and args["seed"] == 7
        teachers = load_file(str(folder / "teachers" / "model.safetensors"))
        assert teachers and all(k.startswith(("teacher_i2t.", "teacher_t2i.")) for k in teachers)
    assert (out / "results.md").is_file() and (out / "logs" / "loss_curves.png").is_file()


def test_model_folder_loads_with_automodel(finished_run):
    from transformers import AutoModel

    import modeling_crcgs  # noqa: F401  (registers model_type "crcgs")

    out, _, _ = finished_run
    model = AutoModel.from_pretrained(out / "synthetic-16bits").eval()
    assert type(model).__name__ == "CRCGSModel" and model.config.hash_bits == 16
    codes = model.get_image_hash_codes(torch.rand(3, model.config.image_input_dim))
    assert codes.shape == (3, 16) and set(codes.unique().tolist()) <= {-1, 1}


def test_model_card_has_model_index_and_usage(finished_run):
    from huggingface_hub import ModelCard

    out, _, _ = finished_run
    card = (
        ModelCard.load(out / "synthetic-32bits" / "README.md")
        if (out / "synthetic-32bits").exists()
        else None
    )
    card = card or ModelCard.load(out / "synthetic-8bits" / "README.md")
    results = card.data.eval_results
    names = {r.metric_name for r in results}
    assert {
        "I2T mAP@all (Hamming, 8 bits)",
        "T2I mAP@all (Hamming, 8 bits)",
        "I2T mAP@50 (Hamming, 8 bits)",
    } <= names
    assert all(0.0 <= r.metric_value <= 1.0 for r in results)
    text = (out / "synthetic-8bits" / "README.md").read_text()
    for needed in ("AutoModel.from_pretrained", "Intended use", "Limitations", "10.1145/3477495.3531783"):
        assert needed in text
    # The card's "how to load and search" snippet runs as written.
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["ranking"].shape == (5, 100) and namespace["packed"].shape == (100, 1)


def test_per_term_losses_are_logged_every_step(finished_run):
    out, _, summary = finished_run
    records = read_log(out / "logs" / "train_log.jsonl")
    keys = set().union(*records)
    for term in ("base", "distillation", "adversarial", "contrastive", "support_set", "discriminator"):
        assert f"student/loss/{term}" in keys
    assert "teachers/loss/teacher_i2t" in keys and "hash-8/loss/total" in keys
    # teachers 8 + student 16 + hash 2 x 12 optimizer steps, each logged once
    assert [r["step"] for r in records if "student/loss/total" in r] == list(range(9, 25))
    assert summary["stages"]["student"]["history"][-1]["num_items"] == 61


def test_finished_output_dir_is_not_overwritten(finished_run):
    out, config, _ = finished_run
    before = (out / "synthetic-8bits" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ValueError, match="--overwrite_output_dir"):
        main(_argv(config))
    assert (out / "synthetic-8bits" / "model.safetensors").stat().st_mtime_ns == before


def test_overwrite_refuses_around_a_user_file_and_deletes_nothing(finished_run):
    out, config, _ = finished_run
    draft = out / "synthetic-8bits" / "paper_draft.tex"
    draft.write_text("my paper")
    before = sorted(p for p in out.rglob("*") if p.is_file())
    try:
        with pytest.raises(ValueError, match="did not write") as info:
            main(_argv(config, "--overwrite_output_dir"))
        assert str(draft) in str(info.value)
        assert sorted(p for p in out.rglob("*") if p.is_file()) == before
    finally:
        draft.unlink()


def test_a_run_records_every_file_it_wrote(finished_run):
    from training.run_files import RunFiles

    out, _, _ = finished_run
    assert RunFiles(out).in_the_way(["synthetic-8bits", "synthetic-16bits"]) == []
    assert "synthetic-8bits/model.safetensors" in RunFiles(out).recorded()


def _unfinished_copy(finished: Path, out: Path) -> Path:
    """The finished run's checkpoints and stage weights, without its model folders: an unfinished run."""
    import shutil

    for name in ("checkpoints", "stages"):
        shutil.copytree(finished / name, out / name)
    return out


@pytest.mark.parametrize(
    "change, named",
    [
        ({"hash_bits": [8, 32]}, "hash_bits"),
        ({"dataset_options": {**TINY_DATASET, "data_seed": 99}}, "dataset_options"),
        ({"dataset_options": {**TINY_DATASET, "num_train": 100}}, "split_sizes"),
        ({"student_learning_rate": 0.5}, "student_learning_rate"),
        ({"model_config": {**TINY_MODEL, "support_set_weight": 0.0}}, "model_config"),
    ],
)
def test_resume_on_other_data_or_settings_is_refused_naming_them(finished_run, tmp_path, change, named):
    out = _unfinished_copy(finished_run[0], tmp_path / "out")
    config = write_config(tmp_path / "c.json", tiny_config(out, **change))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=f"other data or settings.*{named}: checkpoint"):
        main(_argv(config, "--resume_from_checkpoint", "latest"))
    # the checkpoints and stage weights are untouched; the refused run wrote no training_args.json
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p in before} == before
    assert not (out / "training_args.json").exists()


def test_resume_with_the_same_settings_passes_the_fingerprint(finished_run, tmp_path):
    from training.checkpointing import STATE_NAME, CheckpointManager, TrainerState
    from training.fingerprint import fingerprint_differences

    out = _unfinished_copy(finished_run[0], tmp_path / "out")
    state = TrainerState.from_file(CheckpointManager(out).resolve("latest") / STATE_NAME)
    assert state.fingerprint["hash_bits"] == [8, 16] and state.fingerprint["seed"] == 7
    assert "output_dir" not in state.fingerprint and "logging_steps" not in state.fingerprint
    assert fingerprint_differences(state.fingerprint, dict(state.fingerprint)) == []


def test_another_runs_checkpoint_is_refused(finished_run, tmp_path):
    foreign = _latest_checkpoint(finished_run[0])
    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "out"))
    with pytest.raises(ValueError, match="another run's checkpoint"):
        main(_argv(config, "--resume_from_checkpoint", str(foreign)))
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"global_step": -4}', "global_step must be an integer >= 0"),
        ('{"epoch": "two"}', "epoch must be an integer >= 0"),
        ('{"learning_rate": 1}', "unknown trainer-state field"),
    ],
)
def test_garbage_trainer_state_is_refused_naming_the_file(tmp_path, content, message):
    from training.checkpointing import STATE_NAME, TrainerState

    (tmp_path / STATE_NAME).write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        TrainerState.from_file(tmp_path / STATE_NAME)
    assert str(tmp_path / STATE_NAME) in str(info.value)


def _latest_checkpoint(out: Path) -> Path:
    from training.checkpointing import CheckpointManager

    return CheckpointManager(out).resolve("latest")


def test_unfinished_output_dir_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    config = write_config(tmp_path / "tiny.json", tiny_config(tmp_path / "out"))
    with pytest.raises(ValueError, match="--resume_from_checkpoint latest"):
        main(_argv(config))


def test_push_to_hub_offline_fails_with_one_sentence(finished_run):
    out, _, _ = finished_run
    folder = out / "synthetic-8bits"
    files = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(HubPushError, match="offline mode is on") as info:
        push_folders({8: folder}, "my-org/crcgs-tiny", private=True)
    assert str(info.value).count(". ") == 0 and str(folder) in str(info.value)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == files


def test_each_unit_keeps_its_earliest_best_epoch(finished_run):
    _, _, summary = finished_run
    for unit, result in summary["stages"].items():
        metric, sign = ("loss", -1) if unit == "teachers" else ("map", 1)
        values = [sign * h[metric] for h in result["history"]]
        assert [h["epoch"] for h in result["history"]] == list(range(len(values))), unit
        assert result["best_epoch"] == values.index(max(values)), unit


def _same_tensors(got_path: Path, want_path: Path) -> None:
    got, want = load_file(str(got_path)), load_file(str(want_path))
    assert got.keys() == want.keys(), got_path
    assert all(torch.equal(got[k], want[k]) for k in got), got_path


@pytest.mark.slow
def test_run_killed_in_a_later_student_epoch_and_mid_hash_stage_resumes_exactly(finished_run, tmp_path):
    reference, _, _ = finished_run
    out = tmp_path / "out"
    # A checkpoint after every step: the kill lands within the targeted epoch on a loaded machine too.
    config = write_config(tmp_path / "tiny.json", tiny_config(out, checkpointing_steps=1))
    # Killed in the student's second epoch, resumed, killed again in the 8-bit hash head's second epoch.
    state = run_and_kill(config, out, "student", 1, tmp_path / "first.log", resume=False)
    assert (state.unit, state.epoch) == ("student", 1) and state.step_in_epoch > 0, state
    state = run_and_kill(config, out, "hash-8", 1, tmp_path / "second.log", resume=True)
    assert (state.unit, state.epoch) == ("hash-8", 1) and state.step_in_epoch > 0, state
    assert "[student] resumed from" in (tmp_path / "second.log").read_text()
    resumed = run_to_end(config, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[hash-8] resumed from" in resumed.stderr

    got = json.loads((out / "run_summary.json").read_text())["stages"]
    want = json.loads((reference / "run_summary.json").read_text())["stages"]
    assert got.keys() == want.keys() == {"teachers", "student", "hash-8", "hash-16"}
    for unit in want:  # every epoch's validation figures, to the last digit
        assert got[unit]["history"] == want[unit]["history"], unit
        assert got[unit]["best_epoch"] == want[unit]["best_epoch"], unit
        _same_tensors(
            out / "stages" / unit / "best.safetensors", reference / "stages" / unit / "best.safetensors"
        )
    for bits in (8, 16):
        folder = f"synthetic-{bits}bits"
        got_eval = json.loads((out / folder / "eval_results.json").read_text())
        want_eval = json.loads((reference / folder / "eval_results.json").read_text())
        assert (
            got_eval["hamming"] == want_eval["hamming"] and got_eval["continuous"] == want_eval["continuous"]
        )
        _same_tensors(out / folder / "model.safetensors", reference / folder / "model.safetensors")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


_NO_PACKAGE_LOAD = r"""
import sys

import numpy as np

BLOCKED = ("modeling_crcgs", "dataset_scripts", "training", "evaluation")


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None


sys.meta_path.insert(0, Block())
import torch
from transformers import AutoModel, AutoProcessor

folder, features, out = sys.argv[1:4]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
x = np.load(features, allow_pickle=False)
batch = processor(image_features=x[:, : model.config.image_input_dim], text_features=x[:, model.config.image_input_dim :])
with torch.no_grad():
    codes = torch.cat([model.get_image_hash_codes(batch["image_features"]), model.get_text_hash_codes(batch["text_features"])])
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
np.save(out, codes.numpy())
print(type(processor).__name__, "|".join(processor.label_names), "|".join(model.config.id2label.values()))
"""


def test_model_folder_loads_with_remote_code_where_the_package_cannot_be_imported(finished_run, tmp_path):
    import os
    import shutil
    import subprocess

    import numpy as np
    from transformers import AutoModel

    import modeling_crcgs  # noqa: F401  (registers model_type "crcgs" in this process)
    from dataset_scripts import label_names, load_crcgs_dataset

    out, _, _ = finished_run
    folder = shutil.copytree(out / "synthetic-16bits", tmp_path / "copied")
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"]["AutoProcessor"]
    model = AutoModel.from_pretrained(folder).eval()
    dims = (model.config.image_input_dim, model.config.text_input_dim)
    features = np.random.default_rng(0).random((6, sum(dims)), dtype=np.float32)
    np.save(tmp_path / "x.npy", features)
    script = tmp_path / "load.py"
    script.write_text(_NO_PACKAGE_LOAD)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "x.npy"), str(tmp_path / "codes.npy")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        want = torch.cat(
            [
                model.get_image_hash_codes(torch.from_numpy(features[:, : dims[0]])),
                model.get_text_hash_codes(torch.from_numpy(features[:, dims[0] :])),
            ]
        )
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), want.numpy())
    names = label_names(load_crcgs_dataset("synthetic", **TINY_DATASET)["train"])
    processor_class, processor_names, config_names = done.stdout.strip().splitlines()[-1].split(" ")
    assert processor_class == "CRCGSProcessor"
    assert processor_names.split("|") == config_names.split("|") == names
    assert not any(name.startswith("LABEL_") for name in names)


def test_model_card_metadata_and_remote_code_snippet(finished_run):
    from huggingface_hub import ModelCard

    from training.model_card import build_model_card

    out, _, _ = finished_run
    folder = out / "synthetic-16bits"
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and card.data.library_name == "transformers"
    assert not card.data.datasets  # local data: no invented Hub dataset id
    assert "trust_remote_code" not in card.text and "import modeling_crcgs" in card.text
    result = json.loads((folder / "eval_results.json").read_text())
    from modeling_crcgs import CRCGSConfig

    config = CRCGSConfig.from_pretrained(folder)
    remote = build_model_card(result, "synthetic", config, {}, "my-org/crcgs-16", "my-org/crcgs-16")
    assert 'AutoModel.from_pretrained("my-org/crcgs-16", trust_remote_code=True)' in remote.text
    assert "import modeling_crcgs" not in remote.text


def test_push_to_hub_checks_the_hub_before_training(tmp_path):
    config = write_config(tmp_path / "tiny.json", tiny_config(tmp_path / "out"))
    with pytest.raises(HubPushError, match="offline mode is on"):
        main(_argv(config, "--push_to_hub", "--hub_model_id", "my-org/crcgs-tiny", "--hub_token", "hf_x"))
    assert not (tmp_path / "out" / "stages").exists() and not list((tmp_path / "out").glob("synthetic-*"))
