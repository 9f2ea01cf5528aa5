r"""The splits of the three benchmark builders against the CRCGS release's algorithms, on fixtures in the real formats.

For MIRFLICKR-25K (24 concepts), NUS-WIDE (21 concepts) and MS-COCO (80 categories, plus the extra
81st column of the release's ``label.npy``), it writes a ``mat_features`` layout (MATLAB v5 ``XAll``,
sparse ``YAll``, ``LAll``) of synthetic multi-label data: each item has ``1 + Poisson(1.2)`` labels
(at most 6) drawn with Zipf-like class frequencies; the NUS-WIDE fixture also has rows without a label
and rows with an empty bag of words. Then, for each of ``--seeds`` seeds:

* ours: ``load_crcgs_dataset(<name>, config_name=<mat_features config>, seed=s)`` with the default
  split recipe (MIRFLICKR 2,000 / 2,000 / 10,000 random; NUS-WIDE 100 / 100 / 500 per class by the
  release's rarest-first sampler; MS-COCO 5,000 / 5,000 / 10,000 random), figures read from the
  prepared splits;
* release: the release's algorithms re-run here on the same arrays, as plain loops over classes with
  numpy's legacy generator (``np.random.RandomState(s)``, the global one's algorithm): ``split_flickr2_dataset`` (permutation;
  train ``[:10000]``, query ``[10000:12000]``, validation ``[12000:14000]``), ``split_nus_dataset``
  (rows with a non-empty bag of words; ``sample()`` three times: query, validation, train) and
  ``get_coco_loader(from_old=False)`` (permutation; train ``[:10000]``, query ``[10000:15000]``,
  validation ``[15000:20000]``; last label column removed). The database is every non-query row
  (non-empty bag of words for NUS-WIDE), as in ours;
* NUS-WIDE only, previous: the sampler this package used before (each row assigned to ONE of its
  labels uniformly at random, then per assigned class 100 / 100 / 500), for comparison.

Printed per dataset: split sizes, mean labels per item in query / train / database, and the share of
relevant database items (mean over queries of the fraction of database items sharing a label with
the query), averaged over the seeds, with the ratio ours / release.

    .venv/bin/python -m benchmarks.bench_benchmark_splits
    .venv/bin/python -m benchmarks.bench_benchmark_splits --seeds 5 --nus_rows 120000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from dataset_scripts import load_crcgs_dataset

SPLIT_NAMES = ("query", "validation", "train", "database")


# ---------------------------------------------------------------------------------------- fixtures


def _multi_label(rng: np.random.Generator, rows: int, classes: int, exponent: float) -> np.ndarray:
    """(rows, classes) int8: 1 + Poisson(1.2) labels per row (<= 6), classes with weight 1 / (c + 3)^exponent."""
    weights = 1.0 / (np.arange(classes) + 3.0) ** exponent
    counts = np.minimum(1 + rng.poisson(1.2, rows), 6)
    keys = np.log(weights / weights.sum()) + rng.gumbel(size=(rows, classes))  # Gumbel top-k: no replacement
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return (rank < counts[:, None]).astype(np.int8)


def _write_mat_features(folder: Path, prefix: str, labels: np.ndarray, bow: sp.csr_matrix, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    features = np.random.default_rng(seed).normal(size=(labels.shape[0], 8)).astype(np.float32)
    scipy.io.savemat(folder / f"{prefix}-xall.mat", {"XAll": features}, format="5")
    scipy.io.savemat(folder / f"{prefix}-yall.mat", {"YAll": bow.astype(np.float64).tocsc()}, format="5")
    scipy.io.savemat(folder / f"{prefix}-lall.mat", {"LAll": labels.astype(np.float64)}, format="5")


def _bag_of_words(rng: np.random.Generator, rows: int, vocab: int, empty: np.ndarray) -> sp.csr_matrix:
    bow = sp.random(rows, vocab, density=0.08, format="csr", random_state=rng, dtype=np.float64)
    bow.data[:] = 1.0
    bow = bow.tolil()
    bow[:, 0] = 1.0  # no accidental empty row
    if len(empty):
        bow[empty] = 0.0
    return bow.tocsr()


# ------------------------------------------------------------------------------ release algorithms


def _release_permutation(
    rows: int, seed: int, train: int, query: int, validation: int
) -> dict[str, np.ndarray]:
    legacy = np.random.RandomState(seed)  # the release's generator: numpy's legacy Mersenne Twister
    order = np.arange(rows)
    legacy.shuffle(order)
    return {
        "train": order[:train],
        "query": order[train : train + query],
        "validation": order[train + query : train + query + validation],
    }


def _release_nus(
    label: np.ndarray, bow: sp.csr_matrix, seed: int, per_class=(100, 100, 500)
) -> dict[str, np.ndarray]:
    """``split_nus_dataset``: rows with a non-empty bag of words, then ``sample()`` for query, validation, train."""
    legacy = np.random.RandomState(seed)
    data_list = np.flatnonzero(np.diff(bow.indptr) > 0)

    def sample(source_list: np.ndarray, per: int) -> np.ndarray:
        order = np.argsort(label[source_list].sum(axis=0))
        drawn = []
        for c in order:  # the release's loop over classes
            filtered = source_list[label[source_list][:, c] == 1]
            picked = legacy.choice(filtered, per, replace=False)
            drawn.append(picked)
            source_list = np.setdiff1d(source_list, picked)
        return np.concatenate(drawn)

    out = {}
    for name, per in zip(("query", "validation", "train"), per_class, strict=True):
        out[name] = sample(data_list, per)
        data_list = np.setdiff1d(data_list, out[name])
    return out


def _previous_nus(
    label: np.ndarray, pool: np.ndarray, seed: int, per_class=(100, 100, 500)
) -> dict[str, np.ndarray]:
    """This package's previous sampler: each labelled row of ``pool`` assigned to one of its labels at random."""
    rng = np.random.default_rng(seed)
    rows = pool[label[pool].any(axis=1)]
    assigned = np.argmax(np.where(label[rows] > 0, rng.random((rows.size, label.shape[1])), -1.0), axis=1)
    need = sum(per_class)
    counts = np.bincount(assigned, minlength=label.shape[1])
    if counts.min() < need:
        raise ValueError(f"needs {need} rows per class, the rarest assigned class has {counts.min()}")
    order = np.lexsort((rng.random(rows.size), assigned))
    rank = np.arange(rows.size) - np.searchsorted(assigned[order], assigned[order])
    cut = np.cumsum(per_class)
    ordered = rows[order]
    return {
        "query": ordered[rank < cut[0]],
        "validation": ordered[(rank >= cut[0]) & (rank < cut[1])],
        "train": ordered[(rank >= cut[1]) & (rank < cut[2])],
    }


