"""Writers of tiny benchmark files in their REAL formats, shared by the benchmark builder tests.

MATLAB v7.3 files are HDF5 with MATLAB's 512-byte header and column-major arrays (h5py sees the
reversed shape: a 224 x 224 x 3 x N ``IAll`` reads as ``(N, 3, 224, 224)``); v5 files come from scipy.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from dataset_scripts import load_crcgs_dataset

_MATLAB_CLASS = {np.dtype(np.uint8): "uint8", np.dtype(np.float64): "double", np.dtype(np.float32): "single"}


def write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (MATLAB shapes) as MATLAB v7.3 does: HDF5 holding each array's transpose."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, array in arrays.items():
            dataset = handle.create_dataset(key, data=np.ascontiguousarray(np.asarray(array).T))
            dataset.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[np.asarray(array).dtype])
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


def write_mat5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    scipy.io.savemat(path, arrays, format="5")
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def extract_zip(path: Path, target: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        archive.extractall(target)


def tiny_jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def build(name: str, data_dir: Path, cache_dir: Path, **options):
    """Prepare a builder through the public loader (registry included)."""
    return load_crcgs_dataset(name, str(data_dir), cache_dir=str(cache_dir), **options)


def split_rows(ds) -> dict[str, np.ndarray]:
    return {name: np.asarray(ds[name]["index"]) for name in ("train", "validation", "query", "database")}


def assert_split_contract(ds, *, num_query: int, num_validation: int, num_train: int, num_rows: int) -> None:
    """Sizes, pairwise disjointness, database = every non-query row, ascending order."""
    rows = split_rows(ds)
    assert (rows["query"].size, rows["validation"].size, rows["train"].size) == (
        num_query,
        num_validation,
        num_train,
    )
    assert rows["database"].size == num_rows - num_query
    for first, second in (
        ("query", "train"),
        ("query", "validation"),
        ("train", "validation"),
        ("query", "database"),
    ):
        assert np.intersect1d(rows[first], rows[second]).size == 0, (first, second)
    for split in rows.values():
        assert np.all(np.diff(split) > 0)


def decode(image: dict | Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))
