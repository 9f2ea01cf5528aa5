"""Transformers backbones in front of the CRCGS towers: construction, pooling, fine-tuning modes.

With raw inputs a tower is ``backbone -> pooled output -> the paper's MLP`` (docs/METHOD.md, "The four
networks", item 3: on MIRFLICKR-25K and NUS-WIDE the release feeds 224x224 images through VGG-19-bn in
front of the image MLP and fine-tunes it end to end). :class:`BackboneEncoder` is the first two steps:
it turns ``pixel_values`` or ``input_ids`` + ``attention_mask`` into one vector per input; the MLP
stays in :mod:`modeling_crcgs.modeling_crcgs`.

Config fields per tower (prefix ``vision_`` for images, ``text_`` for texts; see
:func:`set_backbone_fields`):

- ``<prefix>config``: the backbone's ``transformers`` config (object or dict with ``model_type``);
  filled from ``<prefix>backbone`` when only the path is given.
- ``<prefix>backbone``: a local pretrained folder whose weights ``from_pretrained`` loads (offline)
  when the model is built; ``None`` builds randomly initialised weights from the config.
- ``<prefix>finetuning``: ``"frozen"`` (no gradient, eval mode), ``"full"`` or ``"lora"``.
- ``<prefix>lora``: LoRA options (:func:`modeling_crcgs.lora.resolve_lora_options`).
- ``<prefix>pooling``: ``"auto"`` (the backbone's pooled output when it has one, else the mean over
  tokens/patches), ``"pooler"``, ``"mean"`` (masked by ``attention_mask`` for text) or ``"cls"``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from .lora import apply_lora, resolve_lora_options

__all__ = [
    "FINETUNING_MODES",
    "POOLING_MODES",
    "BackboneEncoder",
    "BackboneTower",
    "backbone_output_dim",
    "build_backbone",
    "pool_backbone_output",
    "resolve_backbone_config",
    "resolve_pooling",
    "set_backbone_fields",
    "validate_backbone_fields",
]

FINETUNING_MODES = ("frozen", "full", "lora")
POOLING_MODES = ("auto", "pooler", "mean", "cls")
# Config attribute prefix of each tower.
_PREFIX = {"image": "vision_", "text": "text_"}


def resolve_backbone_config(
    backbone_config: PreTrainedConfig | dict | None, backbone_path: str | None, field: str = "backbone_config"
) -> PreTrainedConfig | None:
    """The backbone's ``transformers`` config from a config object, its dict, or a pretrained folder.

    Returns ``None`` when neither ``backbone_config`` nor ``backbone_path`` is given (feature tower).
    """
    if isinstance(backbone_config, PreTrainedConfig):
        return backbone_config
    if isinstance(backbone_config, dict):
        model_type = backbone_config.get("model_type")
        if not model_type:
            raise ValueError(f"{field} dict needs a 'model_type' key, got keys {sorted(backbone_config)}")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"{field} has unknown model_type {model_type!r}")
        return CONFIG_MAPPING[model_type].from_dict(backbone_config)
    if backbone_config is not None:
        raise ValueError(
            f"{field} must be a transformers config, its dict or None, got {type(backbone_config).__name__}"
        )
    if backbone_path is None:
        return None
    try:
        return AutoConfig.from_pretrained(backbone_path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load a backbone config from {backbone_path!r} (offline): {err}") from err


def resolve_pooling(pooling: str, backbone_path: str | None = None, field: str = "pooling") -> str:
    """Validate ``pooling``; ``"auto"`` on a sentence-transformers folder becomes the folder's own pooling.

    sentence-transformers checkpoints (e.g. all-MiniLM-L6-v2) store their pooling in
    ``1_Pooling/config.json``; their embedding is defined by it, not by BERT's pooler head.
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"{field} must be one of {POOLING_MODES}, got {pooling!r}")
    if pooling != "auto" or backbone_path is None:
        return pooling
    st_pooling = os.path.join(backbone_path, "1_Pooling", "config.json")
    if not os.path.isfile(st_pooling):
        return pooling
    with open(st_pooling, encoding="utf-8") as f:
        modes = json.load(f)
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    return pooling


def set_backbone_fields(
    config: PreTrainedConfig,
    modality: str,
    backbone_config: PreTrainedConfig | dict | None,
    backbone: str | None,
    finetuning: str,
    lora: dict[str, Any] | None,
    pooling: str,
) -> None:
    """Validate one tower's backbone options and set them on ``config`` as ``<prefix><name>``."""
    prefix = _PREFIX[modality]
    if backbone is not None and not isinstance(backbone, (str, os.PathLike)):
        raise ValueError(f"{prefix}backbone must be a path or None, got {type(backbone).__name__}")
    backbone = None if backbone is None else os.fspath(backbone)
    if finetuning not in FINETUNING_MODES:
        raise ValueError(f"{prefix}finetuning must be one of {FINETUNING_MODES}, got {finetuning!r}")
    setattr(config, f"{prefix}config", resolve_backbone_config(backbone_config, backbone, f"{prefix}config"))
    setattr(config, f"{prefix}backbone", backbone)
    setattr(config, f"{prefix}finetuning", finetuning)
    setattr(config, f"{prefix}lora", resolve_lora_options(lora, f"{prefix}lora"))
    setattr(config, f"{prefix}pooling", resolve_pooling(pooling, backbone, f"{prefix}pooling"))


