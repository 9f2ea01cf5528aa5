"""One training loop for every unit of work (teachers, student, each hash head).

A unit is described by a `UnitSpec` (its loader, one training step, its validation and what "best"
means); `UnitRunner.run` does the epochs, per-step logging, checkpointing, resume, the plateau lr
halving, best-epoch selection and the non-finite-loss guard the same way for all of them.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from tqdm.contrib.logging import logging_redirect_tqdm

from training.averaging import ParameterAverage
from training.checkpointing import CheckpointManager, StageStore, TrainerState
from training.console import format_metrics, get_logger, progress_bar

logger = get_logger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the term, where it happened and the
    checkpoint saved before stopping."""

    def __init__(self, term: str, value: float, where: str = "", checkpoint: Optional[Path] = None) -> None:
        message = f"non-finite loss: term {term!r} = {value}"
        if where:
            message += f" at {where}"
        if checkpoint is not None:
            message += f"; training stopped and the state was saved to {checkpoint}"
        super().__init__(message)
        self.term, self.value, self.where, self.checkpoint = term, value, where, checkpoint


def check_finite(accelerator: Any, output: Any) -> None:
    """Raise `NonFiniteLossError` naming the first non-finite term, on every process at once."""
    bad = not bool(torch.isfinite(output.loss.detach()).all())
    if accelerator.num_processes > 1:
        flag = torch.tensor([float(bad)], device=output.loss.device)
        bad = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    if bad:
        for term, value in (output.loss_terms or {}).items():
            value = float(value.detach().float().mean()) if torch.is_tensor(value) else float(value)
            if not math.isfinite(value):
                raise NonFiniteLossError(term, value)
        raise NonFiniteLossError("total", float(output.loss.detach().float().mean()))


def step_seed(seed: int, unit: str, epoch: int, step: int, process_index: int) -> int:
    """A seed for one training step that depends on where the step is, not on the run's history.

    Re-seeding torch before every step makes dropout draws identical in a resumed and an
    uninterrupted run.
    """
    entropy = [seed, zlib.crc32(unit.encode()), epoch, step, process_index]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def set_loader_epoch(loader: Any, sampler: Any, epoch: int) -> None:
    """Make `epoch` the epoch of the prepared `loader`, which owns it, and through it of `sampler`.

    Accelerate's `DataLoaderShard.__iter__` starts every pass with `self.set_epoch(self.iteration)`,
    overriding the sampler's epoch with the loader's own count of passes, and `skip_first_batches`
    copies that count into the loader it returns. A resumed run's first epoch goes through such a
    derived loader, so the prepared loader's count falls behind the real epoch (it would replay an
    earlier epoch's order); setting the epoch on the prepared loader keeps the count, the sampler and
    every loader derived from it on `epoch`. A plain `DataLoader` has no epoch: its sampler gets it.
    """
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    else:
        sampler.set_epoch(epoch)


@dataclass
class UnitSpec:
    """What `UnitRunner.run` needs to train one unit of work."""

    name: str
    epochs: int
    loader: Any  # a prepared DataLoader
    sampler: Any  # its EpochShuffleSampler (its epoch is set through the loader, and checked)
    train_step: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    # None: a refit on train + validation, which has nothing to validate on: its last epoch is kept
    validate: Optional[Callable[[], dict[str, float]]]
    metric: str
    greater_is_better: bool
    optimizer: Any  # the main (prepared) optimizer: its lr is logged and halved on plateau
    best_tensors: Callable[[], dict[str, torch.Tensor]]
    load_best: Callable[[dict[str, torch.Tensor]], None]
    plateau_patience: Optional[int] = None
    min_lr: float = 0.0
    early_stopping_patience: Optional[int] = None  # stop after this many epochs without a better metric
    average: Optional[ParameterAverage] = None  # validate, keep and save this moving average of the weights

    def kept_weights(self) -> AbstractContextManager[None]:
        """Within the block the model holds the weights the unit validates and keeps: its moving average when it
        keeps one, else the weights as trained."""
        return self.average.applied() if self.average is not None else nullcontext()


