"""Peak memory and time of preparing a NUS-WIDE-sized `features` dataset from .npy and MATLAB v7.3 files.

Writes ``rows`` x ``image_dim`` float32 image features (default 190,000 x 4096, ~3.1 GB), binary
``text_dim`` BoW and multi-hot labels into a temporary folder, once as three ``.npy`` files and once as
a MATLAB v7.3 ``.mat`` (HDF5, column-major like MATLAB writes it), prepares each through
``load_crcgs_dataset("features", ...)`` in a fresh child process (NUS-WIDE protocol sizes: 2,100 query,
2,100 validation, 10,500 train) and prints the child's peak resident memory (``getrusage`` maxrss and a
10 ms sampling thread) next to the size of the input, plus the wall time. Everything is deleted afterwards.

    python -m benchmarks.bench_dataset_memory                   # full size (needs ~12 GB free disk)
    python -m benchmarks.bench_dataset_memory --rows 20000      # quicker

The machine is shared: times are indicative; the memory figure is the point (peak RSS must stay far
below the input size, i.e. rows are streamed in blocks of ``chunk_rows``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
_MAT_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: crcgs benchmark HDF5 schema 1.00 ."


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _blocks(rows: int, image_dim: int, text_dim: int, num_labels: int, block: int, seed: int = 0):
    """Deterministic random data, ``block`` rows at a time (never the whole matrix in memory)."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, block):
        n = min(block, rows - start)
        image = rng.random((n, image_dim), dtype=np.float32)
        text = (rng.random((n, text_dim), dtype=np.float32) < 0.01).astype(np.float32)
        labels = (rng.random((n, num_labels)) < 0.1).astype(np.int8)
        labels[np.arange(n), rng.integers(0, num_labels, n)] = 1
        yield start, image, text, labels


def _write_npy_header(handle, shape: tuple[int, ...], dtype: np.dtype) -> None:
    np.lib.format.write_array_header_1_0(
        handle,
        {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape},
    )


def write_npy(folder: Path, rows: int, image_dim: int, text_dim: int, num_labels: int) -> None:
    folder.mkdir(parents=True)
    labels = np.empty((rows, num_labels), dtype=np.int8)
    with (
        open(folder / "image_features.npy", "wb") as image_file,
        open(folder / "text_features.npy", "wb") as text_file,
    ):
        _write_npy_header(image_file, (rows, image_dim), np.float32)
        _write_npy_header(text_file, (rows, text_dim), np.float32)
        for start, image, text, block_labels in _blocks(rows, image_dim, text_dim, num_labels, 8192):
            image_file.write(image.tobytes())
            text_file.write(text.tobytes())
            labels[start : start + len(image)] = block_labels
    np.save(folder / "labels.npy", labels)


def write_mat_v73(folder: Path, rows: int, image_dim: int, text_dim: int, num_labels: int) -> None:
    import h5py

    folder.mkdir(parents=True)
    path = folder / "features.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        image = handle.create_dataset("image_features", shape=(image_dim, rows), dtype=np.float32)
        text = handle.create_dataset("text_features", shape=(text_dim, rows), dtype=np.float32)
        labels = handle.create_dataset("labels", shape=(num_labels, rows), dtype=np.float64)
        for dataset in (image, text, labels):
            dataset.attrs["MATLAB_class"] = np.bytes_("single" if dataset.dtype == np.float32 else "double")
        for start, image_block, text_block, label_block in _blocks(
            rows, image_dim, text_dim, num_labels, 8192
        ):
            stop = start + len(image_block)
            image[:, start:stop] = image_block.T  # MATLAB is column-major: (N, D) is stored as (D, N)
            text[:, start:stop] = text_block.T
            labels[:, start:stop] = label_block.T
    with open(path, "r+b") as handle:
        handle.write(_MAT_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def _prepare_child(data_dir: str, cache_dir: str, chunk_rows: int, connection) -> None:
    """Runs in a fresh process: prepare the dataset and report memory and time."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    from dataset_scripts import load_crcgs_dataset

    baseline = _rss_bytes()
    peak, stop = [baseline], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    ds = load_crcgs_dataset(
        "features",
        data_dir=data_dir,
        cache_dir=cache_dir,
        num_query=2100,
        num_validation=2100,
        num_train=10500,
        chunk_rows=chunk_rows,
    )
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    connection.send(
        {
            "seconds": elapsed,
            "baseline_rss": baseline,
            "sampled_peak_rss": peak[0],
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rows": {name: ds[name].num_rows for name in ds},
        }
    )


def measure(data_dir: Path, cache_dir: Path, chunk_rows: int) -> dict:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_prepare_child, args=(str(data_dir), str(cache_dir), chunk_rows, child))
    process.start()
    result = parent.recv()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"preparation failed with exit code {process.exitcode}")
    return result


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=190_000)
    parser.add_argument("--image-dim", type=int, default=4096)
    parser.add_argument("--text-dim", type=int, default=1000)
    parser.add_argument("--num-labels", type=int, default=21)
    parser.add_argument("--chunk-rows", type=int, default=4096)
    parser.add_argument("--formats", default="npy,mat_v73", help="comma-separated: npy, mat_v73")
    parser.add_argument(
        "--tmp-dir", default=None, help="parent of the temporary folder (default: system temp)"
    )
    args = parser.parse_args()
    writers = {"npy": write_npy, "mat_v73": write_mat_v73}
    root = Path(tempfile.mkdtemp(prefix="crcgs-bench-memory-", dir=args.tmp_dir))
    gib = 1024**3
    print(
        f"rows={args.rows} image_dim={args.image_dim} text_dim={args.text_dim} chunk_rows={args.chunk_rows}"
    )
    try:
        for fmt in args.formats.split(","):
            data_dir = root / fmt
            started = time.perf_counter()
            writers[fmt](data_dir, args.rows, args.image_dim, args.text_dim, args.num_labels)
            input_bytes = _size(data_dir)
            print(f"[{fmt}] wrote {input_bytes / gib:.2f} GiB in {time.perf_counter() - started:.1f} s")
            result = measure(data_dir, root / f"cache-{fmt}", args.chunk_rows)
            arrow_bytes = _size(root / f"cache-{fmt}")
            print(
                f"[{fmt}] prepared {sum(result['rows'].values())} rows {result['rows']} in {result['seconds']:.1f} s "
                f"({args.rows / result['seconds']:.0f} source rows/s); Arrow cache {arrow_bytes / gib:.2f} GiB"
            )
            print(
                f"[{fmt}] peak RSS {result['maxrss'] / gib:.3f} GiB (getrusage), sampled {result['sampled_peak_rss'] / gib:.3f} GiB, "
                f"after imports {result['baseline_rss'] / gib:.3f} GiB; input {input_bytes / gib:.2f} GiB "
                f"-> peak/input = {result['maxrss'] / input_bytes:.3f}"
            )
            print(json.dumps({"format": fmt, "input_bytes": input_bytes, **result}))
            shutil.rmtree(data_dir)
            shutil.rmtree(root / f"cache-{fmt}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
