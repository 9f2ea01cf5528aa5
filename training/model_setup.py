"""Build the model from the arguments and the data, and move weights in and out of it.

Kept apart from the training loop so that other input kinds (raw-input towers) only change this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file

from modeling_crcgs import CRCGSConfig, CRCGSForPreTraining, CRCGSModel
from modeling_crcgs.utils import atomic_write_text
from training.checkpointing import atomic_save_tensors
from training.data import DataDims

TEACHER_PREFIXES = ("teacher_i2t.", "teacher_t2i.")
STUDENT_REFIT = "student-refit"  # the unit of ``--refit_student`` (its stage weights: stages/student-refit/)


def build_config(
    model_config: dict[str, Any],
    dims: DataDims,
    hash_bits: int,
    num_train_batches: int,
    label_names: Optional[Sequence[str]] = None,
) -> CRCGSConfig:
    """`CRCGSConfig` from the user's values, the data's dims and one hash length.

    `label_names` (the dataset's, one per label column) become `config.id2label` / `label2id`.

    `contrastive_n_data` left at None becomes the number of training batches per epoch: the release's
    P_n = 1 / n_data (docs/METHOD.md, student loss 4, release quirk).
    """
    values = dict(model_config)
    if values.get("contrastive_n_data") is None:
        values["contrastive_n_data"] = num_train_batches
    if label_names is not None:
        if len(label_names) != dims.num_labels:
            raise ValueError(
                f"label_names: {len(label_names)} names for {dims.num_labels} label columns of the data"
            )
        values["id2label"] = dict(enumerate(label_names))
        values["label2id"] = {name: i for i, name in enumerate(label_names)}
    return CRCGSConfig(
        image_input_dim=dims.image_input_dim,
        text_input_dim=dims.text_input_dim,
        num_labels=dims.num_labels,
        hash_bits=hash_bits,
        **values,
    )


def fit_input_normalizers(model: CRCGSForPreTraining, train_split: Any) -> list[str]:
    """Fit the model's configured input normalisers on the training split's features (before any stage).

    Returns the normalised modalities, for the log. The statistics are buffers of the retrieval model, so they
    are saved with it and apply to raw features after ``from_pretrained``."""
    crcgs = model.crcgs
    wanted = [m for m in ("image", "text") if getattr(crcgs, f"{m}_normalizer") is not None]
    if not wanted:
        return []
    view = train_split.with_format("numpy", columns=[f"{m}_features" for m in wanted])
    crcgs.fit_feature_normalizers(
        **{
            f"{m}_features": torch.from_numpy(np.asarray(view[f"{m}_features"], dtype=np.float32))
            for m in wanted
        }
    )
    return wanted


def set_trainable(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> None:
    """Exactly `parameters` require grad (before `accelerator.prepare`, so DDP only syncs those)."""
    wanted = {id(p) for p in parameters}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)


def parameter_values(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Copies of `parameters` by their names in `model` (initial weights a refit starts again from)."""
    wanted = {id(p) for p in parameters}
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if id(p) in wanted}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that currently require grad, by name (what a unit's best epoch is made of)."""
    return parameter_values(model, [p for p in model.parameters() if p.requires_grad])


def load_partial_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Load a subset of the model's tensors, refusing unknown names or wrong shapes."""
    own = model.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f"{what}: tensors {unknown[:5]} are not in the model")
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in tensors.items() if v.shape != own[k].shape}
    if bad:
        raise ValueError(f"{what}: shape mismatch (got, expected) {dict(list(bad.items())[:5])}")
    model.load_state_dict(tensors, strict=False)


def teacher_state(model: CRCGSForPreTraining) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(TEACHER_PREFIXES)}


def save_teachers(model: CRCGSForPreTraining, folder: str | os.PathLike) -> None:
    """`folder/model.safetensors` (the two generation networks) + `folder/config.json`."""
    folder = Path(folder)
    atomic_save_tensors(teacher_state(model), folder / "model.safetensors")
    atomic_write_text(folder / "config.json", model.config.to_json_string())


def load_teachers(model: CRCGSForPreTraining, path: str | os.PathLike) -> Path:
    """Load both teachers from a previous run: its output_dir, a model folder or a teachers/ folder."""
    path = Path(path)
    candidates = [
        path / "stages" / "teachers" / "best.safetensors",
        path / "teachers" / "model.safetensors",
        path / "model.safetensors",
    ]
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        raise ValueError(f"--teachers_path: expected one of {[str(c) for c in candidates]}, found none")
    tensors = {k: v for k, v in load_file(str(file)).items() if k.startswith(TEACHER_PREFIXES)}
    missing = sorted(set(teacher_state(model)) - set(tensors))
    if missing:
        raise ValueError(f"--teachers_path: {file} lacks teacher tensors {missing[:5]}")
    load_partial_state(model, tensors, "--teachers_path")
    return file


def _hash_head_names(model: CRCGSForPreTraining) -> set[str]:
    return {f"crcgs.{n}" for n, _ in model.crcgs.hash_head.named_parameters(prefix="hash_head")}


def load_student(model: CRCGSForPreTraining, path: str | os.PathLike) -> Path:
    """Load the student (all of `CRCGSModel` but the hash head) from a previous run's output_dir (its refit
    student when it has one) or a model folder (config.json + model.safetensors)."""
    path = Path(path)
    stage_files = [path / "stages" / unit / "best.safetensors" for unit in (STUDENT_REFIT, "student")]
    stage_file = next((f for f in stage_files if f.is_file()), None)
    if stage_file is not None:
        tensors, source = load_file(str(stage_file)), stage_file
    elif (path / "config.json").is_file():
        retrieval = CRCGSModel.from_pretrained(str(path))
        tensors, source = {f"crcgs.{k}": v for k, v in retrieval.state_dict().items()}, path
    else:
        raise ValueError(
            f"--student_path: expected a run's output_dir ({stage_files[-1]}) or a model folder, got {path}"
        )
    skip = _hash_head_names(model)
    student = {k: v for k, v in tensors.items() if k.startswith("crcgs.") and k not in skip}
    load_partial_state(model, student, "--student_path")
    return source


def without_hash_head(model: CRCGSForPreTraining) -> dict[str, torch.Tensor]:
    """Every tensor of the model except the hash head's (what a model of another code length can reuse)."""
    skip = _hash_head_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in skip}
