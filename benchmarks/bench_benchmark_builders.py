r"""Speed of the hot steps of the MIRFLICKR-25K / NUS-WIDE / MS-COCO builders, each against a plain baseline.

1. Vocabulary + bag of words (``_bag_of_words.build_bag_of_words``: pandas factorize, bincount, scipy
   sparse) against the textbook loop (``collections.Counter``, then a Python loop filling a dense row per
   document), on COCO-like captions (``--captions`` random captions of 8-14 words from a Zipf vocabulary);
   the two results are checked equal.
2. NUS-WIDE ``AllTags1k.txt``-style text matrices: ``read_integer_matrix`` (``numpy.loadtxt``, C parser)
   against ``pandas.read_csv(sep=r"\s+")``, on ``--tag_rows`` x 1000 tab-separated 0/1 values; checked equal.
3. MATLAB v7.3 ``IAll`` images: ``MatlabImages`` (block reads of HDF5 + PNG encoding) in images/s on
   ``--images`` random 224 x 224 x 3 images.

    .venv/bin/python -m benchmarks.bench_benchmark_builders
    .venv/bin/python -m benchmarks.bench_benchmark_builders --captions 600000 --tag_rows 269648

The machine may be shared: the ratios within one run are the point, absolute times are indicative.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from dataset_scripts._bag_of_words import build_bag_of_words
from dataset_scripts._benchmark_readers import MatlabImages
from dataset_scripts._raw_formats import read_integer_matrix


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _loop_bag_of_words(docs: list[list[str]], max_size: int) -> tuple[list[str], np.ndarray]:
    counts = Counter(token for doc in docs for token in doc)
    vocabulary = sorted(counts, key=lambda t: (-counts[t], t))[:max_size]
    column = {word: j for j, word in enumerate(vocabulary)}
    matrix = np.zeros((len(docs), len(vocabulary)), dtype=np.float32)
    for i, doc in enumerate(docs):
        for token in doc:
            j = column.get(token)
            if j is not None:
                matrix[i, j] += 1
    return vocabulary, matrix


def bench_bag_of_words(num_captions: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{k}" for k in range(20000)], dtype=object)
    probs = 1.0 / np.arange(1, words.size + 1) ** 1.1
    lengths = rng.integers(8, 15, num_captions)
    flat = words[rng.choice(words.size, size=int(lengths.sum()), p=probs / probs.sum())]
    docs = [part.tolist() for part in np.split(flat, np.cumsum(lengths)[:-1])]
    fast, t_fast = _timed(lambda: build_bag_of_words(docs, max_size=2000, frequency="tokens", binary=False))
    (vocabulary, dense), t_loop = _timed(lambda: _loop_bag_of_words(docs, 2000))
    assert fast.vocabulary == vocabulary and np.array_equal(fast.matrix.toarray(), dense)
    print(
        f"bag of words, {num_captions} captions, {flat.size} tokens, vocab 2000: "
        f"vectorized {t_fast:.2f} s, loop {t_loop:.2f} s, speed-up x{t_loop / t_fast:.1f}"
    )


def bench_text_matrix(rows: int, seed: int) -> None:
    values = (np.random.default_rng(seed).random((rows, 1000)) < 0.01).astype(np.uint8)
    raw = "".join("\t".join(map(str, row)) + "\n" for row in values.tolist()).encode()
    fast, t_fast = _timed(lambda: read_integer_matrix(raw, source="AllTags1k.txt"))
    slow, t_slow = _timed(
        lambda: pd.read_csv(io.BytesIO(raw), sep=r"\s+", header=None, dtype=np.uint8, engine="c").to_numpy()
    )
    assert np.array_equal(fast, values) and np.array_equal(slow, values)
    print(
        f"AllTags1k-style matrix, {rows} x 1000 ({len(raw) / 2**20:.0f} MiB): read_integer_matrix {t_fast:.2f} s, "
        f"pandas.read_csv {t_slow:.2f} s, speed-up x{t_slow / t_fast:.1f}"
    )


def bench_images(num_images: int, seed: int) -> None:
    images = np.random.default_rng(seed).integers(0, 256, (num_images, 224, 224, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iall.mat"
        with h5py.File(path, "w") as handle:  # MATLAB v7.3 layout: (N, C, W, H) as h5py sees it
            handle.create_dataset("IAll", data=images.transpose(0, 3, 2, 1)).attrs["MATLAB_class"] = b"uint8"
        reader = MatlabImages(tmp, "iall.mat", "IAll", dataset="bench")
        encoded, seconds = _timed(lambda: [reader[i]["bytes"] for i in range(len(reader))])
        reader.close()
    size = sum(map(len, encoded)) / len(encoded) / 1024
    print(
        f"MATLAB IAll -> PNG, {num_images} random 224x224x3 images: {num_images / seconds:.0f} images/s "
        f"({size:.0f} KiB per PNG; random pixels are the worst case for PNG size)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=100000)
    parser.add_argument("--tag_rows", type=int, default=20000)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bench_bag_of_words(args.captions, args.seed)
    bench_text_matrix(args.tag_rows, args.seed)
    bench_images(args.images, args.seed)


if __name__ == "__main__":
    main()
