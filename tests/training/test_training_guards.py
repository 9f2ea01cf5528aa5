"""A non-finite loss stops the run naming the term and step, after saving the state; the collator."""

import json

import numpy as np
import pytest
import torch
from tiny_training_config import tiny_config, write_config

from modeling_crcgs import CRCGSForPreTraining
from modeling_crcgs.collator import CRCGSCollator
from training.checkpointing import STATE_NAME, TrainerState
from training.loop import NonFiniteLossError
from training.train import main


def test_nan_loss_stops_with_term_and_step_after_saving_state(tmp_path, monkeypatch):
    original = CRCGSForPreTraining.forward
    calls = {"student": 0}

    def forward_with_nan(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if kwargs.get("stage") == "student":
            calls["student"] += 1
            if calls["student"] == 3:  # the third student step: global step 8 teacher steps + 3
                out.loss_terms["contrastive"] = torch.tensor(float("nan"))
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CRCGSForPreTraining, "forward", forward_with_nan)
    config = write_config(tmp_path / "tiny.json", tiny_config(tmp_path / "out", hash_bits=[8]))
    with pytest.raises(NonFiniteLossError) as info:
        main(["--config", str(config)])
    message = str(info.value)
    assert "'contrastive'" in message and "student step 11" in message and "batch 2" in message
    checkpoint = info.value.checkpoint
    assert checkpoint is not None and str(checkpoint) in message
    state = TrainerState.from_file(checkpoint / STATE_NAME)
    assert (state.unit, state.epoch, state.step_in_epoch, state.global_step) == ("student", 0, 2, 10)
    assert (checkpoint / "model.safetensors").is_file()
    assert not list((tmp_path / "out").glob("*bits"))


def test_collator_matches_a_row_by_row_reference():
    rng = np.random.default_rng(0)
    rows = [
        {
            "image_features": rng.random(5, dtype=np.float32),
            "text_features": rng.random(3, dtype=np.float32).tolist(),
            "labels": rng.integers(0, 2, 4).astype(np.int8),
            "index": i * 7,
            "text": "ignored",
        }
        for i in range(6)
    ]
    batch = CRCGSCollator()(rows)
    assert set(batch) == {"image_features", "text_features", "labels", "index"}
    for key, dtype in (("image_features", torch.float32), ("labels", torch.float32), ("index", torch.int64)):
        assert batch[key].dtype == dtype
    for i, row in enumerate(rows):
        assert torch.equal(batch["image_features"][i], torch.as_tensor(row["image_features"]))
        assert torch.equal(batch["text_features"][i], torch.tensor(row["text_features"], dtype=torch.float32))
        assert torch.equal(batch["labels"][i], torch.as_tensor(row["labels"]).float())
        assert batch["index"][i].item() == row["index"]


def test_collator_rejects_bad_rows():
    with pytest.raises(ValueError, match="empty"):
        CRCGSCollator()([])
    with pytest.raises(ValueError, match="image_features"):
        CRCGSCollator()([{"image_features": [1.0, 2.0]}, {"image_features": [1.0]}])
    with pytest.raises(ValueError, match="missing"):
        CRCGSCollator(["labels"])([{"labels": [1]}, {"index": 2}])
    with pytest.raises(ValueError, match="columns"):
        CRCGSCollator(["pixels"])


def test_trainer_state_round_trip(tmp_path):
    state = TrainerState(unit="hash-32", epoch=2, step_in_epoch=5, global_step=77, best_metric=0.5)
    (tmp_path / STATE_NAME).write_text(state.to_json())
    assert TrainerState.from_file(tmp_path / STATE_NAME) == state
    (tmp_path / STATE_NAME).write_text(json.dumps({"unit": "x", "oops": 1}))
    with pytest.raises(ValueError, match="oops"):
        TrainerState.from_file(tmp_path / STATE_NAME)
