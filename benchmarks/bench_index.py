"""Search throughput and recall of :class:`modeling_crcgs.retrieval.index.HashIndex` on packed 64-bit codes.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_index                       # 1M random codes, k=10
    .venv/bin/python -m benchmarks.bench_index --distribution clustered --output_json bench.json

1. Exact search: faiss ``IndexBinaryFlat`` (kind ``"flat"``) queries/s against a numpy brute force in the
   same process: XOR of packed rows + popcount through a 256-entry byte lookup table (the issue's
   baseline) and, as a stronger baseline, ``np.bitwise_count`` on ``uint64`` words; top-k by
   ``argpartition`` then a stable sort of the k. Both sides return the same distances (checked).
2. Approximate kinds against exact: recall@k of ``"ivf"`` at several ``nprobe`` and of ``"hash"``
   (multi-index hashing) at several ``nflip``. Recall counts a returned item as correct when its distance
   is at most the exact k-th distance (items tied at that distance are interchangeable); the plain id
   overlap with the exact top-k is printed too.

Random codes are the worst case for approximate indexes (no cluster structure); ``--distribution
clustered`` draws codes around 1000 centres (each bit flipped with probability 0.1), closer to learned
hash codes. Timings are wall-clock on a shared machine: compare the ratios within one run. faiss runs on one
OpenMP thread by default (``--faiss_threads``), like numpy; exact search is also timed on every core.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from modeling_crcgs.retrieval.index import HashIndex

_BYTE_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def make_codes(n: int, code_bytes: int, distribution: str, rng: np.random.Generator) -> np.ndarray:
    """Packed codes: uniform random bits, or noisy copies of 1000 random centres (bit-flip rate 0.1)."""
    if distribution == "random":
        return rng.integers(0, 256, size=(n, code_bytes), dtype=np.uint8)
    centres = rng.integers(0, 256, size=(1000, code_bytes), dtype=np.uint8)
    flips = np.packbits(rng.random((n, code_bytes * 8)) < 0.1, axis=1)
    return centres[rng.integers(0, len(centres), size=n)] ^ flips


def numpy_search_lut(database: np.ndarray, queries: np.ndarray, k: int, chunk: int = 4) -> np.ndarray:
    """Top-k Hamming distances by XOR + byte-popcount lookup table, ``chunk`` queries at a time."""
    out = np.empty((len(queries), k), dtype=np.int32)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        dist = _BYTE_POPCOUNT[q[:, None, :] ^ database[None, :, :]].sum(axis=-1, dtype=np.int32)  # (c, n)
        out[start : start + chunk] = _top_k(dist, k)
    return out


def numpy_search_bitcount(database: np.ndarray, queries: np.ndarray, k: int, chunk: int = 4) -> np.ndarray:
    """Top-k Hamming distances by XOR of uint64 words + ``np.bitwise_count``."""
    db64, q64 = database.view(np.uint64), queries.view(np.uint64)
    out = np.empty((len(queries), k), dtype=np.int32)
    for start in range(0, len(queries), chunk):
        xor = q64[start : start + chunk, None, :] ^ db64[None, :, :]
        out[start : start + chunk] = _top_k(np.bitwise_count(xor).sum(axis=-1, dtype=np.int32), k)
    return out


def _top_k(dist: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    return np.sort(np.take_along_axis(dist, part, axis=1), axis=1)


def queries_per_second(fn, queries: np.ndarray) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(queries)
    return len(queries) / (time.perf_counter() - start), result


def recall(exact_distances: np.ndarray, ids: np.ndarray, distances: np.ndarray, exact_ids: np.ndarray):
    """(tie-aware recall@k, id-overlap recall@k) of an approximate result against the exact one."""
    kth = exact_distances[:, -1:]
    tie_aware = float(((ids >= 0) & (distances <= kth)).sum() / ids.size)
    found = (ids[:, :, None] == exact_ids[:, None, :]).any(axis=-1) & (ids >= 0)  # (nq, k)
    return tie_aware, float(found.mean())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_codes", type=int, default=1_000_000)
    parser.add_argument("--hash_bits", type=int, default=64)
    parser.add_argument(
        "--num_queries", type=int, default=2000, help="queries for faiss and approximate kinds"
    )
    parser.add_argument("--num_numpy_queries", type=int, default=40, help="queries for the numpy baselines")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--distribution", choices=("random", "clustered"), default="random")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--nflip", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--nhash", type=int, default=1)
    parser.add_argument(
        "--faiss_threads",
        type=int,
        default=1,
        help="OpenMP threads for faiss (default 1, like numpy; exact search is also timed with all threads)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()
    if args.hash_bits % 64:
        parser.error("--hash_bits must be a multiple of 64 (the uint64 baseline views codes as words)")
    return args


def bench_exact(
    args: argparse.Namespace, database: np.ndarray, queries: np.ndarray, all_threads: int
) -> tuple[dict, tuple]:
    """faiss flat vs numpy brute force (same queries prefix, same process): the figures and flat's result."""
    import faiss

    flat = HashIndex.from_codes(database, kind="flat")
    qps_flat, (exact_ids, exact_dist) = queries_per_second(lambda q: flat.search(q, args.k), queries)
    few = queries[: args.num_numpy_queries]
    qps_lut, lut_dist = queries_per_second(lambda q: numpy_search_lut(database, q, args.k), few)
    qps_bc, bc_dist = queries_per_second(lambda q: numpy_search_bitcount(database, q, args.k), few)
    if not (np.array_equal(lut_dist, exact_dist[: len(few)]) and np.array_equal(bc_dist, lut_dist)):
        raise RuntimeError("numpy brute force and faiss disagree on the top-k distances")
    # with every core for faiss too (OpenMP threads slow down badly when other processes hold the cores)
    faiss.omp_set_num_threads(all_threads)
    qps_flat_all, _ = queries_per_second(lambda q: flat.search(q, args.k), queries)
    faiss.omp_set_num_threads(args.faiss_threads)
    exact = {
        "faiss_flat_qps": qps_flat,
        f"faiss_flat_qps_{all_threads}_threads": qps_flat_all,
        "numpy_lut_qps": qps_lut,
        "numpy_bitwise_count_qps": qps_bc,
        "speedup_vs_lut": qps_flat / qps_lut,
        "speedup_vs_bitwise_count": qps_flat / qps_bc,
    }
    for label, qps in ((f"{args.faiss_threads} thr", qps_flat), (f"{all_threads} thr", qps_flat_all)):
        print(
            f"exact  faiss flat ({label}) {qps:10.1f} q/s | numpy LUT {qps_lut:8.1f} q/s (x{qps / qps_lut:.1f}) "
            f"| numpy bitwise_count {qps_bc:8.1f} q/s (x{qps / qps_bc:.1f})"
        )
    return exact, (exact_ids, exact_dist)


