"""The CRCGS models as ``transformers`` models (docs/METHOD.md "The four networks"), built from :mod:`.networks`.

* :class:`CRCGSModel`: the student (two towers, ONE shared common-space layer W, ONE shared label classifier C,
  two projections into the converted space) and the hash head: everything retrieval needs.
* :class:`CRCGSForPreTraining`: a :class:`CRCGSModel` plus the two teacher generation networks and the two
  discriminators; every training stage runs through its ``forward`` so that a DDP-wrapped model synchronises
  gradients. The losses are the modules :class:`~.losses.CRCGSStudentLoss` and :class:`~.losses.CRCGSHashLoss`.
"""

from __future__ import annotations

import math
import os
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

from .adapters import save_model_adapters
from .backbones import BackboneEncoder, BackboneTower
from .configuration_crcgs import CRCGSConfig
from .hashing import sign_codes
from .losses import CRCGSHashLoss, CRCGSStudentLoss, discriminator_loss, gather_batch, reconstruction_loss
from .modeling_outputs import CRCGSModelOutput, CRCGSPreTrainingOutput
from .networks import Discriminator, GenerationNetwork, HashHead, build_tower, evaluating, frozen_call
from .normalization import FeatureNormalizer
from .utils import check_matrix, check_same_batch, move_into

__all__ = [
    "CRCGSModel",
    "CRCGSForPreTraining",
    "CRCGSPreTrainedModel",
    "FORWARD_STAGES",
]

# The `stage=` values of CRCGSForPreTraining.forward (the trainer's units are training.arguments.TRAINING_STAGES).
FORWARD_STAGES = ("student", "discriminator", "teacher", "hash")


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


def _check_local_model_folder(path: object, needs_config: bool) -> None:
    """A path that names a local folder must exist and hold a config.json; say so instead of the Hub's
    repo-id error or a weight-shape complaint."""
    if not isinstance(path, (str, os.PathLike)):
        return
    text = os.fspath(path)
    if os.path.isdir(text):
        if needs_config and not os.path.isfile(os.path.join(text, "config.json")):
            raise ValueError(f"{text}: the folder holds no config.json, so it is not a saved model folder")
        return
    looks_local = os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or os.sep in text
    if os.path.exists(text):
        raise ValueError(f"{text}: expected a model folder, got a file")
    if looks_local:
        raise ValueError(f"{text}: no such folder")


