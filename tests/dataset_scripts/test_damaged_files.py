"""Damaged feature/label files (truncated, random bytes, empty) raise a ValueError that names the file."""

import os

import h5py
import numpy as np
import pytest
import scipy.io

from dataset_scripts._readers import load_array, open_matrix


def _write(path, kind):
    matrix = np.arange(200 * 16, dtype=np.float32).reshape(200, 16)
    if kind == "npy":
        np.save(path, matrix)
    elif kind == "npz":
        np.savez(path, x=matrix)
    elif kind == "mat5":
        scipy.io.savemat(path, {"x": matrix})
    else:  # an HDF5 file (as MATLAB v7.3 writes)
        with h5py.File(path, "w") as f:
            f["x"] = matrix


@pytest.mark.parametrize(
    "name, kind", [("a.npy", "npy"), ("a.npz", "npz"), ("a.mat", "mat5"), ("a.h5", "h5"), ("b.mat", "h5")]
)
@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "empty"])
@pytest.mark.parametrize("reader", [open_matrix, load_array])
def test_damaged_file_is_named(tmp_path, name, kind, damage, reader):
    path = tmp_path / name
    _write(path, kind)
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "random_bytes": os.urandom(len(data)), "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match=name):
        matrix = reader(path, None if kind == "npy" else "x")
        # a reader that opens lazily must fail on the first read at the latest
        matrix.read_rows(0, 200) if hasattr(matrix, "read_rows") else None
