"""Encode dataset splits into retrieval embeddings and packed hash codes, in memory or as shards on disk.

The common-space representation of an item (``u`` for images, ``v`` for texts, docs/METHOD.md) comes from
``model.get_image_features`` / ``model.get_text_features``; its embedding is
``model.retrieval_embeddings(u)`` (u itself, or its class posteriors for a ``"label_posterior"`` model) and its
hash code ``model.hash_codes_from_embeddings(u)`` (int8 in {-1, +1}), stored packed with
:func:`modeling_crcgs.hashing.pack_codes`.

:func:`encode_dataset_to_shards` is the big-database path: rows are cut into fixed shards of ``shard_size``
rows; each shard's batches are dealt to the processes of an ``accelerate.Accelerator`` (a prepared loader),
encoded, gathered back in row order (:func:`encode_batches`, ``gather_for_metrics``), and written by the main
process to ``shard_{i:05d}.safetensors`` atomically. A ``manifest.json`` records the run; a rerun with the
same model, split and options skips the shards already on disk, so a crashed run resumes.
:func:`load_shards` concatenates the shards in row order (this is what fills a
:class:`modeling_crcgs.retrieval.index.HashIndex`).

Inputs per modality: a feature tower reads the ``image_features`` / ``text_features`` column of the split;
a backbone tower (``config.vision_config`` / ``config.text_config`` set), or a feature tower on a split
without that column, reads the raw ``image`` / ``text`` column through a ``processor``
(:class:`modeling_crcgs.processing_crcgs.CRCGSProcessor`: ``processor(images=...)`` gives
``pixel_values``; ``processor(text=..., padding=True, truncation=True)`` gives ``input_ids`` +
``attention_mask``, and ``text_features`` when it holds a bag-of-words vocabulary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..hashing import pack_codes
from ..networks import evaluating
from ..utils import atomic_write, atomic_write_text, check_positive_int, model_fingerprint

__all__ = [
    "MODALITIES",
    "embeddings_and_codes",
    "encode_dataset_to_shards",
    "encode_query_codes",
    "encode_batches",
    "encode_rows",
    "encode_split_arrays",
    "load_shards",
]

logger = logging.getLogger(__name__)

MODALITIES = ("image", "text")
_MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
# Model keyword arguments that belong to each tower.
_TOWER_INPUTS = {
    "image": ("image_features", "pixel_values"),
    "text": ("text_features", "input_ids", "attention_mask", "token_type_ids"),
}
# The raw column a backbone tower reads through a processor.
RAW_COLUMNS = {"image": "image", "text": "text"}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


# --------------------------------------------------------------------------------------------------
# batches
def uses_backbone(model: Any, modality: str) -> bool:
    """Whether the model's tower for ``modality`` is a transformers backbone (raw inputs) or takes features."""
    return getattr(model.config, "vision_config" if modality == "image" else "text_config", None) is not None


