"""`evaluate` metric: mean average precision of cross-modal retrieval (mAP@all / mAP@k), CRCGS protocol.

Load offline from the repository root with ``evaluate.load("evaluation/crcgs_map")``. The math lives in
``modeling_crcgs.retrieval.metrics.mean_average_precision``; this module only adapts it to ``evaluate``.
"""

import datasets
import evaluate
import numpy as np

from modeling_crcgs.retrieval.metrics import DISTANCES, mean_average_precision

_CITATION = """\
@inproceedings{zhang2022crcgs,
  title     = {Image-Text Retrieval via Contrastive Learning with Auxiliary Generative Features and
               Support-set Regularization},
  author    = {Zhang, Lei and Yang, Min and Li, Chengming and Xu, Ruifeng},
  booktitle = {Proceedings of the 45th International ACM SIGIR Conference on Research and Development in
               Information Retrieval},
  pages     = {1938--1943},
  year      = {2022},
  doi       = {10.1145/3477495.3531783}
}
"""

_DESCRIPTION = """\
Mean average precision (mAP) of cross-modal retrieval with multi-label relevance, as used to evaluate
CRCGS and cross-modal hashing. Each query ranks every database item by ascending distance (Hamming
distance d_H(a, b) = (K - a.b) / 2 for binary codes, 1 - cosine or -a.b (inner product) for real-valued
embeddings); ties are
broken by ascending database index (a stable, documented rule). Item n of the ranking is relevant,
rel_n = 1, when it shares at least one label with the query. Then

    AP_k(q) = (1 / R_k) * sum_{n <= k} rel_n * (sum_{m <= n} rel_m) / n,   R_k = sum_{n <= k} rel_n,

with AP_k(q) = 0 when R_k = 0, and mAP@k = mean over queries of AP_k(q). mAP@all is k = N, the database
size. The CRCGS paper's table is mAP@k with k = number of queries (see the metric card).

Inputs: one row per query. `predictions` are the query codes (or embeddings), `references` the query
labels (multi-hot); the retrieval database is passed to `compute` as `database_codes` and
`database_labels`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): query codes, one row per query: {-1,+1} or {0,1} values
        (or packed uint8 bytes with `num_bits`) for `distance="hamming"`, real embeddings for "cosine" and
        "inner_product".
    references (`list` of `list` of `int`): query labels, multi-hot rows (values 0/1).
    database_codes (array-like of shape `(N, K)`): database codes in the same form as `predictions`.
    database_labels (array-like of shape `(N, L)`): database labels, multi-hot.
    top_k (`int`, *optional*): cut-off k in [1, N]; default None means mAP@all.
    distance (`str`, defaults to "hamming"): "hamming", "cosine" or "inner_product" (descending a.b: the
        ranking of a model whose embeddings are label posteriors).
    num_bits (`int`, *optional*): code length K when codes are packed uint8 bytes.

Returns:
    map (`float`): mAP@top_k (mAP@all when `top_k` is None), in [0, 1].

Examples:
    Three 2-bit codes retrieving among themselves; the second query's only relevant item is itself.

    >>> import evaluate
    >>> crcgs_map = evaluate.load("evaluation/crcgs_map")  # from the repository root
    >>> codes = [[1, 1], [1, -1], [-1, -1]]
    >>> labels = [[1, 0], [0, 1], [1, 0]]
    >>> results = crcgs_map.compute(
    ...     predictions=codes, references=labels, database_codes=codes, database_labels=labels
    ... )
    >>> print(round(results["map"], 4))
    0.8889
    >>> results = crcgs_map.compute(
    ...     predictions=codes, references=labels, database_codes=codes, database_labels=labels, top_k=1
    ... )
    >>> print(results["map"])
    1.0
"""


def _as_array(value, name: str) -> np.ndarray:
    """Rows of possibly ragged lists -> a 2-D numeric array, naming ``name`` in errors."""
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name} must be a rectangular 2-D array: {error}") from error
    if array.dtype == object:
        raise ValueError(f"{name} must be a rectangular 2-D numeric array (rows of equal length)")
    return array


def _packed_as_uint8(codes: np.ndarray, num_bits: int) -> np.ndarray:
    """Codes ``ceil(num_bits / 8)`` columns wide are packed bytes: give them back their uint8 dtype."""
    packed_width = (int(num_bits) + 7) // 8
    if codes.ndim == 2 and codes.shape[1] == packed_width != num_bits:
        if not np.array_equal(codes, np.clip(np.round(codes), 0, 255)):
            raise ValueError(
                f"packed codes (width {packed_width} for num_bits={num_bits}) must be bytes 0..255"
            )
        return codes.astype(np.uint8)
    return codes


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CrcgsMap(evaluate.Metric):
    """mAP@all / mAP@k of cross-modal retrieval (wraps ``modeling_crcgs.retrieval.metrics.mean_average_precision``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
            reference_urls=["https://doi.org/10.1145/3477495.3531783"],
        )

    def _compute(
        self,
        predictions,
        references,
        database_codes=None,
        database_labels=None,
        top_k=None,
        distance="hamming",
        num_bits=None,
    ) -> dict:
        if database_codes is None or database_labels is None:
            raise ValueError("database_codes and database_labels must be passed to compute()")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        queries = _as_array(predictions, "predictions")
        database = _as_array(database_codes, "database_codes")
        if distance == "hamming" and num_bits is not None:
            # Packed bytes travel through the float32 feature: restore their uint8 dtype.
            queries, database = _packed_as_uint8(queries, num_bits), _packed_as_uint8(database, num_bits)
        value = mean_average_precision(
            queries,
            database,
            _as_array(references, "references"),
            _as_array(database_labels, "database_labels"),
            top_k=top_k,
            distance=distance,
            num_bits=num_bits,
        )
        return {"map": float(value)}
