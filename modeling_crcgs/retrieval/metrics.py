"""Cross-modal retrieval metrics: mAP@all / mAP@k, precision@k and recall@k curves, Hamming precision-recall
curve, precision within Hamming radius 2, NDCG@k.

Protocol (docs/METHOD.md, "mAP@all and mAP@k, exactly"): a query q ranks every database item by ascending
distance, ties broken by ascending database index (a stable sort); item n of the ranking is relevant,
``rel_n = 1``, when it shares at least one label with the query. Then

    AP_k(q) = (1 / R_k) * sum_{n <= k} rel_n * (sum_{m <= n} rel_m) / n,   R_k = sum_{n <= k} rel_n,

with ``AP_k(q) = 0`` when ``R_k = 0``; mAP@k is the mean over queries and mAP@all is k = N (database size).

Distances: ``"hamming"`` for binary codes, d_H(a, b) = (K - a.b) / 2 on sign codes (codes may be given as
{-1,+1}, {0,1} or packed ``uint8`` bits, see :func:`modeling_crcgs.hashing.to_signed_codes`);
``"cosine"`` for real-valued embeddings, d = 1 - cos(a, b) (ranking by descending cosine similarity);
``"inner_product"`` for real-valued embeddings ranked by descending inner product, d = -a.b (the ranking of
a model whose embeddings are label posteriors, where a.b is the probability that two items have the same
label, see ``CRCGSConfig.retrieval_embedding``).

Every function runs on the device of ``query_codes`` (the other inputs are moved there). Three routes, all
with the same, unique, stable order and the same integers (tests check each against loop references):

* compiled (CPU, with numba: ``pip install crcgs[fast]``; :mod:`modeling_crcgs.retrieval._metrics_numba`) for
  mAP@all / mAP@k, P@k / R@k and the Hamming-ball curves: one counting pass per query over packed 64-bit
  words (XOR + popcount distances, label AND, a counting sort over the K + 1 distances), no distance
  matrix; cosine and inner-product distances come from the same float32 product as below and are
  ranked by a stable radix sort. Its floats are the operations of the plain loop references in the same
  order: bit-identical to them, for any thread count. Threads: ``CRCGS_MAP_THREADS=N|auto`` when set, else a lowered
  ``numba.set_num_threads``, else the cores that the load average leaves free (see
  :func:`_compiled_threads`); queries are handed out in small blocks.
* numpy (CPU without numba, and NDCG): queries in chunks whose size follows a memory budget
  (``memory_budget_bytes``), everything inside a chunk vectorized: popcounts of XOR / AND of packed
  words, numpy's stable argsort (an O(N) radix sort for small integers), cumulative sums, one
  matrix-vector product. Opt-in thread pool (``CRCGS_MAP_THREADS`` = N > 1 or ``auto``:
  ``torch.get_num_threads()``): N threads rank the next chunks while the current one is reduced, in
  order, so the figures do not depend on the thread count. Its sums run in another float order than the
  loops (BLAS, torch reductions): equal to the compiled route to ~1e-16.
* dense (accelerators): the same chunks with torch matrix products and ``torch.sort(stable=True)``.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Optional, Union

import numpy as np
import torch

from ..hashing import to_signed_codes

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = [
    "mean_average_precision",
    "precision_recall_at_k",
    "pr_curve_hamming",
    "precision_at_hamming_radius",
    "ndcg_at_k",
    "retrieval_metrics",
    "default_k_values",
    "score_directions",
]

DISTANCES = ("hamming", "cosine", "inner_product")
REAL_DISTANCES = ("cosine", "inner_product")
# Working memory of one query chunk: about this many bytes per (query, database item) pair (distances,
# XOR/AND words, stable order, label overlaps, relevance, cumulative sums); default budget of one chunk.
# Smaller chunks stay in cache (faster on one thread); larger ones mean fewer parallel torch calls.
# 64 MiB: ~66 queries per chunk against 18k items, ~10 against an MS-COCO-sized database of 117k.
_BYTES_PER_PAIR = 56
DEFAULT_MEMORY_BUDGET_BYTES = 64 * 2**20


@dataclass
class _Prepared:
    """Validated inputs, ready for the chunked pass.

    Bit path (CPU): codes and labels as packed 64-bit words, so that Hamming distances and label overlaps
    are popcounts of XOR / AND (numpy ``bitwise_count``), several times faster than float products.
    Dense path (other devices, and real-valued embeddings): float32 sign codes, unit vectors (cosine) or
    embeddings as given (inner product) and float32 labels, with
    matrix products. Both give the same integers.
    """

    distance: str
    num_bits: int  # K for "hamming", 0 for real-valued embeddings
    num_queries: int
    num_database: int
    device: torch.device
    bit_ops: bool
    queries: Optional[torch.Tensor] = None  # (Q, D) float32   dense path / real-valued embeddings
    database_t: Optional[torch.Tensor] = None  # (D, N) float32
    query_labels: Optional[torch.Tensor] = None  # (Q, L) float32   dense path
    database_labels_t: Optional[torch.Tensor] = None  # (L, N) float32
    query_words: Optional[np.ndarray] = None  # (Q, W) uint64     bit path, hamming
    database_words_t: Optional[np.ndarray] = None  # (W, N) uint64
    query_label_words: Optional[np.ndarray] = None  # (Q, W') uint64   bit path
    database_label_words_t: Optional[np.ndarray] = None  # (W', N) uint64
    max_shared: int = 0  # number of labels L


# ----------------------------------------------------------------------------------------------------------
# Input validation


def _as_2d_tensor(value: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got dtype object")
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, columns), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows): nothing to evaluate")
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns")
    if tensor.dtype.is_complex:
        raise ValueError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    return tensor


def _signed_codes(codes: torch.Tensor, name: str, num_bits: Optional[int]) -> torch.Tensor:
    """{-1,+1}, {0,1} or packed uint8 codes -> int8 sign codes, naming ``name`` in errors."""
    if codes.dtype.is_floating_point and not bool(torch.isfinite(codes).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if num_bits is None and codes.dtype == torch.uint8 and bool((codes > 1).any()):
        # Packed bits of unknown length: unpack all 8 * width bits. The padding bits are 0 in every code,
        # so they add nothing to any Hamming distance.
        num_bits = 8 * codes.shape[1]
    try:
        return to_signed_codes(codes, num_bits)
    except ValueError as error:
        raise ValueError(
            f"{name}: {error}. distance='hamming' needs binary codes ({{-1,+1}}, {{0,1}} or packed uint8 "
            "bits); use distance='cosine' or 'inner_product' for real-valued embeddings"
        ) from error


def _real_rows(embeddings: torch.Tensor, name: str, distance: str) -> torch.Tensor:
    """float32 rows, checked finite: unit rows for ``"cosine"``, as given for ``"inner_product"``."""
    embeddings = embeddings.to(torch.float32)
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return torch.nn.functional.normalize(embeddings, dim=1) if distance == "cosine" else embeddings


def _labels(labels: ArrayLike, name: str, num_rows: int, rows_of: str) -> torch.Tensor:
    tensor = _as_2d_tensor(labels, name)
    if tensor.shape[0] != num_rows:
        raise ValueError(f"{name} must have one row per row of {rows_of} ({num_rows}), got {tensor.shape[0]}")
    if not bool(((tensor == 0) | (tensor == 1)).all()):
        raise ValueError(f"{name} must be multi-hot (values 0 or 1), got other values (NaN, counts, ...)")
    return tensor != 0


def _pack_words(bits: torch.Tensor) -> np.ndarray:
    """(n, K) bool -> (n, ceil(K / 64)) uint64 words (zero padding: adds nothing to popcounts)."""
    packed = np.packbits(bits.cpu().numpy(), axis=1)  # (n, ceil(K / 8)) uint8
    pad = -packed.shape[1] % 8
    return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(np.uint64)


def _prepare(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    distance: str,
    num_bits: Optional[int] = None,
    bit_ops: Optional[bool] = None,
) -> _Prepared:
    """Validate and convert; ``bit_ops=None`` picks the bit path on CPU (tests force either path)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    queries = _as_2d_tensor(query_codes, "query_codes")
    database = _as_2d_tensor(database_codes, "database_codes")
    if distance == "hamming":
        queries = _signed_codes(queries, "query_codes", num_bits)
        database = _signed_codes(database, "database_codes", num_bits)
    else:
        queries = _real_rows(queries, "query_codes", distance)
        database = _real_rows(database, "database_codes", distance)
    if queries.shape[1] != database.shape[1]:
        hint = " (pass num_bits for packed codes)" if distance == "hamming" and num_bits is None else ""
        raise ValueError(
            f"query_codes and database_codes must have the same width, got {queries.shape[1]} and "
            f"{database.shape[1]}{hint}"
        )
    q_labels = _labels(query_labels, "query_labels", queries.shape[0], "query_codes")
    db_labels = _labels(database_labels, "database_labels", database.shape[0], "database_codes")
    if q_labels.shape[1] != db_labels.shape[1]:
        raise ValueError(
            f"query_labels and database_labels must have the same number of labels, got "
            f"{q_labels.shape[1]} and {db_labels.shape[1]}"
        )
    device = queries.device
    prepared = _Prepared(
        distance=distance,
        num_bits=queries.shape[1] if distance == "hamming" else 0,
        num_queries=queries.shape[0],
        num_database=database.shape[0],
        device=device,
        bit_ops=device.type == "cpu" if bit_ops is None else bit_ops,
        max_shared=q_labels.shape[1],
    )
    if prepared.bit_ops:
        prepared.query_label_words = _pack_words(q_labels)
        prepared.database_label_words_t = np.ascontiguousarray(_pack_words(db_labels).T)
    else:
        prepared.query_labels = q_labels.to(device=device, dtype=torch.float32)
        prepared.database_labels_t = db_labels.to(device=device, dtype=torch.float32).t().contiguous()
    if prepared.bit_ops and distance == "hamming":
        prepared.query_words = _pack_words(queries > 0)
        prepared.database_words_t = np.ascontiguousarray(_pack_words(database > 0).T)
    else:
        prepared.queries = queries.to(torch.float32)
        prepared.database_t = database.to(device=device, dtype=torch.float32).t().contiguous()
    return prepared


