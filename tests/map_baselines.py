"""The mAP@all loops of other hashing repositories on random codes: the baselines that
``benchmarks/bench_map.py`` times against ``modeling_crcgs.retrieval.metrics``, and that
``tests/evaluation/test_metrics.py`` holds to the library's value (so the benchmark times correct code).
"""

from __future__ import annotations

import numpy as np


def random_problem(
    num_query: int, num_database: int, num_bits: int, num_labels: int, seed: int = 0, label_rate: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random {-1,+1} int8 codes and multi-hot int8 labels (each item has at least one label)."""
    rng = np.random.default_rng(seed)

    def codes(n: int) -> np.ndarray:
        return (rng.integers(0, 2, size=(n, num_bits), dtype=np.int8) * 2 - 1).astype(np.int8)

    def labels(n: int) -> np.ndarray:
        y = (rng.random((n, num_labels)) < label_rate).astype(np.int8)
        y[np.arange(n), rng.integers(0, num_labels, size=n)] = 1
        return y

    return codes(num_query), codes(num_database), labels(num_query), labels(num_database)


def numpy_loop_map(
    query_codes: np.ndarray,
    database_codes: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    stable: bool = True,
) -> float:
    """Baseline (a): one query at a time, the loop of most hashing repositories (mAP@all).

    ``stable=False`` uses numpy's default quicksort as those repositories do (ties in arbitrary order).
    """
    # float32, as codes and labels come out of torch models in those repositories
    qb, db = query_codes.astype(np.float32), database_codes.astype(np.float32)
    ql, dl = query_labels.astype(np.float32), database_labels.astype(np.float32)
    num_bits = qb.shape[1]
    total = 0.0
    for i in range(qb.shape[0]):
        relevant = (ql[i] @ dl.T > 0).astype(np.float32)
        num_relevant = relevant.sum()
        if num_relevant == 0:
            continue
        hamming = 0.5 * (num_bits - qb[i] @ db.T)
        order = np.argsort(hamming, kind="stable" if stable else "quicksort")
        relevant = relevant[order]
        count = np.arange(1, int(num_relevant) + 1)
        positions = np.flatnonzero(relevant) + 1.0
        total += float(np.mean(count / positions))
    return total / qb.shape[0]


def python_loop_map(
    query_codes: np.ndarray,
    database_codes: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
) -> float:
    """Baseline (b): a pure-Python double loop over queries and ranking positions (mAP@all), as in the
    authors' release: a label check per (query, position), precision accumulated item by item."""
    num_bits = query_codes.shape[1]
    hamming = 0.5 * (num_bits - query_codes.astype(np.float64) @ database_codes.astype(np.float64).T)
    orders = np.argsort(hamming, axis=1, kind="stable")
    scores = []
    for i in range(query_codes.shape[0]):
        hits, precision_sum = 0.0, 0.0
        for n, j in enumerate(orders[i]):
            if np.dot(query_labels[i], database_labels[j]) > 0:
                hits += 1
                precision_sum += hits / (n + 1)
        scores.append(precision_sum / hits if hits > 0 else 0.0)
    return float(np.mean(scores))
