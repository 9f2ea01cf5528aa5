"""Tokenization, vocabulary selection and bag-of-words matrices for the benchmark builders.

The text modality of the cross-modal hashing benchmarks is a bag-of-words (BoW) vector over a
vocabulary chosen by frequency:

- MIRFLICKR-25K: the Flickr tags used by at least 20 images, counted over all 25,000 images before any
  pair is dropped, as the release does (1386 words; DCMH, Jiang & Li, CVPR 2017, section 4.1);
- MS-COCO: the 2000 most frequent caption words after lower-casing, ``\\w+`` tokenization and
  removal of English stop words.

Everything here is vectorized over tokens: tokens are factorized once (``pandas.factorize``, a
hash table in C), counted with ``numpy.bincount`` and scattered into a ``scipy.sparse`` matrix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

TOKEN_PATTERN = re.compile(r"\w+")

# The English stop-word list of NLTK (``nltk.corpus.stopwords.words("english")``, 179 words), written
# out so that nothing is downloaded. Contractions are split by the ``\w+`` tokenizer ("don't" ->
# "don", "t"), so the list keeps only their apostrophe-free pieces, which NLTK lists as well.
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against ain all am an and any are aren as at be because been before
    being below between both but by can couldn d did didn do does doesn doing don down during each
    few for from further had hadn has hasn have haven having he her here hers herself him himself his
    how i if in into is isn it its itself just ll m ma me mightn more most mustn my myself needn no
    nor not now o of off on once only or other our ours ourselves out over own re s same shan she
    should shouldn so some such t than that the their theirs them themselves then there these they
    this those through to too under until up ve very was wasn we were weren what when where which
    while who whom why will with won wouldn y you your yours yourself yourselves
    """.split()
)


def tokenize(
    texts: Iterable[str], stop_words: frozenset[str] | set[str] = ENGLISH_STOP_WORDS
) -> list[list[str]]:
    """Lower-case each text, split it into ``\\w+`` tokens and drop the stop words."""
    return [[tok for tok in TOKEN_PATTERN.findall(text.lower()) if tok not in stop_words] for text in texts]


@dataclass(frozen=True)
class BagOfWords:
    """A document-term matrix and its vocabulary.

    Attributes:
        matrix: ``scipy.sparse.csr_matrix`` of shape ``(num_documents, len(vocabulary))``, float32.
        vocabulary: the words of the columns, most frequent first (ties: alphabetical order).
        counts: int64 frequency of each vocabulary word (the number used for the selection).
    """

    matrix: sp.csr_matrix
    vocabulary: list[str]
    counts: np.ndarray


def build_bag_of_words(
    documents: Sequence[Sequence[str]],
    *,
    min_count: int | None = None,
    max_size: int | None = None,
    frequency: Literal["documents", "tokens"] = "documents",
    binary: bool = True,
) -> BagOfWords:
    """Choose a vocabulary by frequency and build the BoW matrix of ``documents`` over it.

    A word's frequency is the number of documents that contain it (``frequency="documents"``) or its
    number of occurrences (``"tokens"``). Words with frequency ``>= min_count`` are kept, then the
    ``max_size`` most frequent of them (ties broken alphabetically, so the result is deterministic).
    Entry ``(i, j)`` of the matrix is 1 when document ``i`` contains word ``j`` (``binary=True``), or
    the number of occurrences otherwise.

    Args:
        documents: one token list per document.
        min_count: keep words with at least this frequency (``None``: no threshold).
        max_size: keep at most this many words (``None``: no limit).
        frequency: ``"documents"`` or ``"tokens"``, see above.
        binary: 0/1 entries instead of counts.
    """
    if min_count is not None and min_count < 1:
        raise ValueError(f"min_count must be >= 1 or None, got {min_count}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
    if frequency not in ("documents", "tokens"):
        raise ValueError(f"frequency must be 'documents' or 'tokens', got {frequency!r}")
    num_docs = len(documents)
    lengths = np.fromiter(map(len, documents), dtype=np.int64, count=num_docs)
    flat = np.fromiter(chain.from_iterable(documents), dtype=object, count=int(lengths.sum()))
    codes, uniques = pd.factorize(flat, sort=True)  # uniques sorted: ties below resolve alphabetically
    rows = np.repeat(np.arange(num_docs, dtype=np.int64), lengths)
    # Occurrence counts per (document, word) pair, one entry per distinct pair.
    pair_matrix = sp.csr_matrix(
        (np.ones(codes.size, dtype=np.float32), (rows, codes)), shape=(num_docs, len(uniques))
    )
    pair_matrix.sum_duplicates()
    if frequency == "documents":
        counts = np.bincount(pair_matrix.indices, minlength=len(uniques)).astype(np.int64)
    else:
        counts = np.bincount(codes, minlength=len(uniques)).astype(np.int64)
    order = np.argsort(-counts, kind="stable")  # stable on sorted uniques: alphabetical ties
    if min_count is not None:
        order = order[counts[order] >= min_count]
    if max_size is not None:
        order = order[:max_size]
    matrix = pair_matrix[:, order].tocsr()
    matrix.sort_indices()
    if binary:
        matrix.data[:] = 1.0
    return BagOfWords(matrix=matrix, vocabulary=uniques[order].tolist(), counts=counts[order])
