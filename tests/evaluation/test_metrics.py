"""Retrieval metrics against plain-Python loop references, on data with many Hamming ties."""

import math

import numpy as np
import pytest
import torch
from map_baselines import numpy_loop_map, python_loop_map, random_problem

from modeling_crcgs import pack_codes
from modeling_crcgs.retrieval import metrics as M

# ------------------------------------------------------------------------------------------------------------
# Slow references: one query, one database item at a time.


def ref_distances(query_codes, database_codes, distance):
    """Python-float distance of every (query, item) pair; codes in {-1,+1}."""
    out = []
    for q in np.asarray(query_codes, dtype=np.float64):
        row = []
        for d in np.asarray(database_codes, dtype=np.float64):
            if distance == "hamming":
                row.append(int(sum(1 for a, b in zip(q, d, strict=True) if a != b)))
            elif distance == "inner_product":
                row.append(-sum(float(a) * float(b) for a, b in zip(q, d, strict=True)))
            else:
                nq, nd = math.sqrt(float(q @ q)), math.sqrt(float(d @ d))
                row.append(1.0 - float(q @ d) / (nq * nd))
        out.append(row)
    return out


def ref_rankings(query_codes, database_codes, distance):
    """Ranking of each query: ascending distance, then ascending database index."""
    dist = ref_distances(query_codes, database_codes, distance)
    return [sorted(range(len(row)), key=lambda j, row=row: (row[j], j)) for row in dist], dist


def shared_count(a, b):
    return int(sum(int(x) * int(y) for x, y in zip(a, b, strict=True)))


def ref_map(qc, dc, ql, dl, top_k=None, distance="hamming"):
    rankings, _ = ref_rankings(qc, dc, distance)
    scores = []
    for i, ranking in enumerate(rankings):
        k = len(ranking) if top_k is None else top_k
        hits, total = 0, 0.0
        for n, j in enumerate(ranking[:k], start=1):
            if shared_count(ql[i], dl[j]) > 0:
                hits += 1
                total += hits / n
        scores.append(total / hits if hits else 0.0)
    return sum(scores) / len(scores)


def ref_precision_recall_at_k(qc, dc, ql, dl, ks, distance="hamming"):
    rankings, _ = ref_rankings(qc, dc, distance)
    precision, recall = [0.0] * len(ks), [0.0] * len(ks)
    for i, ranking in enumerate(rankings):
        rel = [shared_count(ql[i], dl[j]) > 0 for j in ranking]
        for t, k in enumerate(ks):
            precision[t] += sum(rel[:k]) / k
            recall[t] += sum(rel[:k]) / sum(rel) if sum(rel) else 0.0
    return [p / len(rankings) for p in precision], [r / len(rankings) for r in recall]


def ref_pr_curve(qc, dc, ql, dl):
    _, dist = ref_rankings(qc, dc, "hamming")
    num_bits = np.asarray(qc).shape[1]
    precision, recall = [0.0] * (num_bits + 1), [0.0] * (num_bits + 1)
    for i, row in enumerate(dist):
        relevant = [shared_count(ql[i], dl[j]) > 0 for j in range(len(row))]
        for r in range(num_bits + 1):
            inside = [j for j in range(len(row)) if row[j] <= r]
            hits = sum(relevant[j] for j in inside)
            precision[r] += hits / len(inside) if inside else 0.0
            recall[r] += hits / sum(relevant) if sum(relevant) else 0.0
    return [p / len(dist) for p in precision], [r / len(dist) for r in recall]


def ref_ndcg(qc, dc, ql, dl, top_k=None, distance="hamming"):
    rankings, _ = ref_rankings(qc, dc, distance)
    scores = []
    for i, ranking in enumerate(rankings):
        k = len(ranking) if top_k is None else top_k
        gains = [2.0 ** shared_count(ql[i], dl[j]) - 1.0 for j in ranking]
        dcg = sum(g / math.log2(n + 1) for n, g in enumerate(gains[:k], start=1))
        ideal = sorted(gains, reverse=True)
        idcg = sum(g / math.log2(n + 1) for n, g in enumerate(ideal[:k], start=1))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return sum(scores) / len(scores)


# ------------------------------------------------------------------------------------------------------------
# Data


