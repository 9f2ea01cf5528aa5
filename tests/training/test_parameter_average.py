"""`ParameterAverage` (moving average of a unit's weights) alone and inside `UnitRunner`, with resume."""

import shutil

import pytest
import torch
from accelerate import Accelerator

from training.averaging import AVERAGE_FILE, ParameterAverage
from training.checkpointing import STATE_NAME, CheckpointManager, StageStore, TrainerState
from training.data import TensorDictDataset, train_loader
from training.loop import UnitRunner, UnitSpec

NUM_ITEMS, BATCH, SEED, DECAY = 18, 4, 3, 0.8
STEPS = -(-NUM_ITEMS // BATCH)


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


class AveragedUnit:
    """A linear model trained by SGD with a moving average of its weights; validation reports the weights
    it sees, so a test can tell the averaged ones from the trained ones."""

    def __init__(self, accelerator, state, scores):
        accelerator.free_memory()
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        data = TensorDictDataset(
            {"index": torch.arange(NUM_ITEMS), "x": torch.linspace(-1, 1, NUM_ITEMS * 3).view(-1, 3)}
        )
        loader, self.sampler = train_loader(data, BATCH, SEED)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.average = ParameterAverage(dict(model.named_parameters()), DECAY)
        self.state, self.scores = state, scores
        self.trained_after_step: list[torch.Tensor] = []
        self.loaded = None

    def step(self, batch):
        loss = (self.model(batch["x"]) - 1).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.trained_after_step.append(self.model.weight.detach().clone())
        return {"total": loss.detach()}

    def validate(self):
        return {"score": self.scores[self.state.epoch], "weight_sum": float(self.model.weight.detach().sum())}

    def spec(self):
        return UnitSpec(
            name="tiny",
            epochs=len(self.scores),
            loader=self.loader,
            sampler=self.sampler,
            train_step=self.step,
            validate=self.validate,
            metric="score",
            greater_is_better=True,
            optimizer=self.optimizer,
            best_tensors=lambda: {"weight": self.model.weight.detach().clone()},
            load_best=lambda tensors: setattr(self, "loaded", tensors),
            average=self.average,
        )


def _run(accelerator, state, unit, folder, resume_dir=None, checkpointing_steps=None):
    runner = UnitRunner(
        accelerator, state, CheckpointManager(folder), StageStore(folder), SEED, checkpointing_steps, 1
    )
    return runner.run(unit.spec(), resume_dir)


def test_validation_and_the_kept_epoch_see_the_averaged_weights(tmp_path):
    accelerator, state = Accelerator(), TrainerState()
    unit = AveragedUnit(accelerator, state, scores=[0.1, 0.5, 0.3])
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
    reference = AveragedUnit(accelerator, state, scores=[0.1, 0.5, 0.3])
    reference_summary = _run(accelerator, state, reference, tmp_path / "ref", checkpointing_steps=1)
    for path in CheckpointManager(tmp_path / "ref").list():
        saved = TrainerState.from_file(path / STATE_NAME)
        if (saved.epoch, saved.step_in_epoch) == (epoch, step_in_epoch):
            break
    else:
        raise AssertionError(f"no checkpoint at epoch {epoch}, batch {step_in_epoch}")
    assert (path / AVERAGE_FILE).is_file()
    copy = tmp_path / "resumed" / "checkpoints" / path.name
    shutil.copytree(path, copy)
    # the run's own folder keeps the best weights saved before the kill (best epoch 1)
    shutil.copytree(tmp_path / "ref" / "stages", tmp_path / "resumed" / "stages")
    resumed = AveragedUnit(accelerator, saved, scores=[0.1, 0.5, 0.3])
    summary = _run(accelerator, saved, resumed, tmp_path / "resumed", resume_dir=copy)
    assert summary["history"] == reference_summary["history"]
    assert torch.equal(resumed.average.averages["weight"], reference.average.averages["weight"])
    assert torch.equal(resumed.loaded["weight"], reference.loaded["weight"])