def validate_backbone_fields(config: PreTrainedConfig) -> None:
    """Re-check both towers' fields (they may be overridden after ``__init__``, e.g. by ``from_dict``)."""
    for prefix in _PREFIX.values():
        backbone_config = getattr(config, f"{prefix}config", None)
        if backbone_config is not None and not isinstance(backbone_config, PreTrainedConfig):
            raise ValueError(
                f"{prefix}config must be a transformers config, got {type(backbone_config).__name__}"
            )
        finetuning = getattr(config, f"{prefix}finetuning", "full")
        if finetuning not in FINETUNING_MODES:
            raise ValueError(f"{prefix}finetuning must be one of {FINETUNING_MODES}, got {finetuning!r}")
        pooling = getattr(config, f"{prefix}pooling", "auto")
        if pooling not in POOLING_MODES:
            raise ValueError(f"{prefix}pooling must be one of {POOLING_MODES}, got {pooling!r}")
        resolve_lora_options(getattr(config, f"{prefix}lora", None), f"{prefix}lora")


def _building_on_meta_device() -> bool:
    """True inside ``from_pretrained``'s meta-device init, where the checkpoint supplies every weight."""
    return torch.empty(0).device.type == "meta"


def build_backbone(backbone_config: PreTrainedConfig, backbone_path: str | None = None) -> PreTrainedModel:
    """``AutoModel.from_pretrained(backbone_path)`` (offline, float32) or ``AutoModel.from_config``.

    Inside the outer model's ``from_pretrained`` the backbone is built from its config only: the
    checkpoint being loaded holds the (fine-tuned) backbone weights, and the original pretrained folder
    need not exist on the machine that reloads it.
    """
    if backbone_path is not None and not _building_on_meta_device():
        try:
            return AutoModel.from_pretrained(
                backbone_path, config=backbone_config, local_files_only=True, dtype=torch.float32
            )
        except OSError as err:
            raise ValueError(f"cannot load backbone weights from {backbone_path!r} (offline): {err}") from err
    return AutoModel.from_config(backbone_config)


