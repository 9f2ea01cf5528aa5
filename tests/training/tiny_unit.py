"""A tiny in-process unit of work for `UnitRunner` tests: a linear model trained by SGD on 18 items."""

import torch

from training.averaging import ParameterAverage
from training.checkpointing import STATE_NAME, CheckpointManager, StageStore, TrainerState
from training.data import TensorDictDataset, train_loader
from training.loop import UnitRunner, UnitSpec

NUM_ITEMS, BATCH, SEED = 18, 4, 3  # 5 batches per epoch, the last one short
STEPS = -(-NUM_ITEMS // BATCH)


class TinyUnit:
    """Records the item indices of every batch it trains on and its weights after every step; validation
    reports the given score of the epoch and the sum of the weights it sees. With `average_decay` the unit
    keeps a `ParameterAverage` of its weights."""

    def __init__(self, accelerator, state, epochs, scores, greater_is_better=True, average_decay=None):
        accelerator.free_memory()  # as each stage of train.py does: one unit's objects per checkpoint
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        data = TensorDictDataset(
            {"index": torch.arange(NUM_ITEMS), "x": torch.linspace(-1, 1, NUM_ITEMS * 3).view(-1, 3)}
        )
        loader, self.sampler = train_loader(data, BATCH, SEED)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.average = (
            ParameterAverage(dict(model.named_parameters()), average_decay) if average_decay else None
        )
        self.state, self.scores, self.epochs = state, scores, epochs
        self.greater_is_better = greater_is_better
        self.batches: list[list[int]] = []
        self.trained_after_step: list[torch.Tensor] = []
        self.loaded = None

    def step(self, batch):
        self.batches.append(batch["index"].tolist())
        loss = (self.model(batch["x"]) - 1).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.trained_after_step.append(self.model.weight.detach().clone())
        return {"total": loss.detach()}

    def validate(self):
        # state.epoch is the epoch being validated (the runner advances it afterwards)
        return {"score": self.scores[self.state.epoch], "weight_sum": float(self.model.weight.detach().sum())}

    def spec(self):
        return UnitSpec(
            name="tiny",
            epochs=self.epochs,
            loader=self.loader,
            sampler=self.sampler,
            train_step=self.step,
            validate=self.validate,
            metric="score",
            greater_is_better=self.greater_is_better,
            optimizer=self.optimizer,
            best_tensors=lambda: {
                "weight": self.model.weight.detach().clone(),
                "epoch": torch.tensor(self.state.epoch),
            },
            load_best=lambda tensors: setattr(self, "loaded", tensors),
            average=self.average,
        )


def tiny_runner(accelerator, state, folder, checkpointing_steps=None):
    """A `UnitRunner` writing its checkpoints and stage weights under `folder`."""
    return UnitRunner(
        accelerator, state, CheckpointManager(folder), StageStore(folder), SEED, checkpointing_steps, 1
    )


def checkpoint_at(folder, epoch, step_in_epoch):
    """(path, trainer state) of the checkpoint under `folder` saved at (epoch, micro-batch in the epoch)."""
    for path in CheckpointManager(folder).list():
        state = TrainerState.from_file(path / STATE_NAME)
        if (state.epoch, state.step_in_epoch) == (epoch, step_in_epoch):
            return path, state
    raise AssertionError(f"no checkpoint at epoch {epoch}, batch {step_in_epoch}")
