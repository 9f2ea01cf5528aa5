"""Experiment tracking: an always-on JSONL tracker, the user's trackers, and the loss-curve plot."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from accelerate.tracking import GeneralTracker

from modeling_crcgs.utils import atomic_write

LOG_NAME = "train_log.jsonl"
_OPTIONAL_TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


class JSONLTracker(GeneralTracker):
    """Append every logged dict as one JSON line `{"step": s, **values}` (main process only).

    A resumed run appends to the same file; `read_log` keeps the last value logged for each step, so
    steps replayed after a resume are not counted twice.
    """

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(logging_dir) / LOG_NAME
        self._file = None

    @property
    def tracker(self) -> Any:
        return self._file

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def store_init_configuration(self, values: dict) -> None:
        self._write({"step": None, "config": values})

    def log(self, values: dict, step: Optional[int] = None, **kwargs: Any) -> None:
        self._write({"step": step, **{k: _plain(v) for k, v in values.items()}})

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: dict) -> None:
        if self._file is None:
            self.start()
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def select_trackers(report_to: list[str], logging_dir: str | os.PathLike) -> tuple[list[Any], list[str]]:
    """The JSONL tracker plus each requested tracker whose package is installed, and the missing ones."""
    wanted = set(report_to)
    if "all" in wanted:
        wanted = set(_OPTIONAL_TRACKERS)
    trackers: list[Any] = [JSONLTracker(logging_dir)]
    missing = []
    for name in sorted(wanted & set(_OPTIONAL_TRACKERS)):
        if any(importlib.util.find_spec(module) for module in _OPTIONAL_TRACKERS[name]):
            trackers.append(name)
        else:
            missing.append(name)
    return trackers, missing


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The logged records with a step, the last one written per step, ordered by step."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if record.get("step") is not None:
            by_step.setdefault(record["step"], {}).update(record)
    return [by_step[s] for s in sorted(by_step)]


def truncate_log(path: str | os.PathLike, step: int) -> int:
    """Drop the records logged after optimizer step ``step`` (a resume redoes those steps); return how many.

    Run before the log is opened for appending (the file is replaced atomically). A line that is not JSON
    (a write cut by a kill) is dropped too.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(record, dict) and (record.get("step") is None or record["step"] <= step):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(f"{line}\n" for line in kept)))
    return dropped


def plot_loss_curves(log_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """One panel per stage with every per-term loss against the global step, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    panels: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for record in records:
        for key, value in record.items():
            if "/loss/" not in key or not isinstance(value, (int, float)):
                continue
            stage, term = key.split("/loss/", 1)
            xs, ys = panels.setdefault(stage, {}).setdefault(term, ([], []))
            xs.append(record["step"])
            ys.append(value)
    out_path = Path(out_path)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, (stage, terms) in zip(axes[0][: len(panels)], panels.items(), strict=True):
        for term, (xs, ys) in sorted(terms.items()):
            ax.plot(xs, ys, label=term, linewidth=1)
        ax.set_title(stage)
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out_path
