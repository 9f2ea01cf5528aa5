"""Time of a cached ``load_crcgs_dataset`` call (the prepared Arrow folder already exists) against the
work it must not repeat: reading the source (``_load_source``) and preparing from scratch.

For ``synthetic`` (default config: 4,000 generated pairs), a ``features`` folder (``--rows`` x
``--image_dim`` float32 ``image_features.npy``, binary ``text_features.npy``, multi-hot ``labels.npy``),
the same arrays as one MATLAB v5 ``features.mat`` (read whole by scipy) and an extracted NUS-WIDE
``tc21_official`` layout (``--nus_rows`` lines of ``AllTags1k.txt``, 81 ``Labels_<concept>.txt``, 64-d
``image_features.npy``), it prints, in one process and one temporary cache folder:

* ``prepare``: the first ``load_crcgs_dataset`` (reads the source, writes Arrow);
* ``cached load``: median of ``--repeats`` further calls with the same options, and how many times
  ``_load_source`` ran during them (0: the cached call took the info from ``dataset_info.json``);
* ``_load_source``: one call of the builder's source reader alone (what a cached call used to redo).

    .venv/bin/python -m benchmarks.bench_dataset_cache
    .venv/bin/python -m benchmarks.bench_dataset_cache --rows 100000 --image_dim 4096

The machine may be shared: compare the figures within one run; absolute times are indicative.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import scipy.io

from dataset_scripts import get_builder_class, load_crcgs_dataset


def _write_features_folder(folder: Path, rows: int, image_dim: int, text_dim: int, num_labels: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    np.save(folder / "image_features.npy", rng.random((rows, image_dim), dtype=np.float32))
    np.save(folder / "text_features.npy", (rng.random((rows, text_dim)) < 0.01).astype(np.float32))
    labels = (rng.random((rows, num_labels)) < 0.1).astype(np.int8)
    labels[np.arange(rows), rng.integers(0, num_labels, rows)] = 1
    np.save(folder / "labels.npy", labels)


def _write_nus_wide_official(folder: Path, rows: int, num_concepts: int = 81, vocab: int = 1000) -> None:
    rng = np.random.default_rng(0)
    (folder / "Groundtruth" / "AllLabels").mkdir(parents=True)
    (folder / "NUS_WID_Tags").mkdir(parents=True)
    labels = (rng.random((rows, num_concepts)) < 0.05).astype(np.int8)
    for concept in range(num_concepts):
        path = folder / "Groundtruth" / "AllLabels" / f"Labels_concept{concept:02d}.txt"
        path.write_text("\n".join(map(str, labels[:, concept].tolist())) + "\n")
    tags = (rng.random((rows, vocab)) < 0.01).astype(np.int8)
    lines = ["\t".join(row) for row in tags.astype(str).tolist()]
    (folder / "NUS_WID_Tags" / "AllTags1k.txt").write_text("\n".join(lines) + "\n")
    np.save(folder / "image_features.npy", rng.random((rows, 64), dtype=np.float32))


def bench(label: str, name: str, cache_dir: str, repeats: int, **kwargs: Any) -> None:
    builder_class = get_builder_class(name)
    calls = 0
    original = builder_class._load_source

    def counted(self):
        nonlocal calls
        calls += 1
        return original(self)

    start = time.perf_counter()
    first = load_crcgs_dataset(name, cache_dir=cache_dir, **kwargs)
    prepare = time.perf_counter() - start

    builder_class._load_source = counted
    try:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            again = load_crcgs_dataset(name, cache_dir=cache_dir, **kwargs)
            times.append(time.perf_counter() - start)
    finally:
        builder_class._load_source = original
    assert again["query"]["index"] == first["query"]["index"]

    builder = builder_class(cache_dir=cache_dir, **kwargs)
    start = time.perf_counter()
    builder._load_source()
    source = time.perf_counter() - start

    rows = sum(first[split].num_rows for split in ("query", "database"))
    print(
        f"{label:>21} ({rows} rows): prepare {prepare:7.3f} s | cached load {statistics.median(times):7.3f} s "
        f"(median of {repeats}; _load_source calls: {calls}) | _load_source alone {source:7.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--image_dim", type=int, default=4096)
    parser.add_argument("--text_dim", type=int, default=1000)
    parser.add_argument("--num_labels", type=int, default=81)
    parser.add_argument("--nus_rows", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/cache"
        bench("synthetic", "synthetic", cache, args.repeats)
        folder = Path(tmp) / "features"
        _write_features_folder(folder, args.rows, args.image_dim, args.text_dim, args.num_labels)
        sizes = {"num_query": 2000, "num_validation": 2000, "num_train": 10000}
        bench("features .npy", "features", cache, args.repeats, data_dir=str(folder), **sizes)
        mat = Path(tmp) / "features_mat"
        mat.mkdir()
        arrays = {
            name: np.load(folder / f"{name}.npy") for name in ("image_features", "text_features", "labels")
        }
        scipy.io.savemat(mat / "features.mat", arrays, format="5")
        del arrays
        bench("features .mat v5", "features", cache, args.repeats, data_dir=str(mat), **sizes)
        nus = Path(tmp) / "nus_wide"
        _write_nus_wide_official(nus, args.nus_rows)
        bench(
            "nus_wide tc21_official",
            "nus_wide",
            cache,
            args.repeats,
            data_dir=str(nus),
            config_name="tc21_official",
            query_per_class=10,
            validation_per_class=10,
            train_per_class=50,
        )


if __name__ == "__main__":
    main()
