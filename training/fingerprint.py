"""The fingerprint of a run: the data and the settings that shape its result, saved in every checkpoint.

Resuming compares the checkpoint's fingerprint with the current run's and refuses any difference, naming
the settings that differ, so that a checkpoint never continues on other data or other settings.
"""

from __future__ import annotations

import json
import os
from typing import Any

# Arguments that change where and how a run reports, never the weights it trains.
OPERATIONAL_ARGUMENTS = frozenset(
    {
        "config",
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "cache_dir",
        "dataloader_num_workers",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "report_to",
        "logging_steps",
        "push_to_hub",
        "hub_model_id",
        "hub_private",
        "eval_batch_size",
        "eval_top_k",
    }
)


def run_fingerprint(resolved: dict[str, Any], split_sizes: dict[str, int], dims: Any) -> dict[str, Any]:
    """JSON-ready mapping of the result-shaping arguments, the data folder (absolute), the split sizes and
    the input widths."""
    fingerprint = {k: v for k, v in resolved.items() if k not in OPERATIONAL_ARGUMENTS}
    if fingerprint.get("data_dir"):
        fingerprint["data_dir"] = os.path.abspath(fingerprint["data_dir"])
    fingerprint["split_sizes"] = dict(sorted(split_sizes.items()))
    fingerprint["data_dims"] = dims
    return json.loads(json.dumps(fingerprint, default=str))


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name: checkpoint X, now Y"`` for every entry that differs."""
    return [
        f"{name}: checkpoint {saved.get(name)!r}, now {current.get(name)!r}"
        for name in sorted(set(saved) | set(current))
        if saved.get(name) != current.get(name)
    ]
