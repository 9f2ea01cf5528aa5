"""Compiled (numba) single-pass ranking kernels for the retrieval metrics of :mod:`modeling_crcgs.retrieval.metrics`.

Same protocol as there (docs/METHOD.md, "mAP@all and mAP@k, exactly"): ascending distance, ties by ascending
database index, ``rel_n = 1`` when query and item share a label, and

    AP_k(q) = (1 / R_k) * sum_{n <= k} rel_n * (sum_{m <= n} rel_m) / n     (0 when R_k = 0).

No ranking is materialised for Hamming. For each query, one pass over the database in index order
computes the distance d (popcount of the XOR of packed 64-bit words), the relevance (AND of packed label
words, non-zero) and a counting sort over the K + 1 distances: ``count[d]`` just before an item is its
place among the items at distance d, which come in database order (the tie rule). A relevant item keeps
(d, place). After prefix sums over the K + 1 counts, the ranking position of every relevant item is
``#{items at smaller distances} + place + 1``, and its rank among the relevant items follows the same way,
so the relevant positions come out ascending without a sort (O(N + K) a query). Everything the metrics
need follows from them: AP_k sums ``h / n_h`` over the relevant positions n_h <= k in ranking order, P@k
and R@k count the positions <= k, and the Hamming-ball curves are the prefix sums of the counts.

Cosine distances (float32, computed by the caller) are ranked the same way after a stable LSD radix sort of
order-preserving 32-bit keys (3 passes of 11 bits): equal distances keep database order.

Per query, the float results are the very operations of the plain-Python loop references, in the same
order (sequential sums in ranking order, then over queries in query order), so they are bit-identical to
those loops for any number of threads: each query writes its own output row, and the means over queries
are sequential sums done afterwards.

Queries run in blocks spread over numba's threads (``prange``); each block allocates its scratch arrays
once (about 40 bytes per database item). The kernels release the GIL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

# Threading layer: numba's own "workqueue" unless NUMBA_THREADING_LAYER chose one. The default pick on
# Linux, OpenMP, spins its waiting threads: on a busy 2-core machine (load ~9) a 2-thread call on 200 x
# 4,000 items took ~20 ms against ~2 ms on 1 thread; with workqueue both took ~2 ms. workqueue is
# fork-safe but takes one parallel launch at a time: the caller serialises launches with a lock.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"


def _jit(**options):
    """``numba.njit(cache=True)`` where a cache folder is writable, else without the on-disk cache.

    numba refuses ``cache=True`` at decoration time when it finds no writable cache location (neither
    beside this file nor the user-wide cache, ``NUMBA_CACHE_DIR``); the kernels then compile once per
    process instead.
    """

    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:
            return numba.njit(cache=False, **options)(function)

    return decorate


@intrinsic
def _popcount(typingctx, value):
    """Number of set bits of a uint64, as int64 (LLVM ``ctpop``: one ``popcnt`` instruction on x86-64)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@_jit()
def _hamming_counts(
    query_words, database_words_t, query_labels, database_labels_t, scratch, count, dist, rel
):
    """Counting pass of one query over the database in index order; returns R, the number of relevant items.

    Fills ``count[d]`` (items at distance d) and, for the i-th relevant item in database order,
    ``scratch[i] = (c << 32) | d``: its distance d and the number c of items at distance d before it.
    Branch-free: the slot of a non-relevant item is overwritten by the next item. With one code word and
    up to two label words (K <= 64, L <= 128) it is one fused loop; otherwise distances and relevance are
    summed word by word first (``dist``, ``rel``: loops over the database that vectorize), ~3x faster
    than a fused loop with inner loops over the words.
    """
    num_words, num_database = database_words_t.shape
    num_label_words = database_labels_t.shape[0]
    count[:] = 0
    num_relevant = 0
    if num_words == 1 and num_label_words <= 2:
        # K <= 64, L <= 128: one fused loop (for L <= 64 the "second" label word is the first one again)
        word, last = query_words[0], num_label_words - 1
        label, label_2 = query_labels[0], query_labels[last]
        for j in range(num_database):
            d = _popcount(word ^ database_words_t[0, j])
            c = count[d]
            scratch[num_relevant] = (c << 32) | d
            count[d] = c + 1
            num_relevant += ((label & database_labels_t[0, j]) | (label_2 & database_labels_t[last, j])) != 0
        return num_relevant
    dist[:] = 0
    for w in range(num_words):
        word = query_words[w]
        for j in range(num_database):
            dist[j] += _popcount(word ^ database_words_t[w, j])
    rel[:] = 0
    for w in range(num_label_words):
        label = query_labels[w]
        for j in range(num_database):
            rel[j] |= (label & database_labels_t[w, j]) != 0
    for j in range(num_database):
        d = dist[j]
        c = count[d]
        scratch[num_relevant] = (c << 32) | d
        count[d] = c + 1
        num_relevant += rel[j]
    return num_relevant


