"""Turn rows of a CRCGS dataset split into keyword arguments of the model's `forward`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# Dataset column -> (model keyword argument, dtype). Labels go to float for BCE-with-logits.
_FEATURE_COLUMNS: dict[str, tuple[str, torch.dtype]] = {
    "image_features": ("image_features", torch.float32),
    "text_features": ("text_features", torch.float32),
    "labels": ("labels", torch.float32),
    "index": ("index", torch.int64),
    # Raw inputs of backbone towers, made per batch by training.raw_inputs.RawTransform.
    "pixel_values": ("pixel_values", torch.float32),
    "input_ids": ("input_ids", torch.int64),
    "attention_mask": ("attention_mask", torch.int64),
}


class CRCGSCollator:
    """Stack dataset rows into a batch of tensors keyed like `CRCGSForPreTraining.forward`'s arguments.

    Rows are mappings as returned by a `datasets.Dataset` split of `load_crcgs_dataset` (any format:
    Python lists, numpy arrays or tensors). Columns the collator knows are stacked; the others are
    ignored, so a split that also holds `image`/`text` columns collates its feature columns only.

    Args:
        columns (`Sequence[str]`, *optional*):
            Which of `image_features`, `text_features`, `labels`, `index` to emit. Defaults to every
            one of them present in the first row.

    The `index` key (the row of each item in its source) is not a model argument: training code pops it
    to check that evaluation saw every item exactly once.

    Example:

    ```python
    >>> collator = CRCGSCollator()
    >>> batch = collator([{"image_features": [0.0, 1.0], "labels": [1, 0], "index": 3}])
    >>> batch["image_features"].shape, batch["labels"].dtype
    (torch.Size([1, 2]), torch.float32)
    ```
    """

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        if columns is not None:
            unknown = sorted(set(columns) - set(_FEATURE_COLUMNS))
            if unknown:
                raise ValueError(f"columns: expected names among {sorted(_FEATURE_COLUMNS)}, got {unknown}")
        self.columns = None if columns is None else tuple(columns)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(rows) == 0:
            raise ValueError("rows: expected at least one dataset row, got an empty batch")
        columns = self.columns or tuple(c for c in _FEATURE_COLUMNS if c in rows[0])
        if not columns:
            raise ValueError(
                f"rows: expected some of the columns {sorted(_FEATURE_COLUMNS)}, got {sorted(rows[0])}"
            )
        batch: dict[str, torch.Tensor] = {}
        for column in columns:
            key, dtype = _FEATURE_COLUMNS[column]
            try:
                values = [row[column] for row in rows]
            except KeyError as err:
                raise ValueError(f"rows: column {column!r} is missing from a row") from err
            batch[key] = _stack(column, values, dtype)
        return batch


def _stack(column: str, values: list[Any], dtype: torch.dtype) -> torch.Tensor:
    """Stack per-row values (scalars or fixed-length vectors) into one tensor of `dtype`."""
    if isinstance(values[0], torch.Tensor):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"{column}: expected rows of one shape, got shapes {sorted(shapes)}")
        return torch.stack(values).to(dtype)
    try:
        array = np.asarray(values)
    except ValueError as err:  # ragged rows
        raise ValueError(f"{column}: expected rows of one length ({err})") from err
    if array.dtype == object:
        raise ValueError(f"{column}: expected rows of one length, got ragged rows")
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