def _input_source(split: Any, modality: str, processor: Any, model: Any) -> str:
    """The column a modality is read from.

    A feature tower reads ``{modality}_features`` when the split has it; otherwise (and always for a
    backbone tower) the raw ``image`` / ``text`` column goes through ``processor``.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modalities: expected entries among {MODALITIES}, got {modality!r}")
    columns, features, raw = split.column_names, f"{modality}_features", RAW_COLUMNS[modality]
    if not uses_backbone(model, modality) and features in columns:
        return features
    if raw in columns and processor is not None:
        return raw
    wanted = (
        f"a '{raw}' column and a processor"
        if uses_backbone(model, modality)
        else f"a '{features}' column (or a '{raw}' column and a processor)"
    )
    raise ValueError(
        f"split: the model's {modality} tower needs {wanted}; split columns are {columns}, "
        f"processor={'given' if processor is not None else 'None'}"
    )


def _prepare_inputs(
    values: Any, modality: str, source: str, processor: Any, model: Any, device: torch.device
) -> dict:
    """Keyword arguments of ``model.get_{modality}_features`` for one batch of column values."""
    if source == f"{modality}_features":
        features = torch.as_tensor(np.asarray(values, dtype=np.float32))
        if features.dim() != 2:
            raise ValueError(
                f"column {source!r} must hold fixed-length vectors, got batch shape {tuple(features.shape)}"
            )
        return {source: features.to(device)}
    if modality == "image":
        encoded = processor(images=list(values), return_tensors="pt")
    else:
        encoded = processor(text=list(values), return_tensors="pt", padding=True, truncation=True)
    wanted = _TOWER_INPUTS[modality][1:] if uses_backbone(model, modality) else _TOWER_INPUTS[modality][:1]
    missing = [k for k in wanted[:1] if k not in encoded]
    if missing:
        raise ValueError(
            f"processor: expected it to return {missing[0]!r} for the {modality} tower, got {sorted(encoded)}"
        )
    return {k: v.to(device) for k, v in encoded.items() if k in wanted}


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# One batch of one modality's model inputs -> named CPU tensors with one row per input.
BatchEncoder = Callable[[str, dict], dict[str, torch.Tensor]]


def embeddings_and_codes(model: Any) -> BatchEncoder:
    """The default :data:`BatchEncoder`: ``{m}_embeds`` (float32 `(n, d)`) and ``{m}_codes`` (int8 `(n, K)`).

    With u = ``model.get_{m}_features(**inputs)`` (u or v, the common space), ``{m}_embeds`` is
    ``model.retrieval_embeddings(u)`` (u itself, or the class posteriors of a ``"label_posterior"`` model;
    ranked by ``model.config.retrieval_distance``) and ``{m}_codes`` is ``model.hash_codes_from_embeddings(u)``
    (sign of the hash head, in {-1, +1}).
    """

    def encode(modality: str, inputs: dict) -> dict[str, torch.Tensor]:
        common = getattr(model, f"get_{modality}_features")(**inputs)
        codes = model.hash_codes_from_embeddings(common)
        embeds = model.retrieval_embeddings(common)
        return {f"{modality}_embeds": embeds.float().cpu(), f"{modality}_codes": codes.to(torch.int8).cpu()}

    return encode


@torch.no_grad()
def encode_batches(
    batches: Iterable[Any], encode: Callable[[Any], dict[str, torch.Tensor]], accelerator: Any = None
) -> dict[str, torch.Tensor]:
    """The one encoding loop: ``encode(batch)`` for each batch, gathered over processes, on CPU, in order.

    ``batches`` is this process's share (a loader prepared by ``accelerator``: batch ``i`` on process
    ``i mod N``); each step's outputs are gathered with ``accelerator.gather_for_metrics``, which puts the
    processes' batches back in loader order and drops the rows Accelerate repeats to even out the last
    batches, so every process gets every row exactly once. Without an accelerator the outputs are only
    concatenated. Used by training validation, :func:`encode_rows` (evaluation, index) and the shards.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        values = encode(batch)
        if accelerator is not None and accelerator.num_processes > 1:
            values = accelerator.gather_for_metrics({k: v.to(accelerator.device) for k, v in values.items()})
        for key, value in values.items():
            parts.setdefault(key, []).append(value.cpu())
    return {key: torch.cat(chunks) for key, chunks in parts.items()}


def _encode_positions(
    model: Any,
    split: Any,
    positions: list[int],
    modalities: Sequence[str],
    batch_size: int,
    processor: Any,
    accelerator: Any,
    encode: BatchEncoder,
    progress: Optional[Any] = None,
) -> dict[str, torch.Tensor]:
    """Encode the given rows of ``split`` in batches (:func:`encode_batches`); every process gets all rows
    in order (checked: the gathered row positions must be ``positions``)."""
    sources = {m: _input_source(split, m, processor, model) for m in modalities}
    feature_columns = sorted({c for c in sources.values() if c.endswith("_features")})
    raw_columns = sorted({c for c in sources.values() if not c.endswith("_features")})
    # numpy format turns fixed-length feature lists into 2-D arrays without Python float objects
    tables = [split.select_columns(feature_columns).with_format("numpy")] if feature_columns else []
    tables += [split.select_columns(raw_columns).with_format(None)] if raw_columns else []
    device = _model_device(model)

    def encode_batch(batch_positions: list[int]) -> dict[str, torch.Tensor]:
        rows = {k: v for table in tables for k, v in table[batch_positions].items()}
        out = {"positions": torch.as_tensor(batch_positions, dtype=torch.int64)}
        for m in modalities:
            out.update(encode(m, _prepare_inputs(rows[sources[m]], m, sources[m], processor, model, device)))
        if progress is not None:
            progress.update(len(batch_positions))
        return out

    loader = DataLoader(positions, batch_size=batch_size, collate_fn=list)
    if accelerator is not None and accelerator.num_processes > 1:
        loader = accelerator.prepare_data_loader(loader, device_placement=False)
    result = encode_batches(loader, encode_batch, accelerator)
    if not torch.equal(result.pop("positions"), torch.as_tensor(positions, dtype=torch.int64)):
        raise RuntimeError("gathered rows are out of order: processes disagree on the split of the rows")
    return result


