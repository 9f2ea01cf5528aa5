"""Output dataclasses of the CRCGS models (``transformers.utils.ModelOutput``: every field optional)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers.utils import ModelOutput

__all__ = ["CRCGSModelOutput", "CRCGSPreTrainingOutput"]


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
