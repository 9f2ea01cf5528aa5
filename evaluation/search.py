"""Query a saved :class:`modeling_crcgs.retrieval.index.HashIndex`; print (or write) the top-k ids and distances as JSON.

Exactly one source of queries::

    # rows of a dataset split, encoded with the model (text queries against an image index = t2i)
    python evaluation/search.py --index_dir outputs/index-image --model_dir outputs/synthetic-64bits \\
        --dataset synthetic --split query --rows 0 1 2 --query_modality text --k 10

    # a .npy of features (one row per query) for the --query_modality tower
    python evaluation/search.py --index_dir ... --model_dir ... --features queries.npy --query_modality text

    # a .npy of packed uint8 query codes
    python evaluation/search.py --index_dir ... --query_codes codes.npy --output_file results.json

Output: a table for a person by default (``--format table``): per query its row and id, the direction
(query modality -> indexed modality), then per rank the item id, the Hamming distance, whether the item
shares a label with the query (``*``), the item's label names and, when the data has raw text, its caption.
Labels and captions need ``--dataset`` (the indexed items are looked up by id in ``--database_split``).
``--format json`` gives ``{"index_dir", "k", "kind", "hash_bits", "query_modality", "index_modality",
"direction", "results": [{"query_row", "query_id", "ids", "distances", "items"?}, ...]}``: ``query_row`` is
the row of ``--split`` (or of the .npy), ``query_id`` its ``index`` column (the row number for a .npy).
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
        default=None, metadata={"help": "Write the output here instead of stdout."}
    )
    format: str = field(default="table", metadata={"help": "table (for a person) or json (for programs)."})
    database_split: str = field(
        default="database",
        metadata={
            "help": "The split the index was built from: labels and captions of the results come from it."
        },
    )

    def __post_init__(self) -> None:
        source = given_source(self, ("query_codes", "features", "rows"))
        if source != "query_codes" and self.model_dir is None:
            raise ValueError(f"--model_dir: needed to encode --{source}")
        if self.query_modality not in ("image", "text"):
            raise ValueError(f"--query_modality: expected image or text, got {self.query_modality!r}")
        if self.format not in ("table", "json"):
            raise ValueError(f"--format: expected table or json, got {self.format!r}")
        if self.k < 1:
            raise ValueError(f"--k: expected a positive integer, got {self.k}")
        check_npy_files(self, ("query_codes", "features"))


def run_search(data_args: DatasetArguments, args: SearchArguments) -> dict[str, Any]:
    """Search the index and return the JSON-ready result."""
    from modeling_crcgs.retrieval.encoding import encode_split_arrays
    from modeling_crcgs.retrieval.index import HashIndex

    index = HashIndex.load(args.index_dir)
    query_split = None
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
            query_split = split.select(args.rows)
            encoded = encode_split_arrays(
                model, query_split, modalities=(args.query_modality,), processor=processor
            )
            ids, distances = index.search(encoded[f"{args.query_modality}_codes"], args.k)
            queries = encoded["ids"].tolist()
    rows = args.rows if args.rows is not None else list(range(len(queries)))
    index_modality = index.modality or ("image" if args.query_modality == "text" else "text")
    result = {
        "index_dir": args.index_dir,
        "k": args.k,
        "kind": index.kind,
        "hash_bits": index.hash_bits,
        "query_modality": args.query_modality,
        "index_modality": index_modality,
        "direction": f"{args.query_modality} -> {index_modality}",
        "results": [
            {"query_row": r, "query_id": q, "ids": i, "distances": d}
            for r, q, i, d in zip(rows, queries, ids.tolist(), distances.tolist(), strict=True)
        ],
    }
    if data_args.dataset is not None:
        database = load_split(data_args, args.database_split)
        describe_results(result, database, ids, query_split)
    return result


def _label_matrix(split: Any) -> Any:
    import numpy as np

    return np.asarray(split.with_format("numpy", columns=["labels"])["labels"], dtype=bool)


def describe_results(result: dict[str, Any], database: Any, ids: Any, query_split: Any = None) -> None:
    """Add ``items`` to each query of ``result``: per rank the item's label names, its caption when the
    split has a raw ``text`` column, and (for dataset-row queries) whether it shares a label with the query.

    Items are found by id in the ``index`` column of ``database`` (one vectorised ``searchsorted``); an id
    that is not there (-1 slots, or an index built from another split) gets no description."""
    import datasets
    import numpy as np

    from dataset_scripts import label_names

    names = np.asarray(label_names(database), dtype=object)
    db_ids = np.asarray(database.with_format("numpy", columns=["index"])["index"], dtype=np.int64)
    order = np.argsort(db_ids, kind="stable")
    flat = np.asarray(ids, dtype=np.int64).ravel()
    pos = np.clip(np.searchsorted(db_ids[order], flat), 0, len(order) - 1)
    found = db_ids[order][pos] == flat
    rows = order[pos]
    labels = _label_matrix(database)[rows]  # (queries * k, L)
    shared = None
    if query_split is not None:
        query_labels = _label_matrix(query_split)  # (queries, L)
        shared = (
            (labels.reshape(len(query_labels), -1, labels.shape[1]) & query_labels[:, None, :])
            .any(-1)
            .ravel()
        )
    captions = None
    text_feature = database.features.get("text")
    if isinstance(text_feature, datasets.Value) and text_feature.dtype in ("string", "large_string"):
        captions = np.asarray(database.select(rows[found].tolist())["text"], dtype=object)
    caption_of = (
        dict(zip(np.flatnonzero(found).tolist(), captions.tolist(), strict=True))
        if captions is not None
        else {}
    )
    k = np.asarray(ids).shape[1] if np.asarray(ids).ndim == 2 else 0
    for q, query in enumerate(result["results"]):
        if query_split is not None:
            query["labels"] = names[query_labels[q]].tolist()
        items = []
        for rank in range(k):
            n = q * k + rank
            if not found[n]:
                items.append(None)
                continue
            item = {"labels": names[labels[n]].tolist()}
            if shared is not None:
                item["shares_label"] = bool(shared[n])
            if n in caption_of:
                item["caption"] = caption_of[n]
            items.append(item)
        query["items"] = items


def format_table(result: dict[str, Any]) -> str:
    """The search result as plain-text blocks, one per query: header line, then one line per rank."""
    lines = [
        f"{result['kind']} index, {result['hash_bits']} bits, {result['direction']} "
        f"({result['query_modality']} queries), top {result['k']}; * = shares a label with the query"
    ]
    for query in result["results"]:
        lines.append("")
        labels = f", labels: {', '.join(query['labels'])}" if "labels" in query else ""
        lines.append(
            f"query row {query['query_row']} (id {query['query_id']}{labels}), {result['direction']}"
        )
        lines.append(f"{'rank':>4}  {'id':>8}  {'dist':>4}  {'':1}  labels / caption")
        items = query.get("items") or [None] * len(query["ids"])
        for rank, (item_id, distance, item) in enumerate(
            zip(query["ids"], query["distances"], items, strict=True), 1
        ):
            if item_id < 0:
                lines.append(f"{rank:>4}  {'-':>8}  {'-':>4}     (empty slot)")
                continue
            mark = "*" if item and item.get("shares_label") else " "
            text = ", ".join(item["labels"]) if item else ""
            if item and "caption" in item:
                text += f' | "{item["caption"]}"'
            lines.append(f"{rank:>4}  {item_id:>8}  {distance:>4}  {mark}  {text}".rstrip())
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    from transformers import HfArgumentParser

    from modeling_crcgs.utils import atomic_write

    parser = HfArgumentParser((DatasetArguments, SearchArguments))
    data_args, args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    result = run_search(data_args, args)
    text = json.dumps(result, indent=2) if args.format == "json" else format_table(result)
    if args.output_file is None:
        print(text)
    else:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output_file, lambda tmp: Path(tmp).write_text(text))
    return result


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
