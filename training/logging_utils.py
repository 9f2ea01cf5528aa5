"""Experiment tracking: an always-on JSONL tracker, the user's trackers, and the loss-curve plot."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
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


def _smoothed(values: np.ndarray) -> np.ndarray:
    """Moving average over a window of ~1/25 of the curve (at least 1 point), same length as ``values``
    (the window shrinks at the edges)."""
    window = max(1, len(values) // 25)
    kernel = np.ones(window)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones(len(values)), kernel, mode="same")


def _stage_series(records: list[dict[str, Any]], stages: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    """Per stage: ``terms`` {term: (steps, values)} of the training losses and ``val`` {metric: (steps, values)}
    of the per-epoch validation; only the stages in ``stages`` when given, in that order."""
    series: dict[str, dict[str, Any]] = {}
    for record in records:
        for key, value in record.items():
            kind = "/loss/" if "/loss/" in key else "/val/" if "/val/" in key else None
            if kind is None or not isinstance(value, (int, float)):
                continue
            stage, name = key.split(kind, 1)
            group = series.setdefault(stage, {"terms": {}, "val": {}})["terms" if kind == "/loss/" else "val"]
            xs, ys = group.setdefault(name, ([], []))
            xs.append(record["step"])
            ys.append(float(value))
    if stages is None:
        return series
    return {stage: series[stage] for stage in stages if stage in series}


def plot_loss_curves(
    log_path: str | os.PathLike, out_path: str | os.PathLike, stages: Optional[list[str]] = None
) -> Path:
    """One panel per stage (only ``stages`` when given): each training loss term smoothed (moving average,
    the raw values faint behind it) against the global step, and on the right axis the validation metric of
    each epoch (mAP, or the teachers' validation loss) with the kept (best) epoch marked. Legends sit to the
    right of the panels, off the data. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _stage_series(read_log(log_path), stages)
    rows = max(len(panels), 1)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows), squeeze=False)
    for ax, (stage, data) in zip(axes[: len(panels), 0], panels.items(), strict=True):
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (term, (xs, ys)) in enumerate(sorted(data["terms"].items())):
            color = colors[i % len(colors)]
            values = np.asarray(ys)
            ax.plot(xs, values, color=color, alpha=0.2, linewidth=0.6)
            ax.plot(xs, _smoothed(values), color=color, linewidth=1.5, label=term)
        ax.set_title(f"stage: {stage}", loc="left", fontsize=11)
        ax.set_xlabel("global step")
        ax.set_ylabel("training loss (symlog)")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        # the metric that picks the kept epoch: validation mAP, or the teachers' validation loss
        selection = [m for m in ("map", "loss") if m in data["val"]][:1]
        for metric in selection:
            xs, ys = data["val"][metric]
            greater_is_better = metric == "map"
            shown = "mAP" if greater_is_better else metric
            twin = ax.twinx()
            line = twin.plot(
                xs, ys, "k-o", markersize=4, linewidth=1.2, label=f"validation {shown} (per epoch)"
            )
            best = int(np.argmax(ys) if greater_is_better else np.argmin(ys))
            star = twin.plot(
                [xs[best]], [ys[best]], "r*", markersize=13, label=f"kept epoch ({shown} {ys[best]:.4f})"
            )
            twin.set_ylabel(f"validation {shown}")
            handles += line + star
            labels += [h.get_label() for h in line + star]
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.14, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    atomic_write(Path(out_path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return Path(out_path)
