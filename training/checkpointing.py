"""Atomic Accelerate checkpoints and the small JSON state that says where a run stands.

A checkpoint is `output_dir/checkpoints/checkpoint-<seq>/`: what `Accelerator.save_state` writes
(model weights as safetensors, optimizer and RNG states in Accelerate's format) plus
`trainer_state.json` (which unit of work, epoch, micro-batch within the epoch, global step, best
validation metric, plateau-scheduler state). It is written to `checkpoint-<seq>.tmp` and renamed into
place, so a run killed while saving never leaves a half-written checkpoint behind.

Finished units (teachers, student, each hash head) also leave their best weights under
`output_dir/stages/<unit>/`; a resumed run loads them instead of training them again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from modeling_crcgs.utils import atomic_write, atomic_write_text, replace_directory
from training.run_files import RunFiles

STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    """Where the run stands; saved as JSON inside every checkpoint.

    `unit` is the unit of work in progress ("teachers", "student" or "hash-<bits>"); `epoch` counts
    its finished epochs and `step_in_epoch` the micro-batches done in the current one (the batches
    `skip_first_batches` skips on resume); `global_step` counts optimizer updates over the whole run
    (the step of every logged value) and `checkpoint_seq` the checkpoints saved so far. `fingerprint` is
    the run's data and result-shaping settings (`training.fingerprint.run_fingerprint`).
    """

    unit: str = ""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    checkpoint_seq: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    scheduler_state: Optional[dict[str, Any]] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def start_unit(self, unit: str) -> None:
        """Reset the per-unit counters for a new unit of work (the run-wide counters carry on)."""
        self.unit, self.epoch, self.step_in_epoch = unit, 0, 0
        self.best_metric, self.best_epoch, self.scheduler_state = None, None, None
        self.history = []

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainerState:
        try:
            data = json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a trainer state (invalid JSON: {err})") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: not a trainer state (expected a JSON object, got {type(data).__name__})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{path}: unknown trainer-state field(s) {unknown}")
        state = cls(**data)
        for name in ("epoch", "step_in_epoch", "global_step", "checkpoint_seq"):
            value = getattr(state, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{path}: {name} must be an integer >= 0, got {value!r}")
        if not isinstance(state.unit, str) or not isinstance(state.fingerprint, dict):
            raise ValueError(f"{path}: unit must be a string and fingerprint an object")
        return state


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Save a flat dict of tensors as safetensors (folder created) through a temp file + `os.replace`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, tmp))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    return load_file(str(path))


class CheckpointManager:
    """Save, find and prune the checkpoints of one output folder."""

    def __init__(self, output_dir: str | os.PathLike, total_limit: Optional[int] = None) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit

    def list(self) -> list[Path]:
        """Finished checkpoints, oldest first (temp folders of interrupted saves are ignored)."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _CHECKPOINT_RE.match(p.name))]
        return [p for _, p in sorted(found) if (p / STATE_NAME).is_file()]

    def resolve(self, spec: str) -> Path:
        """'latest' -> the newest checkpoint of this output folder; otherwise a checkpoint folder path."""
        if spec == "latest":
            found = self.list()
            if not found:
                raise ValueError(f"--resume_from_checkpoint latest: no checkpoint under {self.root}")
            return found[-1]
        path = Path(spec)
        if not (path / STATE_NAME).is_file():
            raise ValueError(
                f"--resume_from_checkpoint: expected a checkpoint folder with {STATE_NAME}, got {spec!r}"
            )
        if path.resolve().parent != self.root.resolve():
            raise ValueError(
                f"--resume_from_checkpoint: {spec!r} is another run's checkpoint (it is not under "
                f"{self.root}); its finished stages live in {path.resolve().parent.parent}: resume there "
                "with --output_dir set to that folder"
            )
        return path

    def save(
        self, accelerator: Any, state: TrainerState, write_extra: Optional[Callable[[Path], None]] = None
    ) -> Path:
        """`save_state` into a temp folder, add trainer_state.json (and what `write_extra(folder)` writes, on
        the main process), rename into place, prune old ones."""
        state.checkpoint_seq += 1
        final = self.root / f"checkpoint-{state.checkpoint_seq:06d}"
        tmp = self.root / f"{final.name}.tmp"
        if accelerator.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            self.root.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if write_extra is not None:
                write_extra(tmp)
            atomic_write_text(tmp / STATE_NAME, state.to_json())
            replace_directory(tmp, final)
            RunFiles(self.root.parent).record(final.relative_to(self.root.parent), "logs")
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _prune(self) -> None:
        if self.total_limit is None:
            return
        for old in self.list()[: -self.total_limit]:
            shutil.rmtree(old, ignore_errors=True)


class StageStore:
    """Best and final weights of each unit of work under `output_dir/stages/<unit>/`."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.root = Path(output_dir) / "stages"

    def best_path(self, unit: str) -> Path:
        return self.root / unit / "best.safetensors"

    def done_path(self, unit: str) -> Path:
        return self.root / unit / "done.json"

    def is_done(self, unit: str) -> bool:
        return self.done_path(unit).is_file()

    def save_best(self, unit: str, tensors: dict[str, torch.Tensor]) -> None:
        atomic_save_tensors(tensors, self.best_path(unit))
        RunFiles(self.root.parent).record(self.best_path(unit).relative_to(self.root.parent))

    def load_best(self, unit: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.best_path(unit))

    def mark_done(self, unit: str, summary: dict[str, Any]) -> None:
        atomic_write_text(self.done_path(unit), json.dumps(summary, indent=2))
        RunFiles(self.root.parent).record(self.done_path(unit).relative_to(self.root.parent))

    def summary(self, unit: str) -> dict[str, Any]:
        return json.loads(self.done_path(unit).read_text())
