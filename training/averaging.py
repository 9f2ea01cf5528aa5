"""Exponential moving average of a unit's trained parameters (Polyak averaging).

After every optimizer update ``theta_bar <- decay * theta_bar + (1 - decay) * theta`` (Polyak & Juditsky,
SIAM J. Control Optim. 1992; the exponential form as in Tarvainen & Valpola, NeurIPS 2017), starting from
the initial weights. The averaged weights are the ones validated, kept as the best epoch and saved: on small
data they are less noisy than the last step's (docs/REAL_DATA.md measures the gain). The average is saved in
every checkpoint (``averaged_parameters.safetensors``) so that a resumed run continues it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from training.checkpointing import atomic_save_tensors, load_tensors

AVERAGE_FILE = "averaged_parameters.safetensors"


class ParameterAverage:
    """The moving average of ``parameters`` (name -> parameter), updated by `update`, swapped in by `applied`.

    Args:
        parameters: the trained parameters of the unit, by name (the names key the saved file).
        decay: the weight of the past in each update, in (0, 1).
    """

    def __init__(self, parameters: dict[str, torch.nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the averaging decay must be in (0, 1), got {decay!r}")
        self.parameters = parameters
        self.decay = decay
        self.averages = {name: p.detach().clone() for name, p in parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        """``theta_bar <- decay * theta_bar + (1 - decay) * theta`` for every parameter, in place."""
        names = list(self.parameters)
        torch._foreach_lerp_(
            [self.averages[n] for n in names], [self.parameters[n].detach() for n in names], 1.0 - self.decay
        )

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the parameters hold the averages; the trained values come back after it."""
        with torch.no_grad():
            trained = {name: p.detach().clone() for name, p in self.parameters.items()}
            for name, p in self.parameters.items():
                p.copy_(self.averages[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.parameters.items():
                    p.copy_(trained[name])

    def save(self, folder: str | Path) -> None:
        atomic_save_tensors(self.averages, Path(folder) / AVERAGE_FILE)

    def load(self, folder: str | Path) -> None:
        """Restore the averages saved by `save` in `folder` (a checkpoint), checking names and shapes."""
        path = Path(folder) / AVERAGE_FILE
        if not path.is_file():
            raise ValueError(
                f"{path}: missing; this checkpoint was saved without parameter averaging, but the run "
                "averages the student's parameters (student_ema_decay): resume with the same settings"
            )
        saved = load_tensors(path)
        if set(saved) != set(self.averages):
            missing, extra = sorted(set(self.averages) - set(saved)), sorted(set(saved) - set(self.averages))
            raise ValueError(
                f"{path}: averaged parameters do not match the model (missing {missing}, extra {extra})"
            )
        for name, tensor in saved.items():
            if tensor.shape != self.averages[name].shape:
                raise ValueError(
                    f"{path}: {name} has shape {tuple(tensor.shape)}, the model's is {tuple(self.averages[name].shape)}"
                )
            self.averages[name].copy_(tensor)
