"""CRCGS networks as ``transformers`` models (METHOD.md "The four networks").

* :class:`CRCGSModel`: the student (two towers, ONE shared common-space layer W, ONE shared label classifier C,
  two projections into the converted space) and the hash head: everything retrieval needs.
* :class:`CRCGSForPreTraining`: a :class:`CRCGSModel` plus the two teacher generation networks and the two
  discriminators; every training stage runs through its ``forward`` so that a DDP-wrapped model synchronises
  gradients.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import BackboneEncoder, BackboneTower
from .configuration_crcgs import CRCGSConfig
from .hashing import sign_codes
from .lora import save_model_adapters
from .losses import (
    adversarial_loss,
    base_loss,
    contrastive_loss,
    discriminator_loss,
    distillation_loss,
    hash_loss_terms,
    label_similarity,
    reconstruction_loss,
    similarity_likelihood_loss,
    support_set_loss,
)
from .normalization import FeatureNormalizer

__all__ = [
    "CRCGSModel",
    "CRCGSForPreTraining",
    "CRCGSPreTrainedModel",
    "CRCGSModelOutput",
    "CRCGSPreTrainingOutput",
    "FeatureTower",
    "GenerationNetwork",
    "Discriminator",
    "HashHead",
    "build_tower",
    "STAGES",
]

STAGES = ("student", "discriminator", "teacher", "hash")


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CRCGSModelOutput(ModelOutput):
    """Output of :class:`CRCGSModel`. A field is None when its modality (or the loss) was not asked for.

    Args:
        loss (`torch.FloatTensor` of shape `()`): total loss, when `return_loss=True`.
        loss_terms (`dict[str, torch.Tensor]`): detached value of every computed loss term.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, common_dim)`): u = W f_I(x), used for retrieval.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, common_dim)`): v = W f_T(t).
        image_label_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): p = C u.
        text_label_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): q = C v.
        image_converted (`torch.FloatTensor` of shape `(batch_size, converted_dim)`): a = ReLU(P_I u).
        text_converted (`torch.FloatTensor` of shape `(batch_size, converted_dim)`): b = ReLU(P_T v).
        image_hash_logits (`torch.FloatTensor` of shape `(batch_size, hash_bits)`): H(u), tanh output in (-1, 1).
        text_hash_logits (`torch.FloatTensor` of shape `(batch_size, hash_bits)`): H(v).
    """

    loss: Optional[torch.FloatTensor] = None
    loss_terms: Optional[dict[str, torch.Tensor]] = None
    image_embeds: Optional[torch.FloatTensor] = None
    text_embeds: Optional[torch.FloatTensor] = None
    image_label_logits: Optional[torch.FloatTensor] = None
    text_label_logits: Optional[torch.FloatTensor] = None
    image_converted: Optional[torch.FloatTensor] = None
    text_converted: Optional[torch.FloatTensor] = None
    image_hash_logits: Optional[torch.FloatTensor] = None
    text_hash_logits: Optional[torch.FloatTensor] = None


@dataclass
class CRCGSPreTrainingOutput(CRCGSModelOutput):
    """Output of :class:`CRCGSForPreTraining`: the fields of :class:`CRCGSModelOutput` that the stage computed, plus

    Args:
        image_teacher_features (`torch.FloatTensor` of shape `(batch_size, converted_dim)`): g = E_I2T(x).
        text_teacher_features (`torch.FloatTensor` of shape `(batch_size, converted_dim)`): h = E_T2I(t).
        text_reconstruction (`torch.FloatTensor` of shape `(batch_size, text_input_dim)`): G_I2T(E_I2T(x))
            ("teacher" stage).
        image_reconstruction (`torch.FloatTensor` of shape `(batch_size, image_input_dim)`): G_T2I(E_T2I(t))
            ("teacher" stage).
        combined_hash_logits (`torch.FloatTensor` of shape `(batch_size, hash_bits)`): H((u + v) / 2) ("hash" stage).
    """

    image_teacher_features: Optional[torch.FloatTensor] = None
    text_teacher_features: Optional[torch.FloatTensor] = None
    text_reconstruction: Optional[torch.FloatTensor] = None
    image_reconstruction: Optional[torch.FloatTensor] = None
    combined_hash_logits: Optional[torch.FloatTensor] = None


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


def mlp(dims: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """``Linear(dims[i], dims[i+1])`` followed by ``activation()`` for each consecutive pair (release ``mlp_network``)."""
    layers: list[nn.Module] = []
    for in_dim, out_dim in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(in_dim, out_dim), activation()]
    return nn.Sequential(*layers)


class FeatureTower(nn.Module):
    """Student tower on pre-extracted features: ``len(hidden_dims)`` x (Linear + tanh) (METHOD.md network 3),
    after an input dropout (0 in the release; the recipe for small real data uses it as its regulariser).

    Args:
        input_dim: width of the input features. hidden_dims: widths of the layers (release: 2048 x 3).
        input_dropout: dropout probability on the input features, active in training mode.
    """

    def __init__(self, input_dim: int, hidden_dims: list[int], input_dropout: float = 0.0):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = hidden_dims[-1]
        self.input_dropout = nn.Dropout(input_dropout)
        self.layers = mlp([input_dim, *hidden_dims], nn.Tanh)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, input_dim) -> (batch, output_dim)."""
        return self.layers(self.input_dropout(features))


