"""LoRA on the transformers backbones of the raw-input towers, through ``peft``.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, Eq. 3) replaces a
frozen weight ``W0`` by ``W0 + (alpha / r) * B A`` with ``A`` (r x in) and ``B`` (out x r, zero at
start), so an adapted backbone starts out equal to the pretrained one and only ``A, B`` train.

The attention projections that receive adapters are named differently per architecture (BERT
``query/value``, ViT in transformers 5 ``q_proj/v_proj``, T5 ``q/v``, DistilBERT ``q_lin/v_lin``,
GPT-2 ``c_attn``): :func:`find_lora_target_modules` reads them off ``named_modules()``. ``peft`` is
imported lazily (about 5 s).
"""

from __future__ import annotations

import math
import os
from typing import Any

from torch import nn

from .utils import atomic_directory

__all__ = [
    "DEFAULT_LORA_OPTIONS",
    "apply_lora",
    "find_lora_target_modules",
    "load_lora_adapter",
    "resolve_lora_options",
    "save_lora_adapter",
]

DEFAULT_LORA_OPTIONS: dict[str, Any] = {
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": None,
}

# Attention projections that receive adapters, per naming family, query + value as in the LoRA paper
# (Sec. 7.1: adapting W_q and W_v is the best use of a fixed parameter budget). First match wins.
_ATTENTION_TARGETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),  # ViT/CLIP/Llama family in transformers 5
    ("query", "value"),  # BERT, RoBERTa, MiniLM, ELECTRA
    ("q_lin", "v_lin"),  # DistilBERT
    ("q", "v"),  # T5
    ("qkv",),  # fused projections (e.g. timm-style ViTs)
    ("c_attn",),  # GPT-2 (transformers Conv1D)
)


def _adaptable_leaf_names(model: nn.Module) -> set[str]:
    """Last name components of the modules ``peft`` LoRA can wrap (Linear, Conv1d/2d, transformers Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, Conv1D)
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, kinds)}


def find_lora_target_modules(model: nn.Module) -> list[str]:
    """Names of the attention query/value projections of ``model``, for ``LoraConfig.target_modules``.

    Raises:
        ValueError: when no known attention projection exists (e.g. a CNN); the message lists the
            adaptable module names so that ``target_modules`` can be given explicitly.
    """
    names = _adaptable_leaf_names(model)
    for family in _ATTENTION_TARGETS:
        if all(name in names for name in family):
            return list(family)
    raise ValueError(
        f"cannot find attention projections for LoRA in {type(model).__name__}: expected one of "
        f"{[list(f) for f in _ATTENTION_TARGETS]}, got adaptable modules {sorted(names)}; "
        "set target_modules in the tower's lora options"
    )


def resolve_lora_options(options: dict[str, Any] | None, field: str = "lora") -> dict[str, Any]:
    """Validate LoRA options and fill in defaults (``r=8, lora_alpha=16, lora_dropout=0.05``).

    ``target_modules`` is ``None`` (found per architecture), a module name, a list of names, or
    ``"all-linear"``. Unknown keys and out-of-range values raise ``ValueError`` naming ``field``.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"{field} must be a dict of LoRA options, got {type(options).__name__}")
    unknown = sorted(set(options) - set(DEFAULT_LORA_OPTIONS))
    if unknown:
        raise ValueError(
            f"{field} has unknown keys {unknown}; expected a subset of {sorted(DEFAULT_LORA_OPTIONS)}"
        )
    resolved = {**DEFAULT_LORA_OPTIONS, **options}
    r, alpha, dropout = resolved["r"], resolved["lora_alpha"], resolved["lora_dropout"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{field}['r'] must be a positive integer, got {r!r}")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"{field}['lora_alpha'] must be a positive number, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{field}['lora_dropout'] must be in [0, 1), got {dropout!r}")
    targets = resolved["target_modules"]
    if isinstance(targets, (list, tuple)):
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"{field}['target_modules'] must be non-empty module names, got {targets!r}")
        resolved["target_modules"] = list(targets)
    elif targets is not None and not (isinstance(targets, str) and targets):
        raise ValueError(
            f"{field}['target_modules'] must be None, a name or a list of names, got {targets!r}"
        )
    return resolved


def apply_lora(backbone: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Wrap ``backbone`` in a ``peft.PeftModel`` with LoRA adapters; every non-adapter weight is frozen.

    Args:
        backbone: a ``transformers`` backbone (``PreTrainedModel``).
        options: resolved options (:func:`resolve_lora_options`); ``target_modules=None`` means
            :func:`find_lora_target_modules`.
    """
    from peft import LoraConfig, get_peft_model

    targets = options["target_modules"] or find_lora_target_modules(backbone)
    lora_config = LoraConfig(
        r=options["r"],
        lora_alpha=options["lora_alpha"],
        lora_dropout=options["lora_dropout"],
        target_modules=targets,
        bias="none",
    )
    return get_peft_model(backbone, lora_config)


def save_lora_adapter(peft_model: nn.Module, save_directory: str) -> None:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` of ``peft_model`` into ``save_directory``.

    The files are written in a temporary folder next to ``save_directory`` that then replaces it, so a
    reader never sees a half-written adapter.
    """
    with atomic_directory(save_directory) as tmp_dir:
        peft_model.save_pretrained(str(tmp_dir), safe_serialization=True)


def load_lora_adapter(backbone: nn.Module, adapter_directory: str, is_trainable: bool = False) -> nn.Module:
    """Load a saved adapter onto a plain ``backbone``; returns the ``peft.PeftModel``.

    Raises:
        ValueError: when ``adapter_directory`` has no ``adapter_config.json``.
    """
    from peft import PeftModel

    if not os.path.isfile(os.path.join(adapter_directory, "adapter_config.json")):
        raise ValueError(f"adapter_directory {adapter_directory!r} has no adapter_config.json")
    return PeftModel.from_pretrained(backbone, adapter_directory, is_trainable=is_trainable)
