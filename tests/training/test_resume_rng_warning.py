"""Resume warns when Accelerate cannot restore the random-number state (it only logs that at INFO)."""

import logging

import pytest
import torch
from accelerate import Accelerator

from training.loop import load_state_or_warn


@pytest.fixture
def saved_state(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    accelerator.save_state(str(tmp_path / "ckpt"))
    return accelerator, model, tmp_path / "ckpt"


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_unloadable_rng_state_warns(saved_state, caplog, damage):
    accelerator, _, ckpt = saved_state
    rng_files = list(ckpt.glob("random_states_*.pkl"))
    assert rng_files
    for path in rng_files:
        if damage == "garbage":
            path.write_bytes(b"not a torch file")
        else:
            path.unlink()
    with caplog.at_level(logging.WARNING):
        load_state_or_warn(accelerator, ckpt)
    assert any(
        "random-number state" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )


def test_intact_rng_state_does_not_warn(saved_state, caplog):
    accelerator, _, ckpt = saved_state
    with caplog.at_level(logging.WARNING):
        load_state_or_warn(accelerator, ckpt)
    assert not any("random-number state" in r.getMessage() for r in caplog.records)
    assert logging.getLogger("accelerate.checkpointing").propagate
