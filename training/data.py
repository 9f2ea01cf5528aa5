"""Data for training: load the splits, read their dims, and build the DataLoaders.

Kept apart from the training loop so that other input kinds (raw images and captions through a
processor) only change this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from modeling_crcgs.collator import CRCGSCollator

REQUIRED_SPLITS = ("train", "validation", "query", "database")
FEATURE_COLUMNS = ("image_features", "text_features", "labels", "index")


@dataclass(frozen=True)
class DataDims:
    """Input sizes the model config takes from the data."""

    image_input_dim: int
    text_input_dim: int
    num_labels: int


def load_splits(data_args: Any, columns: tuple[str, ...] = FEATURE_COLUMNS) -> Any:
    """`load_crcgs_dataset(--dataset, --data_dir, **--dataset_options)` with every split checked.

    `columns`: those every split must hold (raw-input towers need `image`/`text` instead of features:
    `training.raw_inputs.required_columns`)."""
    from dataset_scripts import load_crcgs_dataset

    options = dict(data_args.dataset_options)
    if data_args.cache_dir is not None:
        options["cache_dir"] = data_args.cache_dir
    dataset = load_crcgs_dataset(data_args.dataset, data_dir=data_args.data_dir, **options)
    missing = [s for s in REQUIRED_SPLITS if s not in dataset]
    if missing:
        raise ValueError(
            f"--dataset {data_args.dataset}: expected splits {REQUIRED_SPLITS}, missing {missing}"
        )
    for name in REQUIRED_SPLITS:
        absent = [c for c in columns if c not in dataset[name].column_names]
        if absent:
            raise ValueError(f"--dataset {data_args.dataset}: split {name!r} lacks column(s) {absent}")
        if len(dataset[name]) == 0:
            raise ValueError(f"--dataset {data_args.dataset}: split {name!r} is empty")
    return dataset


def train_and_validation(splits: Any) -> Any:
    """The training split followed by the validation split, as one split (what a refit trains on).

    ``concatenate_datasets`` drops the splits' format; the training split's is put back, so raw-input
    splits keep the transform of `training.raw_inputs`."""
    import datasets

    combined = datasets.concatenate_datasets([splits["train"], splits["validation"]])
    form = splits["train"].format
    if form["type"] == "custom":
        return combined.with_transform(
            form["format_kwargs"]["transform"],
            columns=form["columns"],
            output_all_columns=form["output_all_columns"],
        )
    return combined.with_format(
        form["type"],
        columns=form["columns"],
        output_all_columns=form["output_all_columns"],
        **form["format_kwargs"],
    )


def data_dims(train_split: Any) -> DataDims:
    """Feature lengths and label count, read from the first training row."""
    row = train_split.with_format("numpy", columns=["image_features", "text_features", "labels"])[0]
    return DataDims(
        image_input_dim=int(row["image_features"].shape[-1]),
        text_input_dim=int(row["text_features"].shape[-1]),
        num_labels=int(row["labels"].shape[-1]),
    )


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch drawn from `seed + epoch` alone.

    The order of an epoch therefore does not depend on how the run got there, which is what makes a
    resumed run (`set_epoch` + `skip_first_batches`) see exactly the batches an uninterrupted run sees.
    Every process draws the same permutation; Accelerate's batch sharding then splits it. Once the
    loader is prepared, set the epoch on the prepared loader (`training.loop.set_loader_epoch`): it
    re-sets its sampler's epoch from its own count whenever iteration starts.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_items, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_items


def feature_view(split: Any) -> Any:
    """The split's feature columns as numpy rows, ready for `CRCGSCollator`."""
    if split.format["type"] == "custom":  # raw inputs: the transform of training.raw_inputs makes the rows
        return split
    return split.with_format("numpy", columns=list(FEATURE_COLUMNS))


def per_process_batch_size(global_batch_size: int, num_processes: int, name: str) -> int:
    """The rows each process loads per step when ``global_batch_size`` rows make one optimizer step.

    The batch sizes of the training stages are GLOBAL (the release's batch of 80 on DataParallel):
    Accelerate hands each process whole loader batches in turn, so loaders of ``B / N`` rows give step k
    the rows ``k B .. (k + 1) B - 1`` of the epoch's permutation on N processes, the rows of step k on
    one process; the losses then gather them (``modeling_crcgs.losses.global_batch``). Raises ValueError
    naming ``name`` when N does not divide B.
    """
    if global_batch_size % num_processes:
        raise ValueError(
            f"{name}={global_batch_size} is the global batch size: it must be a multiple of the number of "
            f"processes ({num_processes})"
        )
    return global_batch_size // num_processes


def train_loader(
    dataset: Any, batch_size: int, seed: int, num_workers: int = 0
) -> tuple[DataLoader, EpochShuffleSampler]:
    """Shuffled loader over a split (or a `TensorDictDataset`) and its sampler.

    Call `set_epoch(e)` before each epoch: on the loader once it is prepared, else on the sampler.
    """
    sampler = EpochShuffleSampler(len(dataset), seed)
    if isinstance(dataset, TensorDictDataset):
        dataset_view, collate = dataset, _already_collated
    else:
        dataset_view, collate = feature_view(dataset), CRCGSCollator()
    loader = DataLoader(
        dataset_view, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers
    )
    return loader, sampler


def eval_loader(split: Any, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Sequential loader over a whole split (each item once after `gather_for_metrics`)."""
    return DataLoader(
        feature_view(split),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=CRCGSCollator(),
        num_workers=num_workers,
    )


class TensorDictDataset(Dataset):
    """Rows of a dict of equally long tensors (the stage-3 cache of student embeddings).

    `__getitems__` returns the whole batch as one dict of stacked tensors (one index gather per
    column), so the loader's collate function passes it through unchanged.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors: expected equal lengths, got {lengths}")
        self.tensors = tensors
        self.length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


def _already_collated(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch
