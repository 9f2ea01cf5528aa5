"""``CRCGSProcessor``: raw images and captions/tags -> the inputs of a CRCGS model.

- images (PIL images, file paths, arrays; one or a list) -> ``pixel_values`` through the image processor;
- texts (a caption string, a list of captions, or a list of tag lists) -> ``input_ids``/``attention_mask`` through the tokenizer
  and, when a bag-of-words vocabulary is set, ``text_features``: the BoW vector that BoW text towers
  and the text-to-image teacher take (docs/METHOD.md, "Data and task"; :mod:`modeling_crcgs.bag_of_words`).

- pre-extracted features (``image_features=``, ``text_features=``) -> float32 tensors, checked as 2-D.

The vocabulary, the document-frequency threshold that built it and the dataset's label names are saved in
``processor_config.json`` by ``save_pretrained``, so a checkpoint maps new texts to the same columns and
names the label columns; the file's ``auto_map`` lets ``AutoProcessor.from_pretrained(folder,
trust_remote_code=True)`` load the processor where this package is not installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoProcessor, BatchFeature, ProcessorMixin
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import PROCESSOR_NAME

from .bag_of_words import BagOfWords, TextInput, build_bow_vocabulary, text_words
from .configuration_crcgs import CRCGSConfig

__all__ = ["CRCGSProcessor", "load_image"]

ImageLike = Any  # PIL.Image.Image | str | os.PathLike | numpy.ndarray | torch.Tensor


def load_image(image: ImageLike, where: str = "image") -> ImageLike:
    """An RGB ``PIL.Image`` from a path or an image; arrays and tensors pass through unchanged.

    Raises:
        ValueError: for a missing file, a file that does not decode as an image, or another type.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise ValueError(f"{where}: image file {path!r} does not exist")
        try:
            with Image.open(path) as opened:
                return opened.convert("RGB")  # convert() decodes the whole file
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"{where}: {path!r} does not decode as an image ({err})") from err
    if isinstance(image, Image.Image):
        try:
            return image.convert("RGB")
        except OSError as err:
            raise ValueError(f"{where}: PIL image does not decode ({err})") from err
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return image
    raise ValueError(
        f"{where} must be a PIL image, a file path, an array or a tensor, got {type(image).__name__}"
    )


def _as_list(value: Any, single_types: tuple[type, ...]) -> list:
    """``[value]`` for a single item, ``list(value)`` for a sequence of items (list, tuple, ``datasets`` column)."""
    if isinstance(value, single_types) or not isinstance(value, Iterable):
        return [value]
    return list(value)


