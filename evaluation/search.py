"""Query a saved :class:`modeling_crcgs.retrieval.index.HashIndex`; print (or write) the top-k ids and distances as JSON.

Exactly one source of queries::

    # rows of a dataset split, encoded with the model (text queries against an image index = t2i)
    python evaluation/search.py --index_dir outputs/index-image --model_dir outputs/synthetic-64bits \\
        --dataset synthetic --split query --rows 0 1 2 --query_modality text --k 10

    # a .npy of features (one row per query) for the --query_modality tower
    python evaluation/search.py --index_dir ... --model_dir ... --features queries.npy --query_modality text

    # a .npy of packed uint8 query codes
    python evaluation/search.py --index_dir ... --query_codes codes.npy --output_file results.json

Output: ``{"index_dir", "k", "kind", "hash_bits", "results": [{"query", "ids", "distances"}, ...]}`` where
``query`` is the row's id (its ``index`` column) for dataset rows and the row number of the .npy otherwise.
Ids of -1 mark empty result slots (k larger than the index, or an approximate index that found fewer).
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
class SearchArguments:
    """Which index to query, with which queries."""

    index_dir: str = field(metadata={"help": "A folder written by evaluation/build_index.py."})
    k: int = field(default=10, metadata={"help": "Results per query."})
    query_codes: Optional[str] = field(default=None, metadata={"help": "A .npy of packed uint8 query codes."})
    features: Optional[str] = field(
        default=None, metadata={"help": "A .npy of query features (needs --model_dir)."}
    )
    rows: Optional[list[int]] = field(
        default=None,
        metadata={"help": "Row numbers of --split to use as queries (needs --model_dir, --dataset)."},
    )
    split: str = field(default="query", metadata={"help": "With --rows: the split the rows come from."})
    query_modality: str = field(
        default="text", metadata={"help": "Tower that encodes the queries: image or text."}
    )
    model_dir: Optional[str] = field(default=None, metadata={"help": "A saved CRCGSModel folder."})
    output_file: Optional[str] = field(
        default=None, metadata={"help": "Write the JSON here instead of stdout."}
    )

    def __post_init__(self) -> None:
        source = given_source(self, ("query_codes", "features", "rows"))
        if source != "query_codes" and self.model_dir is None:
            raise ValueError(f"--model_dir: needed to encode --{source}")
        if self.query_modality not in ("image", "text"):
            raise ValueError(f"--query_modality: expected image or text, got {self.query_modality!r}")
        if self.k < 1:
            raise ValueError(f"--k: expected a positive integer, got {self.k}")
        check_npy_files(self, ("query_codes", "features"))


def run_search(data_args: DatasetArguments, args: SearchArguments) -> dict[str, Any]:
    """Search the index and return the JSON-ready result."""
    from modeling_crcgs.retrieval.encoding import encode_split_arrays
    from modeling_crcgs.retrieval.index import HashIndex

    index = HashIndex.load(args.index_dir)
    if args.query_codes is not None:
        ids, distances = index.search(load_npy(args.query_codes, "query_codes"), args.k)
        queries = list(range(len(ids)))
    else:
        model, processor = load_model_and_processor(args.model_dir)
        try:
            index.check_model(model)
        except ValueError as err:
            raise ValueError(f"--model_dir {args.model_dir}: {err}") from None
        if args.features is not None:
            features = load_npy(args.features, "features")
            ids, distances = index.search_features(
                model, k=args.k, **{f"{args.query_modality}_features": features}
            )
            queries = list(range(len(ids)))
        else:
            split = load_split(data_args, args.split)
            bad = [r for r in args.rows if not 0 <= r < len(split)]
            if bad:
                raise ValueError(
                    f"--rows: expected row numbers in [0, {len(split)}) of split {args.split!r}, got {bad}"
                )
            encoded = encode_split_arrays(
                model, split.select(args.rows), modalities=(args.query_modality,), processor=processor
            )
            ids, distances = index.search(encoded[f"{args.query_modality}_codes"], args.k)
            queries = encoded["ids"].tolist()
    return {
        "index_dir": args.index_dir,
        "k": args.k,
        "kind": index.kind,
        "hash_bits": index.hash_bits,
        "results": [
            {"query": q, "ids": i, "distances": d}
            for q, i, d in zip(queries, ids.tolist(), distances.tolist(), strict=True)
        ],
    }


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    from transformers import HfArgumentParser

    from modeling_crcgs.utils import atomic_write

    parser = HfArgumentParser((DatasetArguments, SearchArguments))
    data_args, args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    result = run_search(data_args, args)
    text = json.dumps(result, indent=2)
    if args.output_file is None:
        print(text)
    else:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output_file, lambda tmp: Path(tmp).write_text(text))
    return result


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