def tie_heavy(num_query=23, num_database=157, num_bits=8, num_labels=5, seed=0, empty_query_rows=3):
    """8-bit codes (only 9 distances: many ties), sparse labels, some queries with no relevant item."""
    rng = np.random.default_rng(seed)
    qc = rng.choice([-1, 1], size=(num_query, num_bits)).astype(np.int8)
    dc = rng.choice([-1, 1], size=(num_database, num_bits)).astype(np.int8)
    dc[10:20] = dc[0]  # exact duplicate codes
    ql = (rng.random((num_query, num_labels)) < 0.25).astype(np.int8)
    dl = (rng.random((num_database, num_labels)) < 0.25).astype(np.int8)
    dl[:, -1] = 0
    ql[:empty_query_rows] = 0
    ql[:empty_query_rows, -1] = 1  # a label no database item has: R = 0
    return qc, dc, ql, dl


def exact_cosine_rows(rng, n, dim=6):
    """Rows with four entries +-1, zeros elsewhere: unit vectors have entries +-0.5, so float32 cosines
    are exact multiples of 1/4 and equal cosines tie exactly."""
    out = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        out[i, rng.choice(dim, size=4, replace=False)] = rng.choice([-1.0, 1.0], size=4)
    return out


ALL_PATHS = pytest.mark.parametrize("path", ["compiled", "bit-path", "dense-path"])


def with_path(monkeypatch, path):
    """Force a route on CPU: the compiled (numba) kernels, the numpy bit (popcount) path without numba, or
    the dense (matmul + torch.sort) path of accelerators."""
    if path == "compiled":
        assert M._compiled_kernels() is not None, "numba is missing: pip install -e '.[dev]'"
        return
    monkeypatch.setattr(M, "_compiled_kernels", lambda: None)
    original = M._prepare

    def forced(*args, **kwargs):
        kwargs["bit_ops"] = path == "bit-path"
        return original(*args, **kwargs)

    monkeypatch.setattr(M, "_prepare", forced)


# ------------------------------------------------------------------------------------------------------------
# mAP


@ALL_PATHS
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_map_matches_loop_reference_with_ties(monkeypatch, path, chunk_size):
    with_path(monkeypatch, path)
    qc, dc, ql, dl = tie_heavy()
    for top_k in (None, len(qc), 1, 50):
        got = M.mean_average_precision(qc, dc, ql, dl, top_k=top_k, chunk_size=chunk_size)
        assert got == pytest.approx(ref_map(qc, dc, ql, dl, top_k), abs=1e-12), top_k


def test_map_tie_rule_is_database_index_order():
    # One query, four items at the same distance: only the index order decides the ranking.
    qc = np.array([[1, 1]])
    dc = np.array([[1, -1], [-1, 1], [1, -1], [-1, 1]])
    ql = np.array([[1, 0]])
    dl = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])  # relevant items at ranks 2 and 4
    assert M.mean_average_precision(qc, dc, ql, dl) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert M.mean_average_precision(qc, dc[::-1].copy(), ql, dl[::-1].copy()) == pytest.approx(
        (1 + 2 / 3) / 2
    )


def test_map_query_without_relevant_item_counts_as_zero():
    qc, dc = np.array([[1, 1], [1, 1]]), np.array([[1, 1], [-1, -1]])
    ql, dl = np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 0]])
    assert M.mean_average_precision(qc, dc, ql, dl) == pytest.approx(0.5)


def test_map_single_label_data():
    rng = np.random.default_rng(3)
    qc, dc, _, _ = tie_heavy(seed=3)
    ql = np.eye(4, dtype=np.int8)[rng.integers(0, 4, size=len(qc))]
    dl = np.eye(4, dtype=np.int8)[rng.integers(0, 4, size=len(dc))]
    assert M.mean_average_precision(qc, dc, ql, dl) == pytest.approx(ref_map(qc, dc, ql, dl), abs=1e-12)