class CRCGSProcessor(ProcessorMixin):
    r"""Image processor + tokenizer + bag-of-words vectorizer for CRCGS models.

    Each part is optional: a model with a feature image tower has no image processor, a bag-of-words text
    tower needs no tokenizer, and a model on pre-extracted features has a processor that only checks the
    feature matrices and carries the label names (the input normalisers are buffers of the model itself).

    Args:
        image_processor (`BaseImageProcessor`, *optional*): e.g. ``ViTImageProcessor``; gives ``pixel_values``.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): e.g. a BERT tokenizer; gives ``input_ids``/``attention_mask``.
        bow_vocabulary (`list[str]`, *optional*): the BoW columns; ``None`` emits no ``text_features``.
        bow_min_count (`int`, *optional*): the document-frequency threshold that built ``bow_vocabulary``
            (recorded, see :meth:`fit_bow`).
        bow_binary (`bool`, *optional*, defaults to `True`): 0/1 presence instead of counts.
        bow_lowercase (`bool`, *optional*, defaults to `True`): lowercase texts before matching.
        max_length (`int`, *optional*): truncate token sequences to this length (default: the tokenizer's).
        label_names (`list[str]`, *optional*): the dataset's label names, column by column of ``labels``.

    Example:

    >>> from transformers import ViTImageProcessor
    >>> processor = CRCGSProcessor(ViTImageProcessor(size={"height": 32, "width": 32}), tokenizer)  # doctest: +SKIP
    >>> processor.fit_bow(["a dog on grass", "a cat"], min_count=1)  # doctest: +SKIP
    >>> batch = processor(images=["a.png", "b.png"], text=["a dog", "a cat"])  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'pixel_values', 'text_features']
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        bow_vocabulary: list[str] | None = None,
        bow_min_count: int | None = None,
        bow_binary: bool = True,
        bow_lowercase: bool = True,
        max_length: int | None = None,
        label_names: list[str] | None = None,
        **kwargs,
    ):
        if image_processor is None and tokenizer is None and bow_vocabulary is None and label_names is None:
            raise ValueError(
                "CRCGSProcessor needs an image_processor, a tokenizer, a bow_vocabulary or label_names; got none"
            )
        if label_names is not None and (
            not label_names
            or not all(isinstance(name, str) for name in label_names)
            or len(set(label_names)) != len(label_names)
        ):
            raise ValueError(f"label_names must be a non-empty list of unique strings, got {label_names!r}")
        self.label_names = None if label_names is None else list(label_names)
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
        self.bow_min_count = bow_min_count
        self.bow_binary, self.bow_lowercase = bow_binary, bow_lowercase
        self.max_length = max_length
        self._set_bow(bow_vocabulary)
        super().__init__(image_processor, tokenizer, **kwargs)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        """As ``ProcessorMixin``, except that a part may be absent (``None``)."""
        if argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs
    ) -> list[str]:
        """As ``ProcessorMixin.save_pretrained``; without an image processor or a tokenizer, the present parts
        and ``processor_config.json`` (with the vocabulary) are written, and the absent ones recorded as null."""
        if self.image_processor is not None and self.tokenizer is not None:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        if push_to_hub:
            raise ValueError(
                "push_to_hub needs both an image_processor and a tokenizer; save locally and upload"
            )
        os.makedirs(save_directory, exist_ok=True)
        if self._auto_class is not None:  # copies this module beside the files and sets ``auto_map``
            custom_object_save(self, save_directory, config=[self])
        if self.tokenizer is not None:
            self.tokenizer._set_processor_class(type(self).__name__)
            self.tokenizer.save_pretrained(save_directory)
        config_file = os.path.join(save_directory, PROCESSOR_NAME)
        self.to_json_file(config_file)
        return [config_file]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> CRCGSProcessor:
        """As ``ProcessorMixin.from_pretrained``; a local folder saved without some part loads the others."""
        folder = os.fspath(pretrained_model_name_or_path)
        config_file = os.path.join(folder, PROCESSOR_NAME)
        if not os.path.isfile(config_file):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        with open(config_file, encoding="utf-8") as f:
            saved = json.load(f)
        has_tokenizer = os.path.isfile(os.path.join(folder, "tokenizer_config.json"))
        if saved.get("image_processor") is not None and has_tokenizer:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from transformers import AutoImageProcessor, AutoTokenizer

        image_processor = AutoImageProcessor.from_pretrained(folder) if saved.get("image_processor") else None
        tokenizer = AutoTokenizer.from_pretrained(folder) if has_tokenizer else None
        options = (
            "bow_vocabulary",
            "bow_min_count",
            "bow_binary",
            "bow_lowercase",
            "max_length",
            "label_names",
        )
        return cls(image_processor, tokenizer, **{key: saved[key] for key in options if key in saved})

    def _set_bow(self, vocabulary: list[str] | None) -> None:
        self.bow_vocabulary = None if vocabulary is None else list(vocabulary)
        self._bow = (
            None if vocabulary is None else BagOfWords(vocabulary, self.bow_binary, self.bow_lowercase)
        )

    @property
    def bow_dim(self) -> int | None:
        """Length of the BoW vectors (``text_input_dim`` of a BoW model), ``None`` without a vocabulary."""
        return None if self._bow is None else len(self._bow)

    def fit_bow(
        self,
        texts: Sequence[TextInput],
        min_count: int = 1,
        max_size: int | None = None,
        stop_words: Iterable[str] = (),
    ) -> CRCGSProcessor:
        """Build the BoW vocabulary from training ``texts`` (document frequency >= ``min_count``)."""
        vocabulary = build_bow_vocabulary(texts, min_count, max_size, self.bow_lowercase, stop_words)
        self.bow_min_count = min_count
        self._set_bow(vocabulary)
        return self

    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike] | None = None,
        text: TextInput | Sequence[TextInput] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        image_features: Any = None,
        text_features: Any = None,
        **kwargs,
    ) -> BatchFeature:
        """Process a batch of images and/or texts (a single item counts as a batch of one), or pass
        pre-extracted ``image_features`` / ``text_features`` (n, dim) through as float32 tensors.

        Returns a ``BatchFeature`` with ``pixel_values`` (images), ``input_ids``, ``attention_mask``
        (texts), ``text_features`` (texts, when a BoW vocabulary is set) and the given feature matrices.
        """
        if images is None and text is None and image_features is None and text_features is None:
            raise ValueError("CRCGSProcessor needs images, text, image_features or text_features; got none")
        if text is not None and text_features is not None:
            raise ValueError("give text or text_features, not both")
        data: dict[str, Any] = {}
        for name, features in (("image_features", image_features), ("text_features", text_features)):
            if features is not None:
                matrix = torch.as_tensor(np.asarray(features, dtype=np.float32))
                if matrix.ndim != 2:
                    raise ValueError(f"{name} must be a 2-D (n, dim) matrix, got shape {tuple(matrix.shape)}")
                data[name] = matrix if return_tensors == "pt" else matrix.numpy()
        if images is not None and self.image_processor is None:
            raise ValueError("this processor has no image_processor: it cannot process images")
        if text is not None and self.tokenizer is None and self._bow is None:
            raise ValueError(
                "this processor has neither a tokenizer nor a bow_vocabulary: it cannot process text"
            )
        if images is not None:
            image_list = _as_list(images, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor))
            if not image_list:
                raise ValueError("images is an empty list")
            loaded = [load_image(image, f"images[{i}]") for i, image in enumerate(image_list)]
            data.update(self.image_processor(loaded, return_tensors=return_tensors, **kwargs))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not texts:
                raise ValueError("text is an empty list")
            # Validates every text (non-empty, strings) and gives the tokenizer one string per text.
            words = [text_words(t, self.bow_lowercase, f"text[{i}]") for i, t in enumerate(texts)]
            strings = [t if isinstance(t, str) else " ".join(w) for t, w in zip(texts, words, strict=True)]
            if self.tokenizer is not None:
                data.update(
                    self.tokenizer(
                        strings,
                        padding=padding,
                        truncation=truncation,
                        max_length=max_length or self.max_length,
                        return_tensors=return_tensors,
                        return_token_type_ids=False,  # one segment per text: the backbone's default (zeros)
                    )
                )
            if self._bow is not None:
                features = self._bow(texts)
                data["text_features"] = torch.from_numpy(features) if return_tensors == "pt" else features
        return BatchFeature(data=data, tensor_type=None)


# `import modeling_crcgs` makes `AutoProcessor.from_pretrained` resolve a saved CRCGSProcessor;
# `register_for_auto_class` makes `save_pretrained` copy this module and write `auto_map`.
AutoProcessor.register(CRCGSConfig, CRCGSProcessor, exist_ok=True)
CRCGSProcessor.register_for_auto_class("AutoProcessor")