# -------------------------------------------------------------------------------------- statistics


def _relevant_share(query: np.ndarray, database: np.ndarray, chunk: int = 1024) -> float:
    """Mean over queries of the fraction of database items sharing at least one label with the query."""
    db = database.astype(np.float32).T
    shares = [
        ((query[s : s + chunk].astype(np.float32) @ db) > 0).mean(axis=1) for s in range(0, len(query), chunk)
    ]
    return float(np.concatenate(shares).mean())


def _figures(labels_of: dict[str, np.ndarray]) -> dict[str, float]:
    out = {f"{name} size": float(len(labels_of[name])) for name in SPLIT_NAMES}
    for name in ("query", "train", "database"):
        out[f"labels/item {name}"] = float(labels_of[name].sum(axis=1).mean())
    out["relevant share of database"] = _relevant_share(labels_of["query"], labels_of["database"])
    return out


def _from_rows(label: np.ndarray, splits: dict[str, np.ndarray], pool: np.ndarray) -> dict[str, float]:
    database = np.setdiff1d(pool, splits["query"])
    return _figures({**{k: label[v] for k, v in splits.items()}, "database": label[database]})


def _from_dataset(ds) -> dict[str, float]:
    return _figures({name: np.asarray(ds[name]["labels"], dtype=np.int8) for name in SPLIT_NAMES})


def _ours(name: str, folder: Path, config_name: str, seeds: range) -> list[dict[str, float]]:
    """Split figures of our builder `name` on the fixture in `folder`, one run (own cache) per seed."""
    return [
        _from_dataset(
            load_crcgs_dataset(
                name,
                str(folder),
                cache_dir=str(folder.parent / f"c_{folder.name}{s}"),
                config_name=config_name,
                seed=s,
            )
        )
        for s in seeds
    ]


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def _cell(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.4f}"