def test_code_forms_packed_bits_and_signs_agree():
    qc, dc, ql, dl = tie_heavy(num_bits=12, seed=1)  # 12 bits: packed rows have 4 padding bits
    expected = ref_map(qc, dc, ql, dl)
    signed = M.mean_average_precision(torch.from_numpy(qc), torch.from_numpy(dc), ql, dl)
    bits01 = M.mean_average_precision((qc > 0).astype(np.int64), (dc > 0), ql, dl)
    packed = M.mean_average_precision(pack_codes(qc), pack_codes(dc), ql, dl, num_bits=12)
    packed_no_bits = M.mean_average_precision(pack_codes(qc), pack_codes(dc), ql, dl)
    mixed = M.mean_average_precision(pack_codes(qc), dc.astype(np.float32), ql, dl, num_bits=12)
    for value in (signed, bits01, packed, packed_no_bits, mixed):
        assert value == pytest.approx(expected, abs=1e-12)


def test_wide_codes_and_many_labels_use_several_words():
    # 130 bits (3 words) and 70 labels (2 words), with ties from duplicated rows.
    rng = np.random.default_rng(5)
    qc = rng.choice([-1, 1], size=(9, 130))
    dc = rng.choice([-1, 1], size=(40, 130))
    dc[20:] = dc[:20]
    ql = (rng.random((9, 70)) < 0.03).astype(np.int8)
    dl = (rng.random((40, 70)) < 0.03).astype(np.int8)
    assert M.mean_average_precision(qc, dc, ql, dl) == pytest.approx(ref_map(qc, dc, ql, dl), abs=1e-12)
    assert M.ndcg_at_k(qc, dc, ql, dl, top_k=10) == pytest.approx(ref_ndcg(qc, dc, ql, dl, 10), abs=1e-12)


@ALL_PATHS
def test_cosine_with_exact_ties(monkeypatch, path):
    # Many exact cosine ties, decided by the database index.
    with_path(monkeypatch, path)
    rng = np.random.default_rng(7)
    qc, dc = exact_cosine_rows(rng, 15), exact_cosine_rows(rng, 90)
    _, _, ql, dl = tie_heavy(num_query=15, num_database=90, seed=7)
    for top_k in (None, 15):
        got = M.mean_average_precision(qc, dc, ql, dl, top_k=top_k, distance="cosine")
        assert got == pytest.approx(ref_map(qc, dc, ql, dl, top_k, "cosine"), abs=1e-12)


def test_cosine_random_embeddings():
    rng = np.random.default_rng(8)
    qc, dc = rng.normal(size=(12, 16)), rng.normal(size=(80, 16))
    _, dist = ref_rankings(qc, dc, "cosine")
    gaps = np.diff(np.sort(np.asarray(dist), axis=1), axis=1)
    assert gaps.min() > 1e-6  # precondition: no near-ties that float32 could order differently
    _, _, ql, dl = tie_heavy(num_query=12, num_database=80, seed=8)
    got = M.mean_average_precision(qc.astype(np.float32), dc.astype(np.float32), ql, dl, distance="cosine")
    assert got == pytest.approx(ref_map(qc, dc, ql, dl, None, "cosine"), abs=1e-12)


@ALL_PATHS
def test_inner_product_ranks_by_descending_dot_product(monkeypatch, path):
    # Rows of different norms: the inner-product ranking differs from the cosine one, and equal products
    # (rows with entries in {0, 1/4, 1/2}: exact in float32) tie and are decided by the database index.
    with_path(monkeypatch, path)
    rng = np.random.default_rng(11)
    qc = rng.integers(0, 3, size=(14, 5)).astype(np.float32) / 4
    dc = rng.integers(0, 3, size=(70, 5)).astype(np.float32) / 4
    _, _, ql, dl = tie_heavy(num_query=14, num_database=70, seed=11)
    for top_k in (None, 14):
        got = M.mean_average_precision(qc, dc, ql, dl, top_k=top_k, distance="inner_product")
        assert got == pytest.approx(ref_map(qc, dc, ql, dl, top_k, "inner_product"), abs=1e-12)
    cosine = M.mean_average_precision(qc + 1e-3, dc + 1e-3, ql, dl, distance="cosine")
    assert cosine != pytest.approx(
        M.mean_average_precision(qc, dc, ql, dl, distance="inner_product"), abs=1e-6
    )