def _check_k(k: int, num_database: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_database:
        raise ValueError(f"{name} must be an integer in [1, {num_database}] (database size), got {k!r}")
    return int(k)


def default_k_values(num_database: int, num_points: int = 50) -> list[int]:
    """Cut-offs of the precision@k / recall@k curves: ``num_points`` values evenly spaced in [1, N]."""
    return sorted({int(round(k)) for k in np.linspace(1, num_database, num=min(num_points, num_database))})


# ----------------------------------------------------------------------------------------------------------
# The chunked ranking pass


def _chunk_size(num_database: int, memory_budget_bytes: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        return chunk_size
    if (
        isinstance(memory_budget_bytes, bool)
        or not isinstance(memory_budget_bytes, int)
        or memory_budget_bytes < 1
    ):
        raise ValueError(f"memory_budget_bytes must be a positive integer, got {memory_budget_bytes!r}")
    return max(1, memory_budget_bytes // (_BYTES_PER_PAIR * num_database))


def _small_uint(max_value: int) -> np.dtype:
    return (
        np.dtype(np.uint8)
        if max_value <= 255
        else np.dtype(np.uint16)
        if max_value <= 65535
        else np.dtype(np.int64)
    )


def _popcount_into(out: np.ndarray, rows: np.ndarray, columns_t: np.ndarray, op: np.ufunc) -> None:
    """out[i, j] = sum_w popcount(op(rows[i, w], columns_t[w, j])), for (r, W) rows and (W, N) columns."""
    for w in range(rows.shape[1]):  # words of one code: 1 for K <= 64
        counts = np.bitwise_count(op(rows[:, w, None], columns_t[None, w, :]))  # (r, N) uint8
        if w == 0:
            out[...] = counts
        else:
            out += counts


def _share_any_into(out: np.ndarray, rows: np.ndarray, columns_t: np.ndarray) -> None:
    """out[i, j] = any_w (rows[i, w] & columns_t[w, j]) != 0: at least one shared label."""
    for w in range(rows.shape[1]):  # words of one label vector: 1 for L <= 64
        shares = np.bitwise_and(rows[:, w, None], columns_t[None, w, :]) != 0  # (r, N) bool
        if w == 0:
            out[...] = shares
        else:
            out |= shares


def _rank_chunk_cpu(
    prepared: _Prepared, start: int, stop: int, shared_counts: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit path for queries start:stop: distances (database order), stable order, label overlap."""
    shape = (stop - start, prepared.num_database)
    if prepared.distance == "hamming":
        dist = np.empty(shape, dtype=_small_uint(prepared.num_bits))
        _popcount_into(dist, prepared.query_words[start:stop], prepared.database_words_t, np.bitwise_xor)
    else:
        dist = _real_distances(prepared, start, stop).numpy()
    # numpy's stable sort is a radix sort for <= 16-bit integers: O(N) per row.
    order = np.argsort(dist, axis=1, kind="stable")
    label_rows = prepared.query_label_words[start:stop]
    if shared_counts:
        overlap = np.empty(shape, dtype=_small_uint(prepared.max_shared))
        _popcount_into(overlap, label_rows, prepared.database_label_words_t, np.bitwise_and)
    else:
        overlap = np.empty(shape, dtype=np.bool_)
        _share_any_into(overlap, label_rows, prepared.database_label_words_t)
    return dist, order, overlap


def _real_distances(prepared: _Prepared, start: int, stop: int) -> torch.Tensor:
    """(c, N) float32 distances of queries start:stop to the database: 1 - cos (rows are unit vectors) or
    -a.b (inner product)."""
    distances = (prepared.queries[start:stop] @ prepared.database_t).neg_()
    return distances.add_(1.0) if prepared.distance == "cosine" else distances


@dataclass
class _Ranked:
    """One chunk of queries ranked against the whole database."""

    distances: torch.Tensor  # (c, N) database order: integer Hamming distances, or float 1 - cos / -a.b
    order: torch.Tensor  # (c, N) int64: database indices in ranking order
    relevance: torch.Tensor  # (c, N) bool: rel_n in ranking order
    hits: torch.Tensor  # (c, N) int32: sum_{m<=n} rel_m
    shared: Optional[torch.Tensor]  # (c, N) number of shared labels, database order (when asked for)

    @property
    def total_relevant(self) -> torch.Tensor:
        """(c,) R_N, the number of relevant database items of each query."""
        return self.hits[:, -1]


def _threads_setting() -> Optional[int]:
    """``CRCGS_MAP_THREADS``: a positive integer, ``auto`` (0 here: every thread the backend has) or unset
    (None)."""
    value = os.environ.get("CRCGS_MAP_THREADS")
    if value is None:
        return None
    value = value.strip()
    if value == "auto":
        return 0
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"CRCGS_MAP_THREADS must be a positive integer or 'auto', got {value!r}")
    return int(value)


def _pool_threads() -> int:
    """Threads of the numpy bit path: ``CRCGS_MAP_THREADS`` (``auto``: ``torch.get_num_threads()``); unset:
    1, no thread pool."""
    setting = _threads_setting()
    if setting is None:
        return 1
    return setting or torch.get_num_threads()


def _ranked_chunks(
    prepared: _Prepared, chunk_size: Optional[int], memory_budget_bytes: int, shared_counts: bool = False
) -> Iterator[_Ranked]:
    """Rank the queries chunk by chunk: ascending distance, ties by ascending database index.

    ``shared_counts``: also return the number of shared labels (graded relevance). Bit path: up to
    ``_pool_threads()`` worker threads rank chunks ahead of the caller (1: no thread pool).
    """
    size = _chunk_size(prepared.num_database, memory_budget_bytes, chunk_size)
    starts = range(0, prepared.num_queries, size)

    def rank(start: int) -> _Ranked:
        stop = min(start + size, prepared.num_queries)
        dist, order, overlap = _rank_chunk(prepared, start, stop, shared_counts)
        relevance = torch.gather(overlap if overlap.dtype == torch.bool else overlap > 0, 1, order)
        hits = relevance.cumsum(dim=1, dtype=torch.int32)
        return _Ranked(dist, order, relevance, hits, overlap if shared_counts else None)

    workers = min(_pool_threads(), len(starts) - 1) if prepared.bit_ops else 0
    if workers < 1:
        yield from map(rank, starts)
        return
    # Bit path on several threads: `workers` chunks are ranked ahead (numpy releases the GIL in popcounts
    # and sorts) while the caller reduces the current one; chunks come back in order, so the results do
    # not depend on the number of threads. Up to workers + 1 chunks are in memory at once. Torch's own
    # intra-op threads are off meanwhile: nested on top of the pool they oversubscribe the cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ahead = deque(pool.submit(rank, start) for start in starts[:workers])
            for start in starts[workers:]:
                ranked = ahead.popleft().result()
                ahead.append(pool.submit(rank, start))
                yield ranked
            while ahead:
                yield ahead.popleft().result()
    finally:
        torch.set_num_threads(previous)


def _rank_chunk(
    prepared: _Prepared, start: int, stop: int, shared_counts: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distances, stable order, label overlap) of queries start:stop; the overlap is the number of shared
    labels when ``shared_counts``, else (bit path) a bool relevance matrix."""
    if prepared.bit_ops:
        return tuple(torch.from_numpy(a) for a in _rank_chunk_cpu(prepared, start, stop, shared_counts))
    if prepared.distance == "hamming":
        half_k = torch.full((), prepared.num_bits / 2, device=prepared.device)
        # (c, N) = K/2 - (q . d)/2: exact integers (q . d has the parity of K; float32 exact below 2^24)
        dist = torch.addmm(half_k, prepared.queries[start:stop] * -0.5, prepared.database_t).to(torch.int32)
    else:
        dist = _real_distances(prepared, start, stop)
    order = torch.sort(dist, dim=1, stable=True).indices
    shared = prepared.query_labels[start:stop] @ prepared.database_labels_t  # (c, N) label overlaps
    return dist, order, shared.to(torch.int32)


def _average_precision_sums(ranked: _Ranked, ks: Sequence[int]) -> torch.Tensor:
    """Sum over the chunk's queries of AP_k, for each k in ``ks``: (len(ks),) float64 on CPU."""
    weighted = (ranked.hits * ranked.relevance).to(torch.float64)  # (c, N): rel_n * sum_{m<=n} rel_m
    inv_rank = 1.0 / torch.arange(1, weighted.shape[1] + 1, dtype=torch.float64, device=weighted.device)
    sums = []
    for k in ks:
        precision_sum = weighted[:, :k] @ inv_rank[:k]  # (c,): sum_{n<=k} rel_n * P(n)
        relevant = ranked.hits[:, k - 1].to(torch.float64)  # (c,): R_k
        sums.append(torch.where(relevant > 0, precision_sum / relevant.clamp(min=1), 0.0).sum())
    return torch.stack(sums).cpu()


def _precision_recall_sums(ranked: _Ranked, ks: Sequence[int]) -> torch.Tensor:
    """Sums over the chunk's queries of P@k (row 0) and R@k (row 1): (2, len(ks)) float64 on CPU."""
    cut = torch.tensor(list(ks), device=ranked.hits.device)
    at_k = ranked.hits[:, cut - 1].to(torch.float64)  # (c, len(ks))
    total = ranked.total_relevant[:, None].to(torch.float64)  # (c, 1)
    precision = at_k / cut.to(torch.float64)
    recall = torch.where(total > 0, at_k / total.clamp(min=1), 0.0)
    return torch.stack([precision.sum(dim=0), recall.sum(dim=0)]).cpu()


def _radius_sums(ranked: _Ranked, num_bits: int) -> torch.Tensor:
    """Sums over the chunk's queries of precision (row 0) and recall (row 1) within Hamming radius r,
    r = 0..K: (2, K + 1) float64 on CPU.

    The ranking is sorted by distance, so the ball of radius r is its first retrieved(r) = #{d <= r} items
    and holds hits[retrieved(r)] relevant ones. Precision = hits/retrieved (0 for an empty ball),
    recall = hits / R_N (0 when no item is relevant).
    """
    sorted_dist = torch.gather(ranked.distances, 1, ranked.order).to(torch.int32)  # (c, N) ascending rows
    radii = torch.arange(num_bits + 1, dtype=torch.int32, device=sorted_dist.device)
    radii = radii.expand(sorted_dist.shape[0], -1).contiguous()
    retrieved = torch.searchsorted(sorted_dist, radii, right=True)  # (c, K+1) int64
    hits = torch.gather(ranked.hits, 1, (retrieved - 1).clamp(min=0)).to(torch.float64)
    hits = torch.where(retrieved > 0, hits, 0.0)
    precision = torch.where(retrieved > 0, hits / retrieved.clamp(min=1), 0.0)
    total = ranked.total_relevant[:, None].to(torch.float64)
    recall = torch.where(total > 0, hits / total.clamp(min=1), 0.0)
    return torch.stack([precision.sum(dim=0), recall.sum(dim=0)]).cpu()


def _summed(
    prepared: _Prepared,
    chunk_size: Optional[int],
    memory_budget_bytes: int,
    reductions: dict[str, Callable[[_Ranked], torch.Tensor]],
    shared_counts: bool = False,
) -> dict[str, torch.Tensor]:
    """One ranking pass: each reduction's per-chunk sums over queries (float64), added up over the chunks."""
    totals: dict[str, torch.Tensor] = {}
    for ranked in _ranked_chunks(prepared, chunk_size, memory_budget_bytes, shared_counts):
        for name, reduce in reductions.items():
            value = reduce(ranked)
            totals[name] = totals[name] + value if name in totals else value
    return totals


def _mean_curve(axis_name: str, axis: list[int], sums: torch.Tensor, num_queries: int) -> dict[str, list]:
    """``{axis_name: axis, "precision", "recall"}``: means over queries of the (2, len(axis)) sums."""
    means = (sums / num_queries).tolist()
    return {axis_name: axis, "precision": means[0], "recall": means[1]}


# ----------------------------------------------------------------------------------------------------------
# The compiled route (numba, optional)

# The kernels' threading layer (workqueue, see _metrics_numba) aborts the process on concurrent launches.
_COMPILED_LOCK = threading.Lock()
# Compiled route for real-valued embeddings: a chunk holds only its float32 distances (the kernels' scratch
# is per thread).
_COMPILED_BYTES_PER_PAIR = 4


@functools.cache
def _compiled_kernels() -> Optional[ModuleType]:
    """The numba kernels (:mod:`modeling_crcgs.retrieval._metrics_numba`), or None when numba is not installed
    (``pip install crcgs[fast]``): the numpy / torch route then runs."""
    try:
        from . import _metrics_numba
    except ImportError:
        return None
    return _metrics_numba


def _use_compiled(prepared: _Prepared) -> bool:
    """The compiled route serves the CPU (bit path) when numba is there."""
    return prepared.bit_ops and _compiled_kernels() is not None


def _compiled_threads() -> int:
    """Threads of the compiled route, at most numba's ``NUMBA_NUM_THREADS``.

    ``CRCGS_MAP_THREADS=N`` (``auto``: all of numba's threads) when set; else ``numba.set_num_threads(n)``
    when it lowered numba's default; else every core that looks free: ``cores - (1-minute load - 1)``
    (the caller's own thread counts in the load), at least 1. On a shared 2-core machine (load ~8) two
    threads were up to 1.5x slower than one; on free cores the work splits evenly.
    """
    import numba

    most = numba.config.NUMBA_NUM_THREADS
    setting = _threads_setting()
    if setting is not None:
        return min(setting or most, most)
    if numba.get_num_threads() < most:
        return numba.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): take the cores as free
        load = 0.0
    return max(1, min(most, int(cores - max(0.0, load - 1.0))))


def _compiled_means(
    prepared: _Prepared,
    ap_ks: Sequence[int],
    ks: Sequence[int],
    chunk_size: Optional[int],
    memory_budget_bytes: int,
) -> dict[str, list[float]]:
    """Means over queries of AP_k (k in ``ap_ks``), P@k and R@k (k in ``ks``) and, for Hamming, the ball
    precision / recall at r = 0..K: ``{"ap", "precision", "recall"[, "ball_precision", "ball_recall"]}``.

    Hamming: one compiled pass over all queries (packed words, no distance matrix). Cosine: the float32
    distances of a chunk of queries (the same torch product as the numpy route), ranked by the compiled
    radix sort. Per-query values are summed over queries in query order (thread count has no effect).
    """
    kernels = _compiled_kernels()
    ap_ks = np.asarray(ap_ks, dtype=np.int64)
    ks = np.asarray(ks, dtype=np.int64)
    num_queries, num_database = prepared.num_queries, prepared.num_database
    size = _chunk_size(
        num_database, memory_budget_bytes * _BYTES_PER_PAIR // _COMPILED_BYTES_PER_PAIR, chunk_size
    )
    threads = _compiled_threads()
    with _COMPILED_LOCK, kernels.threads(threads):
        if prepared.distance == "hamming":
            block = max(1, min(16, num_queries // (8 * threads)))
            rows = kernels.hamming_rows(
                prepared.query_words,
                prepared.database_words_t,
                prepared.query_label_words,
                prepared.database_label_words_t,
                prepared.num_bits,
                ap_ks,
                ks,
                block,
            )
            names = ("ap", "precision", "recall", "ball_precision", "ball_recall")
        else:
            parts = []
            for start in range(0, num_queries, size):
                stop = min(start + size, num_queries)
                distances = np.ascontiguousarray(_real_distances(prepared, start, stop).numpy())
                block = max(1, min(16, (stop - start) // (8 * threads)))
                parts.append(
                    kernels.cosine_rows(
                        distances,
                        prepared.query_label_words[start:stop],
                        prepared.database_label_words_t,
                        ap_ks,
                        ks,
                        block,
                    )
                )
            rows = tuple(np.concatenate(part) for part in zip(*parts, strict=True))
            names = ("ap", "precision", "recall")
    return {name: kernels.sequential_means(values).tolist() for name, values in zip(names, rows, strict=True)}


# ----------------------------------------------------------------------------------------------------------
# Public metrics


def mean_average_precision(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    top_k: Optional[int] = None,
    distance: str = "hamming",
    *,
    num_bits: Optional[int] = None,
    chunk_size: Optional[int] = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> float:
    """Mean average precision over the top ``top_k`` of each query's ranking (docs/METHOD.md, exactly).

    ``AP_k(q) = (1/R_k) sum_{n<=k} rel_n P(n)`` with ``P(n) = (sum_{m<=n} rel_m)/n``, ``AP_k(q) = 0`` when
    no relevant item is in the top k, averaged over all queries. Ranking: ascending distance, ties by
    ascending database index. Relevance: at least one shared label.

    Args:
        query_codes (`(Q, K)` or packed `(Q, ceil(K/8))` uint8, or `(Q, D)` embeddings for cosine /
            inner product):
            query representations.
        database_codes: database representations, same form.
        query_labels (`(Q, L)` multi-hot): query labels.
        database_labels (`(N, L)` multi-hot): database labels.
        top_k (`int`, *optional*): cut-off k in [1, N]; ``None`` means mAP@all (k = N).
        distance (`str`, defaults to ``"hamming"``): ``"hamming"`` (binary codes), ``"cosine"`` or
            ``"inner_product"`` (real-valued embeddings).
        num_bits (`int`, *optional*): code length K when codes are packed uint8 (without it, packed
            codes are unpacked to 8 * width bits, which gives the same Hamming distances).
        chunk_size (`int`, *optional*): queries per chunk; by default from ``memory_budget_bytes``.
        memory_budget_bytes (`int`): working memory of one chunk, about 56 bytes per (query, item) pair
            (compiled route: 4, the cosine distances; its Hamming pass needs no chunks).

    Returns:
        `float`: mAP@k (mAP@all when ``top_k`` is None).

    Example:
        >>> import torch
        >>> codes = torch.tensor([[1, 1], [1, -1], [-1, -1]])
        >>> labels = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> round(mean_average_precision(codes, codes, labels, labels), 4)
        0.8889
    """
    prepared = _prepare(query_codes, database_codes, query_labels, database_labels, distance, num_bits)
    k = prepared.num_database if top_k is None else _check_k(top_k, prepared.num_database, "top_k")
    if _use_compiled(prepared):
        return _compiled_means(prepared, [k], [], chunk_size, memory_budget_bytes)["ap"][0]
    sums = _summed(
        prepared, chunk_size, memory_budget_bytes, {"ap": lambda r: _average_precision_sums(r, [k])}
    )
    return float(sums["ap"][0]) / prepared.num_queries


def precision_recall_at_k(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    k_values: Optional[Sequence[int]] = None,
    distance: str = "hamming",
    *,
    num_bits: Optional[int] = None,
    chunk_size: Optional[int] = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> dict[str, list]:
    """Mean precision@k and recall@k over queries, for each cut-off k (same ranking as mAP).

    ``P@k(q) = (sum_{n<=k} rel_n) / k`` and ``R@k(q) = (sum_{n<=k} rel_n) / R_N`` (0 for a query with no
    relevant database item).

    Args:
        k_values (sequence of `int`, *optional*): cut-offs in [1, N]; default :func:`default_k_values`.
        Other arguments as in :func:`mean_average_precision`.

    Returns:
        `dict` with ``"k"`` (list of int), ``"precision"`` and ``"recall"`` (lists of float).
    """
    prepared = _prepare(query_codes, database_codes, query_labels, database_labels, distance, num_bits)
    ks = _k_list(k_values, prepared.num_database)
    if _use_compiled(prepared):
        means = _compiled_means(prepared, [], ks, chunk_size, memory_budget_bytes)
        return {"k": ks, "precision": means["precision"], "recall": means["recall"]}
    sums = _summed(prepared, chunk_size, memory_budget_bytes, {"pr": lambda r: _precision_recall_sums(r, ks)})
    return _mean_curve("k", ks, sums["pr"], prepared.num_queries)


def _k_list(k_values: Optional[Sequence[int]], num_database: int) -> list[int]:
    if k_values is None:
        return default_k_values(num_database)
    ks = [_check_k(k, num_database, "k_values") for k in k_values]
    if not ks:
        raise ValueError("k_values must not be empty")
    return ks


def pr_curve_hamming(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    *,
    num_bits: Optional[int] = None,
    chunk_size: Optional[int] = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> dict[str, list]:
    """Precision-recall curve of Hamming-ball retrieval: for each radius r = 0..K, the mean over queries of

    ``P(r) = #{relevant, d_H <= r} / #{d_H <= r}`` (0 when the ball is empty) and
    ``R(r) = #{relevant, d_H <= r} / #{relevant}`` (0 when the query has no relevant item).

    Returns:
        `dict` with ``"radius"`` (list of int 0..K), ``"precision"``, ``"recall"`` (lists of float).
    """
    prepared = _prepare(query_codes, database_codes, query_labels, database_labels, "hamming", num_bits)
    k = prepared.num_bits
    if _use_compiled(prepared):
        means = _compiled_means(prepared, [], [], chunk_size, memory_budget_bytes)
        return {
            "radius": list(range(k + 1)),
            "precision": means["ball_precision"],
            "recall": means["ball_recall"],
        }
    sums = _summed(prepared, chunk_size, memory_budget_bytes, {"pr": lambda r: _radius_sums(r, k)})
    return _mean_curve("radius", list(range(k + 1)), sums["pr"], prepared.num_queries)


def precision_at_hamming_radius(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    radius: int = 2,
    *,
    num_bits: Optional[int] = None,
    chunk_size: Optional[int] = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> float:
    """Mean precision of the Hamming ball of radius ``radius`` (default 2, "P@H<=2"); a query whose ball
    is empty scores 0. See :func:`pr_curve_hamming`."""
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    curve = pr_curve_hamming(
        query_codes,
        database_codes,
        query_labels,
        database_labels,
        num_bits=num_bits,
        chunk_size=chunk_size,
        memory_budget_bytes=memory_budget_bytes,
    )
    return curve["precision"][min(radius, curve["radius"][-1])]  # a radius >= K retrieves everything


def ndcg_at_k(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    top_k: Optional[int] = None,
    distance: str = "hamming",
    *,
    num_bits: Optional[int] = None,
    chunk_size: Optional[int] = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> float:
    """Mean NDCG@k with graded relevance g = number of labels shared with the query.

    ``DCG@k = sum_{n<=k} (2^{g_n} - 1) / log2(n + 1)`` over the ranking (Jarvelin & Kekalainen 2002,
    exponential gain of Burges et al. 2005); ``NDCG@k = DCG@k / IDCG@k`` with IDCG@k the DCG of the
    database sorted by decreasing g; 0 for a query with no relevant item. ``top_k=None`` means k = N.
    """
    prepared = _prepare(query_codes, database_codes, query_labels, database_labels, distance, num_bits)
    k = prepared.num_database if top_k is None else _check_k(top_k, prepared.num_database, "top_k")
    device = prepared.device
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=device))  # (k,)

    def ndcg_sum(ranked: _Ranked) -> torch.Tensor:
        gains = torch.exp2(ranked.shared.to(torch.float64)) - 1.0  # (c, N) in database order
        dcg = torch.gather(gains, 1, ranked.order[:, :k]) @ discount
        ideal = torch.topk(gains, k, dim=1).values @ discount
        return torch.where(ideal > 0, dcg / ideal.clamp(min=math.ulp(1.0)), 0.0).sum().cpu()

    sums = _summed(prepared, chunk_size, memory_budget_bytes, {"ndcg": ndcg_sum}, shared_counts=True)
    return float(sums["ndcg"]) / prepared.num_queries


def retrieval_metrics(
    query_codes: ArrayLike,
    database_codes: ArrayLike,
    query_labels: ArrayLike,
    database_labels: ArrayLike,
    top_k: Optional[int] = None,
    distance: str = "hamming",
    k_values: Optional[Sequence[int]] = None,
    *,
    num_bits: Optional[int] = None,
    chunk_size: Optional[int] = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> dict:
    """mAP@all, mAP@k, precision@k / recall@k curves and (Hamming) the radius PR curve, in ONE ranking pass.

    Same definitions as :func:`mean_average_precision`, :func:`precision_recall_at_k` and
    :func:`pr_curve_hamming`; ``top_k=None`` means k = N here too.

    Returns:
        `dict`: ``"map_all"``, ``"map_at_k"`` (float), ``"k"`` (int), ``"precision_at_k"``
        (``{"k", "precision", "recall"}``) and, for Hamming, ``"pr_curve"``
        (``{"radius", "precision", "recall"}``) and ``"precision_at_radius_2"``.
    """
    prepared = _prepare(query_codes, database_codes, query_labels, database_labels, distance, num_bits)
    n, q = prepared.num_database, prepared.num_queries
    k = n if top_k is None else _check_k(top_k, n, "top_k")
    ks = _k_list(k_values, n)
    hamming = distance == "hamming"
    if _use_compiled(prepared):
        means = _compiled_means(prepared, [n, k], ks, chunk_size, memory_budget_bytes)
        result = {
            "map_all": means["ap"][0],
            "map_at_k": means["ap"][1],
            "k": k,
            "precision_at_k": {"k": ks, "precision": means["precision"], "recall": means["recall"]},
        }
        if hamming:
            curve = {"radius": list(range(prepared.num_bits + 1))}
            curve.update(precision=means["ball_precision"], recall=means["ball_recall"])
            result["pr_curve"] = curve
            result["precision_at_radius_2"] = curve["precision"][min(2, prepared.num_bits)]
        return result
    reductions = {
        "ap": lambda r: _average_precision_sums(r, [n, k]),
        "at_k": lambda r: _precision_recall_sums(r, ks),
    }
    if hamming:
        reductions["radius"] = lambda r: _radius_sums(r, prepared.num_bits)
    sums = _summed(prepared, chunk_size, memory_budget_bytes, reductions)
    result = {
        "map_all": float(sums["ap"][0]) / q,
        "map_at_k": float(sums["ap"][1]) / q,
        "k": k,
        "precision_at_k": _mean_curve("k", ks, sums["at_k"], q),
    }
    if hamming:
        result["pr_curve"] = _mean_curve("radius", list(range(prepared.num_bits + 1)), sums["radius"], q)
        result["precision_at_radius_2"] = result["pr_curve"]["precision"][min(2, prepared.num_bits)]
    return result


# (result key, query modality, database modality): I2T = image queries against database texts.
DIRECTIONS = (("i2t", "image", "text"), ("t2i", "text", "image"))
# (result key, encoded key suffix): Hamming codes and continuous embeddings.
SPACES = (("hamming", "codes"), ("continuous", "embeds"))


def score_directions(
    query: dict, database: dict, k: int, result: dict, embedding_distance: str = "cosine"
) -> dict[str, dict]:
    """Fill ``result[space][direction]`` (mAP@all, mAP@k, P@H<=2) for Hamming codes and continuous
    embeddings (ranked by ``embedding_distance``: ``"cosine"`` or ``"inner_product"``), I2T and T2I, in one
    ranking pass each; returns their curves, keyed the same way."""
    if embedding_distance not in REAL_DISTANCES:
        raise ValueError(f"embedding_distance must be one of {REAL_DISTANCES}, got {embedding_distance!r}")
    curves: dict[str, dict] = {}
    for space, suffix in SPACES:
        distance = "hamming" if space == "hamming" else embedding_distance
        result[space], curves[space] = {}, {}
        for direction, query_modality, database_modality in DIRECTIONS:
            scores = retrieval_metrics(
                query[f"{query_modality}_{suffix}"],
                database[f"{database_modality}_{suffix}"],
                query["labels"],
                database["labels"],
                top_k=k,
                distance=distance,
            )
            result[space][direction] = {key: scores[key] for key in ("map_all", "map_at_k", "k")}
            if "precision_at_radius_2" in scores:
                result[space][direction]["precision_at_radius_2"] = scores["precision_at_radius_2"]
            curves[space][direction] = {
                key: scores[key] for key in ("precision_at_k", "pr_curve") if key in scores
            }
    return curves
