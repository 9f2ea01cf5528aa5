"""File readers and input checks used by the builders (kept out of builder modules on purpose).

``datasets`` patches ``open``, ``numpy.load``, ``scipy.io.loadmat``, ``pathlib.Path``... inside every
module that defines a builder class (and its parents) to support streaming; its ``numpy.load`` opens
a file handle first, which breaks ``mmap_mode``. The readers therefore live in this plain module.
Every check raises ``ValueError`` naming the file and field, with expected vs got.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.sparse as sp

# ----------------------------------------------------------------------------------------------
# Errors and input checks
# ----------------------------------------------------------------------------------------------


class MissingFileError(ValueError, FileNotFoundError):
    """A required input file is absent (a ``ValueError`` like every bad input, and a ``FileNotFoundError``)."""


def require_file(data_dir: str | os.PathLike | None, name: str, *, dataset: str = "this dataset") -> Path:
    """Return ``data_dir/name`` (``name`` may be absolute), raising ``MissingFileError`` naming both if absent."""
    if data_dir is None and not os.path.isabs(name):
        raise ValueError(f"{dataset} needs data_dir=<folder containing {name}>, got data_dir=None")
    path = Path(name) if os.path.isabs(name) else Path(data_dir) / name
    if not path.is_file():
        raise MissingFileError(f"{dataset}: required file {name!r} not found at {str(path)!r}")
    return path


def check_row_counts(counts: Mapping[str, int]) -> int:
    """Check that every ``{"file:field": num_rows}`` entry agrees; return the common count."""
    values = set(counts.values())
    if len(values) != 1:
        listing = ", ".join(f"{name} has {n}" for name, n in counts.items())
        raise ValueError(f"row counts disagree between inputs: {listing} (expected one common row count)")
    return values.pop()


def check_finite(block: np.ndarray, *, source: str, rows: np.ndarray | None = None) -> None:
    """Raise if ``block`` (rows of ``source``) holds NaN or inf, naming the first bad source row and column."""
    finite = np.isfinite(block)
    if finite.all():
        return
    bad_row, bad_col = np.argwhere(~finite)[0]
    row = int(rows[bad_row]) if rows is not None else int(bad_row)
    count = int((~finite).sum())
    raise ValueError(
        f"{source}: expected finite values, got {block[bad_row, bad_col]} at row {row}, column {bad_col} "
        f"({count} non-finite values in this block)"
    )


def check_feature_matrix(shape: Sequence[int], dtype: np.dtype, *, source: str) -> None:
    """A feature matrix must be 2-D, numeric, and have at least one column."""
    if len(shape) != 2:
        raise ValueError(f"{source}: expected a 2-D (num_rows, dim) matrix, got shape {tuple(shape)}")
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise ValueError(f"{source}: expected a numeric matrix, got dtype {dtype}")
    if shape[1] < 1:
        raise ValueError(f"{source}: expected at least one feature column, got shape {tuple(shape)}")


def to_multi_hot(labels: np.ndarray, *, source: str, num_labels: int | None = None) -> np.ndarray:
    """Labels as a ``(N, L)`` int8 multi-hot matrix.

    Accepts ``(N, L)`` multi-hot (bool/int/float holding only 0 and 1) or integer class ids of shape
    ``(N,)``, ``(N, 1)`` or ``(1, N)`` (MATLAB vectors; ``N > 1``), which become one-hot rows with
    ``L = num_labels`` or ``max(id) + 1``. Ids are 0-based.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and 1 in arr.shape and max(arr.shape) > 1 and (arr.shape[1] == 1 or arr.shape[0] == 1):
        arr = arr.reshape(-1)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{source}: expected numeric labels, got dtype {arr.dtype}")
    if arr.dtype != np.bool_ and not np.isfinite(arr).all():
        raise ValueError(
            f"{source}: expected finite labels, got NaN/inf at row {int(np.argwhere(~np.isfinite(arr))[0][0])}"
        )
    if arr.ndim == 1:
        ids = arr.astype(np.int64)
        if not np.array_equal(ids, arr):
            raise ValueError(f"{source}: 1-D labels must be integer class ids, got non-integer values")
        upper = num_labels if num_labels is not None else int(ids.max(initial=-1)) + 1
        if ids.size and (ids.min() < 0 or ids.max() >= upper):
            raise ValueError(
                f"{source}: class ids must lie in [0, {upper}), got range [{ids.min()}, {ids.max()}]"
            )
        out = np.zeros((ids.size, upper), dtype=np.int8)
        out[np.arange(ids.size), ids] = 1
        return out
    if arr.ndim != 2:
        raise ValueError(f"{source}: expected labels of shape (N, L) or (N,), got shape {arr.shape}")
    if num_labels is not None and arr.shape[1] != num_labels:
        raise ValueError(f"{source}: expected {num_labels} label columns, got {arr.shape[1]}")
    if not np.isin(arr, (0, 1)).all():
        bad = np.argwhere(~np.isin(arr, (0, 1)))[0]
        raise ValueError(
            f"{source}: multi-hot labels must be 0 or 1, got {arr[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]}"
        )
    return arr.astype(np.int8)


