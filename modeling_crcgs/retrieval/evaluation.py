"""Retrieval evaluation of a CRCGS model: encode the query and database splits, rank, score, report.

Protocol (docs/METHOD.md): image queries retrieve database texts (I2T) and text queries retrieve database
images (T2I); an item is relevant when it shares a label with the query; scores are mAP@all and mAP@k
with k = number of queries (the paper's table), ties broken by ascending database index. Both the hash
codes (Hamming ranking, the headline) and the continuous embeddings are scored: the common-space
embeddings by cosine, or the class posteriors by inner product for a model with
``config.retrieval_embedding="label_posterior"`` (``embedding_distance`` in the result). The metric
functions live in :mod:`modeling_crcgs.retrieval.metrics`.

Splits follow the data contract of ``docs/DESIGN.md``: ``datasets.Dataset`` objects with the columns
``image_features``, ``text_features`` (fixed-length float vectors) and ``labels`` (multi-hot int8); a model
with backbone towers reads the raw ``image`` / ``text`` columns instead, through its processor
(:func:`feature_level_view`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..modeling_crcgs import CRCGSModel
from ..utils import atomic_write, check_positive_int
from .baselines import cca_baseline
from .encoding import (
    MODALITIES,
    RAW_COLUMNS,
    encode_rows,
    uses_backbone,
)
from .metrics import score_directions

__all__ = [
    "embedding_distance",
    "encode_split",
    "evaluate_retrieval",
    "feature_level_view",
    "ranking_name",
    "write_evaluation_report",
    "REQUIRED_COLUMNS",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image_features", "text_features", "labels")


def _check_split(split: Any, name: str, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    columns = getattr(split, "column_names", None)
    if columns is None:
        raise ValueError(f"{name} must be a datasets.Dataset, got {type(split).__name__}")
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}: expected {list(required)}, got {columns}")
    if len(split) == 0:
        raise ValueError(f"{name} is empty: nothing to evaluate")


def encode_split(
    model: Any, split: Any, batch_size: int = 256, accelerator: Any = None
) -> dict[str, torch.Tensor]:
    """Encode every row of ``split`` with ``model``, in order (:func:`modeling_crcgs.retrieval.encoding.encode_rows`).

    Images and texts go through ``model.get_image_features`` / ``model.get_text_features`` (common-space
    embeddings u, v) and ``model.hash_codes_from_embeddings`` (sign codes of the hash head), in eval mode.
    Under Accelerate each process encodes every N-th batch and every process gets every row exactly
    once, in split order (checked; :func:`~modeling_crcgs.retrieval.encoding.encode_batches`).

    Args:
        model: a ``CRCGSModel`` with feature towers (possibly wrapped by ``accelerator.prepare``).
        split (`datasets.Dataset`): columns ``image_features``, ``text_features``, ``labels``.
        batch_size (`int`, defaults to 256): rows per forward pass (per process).
        accelerator (`accelerate.Accelerator`, *optional*): shard the work over its processes.

    Returns:
        `dict` of CPU tensors: ``image_embeds``, ``text_embeds`` (float32 `(n, d)`), ``image_codes``,
        ``text_codes`` (int8 {-1,+1} `(n, K)`), ``labels`` (int8 `(n, L)`).
    """
    _check_split(split, "split")
    result = encode_rows(model, split, batch_size=batch_size, accelerator=accelerator, show_progress=True)
    labels = np.asarray(split.select_columns(["labels"]).with_format("numpy")["labels"])
    result["labels"] = torch.from_numpy(labels.astype(np.int8, copy=False))
    return result


def _input_columns(model: Any) -> tuple[str, ...]:
    """The columns a split needs for ``model``: a backbone tower reads the raw column, a feature tower features."""
    return tuple(RAW_COLUMNS[m] if uses_backbone(model, m) else f"{m}_features" for m in MODALITIES) + (
        "labels",
    )


def feature_level_view(
    model: Any, *splits: Any, processor: Any = None, batch_size: int = 64, accelerator: Any = None
) -> tuple[Any, ...]:
    """Cut a raw-input ``CRCGSModel`` after its backbones, for the feature-based evaluator.

    :func:`encode_split` reads ``image_features``/``text_features`` columns. For a model with backbone
    towers this returns ``(feature_model, *feature_splits)``: ``feature_model`` is a feature-tower
    ``CRCGSModel`` holding the model's tower MLPs and heads (the same weights), and in each split the raw
    ``image``/``text`` column of a backbone tower, made into ``pixel_values`` / ``input_ids`` +
    ``attention_mask`` by ``processor`` (a :class:`~modeling_crcgs.processing_crcgs.CRCGSProcessor`),
    is replaced by the pooled output of the model's (fine-tuned) backbone, run once per item
    (:func:`~modeling_crcgs.retrieval.encoding.encode_rows`, sharded over the ``accelerator``'s processes).
    Composed, they compute exactly the raw model's embeddings and codes. A feature-tower model and its
    splits come back unchanged.
    """
    from datasets import Dataset

    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    raw = tuple(m for m in MODALITIES if uses_backbone(model, m))
    if not raw:
        return (model, *splits)
    towers = {m: getattr(model, f"{m}_tower") for m in raw}
    overrides: dict[str, Any] = {}
    for modality, tower in towers.items():
        prefix = "vision_" if modality == "image" else "text_"
        overrides.update(
            {
                f"{prefix}config": None,
                f"{prefix}backbone": None,
                f"{modality}_input_dim": tower.encoder.output_dim,
            }
        )
    config = type(model.config).from_dict({**model.config.to_dict(), **overrides})
    state = {}
    for name, tensor in model.state_dict().items():
        modality = name.split("_tower.", 1)[0] if "_tower." in name else None
        if modality in raw and name.startswith(f"{modality}_tower.encoder."):
            continue
        state[name.replace(f"{modality}_tower.head.", f"{modality}_tower.") if modality in raw else name] = (
            tensor
        )
    feature_model = CRCGSModel(config).to(next(model.parameters()).device)
    feature_model.load_state_dict(state, strict=True)

    def pooled(modality: str, inputs: dict) -> dict[str, torch.Tensor]:
        return {f"{modality}_features": towers[modality].encoder(**inputs).float().cpu()}

    feature_splits = []
    for split in splits:
        columns = encode_rows(model, split, raw, batch_size, processor, accelerator, encode=pooled)
        plain = split.with_format(None)
        keep = [c for c in plain.column_names if c not in ("image", "text", *columns)]
        features = {key: list(value.numpy()) for key, value in columns.items()}
        feature_splits.append(Dataset.from_dict({**plain.select_columns(keep).to_dict(), **features}))
    return (feature_model, *feature_splits)


def _top_k(top_k: Optional[int], num_query: int, num_database: int) -> int:
    """k of mAP@k: ``top_k``, else the number of queries (the paper's protocol), capped at the database size."""
    k = num_query if top_k is None else check_positive_int("top_k", top_k)
    if k > num_database:
        logger.warning("top_k=%d exceeds the database size %d: using k=%d", k, num_database, num_database)
        k = num_database
    return k


def evaluate_retrieval(
    model: Any,
    query_split: Any,
    database_split: Any,
    dataset_name: str,
    top_k: Optional[int] = None,
    batch_size: int = 256,
    accelerator: Any = None,
    processor: Any = None,
    train_split: Any = None,
) -> dict:
    """Cross-modal retrieval scores of ``model``: I2T and T2I, Hamming codes and continuous embeddings.

    Args:
        model: a ``CRCGSModel``.
        query_split, database_split (`datasets.Dataset`): columns ``labels`` and, per tower,
            ``image_features`` / ``text_features`` (feature tower) or ``image`` / ``text`` (backbone tower).
        dataset_name (`str`): recorded in the result.
        top_k (`int`, *optional*): k of mAP@k; defaults to the number of queries (the paper's protocol),
            capped at the database size.
        batch_size (`int`): encoding batch size.
        accelerator: optional ``accelerate.Accelerator`` (encoding is sharded; every process returns the
            same result).
        processor: the model's ``CRCGSProcessor``, needed when it has backbone towers: their raw inputs go
            through :func:`feature_level_view` first.
        train_split (`datasets.Dataset`, *optional*): the training split. When it and the query and database
            splits hold ``image_features`` and ``text_features``, linear CCA is fitted on it and scored on the
            same query/database (:func:`modeling_crcgs.retrieval.baselines.cca_baseline`), under ``baselines.cca``; a
            warning says so when the model does not beat it.

    Returns:
        `dict` shaped as ``eval_results.json``: ``dataset``, ``hash_bits``, ``num_query``,
        ``num_database``, ``embedding_distance`` (how ``continuous`` ranks: ``"cosine"`` or
        ``"inner_product"``, the model's ``config.retrieval_distance``), ``hamming`` and ``continuous``,
        each ``{"i2t": {...}, "t2i": {...}}`` with
        ``map_all``, ``map_at_k``, ``k`` (Hamming adds ``precision_at_radius_2``), ``curves`` with
        the precision@k / recall@k curves and the Hamming radius precision-recall curves, ``protocol``
        (:func:`retrieval_protocol`), ``code_statistics`` (:func:`code_statistics` of the database codes of
        each modality) and, with ``train_split``, ``baselines``.
    """
    if not isinstance(dataset_name, str) or not dataset_name:
        raise ValueError(f"dataset_name must be a non-empty string, got {dataset_name!r}")
    network = model if accelerator is None else accelerator.unwrap_model(model)
    _check_split(query_split, "query_split", _input_columns(network))
    _check_split(database_split, "database_split", _input_columns(network))
    num_query, num_database = len(query_split), len(database_split)
    k = _top_k(top_k, num_query, num_database)
    # the CCA baseline reads the splits' fixed features, as given (train_split holds those, not tower outputs)
    fixed_splits = (query_split, database_split)
    model, query_split, database_split = feature_level_view(
        model,
        query_split,
        database_split,
        processor=processor,
        batch_size=batch_size,
        accelerator=accelerator,
    )
    query = encode_split(model, query_split, batch_size, accelerator)
    database = encode_split(model, database_split, batch_size, accelerator)
    result: dict[str, Any] = {
        "dataset": dataset_name,
        "hash_bits": int(query["image_codes"].shape[1]),
        "num_query": num_query,
        "num_database": num_database,
        "embedding_distance": network.config.retrieval_distance,
    }
    result["curves"] = score_directions(query, database, k, result, result["embedding_distance"])
    result["protocol"] = retrieval_protocol(query_split, database_split)
    result["code_statistics"] = {
        modality: code_statistics(database[f"{modality}_codes"], database["labels"])
        for modality in MODALITIES
    }
    warn_on_collapse(result["code_statistics"])
    if train_split is not None and _has_features(train_split, *fixed_splits):
        result["baselines"] = {"cca": cca_baseline(train_split, *fixed_splits, result["hash_bits"], k)}
        warn_below_baseline(result)
    return result


def _has_features(*splits: Any) -> bool:
    return all({"image_features", "text_features"} <= set(split.column_names) for split in splits)


def retrieval_protocol(query_split: Any, database_split: Any) -> dict[str, Any]:
    """Which protocol the splits follow, from their ``index`` columns (rows of the source data).

    ``"classic"``: the database is the query set itself (Wikipedia, Pascal Sentence, NUS-WIDE-10k: query =
    database = the test pairs); ``"hashing"``: database and queries share no item (the usual hashing protocol);
    ``"overlapping"``: anything in between. ``query_database_overlap`` counts the shared items (``None`` when a
    split has no ``index`` column).
    """
    if "index" not in query_split.column_names or "index" not in database_split.column_names:
        return {"name": "unknown", "query_database_overlap": None}
    query_rows = np.asarray(query_split.select_columns(["index"]).with_format("numpy")["index"])
    database_rows = np.asarray(database_split.select_columns(["index"]).with_format("numpy")["index"])
    overlap = int(np.intersect1d(query_rows, database_rows).size)
    if overlap == 0:
        name = "hashing"
    elif overlap == len(np.unique(query_rows)) == len(np.unique(database_rows)):
        name = "classic"
    else:
        name = "overlapping"
    return {"name": name, "query_database_overlap": overlap}


def code_statistics(codes: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Figures that reveal a collapsed hash head, from ``(n, K)`` sign codes and the items' labels.

    ``constant_bits``: bits with one value over all items (they carry no information); ``distinct_codes``;
    ``distinct_label_sets``: different label vectors among the items; ``mean_bit_balance``: mean over bits of
    ``min(share of +1, share of -1)`` (0.5 = balanced, 0 = constant); ``collapsed``: any constant bit, or fewer
    distinct codes than distinct label sets (the codes cannot then tell every kind of item apart).
    """
    codes = torch.as_tensor(codes)
    plus_share = (codes > 0).double().mean(0)  # (K,)
    constant = int(((plus_share == 0) | (plus_share == 1)).sum())
    distinct_codes = int(torch.unique(codes, dim=0).shape[0])
    distinct_label_sets = int(torch.unique(torch.as_tensor(labels), dim=0).shape[0])
    return {
        "num_items": int(codes.shape[0]),
        "constant_bits": constant,
        "distinct_codes": distinct_codes,
        "distinct_label_sets": distinct_label_sets,
        "mean_bit_balance": float(torch.minimum(plus_share, 1 - plus_share).mean()),
        "collapsed": bool(constant > 0 or distinct_codes < min(distinct_label_sets, codes.shape[0])),
    }


def warn_on_collapse(statistics: dict[str, dict[str, Any]]) -> None:
    """Log a warning with the figures for every modality whose database codes look collapsed."""
    for modality, figures in statistics.items():
        if figures["collapsed"]:
            logger.warning(
                "degenerate %s hash codes: %d of the bits are constant over the %d database items and there are "
                "%d distinct codes for %d distinct label sets (mean bit balance %.3f); retrieval by these codes "
                "is coarse: check the hash stage (epochs, learning rate) or use more bits",
                modality,
                figures["constant_bits"],
                figures["num_items"],
                figures["distinct_codes"],
                figures["distinct_label_sets"],
                figures["mean_bit_balance"],
            )


def mean_map(scores: dict[str, dict[str, float]]) -> float:
    """Mean of the I2T and T2I mAP@all of one space of a result (``result["hamming"]`` etc.)."""
    return (scores["i2t"]["map_all"] + scores["t2i"]["map_all"]) / 2


def warn_below_baseline(result: dict) -> None:
    """Log a warning for each space (codes, embeddings) where the model's mean mAP@all is below a baseline's."""
    for name, baseline in result.get("baselines", {}).items():
        for space, label in (("hamming", f"{result['hash_bits']}-bit codes"), ("continuous", "embeddings")):
            model_map, baseline_map = mean_map(result[space]), mean_map(baseline[space])
            if model_map <= baseline_map:
                logger.warning(
                    "the model does not beat the %s baseline on %s: mean mAP@all %.4f vs %.4f (%s); see "
                    "docs/REAL_DATA.md for a recipe on your own features",
                    name,
                    label,
                    model_map,
                    baseline_map,
                    baseline["method"],
                )


# ----------------------------------------------------------------------------------------------------------
# Report


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _save_figure(figure: Any, path: Path) -> None:
    # Fixed size and dpi, no "Software" metadata: the same result gives the same bytes.
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))


def _plot_pr_curves(result: dict, path: Path) -> None:
    """Precision-recall: Hamming ball radius sweep (codes) and top-k sweep (continuous), I2T and T2I.

    The figure states the convention of the Hamming curve: a query whose ball of radius r is empty counts
    with precision 0 and recall 0 at that r (``precision_recall_curve``), which is why its first points
    can sit low."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 5.4))
    axes = figure.add_subplot()
    figure.subplots_adjust(bottom=0.22)
    figure.text(
        0.5,
        0.02,
        "Hamming curve: one point per radius r = 0..K; a query with no database item within r\n"
        "counts with precision 0 and recall 0 at that r (mean over all queries).",
        ha="center",
        fontsize="small",
    )
    for direction, label in (("i2t", "I2T"), ("t2i", "T2I")):
        hamming = result["curves"]["hamming"][direction]["pr_curve"]
        axes.plot(hamming["recall"], hamming["precision"], marker=".", label=f"{label}, Hamming radius 0..K")
        continuous = result["curves"]["continuous"][direction]["precision_at_k"]
        axes.plot(
            continuous["recall"],
            continuous["precision"],
            linestyle="--",
            label=f"{label}, {ranking_name(result)} top-k",
        )
    axes.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"{result['dataset']}, {result['hash_bits']} bits: precision-recall",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    _save_figure(figure, path)


def _plot_precision_at_k(result: dict, path: Path) -> None:
    """Precision@k against k, Hamming and continuous, I2T and T2I."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    for space, style, space_label in (
        ("hamming", "-", "Hamming"),
        ("continuous", "--", ranking_name(result)),
    ):
        for direction, label in (("i2t", "I2T"), ("t2i", "T2I")):
            curve = result["curves"][space][direction]["precision_at_k"]
            axes.plot(curve["k"], curve["precision"], linestyle=style, label=f"{label}, {space_label}")
    axes.set(
        xlabel="k (number of retrieved items)",
        ylabel="precision@k",
        ylim=(0, 1.02),
        title=f"{result['dataset']}, {result['hash_bits']} bits: precision@k",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    _save_figure(figure, path)


# how the continuous rows are named, by embedding distance
_CONTINUOUS_NAMES = {"cosine": "cosine, embeddings", "inner_product": "inner product, label posteriors"}


def embedding_distance(result: dict) -> str:
    """The continuous ranking of a result or baseline, ``"cosine"`` or ``"inner_product"`` (results written
    before it was recorded: cosine)."""
    return result.get("embedding_distance", "cosine")


def ranking_name(result: dict) -> str:
    """The continuous ranking of a result in words: ``"cosine"`` or ``"inner product"``."""
    return embedding_distance(result).replace("_", " ")


def _summary_rows(scores: dict, name: str) -> list[str]:
    """Table rows of one ranking (one space of a result or of a baseline): I2T, T2I and their mean."""
    rows = []
    for direction, label in (("i2t", "image→text"), ("t2i", "text→image")):
        rows.append(
            f"| {name} | {label} | {scores[direction]['map_all']:.4f} | {scores[direction]['map_at_k']:.4f} |"
        )
    mean_k = (scores["i2t"]["map_at_k"] + scores["t2i"]["map_at_k"]) / 2
    rows.append(f"| {name} | mean | {mean_map(scores):.4f} | {mean_k:.4f} |")
    return rows


_PROTOCOL_NOTES = {
    "classic": "Protocol: classic (the database is the query set itself).",
    "hashing": "Protocol: hashing (queries and database share no item).",
}


def summary_markdown(result: dict) -> str:
    """The markdown table of ``eval_summary.md`` (included in the model card): the model, then each baseline."""
    k = result["hamming"]["i2t"]["k"]
    lines = [
        f"Retrieval on **{result['dataset']}**: {result['num_query']} queries, {result['num_database']} "
        f"database items; relevant = at least one shared label; ties broken by database index.",
        "",
        f"| ranking | direction | mAP@all | mAP@{k} |",
        "|---|---|---|---|",
    ]
    codes = f"Hamming, {result['hash_bits']}-bit codes"
    for space, name in (("hamming", codes), ("continuous", _CONTINUOUS_NAMES[embedding_distance(result)])):
        lines += _summary_rows(result[space], name)
    for baseline_name, baseline in result.get("baselines", {}).items():
        for space, name in (
            ("hamming", codes),
            ("continuous", _CONTINUOUS_NAMES[embedding_distance(baseline)]),
        ):
            lines += _summary_rows(baseline[space], f"baseline {baseline_name.upper()}: {name}")
    lines += ["", f"mAP@{k} (k = number of queries) is the quantity of the CRCGS paper's table."]
    if "baselines" in result:
        lines.append(
            "Baselines are fitted on the same training split and scored on the same queries and database."
        )
    protocol = result.get("protocol", {})
    if protocol.get("name") in _PROTOCOL_NOTES:
        lines.append(_PROTOCOL_NOTES[protocol["name"]])
    elif protocol.get("name") == "overlapping":
        lines.append(
            f"Protocol: {protocol['query_database_overlap']} items are both queries and database items."
        )
    lines.append("")
    return "\n".join(lines)


REPORT_FILES = ("eval_results.json", "eval_summary.md", "pr_curve.png", "precision_at_k.png")


def write_evaluation_report(result: dict, output_dir: str | os.PathLike) -> list[Path]:
    """Write ``eval_results.json``, ``eval_summary.md``, ``pr_curve.png`` and ``precision_at_k.png``.

    Every file is written atomically (temporary file in ``output_dir``, then ``os.replace``) and
    deterministically: the same ``result`` gives byte-identical files.

    Returns:
        The paths written.
    """
    missing = [
        key
        for key in ("dataset", "hash_bits", "num_query", "num_database", "hamming", "continuous", "curves")
        if key not in result
    ]
    if missing:
        raise ValueError(f"result lacks the key(s) {missing}: pass the dict returned by evaluate_retrieval")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / name for name in REPORT_FILES]
    _write_text(paths[0], json.dumps(result, indent=2) + "\n")
    _write_text(paths[1], summary_markdown(result))
    _plot_pr_curves(result, paths[2])
    _plot_precision_at_k(result, paths[3])
    return paths
