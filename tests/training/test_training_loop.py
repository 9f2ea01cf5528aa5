"""`UnitRunner` on a tiny in-process unit: the batches a resumed run sees, and which epoch is kept."""

import shutil

import pytest
import torch
from accelerate import Accelerator
from tiny_unit import BATCH, NUM_ITEMS, SEED, STEPS, TinyUnit, checkpoint_at, tiny_runner

from training.checkpointing import TrainerState


@pytest.fixture
def accelerator():
    return Accelerator()  # conftest resets Accelerate's process state after every test


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Three epochs with a checkpoint after every step; returns the unit, its summary and its folder."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    accelerator, state = Accelerator(), TrainerState()
    unit = TinyUnit(accelerator, state, epochs=3, scores=[0.1, 0.2, 0.3])
    summary = tiny_runner(accelerator, state, folder, checkpointing_steps=1).run(unit.spec())
    return unit, summary, folder


def test_each_epoch_draws_the_sampler_permutation_of_that_epoch(uninterrupted):
    unit, _, _ = uninterrupted
    assert len(unit.batches) == 3 * STEPS
    for epoch in range(3):
        order = torch.randperm(NUM_ITEMS, generator=torch.Generator().manual_seed(SEED + epoch)).tolist()
        want = [order[i : i + BATCH] for i in range(0, NUM_ITEMS, BATCH)]
        assert unit.batches[epoch * STEPS : (epoch + 1) * STEPS] == want, epoch


@pytest.mark.parametrize("epoch,step_in_epoch", [(0, 2), (1, 0), (1, 3), (2, 1), (2, STEPS)])
def test_resumed_run_trains_on_the_remaining_batches_of_the_uninterrupted_run(
    accelerator, uninterrupted, tmp_path, epoch, step_in_epoch
):
    reference, reference_summary, folder = uninterrupted
    checkpoint, state = checkpoint_at(folder, epoch, step_in_epoch)
    # A folder of its own: the resumed run's checkpoints must not replace the reference's.
    shutil.copytree(checkpoint, tmp_path / "checkpoints" / checkpoint.name)
    resumed = TinyUnit(accelerator, state, epochs=3, scores=[0.1, 0.2, 0.3])
    summary = tiny_runner(accelerator, state, tmp_path).run(
        resumed.spec(), tmp_path / "checkpoints" / checkpoint.name
    )
    # Exactly the batches the killed run had not trained on: none skipped twice, none repeated.
    assert resumed.batches == reference.batches[epoch * STEPS + step_in_epoch :]
    assert summary["history"] == reference_summary["history"]
    assert torch.equal(resumed.model.weight, reference.model.weight)


@pytest.mark.parametrize(
    "scores,greater_is_better,best",
    [([0.2, 0.7, 0.7, 0.4], True, 1), ([0.5, 0.3, 0.3, 0.6], False, 1), ([0.9, 0.1, 0.9, 0.9], True, 0)],
)
def test_the_earliest_best_epoch_is_kept(accelerator, tmp_path, scores, greater_is_better, best):
    state = TrainerState()
    unit = TinyUnit(
        accelerator, state, epochs=len(scores), scores=scores, greater_is_better=greater_is_better
    )
    summary = tiny_runner(accelerator, state, tmp_path).run(unit.spec())
    assert [h["score"] for h in summary["history"]] == scores
    assert summary["best_epoch"] == best and summary["best_score"] == scores[best]
    assert int(unit.loaded["epoch"]) == best
    # the weights saved at the best epoch, not the last ones
    assert float(unit.loaded["weight"].sum()) == summary["history"][best]["weight_sum"]
    assert summary["history"][best]["weight_sum"] != summary["history"][-1]["weight_sum"]


def test_truncate_log_drops_records_after_the_checkpoint_step(tmp_path):
    import json

    from training.logging_utils import read_log, truncate_log

    path = tmp_path / "train_log.jsonl"
    records = [{"step": None, "config": {}}] + [{"step": s, "loss": s / 10} for s in range(1, 9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9, "lo')  # a cut write
    assert truncate_log(path, 5) == 4
    assert [r["step"] for r in read_log(path)] == [1, 2, 3, 4, 5]
    assert json.loads(path.read_text().splitlines()[0]) == {"step": None, "config": {}}
    assert truncate_log(path, 5) == 0 and truncate_log(tmp_path / "missing.jsonl", 1) == 0
