"""Retrieval evaluation of a CRCGS model: encode the query and database splits, rank, score, report.

Protocol (METHOD.md): image queries retrieve database texts (I2T) and text queries retrieve database
images (T2I); an item is relevant when it shares a label with the query; scores are mAP@all and mAP@k
with k = number of queries (the paper's table), ties broken by ascending database index. Both the hash
codes (Hamming ranking, the headline) and the continuous common-space embeddings (cosine ranking) are
scored. The metric functions live in :mod:`modeling_crcgs.retrieval.metrics`.

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
from .encoding import (
    MODALITIES,
    RAW_COLUMNS,
    encode_rows,
    uses_backbone,
)
from .metrics import retrieval_metrics

__all__ = [
    "encode_split",
    "evaluate_retrieval",
    "feature_level_view",
    "write_evaluation_report",
    "REQUIRED_COLUMNS",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image_features", "text_features", "labels")
# (result key, query modality, database modality): I2T = image queries against database texts.
_DIRECTIONS = (("i2t", "image", "text"), ("t2i", "text", "image"))
# (result key, encoded key suffix, metric distance)
_SPACES = (("hamming", "codes", "hamming"), ("continuous", "embeds", "cosine"))


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


def evaluate_retrieval(
    model: Any,
    query_split: Any,
    database_split: Any,
    dataset_name: str,
    top_k: Optional[int] = None,
    batch_size: int = 256,
    accelerator: Any = None,
    processor: Any = None,
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

    Returns:
        `dict` shaped as ``eval_results.json``: ``dataset``, ``hash_bits``, ``num_query``,
        ``num_database``, ``hamming`` and ``continuous``, each ``{"i2t": {...}, "t2i": {...}}`` with
        ``map_all``, ``map_at_k``, ``k`` (Hamming adds ``precision_at_radius_2``), and ``curves`` with
        the precision@k / recall@k curves and the Hamming radius precision-recall curves.
    """
    if not isinstance(dataset_name, str) or not dataset_name:
        raise ValueError(f"dataset_name must be a non-empty string, got {dataset_name!r}")
    network = model if accelerator is None else accelerator.unwrap_model(model)
    _check_split(query_split, "query_split", _input_columns(network))
    _check_split(database_split, "database_split", _input_columns(network))
    num_query, num_database = len(query_split), len(database_split)
    k = num_query if top_k is None else check_positive_int("top_k", top_k)
    if k > num_database:
        logger.warning("top_k=%d exceeds the database size %d: using k=%d", k, num_database, num_database)
        k = num_database
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
    }
    curves: dict[str, dict] = {}
    for space, suffix, distance in _SPACES:
        result[space], curves[space] = {}, {}
        for direction, query_modality, database_modality in _DIRECTIONS:
            scores = retrieval_metrics(
                query[f"{query_modality}_{suffix}"],
                database[f"{database_modality}_{suffix}"],
                query["labels"],
                database["labels"],
                top_k=k,
                distance=distance,
            )
            result[space][direction] = {key: scores[key] for key in ("map_all", "map_at_k", "k")}
            if "precision_at_radius_2" in scores:
                result[space][direction]["precision_at_radius_2"] = scores["precision_at_radius_2"]
            curves[space][direction] = {
                key: scores[key] for key in ("precision_at_k", "pr_curve") if key in scores
            }
    result["curves"] = curves
    return result


# ----------------------------------------------------------------------------------------------------------
# Report


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _save_figure(figure: Any, path: Path) -> None:
    # Fixed size and dpi, no "Software" metadata: the same result gives the same bytes.
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))


def _plot_pr_curves(result: dict, path: Path) -> None:
    """Precision-recall: Hamming ball radius sweep (codes) and top-k sweep (continuous), I2T and T2I."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    for direction, label in (("i2t", "I2T"), ("t2i", "T2I")):
        hamming = result["curves"]["hamming"][direction]["pr_curve"]
        axes.plot(hamming["recall"], hamming["precision"], marker=".", label=f"{label}, Hamming radius 0..K")
        continuous = result["curves"]["continuous"][direction]["precision_at_k"]
        axes.plot(
            continuous["recall"], continuous["precision"], linestyle="--", label=f"{label}, cosine top-k"
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
    for space, style, space_label in (("hamming", "-", "Hamming"), ("continuous", "--", "cosine")):
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


def summary_markdown(result: dict) -> str:
    """The markdown table of ``eval_summary.md`` (included in the model card)."""
    k = result["hamming"]["i2t"]["k"]
    lines = [
        f"Retrieval on **{result['dataset']}**: {result['num_query']} queries, {result['num_database']} "
        f"database items; relevant = at least one shared label; ties broken by database index.",
        "",
        f"| ranking | direction | mAP@all | mAP@{k} |",
        "|---|---|---|---|",
    ]
    for space, name in (
        ("hamming", f"Hamming, {result['hash_bits']}-bit codes"),
        ("continuous", "cosine, embeddings"),
    ):
        for direction, label in (("i2t", "image→text"), ("t2i", "text→image")):
            scores = result[space][direction]
            lines.append(f"| {name} | {label} | {scores['map_all']:.4f} | {scores['map_at_k']:.4f} |")
        mean_all = (result[space]["i2t"]["map_all"] + result[space]["t2i"]["map_all"]) / 2
        mean_k = (result[space]["i2t"]["map_at_k"] + result[space]["t2i"]["map_at_k"]) / 2
        lines.append(f"| {name} | mean | {mean_all:.4f} | {mean_k:.4f} |")
    lines += ["", f"mAP@{k} (k = number of queries) is the quantity of the CRCGS paper's table.", ""]
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
