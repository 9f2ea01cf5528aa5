"""What a training run prints: log lines a person reads, progress bars only on a terminal.

- ``get_logger``: accelerate's multi-process logger, with the ``[RANK i]`` prefix only when several
  processes run (one process has nothing to tell apart);
- ``progress_bar``: a tqdm bar on the local main process of an interactive terminal; redirected to a
  file or a CI log it is off (each refresh would otherwise be a line of output), the per-epoch log lines
  carry the progress instead;
- ``quiet_library_bars``: the same rule for the bars of ``datasets`` and ``transformers``;
- ``format_metrics``: ``{"map": 0.123456}`` -> ``"map 0.1235"`` (4 digits).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from accelerate.logging import MultiProcessAdapter
from accelerate.state import PartialState
from tqdm.auto import tqdm


class _RankAdapter(MultiProcessAdapter):
    """accelerate's adapter; ``[RANK i]`` is added only when more than one process runs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("stacklevel", 2)
        if PartialState().num_processes > 1:
            msg = f"[RANK {PartialState().process_index}] {msg}"
        return msg, kwargs


def get_logger(name: str) -> _RankAdapter:
    """A logger that logs on the main process only by default (``main_process_only=False`` for all)."""
    return _RankAdapter(logging.getLogger(name), {})


def interactive() -> bool:
    """Whether standard error is a terminal (progress bars redraw in place there)."""
    return sys.stderr.isatty()


def progress_bar(total: int, initial: int, desc: str, main_process: bool) -> tqdm:
    """A tqdm bar, disabled off the local main process and when standard error is not a terminal."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not (main_process and interactive()))


def quiet_library_bars() -> None:
    """Turn off the progress bars of ``datasets`` and ``transformers`` when not on a terminal."""
    if interactive():
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def format_metrics(metrics: dict[str, Any]) -> str:
    """``"name value, ..."`` with floats rounded to 4 digits after the point."""
    return ", ".join(
        f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
        for name, value in metrics.items()
    )