def backbone_output_dim(backbone_config: PreTrainedConfig) -> int:
    """Width of the pooled output: ``hidden_size`` (transformers), else ``hidden_sizes[-1]`` (CNNs)."""
    if isinstance(getattr(backbone_config, "hidden_size", None), int):
        return backbone_config.hidden_size
    sizes = getattr(backbone_config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ValueError(
        f"cannot tell the output width of a {type(backbone_config).__name__}: expected hidden_size or hidden_sizes"
    )


def pool_backbone_output(
    outputs: Any, pooling: str = "auto", attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One vector per input from a backbone output, shape (batch, hidden).

    - ``"auto"``: ``outputs.pooler_output`` when the backbone has one, else ``"mean"``.
    - ``"mean"``: sum_t m_t h_t / sum_t m_t over tokens t with mask m (all ones for patches); a CNN
      feature map (batch, channels, h, w) is averaged over h, w.
    - ``"cls"``: the first token's hidden state.
    """
    pooled = getattr(outputs, "pooler_output", None)
    if pooling in ("auto", "pooler") and pooled is not None:
        return pooled.flatten(1)  # ResNet's pooler output is (batch, channels, 1, 1)
    if pooling == "pooler":
        raise ValueError("pooling='pooler' but the backbone returns no pooler_output; use 'mean' or 'cls'")
    hidden = outputs.last_hidden_state
    if hidden.dim() == 4:  # (batch, channels, h, w)
        if pooling == "cls":
            raise ValueError(
                "pooling='cls' needs a token sequence, got a (batch, channels, h, w) feature map"
            )
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask must have shape {tuple(hidden.shape[:2])} (batch, tokens), got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (batch, tokens, 1)
    counts = mask.sum(dim=1)  # (batch, 1)
    if bool((counts == 0).any()):
        raise ValueError("attention_mask has a row without any token; cannot mean-pool an empty text")
    return (hidden * mask).sum(dim=1) / counts


class BackboneEncoder(nn.Module):
    """A ``transformers`` backbone plus pooling: raw images or token ids -> (batch, output_dim).

    Args:
        backbone_config (`PreTrainedConfig`): architecture of the backbone.
        backbone_path (`str`, *optional*): local pretrained folder loaded with ``from_pretrained``.
        modality (`str`): ``"image"`` (takes ``pixel_values``) or ``"text"`` (``input_ids``, ``attention_mask``).
        finetuning (`str`, *optional*, defaults to ``"full"``): ``"frozen"``, ``"full"`` or ``"lora"``.
        lora (`dict`, *optional*): LoRA options, used when ``finetuning="lora"``.
        pooling (`str`, *optional*, defaults to ``"auto"``): see :func:`pool_backbone_output`.
    """

    def __init__(
        self,
        backbone_config: PreTrainedConfig,
        backbone_path: str | None = None,
        modality: str = "image",
        finetuning: str = "full",
        lora: dict[str, Any] | None = None,
        pooling: str = "auto",
    ):
        super().__init__()
        if modality not in _PREFIX:
            raise ValueError(f"modality must be one of {tuple(_PREFIX)}, got {modality!r}")
        if finetuning not in FINETUNING_MODES:
            raise ValueError(f"finetuning must be one of {FINETUNING_MODES}, got {finetuning!r}")
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.modality, self.finetuning, self.pooling = modality, finetuning, pooling
        self.output_dim = backbone_output_dim(backbone_config)
        backbone = build_backbone(backbone_config, backbone_path)
        if finetuning == "lora":
            backbone = apply_lora(backbone, resolve_lora_options(lora))
        elif finetuning == "frozen":
            backbone.requires_grad_(False)
            backbone.eval()
        if not _building_on_meta_device():
            # The backbone (and peft's adapters: B = 0 at start) are initialised already; the outer
            # model's post_init must not re-initialise them.
            for module in backbone.modules():
                module._is_hf_initialized = True
        self.backbone = backbone

    @classmethod
    def from_crcgs_config(cls, config: PreTrainedConfig, modality: str) -> BackboneEncoder | None:
        """The tower's encoder from a ``CRCGSConfig``; ``None`` when its ``<prefix>config`` is unset."""
        prefix = _PREFIX[modality]
        backbone_config = getattr(config, f"{prefix}config", None)
        if backbone_config is None:
            return None
        return cls(
            backbone_config,
            backbone_path=getattr(config, f"{prefix}backbone", None),
            modality=modality,
            finetuning=getattr(config, f"{prefix}finetuning", "full"),
            lora=getattr(config, f"{prefix}lora", None),
            pooling=getattr(config, f"{prefix}pooling", "auto"),
        )

    def train(self, mode: bool = True) -> BackboneEncoder:
        """Set training mode; a frozen backbone stays in eval mode (no dropout, fixed features)."""
        super().train(mode)
        if self.finetuning == "frozen":
            self.backbone.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled backbone output, shape (batch, output_dim)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetuning != "frozen"):
            if self.modality == "image":
                if pixel_values is None:
                    raise ValueError("the image backbone needs pixel_values (batch, channels, height, width)")
                if pixel_values.dim() != 4:
                    raise ValueError(
                        f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}"
                    )
                outputs = self.backbone(pixel_values=pixel_values)
                return pool_backbone_output(outputs, self.pooling)
            if input_ids is None:
                raise ValueError("the text backbone needs input_ids (batch, tokens)")
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            outputs = self.backbone(**kwargs)
            return pool_backbone_output(outputs, self.pooling, attention_mask)

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Backbone parameters the fine-tuning mode never trains: all (``"frozen"``), all but the LoRA
        adapters (``"lora"``), none (``"full"``). Trainers leave them out of their parameter groups."""
        if self.finetuning == "full":
            return []
        return [
            p
            for name, p in self.backbone.named_parameters()
            if self.finetuning == "frozen" or "lora_" not in name
        ]

    def merge_adapter(self) -> None:
        """Fold LoRA into the backbone weights (W0 + alpha/r B A); the tower becomes ``"full"``."""
        if self.finetuning != "lora":
            raise ValueError(f"merge_adapter needs finetuning='lora', got {self.finetuning!r}")
        self.backbone = self.backbone.merge_and_unload()
        self.backbone.requires_grad_(True)
        self.finetuning = "full"


class BackboneTower(nn.Module):
    """A raw-input tower: ``backbone -> pooled output -> head`` (the head is the paper's tower MLP).

    Args:
        encoder (`BackboneEncoder`): backbone + pooling, output width ``encoder.output_dim``.
        head (`nn.Module`): the MLP on the pooled output; must have an ``output_dim`` attribute.
    """

    def __init__(self, encoder: BackboneEncoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.output_dim = head.output_dim

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch, ...) raw inputs -> (batch, output_dim)."""
        return self.head(
            self.encoder(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        )
