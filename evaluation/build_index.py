"""Build a Hamming search index (:class:`modeling_crcgs.retrieval.index.HashIndex`) and save it to a folder.

Exactly one source of codes::

    # a model folder + a dataset split (one modality is encoded here, on this process)
    python evaluation/build_index.py --model_dir outputs/synthetic-64bits --dataset synthetic \\
        --split database --modality image --output_dir outputs/index-image

    # the shards written by evaluation/encode_dataset.py (for big databases, encoded in parallel)
    python evaluation/build_index.py --shards_dir outputs/encoded-database --modality image --output_dir ...

    # a .npy of packed uint8 codes (optionally a .npy of int64 ids)
    python evaluation/build_index.py --codes codes.npy --ids ids.npy --hash_bits 64 --output_dir ...

``--kind flat`` is exact; ``ivf`` (``--nlist``, ``--nprobe``) and ``hash`` (``--nhash``,
``--hash_key_bits``, ``--nflip``) are approximate indexes for large collections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from evaluation.encode_dataset import (
    DatasetArguments,
    check_npy_files,
    given_source,
    load_model_and_processor,
    load_npy,
    load_split,
)


@dataclass
class BuildIndexArguments:
    """Where the codes come from and which index to build."""

    output_dir: str = field(
        metadata={"help": "Folder to write the index to (index.faiss, ids.npy, index_config.json)."}
    )
    codes: Optional[str] = field(
        default=None, metadata={"help": "A .npy of packed uint8 codes (n, ceil(K/8))."}
    )
    ids: Optional[str] = field(default=None, metadata={"help": "With --codes: a .npy of n int64 ids."})
    hash_bits: Optional[int] = field(default=None, metadata={"help": "With --codes: the code length K."})
    shards_dir: Optional[str] = field(
        default=None, metadata={"help": "An evaluation/encode_dataset.py output."}
    )
    model_dir: Optional[str] = field(
        default=None, metadata={"help": "A saved CRCGSModel, with --dataset/--split."}
    )
    split: str = field(default="database", metadata={"help": "With --model_dir: the split to index."})
    modality: str = field(default="image", metadata={"help": "Which side to index: image or text."})
    batch_size: int = field(default=256, metadata={"help": "With --model_dir: rows per forward pass."})
    kind: str = field(default="flat", metadata={"help": "flat (exact), ivf or hash (approximate)."})
    nlist: Optional[int] = field(default=None, metadata={"help": "ivf: cells (default sqrt(n))."})
    nprobe: int = field(default=8, metadata={"help": "ivf: cells visited per query."})
    nhash: int = field(default=1, metadata={"help": "hash: number of hash tables."})
    hash_key_bits: Optional[int] = field(default=None, metadata={"help": "hash: bits per key (default 16)."})
    nflip: int = field(default=2, metadata={"help": "hash: Hamming radius probed per table."})

    def __post_init__(self) -> None:
        given_source(self, ("codes", "shards_dir", "model_dir"))
        if self.ids is not None and self.codes is None:
            raise ValueError("--ids: only used with --codes")
        if self.modality not in ("image", "text"):
            raise ValueError(f"--modality: expected image or text, got {self.modality!r}")
        check_npy_files(self, ("codes", "ids"))

    def index_options(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "nhash": self.nhash,
            "hash_key_bits": self.hash_key_bits,
            "nflip": self.nflip,
        }


def build_index(data_args: DatasetArguments, args: BuildIndexArguments) -> Any:
    """The :class:`HashIndex` described by the arguments (not saved)."""
    from modeling_crcgs.retrieval.encoding import load_shards
    from modeling_crcgs.retrieval.index import HashIndex

    if args.codes is not None:
        codes = load_npy(args.codes, "codes")
        ids = None if args.ids is None else load_npy(args.ids, "ids")
        return HashIndex.from_codes(codes, ids=ids, hash_bits=args.hash_bits, **args.index_options())
    if args.shards_dir is not None:
        arrays = load_shards(args.shards_dir)
        manifest = json.loads((Path(args.shards_dir) / "manifest.json").read_text())
        if f"{args.modality}_codes" not in arrays:
            raise ValueError(
                f"--modality: {args.shards_dir!r} holds the modalities {manifest['modalities']}, not {args.modality!r}"
            )
        return HashIndex.from_codes(
            arrays[f"{args.modality}_codes"],
            ids=arrays["ids"],
            hash_bits=manifest["hash_bits"],
            modality=args.modality,
            model_fingerprint=manifest.get("model_fingerprint"),
            **args.index_options(),
        )
    model, processor = load_model_and_processor(args.model_dir)
    return HashIndex.from_model_and_split(
        model,
        load_split(data_args, args.split),
        modality=args.modality,
        batch_size=args.batch_size,
        processor=processor,
        **args.index_options(),
    )


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    from transformers import HfArgumentParser

    parser = HfArgumentParser((DatasetArguments, BuildIndexArguments))
    data_args, args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    index = build_index(data_args, args)
    index.save(args.output_dir)
    summary = {
        "output_dir": args.output_dir,
        "kind": index.kind,
        "hash_bits": index.hash_bits,
        "num_codes": len(index),
        "modality": index.modality,
        "params": index.params,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