@_jit()
def _relevant_positions(scratch, num_relevant, count, rel_count, positions, terms):
    """positions[h] = 1-based ranking position n_h of the (h+1)-th relevant item (ascending),
    ``terms[h] = (h + 1) / n_h`` (its precision) and ``rel_count[d]`` (relevant items at distance d), from
    the counting pass.

    The relevant items at distance d follow the items at smaller distances (``start[d]``) and, in database
    order, the relevant items at smaller distances (``rel_start[d]``, advanced as they are placed).
    """
    distance_mask = (1 << 32) - 1
    rel_count[:] = 0
    for i in range(num_relevant):
        rel_count[scratch[i] & distance_mask] += 1
    start = np.empty(count.shape[0], dtype=np.int64)
    rel_start = np.empty(count.shape[0], dtype=np.int64)
    items, relevant = 0, 0
    for d in range(count.shape[0]):
        start[d], rel_start[d] = items, relevant
        items += count[d]
        relevant += rel_count[d]
    for i in range(num_relevant):
        d = scratch[i] & distance_mask
        h = rel_start[d]
        positions[h] = start[d] + (scratch[i] >> 32) + 1
        terms[h] = (h + 1) / positions[h]
        rel_start[d] = h + 1


@_jit()
def _query_outputs(positions, terms, num_relevant, ap_ks, ks, q, ap, precision, recall):
    """AP_k for each k of ``ap_ks`` and P@k, R@k for each k of ``ks``, into row q of the outputs.

    AP_k = (sum over relevant n <= k, in ranking order, of hits_n / n) / R_k, as the loop references
    (``terms[h]`` = hits / n of the (h+1)-th relevant item).
    """
    ranked = positions[:num_relevant]
    for a in range(ap_ks.shape[0]):
        hits = np.searchsorted(ranked, ap_ks[a], side="right")  # R_k
        total = 0.0
        for h in range(hits):
            total += terms[h]
        ap[q, a] = total / hits if hits > 0 else 0.0
    for t in range(ks.shape[0]):
        hits = np.searchsorted(ranked, ks[t], side="right")  # relevant items in the top k
        precision[q, t] = hits / ks[t]
        recall[q, t] = hits / num_relevant if num_relevant > 0 else 0.0


@_jit()
def _radius_outputs(count, rel_count, num_relevant, q, ball_precision, ball_recall):
    """Precision and recall of the Hamming balls of radius r = 0..K (0 for an empty ball / no relevant item)."""
    retrieved, hits = 0, 0
    for r in range(count.shape[0]):
        retrieved += count[r]
        hits += rel_count[r]
        ball_precision[q, r] = hits / retrieved if retrieved > 0 else 0.0
        ball_recall[q, r] = hits / num_relevant if num_relevant > 0 else 0.0