def check_nonempty_labels(labels: np.ndarray, *, source: str) -> None:
    """Raise if some row has no positive label (such a query has no relevant item under S = 1[y.y' > 0])."""
    empty = np.flatnonzero(labels.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(
            f"{source}: {empty.size} rows have no label (first rows: {empty[:5].tolist()}); expected at least "
            "one positive label per row. Drop them, or pass allow_empty_labels=True to keep them."
        )


# ----------------------------------------------------------------------------------------------
# Streaming row readers (.npy memory-map, HDF5 / MATLAB v7.3 in chunks, in-memory arrays)
# ----------------------------------------------------------------------------------------------


class RowMatrix(Protocol):
    """A ``(num_rows, dim)`` matrix read in row blocks; ``source`` names it in error messages."""

    source: str
    shape: tuple[int, int]
    dtype: np.dtype

    def read_rows(self, start: int, stop: int, local: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` (only rows ``start + local`` when ``local`` is given) as an in-memory array."""


class ArrayRows:
    """An in-memory matrix (``.npz`` members, MATLAB v5 variables, generated data)."""

    def __init__(self, array: np.ndarray, *, source: str):
        check_feature_matrix(np.shape(array), np.asarray(array).dtype, source=source)
        self.array = np.asarray(array)
        self.source, self.shape, self.dtype = source, tuple(self.array.shape), self.array.dtype

    def read_rows(self, start: int, stop: int, local: np.ndarray | None = None) -> np.ndarray:
        block = self.array[start:stop]
        return block if local is None else block[local]


class SparseRows:
    """A ``scipy.sparse`` matrix (a bag of words, a MATLAB v5 sparse variable) served as dense float32 row blocks."""

    def __init__(self, matrix: sp.spmatrix, *, source: str):
        self.matrix = sp.csr_matrix(matrix, dtype=np.float32)
        check_feature_matrix(self.matrix.shape, self.matrix.dtype, source=source)
        self.source, self.shape, self.dtype = source, tuple(self.matrix.shape), self.matrix.dtype

    def read_rows(self, start: int, stop: int, local: np.ndarray | None = None) -> np.ndarray:
        block = self.matrix[start:stop]
        return (block if local is None else block[local]).toarray()


class NpyRows:
    """A ``.npy`` matrix memory-mapped one block at a time.

    Each block maps only its own byte range and drops the mapping afterwards, so resident memory stays
    at one block (``np.load(mmap_mode="r")`` of the whole file would keep every touched page resident).
    """

    def __init__(self, path: str | os.PathLike, *, source: str | None = None):
        self.path = str(path)
        self.source = source or os.path.basename(self.path)
        whole = np.load(self.path, mmap_mode="r", allow_pickle=False)
        check_feature_matrix(whole.shape, whole.dtype, source=self.source)
        self.shape, self.dtype = tuple(whole.shape), whole.dtype
        self._offset, self._fortran = whole.offset, whole.flags.f_contiguous and not whole.flags.c_contiguous
        del whole

    def read_rows(self, start: int, stop: int, local: np.ndarray | None = None) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        if self._fortran:  # column-major file: a row block is strided, map the file and copy the slice
            block = np.load(self.path, mmap_mode="r", allow_pickle=False)[start:stop]
            return np.array(block if local is None else block[local])
        row_bytes = self.shape[1] * self.dtype.itemsize
        block = np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r",
            offset=self._offset + start * row_bytes,
            shape=(stop - start, self.shape[1]),
        )
        out = np.array(block) if local is None else block[local]  # a copy: only the needed pages are touched
        del block
        return out


def is_matlab_v73(path: str | os.PathLike) -> bool:
    """True for MATLAB v7.3 files: HDF5 with MATLAB's 512-byte user block header."""
    with open(path, "rb") as handle:
        return handle.read(19) == b"MATLAB 7.3 MAT-file"


class H5Rows:
    """A dataset in an HDF5 file (MATLAB v7.3 ``.mat`` or ``.h5``) read in row blocks.

    MATLAB stores column-major, so a MATLAB ``(N, D)`` matrix appears in HDF5 as ``(D, N)``:
    ``matlab_layout=True`` reads column blocks and transposes them. ``None`` decides from the file
    (MATLAB v7.3 header or a ``MATLAB_class`` attribute).
    """

    def __init__(self, path: str | os.PathLike, key: str, *, matlab_layout: bool | None = None):
        import h5py

        self.path, self.key = str(path), key
        self.source = f"{os.path.basename(self.path)}:{key}"
        self._file = h5py.File(self.path, "r")
        if key not in self._file:
            available = sorted(k for k in self._file.keys() if not k.startswith("#"))
            self._file.close()
            raise ValueError(
                f"{os.path.basename(self.path)}: no dataset named {key!r}; available keys: {available}"
            )
        self._dataset = self._file[key]
        if matlab_layout is None:
            matlab_layout = is_matlab_v73(self.path) or "MATLAB_class" in self._dataset.attrs
        self.matlab_layout = matlab_layout
        raw = tuple(self._dataset.shape)
        shape = raw[::-1] if matlab_layout else raw
        check_feature_matrix(shape, self._dataset.dtype, source=self.source)
        self.shape, self.dtype = tuple(int(s) for s in shape), self._dataset.dtype

    def read_rows(self, start: int, stop: int, local: np.ndarray | None = None) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if self.matlab_layout:
            columns = self._dataset[:, start:stop]  # (dim, n): MATLAB's rows are HDF5 columns
            if local is None:
                return transpose(columns)
            if 8 * len(local) < columns.shape[1]:  # few rows: gather those columns, transpose them
                return transpose(columns[:, local])
            return transpose(columns)[local]  # most rows: a column gather is slower than a row gather
        block = self._dataset[start:stop]
        return block if local is None else block[local]

    def close(self) -> None:
        self._file.close()


def transpose(matrix: np.ndarray, tile: int = 64) -> np.ndarray:
    """``matrix.T`` as a C-contiguous array, copied in ``tile`` x ``tile`` tiles.

    A plain ``ascontiguousarray(m.T)`` walks one side with a stride of a whole row and misses the cache
    on every element; tiles keep both sides in cache (about 2x faster on a 4096 x 4096 float32 block).
    """
    rows, cols = matrix.shape
    out = np.empty((cols, rows), dtype=matrix.dtype)
    for i in range(0, rows, tile):
        for j in range(0, cols, tile):
            out[j : j + tile, i : i + tile] = matrix[i : i + tile, j : j + tile].T
    return out


def _npz_member(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive.files:
            raise ValueError(f"{path.name}: no array named {key!r}; available keys: {sorted(archive.files)}")
        return archive[key]


def _mat_v5_member(path: Path, key: str | None) -> np.ndarray:
    import scipy.io

    content = scipy.io.loadmat(path, variable_names=[key] if key else None)
    if key not in content:
        names = [name for name, *_ in scipy.io.whosmat(path)]
        raise ValueError(f"{path.name}: no variable named {key!r}; available keys: {sorted(names)}")
    return content[key]


@contextmanager
def _naming_the_file(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a reader's error about a damaged file (truncated, random bytes, wrong format) as a
    ValueError that names the file; errors that already name it pass through."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as err:  # numpy, scipy.io and h5py each raise their own types for a damaged file
        if isinstance(err, ValueError) and os.path.basename(path) in str(err):
            raise
        raise ValueError(
            f"{path}: cannot be read, truncated or damaged ({type(err).__name__}: {err})"
        ) from err


def open_matrix(
    path: str | os.PathLike, key: str | None = None, *, matlab_layout: bool | None = None
) -> RowMatrix:
    """Open a 2-D feature matrix for block reads, by file type (:func:`_open_matrix`); a damaged file
    raises ValueError naming it."""
    with _naming_the_file(path):
        return _open_matrix(path, key, matlab_layout=matlab_layout)


def _open_matrix(
    path: str | os.PathLike, key: str | None = None, *, matlab_layout: bool | None = None
) -> RowMatrix:
    """Open a 2-D feature matrix for block reads, by file type.

    ``.npy``: memory-mapped per block (``key`` ignored). ``.h5``/``.hdf5`` and MATLAB v7.3 ``.mat``:
    streamed from HDF5 (``key`` = dataset name). ``.npz`` and MATLAB v5 ``.mat``: loaded into memory
    (these formats cannot be read by rows; use ``.npy`` or v7.3 for large data); a v5 sparse variable
    stays sparse (``SparseRows``).
    """
    import h5py

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpyRows(path)
    if suffix in (".h5", ".hdf5", ".mat") and h5py.is_hdf5(path):
        return H5Rows(path, _require_key(path, key), matlab_layout=matlab_layout)
    if suffix == ".npz":
        return ArrayRows(_npz_member(path, _require_key(path, key)), source=f"{path.name}:{key}")
    if suffix == ".mat":
        member = _mat_v5_member(path, _require_key(path, key))
        if sp.issparse(member):  # a v5 sparse variable (e.g. a bag of words saved with sparse())
            return SparseRows(member, source=f"{path.name}:{key}")
        return ArrayRows(member, source=f"{path.name}:{key}")
    raise ValueError(
        f"{path.name}: unsupported file type {suffix!r}; expected .npy, .npz, .mat, .h5 or .hdf5"
    )


def load_array(
    path: str | os.PathLike, key: str | None = None, *, matlab_layout: bool | None = None
) -> np.ndarray:
    """Read a whole (small) array (:func:`_load_array`); a damaged file raises ValueError naming it."""
    with _naming_the_file(path):
        return _load_array(path, key, matlab_layout=matlab_layout)


def _load_array(
    path: str | os.PathLike, key: str | None = None, *, matlab_layout: bool | None = None
) -> np.ndarray:
    """Read a whole (small) array, e.g. labels, from ``.npy``/``.npz``/``.mat`` (v5 or v7.3)/``.h5``;
    a MATLAB v5 sparse variable comes back dense."""
    import h5py

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".h5", ".hdf5", ".mat") and h5py.is_hdf5(path):
        key = _require_key(path, key)
        with h5py.File(path, "r") as handle:
            if key not in handle:
                available = sorted(k for k in handle.keys() if not k.startswith("#"))
                raise ValueError(f"{path.name}: no dataset named {key!r}; available keys: {available}")
            array = handle[key][()]
            if matlab_layout is None:
                matlab_layout = is_matlab_v73(path) or "MATLAB_class" in handle[key].attrs
        return array.T if matlab_layout else array
    if suffix == ".npz":
        return _npz_member(path, _require_key(path, key))
    if suffix == ".mat":
        member = _mat_v5_member(path, _require_key(path, key))
        return member.toarray() if sp.issparse(member) else member  # v5 sparse variable: densified
    raise ValueError(
        f"{path.name}: unsupported file type {suffix!r}; expected .npy, .npz, .mat, .h5 or .hdf5"
    )


def _require_key(path: Path, key: str | None) -> str:
    if not key:
        raise ValueError(f"{path.name}: a key (array/variable name) is required for {path.suffix} files")
    return key


def iter_row_blocks(
    num_rows: int, rows: np.ndarray, chunk_rows: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, selected)`` per source block holding some of the sorted ``rows``.

    ``selected`` are the requested rows inside ``[start, stop)``; blocks with none are skipped, so
    a split is read in one ascending pass over the source, ``chunk_rows`` rows at a time.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    starts = np.arange(0, num_rows, chunk_rows)
    bounds = np.searchsorted(rows, np.append(starts, num_rows))
    for block, start in enumerate(starts.tolist()):
        lo, hi = bounds[block], bounds[block + 1]
        if hi > lo:
            yield start, min(start + chunk_rows, num_rows), rows[lo:hi]