def test_inner_product_keeps_the_norm_of_database_items():
    # One query, a long relevant item (product 2) and a short irrelevant one at a smaller angle (product 1):
    # by inner product the relevant item ranks first (AP 1), by cosine second (AP 1/2).
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    database = np.array([[2.0, 1.0], [1.0, 0.1]], dtype=np.float32)
    labels_q, labels_d = np.array([[1]]), np.array([[1], [0]])
    assert M.mean_average_precision(query, database, labels_q, labels_d, distance="inner_product") == 1.0
    assert M.mean_average_precision(query, database, labels_q, labels_d, distance="cosine") == 0.5


def test_score_directions_rejects_an_unknown_embedding_distance():
    qc, dc, ql, dl = random_problem(4, 10, 8, 3, seed=0)
    encoded = {
        "image_codes": qc,
        "text_codes": qc,
        "image_embeds": qc.astype(np.float32),
        "text_embeds": qc.astype(np.float32),
        "labels": ql,
    }
    with pytest.raises(ValueError, match="embedding_distance must be one of.*'euclidean'"):
        M.score_directions(encoded, encoded, 4, {}, embedding_distance="euclidean")


def test_benchmark_baselines_agree_with_library():
    qc, dc, ql, dl = random_problem(30, 400, 8, 6, seed=2)  # 8 bits: heavy ties
    ours = M.mean_average_precision(qc, dc, ql, dl)
    assert numpy_loop_map(qc, dc, ql, dl, stable=True) == pytest.approx(ours, abs=1e-12)
    assert python_loop_map(qc, dc, ql, dl) == pytest.approx(ours, abs=1e-12)
    assert ref_map(qc, dc, ql, dl) == pytest.approx(ours, abs=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Curves, P@H<=2, NDCG, one-pass report


@ALL_PATHS
def test_precision_recall_at_k(monkeypatch, path):
    with_path(monkeypatch, path)
    qc, dc, ql, dl = tie_heavy()
    ks = [1, 5, 23, 100, 157]
    got = M.precision_recall_at_k(qc, dc, ql, dl, k_values=ks, chunk_size=5)
    precision, recall = ref_precision_recall_at_k(qc, dc, ql, dl, ks)
    assert got["k"] == ks
    assert got["precision"] == pytest.approx(precision, abs=1e-12)
    assert got["recall"] == pytest.approx(recall, abs=1e-12)


@ALL_PATHS
def test_pr_curve_and_precision_at_radius(monkeypatch, path):
    with_path(monkeypatch, path)
    qc, dc, ql, dl = tie_heavy()
    got = M.pr_curve_hamming(qc, dc, ql, dl, chunk_size=4)
    precision, recall = ref_pr_curve(qc, dc, ql, dl)
    assert got["radius"] == list(range(9))
    assert got["precision"] == pytest.approx(precision, abs=1e-12)
    assert got["recall"] == pytest.approx(recall, abs=1e-12)
    assert M.precision_at_hamming_radius(qc, dc, ql, dl) == pytest.approx(precision[2], abs=1e-12)
    assert M.precision_at_hamming_radius(qc, dc, ql, dl, radius=0) == pytest.approx(precision[0], abs=1e-12)


@ALL_PATHS
def test_ndcg_graded_relevance(monkeypatch, path):
    with_path(monkeypatch, path)
    qc, dc, ql, dl = tie_heavy()
    ql[5:] = np.random.default_rng(4).random(ql[5:].shape) < 0.6  # several shared labels: graded gains
    for top_k in (None, 10, len(qc)):
        got = M.ndcg_at_k(qc, dc, ql, dl, top_k=top_k, chunk_size=6)
        assert got == pytest.approx(ref_ndcg(qc, dc, ql, dl, top_k), abs=1e-12)
    rng = np.random.default_rng(9)
    qe, de = exact_cosine_rows(rng, len(qc)), exact_cosine_rows(rng, len(dc))
    got = M.ndcg_at_k(qe, de, ql, dl, top_k=10, distance="cosine")
    assert got == pytest.approx(ref_ndcg(qe, de, ql, dl, 10, "cosine"), abs=1e-12)


def test_retrieval_metrics_one_pass_matches_separate_functions():
    qc, dc, ql, dl = tie_heavy()
    ks = [1, 10, 157]
    report = M.retrieval_metrics(qc, dc, ql, dl, top_k=len(qc), k_values=ks, chunk_size=8)
    assert report["k"] == len(qc)
    assert report["map_all"] == pytest.approx(ref_map(qc, dc, ql, dl), abs=1e-12)
    assert report["map_at_k"] == pytest.approx(ref_map(qc, dc, ql, dl, len(qc)), abs=1e-12)
    separate = M.precision_recall_at_k(qc, dc, ql, dl, k_values=ks)
    assert report["precision_at_k"]["k"] == ks
    for key in ("precision", "recall"):
        assert report["precision_at_k"][key] == pytest.approx(separate[key], abs=1e-12)
        assert report["pr_curve"][key] == pytest.approx(M.pr_curve_hamming(qc, dc, ql, dl)[key], abs=1e-12)
    assert report["precision_at_radius_2"] == report["pr_curve"]["precision"][2]
    cosine = M.retrieval_metrics(qc.astype(np.float32), dc.astype(np.float32), ql, dl, distance="cosine")
    assert "pr_curve" not in cosine and cosine["k"] == len(dc)
    assert M.default_k_values(157)[0] == 1 and M.default_k_values(157)[-1] == 157


@pytest.mark.parametrize("path", ["compiled", "bit-path"])
@pytest.mark.parametrize("threads", ["2", "3", "auto"])
def test_thread_count_gives_bit_identical_results(monkeypatch, path, threads):
    # compiled: numba threads over blocks of queries; bit-path: the chunk thread pool
    with_path(monkeypatch, path)
    qc, dc, ql, dl = tie_heavy(num_query=41, num_database=157, seed=3)
    ks = [1, 10, 157]
    monkeypatch.setenv("CRCGS_MAP_THREADS", "1")
    serial = M.retrieval_metrics(qc, dc, ql, dl, top_k=len(qc), k_values=ks, chunk_size=4)
    serial_ndcg = M.ndcg_at_k(qc, dc, ql, dl, top_k=10, chunk_size=4)
    monkeypatch.setenv("CRCGS_MAP_THREADS", threads)
    assert M.retrieval_metrics(qc, dc, ql, dl, top_k=len(qc), k_values=ks, chunk_size=4) == serial
    assert M.ndcg_at_k(qc, dc, ql, dl, top_k=10, chunk_size=4) == serial_ndcg
    assert serial["map_all"] == pytest.approx(ref_map(qc, dc, ql, dl), abs=1e-12)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_chunk_thread_pool_setting_is_validated(monkeypatch, value):
    monkeypatch.setenv("CRCGS_MAP_THREADS", value)
    qc, dc, ql, dl = tie_heavy()
    with pytest.raises(ValueError, match="CRCGS_MAP_THREADS"):
        M.mean_average_precision(qc, dc, ql, dl)


# ------------------------------------------------------------------------------------------------------------
# The compiled route: bit-identical to the loop references (same float operations in the same order)


def varied_problem(num_bits, num_labels, single_label, seed, num_query=7, num_database=70):
    """Ties (duplicated codes, a query equal to an item), an unlabelled query (R = 0) and unlabelled
    database rows (never relevant)."""
    rng = np.random.default_rng(seed)
    qc = rng.choice([-1, 1], size=(num_query, num_bits)).astype(np.int8)
    dc = rng.choice([-1, 1], size=(num_database, num_bits)).astype(np.int8)
    dc[40:60] = dc[:20]
    qc[0] = dc[5]
    if single_label:
        ql = np.eye(num_labels, dtype=np.int8)[rng.integers(0, num_labels, size=num_query)]
        dl = np.eye(num_labels, dtype=np.int8)[rng.integers(0, num_labels, size=num_database)]
    else:
        ql = (rng.random((num_query, num_labels)) < 4 / num_labels).astype(np.int8)
        dl = (rng.random((num_database, num_labels)) < 4 / num_labels).astype(np.int8)
    ql[1] = 0
    dl[::7] = 0
    return qc, dc, ql, dl


@pytest.mark.parametrize("num_bits", [8, 16, 17, 32, 63, 64, 100, 128])
@pytest.mark.parametrize("labels", ["single-5", "multi-5", "multi-64", "multi-70"])
def test_compiled_hamming_is_bit_identical_to_loops(num_bits, labels):
    kind, num_labels = labels.split("-")
    qc, dc, ql, dl = varied_problem(num_bits, int(num_labels), kind == "single", seed=num_bits)
    n = len(dc)
    assert M._compiled_kernels() is not None
    for top_k in (None, 1, 10, n):
        assert M.mean_average_precision(qc, dc, ql, dl, top_k=top_k) == ref_map(qc, dc, ql, dl, top_k)
    ks = [1, 5, 10, n]
    report = M.retrieval_metrics(qc, dc, ql, dl, top_k=10, k_values=ks)
    precision, recall = ref_precision_recall_at_k(qc, dc, ql, dl, ks)
    assert report["precision_at_k"] == {"k": ks, "precision": precision, "recall": recall}
    ball_precision, ball_recall = ref_pr_curve(qc, dc, ql, dl)
    assert report["pr_curve"] == {
        "radius": list(range(num_bits + 1)),
        "precision": ball_precision,
        "recall": ball_recall,
    }
    assert M.pr_curve_hamming(qc, dc, ql, dl) == report["pr_curve"]
    assert M.precision_recall_at_k(qc, dc, ql, dl, k_values=ks) == report["precision_at_k"]
    assert (report["map_all"], report["map_at_k"]) == (ref_map(qc, dc, ql, dl), ref_map(qc, dc, ql, dl, 10))


def test_compiled_route_agrees_with_numpy_route(monkeypatch):
    # Same rankings and counts; the numpy route sums with BLAS / torch reductions (another float order).
    qc, dc, ql, dl = random_problem(40, 900, 16, 10, seed=4)
    compiled = M.retrieval_metrics(qc, dc, ql, dl, top_k=50, k_values=[1, 50, 900])
    monkeypatch.setattr(M, "_compiled_kernels", lambda: None)
    numpy_route = M.retrieval_metrics(qc, dc, ql, dl, top_k=50, k_values=[1, 50, 900], chunk_size=7)
    for key in ("map_all", "map_at_k", "precision_at_radius_2"):
        assert compiled[key] == pytest.approx(numpy_route[key], abs=1e-14)
    for curve in ("precision_at_k", "pr_curve"):
        for key in ("precision", "recall"):
            assert compiled[curve][key] == pytest.approx(numpy_route[curve][key], abs=1e-14)


def test_compiled_cosine_ranks_like_a_stable_sort():
    # float32 distances with exact ties, negative values, -0.0 next to 0.0 and tiny magnitudes
    kernels = M._compiled_kernels()
    rng = np.random.default_rng(11)
    values = np.array([-1.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, np.nextafter(0.25, 1), 1.0, 2.0], np.float32)
    distances = rng.choice(values, size=(6, 300)).astype(np.float32)
    distances[3] = rng.normal(size=300).astype(np.float32)
    distances[4] = 0.5  # a single key: every radix pass is skipped
    ql = (rng.random((6, 70)) < 0.1).astype(bool)
    dl = (rng.random((300, 70)) < 0.1).astype(bool)
    ap_ks, ks = np.array([300, 17]), np.array([1, 17, 300])
    ap, precision, _ = kernels.cosine_rows(
        distances,
        M._pack_words(torch.from_numpy(ql)),
        np.ascontiguousarray(M._pack_words(torch.from_numpy(dl)).T),
        ap_ks,
        ks,
        2,
    )
    for q in range(6):
        relevant = (ql[q] & dl).any(axis=1)[np.argsort(distances[q], kind="stable")]
        for a, k in enumerate(ap_ks):
            hits, total = 0, 0.0
            for n in range(1, k + 1):
                if relevant[n - 1]:
                    hits += 1
                    total += hits / n
            assert ap[q, a] == (total / hits if hits else 0.0)
        assert precision[q].tolist() == [int(relevant[:k].sum()) / k for k in ks]


def test_compiled_thread_count_follows_numba_the_setting_and_the_load(monkeypatch):
    import numba

    qc, dc, ql, dl = tie_heavy()
    most = numba.config.NUMBA_NUM_THREADS
    monkeypatch.delenv("CRCGS_MAP_THREADS", raising=False)
    monkeypatch.setattr(M.os, "sched_getaffinity", lambda pid: set(range(most)))
    monkeypatch.setattr(M.os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # only the caller runs
    assert M._compiled_threads() == most
    monkeypatch.setattr(M.os, "getloadavg", lambda: (most + 3.0, 1.0, 1.0))  # every core busy
    assert M._compiled_threads() == 1
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        monkeypatch.setattr(M.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert M._compiled_threads() == 1  # a lowered numba.set_num_threads is respected
        M.mean_average_precision(qc, dc, ql, dl)
        assert numba.get_num_threads() == 1  # and restored after a call
    finally:
        numba.set_num_threads(previous)
    for setting, expected in (("1", 1), ("auto", most), (str(most + 5), most)):
        monkeypatch.setenv("CRCGS_MAP_THREADS", setting)
        assert M._compiled_threads() == expected


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    kernels = M._compiled_kernels()
    real_njit, calls = kernels.numba.njit, []

    def njit(*args, cache=False, **kwargs):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function: no locator available for file")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(kernels.numba, "njit", njit)
    double = kernels._jit()(lambda x: 2 * x)
    assert double(21) == 42 and calls == [True, False]


def test_memory_budget_sets_chunk_size():
    assert M._chunk_size(1000, M._BYTES_PER_PAIR * 1000 * 7, None) == 7
    assert M._chunk_size(10**9, 1, None) == 1
    assert M._chunk_size(1000, 1, 3) == 3


# ------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "database_codes": a["database_codes"][:, :7]}, "same width"),
        (lambda a: {**a, "database_labels": a["database_labels"][:, :4]}, "same number of labels"),
        (
            lambda a: {**a, "query_codes": a["query_codes"][:0], "query_labels": a["query_labels"][:0]},
            "query_codes is empty",
        ),
        (lambda a: {**a, "query_codes": a["query_codes"] * 0.5}, "query_codes"),
        (
            lambda a: {
                **a,
                "database_codes": np.concatenate([a["database_codes"][:1] * 0, a["database_codes"][1:]]),
            },
            "database_codes: .*mix",
        ),
        (lambda a: {**a, "query_labels": a["query_labels"][:5]}, "query_labels must have one row per row"),
        (lambda a: {**a, "database_labels": a["database_labels"] * 2}, "database_labels must be multi-hot"),
        (lambda a: {**a, "distance": "euclidean"}, "distance must be one of"),
        (lambda a: {**a, "top_k": 0}, "top_k"),
        (lambda a: {**a, "top_k": 10_000}, "top_k"),
        (lambda a: {**a, "query_codes": a["query_codes"][0]}, "query_codes must be 2-D"),
        (lambda a: {**a, "query_codes": a["query_codes"].tolist()}, "query_codes must be a torch.Tensor"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(change, message):
    qc, dc, ql, dl = tie_heavy()
    args = {"query_codes": qc, "database_codes": dc, "query_labels": ql, "database_labels": dl}
    with pytest.raises(ValueError, match=message):
        M.mean_average_precision(**change(args))


def test_nan_and_non_binary_inputs():
    qc, dc, ql, dl = tie_heavy()
    embeddings = qc.astype(np.float32)
    embeddings[2, 3] = np.nan
    with pytest.raises(ValueError, match="query_codes contains NaN"):
        M.mean_average_precision(embeddings, dc.astype(np.float32), ql, dl, distance="cosine")
    with pytest.raises(ValueError, match="query_codes contains NaN"):
        M.mean_average_precision(embeddings, dc, ql, dl)
    with pytest.raises(ValueError, match="database_codes.*distance='cosine'"):
        M.mean_average_precision(qc, np.tanh(dc * 0.3), ql, dl)
    labels = ql.astype(np.float32)
    labels[0, 0] = np.nan
    with pytest.raises(ValueError, match="query_labels must be multi-hot"):
        M.mean_average_precision(qc, dc, labels, dl)
    with pytest.raises(ValueError, match="radius"):
        M.precision_at_hamming_radius(qc, dc, ql, dl, radius=-1)
    with pytest.raises(ValueError, match="k_values"):
        M.precision_recall_at_k(qc, dc, ql, dl, k_values=[0])
