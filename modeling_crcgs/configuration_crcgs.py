"""CRCGS model configuration."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Sequence

from transformers import AutoConfig, PreTrainedConfig

from .backbones import set_backbone_fields, validate_backbone_fields
from .normalization import check_normalization
from .utils import check_positive_int

__all__ = ["CRCGSConfig"]

# Names of the fields validated by each rule, so that the error names the field.
_POSITIVE_INTS = ("image_input_dim", "text_input_dim", "common_dim", "converted_dim")
_POSITIVE_INT_LISTS = (
    "tower_hidden_dims",
    "teacher_i2t_encoder_dims",
    "teacher_i2t_decoder_dims",
    "teacher_t2i_encoder_dims",
    "teacher_t2i_decoder_dims",
    "image_discriminator_dims",
    "text_discriminator_dims",
)
_DROPOUTS = ("teacher_dropout", "hash_dropout", "tower_input_dropout")
_POSITIVE_FLOATS = ("contrastive_temperature", "support_set_temperature", "similarity_scale")
_WEIGHTS = (
    "label_loss_weight",
    "label_agreement_weight",
    "similarity_loss_weight",
    "modality_gap_loss_weight",
    "distillation_weight",
    "adversarial_weight",
    "contrastive_weight",
    "support_set_weight",
    "hash_similarity_weight",
    "hash_label_weight",
    "hash_quantization_weight",
    "tower_input_noise",
)
MIN_HASH_BITS, MAX_HASH_BITS = 8, 1024
# Student terms that need the teachers: distillation (their features), the adversarial term (their decoders
# generate what the discriminators judge, whatever dis_iter) and the teacher-student contrastive term.
TEACHER_TERM_WEIGHTS = ("distillation_weight", "adversarial_weight", "contrastive_weight")
# How the teachers' decoders end (docs: teacher_output_activation).
TEACHER_OUTPUT_ACTIVATIONS = ("auto", "relu", "linear")
# retrieval_embedding -> the distance its continuous embeddings are ranked by
RETRIEVAL_DISTANCES = {"common": "cosine", "label_posterior": "inner_product"}
# Keys transformers' own configs carry (saved by `to_dict`, passed by `from_pretrained`, read by the
# generation/modeling code): accepted and kept by the base class. Any other unknown key is a typo.
_BASE_CONFIG_KEYS = frozenset(inspect.signature(PreTrainedConfig.__init__).parameters) | {
    "_name_or_path",
    "name_or_path",
    "model_type",
    "auto_map",
    "torch_dtype",
    "attn_implementation",
    "output_attentions",
    "num_labels",
    "use_cache",
    "tie_word_embeddings",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "finetuning_task",
    "is_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "pruned_heads",
    "torchscript",
}


def check_known_config_keys(keys) -> None:
    """Raise ValueError naming the first key that is neither a `CRCGSConfig` field nor a transformers base
    key, with the closest known name (private ``_``-prefixed keys of transformers are allowed)."""
    known = _CRCGS_KEYS
    for key in keys:
        if key in known or key in _BASE_CONFIG_KEYS or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, sorted(set(known) | _BASE_CONFIG_KEYS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"CRCGSConfig has no field {key!r}{hint}")


class CRCGSConfig(PreTrainedConfig):
    r"""
    Configuration of a CRCGS model (Zhang et al., "Image-Text Retrieval via Contrastive Learning with Auxiliary
    Generative Features and Support-set Regularization", SIGIR 2022). Every dimension and hyper-parameter of
    docs/METHOD.md is a field; the defaults are those of the authors' release (MIRFLICKR-25K inputs, NUS-WIDE loss
    weights where the release's default is NUS-WIDE's).

    Args:
        image_input_dim (`int`, *optional*, defaults to 4096):
            Width of the pre-extracted image features x (VGG-19 fc7: 4096).
        text_input_dim (`int`, *optional*, defaults to 1386):
            Width of the bag-of-words text features t (MIRFLICKR-25K 1386, NUS-WIDE 1000, MS-COCO 2000).
        num_labels (`int`, *optional*, defaults to 24):
            Number of labels L of the multi-hot label vectors (MIRFLICKR-25K 24, NUS-WIDE 21, MS-COCO 80).
            `None` takes `len(id2label)` when `id2label` is given, else 24.
        hash_bits (`int`, *optional*, defaults to 64):
            Code length K of the hash head, in [8, 1024].
        tower_hidden_dims (`list[int]`, *optional*, defaults to `[2048, 2048, 2048]`):
            Widths of the student towers f_I and f_T (one Linear+tanh per entry).
        tower_input_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the student towers' inputs (the release has none; the recipe for small real data
            uses 0.2, measured in docs/REAL_DATA.md).
        tower_input_noise (`float`, *optional*, defaults to 0.0):
            Standard deviation of the Gaussian noise added to the student towers' inputs in training mode,
            after the input normaliser and before the input dropout (the release has none; the recipe for
            small real data uses 0.5 on standardised features, measured in docs/REAL_DATA.md).
        common_dim (`int`, *optional*, defaults to 1024):
            Width d of the common space: the shared Linear W maps the last tower width to d.
        converted_dim (`int`, *optional*, defaults to 1024):
            Width of the converted learning space, i.e. of the teachers' encoder outputs g, h and of the
            student projections a = ReLU(P_I u), b = ReLU(P_T v).
        teacher_i2t_encoder_dims (`list[int]`, *optional*, defaults to `[2048]`):
            Hidden widths of E_I2T (image_input_dim -> ... -> converted_dim, Linear+ReLU each).
        teacher_i2t_decoder_dims (`list[int]`, *optional*, defaults to `[2000]`):
            Hidden widths of G_I2T (converted_dim -> ... -> text_input_dim, Linear+ReLU each).
        teacher_t2i_encoder_dims (`list[int]`, *optional*, defaults to `[2048]`):
            Hidden widths of E_T2I (text_input_dim -> ... -> converted_dim, Linear+ReLU each).
        teacher_t2i_decoder_dims (`list[int]`, *optional*, defaults to `[2048]`):
            Hidden widths of G_T2I (converted_dim -> ... -> image_input_dim, Linear+ReLU each).
        teacher_dropout (`float`, *optional*, defaults to 0.3):
            Dropout on the teacher encoders' inputs (active only while the teachers train).
        teacher_output_activation (`str`, *optional*, defaults to `"auto"`):
            Activation after the last layer of the decoders G_I2T, G_T2I: `"relu"` (the release, whose targets
            are non-negative bag-of-words and CNN features), `"linear"` (none), or `"auto"`: ReLU when the
            decoder's target modality is used as given, linear when the model normalises it (standardised
            targets are signed, and a ReLU output stuck at 0 would leave the teachers untrained).
        image_discriminator_dims (`list[int]`, *optional*, defaults to `[2048, 1024, 512]`):
            Widths of D_img (image_input_dim -> ..., Linear+ReLU each), followed by a Linear to 2 classes.
        text_discriminator_dims (`list[int]`, *optional*, defaults to `[512, 64, 32]`):
            Widths of D_txt (text_input_dim -> ..., Linear+ReLU each), followed by a Linear to 2 classes.
        hash_hidden_dim (`int`, *optional*):
            Width of the hash head's two tanh layers; `None` means `common_dim // 2` (the release).
        hash_dropout (`float`, *optional*, defaults to 0.3):
            Dropout on the hash head's input.
        label_loss_weight (`float`, *optional*, defaults to 1.0):
            phi: weight of the label terms of the base loss L_o (BCE, or softmax cross-entropy with
            `retrieval_embedding="label_posterior"`).
        retrieval_embedding (`str`, *optional*, defaults to `"common"`):
            What the continuous embeddings of retrieval are, and how they are ranked. `"common"` (the paper):
            the common-space embeddings u, v, ranked by cosine. `"label_posterior"`: the shared classifier C
            is trained with softmax cross-entropy against the label distribution y / sum(y) (instead of BCE),
            and the embedding of an item is its class posterior softmax(C u), ranked by inner product:
            softmax(C u_q) . softmax(C v_d) is the probability that query and item have the same label when
            their labels are drawn from their posteriors. Needs `label_loss_weight` > 0. Hash codes come
            from u, v either way. Measured in docs/REAL_DATA.md.
        label_agreement_weight (`float`, *optional*, defaults to 0.0):
            Weight of the mutual learning of the two towers' label posteriors (not in the paper; each
            modality's classifier output learns the other's posterior of the same pair, taken as fixed:
            `losses.label_agreement_loss`). The recipe for own features uses 1.0, measured in docs/REAL_DATA.md.
        similarity_loss_weight (`float`, *optional*, defaults to 1.0):
            alpha: weight of the label-similarity likelihood terms J of L_o.
        similarity_scale (`float`, *optional*, defaults to 0.5):
            s in theta = s cos(., .) of the likelihood terms J of L_o and of the hash head's label term (the
            release halves the cosine: 0.5).
        modality_gap_loss_weight (`float`, *optional*, defaults to 0.001):
            beta: weight of mean_i ||u_i - v_i||_2 in L_o (MS-COCO: 0.011).
        distillation_weight (`float`, *optional*, defaults to 0.2):
            w_t: weight of the MSE distillation L_t to the teachers' generative features.
        adversarial_weight (`float`, *optional*, defaults to 0.01):
            w_ta: weight of the student's adversarial (teaching-assistant) loss L_ta. 0 also disables the
            discriminator stage.
        dis_iter (`int`, *optional*, defaults to 3):
            Discriminator steps per student step (read by the trainer).
        contrastive_weight (`float`, *optional*, defaults to 0.03):
            w_c: weight of the teacher-student contrastive NCE loss L_c.
        contrastive_temperature (`float`, *optional*, defaults to 0.07):
            tau_c (MS-COCO 0.1, MIRFLICKR 0.2, NUS-WIDE 0.07).
        contrastive_n_data (`int`, *optional*):
            n_data of the noise distribution P_n = 1 / n_data. `None` means "the number of training batches
            per epoch" (the release's value), which the trainer fills in; the student stage raises while it
            is still `None` and `contrastive_weight > 0`.
        contrastive_eps (`float`, *optional*, defaults to 1e-07):
            eps added in the NCE divisions (CRD).
        support_set_weight (`float`, *optional*, defaults to 40.0):
            w_ssl: weight of the support-set regularizer L_ssl (NUS-WIDE 40; MS-COCO and MIRFLICKR 0.001).
        support_set_temperature (`float`, *optional*, defaults to 0.06):
            tau_s (MS-COCO/NUS-WIDE 0.06, MIRFLICKR 0.04).
        hash_similarity_weight (`float`, *optional*, defaults to 1.0):
            alpha of the hash loss: similarity preservation term.
        hash_label_weight (`float`, *optional*, defaults to 1.0):
            beta of the hash loss: label likelihood term.
        hash_quantization_weight (`float`, *optional*, defaults to 0.0):
            gamma of the hash loss: quantization term.
        image_feature_normalization (`str`, *optional*, defaults to `"none"`):
            Per-feature normalisation of the image features, fitted on the training split by the trainer and
            stored with the weights: `"none"`, `"standardize"` ((x - mean) / std) or `"sqrt-standardize"`
            (the same on sqrt(x), for histograms and proportions). See `modeling_crcgs.normalization`.
        text_feature_normalization (`str`, *optional*, defaults to `"none"`):
            The same for the text features (bag of words, topic proportions, sentence embeddings).
        vision_config (`PreTrainedConfig` or `dict`, *optional*):
            A `transformers` backbone for raw images: the image tower becomes backbone -> pooled
            output -> the tower MLP and takes `pixel_values`. `None` (and no `vision_backbone`) keeps the
            feature tower. With a backbone, `image_input_dim` is the width of the teachers' fixed image
            features (`teacher_image_features`, e.g. the frozen backbone's cached pooled outputs).
        vision_backbone (`str`, *optional*):
            Local pretrained folder of the image backbone: its config fills `vision_config` and its weights
            load (offline) when the model is built.
        vision_finetuning (`str`, *optional*, defaults to `"full"`):
            `"frozen"`, `"full"` (the release fine-tunes its CNN end to end) or `"lora"`.
        vision_lora (`dict`, *optional*):
            LoRA options `r` (8), `lora_alpha` (16), `lora_dropout` (0.05), `target_modules` (`None`: the
            attention query/value projections found per architecture).
        vision_pooling (`str`, *optional*, defaults to `"auto"`):
            `"auto"` (the backbone's pooled output, else the mean over patches), `"pooler"`, `"mean"`, `"cls"`.
        text_config, text_backbone, text_finetuning, text_lora, text_pooling:
            The same for the text tower, which then takes `input_ids` and `attention_mask` (mean pooling is
            masked); `text_input_dim` stays the width of the teachers' bag-of-words input.

    Raises:
        ValueError: a field out of its range (the message names the field, the expected range and the value).

    Example:

    ```python
    >>> from modeling_crcgs import CRCGSConfig, CRCGSModel

    >>> config = CRCGSConfig(image_input_dim=64, text_input_dim=32, num_labels=5, hash_bits=16,
    ...                      tower_hidden_dims=[32, 32, 32], common_dim=32, converted_dim=32)
    >>> model = CRCGSModel(config)
    >>> model.config.hash_bits
    16

    ```
    """

    model_type = "crcgs"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        image_input_dim: int = 4096,
        text_input_dim: int = 1386,
        num_labels: int | None = None,
        hash_bits: int = 64,
        tower_hidden_dims: Sequence[int] = (2048, 2048, 2048),
        tower_input_dropout: float = 0.0,
        tower_input_noise: float = 0.0,
        common_dim: int = 1024,
        converted_dim: int = 1024,
        teacher_i2t_encoder_dims: Sequence[int] = (2048,),
        teacher_i2t_decoder_dims: Sequence[int] = (2000,),
        teacher_t2i_encoder_dims: Sequence[int] = (2048,),
        teacher_t2i_decoder_dims: Sequence[int] = (2048,),
        teacher_dropout: float = 0.3,
        teacher_output_activation: str = "auto",
        image_discriminator_dims: Sequence[int] = (2048, 1024, 512),
        text_discriminator_dims: Sequence[int] = (512, 64, 32),
        hash_hidden_dim: int | None = None,
        hash_dropout: float = 0.3,
        label_loss_weight: float = 1.0,
        retrieval_embedding: str = "common",
        label_agreement_weight: float = 0.0,
        similarity_loss_weight: float = 1.0,
        similarity_scale: float = 0.5,
        modality_gap_loss_weight: float = 0.001,
        distillation_weight: float = 0.2,
        adversarial_weight: float = 0.01,
        dis_iter: int = 3,
        contrastive_weight: float = 0.03,
        contrastive_temperature: float = 0.07,
        contrastive_n_data: int | None = None,
        contrastive_eps: float = 1e-7,
        support_set_weight: float = 40.0,
        support_set_temperature: float = 0.06,
        hash_similarity_weight: float = 1.0,
        hash_label_weight: float = 1.0,
        hash_quantization_weight: float = 0.0,
        image_feature_normalization: str = "none",
        text_feature_normalization: str = "none",
        vision_config: PreTrainedConfig | dict | None = None,
        vision_backbone: str | None = None,
        vision_finetuning: str = "full",
        vision_lora: dict | None = None,
        vision_pooling: str = "auto",
        text_config: PreTrainedConfig | dict | None = None,
        text_backbone: str | None = None,
        text_finetuning: str = "full",
        text_lora: dict | None = None,
        text_pooling: str = "auto",
        **kwargs,
    ):
        self.image_input_dim = image_input_dim
        self.text_input_dim = text_input_dim
        self.hash_bits = hash_bits
        self.tower_hidden_dims = _as_int_list(tower_hidden_dims, "tower_hidden_dims")
        self.tower_input_dropout = tower_input_dropout
        self.tower_input_noise = tower_input_noise
        self.common_dim = common_dim
        self.converted_dim = converted_dim
        self.teacher_i2t_encoder_dims = _as_int_list(teacher_i2t_encoder_dims, "teacher_i2t_encoder_dims")
        self.teacher_i2t_decoder_dims = _as_int_list(teacher_i2t_decoder_dims, "teacher_i2t_decoder_dims")
        self.teacher_t2i_encoder_dims = _as_int_list(teacher_t2i_encoder_dims, "teacher_t2i_encoder_dims")
        self.teacher_t2i_decoder_dims = _as_int_list(teacher_t2i_decoder_dims, "teacher_t2i_decoder_dims")
        self.teacher_dropout = teacher_dropout
        self.teacher_output_activation = teacher_output_activation
        self.image_discriminator_dims = _as_int_list(image_discriminator_dims, "image_discriminator_dims")
        self.text_discriminator_dims = _as_int_list(text_discriminator_dims, "text_discriminator_dims")
        self.hash_hidden_dim = hash_hidden_dim
        self.hash_dropout = hash_dropout
        self.label_loss_weight = label_loss_weight
        self.retrieval_embedding = retrieval_embedding
        self.label_agreement_weight = label_agreement_weight
        self.similarity_loss_weight = similarity_loss_weight
        self.similarity_scale = similarity_scale
        self.modality_gap_loss_weight = modality_gap_loss_weight
        self.distillation_weight = distillation_weight
        self.adversarial_weight = adversarial_weight
        self.dis_iter = dis_iter
        self.contrastive_weight = contrastive_weight
        self.contrastive_temperature = contrastive_temperature
        self.contrastive_n_data = contrastive_n_data
        self.contrastive_eps = contrastive_eps
        self.support_set_weight = support_set_weight
        self.support_set_temperature = support_set_temperature
        self.hash_similarity_weight = hash_similarity_weight
        self.hash_label_weight = hash_label_weight
        self.hash_quantization_weight = hash_quantization_weight
        self.image_feature_normalization = image_feature_normalization
        self.text_feature_normalization = text_feature_normalization
        set_backbone_fields(
            self, "image", vision_config, vision_backbone, vision_finetuning, vision_lora, vision_pooling
        )
        set_backbone_fields(
            self, "text", text_config, text_backbone, text_finetuning, text_lora, text_pooling
        )
        check_known_config_keys(kwargs)
        # `num_labels` is a property of PreTrainedConfig backed by `id2label`: a saved config stores only
        # `id2label`, so `None` means "from id2label when given, else the default 24".
        if num_labels is None:
            num_labels = len(kwargs["id2label"]) if kwargs.get("id2label") else 24
        super().__init__(num_labels=num_labels, **kwargs)
        self.validate_crcgs()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """As the base class, then validate again: the base class sets keyword overrides after `__init__`."""
        result = super().from_dict(config_dict, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        config.validate_crcgs()
        return result

    @property
    def hash_head_hidden_dim(self) -> int:
        """Width of the hash head's hidden layers: ``hash_hidden_dim`` or ``common_dim // 2``."""
        return self.hash_hidden_dim if self.hash_hidden_dim is not None else max(1, self.common_dim // 2)

    @property
    def retrieval_distance(self) -> str:
        """How continuous embeddings are ranked: ``"cosine"`` (common space) or ``"inner_product"`` (label
        posteriors), the ``distance`` of :func:`modeling_crcgs.retrieval.metrics.mean_average_precision`."""
        return RETRIEVAL_DISTANCES[self.retrieval_embedding]

    def teacher_output_is_relu(self, target: str) -> bool:
        """Whether the decoder that generates ``target`` ("image": G_T2I, "text": G_I2T) ends with a ReLU
        (``teacher_output_activation``; ``"auto"``: when that modality is not normalised by the model)."""
        if self.teacher_output_activation != "auto":
            return self.teacher_output_activation == "relu"
        return getattr(self, f"{target}_feature_normalization") == "none"

    @property
    def student_uses_teachers(self) -> bool:
        """Whether a student term needs the teachers: distillation (their features), the adversarial term
        (their decoders generate what the discriminators judge, whatever ``dis_iter``) or the teacher-student
        contrastive term (their features) has a weight > 0."""
        return any(getattr(self, name) for name in TEACHER_TERM_WEIGHTS)

    def validate_crcgs(self) -> None:
        """Check every CRCGS field; raise ValueError naming the first field that is out of range."""
        for name in _POSITIVE_INTS:
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 1:
            raise ValueError(f"num_labels must be an integer >= 1, got {self.num_labels!r}")
        if (
            not isinstance(self.hash_bits, int)
            or isinstance(self.hash_bits, bool)
            or not MIN_HASH_BITS <= self.hash_bits <= MAX_HASH_BITS
        ):
            raise ValueError(
                f"hash_bits must be an integer in [{MIN_HASH_BITS}, {MAX_HASH_BITS}], got {self.hash_bits!r}"
            )
        for name in _POSITIVE_INT_LISTS:
            dims = getattr(self, name)
            if name == "tower_hidden_dims" and not dims:
                raise ValueError("tower_hidden_dims must list at least one width, got []")
            for i, dim in enumerate(dims):
                check_positive_int(f"{name}[{i}]", dim)
        if self.hash_hidden_dim is not None:
            check_positive_int("hash_hidden_dim", self.hash_hidden_dim)
        for name in _DROPOUTS:
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        for name in _POSITIVE_FLOATS:
            value = getattr(self, name)
            if not _is_real(value) or not value > 0.0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in _WEIGHTS:
            value = getattr(self, name)
            if not _is_real(value) or not value >= 0.0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.dis_iter, int) or isinstance(self.dis_iter, bool) or self.dis_iter < 0:
            raise ValueError(f"dis_iter must be an integer >= 0, got {self.dis_iter!r}")
        if self.contrastive_n_data is not None:
            check_positive_int("contrastive_n_data", self.contrastive_n_data)
        if not _is_real(self.contrastive_eps) or not 0.0 <= self.contrastive_eps < 1.0:
            raise ValueError(f"contrastive_eps must be a number in [0, 1), got {self.contrastive_eps!r}")
        if (
            not isinstance(self.retrieval_embedding, str)
            or self.retrieval_embedding not in RETRIEVAL_DISTANCES
        ):
            raise ValueError(
                f"retrieval_embedding must be one of {sorted(RETRIEVAL_DISTANCES)}, got {self.retrieval_embedding!r}"
            )
        if self.retrieval_embedding == "label_posterior" and not self.label_loss_weight:
            raise ValueError(
                "retrieval_embedding='label_posterior' ranks by the label classifier's posteriors, which only "
                "the label term trains: label_loss_weight must be > 0, got 0"
            )
        if self.teacher_output_activation not in TEACHER_OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"teacher_output_activation must be one of {TEACHER_OUTPUT_ACTIVATIONS}, "
                f"got {self.teacher_output_activation!r}"
            )
        check_normalization(self.image_feature_normalization, "image_feature_normalization")
        check_normalization(self.text_feature_normalization, "text_feature_normalization")
        validate_backbone_fields(self)


_CRCGS_KEYS = frozenset(inspect.signature(CRCGSConfig.__init__).parameters) - {"self", "kwargs"}


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_int_list(value: Sequence[int], name: str) -> list[int]:
    """Lists are stored as plain JSON lists; a bare int or string is a type error, reported by name."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    return list(value)