def _patience_exhausted(patience: Optional[int], epoch: int, best_epoch: Optional[int]) -> bool:
    """True when ``patience`` epochs have passed since the best one (never without a patience)."""
    return patience is not None and best_epoch is not None and epoch - best_epoch >= patience


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_state_or_warn(acc: Any, resume_dir: Path) -> None:
    """``acc.load_state``, warning when Accelerate skipped the random-state file (it says so only at INFO
    level): the resumed run then draws other random numbers than an uninterrupted one."""
    accelerate_logger = logging.getLogger("accelerate.checkpointing")
    records, level, propagate = _Records(), accelerate_logger.level, accelerate_logger.propagate
    accelerate_logger.addHandler(records)
    accelerate_logger.setLevel(logging.INFO)
    accelerate_logger.propagate = False  # collect its INFO lines here, print none of them
    try:
        acc.load_state(str(resume_dir))
    finally:
        accelerate_logger.removeHandler(records)
        accelerate_logger.setLevel(level)
        accelerate_logger.propagate = propagate
    if any("Could not load random states" in m for m in records.messages):
        logger.warning(
            f"{resume_dir}: the random-number state of process {acc.process_index} could not be loaded; "
            "the resumed run continues with other random draws and will not match an uninterrupted run"
        )


class UnitRunner:
    """Runs units of work with one Accelerator, checkpoint folder, stage store and trainer state."""

    def __init__(
        self,
        accelerator: Any,
        state: TrainerState,
        checkpoints: CheckpointManager,
        store: StageStore,
        seed: int,
        checkpointing_steps: Optional[int],
        logging_steps: int,
    ) -> None:
        self.accelerator = accelerator
        self.state = state
        self.checkpoints = checkpoints
        self.store = store
        self.seed = seed
        self.checkpointing_steps = checkpointing_steps
        self.logging_steps = logging_steps

    def _start(self, spec: UnitSpec, resume_dir: Optional[Path]) -> Optional[ReduceLROnPlateau]:
        """Begin the unit, or resume it from `resume_dir` (Accelerate state + plateau scheduler); returns the
        plateau scheduler when the unit has one."""
        acc, state = self.accelerator, self.state
        plateau = None
        if spec.plateau_patience is not None:
            plateau = ReduceLROnPlateau(
                getattr(spec.optimizer, "optimizer", spec.optimizer),
                mode="max" if spec.greater_is_better else "min",
                factor=0.5,
                patience=spec.plateau_patience,
                min_lr=spec.min_lr,
            )
        if resume_dir is not None:
            load_state_or_warn(acc, resume_dir)
            if spec.average is not None:
                spec.average.load(resume_dir)
            if plateau is not None and state.scheduler_state is not None:
                plateau.load_state_dict(state.scheduler_state)
            logger.info(
                f"[{spec.name}] resumed from {resume_dir} at epoch {state.epoch}, batch {state.step_in_epoch}"
            )
        else:
            state.start_unit(spec.name)
        return plateau

    def _end_epoch(self, spec: UnitSpec, epoch: int, plateau: Optional[ReduceLROnPlateau]) -> None:
        """Validate after `epoch` (the averaged weights, when the unit keeps an average): step the plateau
        scheduler, keep the best weights, log the metrics."""
        acc, state = self.accelerator, self.state
        if spec.validate is None:
            self._keep_last(spec, epoch)
            return
        with spec.kept_weights():
            metrics = spec.validate()
            self._keep_if_best(spec, epoch, metrics[spec.metric])
        value = metrics[spec.metric]
        if plateau is not None:
            plateau.step(value)
            state.scheduler_state = plateau.state_dict()
        state.history.append({"epoch": epoch, **metrics})
        acc.log({f"{spec.name}/val/{k}": v for k, v in metrics.items()}, step=state.global_step)
        logger.info(
            f"{spec.name} epoch {epoch + 1}/{spec.epochs}: {format_metrics(metrics)} "
            f"(best {spec.metric} {state.best_metric:.4f} at epoch {state.best_epoch + 1})"
        )

    def _keep_last(self, spec: UnitSpec, epoch: int) -> None:
        """A unit without validation (a refit): the weights of its last epoch are the ones kept."""
        state = self.state
        state.best_epoch = epoch
        state.history.append({"epoch": epoch})
        if epoch + 1 == spec.epochs and self.accelerator.is_main_process:
            with spec.kept_weights():
                self.store.save_best(spec.name, spec.best_tensors())
        logger.info(f"{spec.name} epoch {epoch + 1}/{spec.epochs} (no validation: the last epoch is kept)")

    def _keep_if_best(self, spec: UnitSpec, epoch: int, value: float) -> None:
        """Record `epoch` as the best and save its weights when `value` beats the best metric so far."""
        state = self.state
        improved = state.best_metric is None or (
            value > state.best_metric if spec.greater_is_better else value < state.best_metric
        )
        if improved:
            state.best_metric, state.best_epoch = value, epoch
            if self.accelerator.is_main_process:
                self.store.save_best(spec.name, spec.best_tensors())

    def _save_checkpoint(self, spec: UnitSpec) -> Path:
        """A checkpoint of the run, with the unit's parameter average when it keeps one."""
        write_extra = spec.average.save if spec.average is not None else None
        return self.checkpoints.save(self.accelerator, self.state, write_extra)

    def _epochs(self, spec: UnitSpec, plateau: Optional[ReduceLROnPlateau], bar: Any) -> None:
        """The epochs of `spec` from the state's position: train steps, then validation per epoch."""
        acc, state = self.accelerator, self.state
        # A run stopped early and killed before it was marked done resumes past its last epoch.
        stopped = state.epoch > 0 and _patience_exhausted(
            spec.early_stopping_patience, state.epoch - 1, state.best_epoch
        )
        for epoch in range(state.epoch, state.epoch if stopped else spec.epochs):
            set_loader_epoch(spec.loader, spec.sampler, epoch)
            loader = (
                acc.skip_first_batches(spec.loader, state.step_in_epoch)
                if state.step_in_epoch
                else spec.loader
            )
            for batch in loader:
                # Accelerate sets the sampler's epoch when iteration starts: a silent replay otherwise
                if spec.sampler.epoch != epoch:
                    raise RuntimeError(
                        f"[{spec.name}] epoch {epoch} is drawing the shuffle order of epoch {spec.sampler.epoch}"
                    )
                torch.manual_seed(
                    step_seed(self.seed, spec.name, epoch, state.step_in_epoch, acc.process_index)
                )
                try:
                    terms = spec.train_step(batch)
                except NonFiniteLossError as err:
                    where = f"{spec.name} step {state.global_step + 1} (epoch {epoch}, batch {state.step_in_epoch})"
                    path = self._save_checkpoint(spec)
                    raise NonFiniteLossError(err.term, err.value, where, path) from None
                state.step_in_epoch += 1
                bar.update(1)
                if not acc.sync_gradients:
                    continue
                state.global_step += 1
                if spec.average is not None:
                    spec.average.update()
                if state.global_step % self.logging_steps == 0:
                    values = {f"{spec.name}/loss/{k}": float(v) for k, v in terms.items()}
                    values[f"{spec.name}/lr"] = spec.optimizer.param_groups[0]["lr"]
                    acc.log(values, step=state.global_step)
                    bar.set_postfix(loss=f"{values.get(f'{spec.name}/loss/total', float('nan')):.4g}")
                if self.checkpointing_steps and state.global_step % self.checkpointing_steps == 0:
                    self._save_checkpoint(spec)
            self._end_epoch(spec, epoch, plateau)
            state.epoch, state.step_in_epoch = epoch + 1, 0
            self._save_checkpoint(spec)
            if _patience_exhausted(spec.early_stopping_patience, epoch, state.best_epoch):
                logger.info(
                    f"{spec.name}: early stop after epoch {epoch + 1}: no better {spec.metric} for "
                    f"{spec.early_stopping_patience} epochs (best epoch {state.best_epoch + 1})"
                )
                break

    def run(self, spec: UnitSpec, resume_dir: Optional[Path] = None) -> dict[str, Any]:
        """Train `spec` (resuming from `resume_dir` when given), keep its best epoch, mark it done."""
        acc, state = self.accelerator, self.state
        plateau = self._start(spec, resume_dir)
        steps_per_epoch = len(spec.loader)
        bar = progress_bar(
            spec.epochs * steps_per_epoch,
            state.epoch * steps_per_epoch + state.step_in_epoch,
            spec.name,
            acc.is_local_main_process,
        )
        with logging_redirect_tqdm():  # log lines print above the bar, not through it
            self._epochs(spec, plateau, bar)
        bar.close()
        acc.wait_for_everyone()
        spec.load_best(self.store.load_best(spec.name))
        summary = {
            "unit": spec.name,
            "best_epoch": state.best_epoch,
            f"best_{spec.metric}": state.best_metric,
            "history": state.history,
        }
        if acc.is_main_process:
            self.store.mark_done(spec.name, summary)
        acc.wait_for_everyone()
        return summary
