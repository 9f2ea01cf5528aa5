"""`ParameterAverage` (moving average of a unit's weights) alone and inside `UnitRunner`, with resume."""

import shutil

import pytest
import torch
from accelerate import Accelerator
from tiny_unit import STEPS, TinyUnit, checkpoint_at, tiny_runner

from training.averaging import AVERAGE_FILE, ParameterAverage
from training.checkpointing import TrainerState

DECAY = 0.8
SCORES = [0.1, 0.5, 0.3]  # the best epoch is epoch 1


def test_update_is_the_exponential_moving_average_from_the_initial_weights():
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    average = ParameterAverage({"w": weight}, decay=0.9)
    expected = weight.detach().clone()
    for value in ([3.0, 0.0], [-1.0, 5.0], [0.5, 0.5]):
        with torch.no_grad():
            weight.copy_(torch.tensor(value))
        average.update()
        expected = 0.9 * expected + 0.1 * torch.tensor(value)
        torch.testing.assert_close(average.averages["w"], expected, rtol=0, atol=1e-7)
    assert torch.equal(weight.detach(), torch.tensor([0.5, 0.5]))  # the trained weights are not touched


def test_applied_swaps_the_averages_in_and_the_trained_weights_back():
    weight = torch.nn.Parameter(torch.zeros(3))
    average = ParameterAverage({"w": weight}, decay=0.5)
    with torch.no_grad():
        weight.fill_(4.0)
    average.update()  # average = 2
    with average.applied():
        assert torch.equal(weight.detach(), torch.full((3,), 2.0))
    assert torch.equal(weight.detach(), torch.full((3,), 4.0))
    with pytest.raises(RuntimeError, match="inside"), average.applied():
        raise RuntimeError("inside")
    assert torch.equal(weight.detach(), torch.full((3,), 4.0))  # restored even when the block fails


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        ParameterAverage({"w": torch.nn.Parameter(torch.zeros(1))}, decay)


def test_load_names_what_does_not_match(tmp_path):
    weight = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="saved without parameter averaging"):
        ParameterAverage({"w": weight}, 0.5).load(tmp_path)
    ParameterAverage({"v": torch.nn.Parameter(torch.zeros(2))}, 0.5).save(tmp_path)
    with pytest.raises(ValueError, match=r"missing \['w'\], extra \['v'\]"):
        ParameterAverage({"w": weight}, 0.5).load(tmp_path)
    ParameterAverage({"w": torch.nn.Parameter(torch.zeros(5))}, 0.5).save(tmp_path)
    with pytest.raises(ValueError, match=r"w has shape \(5,\), the model's is \(2,\)"):
        ParameterAverage({"w": weight}, 0.5).load(tmp_path)


def _run(accelerator, state, unit, folder, resume_dir=None, checkpointing_steps=None):
    return tiny_runner(accelerator, state, folder, checkpointing_steps).run(unit.spec(), resume_dir)


def test_validation_and_the_kept_epoch_see_the_averaged_weights(tmp_path):
    accelerator, state = Accelerator(), TrainerState()
    unit = TinyUnit(accelerator, state, len(SCORES), SCORES, average_decay=DECAY)
    initial = unit.model.weight.detach().clone()
    summary = _run(accelerator, state, unit, tmp_path)
    expected, per_epoch = initial, []
    for trained in unit.trained_after_step:
        expected = DECAY * expected + (1 - DECAY) * trained
        per_epoch.append(expected)
    at_epoch_end = per_epoch[STEPS - 1 :: STEPS]
    for record, averaged in zip(summary["history"], at_epoch_end, strict=True):
        assert record["weight_sum"] == pytest.approx(float(averaged.sum()), abs=1e-6)
    torch.testing.assert_close(unit.loaded["weight"], at_epoch_end[1], rtol=0, atol=1e-6)  # best = epoch 1
    # after validation the model trains on from its own weights, not from the averages
    assert torch.equal(unit.model.weight.detach(), unit.trained_after_step[-1])


@pytest.mark.parametrize("epoch,step_in_epoch", [(0, 2), (1, 0), (2, 3)])
def test_a_resumed_run_continues_the_average_exactly(tmp_path, epoch, step_in_epoch):
    accelerator, state = Accelerator(), TrainerState()
    reference = TinyUnit(accelerator, state, len(SCORES), SCORES, average_decay=DECAY)
    reference_summary = _run(accelerator, state, reference, tmp_path / "ref", checkpointing_steps=1)
    path, saved = checkpoint_at(tmp_path / "ref", epoch, step_in_epoch)
    assert (path / AVERAGE_FILE).is_file()
    copy = tmp_path / "resumed" / "checkpoints" / path.name
    shutil.copytree(path, copy)
    # the run's own folder keeps the best weights saved before the kill (best epoch 1)
    shutil.copytree(tmp_path / "ref" / "stages", tmp_path / "resumed" / "stages")
    resumed = TinyUnit(accelerator, saved, len(SCORES), SCORES, average_decay=DECAY)
    summary = _run(accelerator, saved, resumed, tmp_path / "resumed", resume_dir=copy)
    assert summary["history"] == reference_summary["history"]
    assert torch.equal(resumed.average.averages["weight"], reference.average.averages["weight"])
    assert torch.equal(resumed.loaded["weight"], reference.loaded["weight"])