def build_tower(config: CRCGSConfig, modality: str) -> nn.Module:
    """The tower of one modality ("image" or "text"); every tower has an ``output_dim`` attribute."""
    encoder = BackboneEncoder.from_crcgs_config(config, modality) if modality in ("image", "text") else None
    if encoder is not None:  # raw inputs (issue 6): backbone -> pooled output -> the tower MLP
        return BackboneTower(
            encoder, FeatureTower(encoder.output_dim, config.tower_hidden_dims, config.tower_input_dropout)
        )
    if modality == "image":
        return FeatureTower(config.image_input_dim, config.tower_hidden_dims, config.tower_input_dropout)
    if modality == "text":
        return FeatureTower(config.text_input_dim, config.tower_hidden_dims, config.tower_input_dropout)
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


class GenerationNetwork(nn.Module):
    """Teacher generation network: encoder E = dropout -> MLP(ReLU), decoder G = MLP(ReLU) (METHOD.md networks 1-2).

    Args:
        input_dim: width of the source modality. encoder_dims: hidden widths of E. feature_dim: width of the
        generative feature E(x) (= converted_dim). decoder_dims: hidden widths of G. output_dim: width of the
        target modality. dropout: dropout on the encoder input.
    """

    def __init__(
        self,
        input_dim: int,
        encoder_dims: list[int],
        feature_dim: int,
        decoder_dims: list[int],
        output_dim: int,
        dropout: float,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.encoder = mlp([input_dim, *encoder_dims, feature_dim], nn.ReLU)
        self.decoder = mlp([feature_dim, *decoder_dims, output_dim], nn.ReLU)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """E(x) with input dropout (in training mode): (batch, input_dim) -> (batch, feature_dim)."""
        return self.encoder(self.dropout(source))

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """G(E(x)): (batch, input_dim) -> (batch, output_dim)."""
        return self.decoder(self.encode(source))


class Discriminator(nn.Module):
    """Teaching assistant: MLP(ReLU) over ``dims`` then Linear to 2 classes (teacher = 1, student = 0)."""

    def __init__(self, input_dim: int, dims: list[int]):
        super().__init__()
        self.layers = mlp([input_dim, *dims], nn.ReLU)
        self.classifier = nn.Linear(dims[-1] if dims else input_dim, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, input_dim) -> logits (batch, 2)."""
        return self.classifier(self.layers(inputs))


class HashHead(nn.Module):
    """Binary transform (METHOD.md network 5): dropout, Linear(d, h)+tanh, Linear(h, h)+tanh, Linear(h, K)+tanh.

    The release writes the last map as a Conv1d with kernel h over one channel, which is exactly a Linear.
    """

    def __init__(self, input_dim: int, hidden_dim: int, hash_bits: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(input_dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, hidden_dim)
        self.hash_layer = nn.Linear(hidden_dim, hash_bits)

    def forward(self, embeds: torch.Tensor, apply_dropout: bool = True) -> torch.Tensor:
        """(batch, d) -> tanh outputs (batch, K); the input dropout acts in training mode when ``apply_dropout``."""
        hidden = self.dropout(embeds) if apply_dropout else embeds
        hidden = torch.tanh(self.linear1(hidden))
        hidden = torch.tanh(self.linear2(hidden))
        return torch.tanh(self.hash_layer(hidden))


def frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Run ``module`` with detached parameters: gradients reach the inputs but never the module's parameters.

    Used for the decoders and discriminators inside the student step. Unlike toggling ``requires_grad``,
    this leaves the parameters' flags alone (safe under DDP and with other optimizers holding them).
    """
    state = {name: param.detach() for name, param in module.named_parameters()}
    state.update(dict(module.named_buffers()))
    return torch.func.functional_call(module, state, args)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Temporarily put ``module`` in eval mode (the release runs the student in eval mode during D steps)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------


def _check_matrix(tensor: object, name: str, width: int, dtype: torch.dtype) -> torch.Tensor:
    """A finite floating (batch, width) tensor, cast to ``dtype``; ValueError naming ``name`` otherwise."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2 or tensor.shape[1] != width:
        raise ValueError(f"{name} must have shape (batch, {width}), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    if not (
        tensor.is_floating_point()
        or tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)
    ):
        raise ValueError(f"{name} must be a real tensor, got dtype {tensor.dtype}")
    tensor = tensor.to(dtype)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def _shape_mismatch_message(path: str | os.PathLike, kwargs: dict) -> str:
    """Explain a checkpoint/config shape mismatch by the config fields that differ."""
    try:
        saved = CRCGSConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError):
        saved = {}
    requested_config = kwargs.get("config")
    if isinstance(requested_config, PreTrainedConfig):
        requested = requested_config.to_dict()
    else:
        requested = {**saved, **{key: value for key, value in kwargs.items() if key in saved}}
    skip = {"architectures", "auto_map", "transformers_version", "_name_or_path", "dtype", "torch_dtype"}
    differences = [
        f"{key}: checkpoint {saved[key]!r} vs requested {requested[key]!r}"
        for key in sorted(saved)
        if key not in skip and key in requested and requested[key] != saved[key]
    ]
    detail = "; ".join(differences) if differences else "see the load report above"
    return (
        f"the checkpoint at {os.fspath(path)!r} does not fit the requested config (weight shapes differ): "
        f"{detail}. Load it with its own config.json, or pass ignore_mismatched_sizes=True to re-initialise "
        "the mismatched weights."
    )


def _normalizer(num_features: int, kind: str) -> Optional[FeatureNormalizer]:
    return None if kind == "none" else FeatureNormalizer(num_features, kind)


def _check_batch(**tensors: Optional[torch.Tensor]) -> None:
    """All given tensors share one batch size (never broadcast one modality against the other)."""
    sizes = {name: t.shape[0] for name, t in tensors.items() if t is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ: {sizes}; every input must have the same number of rows")


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


class CRCGSPreTrainedModel(PreTrainedModel):
    """Base class: config class, weight initialisation (PyTorch's default, as the release), checkpoint prefix."""

    config_class = CRCGSConfig
    base_model_prefix = "crcgs"
    main_input_name = "image_features"
    # A CRCGSModel loads from a CRCGSForPreTraining checkpoint; the teachers and discriminators are not its own.
    _keys_to_ignore_on_load_unexpected = [r"^teacher_", r"^(image|text)_discriminator\."]
    input_modalities = ("image", "text")

    def _init_weights(self, module: nn.Module) -> None:
        """``nn.Linear``: PyTorch's default (kaiming-uniform, a = sqrt(5); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.weight.shape[1]) if module.weight.shape[1] > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As ``PreTrainedModel.from_pretrained``, except that a checkpoint whose weight shapes do not fit the
        requested config raises a ValueError naming the config fields that differ (instead of a RuntimeError
        pointing at a logged report)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(_shape_mismatch_message(pretrained_model_name_or_path, kwargs)) from error

    def _check_labels(self, labels: object, name: str = "labels") -> torch.Tensor:
        labels = _check_matrix(labels, name, self.config.num_labels, self.dtype)
        if bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError(f"{name} must be multi-hot values in [0, 1], got values outside that range")
        return labels


class CRCGSModel(CRCGSPreTrainedModel):
    """CRCGS student and hash head: what retrieval needs (METHOD.md networks 3 and 5).

    u = W f_I(x), v = W f_T(t) (ONE shared W); p = C u, q = C v (ONE shared classifier C);
    a = ReLU(P_I u), b = ReLU(P_T v); hash codes sign(H(u)), sign(H(v)).

    Example:

    ```python
    >>> import torch
    >>> from modeling_crcgs import CRCGSConfig, CRCGSModel
    >>> config = CRCGSConfig(image_input_dim=64, text_input_dim=32, num_labels=5, hash_bits=16,
    ...                      tower_hidden_dims=[32, 32, 32], common_dim=32, converted_dim=32)
    >>> model = CRCGSModel(config).eval()
    >>> out = model(image_features=torch.rand(4, 64), text_features=torch.rand(4, 32))
    >>> tuple(out.image_embeds.shape), tuple(out.text_hash_logits.shape)
    ((4, 32), (4, 16))
    >>> model.get_image_hash_codes(torch.rand(3, 64)).dtype
    torch.int8

    ```
    """

    def __init__(self, config: CRCGSConfig):
        super().__init__(config)
        config.validate_crcgs()
        self.image_tower = build_tower(config, "image")
        self.text_tower = build_tower(config, "text")
        if self.image_tower.output_dim != self.text_tower.output_dim:
            raise ValueError(
                "the image and text towers must end at the same width for the shared layer W, got "
                f"{self.image_tower.output_dim} and {self.text_tower.output_dim}"
            )
        self.common_projection = nn.Linear(self.image_tower.output_dim, config.common_dim)  # W, shared
        self.label_classifier = nn.Linear(config.common_dim, config.num_labels)  # C, shared
        self.image_converter = nn.Linear(config.common_dim, config.converted_dim)  # P_I
        self.text_converter = nn.Linear(config.common_dim, config.converted_dim)  # P_T
        self.hash_head = HashHead(
            config.common_dim, config.hash_head_hidden_dim, config.hash_bits, config.hash_dropout
        )
        # Input normalisers (fitted by the trainer, saved as buffers); None keeps the features as given.
        self.image_normalizer = _normalizer(config.image_input_dim, config.image_feature_normalization)
        self.text_normalizer = _normalizer(config.text_input_dim, config.text_feature_normalization)
        self.post_init()

    def normalize_features(
        self, features: torch.Tensor, modality: str, name: Optional[str] = None
    ) -> torch.Tensor:
        """Checked ``(n, {modality}_input_dim)`` features after the model's fitted input normaliser (if any).

        Every network that takes pre-extracted features (feature towers, teachers, discriminators) sees them
        through this method, so all of them work in the same normalised space."""
        width = self.config.image_input_dim if modality == "image" else self.config.text_input_dim
        name = name or f"{modality}_features"
        features = _check_matrix(features, name, width, self.dtype)
        normalizer = self.image_normalizer if modality == "image" else self.text_normalizer
        return features if normalizer is None else normalizer(features, name)

    @torch.no_grad()
    def fit_feature_normalizers(
        self, image_features: Optional[torch.Tensor] = None, text_features: Optional[torch.Tensor] = None
    ) -> None:
        """Fit the configured normalisers on training features (rows = training items); a modality whose
        normalisation is ``"none"`` or whose features are not given is left alone."""
        for normalizer, features, name in (
            (self.image_normalizer, image_features, "image_features"),
            (self.text_normalizer, text_features, "text_features"),
        ):
            if normalizer is not None and features is not None:
                normalizer.fit(torch.as_tensor(features), name)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """As ``PreTrainedModel.save_pretrained``; towers under LoRA also write their ``peft`` adapters
        (``image_adapter/``, ``text_adapter/``: adapter_config.json + adapter_model.safetensors)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        save_model_adapters(self, os.fspath(save_directory))
        return result

    # -- encoders ------------------------------------------------------------------------------------------

    def get_image_features(
        self, image_features: Optional[torch.Tensor] = None, pixel_values: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Common-space image embeddings u = W f_I(x): (n, image_input_dim) -> (n, common_dim); with
        ``config.vision_config`` set, from ``pixel_values`` (n, channels, height, width) instead."""
        if isinstance(self.image_tower, BackboneTower):
            return self.common_projection(self.image_tower(pixel_values=pixel_values))
        if pixel_values is not None:
            raise ValueError(
                "pixel_values needs an image backbone (config.vision_config); this model takes image_features"
            )
        return self.common_projection(self.image_tower(self.normalize_features(image_features, "image")))

    def get_text_features(
        self,
        text_features: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Common-space text embeddings v = W f_T(t): (n, text_input_dim) -> (n, common_dim); with
        ``config.text_config`` set, from ``input_ids`` + ``attention_mask`` (n, tokens) instead (``text_features``
        are then the teachers' input only and ignored here)."""
        if isinstance(self.text_tower, BackboneTower):
            return self.common_projection(self.text_tower(input_ids=input_ids, attention_mask=attention_mask))
        if input_ids is not None:
            raise ValueError(
                "input_ids needs a text backbone (config.text_config); this model takes text_features"
            )
        return self.common_projection(self.text_tower(self.normalize_features(text_features, "text")))

    @torch.no_grad()
    def hash_codes_from_embeddings(self, embeds: torch.Tensor) -> torch.Tensor:
        """int8 codes in {-1, +1} of shape (n, hash_bits) from common-space embeddings (n, common_dim).

        Codes are deterministic: the hash head's input dropout is not applied, whatever the train/eval mode.
        sign(0) is taken as +1.
        """
        embeds = _check_matrix(embeds, "embeds", self.config.common_dim, self.dtype)
        logits = self.hash_head(embeds, apply_dropout=False)
        return sign_codes(logits)

    @torch.no_grad()
    def get_image_hash_codes(
        self, image_features: Optional[torch.Tensor] = None, pixel_values: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """int8 codes sign(H(u)) in {-1, +1}, shape (n, hash_bits)."""
        return self.hash_codes_from_embeddings(self.get_image_features(image_features, pixel_values))

    @torch.no_grad()
    def get_text_hash_codes(
        self,
        text_features: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """int8 codes sign(H(v)) in {-1, +1}, shape (n, hash_bits)."""
        return self.hash_codes_from_embeddings(
            self.get_text_features(text_features, input_ids, attention_mask)
        )

    def _heads(self, embeds: torch.Tensor, modality: str, with_hash: bool = True) -> dict[str, torch.Tensor]:
        """Label logits, converted features and (optionally) hash logits of one modality's embeddings."""
        converter = self.image_converter if modality == "image" else self.text_converter
        outputs = {
            f"{modality}_embeds": embeds,
            f"{modality}_label_logits": self.label_classifier(embeds),
            f"{modality}_converted": torch.relu(converter(embeds)),
        }
        if with_hash:
            outputs[f"{modality}_hash_logits"] = self.hash_head(embeds)
        return outputs

    def encode(
        self,
        image_features: Optional[torch.Tensor] = None,
        text_features: Optional[torch.Tensor] = None,
        with_hash: bool = True,
        pixel_values: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Every student output of the given modalities, keyed as the fields of :class:`CRCGSModelOutput`."""
        has_image = image_features is not None or pixel_values is not None
        has_text = text_features is not None or input_ids is not None
        if not has_image and not has_text:
            raise ValueError("give image_features, text_features or both; got neither")
        outputs: dict[str, torch.Tensor] = {}
        if has_image:
            outputs.update(
                self._heads(self.get_image_features(image_features, pixel_values), "image", with_hash)
            )
        if has_text:
            text_embeds = self.get_text_features(text_features, input_ids, attention_mask)
            outputs.update(self._heads(text_embeds, "text", with_hash))
        _check_batch(image_features=outputs.get("image_embeds"), text_features=outputs.get("text_embeds"))
        return outputs

    def forward(
        self,
        image_features: Optional[torch.Tensor] = None,
        text_features: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        return_loss: bool = False,
        pixel_values: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> CRCGSModelOutput:
        """Encode one or both modalities; optionally compute the teacher-free part of the student objective.

        Args:
            image_features (`torch.FloatTensor` of shape `(batch_size, image_input_dim)`, *optional*)
            text_features (`torch.FloatTensor` of shape `(batch_size, text_input_dim)`, *optional*)
            pixel_values, input_ids, attention_mask (*optional*): raw inputs of backbone towers
                (``config.vision_config`` / ``config.text_config``), in place of the features.
            labels (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*): multi-hot labels.
            return_loss (`bool`): compute ``loss`` (needs ``labels``). With both modalities:
                ``L_o + w_ssl L_ssl`` (the base loss and the support-set regularizer on a, b: every term of
                the student objective that needs no teacher or discriminator). With one modality X in {u, v}:
                ``phi BCE(C X, y) + alpha J(X, X)``.

        Returns:
            :class:`CRCGSModelOutput` with the fields of the given modalities.
        """
        outputs = self.encode(
            image_features,
            text_features,
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
        )
        if labels is not None:
            labels = self._check_labels(labels)
            _check_batch(
                image_features=outputs.get("image_embeds"),
                text_features=outputs.get("text_embeds"),
                labels=labels,
            )
        loss, terms = None, None
        if return_loss:
            if labels is None:
                raise ValueError("return_loss=True needs labels")
            loss, terms = self._retrieval_loss(outputs, labels)
        return CRCGSModelOutput(loss=loss, loss_terms=terms, **outputs)

    def _base_loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """``L_o`` (:func:`~modeling_crcgs.losses.base_loss`) of u, v, p, q with the config's weights."""
        cfg = self.config
        return base_loss(
            outputs["image_embeds"],
            outputs["text_embeds"],
            outputs["image_label_logits"],
            outputs["text_label_logits"],
            labels,
            cfg.label_loss_weight,
            cfg.similarity_loss_weight,
            cfg.modality_gap_loss_weight,
            cfg.similarity_scale,
        )

    def _retrieval_loss(
        self, outputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        cfg = self.config
        terms: dict[str, torch.Tensor] = {}
        if "image_embeds" in outputs and "text_embeds" in outputs:
            terms["base"] = self._base_loss(outputs, labels)
            if cfg.support_set_weight:
                terms["support_set"] = cfg.support_set_weight * support_set_loss(
                    outputs["image_converted"], outputs["text_converted"], labels, cfg.support_set_temperature
                )
        else:
            modality = "image" if "image_embeds" in outputs else "text"
            embeds, logits = outputs[f"{modality}_embeds"], outputs[f"{modality}_label_logits"]
            base = embeds.new_zeros(())
            if cfg.label_loss_weight:
                base = base + cfg.label_loss_weight * nn.functional.binary_cross_entropy_with_logits(
                    logits, labels
                )
            if cfg.similarity_loss_weight:
                s = label_similarity(labels, labels)
                base = base + cfg.similarity_loss_weight * similarity_likelihood_loss(
                    embeds, embeds, s, cfg.similarity_scale
                )
            terms["base"] = base
        loss = sum(terms.values())
        return loss, {name: value.detach() for name, value in terms.items()}


class CRCGSForPreTraining(CRCGSPreTrainedModel):
    """CRCGS with everything training needs: ``crcgs`` (a :class:`CRCGSModel`), the teachers ``teacher_i2t`` and
    ``teacher_t2i`` (encoder + decoder each) and the discriminators ``image_discriminator`` (D_img, on generated
    images) and ``text_discriminator`` (D_txt, on generated texts).

    Every stage goes through :meth:`forward` (``stage=`` "student", "discriminator", "teacher" or "hash"), each
    using a different subset of parameters: under DDP wrap with ``find_unused_parameters=True``.

    Example:

    ```python
    >>> import torch
    >>> from modeling_crcgs import CRCGSConfig, CRCGSForPreTraining
    >>> config = CRCGSConfig(image_input_dim=64, text_input_dim=32, num_labels=5, hash_bits=16,
    ...                      tower_hidden_dims=[32, 32, 32], common_dim=32, converted_dim=32,
    ...                      contrastive_n_data=10)
    >>> model = CRCGSForPreTraining(config)
    >>> x, t, y = torch.rand(4, 64), torch.rand(4, 32), (torch.rand(4, 5) > 0.5).float()
    >>> out = model(image_features=x, text_features=t, labels=y, stage="student")
    >>> sorted(out.loss_terms)
    ['adversarial', 'base', 'contrastive', 'distillation', 'support_set']

    ```
    """

    def __init__(self, config: CRCGSConfig):
        super().__init__(config)
        self.crcgs = CRCGSModel(config)
        self.teacher_i2t = GenerationNetwork(
            config.image_input_dim,
            config.teacher_i2t_encoder_dims,
            config.converted_dim,
            config.teacher_i2t_decoder_dims,
            config.text_input_dim,
            config.teacher_dropout,
        )
        self.teacher_t2i = GenerationNetwork(
            config.text_input_dim,
            config.teacher_t2i_encoder_dims,
            config.converted_dim,
            config.teacher_t2i_decoder_dims,
            config.image_input_dim,
            config.teacher_dropout,
        )
        self.image_discriminator = Discriminator(config.image_input_dim, config.image_discriminator_dims)
        self.text_discriminator = Discriminator(config.text_input_dim, config.text_discriminator_dims)
        self.post_init()

    # -- parameter groups ----------------------------------------------------------------------------------

    def student_parameters(self) -> list[nn.Parameter]:
        """Towers, W, C, P_I, P_T: the student optimizer's parameters (not the hash head)."""
        excluded = {id(p) for p in self.crcgs.hash_head.parameters()}
        # Backbone weights their fine-tuning mode keeps fixed ("frozen", LoRA's base weights) never train.
        excluded.update(
            id(p)
            for m in self.crcgs.modules()
            if isinstance(m, BackboneEncoder)
            for p in m.frozen_parameters()
        )
        return [p for p in self.crcgs.parameters() if id(p) not in excluded]

    def hash_head_parameters(self) -> list[nn.Parameter]:
        """The hash head's parameters (stage 3)."""
        return list(self.crcgs.hash_head.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """D_img and D_txt (their own Adam optimizer)."""
        return [*self.image_discriminator.parameters(), *self.text_discriminator.parameters()]

    def teacher_parameters(self) -> list[nn.Parameter]:
        """Both generation networks (stage 1)."""
        return [*self.teacher_i2t.parameters(), *self.teacher_t2i.parameters()]

    # -- saving --------------------------------------------------------------------------------------------

    def save_retrieval_model(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write a plain :class:`CRCGSModel` checkpoint (config.json + model.safetensors) of the student and hash
        head into ``save_directory``. The files are written to a temporary folder beside it and moved in
        with ``os.replace``, so a reader never sees a half-written file. ``kwargs`` go to ``save_pretrained``.
        """
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a folder, got the file {save_directory!r}")
        os.makedirs(save_directory, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-crcgs-", dir=save_directory)
        try:
            self.crcgs.save_pretrained(tmp, safe_serialization=True, **kwargs)
            for name in sorted(os.listdir(tmp)):
                target = os.path.join(save_directory, name)
                if os.path.isdir(target):  # a LoRA adapter folder: os.replace cannot overwrite a full folder
                    shutil.rmtree(target)
                os.replace(os.path.join(tmp, name), target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- training stages -----------------------------------------------------------------------------------

    def forward(
        self,
        image_features: Optional[torch.Tensor] = None,
        text_features: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        stage: str = "student",
        teacher_image_features: Optional[torch.Tensor] = None,
        teacher_text_features: Optional[torch.Tensor] = None,
        image_embeds: Optional[torch.Tensor] = None,
        text_embeds: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> CRCGSPreTrainingOutput:
        """Run one training stage and return its loss.

        Args:
            image_features (`(batch_size, image_input_dim)`), text_features (`(batch_size, text_input_dim)`):
                the student's inputs (both required except in the "hash" stage with cached embeddings).
            labels (`(batch_size, num_labels)`): multi-hot; required by "student" and by "hash" when
                ``hash_label_weight > 0``.
            stage (`str`):
                * ``"student"``: ``L = L_o + L_t + L_ta + L_c + L_ssl`` (METHOD.md "Student losses" 1-6). Teachers
                  are frozen (no grad, eval mode: no input dropout); the decoders and discriminators are called with
                  detached parameters (:func:`frozen_call`), so gradients flow through them into a, b but never
                  into their parameters.
                * ``"discriminator"``: ``CE(D_img) + CE(D_txt)`` on teacher (1) vs student (0) generations; the
                  student (in eval mode), teachers and decoders run under ``torch.no_grad``. Needs
                  ``adversarial_weight > 0``.
                * ``"teacher"``: ``L1(G_I2T(E_I2T(x)), t) + L1(G_T2I(E_T2I(t)), x)``.
                * ``"hash"``: the hash-head loss from u, v (``image_embeds``/``text_embeds`` if given, else the
                  student's, computed under ``torch.no_grad``).
            teacher_image_features, teacher_text_features: the teachers' inputs (default: the student's inputs).
            image_embeds, text_embeds (`(batch_size, common_dim)`): cached u, v for the "hash" stage.
            pixel_values, input_ids, attention_mask: the student's raw inputs when its towers have backbones
                (``config.vision_config`` / ``config.text_config``); the teachers still take fixed features
                (``teacher_*``, else ``image_features``/``text_features``).

        Returns:
            :class:`CRCGSPreTrainingOutput` with ``loss``, ``loss_terms`` (detached, every computed term, weighted as
            it enters the loss) and the tensors of the stage.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        # The student's inputs per modality (features or backbone inputs); None when the modality is absent.
        x = {"image_features": image_features, "pixel_values": pixel_values}
        x = x if image_features is not None or pixel_values is not None else None
        t = {"text_features": text_features, "input_ids": input_ids, "attention_mask": attention_mask}
        t = t if text_features is not None or input_ids is not None else None
        if stage == "hash":
            return self._hash_stage(x, t, image_embeds, text_embeds, labels)
        if image_embeds is not None or text_embeds is not None:
            raise ValueError(
                f"image_embeds/text_embeds are only used by stage='hash', got them with stage={stage!r}"
            )
        x_name = "teacher_image_features" if teacher_image_features is not None else "image_features"
        t_name = "teacher_text_features" if teacher_text_features is not None else "text_features"
        x_t = teacher_image_features if teacher_image_features is not None else image_features
        t_t = teacher_text_features if teacher_text_features is not None else text_features
        if x_t is None or t_t is None:
            raise ValueError(
                f"stage={stage!r} needs both image_features and text_features (or the teacher_* inputs)"
            )
        x_t = self.crcgs.normalize_features(x_t, "image", x_name)
        t_t = self.crcgs.normalize_features(t_t, "text", t_name)
        _check_batch(**{x_name: x_t, t_name: t_t})
        if stage == "teacher":
            return self._teacher_stage(x_t, t_t)
        if x is None or t is None:
            raise ValueError(
                f"stage={stage!r} needs both image_features (or pixel_values) and text_features (or input_ids)"
            )
        if stage == "discriminator":
            return self._discriminator_stage(x, t, x_t, t_t)
        return self._student_stage(x, t, x_t, t_t, labels)

    @torch.no_grad()
    def _teacher_features(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen generative features g = E_I2T(x), h = E_T2I(t) (no dropout, no grad)."""
        return self.teacher_i2t.encoder(x), self.teacher_t2i.encoder(t)

    def _student_stage(self, x, t, x_t, t_t, labels) -> CRCGSPreTrainingOutput:
        cfg = self.config
        if labels is None:
            raise ValueError("stage='student' needs labels")
        outputs = self.crcgs.encode(**x, **t, with_hash=False)
        labels = self.crcgs._check_labels(labels)
        _check_batch(image_features=outputs["image_embeds"], labels=labels, teacher_image_features=x_t)
        a, b = outputs["image_converted"], outputs["text_converted"]
        terms: dict[str, torch.Tensor] = {}
        g = h = None
        if cfg.distillation_weight or cfg.contrastive_weight:
            g, h = self._teacher_features(x_t, t_t)
        terms["base"] = self.crcgs._base_loss(outputs, labels)
        if cfg.distillation_weight:
            terms["distillation"] = cfg.distillation_weight * distillation_loss(a, g, b, h)
        if cfg.adversarial_weight:
            fake_image = frozen_call(self.teacher_t2i.decoder, b)  # G_T2I(b): (B, image_input_dim)
            fake_text = frozen_call(self.teacher_i2t.decoder, a)  # G_I2T(a): (B, text_input_dim)
            terms["adversarial"] = cfg.adversarial_weight * (
                adversarial_loss(frozen_call(self.image_discriminator, fake_image))
                + adversarial_loss(frozen_call(self.text_discriminator, fake_text))
            )
        if cfg.contrastive_weight:
            if cfg.contrastive_n_data is None:
                raise ValueError(
                    "config.contrastive_n_data is None: set it to the number of training batches per epoch "
                    "(the trainer does) or set contrastive_weight=0"
                )
            terms["contrastive"] = cfg.contrastive_weight * contrastive_loss(
                g, h, a, b, cfg.contrastive_n_data, cfg.contrastive_temperature, cfg.contrastive_eps
            )
        if cfg.support_set_weight:
            terms["support_set"] = cfg.support_set_weight * support_set_loss(
                a, b, labels, cfg.support_set_temperature
            )
        loss = sum(terms.values())
        return CRCGSPreTrainingOutput(
            loss=loss,
            loss_terms={name: value.detach() for name, value in terms.items()},
            image_teacher_features=g,
            text_teacher_features=h,
            **outputs,
        )

    def _discriminator_stage(self, x, t, x_t, t_t) -> CRCGSPreTrainingOutput:
        if not self.config.adversarial_weight:
            raise ValueError(
                "stage='discriminator' needs config.adversarial_weight > 0 (the adversarial term is off)"
            )
        with torch.no_grad(), evaluating(self.crcgs):
            outputs = self.crcgs.encode(**x, **t, with_hash=False)
            _check_batch(image_features=outputs["image_embeds"], teacher_image_features=x_t)
            g, h = self._teacher_features(x_t, t_t)
            real_image, fake_image = (
                self.teacher_t2i.decoder(h),
                self.teacher_t2i.decoder(outputs["text_converted"]),
            )
            real_text, fake_text = (
                self.teacher_i2t.decoder(g),
                self.teacher_i2t.decoder(outputs["image_converted"]),
            )
        image_term = discriminator_loss(
            self.image_discriminator(real_image), self.image_discriminator(fake_image)
        )
        text_term = discriminator_loss(self.text_discriminator(real_text), self.text_discriminator(fake_text))
        loss = image_term + text_term
        return CRCGSPreTrainingOutput(
            loss=loss,
            loss_terms={
                "discriminator": loss.detach(),
                "discriminator_image": image_term.detach(),
                "discriminator_text": text_term.detach(),
            },
            image_teacher_features=g,
            text_teacher_features=h,
            **outputs,
        )

    def _teacher_stage(self, x_t, t_t) -> CRCGSPreTrainingOutput:
        text_reconstruction = self.teacher_i2t(x_t)  # G_I2T(E_I2T(x)) ~ t
        image_reconstruction = self.teacher_t2i(t_t)  # G_T2I(E_T2I(t)) ~ x
        i2t = reconstruction_loss(text_reconstruction, t_t)
        t2i = reconstruction_loss(image_reconstruction, x_t)
        loss = i2t + t2i
        return CRCGSPreTrainingOutput(
            loss=loss,
            loss_terms={"teacher": loss.detach(), "teacher_i2t": i2t.detach(), "teacher_t2i": t2i.detach()},
            text_reconstruction=text_reconstruction,
            image_reconstruction=image_reconstruction,
        )

    def _hash_stage(self, x, t, u, v, labels) -> CRCGSPreTrainingOutput:
        cfg = self.config
        if u is None:
            if x is None:
                raise ValueError("stage='hash' needs image_embeds or image_features")
            with torch.no_grad(), evaluating(self.crcgs):
                u = self.crcgs.get_image_features(**x)
        if v is None:
            if t is None:
                raise ValueError("stage='hash' needs text_embeds or text_features")
            with torch.no_grad(), evaluating(self.crcgs):
                v = self.crcgs.get_text_features(**t)
        u = _check_matrix(u, "image_embeds", cfg.common_dim, self.dtype).detach()
        v = _check_matrix(v, "text_embeds", cfg.common_dim, self.dtype).detach()
        if labels is not None:
            labels = self._check_labels(labels)
        elif cfg.hash_label_weight:
            raise ValueError("stage='hash' needs labels when config.hash_label_weight > 0")
        _check_batch(image_embeds=u, text_embeds=v, labels=labels)
        combined = (u + v) / 2  # c_j
        hash_image, hash_text = self.crcgs.hash_head(u), self.crcgs.hash_head(v)
        needs_combined = bool(cfg.hash_similarity_weight or cfg.hash_quantization_weight)
        hash_combined = self.crcgs.hash_head(combined) if needs_combined else None
        terms = hash_loss_terms(
            hash_combined,
            combined,
            hash_image,
            hash_text,
            labels,
            cfg.hash_similarity_weight,
            cfg.hash_label_weight,
            cfg.hash_quantization_weight,
        )
        loss = sum(terms.values(), u.new_zeros(()))
        return CRCGSPreTrainingOutput(
            loss=loss,
            loss_terms={"hash": loss.detach(), **{name: value.detach() for name, value in terms.items()}},
            image_embeds=u,
            text_embeds=v,
            image_hash_logits=hash_image,
            text_hash_logits=hash_text,
            combined_hash_logits=hash_combined,
        )


# `import modeling_crcgs` makes the Auto classes resolve "crcgs"; `register_for_auto_class` makes
# `save_pretrained` copy these modules and write `auto_map` for `trust_remote_code=True` users.
AutoConfig.register("crcgs", CRCGSConfig, exist_ok=True)
AutoModel.register(CRCGSConfig, CRCGSModel, exist_ok=True)
AutoModelForPreTraining.register(CRCGSConfig, CRCGSForPreTraining, exist_ok=True)
CRCGSConfig.register_for_auto_class()
CRCGSModel.register_for_auto_class("AutoModel")
CRCGSForPreTraining.register_for_auto_class("AutoModelForPreTraining")