def _row_ids(split: Any, positions: Sequence[int], id_column: Optional[str]) -> np.ndarray:
    if id_column is not None and id_column in split.column_names:
        return np.asarray(split.select_columns([id_column])[list(positions)][id_column], dtype=np.int64)
    return np.asarray(positions, dtype=np.int64)


def _to_numpy(encoded: dict[str, torch.Tensor], modalities: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for m in modalities:
        out[f"{m}_embeds"] = encoded[f"{m}_embeds"].numpy().astype(np.float32, copy=False)
        out[f"{m}_codes"] = pack_codes(encoded[f"{m}_codes"].numpy())
    return out


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    if (
        not modalities
        or any(m not in MODALITIES for m in modalities)
        or len(set(modalities)) != len(modalities)
    ):
        raise ValueError(f"modalities: expected distinct entries among {MODALITIES}, got {modalities!r}")
    return modalities


# --------------------------------------------------------------------------------------------------
# public API
def encode_rows(
    model: Any,
    split: Any,
    modalities: Sequence[str] = MODALITIES,
    batch_size: int = 256,
    processor: Any = None,
    accelerator: Any = None,
    encode: Optional[BatchEncoder] = None,
    show_progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The batched encoding core: every row of ``split``, in order, as CPU tensors (model in eval mode).

    Each batch of rows becomes the inputs of each modality's tower (see the module docstring for the
    columns read) and goes through ``encode`` (default :func:`embeddings_and_codes` of ``model``:
    ``{m}_embeds`` float32, ``{m}_codes`` int8 in {-1, +1}). With an ``accelerator`` of several processes
    each process encodes every N-th batch and every process gets all rows, in split order (checked;
    :func:`encode_batches`); a wrapped model is unwrapped first.
    """
    from tqdm.auto import tqdm

    modalities = _check_modalities(modalities)
    batch_size = check_positive_int("batch_size", batch_size)
    num_processes, main_process = 1, True
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
        num_processes, main_process = accelerator.num_processes, accelerator.is_local_main_process
    if len(split) == 0:
        raise ValueError("split is empty: nothing to encode")
    encode = embeddings_and_codes(model) if encode is None else encode
    positions = list(range(len(split)))
    # the bar counts this process's share of the rows; disable=None hides it off a terminal
    disable = not show_progress or not main_process or None
    with (
        evaluating(model),
        tqdm(total=-(-len(split) // num_processes), desc="encoding", disable=disable, leave=False) as bar,
    ):
        return _encode_positions(
            model, split, positions, modalities, batch_size, processor, accelerator, encode, bar
        )


def encode_split_arrays(
    model: Any,
    split: Any,
    modalities: Sequence[str] = MODALITIES,
    batch_size: int = 256,
    id_column: Optional[str] = "index",
    processor: Any = None,
    accelerator: Any = None,
) -> dict[str, np.ndarray]:
    """Encode a whole split in memory with :func:`encode_rows`, codes packed (the index and shard format).

    Returns:
        ``{"ids": int64 (n,), "{m}_embeds": float32 (n, d), "{m}_codes": uint8 (n, ceil(K/8))}`` for each
        modality ``m``, rows in split order. Ids come from ``id_column`` when present, else row positions.
        With an ``accelerator`` of several processes, each process encodes a share and every process
        gets all rows.
    """
    modalities = _check_modalities(modalities)
    encoded = encode_rows(model, split, modalities, batch_size, processor, accelerator)
    return {"ids": _row_ids(split, range(len(split)), id_column), **_to_numpy(encoded, modalities)}


def encode_query_codes(model: Any, batch_size: int = 1024, **inputs: Any) -> np.ndarray:
    """Packed hash codes (uint8 `(n, ceil(K/8))`) of one modality's inputs, encoded in batches.

    ``inputs`` are the keyword arguments of ``model.get_image_features`` (``image_features`` or
    ``pixel_values``) or of ``model.get_text_features`` (``text_features`` or ``input_ids`` +
    ``attention_mask``), as tensors or numpy arrays with one row per query.
    """
    check_positive_int("batch_size", batch_size)
    modalities = [m for m in MODALITIES if any(k in _TOWER_INPUTS[m] for k in inputs)]
    unknown = sorted(set(inputs) - {k for m in MODALITIES for k in _TOWER_INPUTS[m]})
    if len(modalities) != 1 or unknown:
        raise ValueError(
            f"pass the inputs of exactly one modality (image: {_TOWER_INPUTS['image']}, text: "
            f"{_TOWER_INPUTS['text']}), got {sorted(inputs)}"
        )
    modality = modalities[0]
    device = _model_device(model)
    tensors = {k: torch.as_tensor(v) for k, v in inputs.items() if v is not None}
    if "image_features" in tensors or "text_features" in tensors:
        key = f"{modality}_features"
        tensors[key] = tensors[key].float()
        if tensors[key].dim() != 2:
            raise ValueError(f"{key} must be 2-D (num_queries, dim), got shape {tuple(tensors[key].shape)}")
    sizes = {len(t) for t in tensors.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"inputs must have the same number of rows, got { ({k: len(t) for k, t in tensors.items()}) }"
        )
    n = sizes.pop()
    encode = embeddings_and_codes(model)
    codes = []
    with torch.no_grad(), evaluating(model):
        for start in range(0, n, batch_size):
            batch = {k: t[start : start + batch_size].to(device) for k, t in tensors.items()}
            codes.append(encode(modality, batch)[f"{modality}_codes"])
    return pack_codes(torch.cat(codes).numpy())


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _prepare_output_dir(
    model: Any,
    split: Any,
    output_dir: Path,
    modalities: Sequence[str],
    shard_size: int,
    id_column: Optional[str],
) -> Optional[str]:
    """Write ``manifest.json`` (or check that the one on disk describes this run) and drop stale temp files.

    Returns an error message when ``output_dir`` holds another run's shards, else ``None``.
    """
    num_rows = len(split)
    num_shards = -(-num_rows // shard_size)
    manifest = {
        "format_version": _FORMAT_VERSION,
        "num_rows": num_rows,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "modalities": list(modalities),
        "hash_bits": int(model.config.hash_bits),
        "id_column": id_column if id_column in split.column_names else None,
        "split_fingerprint": getattr(split, "_fingerprint", None),
        "model_fingerprint": model_fingerprint(model),
        "shards": [_shard_name(i) for i in range(num_shards)],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = output_dir / _MANIFEST
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        changed = {k: (existing.get(k), v) for k, v in manifest.items() if existing.get(k) != v}
        if changed:
            return (
                f"output_dir {str(output_dir)!r} holds shards of a different run (field: (on disk, now) = "
                f"{changed}); use a new output_dir or delete it"
            )
    else:
        _write_json(manifest_path, manifest)
    for stale in output_dir.glob(".shard_*.tmp"):
        stale.unlink()
    return None


def _shards_on_disk(
    prepare: Callable[[], Optional[str]], output_dir: Path, num_shards: int, accelerator: Any
) -> torch.Tensor:
    """Which shards are already on disk (bool per shard), as the main process sees them.

    The main process runs ``prepare`` (check or write the manifest: an error message or None) and lists
    the shards, then tells the others: all processes must run the same gathers, and must all stop when
    the main one refuses the folder.
    """
    is_main = accelerator is None or accelerator.is_main_process
    shard_names = [_shard_name(i) for i in range(num_shards)]
    error = None
    if is_main:
        try:
            error = prepare()
        except OSError as err:
            error = f"output_dir {str(output_dir)!r} cannot be prepared: {err}"
    status = torch.tensor(
        [int(error is not None)] + [int(is_main and shard_is_complete(output_dir / n)) for n in shard_names]
    )
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        status = broadcast(status.to(accelerator.device), from_process=0).cpu()
    if status[0]:
        raise ValueError(
            error or f"output_dir {str(output_dir)!r} was refused by the main process (see its error)"
        )
    return status[1:].bool()


def encode_dataset_to_shards(
    model: Any,
    split: Any,
    output_dir: str | os.PathLike,
    modalities: Sequence[str] = MODALITIES,
    batch_size: int = 256,
    shard_size: int = 65536,
    accelerator: Any = None,
    processor: Any = None,
    id_column: Optional[str] = "index",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Encode a split into ``shard_{i:05d}.safetensors`` files under ``output_dir``; resumable.

    Shard ``i`` holds rows ``[i * shard_size, min((i + 1) * shard_size, n))`` (independent of the number
    of processes) as ``ids`` (int64), ``{m}_embeds`` (float32) and ``{m}_codes`` (packed uint8) for each
    modality ``m``. Every process must call this function (collective gathers); ``output_dir`` must be
    visible to all of them. The main process writes ``manifest.json`` first; when one already exists it
    must describe the same run (rows, split fingerprint, model weights, modalities, shard size), and the
    shards already on disk are skipped. Leftover temporary files of an interrupted write are removed.

    Returns:
        ``{"num_shards", "encoded": [shard indices computed now], "skipped": [shard indices found on disk]}``.
    """
    from tqdm.auto import tqdm

    modalities = _check_modalities(modalities)
    check_positive_int("batch_size", batch_size)
    check_positive_int("shard_size", shard_size)
    for m in modalities:
        _input_source(split, m, processor, model)
    output_dir = Path(output_dir)
    is_main = accelerator is None or accelerator.is_main_process
    num_rows = len(split)
    if num_rows == 0:
        raise ValueError("split is empty: nothing to encode")
    num_shards = -(-num_rows // shard_size)
    prepare = partial(_prepare_output_dir, model, split, output_dir, modalities, shard_size, id_column)
    done = _shards_on_disk(prepare, output_dir, num_shards, accelerator)
    pending = [i for i in range(num_shards) if not done[i]]
    num_processes = 1 if accelerator is None else accelerator.num_processes
    # the bar counts the main process's share of each shard (ceil(rows / processes))
    todo_rows = sum(-(-min(shard_size, num_rows - i * shard_size) // num_processes) for i in pending)
    disable = not show_progress or (accelerator is not None and not accelerator.is_local_main_process)
    encode = embeddings_and_codes(model)
    with evaluating(model), tqdm(total=todo_rows, desc="encoding", disable=disable) as bar:
        for i in pending:
            positions = list(range(i * shard_size, min((i + 1) * shard_size, num_rows)))
            encoded = _encode_positions(
                model, split, positions, modalities, batch_size, processor, accelerator, encode, bar
            )
            if is_main:
                tensors = {"ids": _row_ids(split, positions, id_column), **_to_numpy(encoded, modalities)}
                metadata = {"shard_index": str(i), "start": str(positions[0]), "stop": str(positions[-1] + 1)}
                _write_shard(output_dir / _shard_name(i), tensors, metadata)
                logger.info("wrote shard %d/%d (%d rows)", i + 1, num_shards, len(positions))
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return {
        "num_shards": num_shards,
        "encoded": pending,
        "skipped": [i for i in range(num_shards) if done[i]],
    }


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_is_complete(path: Path) -> bool:
    """A shard counts as written when its ``.sha256`` file (written after it) matches its bytes."""
    checksum = _checksum_path(path)
    return path.is_file() and checksum.is_file() and checksum.read_text().strip() == _sha256(path)


def _write_shard(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write the shard atomically, then its SHA-256 (the mark that the shard is complete)."""
    from safetensors.numpy import save_file

    atomic_write(
        path, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata)
    )
    atomic_write_text(_checksum_path(path), _sha256(path) + "\n")


def _load_shard(path: Path) -> dict[str, np.ndarray]:
    """Load one shard after checking its SHA-256; errors name the shard."""
    from safetensors.numpy import load_file

    if not _checksum_path(path).is_file():
        raise ValueError(f"shard {path}: no {_checksum_path(path).name}; rerun the encoder to rewrite it")
    if not shard_is_complete(path):
        raise ValueError(
            f"shard {path}: its bytes do not match {_checksum_path(path).name} (truncated or changed); "
            "delete it and rerun the encoder to rewrite it"
        )
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error type
        raise ValueError(f"shard {path}: cannot be read as safetensors ({err})") from err


def load_shards(output_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Concatenate the shards written by :func:`encode_dataset_to_shards` in row order.

    Returns:
        ``{"ids", "{m}_embeds", "{m}_codes"}`` numpy arrays over all rows.

    Raises:
        ValueError: no manifest, missing shards (an unfinished run: rerun the encoder to resume), or
            shards whose sizes disagree with the manifest.
    """
    output_dir = Path(output_dir)
    manifest_path = output_dir / _MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"output_dir {str(output_dir)!r} holds no {_MANIFEST}: not an encoder output folder")
    manifest = json.loads(manifest_path.read_text())
    missing = [name for name in manifest["shards"] if not (output_dir / name).is_file()]
    if missing:
        raise ValueError(
            f"output_dir {str(output_dir)!r} is missing {len(missing)} of {manifest['num_shards']} shards "
            f"(first: {missing[0]}): the encoding did not finish; rerun it to resume"
        )
    shards = [_load_shard(output_dir / name) for name in manifest["shards"]]
    keys = ["ids"] + [f"{m}_{kind}" for m in manifest["modalities"] for kind in ("embeds", "codes")]
    result = {k: np.concatenate([s[k] for s in shards]) for k in keys}
    if len(result["ids"]) != manifest["num_rows"]:
        raise ValueError(
            f"shards in {str(output_dir)!r} hold {len(result['ids'])} rows, manifest says {manifest['num_rows']}"
        )
    return result
