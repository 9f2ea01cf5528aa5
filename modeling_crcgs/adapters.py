"""LoRA adapters of a whole CRCGS model: save each LoRA tower's ``peft`` adapter beside the checkpoint,
merge them into the backbones, and turn a LoRA checkpoint into a plain one.

Sits above :mod:`.backbones` (it finds the LoRA ``BackboneEncoder``s) and :mod:`.lora` (the ``peft`` calls).
"""

from __future__ import annotations

import os

from torch import nn
from transformers import AutoModel

from .backbones import BackboneEncoder
from .lora import save_lora_adapter
from .processing_crcgs import CRCGSProcessor
from .utils import atomic_directory

__all__ = ["ADAPTER_DIRS", "merge_lora_checkpoint", "merge_model_adapters", "save_model_adapters"]

# Adapter folder of each tower inside a model checkpoint.
ADAPTER_DIRS = {"image": "image_adapter", "text": "text_adapter"}
_FINETUNING_FIELD = {"image": "vision_finetuning", "text": "text_finetuning"}


def _lora_encoders(model: nn.Module) -> dict[str, nn.Module]:
    """The ``BackboneEncoder``s of ``model`` under LoRA, keyed by modality (one per modality)."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, BackboneEncoder) and module.finetuning == "lora":
            if module.modality in found:
                raise ValueError(f"model has two LoRA {module.modality} backbones; the second is at {name!r}")
            found[module.modality] = module
    return found


def save_model_adapters(model: nn.Module, save_directory: str) -> list[str]:
    """Save each LoRA tower's adapter into ``save_directory/{image,text}_adapter/``; returns the folders.

    The adapters are also inside the model's own ``model.safetensors``; these folders are the standard
    ``peft`` format, loadable onto the plain backbone with :func:`load_lora_adapter`.
    """
    written = []
    for modality, encoder in _lora_encoders(model).items():
        target = os.path.join(save_directory, ADAPTER_DIRS[modality])
        save_lora_adapter(encoder.backbone, target)
        written.append(target)
    return written


def merge_model_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter of ``model`` into its backbone, in place; the config says ``"full"`` after.

    The merged model computes the same outputs as the adapted one (up to float rounding) with plain
    backbones, so its checkpoint loads without ``peft``.
    """
    encoders = _lora_encoders(model)
    if not encoders:
        raise ValueError("model has no LoRA backbone to merge (vision_finetuning/text_finetuning != 'lora')")
    for modality, encoder in encoders.items():
        encoder.merge_adapter()
        setattr(model.config, _FINETUNING_FIELD[modality], "full")
    return model


def merge_lora_checkpoint(model_directory: str, output_directory: str) -> str:
    """Load a LoRA CRCGS checkpoint, merge its adapters and save a plain checkpoint (plus its processor).

    Writes into a temporary folder next to ``output_directory`` that then replaces it. Returns
    ``output_directory``.
    """
    if not os.path.isfile(os.path.join(model_directory, "config.json")):
        raise ValueError(f"model_directory {model_directory!r} has no config.json")
    model = AutoModel.from_pretrained(model_directory)
    merge_model_adapters(model)
    output_directory = os.path.abspath(output_directory)
    with atomic_directory(output_directory) as tmp_dir:
        model.save_pretrained(tmp_dir)
        if os.path.isfile(os.path.join(model_directory, "processor_config.json")):
            CRCGSProcessor.from_pretrained(model_directory).save_pretrained(tmp_dir)
    return output_directory
