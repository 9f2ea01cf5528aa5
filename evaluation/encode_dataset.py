"""Encode a dataset split into embeddings and packed hash codes, in resumable shards, on one or many processes.

Examples (from the repository root)::

    python evaluation/encode_dataset.py --model_dir outputs/synthetic-64bits --dataset synthetic \\
        --split database --output_dir outputs/synthetic-64bits/encoded-database

    accelerate launch --num_processes 4 evaluation/encode_dataset.py --model_dir ... --output_dir ...

The output folder holds ``manifest.json`` and ``shard_{i:05d}.safetensors`` (``ids``, ``image_embeds``,
``image_codes``, ``text_embeds``, ``text_codes``): see :func:`modeling_crcgs.retrieval.encoding.encode_dataset_to_shards`.
Rerunning the same command after a crash encodes only the missing shards. ``evaluation/build_index.py
--shards_dir`` turns the folder into a search index.

When the model folder holds a saved ``CRCGSProcessor`` (``processor_config.json`` or
``preprocessor_config.json``), raw ``image``/``text`` columns are encoded through it (backbone towers);
feature towers read the ``image_features``/``text_features`` columns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from accelerate.logging import get_logger

logger = get_logger(__name__)

_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass
class DatasetArguments:
    """Which dataset to read (the arguments of ``dataset_scripts.load_crcgs_dataset``)."""

    dataset: Optional[str] = field(
        default=None,
        metadata={
            "help": "A load_crcgs_dataset name: mirflickr25k, nus_wide, mscoco, features or synthetic."
        },
    )
    data_dir: Optional[str] = field(default=None, metadata={"help": "Folder with the dataset's files."})
    dataset_options: Optional[str] = field(
        default=None,
        metadata={"help": "Extra builder options as a JSON object, e.g. '{\"num_query\": 500}'."},
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache folder."})

    def __post_init__(self) -> None:
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir: expected an existing folder, got {self.data_dir!r}")
        options = self.dataset_options
        try:
            options = {} if options is None else json.loads(options) if isinstance(options, str) else options
        except json.JSONDecodeError as err:
            raise ValueError(
                f"--dataset_options: expected a JSON object, got {self.dataset_options!r} ({err})"
            ) from err
        if not isinstance(options, dict):
            raise ValueError(f"--dataset_options: expected a JSON object, got {self.dataset_options!r}")
        self.dataset_options = options


@dataclass
class EncodeArguments:
    """What to encode and where to write it."""

    model_dir: str = field(metadata={"help": "A saved CRCGSModel folder (config.json + model.safetensors)."})
    output_dir: str = field(
        metadata={"help": "Folder for manifest.json and the shards (created if missing)."}
    )
    split: str = field(default="database", metadata={"help": "Which split to encode."})
    modalities: list[str] = field(
        default_factory=lambda: ["image", "text"],
        metadata={"help": "Which towers to run: image, text or both."},
    )
    batch_size: int = field(default=256, metadata={"help": "Rows per forward pass on each process."})
    shard_size: int = field(default=65536, metadata={"help": "Rows per shard file (the unit of resumption)."})
    id_column: str = field(default="index", metadata={"help": "Column holding the row ids (else positions)."})

    def __post_init__(self) -> None:
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ValueError(
                f"--model_dir: expected a saved model folder with config.json, got {self.model_dir!r}"
            )
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected a positive integer, got {getattr(self, name)}")
        bad = [m for m in self.modalities if m not in ("image", "text")]
        if bad or not self.modalities:
            raise ValueError(f"--modalities: expected image and/or text, got {self.modalities}")


def given_source(args: Any, names: tuple[str, ...]) -> str:
    """The one option among ``names`` that ``args`` sets (not None); ValueError listing them otherwise."""
    given = [name for name in names if getattr(args, name) is not None]
    if len(given) != 1:
        options = ", ".join(f"--{name}" for name in names)
        raise ValueError(f"give exactly one of {options}; got {given or 'none'}")
    return given[0]


def check_npy_files(args: Any, names: tuple[str, ...]) -> None:
    """ValueError naming the option when one of ``names`` is set to a path that is not a file."""
    for name in names:
        path = getattr(args, name)
        if path is not None and not Path(path).is_file():
            raise ValueError(f"--{name}: expected an existing .npy file, got {path!r}")


def load_npy(path: str, option: str) -> Any:
    """``np.load(path, allow_pickle=False)``; a damaged or non-.npy file raises ValueError naming the option
    and the file."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"--{option}: {path!r} cannot be read as a .npy array ({err})") from None


def load_split(data_args: DatasetArguments, split: str) -> Any:
    """One split of ``dataset_scripts.load_crcgs_dataset`` (ValueError naming the split when absent)."""
    from dataset_scripts import load_crcgs_dataset

    if data_args.dataset is None:
        raise ValueError("--dataset: required to read a split (e.g. --dataset synthetic)")
    dataset = load_crcgs_dataset(
        data_args.dataset, data_args.data_dir, cache_dir=data_args.cache_dir, **data_args.dataset_options
    )
    if split not in dataset:
        raise ValueError(f"--split: expected one of {sorted(dataset)}, got {split!r}")
    return dataset[split]


def load_model_and_processor(model_dir: str, device: Any = "cpu") -> tuple[Any, Optional[Any]]:
    """The saved ``CRCGSModel`` (eval mode, on ``device``) and its ``CRCGSProcessor`` if one was saved with it."""
    from modeling_crcgs import CRCGSModel

    model = CRCGSModel.from_pretrained(model_dir).to(device).eval()
    processor = None
    if any((Path(model_dir) / name).is_file() for name in _PROCESSOR_FILES):
        from modeling_crcgs.processing_crcgs import CRCGSProcessor

        processor = CRCGSProcessor.from_pretrained(model_dir)
    return model, processor


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    from accelerate import Accelerator
    from transformers import HfArgumentParser

    from modeling_crcgs.retrieval.encoding import encode_dataset_to_shards

    # 1. arguments
    parser = HfArgumentParser((DatasetArguments, EncodeArguments))
    data_args, args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)

    # 2. processes and logging
    accelerator = Accelerator()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    # 3. data (the main process prepares the datasets cache first) and model
    with accelerator.main_process_first():
        split = load_split(data_args, args.split)
    model, processor = load_model_and_processor(args.model_dir, accelerator.device)

    # 4. encode, shard by shard
    summary = encode_dataset_to_shards(
        model,
        split,
        args.output_dir,
        modalities=tuple(args.modalities),
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        accelerator=accelerator,
        processor=processor,
        id_column=args.id_column,
    )
    logger.info(
        "%s: %d shards (%d encoded now, %d already on disk)",
        args.output_dir,
        summary["num_shards"],
        len(summary["encoded"]),
        len(summary["skipped"]),
    )
    if accelerator.is_main_process:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
