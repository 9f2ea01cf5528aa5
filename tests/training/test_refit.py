"""`--refit_student`: the student trained again from its initial weights on train + validation for the number
of epochs validation chose, its last epoch kept, the hash heads trained on it; resumable like any unit."""

import dataclasses
import json
import math

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from kill_resume import run_and_kill, run_to_end
from safetensors.torch import load_file
from tiny_training_config import TINY_DATASET, tiny_config, write_config
from tiny_unit import TinyUnit, tiny_runner

from modeling_crcgs import CRCGSConfig, CRCGSForPreTraining
from training.checkpointing import TrainerState
from training.data import train_and_validation
from training.logging_utils import read_log
from training.model_setup import load_student
from training.train import main, refit_or_restore


@pytest.mark.parametrize("average_decay", [None, 0.5])
def test_a_unit_without_validation_keeps_its_last_epoch(tmp_path, average_decay):
    accelerator, state = Accelerator(), TrainerState()
    # validation would keep epoch 0
    unit = TinyUnit(accelerator, state, epochs=3, scores=[0.9, 0.1, 0.1], average_decay=average_decay)
    spec = dataclasses.replace(unit.spec(), validate=None)
    summary = tiny_runner(accelerator, state, tmp_path).run(spec)
    assert summary["best_epoch"] == 2 and summary["best_score"] is None
    assert summary["history"] == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]
    assert int(unit.loaded["epoch"]) == 2
    last = unit.trained_after_step[-1]
    if average_decay is None:
        assert torch.equal(unit.loaded["weight"], last)
    else:  # the moving average of the last epoch, not the trained weights
        assert torch.equal(unit.loaded["weight"], unit.average.averages["weight"])
        assert not torch.equal(unit.loaded["weight"], last)


def test_train_and_validation_keeps_the_rows_in_order_and_the_training_split_format():
    def double(batch):
        return {"x": [2 * x for x in batch["x"]], "index": batch["index"]}

    train = datasets.Dataset.from_dict({"index": [0, 1, 2], "x": [1.0, 2.0, 3.0]})
    validation = datasets.Dataset.from_dict({"index": [7, 8], "x": [4.0, 5.0]})
    raw = train_and_validation({"train": train.with_transform(double), "validation": validation})
    assert raw[:] == {"x": [2.0, 4.0, 6.0, 8.0, 10.0], "index": [0, 1, 2, 7, 8]}
    numeric = train_and_validation(
        {"train": train.with_format("numpy", columns=["x"]), "validation": validation}
    )
    assert isinstance(numeric[:]["x"], np.ndarray) and list(numeric[:]) == ["x"]


def test_a_refit_starts_from_the_initial_weights_for_the_chosen_number_of_epochs():
    model = torch.nn.Linear(2, 1)
    initial = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    seen = {}

    class Runner:  # what refit_or_restore needs of a UnitRunner: a store and run
        class store:
            @staticmethod
            def is_done(unit):
                return False

        @staticmethod
        def run(spec, resume_dir):
            return {"unit": spec, "resume_dir": resume_dir}

    def build_spec(epochs):
        seen.update(epochs=epochs, weight=model.weight.detach().clone())
        return "spec"

    summary = refit_or_restore(Runner(), "student", {"best_epoch": 4}, initial, build_spec, model, None)
    assert summary == {"unit": "spec", "resume_dir": None}
    assert seen["epochs"] == 5 and torch.equal(seen["weight"], torch.zeros(1, 2))


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    config = write_config(root / "tiny.json", tiny_config(root / "out", refit_student=True))
    summary = main(["--config", str(config)])
    return root / "out", summary


@pytest.mark.slow
def test_the_refit_trains_on_train_and_validation_for_the_chosen_epochs(refit_run):
    out, summary = refit_run
    stages = summary["stages"]
    assert list(stages) == ["teachers", "student", "student-refit", "hash-8", "hash-16"]
    steps = {unit: 0 for unit in stages}
    for record in read_log(out / "logs" / "train_log.jsonl"):
        for unit in stages:
            steps[unit] += f"{unit}/loss/total" in record
    epochs = stages["student"]["best_epoch"] + 1
    refit = stages["student-refit"]
    assert refit["best_epoch"] == epochs - 1 and [h["epoch"] for h in refit["history"]] == list(range(epochs))
    rows, batch = TINY_DATASET["num_train"] + TINY_DATASET["num_validation"], 16
    assert steps["student-refit"] == epochs * math.ceil(rows / batch)  # every train and validation row
    assert steps["student"] == len(stages["student"]["history"]) * math.ceil(
        TINY_DATASET["num_train"] / batch
    )
    assert steps["hash-8"] == len(stages["hash-8"]["history"]) * math.ceil(TINY_DATASET["num_train"] / 20)


@pytest.mark.slow
def test_the_model_folder_holds_the_refit_weights(refit_run):
    out, _ = refit_run
    student = load_file(str(out / "stages" / "student-refit" / "best.safetensors"))
    validated = load_file(str(out / "stages" / "student" / "best.safetensors"))
    assert student.keys() == validated.keys()
    assert any(not torch.equal(student[k], validated[k]) for k in student)
    # the retrieval model's tensors: the discriminators are not saved with it
    retrieval = {k: v for k, v in student.items() if k.startswith("crcgs.")}
    assert retrieval and len(retrieval) < len(student)
    for bits in (8, 16):
        folder = out / f"synthetic-{bits}bits"
        saved = load_file(str(folder / "model.safetensors"))
        head = load_file(str(out / "stages" / f"hash-{bits}" / "best.safetensors"))
        for name, tensor in {**retrieval, **head}.items():
            assert torch.equal(saved[name.removeprefix("crcgs.")], tensor), (bits, name)
        assert "trained again from its initial weights" in (folder / "README.md").read_text()
        assert json.loads((folder / "training_args.json").read_text())["refit_student"] is True


@pytest.mark.slow
def test_student_path_loads_the_refit_student_of_a_run(refit_run):
    out, _ = refit_run
    model = CRCGSForPreTraining(CRCGSConfig.from_pretrained(out / "synthetic-8bits"))
    assert load_student(model, out) == out / "stages" / "student-refit" / "best.safetensors"
    state = model.state_dict()
    refit = load_file(str(out / "stages" / "student-refit" / "best.safetensors"))
    retrieval = {k: v for k, v in refit.items() if k.startswith("crcgs.")}  # no discriminators
    assert retrieval
    for name, tensor in retrieval.items():
        assert torch.equal(state[name], tensor), name


@pytest.mark.slow
def test_a_run_killed_inside_the_student_refit_resumes_exactly(refit_run, tmp_path):
    reference, _ = refit_run
    out = tmp_path / "out"
    config = tiny_config(out, refit_student=True, checkpointing_steps=1)
    path = write_config(tmp_path / "tiny.json", config)
    state = run_and_kill(path, out, "student-refit", 0, tmp_path / "first.log", resume=False)
    assert (state.unit, state.epoch) == ("student-refit", 0) and state.step_in_epoch > 0, state
    resumed = run_to_end(path, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[student-refit] resumed from" in resumed.stderr
    for unit in ("student-refit", "hash-8", "hash-16"):
        got = load_file(str(out / "stages" / unit / "best.safetensors"))
        want = load_file(str(reference / "stages" / unit / "best.safetensors"))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got), unit
    for bits in (8, 16):
        got = json.loads((out / f"synthetic-{bits}bits" / "eval_results.json").read_text())
        want = json.loads((reference / f"synthetic-{bits}bits" / "eval_results.json").read_text())
        assert got["hamming"] == want["hamming"] and got["continuous"] == want["continuous"], bits
