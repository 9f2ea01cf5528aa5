"""Bag-of-words text vectors, the text input of the paper's BoW models and of the text-to-image teacher.

docs/METHOD.md, "Data and task": texts are bag-of-words vectors over a fixed vocabulary (MIRFLICKR-25K
1386-d, NUS-WIDE 1000-d, MS-COCO 2000-d), the words kept being those frequent enough in the training
texts (e.g. MIRFLICKR-25K keeps tags occurring at least 20 times). Here the vocabulary is every word
whose document frequency reaches ``min_count`` (optionally the ``max_size`` most frequent ones), and a
text's vector is its word counts over that vocabulary, or 0/1 presence when ``binary``.

A text is a caption (a string: words are ``\\w+`` runs) or a list of tags (each tag is one word).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Union

import numpy as np

__all__ = ["BagOfWords", "TextInput", "build_bow_vocabulary", "text_words"]

TextInput = Union[str, Sequence[str]]
_WORD = re.compile(r"\w+")


def text_words(text: TextInput, lowercase: bool = True, where: str = "text") -> list[str]:
    """The words of a caption (``\\w+`` runs) or of a list of tags (one word per tag).

    Raises:
        ValueError: for a text that is not a string or a list of strings, or that has no word.
    """
    if isinstance(text, str):
        words = _WORD.findall(text.lower() if lowercase else text)
    elif isinstance(text, Sequence) and all(isinstance(tag, str) for tag in text):
        words = [tag.strip().lower() if lowercase else tag.strip() for tag in text]
        words = [word for word in words if word]
    else:
        raise ValueError(f"{where} must be a string or a list of tag strings, got {type(text).__name__}")
    if not words:
        raise ValueError(f"{where} is empty: expected at least one word, got {text!r}")
    return words


def build_bow_vocabulary(
    texts: Sequence[TextInput],
    min_count: int = 1,
    max_size: int | None = None,
    lowercase: bool = True,
    stop_words: Iterable[str] = (),
) -> list[str]:
    """Words whose document frequency (number of texts containing them) is at least ``min_count``.

    Ordered by decreasing document frequency, ties by the word; truncated to ``max_size`` when given;
    ``stop_words`` are left out (MS-COCO's 2000-word vocabulary drops English stop words).
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
        raise ValueError(f"max_size must be a positive integer or None, got {max_size!r}")
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of texts")
    frequency: Counter[str] = Counter()
    for i, text in enumerate(texts):
        frequency.update(set(text_words(text, lowercase, f"texts[{i}]")))
    excluded = set(stop_words)
    kept = sorted(
        (word for word, count in frequency.items() if count >= min_count and word not in excluded),
        key=lambda w: (-frequency[w], w),
    )
    if not kept:
        raise ValueError(f"no word occurs in at least min_count={min_count} of the {len(texts)} texts")
    return kept[:max_size] if max_size is not None else kept


class BagOfWords:
    """Maps texts to (n, vocabulary size) float32 bag-of-words vectors.

    Args:
        vocabulary (`list[str]`): the words, one column each (unique, non-empty).
        binary (`bool`, *optional*, defaults to `True`): 0/1 presence instead of counts.
        lowercase (`bool`, *optional*, defaults to `True`): lowercase texts before matching.

    Example:

    >>> bow = BagOfWords(["dog", "grass", "sky"])
    >>> bow(["A dog on the grass, dog!", ["sky", "sea"]]).tolist()
    [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, vocabulary: Sequence[str], binary: bool = True, lowercase: bool = True):
        if isinstance(vocabulary, str) or not vocabulary:
            raise ValueError("vocabulary must be a non-empty list of words")
        vocabulary = list(vocabulary)
        if not all(isinstance(word, str) and word for word in vocabulary):
            raise ValueError("vocabulary must hold non-empty strings")
        if len(set(vocabulary)) != len(vocabulary):
            duplicated = sorted(word for word, count in Counter(vocabulary).items() if count > 1)
            raise ValueError(f"vocabulary has duplicated words {duplicated[:10]}")
        self.vocabulary = vocabulary
        self.binary, self.lowercase = binary, lowercase
        self._column = {word: column for column, word in enumerate(vocabulary)}

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __call__(self, texts: Sequence[TextInput]) -> np.ndarray:
        """Vectors of ``texts``, shape (len(texts), len(vocabulary)), float32; an empty text raises."""
        if isinstance(texts, str):
            raise ValueError("texts must be a list of texts, got a single string")
        rows: list[int] = []
        columns: list[int] = []
        for i, text in enumerate(texts):
            ids = [
                self._column[w] for w in text_words(text, self.lowercase, f"text[{i}]") if w in self._column
            ]
            rows.extend([i] * len(ids))
            columns.extend(ids)
        counts = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        np.add.at(counts, (np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)), 1.0)
        return np.minimum(counts, 1.0) if self.binary else counts
