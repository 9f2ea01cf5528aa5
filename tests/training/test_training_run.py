"""A tiny end-to-end run of training/train.py: the output folder, loading, protection, resume, Hub."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_training_config import REPO_ROOT, accelerate_command, subprocess_env, tiny_config, write_config

from training.logging_utils import read_log
from training.publishing import HubPushError, push_folders
from training.train import main

TRAIN_PY = str(REPO_ROOT / "training" / "train.py")


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


def _mid_epoch_student_checkpoint(out: Path) -> bool:
    for state_file in (out / "checkpoints").glob("checkpoint-*/trainer_state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if state["unit"] == "student" and state["step_in_epoch"] > 0:
            return True
    return False


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(finished_run, tmp_path):
    reference, _, _ = finished_run
    out = tmp_path / "out"
    config = write_config(tmp_path / "tiny.json", tiny_config(out, checkpointing_steps=3))
    log = (tmp_path / "killed.log").open("w")
    # A session of its own: `accelerate launch` runs train.py as a child, and both get the SIGKILL.
    proc = subprocess.Popen(
        [*accelerate_command(1), TRAIN_PY, *_argv(config)],
        env=subprocess_env(),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _mid_epoch_student_checkpoint(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert not list(out.glob("*bits/model.safetensors")), "the run finished before it was killed"

    resumed = subprocess.run(
        [*accelerate_command(1), TRAIN_PY, *_argv(config, "--resume_from_checkpoint", "latest")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    for bits in (8, 16):
        got = json.loads((out / f"synthetic-{bits}bits" / "eval_results.json").read_text())
        want = json.loads((reference / f"synthetic-{bits}bits" / "eval_results.json").read_text())
        for ranking in ("hamming", "continuous"):
            for direction in ("i2t", "t2i"):
                assert got[ranking][direction]["map_all"] == want[ranking][direction]["map_all"]
        got_w = load_file(str(out / f"synthetic-{bits}bits" / "model.safetensors"))
        want_w = load_file(str(reference / f"synthetic-{bits}bits" / "model.safetensors"))
        assert got_w.keys() == want_w.keys()
        assert all(torch.equal(got_w[k], want_w[k]) for k in got_w)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