def _print_table(title: str, columns: dict[str, dict[str, float] | str]) -> None:
    names = list(columns)
    print(f"\n### {title}\n")
    print("| figure | " + " | ".join(names) + " | ours / release |")
    print("|---" * (len(names) + 2) + "|")
    ours, release = columns["ours"], columns["release"]
    for key in ours:
        cells = [_cell(col[key]) if isinstance(col, dict) else col for col in columns.values()]
        print(f"| {key} | " + " | ".join(cells) + f" | {ours[key] / release[key]:.3f} |")


# --------------------------------------------------------------------------------------------- run


def bench_mirflickr(args: argparse.Namespace, rng: np.random.Generator, root: Path) -> None:
    seeds = range(args.seeds)
    # MIRFLICKR-25K: 24 concepts, every pair labelled with a non-empty bag of words (the .mat files).
    label = _multi_label(rng, args.flickr_rows, 24, 1.0)
    _write_mat_features(root / "mir", "mirflickr25k", label, _bag_of_words(rng, args.flickr_rows, 64, []), 0)
    pool = np.arange(args.flickr_rows)
    ours = _ours("mirflickr25k", root / "mir", "mat_features", seeds)
    release = [_from_rows(label, _release_permutation(len(label), s, 10000, 2000, 2000), pool) for s in seeds]
    _print_table(
        f"MIRFLICKR-25K ({args.flickr_rows} pairs, 24 concepts)",
        {"ours": _mean(ours), "release": _mean(release)},
    )


def bench_nus_wide(args: argparse.Namespace, rng: np.random.Generator, root: Path) -> None:
    seeds = range(args.seeds)
    # NUS-WIDE: 21 concepts; 2% of the rows unlabelled, 1% with an empty bag of words.
    label = _multi_label(rng, args.nus_rows, 21, 1.3)
    label[rng.choice(args.nus_rows, args.nus_rows // 50, replace=False)] = 0
    empty = rng.choice(args.nus_rows, args.nus_rows // 100, replace=False)
    bow = _bag_of_words(rng, args.nus_rows, 64, empty)
    _write_mat_features(root / "nus", "nus-wide-tc21", label, bow, 1)
    pool = np.flatnonzero(np.diff(bow.indptr) > 0)
    print(
        f"\nNUS-WIDE fixture: positives of the rarest concept: {int(label[pool].sum(axis=0).min())}; "
        f"pairs with an empty bag of words (dropped): {len(empty)}; "
        f"unlabelled pairs (kept, database only): {int((~label[pool].any(axis=1)).sum())}"
    )
    ours = _ours("nus_wide", root / "nus", "tc21_features", seeds)
    release = [_from_rows(label, _release_nus(label, bow, s), pool) for s in seeds]
    try:
        previous: dict[str, float] | str = _mean(
            [_from_rows(label, _previous_nus(label, pool, s), pool) for s in seeds]
        )
    except ValueError as error:
        previous = f"refused ({error})"
    _print_table(
        f"NUS-WIDE ({args.nus_rows} pairs, 21 concepts)",
        {"ours": _mean(ours), "release": _mean(release), "previous (one label per row)": previous},
    )


def bench_mscoco(args: argparse.Namespace, rng: np.random.Generator, root: Path) -> None:
    seeds = range(args.seeds)
    # MS-COCO: 80 categories plus the release's redundant 81st column (set on every row).
    label = np.concatenate(
        [_multi_label(rng, args.coco_rows, 80, 1.0), np.ones((args.coco_rows, 1), np.int8)], axis=1
    )
    _write_mat_features(root / "coco", "mscoco", label, _bag_of_words(rng, args.coco_rows, 64, []), 2)
    pool = np.arange(args.coco_rows)
    ours = _ours("mscoco", root / "coco", "mat_features", seeds)
    release = [
        _from_rows(label[:, :-1], _release_permutation(len(label), s, 10000, 5000, 5000), pool) for s in seeds
    ]
    with_extra = [
        _from_rows(label, _release_permutation(len(label), s, 10000, 5000, 5000), pool) for s in seeds
    ]
    _print_table(
        f"MS-COCO ({args.coco_rows} images, 80 categories + the release's 81st column)",
        {"ours": _mean(ours), "release": _mean(release), "81st column kept": _mean(with_extra)},
    )


def run(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1234)  # one stream, drawn in this order: the fixtures are those of before
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_mirflickr(args, rng, root)
        bench_nus_wide(args, rng, root)
        bench_mscoco(args, rng, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--flickr_rows", type=int, default=20015)
    parser.add_argument("--nus_rows", type=int, default=60000)
    parser.add_argument("--coco_rows", type=int, default=30000)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