def check_finite_parameters(model: nn.Module, source: object) -> None:
    """Raise ValueError naming the first parameter or buffer of ``model`` holding NaN or inf values."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{source}: the weight {name!r} holds NaN or infinite values")


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
        _check_local_model_folder(pretrained_model_name_or_path, needs_config=kwargs.get("config") is None)
        try:
            result = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(_shape_mismatch_message(pretrained_model_name_or_path, kwargs)) from error
        except Exception as error:
            if type(error).__module__.startswith("safetensors") or "safetensors" in str(error).lower():
                raise ValueError(
                    f"{pretrained_model_name_or_path}: the weights file cannot be read as safetensors "
                    f"(truncated or not a safetensors file): {error}"
                ) from error
            raise
        check_finite_parameters(
            result[0] if isinstance(result, tuple) else result, pretrained_model_name_or_path
        )
        return result

    def _check_labels(self, labels: object, name: str = "labels") -> torch.Tensor:
        labels = check_matrix(labels, name, self.config.num_labels, self.dtype)
        if bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError(f"{name} must be multi-hot values in [0, 1], got values outside that range")
        return labels


class CRCGSModel(CRCGSPreTrainedModel):
    """CRCGS student and hash head: what retrieval needs (docs/METHOD.md networks 3 and 5).

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
        features = check_matrix(features, name, width, self.dtype)
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
        embeds = check_matrix(embeds, "embeds", self.config.common_dim, self.dtype)
        logits = self.hash_head(embeds, apply_dropout=False)
        return sign_codes(logits)

    def retrieval_embeddings(self, embeds: torch.Tensor) -> torch.Tensor:
        """The continuous retrieval embeddings of common-space embeddings (n, common_dim), ranked by
        ``config.retrieval_distance``: the embeddings themselves (``retrieval_embedding="common"``, cosine) or
        the class posteriors softmax(C u), (n, num_labels) (``"label_posterior"``, inner product)."""
        embeds = check_matrix(embeds, "embeds", self.config.common_dim, self.dtype)
        if self.config.retrieval_embedding == "label_posterior":
            return torch.softmax(self.label_classifier(embeds), dim=1)
        return embeds

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
        check_same_batch(image_features=outputs.get("image_embeds"), text_features=outputs.get("text_embeds"))
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
            check_same_batch(
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

    def _retrieval_loss(
        self, outputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """The teacher-free terms of :class:`~.losses.CRCGSStudentLoss`, summed, and their detached values."""
        terms = CRCGSStudentLoss.from_config(self.config).teacher_free_terms(outputs, labels)
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
            relu_output=config.teacher_output_is_relu("text"),
        )
        self.teacher_t2i = GenerationNetwork(
            config.text_input_dim,
            config.teacher_t2i_encoder_dims,
            config.converted_dim,
            config.teacher_t2i_decoder_dims,
            config.image_input_dim,
            config.teacher_dropout,
            relu_output=config.teacher_output_is_relu("image"),
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
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a folder, got the file {os.fspath(save_directory)!r}")
        move_into(
            lambda tmp: self.crcgs.save_pretrained(tmp, safe_serialization=True, **kwargs), save_directory
        )

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
                * ``"student"``: ``L = L_o + L_t + L_ta + L_c + L_ssl`` (docs/METHOD.md "Student losses" 1-6). Teachers
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
        if stage not in FORWARD_STAGES:
            raise ValueError(f"stage must be one of {FORWARD_STAGES}, got {stage!r}")
        x, t = self._student_inputs(image_features, text_features, pixel_values, input_ids, attention_mask)
        if stage == "hash":
            return self._hash_stage(x, t, image_embeds, text_embeds, labels)
        if image_embeds is not None or text_embeds is not None:
            raise ValueError(
                f"image_embeds/text_embeds are only used by stage='hash', got them with stage={stage!r}"
            )
        x_t, t_t = self._teacher_inputs(
            stage, image_features, text_features, teacher_image_features, teacher_text_features
        )
        if stage == "teacher":
            return self._teacher_stage(x_t, t_t)
        if x is None or t is None:
            raise ValueError(
                f"stage={stage!r} needs both image_features (or pixel_values) and text_features (or input_ids)"
            )
        if stage == "discriminator":
            return self._discriminator_stage(x, t, x_t, t_t)
        return self._student_stage(x, t, x_t, t_t, labels)

    # -- inputs --------------------------------------------------------------------------------------------

    @staticmethod
    def _student_inputs(
        image_features, text_features, pixel_values, input_ids, attention_mask
    ) -> tuple[Optional[dict], Optional[dict]]:
        """The student's keyword inputs per modality (features or backbone inputs); None for an absent one."""
        x = {"image_features": image_features, "pixel_values": pixel_values}
        x = x if image_features is not None or pixel_values is not None else None
        t = {"text_features": text_features, "input_ids": input_ids, "attention_mask": attention_mask}
        t = t if text_features is not None or input_ids is not None else None
        return x, t

    def _teacher_inputs(
        self, stage, image_features, text_features, teacher_image_features, teacher_text_features
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teachers' checked fixed features: ``teacher_*`` if given, else the student's features."""
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
        check_same_batch(**{x_name: x_t, t_name: t_t})
        return x_t, t_t

    def _hash_inputs(self, x, t, u, v, labels) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Detached, checked u, v (cached, or the student's under ``torch.no_grad``) and labels of the hash stage."""
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
        u = check_matrix(u, "image_embeds", cfg.common_dim, self.dtype).detach()
        v = check_matrix(v, "text_embeds", cfg.common_dim, self.dtype).detach()
        if labels is not None:
            labels = self._check_labels(labels)
        elif cfg.hash_label_weight:
            raise ValueError("stage='hash' needs labels when config.hash_label_weight > 0")
        check_same_batch(image_embeds=u, text_embeds=v, labels=labels)
        return u, v, labels

    # -- stages --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _teacher_features(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen generative features g = E_I2T(x), h = E_T2I(t) (no dropout, no grad)."""
        return self.teacher_i2t.encoder(x), self.teacher_t2i.encoder(t)

    def _student_stage(self, x, t, x_t, t_t, labels) -> CRCGSPreTrainingOutput:
        if labels is None:
            raise ValueError("stage='student' needs labels")
        loss_fn = CRCGSStudentLoss.from_config(self.config)
        outputs = self.crcgs.encode(**x, **t, with_hash=False)
        labels = self.crcgs._check_labels(labels)
        check_same_batch(image_features=outputs["image_embeds"], labels=labels, teacher_image_features=x_t)
        g, h = self._teacher_features(x_t, t_t) if loss_fn.needs_teacher_features else (None, None)
        fake_logits = {}
        if loss_fn.adversarial_weight:
            fake_image = frozen_call(
                self.teacher_t2i.decoder, outputs["text_converted"]
            )  # G_T2I(b): (B, d_x)
            fake_text = frozen_call(
                self.teacher_i2t.decoder, outputs["image_converted"]
            )  # G_I2T(a): (B, d_t)
            fake_logits = {
                "image_fake_logits": frozen_call(self.image_discriminator, fake_image),
                "text_fake_logits": frozen_call(self.text_discriminator, fake_text),
            }
        terms = loss_fn(outputs, labels, g, h, **fake_logits)
        return CRCGSPreTrainingOutput(
            loss=sum(terms.values()),
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
            check_same_batch(image_features=outputs["image_embeds"], teacher_image_features=x_t)
            g, h = self._teacher_features(x_t, t_t)
            real_image, fake_image = (
                self.teacher_t2i.decoder(h),
                self.teacher_t2i.decoder(outputs["text_converted"]),
            )
            real_text, fake_text = (
                self.teacher_i2t.decoder(g),
                self.teacher_i2t.decoder(outputs["image_converted"]),
            )
        # Over the global batch inside `losses.global_batch` (the mean over every process's rows).
        image_term = discriminator_loss(
            gather_batch(self.image_discriminator(real_image)),
            gather_batch(self.image_discriminator(fake_image)),
        )
        text_term = discriminator_loss(
            gather_batch(self.text_discriminator(real_text)), gather_batch(self.text_discriminator(fake_text))
        )
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
        u, v, labels = self._hash_inputs(x, t, u, v, labels)
        loss_fn = CRCGSHashLoss.from_config(self.config)
        combined = (u + v) / 2  # c_j
        hash_image, hash_text = self.crcgs.hash_head(u), self.crcgs.hash_head(v)
        hash_combined = self.crcgs.hash_head(combined) if loss_fn.needs_combined else None
        terms = loss_fn(hash_combined, combined, hash_image, hash_text, labels)
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