def bench_approximate(
    args: argparse.Namespace, database: np.ndarray, queries: np.ndarray, exact: tuple, qps_flat: float
) -> list[dict]:
    """The approximate kinds (ivf over --nprobe, hash over --nflip) against the exact result."""
    exact_ids, exact_dist = exact

    def measure(index: HashIndex, **setting: int) -> dict:
        index.set_search_params(**setting)
        qps, (ids, dist) = queries_per_second(lambda q: index.search(q, args.k), queries)
        tie_aware, overlap = recall(exact_dist, ids, dist, exact_ids)
        return {"kind": index.kind, **index.params, "qps": qps, "recall": tie_aware, "id_overlap": overlap}

    start = time.perf_counter()
    ivf = HashIndex.from_codes(database, kind="ivf")
    print(f"ivf    nlist={ivf.params['nlist']} built in {time.perf_counter() - start:.1f} s")
    approx = [measure(ivf, nprobe=nprobe) for nprobe in args.nprobe]
    start = time.perf_counter()
    hashed = HashIndex.from_codes(database, kind="hash", nhash=args.nhash)
    print(
        f"hash   nhash={args.nhash} key bits={hashed.params['hash_key_bits']} built in "
        f"{time.perf_counter() - start:.1f} s"
    )
    approx += [measure(hashed, nflip=nflip) for nflip in args.nflip]
    for row in approx:
        setting = f"nprobe={row['nprobe']:<4d}" if row["kind"] == "ivf" else f"nflip={row['nflip']:<5d}"
        print(
            f"{row['kind']:<6s} {setting} {row['qps']:10.1f} q/s (x{row['qps'] / qps_flat:5.1f} vs flat) "
            f"recall@{args.k}={row['recall']:.3f} id-overlap={row['id_overlap']:.3f}"
        )
    return approx


def main() -> None:
    args = parse_args()
    import faiss

    all_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(args.faiss_threads)
    rng = np.random.default_rng(args.seed)
    code_bytes = args.hash_bits // 8
    # queries are drawn like the database (same centres when clustered) but are not in it
    codes = make_codes(args.num_codes + args.num_queries, code_bytes, args.distribution, rng)
    database, queries = codes[: args.num_codes], codes[args.num_codes :]
    results: dict = {
        "num_codes": args.num_codes,
        "hash_bits": args.hash_bits,
        "k": args.k,
        "distribution": args.distribution,
        "faiss_threads": args.faiss_threads,
    }
    print(
        f"{args.num_codes} {args.distribution} {args.hash_bits}-bit codes, k={args.k}, "
        f"faiss threads={results['faiss_threads']}"
    )
    # 1. exact: faiss flat vs numpy brute force; 2. approximate kinds vs exact
    results["exact"], exact = bench_exact(args, database, queries, all_threads)
    results["approximate"] = bench_approximate(
        args, database, queries, exact, results["exact"]["faiss_flat_qps"]
    )
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