@_jit(parallel=True, nogil=True)
def hamming_rows(query_words, database_words_t, query_labels, database_labels_t, num_bits, ap_ks, ks, block):
    """Per-query metrics of Hamming ranking on packed words.

    Args:
        query_words (`(Q, W)` uint64), database_words_t (`(W, N)` uint64): codes, 64 bits a word.
        query_labels (`(Q, V)` uint64), database_labels_t (`(V, N)` uint64): multi-hot labels, packed.
        num_bits (`int`): K (distances 0..K).
        ap_ks, ks (`int64` arrays): cut-offs of AP_k and of P@k / R@k, each in [1, N].
        block (`int`): queries per parallel work item.

    Returns:
        ``(ap (Q, len(ap_ks)), precision (Q, len(ks)), recall (Q, len(ks)), ball_precision (Q, K+1),
        ball_recall (Q, K+1))``, float64: the last two are the Hamming-ball precision / recall, r = 0..K.
    """
    num_queries, num_database = query_words.shape[0], database_words_t.shape[1]
    ap = np.empty((num_queries, ap_ks.shape[0]))
    precision = np.empty((num_queries, ks.shape[0]))
    recall = np.empty((num_queries, ks.shape[0]))
    ball_precision = np.empty((num_queries, num_bits + 1))
    ball_recall = np.empty((num_queries, num_bits + 1))
    for b in prange((num_queries + block - 1) // block):
        scratch = np.empty(num_database + 1, dtype=np.int64)
        positions = np.empty(num_database, dtype=np.int64)
        terms = np.empty(num_database)
        dist = np.empty(num_database, dtype=np.int64)
        rel = np.empty(num_database, dtype=np.uint8)
        count = np.empty(num_bits + 1, dtype=np.int64)
        rel_count = np.empty(num_bits + 1, dtype=np.int64)
        for q in range(b * block, min(num_queries, (b + 1) * block)):
            num_relevant = _hamming_counts(
                query_words[q],
                database_words_t,
                query_labels[q],
                database_labels_t,
                scratch,
                count,
                dist,
                rel,
            )
            _relevant_positions(scratch, num_relevant, count, rel_count, positions, terms)
            _query_outputs(positions, terms, num_relevant, ap_ks, ks, q, ap, precision, recall)
            _radius_outputs(count, rel_count, num_relevant, q, ball_precision, ball_recall)
    return ap, precision, recall, ball_precision, ball_recall


_RADIX_BITS = 11
_RADIX_BINS = 1 << _RADIX_BITS
_RADIX_PASSES = 3  # 3 x 11 bits cover the 32-bit key


@_jit()
def _cosine_positions(distances, query_labels, database_labels_t, keys, buffer, histogram, positions, terms):
    """Stable ranking of one query's float32 distances; fills ``positions`` and ``terms`` like the Hamming
    pass, returns R.

    Key of a float: its bits, sign bit flipped for x >= 0 and all bits flipped for x < 0 (so unsigned order
    = float order; -0.0 is made +0.0 first, equal to it as a float). The relevance bit rides below the key
    (``key << 1 | rel``), and an LSD radix sort on the key bits (stable) keeps equal keys in database order.
    """
    num_database = distances.shape[0]
    num_label_words = database_labels_t.shape[0]
    bits = distances.view(np.uint32)
    histogram[:] = 0
    for j in range(num_database):
        relevant = 0
        for w in range(num_label_words):
            relevant |= (query_labels[w] & database_labels_t[w, j]) != 0
        raw = np.uint32(0) if distances[j] == 0.0 else bits[j]
        key = raw ^ np.uint32(0xFFFFFFFF) if raw >> 31 else raw ^ np.uint32(0x80000000)
        keys[j] = (np.uint64(key) << np.uint64(1)) | np.uint64(relevant)
        for p in range(_RADIX_PASSES):
            histogram[p, (key >> (p * _RADIX_BITS)) & (_RADIX_BINS - 1)] += 1
    source, target = keys, buffer
    for p in range(_RADIX_PASSES):
        shift = p * _RADIX_BITS + 1
        first = (source[0] >> np.uint64(shift)) & np.uint64(_RADIX_BINS - 1)
        if histogram[p, first] == num_database:  # one digit value for all: the pass would not move anything
            continue
        offset = 0
        for digit in range(_RADIX_BINS):
            offset, histogram[p, digit] = offset + histogram[p, digit], offset
        for j in range(num_database):
            digit = (source[j] >> np.uint64(shift)) & np.uint64(_RADIX_BINS - 1)
            target[histogram[p, digit]] = source[j]
            histogram[p, digit] += 1
        source, target = target, source
    num_relevant = 0
    for n in range(num_database):
        positions[num_relevant] = n + 1
        num_relevant += np.int64(source[n] & np.uint64(1))
    for h in range(num_relevant):
        terms[h] = (h + 1) / positions[h]
    return num_relevant


@_jit(parallel=True, nogil=True)
def cosine_rows(distances, query_labels, database_labels_t, ap_ks, ks, block):
    """Per-query AP_k, P@k, R@k of the ranking by ascending float32 ``distances`` (`(Q, N)`); labels packed
    as in :func:`hamming_rows`. Returns ``(ap, precision, recall)``."""
    num_queries, num_database = distances.shape
    ap = np.empty((num_queries, ap_ks.shape[0]))
    precision = np.empty((num_queries, ks.shape[0]))
    recall = np.empty((num_queries, ks.shape[0]))
    for b in prange((num_queries + block - 1) // block):
        keys = np.empty(num_database, dtype=np.uint64)
        buffer = np.empty(num_database, dtype=np.uint64)
        histogram = np.empty((_RADIX_PASSES, _RADIX_BINS), dtype=np.int64)
        positions = np.empty(num_database + 1, dtype=np.int64)
        terms = np.empty(num_database)
        for q in range(b * block, min(num_queries, (b + 1) * block)):
            num_relevant = _cosine_positions(
                distances[q], query_labels[q], database_labels_t, keys, buffer, histogram, positions, terms
            )
            _query_outputs(positions, terms, num_relevant, ap_ks, ks, q, ap, precision, recall)
    return ap, precision, recall


@_jit(nogil=True)
def sequential_means(rows):
    """Column means of ``rows`` (`(Q, C)`), each summed in row order (as the loop references add up queries)."""
    totals = np.zeros(rows.shape[1])
    for q in range(rows.shape[0]):
        for c in range(rows.shape[1]):
            totals[c] += rows[q, c]
    return totals / rows.shape[0]


@contextmanager
def threads(num_threads: int) -> Iterator[None]:
    """Run the kernels on ``num_threads`` numba threads, handing out one block of queries at a time (dynamic
    scheduling: a thread slowed by other processes takes fewer blocks); restores the settings after."""
    previous, previous_chunk = numba.get_num_threads(), numba.get_parallel_chunksize()
    numba.set_num_threads(num_threads)
    numba.set_parallel_chunksize(1)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(previous_chunk)
        numba.set_num_threads(previous)
