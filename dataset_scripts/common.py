"""Shared contract of every crcgs dataset builder: schema, splits, input checks and streaming readers.

How a builder uses this module
------------------------------
A dataset module (``dataset_scripts/<name>.py``) defines ``_CITATION``, ``_DESCRIPTION``, ``_HOMEPAGE``,
``_LICENSE``, a ``CRCGSConfig`` subclass (or instances of it) carrying the protocol defaults, and one
``CRCGSBuilder`` subclass that implements only two methods::

    class MyBuilder(CRCGSBuilder):
        BUILDER_CONFIG_CLASS = MyConfig            # a CRCGSConfig subclass
        BUILDER_CONFIGS = [MyConfig(name="default", num_query=2000, num_validation=2000, num_train=10000)]
        DEFAULT_CONFIG_NAME = "default"

        def _info(self):
            source = self.source                    # cached result of _load_source()
            features = make_features(source.label_names, image_dim=source.image_dim, text_dim=source.text_dim)
            return make_info(self.config, features, description=_DESCRIPTION, citation=_CITATION,
                             homepage=_HOMEPAGE, license=_LICENSE)

        def _load_source(self) -> SourceData:
            image = open_matrix(require_file(self.config.data_dir, "img.mat"), key="X")   # lazy rows
            labels = to_multi_hot(load_array(...), source="lab.mat:L")
            return SourceData(labels=labels, label_names=[...], image_features=image, ...)

The base class then draws the four splits from the config (``make_splits``: a ``split_file``, else
class-balanced per-class counts, else seeded random sizes), validates them, records the recipe in the
``DatasetInfo`` description, and streams the rows of each split block by block (``chunk_rows`` source
rows at a time) from the readers, so a 190k x 4096 matrix is never loaded whole.

Contract (docs/DESIGN.md, "Data contract")
------------------------------------------
* Splits ``train``, ``validation``, ``query``, ``database``; ``database`` = every row not in ``query``;
  ``train``, ``validation`` and ``query`` are pairwise disjoint. Rows of a split are in ascending
  source order. The same config (seed) gives identical splits.
* Columns: ``index`` (int64, row in the source), ``image_features`` (fixed-length float32) and/or
  ``image`` (``datasets.Image``), ``text_features`` (fixed-length float32 BoW) and/or ``text``
  (string), ``labels`` (fixed-length multi-hot int8) and ``label_ids`` (``List(ClassLabel(names))``:
  the positive label ids of the row). ``label_ids`` is where the label names live: a ``ClassLabel``
  is part of ``Features``, which datasets serialises into ``save_to_disk`` folders and into the Arrow
  schema metadata of Parquet files, so ``label_names(ds)`` works after either round trip.
* Bad input raises ``ValueError`` naming the file and field, with expected vs got
  (``MissingFileError`` for an absent file is also a ``FileNotFoundError``).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "query", "database")
LABEL_IDS_COLUMN = "label_ids"
_RECIPE_MARKER = "crcgs_split_recipe: "

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

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an in-memory array."""


class ArrayRows:
    """An in-memory matrix (``.npz`` members, MATLAB v5 variables, generated data)."""

    def __init__(self, array: np.ndarray, *, source: str):
        check_feature_matrix(np.shape(array), np.asarray(array).dtype, source=source)
        self.array = np.asarray(array)
        self.source, self.shape, self.dtype = source, tuple(self.array.shape), self.array.dtype

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


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

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        if self._fortran:  # column-major file: a row block is strided, map the file and copy the slice
            return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[start:stop])
        row_bytes = self.shape[1] * self.dtype.itemsize
        block = np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r",
            offset=self._offset + start * row_bytes,
            shape=(stop - start, self.shape[1]),
        )
        out = np.array(block)
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

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if self.matlab_layout:
            return np.ascontiguousarray(self._dataset[:, start:stop].T)
        return self._dataset[start:stop]

    def close(self) -> None:
        self._file.close()


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


def open_matrix(
    path: str | os.PathLike, key: str | None = None, *, matlab_layout: bool | None = None
) -> RowMatrix:
    """Open a 2-D feature matrix for block reads, by file type.

    ``.npy``: memory-mapped per block (``key`` ignored). ``.h5``/``.hdf5`` and MATLAB v7.3 ``.mat``:
    streamed from HDF5 (``key`` = dataset name). ``.npz`` and MATLAB v5 ``.mat``: loaded into memory
    (these formats cannot be read by rows; use ``.npy`` or v7.3 for large data).
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
        return ArrayRows(_mat_v5_member(path, _require_key(path, key)), source=f"{path.name}:{key}")
    raise ValueError(
        f"{path.name}: unsupported file type {suffix!r}; expected .npy, .npz, .mat, .h5 or .hdf5"
    )


def load_array(
    path: str | os.PathLike, key: str | None = None, *, matlab_layout: bool | None = None
) -> np.ndarray:
    """Read a whole (small) array, e.g. labels, from ``.npy``/``.npz``/``.mat`` (v5 or v7.3)/``.h5``."""
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
        return _mat_v5_member(path, _require_key(path, key))
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


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def validate_splits(
    splits: Mapping[str, Any], num_rows: int, *, source: str = "splits"
) -> dict[str, np.ndarray]:
    """Check a ``{split: row indices}`` mapping and return it as sorted int64 arrays.

    ``train``, ``validation`` and ``query`` are required; ``database`` defaults to every row not in
    ``query``. Errors: unknown split, non-integer index, index outside ``[0, num_rows)``, duplicate
    index in a split, empty query/train/database, and overlap between any two of train, validation and
    query or between query and database.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"{source}: unknown split names {unknown}; expected keys among {list(SPLITS)}")
    missing = [name for name in ("train", "validation", "query") if name not in splits]
    if missing:
        raise ValueError(
            f"{source}: missing splits {missing}; expected keys {list(SPLITS)} (database optional)"
        )
    out: dict[str, np.ndarray] = {}
    for name in SPLITS:
        if name not in splits:
            continue
        raw = np.asarray(splits[name])
        if raw.size == 0:
            raw = raw.astype(np.int64)
        if raw.ndim != 1 or not (np.issubdtype(raw.dtype, np.integer) and raw.dtype != np.bool_):
            raise ValueError(
                f"{source}: split {name!r} must be a flat list of integer row indices, got {raw.dtype} of shape {raw.shape}"
            )
        rows = np.sort(raw.astype(np.int64))
        if rows.size and (rows[0] < 0 or rows[-1] >= num_rows):
            bad = rows[0] if rows[0] < 0 else rows[-1]
            raise ValueError(f"{source}: split {name!r} has row index {bad} outside [0, {num_rows})")
        dup = rows[1:][rows[1:] == rows[:-1]]
        if dup.size:
            raise ValueError(
                f"{source}: split {name!r} lists row {dup[0]} more than once ({dup.size} duplicates)"
            )
        out[name] = rows
    if "database" not in out:
        out["database"] = np.setdiff1d(np.arange(num_rows, dtype=np.int64), out["query"], assume_unique=True)
    for name in ("train", "query", "database"):
        if out[name].size == 0:
            raise ValueError(f"{source}: split {name!r} is empty; expected at least one row")
    for first, second in (
        ("query", "train"),
        ("query", "validation"),
        ("train", "validation"),
        ("query", "database"),
    ):
        common = np.intersect1d(out[first], out[second], assume_unique=True)
        if common.size:
            raise ValueError(
                f"{source}: splits {first!r} and {second!r} must be disjoint, got {common.size} shared rows "
                f"(first: {common[:5].tolist()})"
            )
    return {name: out[name] for name in SPLITS}


def read_split_file(path: str | os.PathLike, num_rows: int) -> dict[str, np.ndarray]:
    """Read and validate ``{"train": [...], "validation": [...], "query": [...], "database": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"split file {str(path)!r} not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path.name}: not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(
            f"{path.name}: expected a JSON object of split name -> row indices, got {type(content).__name__}"
        )
    for name, value in content.items():
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{path.name}: split {name!r} must be a list of integer row indices")
    return validate_splits(content, num_rows, source=path.name)


def random_splits(
    num_rows: int, *, num_query: int, num_validation: int, num_train: int | None, seed: int
) -> dict[str, np.ndarray]:
    """Seeded random protocol (MIRFLICKR-25K, MS-COCO; METHOD.md "Protocol").

    One permutation of all rows (``numpy.random.default_rng(seed)``): the first ``num_query`` rows are
    the query set, the next ``num_validation`` the validation set, the next ``num_train`` (``None``:
    all the rest) the training set; the database is every row not in the query set.
    """
    num_train_resolved = num_rows - num_query - num_validation if num_train is None else num_train
    sizes = {"num_query": num_query, "num_validation": num_validation, "num_train": num_train_resolved}
    if min(sizes.values()) < 0 or num_query < 1 or num_train_resolved < 1:
        raise ValueError(f"split sizes must be >= 0 (query, train >= 1), got {sizes}")
    if sum(sizes.values()) > num_rows:
        raise ValueError(
            f"split sizes {sizes} add up to {sum(sizes.values())}, more than the {num_rows} rows available"
        )
    order = np.random.default_rng(seed).permutation(num_rows)
    cut = np.cumsum([num_query, num_validation, num_train_resolved])
    splits = {"query": order[: cut[0]], "validation": order[cut[0] : cut[1]], "train": order[cut[1] : cut[2]]}
    return validate_splits(splits, num_rows, source=f"random splits (seed {seed})")


def class_balanced_splits(
    labels: np.ndarray,
    *,
    query_per_class: int,
    validation_per_class: int,
    train_per_class: int,
    seed: int,
    label_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Class-balanced protocol (NUS-WIDE; METHOD.md "Protocol": 100 query, 100 validation, 500 train per class).

    Every labelled row is assigned to ONE of its labels, chosen uniformly at random (Gumbel-max over
    its positive labels), so no row is drawn twice; within each class the assigned rows are put in a
    seeded random order and the first ``query_per_class`` go to query, the next
    ``validation_per_class`` to validation, the next ``train_per_class`` to train. The database is every
    row not in the query set. Raises if a class has too few assigned rows.
    """
    rng = np.random.default_rng(seed)
    assign_keys = rng.random(labels.shape)
    order_keys = rng.random(labels.shape[0])
    return _balanced_from_keys(
        labels, assign_keys, order_keys, (query_per_class, validation_per_class, train_per_class), label_names
    )


def _balanced_from_keys(
    labels: np.ndarray,
    assign_keys: np.ndarray,
    order_keys: np.ndarray,
    per_class: tuple[int, int, int],
    label_names: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """Vectorized core of ``class_balanced_splits`` given its random draws (tests compare it with a loop)."""
    if min(per_class) < 0 or per_class[0] < 1 or per_class[2] < 1:
        raise ValueError(
            f"per-class counts (query, validation, train) must be >= 0 with query, train >= 1, got {per_class}"
        )
    num_rows, num_labels = labels.shape
    labelled = np.flatnonzero(labels.any(axis=1))
    assigned = np.argmax(np.where(labels[labelled] > 0, assign_keys[labelled], -1.0), axis=1)  # (n_labelled,)
    need = sum(per_class)
    counts = np.bincount(assigned, minlength=num_labels)
    short = np.flatnonzero(counts < need)
    if short.size:
        names = [label_names[c] if label_names is not None else str(c) for c in short[:5].tolist()]
        raise ValueError(
            f"class-balanced split needs {need} rows per class ({per_class[0]} query + {per_class[1]} validation + "
            f"{per_class[2]} train), but classes {names} have only {counts[short[:5]].tolist()} rows assigned"
        )
    sort = np.lexsort((order_keys[labelled], assigned))  # by class, then random key
    sorted_class = assigned[sort]
    group_start = np.searchsorted(sorted_class, np.arange(num_labels))
    rank = np.arange(sort.size) - group_start[sorted_class]  # position within its class
    rows = labelled[sort]
    cut = np.cumsum(per_class)
    splits = {
        "query": rows[rank < cut[0]],
        "validation": rows[(rank >= cut[0]) & (rank < cut[1])],
        "train": rows[(rank >= cut[1]) & (rank < cut[2])],
    }
    return validate_splits(splits, num_rows, source="class-balanced splits")


@dataclasses.dataclass
class CRCGSConfig(datasets.BuilderConfig):
    """Options shared by every crcgs builder (each overridable as a keyword of the builder / loader).

    Split recipe, in order of precedence:
      * ``split_file`` (`str`): JSON ``{"train": [...], "validation": [...], "query": [...],
        "database": [...]}`` of row indices (``database`` optional = every non-query row);
      * class-balanced when ``query_per_class``, ``validation_per_class``, ``train_per_class`` are set;
      * random otherwise: ``num_query``, ``num_validation`` (``None``: 10% of the rows each) and
        ``num_train`` (``None``: every remaining row).
    seed (`int`, defaults to 0): the split seed; the same seed gives identical splits.
    allow_empty_labels (`bool`, defaults to False): keep rows without any label instead of raising.
    chunk_rows (`int`, defaults to 4096): source rows read per block while preparing.
    """

    seed: int = 0
    num_query: int | None = None
    num_validation: int | None = None
    num_train: int | None = None
    query_per_class: int | None = None
    validation_per_class: int | None = None
    train_per_class: int | None = None
    split_file: str | None = None
    allow_empty_labels: bool = False
    chunk_rows: int = 4096


def split_method(config: CRCGSConfig) -> str:
    """``"file"``, ``"class_balanced"`` or ``"random"``, by the precedence documented on ``CRCGSConfig``."""
    if config.split_file:
        return "file"
    per_class = (config.query_per_class, config.validation_per_class, config.train_per_class)
    if any(v is not None for v in per_class):
        if any(v is None for v in per_class):
            raise ValueError(
                "class-balanced splits need query_per_class, validation_per_class and train_per_class together, "
                f"got {per_class}"
            )
        return "class_balanced"
    return "random"


def describe_split_recipe(config: CRCGSConfig) -> dict[str, Any]:
    """The split recipe of ``config`` as a JSON-able dict (recorded in the DatasetInfo description)."""
    method = split_method(config)
    recipe: dict[str, Any] = {"method": method, "database": "all rows not in query"}
    if method == "file":
        path = Path(config.split_file)
        recipe["split_file"] = str(path)
        if path.is_file():
            recipe["split_file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    elif method == "class_balanced":
        recipe.update(
            seed=config.seed,
            query_per_class=config.query_per_class,
            validation_per_class=config.validation_per_class,
            train_per_class=config.train_per_class,
            assignment="each row to one of its labels, uniformly at random",
        )
    else:
        recipe.update(
            seed=config.seed,
            num_query=config.num_query if config.num_query is not None else "10% of rows",
            num_validation=config.num_validation if config.num_validation is not None else "10% of rows",
            num_train=config.num_train if config.num_train is not None else "all remaining rows",
        )
    return recipe


def make_splits(
    config: CRCGSConfig, labels: np.ndarray, *, label_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The four splits of a source with ``labels`` (N, L) following ``config`` (see ``CRCGSConfig``)."""
    num_rows = labels.shape[0]
    method = split_method(config)
    if method == "file":
        return read_split_file(config.split_file, num_rows)
    if method == "class_balanced":
        return class_balanced_splits(
            labels,
            query_per_class=config.query_per_class,
            validation_per_class=config.validation_per_class,
            train_per_class=config.train_per_class,
            seed=config.seed,
            label_names=label_names,
        )
    tenth = max(1, num_rows // 10)
    return random_splits(
        num_rows,
        num_query=config.num_query if config.num_query is not None else tenth,
        num_validation=config.num_validation if config.num_validation is not None else tenth,
        num_train=config.num_train,
        seed=config.seed,
    )


# ----------------------------------------------------------------------------------------------
# Schema and metadata
# ----------------------------------------------------------------------------------------------


def make_features(
    label_names: Sequence[str],
    *,
    image_dim: int | None = None,
    text_dim: int | None = None,
    with_image: bool = False,
    with_text: bool = False,
) -> datasets.Features:
    """The typed ``Features`` of the contract; columns appear only for the inputs that exist."""
    if len(label_names) < 1 or len(set(label_names)) != len(label_names):
        raise ValueError(
            f"label_names must be non-empty and unique, got {len(label_names)} names ({len(set(label_names))} unique)"
        )
    if image_dim is None and not with_image:
        raise ValueError("a dataset needs image_features (image_dim) and/or raw images (with_image=True)")
    if text_dim is None and not with_text:
        raise ValueError("a dataset needs text_features (text_dim) and/or raw texts (with_text=True)")
    columns: dict[str, Any] = {"index": datasets.Value("int64")}
    if image_dim is not None:
        columns["image_features"] = datasets.List(datasets.Value("float32"), length=int(image_dim))
    if with_image:
        columns["image"] = datasets.Image()
    if text_dim is not None:
        columns["text_features"] = datasets.List(datasets.Value("float32"), length=int(text_dim))
    if with_text:
        columns["text"] = datasets.Value("string")
    columns["labels"] = datasets.List(datasets.Value("int8"), length=len(label_names))
    columns[LABEL_IDS_COLUMN] = datasets.List(datasets.ClassLabel(names=list(label_names)))
    return datasets.Features(columns)


def _features_of(obj: Any) -> datasets.Features:
    if isinstance(obj, datasets.Features):
        return obj
    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if not obj:
            raise ValueError("label_names: got an empty DatasetDict")
        obj = next(iter(obj.values()))
    features = getattr(obj, "features", None)
    if features is None:
        raise ValueError(
            f"expected a Dataset, DatasetDict or Features with a {LABEL_IDS_COLUMN!r} column, got {type(obj).__name__}"
        )
    return features


def label_names(ds_or_split: Any) -> list[str]:
    """Label names of a crcgs dataset (Dataset, DatasetDict, IterableDataset or Features).

    Read from the ``ClassLabel`` of the ``label_ids`` column, which survives ``save_to_disk`` and Parquet.
    """
    features = _features_of(ds_or_split)
    column = features.get(LABEL_IDS_COLUMN)
    inner = getattr(column, "feature", None)
    if not isinstance(inner, datasets.ClassLabel):
        raise ValueError(
            f"no label names: expected a {LABEL_IDS_COLUMN!r} column of ClassLabel, got {column!r}"
        )
    return list(inner.names)


def make_info(
    config: CRCGSConfig,
    features: datasets.Features,
    *,
    description: str,
    citation: str = "",
    homepage: str = "",
    license: str = "",
    extra: Mapping[str, Any] | None = None,
) -> datasets.DatasetInfo:
    """``DatasetInfo`` whose description ends with the split recipe (read back by ``split_recipe``)."""
    recipe = describe_split_recipe(config)
    if extra:
        recipe.update(extra)
    text = f"{description.strip()}\n\n{_RECIPE_MARKER}{json.dumps(recipe, sort_keys=True)}"
    return datasets.DatasetInfo(
        description=text, citation=citation, homepage=homepage, license=license, features=features
    )


def split_recipe(ds_or_split: Any) -> dict[str, Any]:
    """The split recipe recorded in the DatasetInfo of a prepared crcgs dataset."""
    if isinstance(ds_or_split, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        ds_or_split = next(iter(ds_or_split.values()))
    description = getattr(getattr(ds_or_split, "info", None), "description", "") or ""
    for line in description.splitlines():
        if line.startswith(_RECIPE_MARKER):
            return json.loads(line[len(_RECIPE_MARKER) :])
    raise ValueError(
        "no split recipe in the DatasetInfo description (was this dataset prepared by a crcgs builder?)"
    )


# ----------------------------------------------------------------------------------------------
# The base builder
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SourceData:
    """Everything a builder reads from its files; row ``i`` of every field is source row ``i``.

    labels: (N, L) int8 multi-hot, in memory. label_names: L names.
    image_features / text_features: ``RowMatrix`` readers (streamed), or None.
    texts: N strings, or None. images: N ``datasets.Image`` inputs (paths or bytes), or None.
    """

    labels: np.ndarray
    label_names: list[str]
    image_features: RowMatrix | None = None
    text_features: RowMatrix | None = None
    texts: Sequence[str] | None = None
    images: Sequence[Any] | None = None
    labels_source: str = "labels"

    def __post_init__(self) -> None:
        if self.labels.ndim != 2 or self.labels.dtype != np.int8:
            raise ValueError(
                f"{self.labels_source}: expected (N, L) int8 multi-hot labels, got {self.labels.dtype} {self.labels.shape}"
            )
        if self.labels.shape[1] != len(self.label_names):
            raise ValueError(
                f"{self.labels_source}: {self.labels.shape[1]} label columns but {len(self.label_names)} label names"
            )
        counts = {self.labels_source: self.labels.shape[0]}
        for matrix in (self.image_features, self.text_features):
            if matrix is not None:
                counts[matrix.source] = matrix.shape[0]
        for name, values in (("texts", self.texts), ("images", self.images)):
            if values is not None:
                counts[name] = len(values)
        check_row_counts(counts)

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_dim(self) -> int | None:
        return None if self.image_features is None else int(self.image_features.shape[1])

    @property
    def text_dim(self) -> int | None:
        return None if self.text_features is None else int(self.text_features.shape[1])


def source_digest(cls: type) -> str:
    """Hash of a builder's module and of this module: a code change gives a fresh cache folder."""
    digest = hashlib.sha256()
    for module_file in (inspect.getsourcefile(cls), __file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()[:16]


class CRCGSBuilder(datasets.GeneratorBasedBuilder, abc.ABC):
    """Base builder: subclasses implement ``_info`` (with ``make_features``/``make_info``) and ``_load_source``."""

    BUILDER_CONFIG_CLASS = CRCGSConfig

    def __init__(self, *args: Any, hash: str | None = None, **kwargs: Any):
        self._source: SourceData | None = None
        super().__init__(*args, hash=hash or source_digest(type(self)), **kwargs)

    @abc.abstractmethod
    def _load_source(self) -> SourceData:
        """Open the files of ``self.config.data_dir`` (lazily for large matrices) and check them."""

    @property
    def source(self) -> SourceData:
        """``_load_source()``, computed once, with the empty-label check of the config applied."""
        if self._source is None:
            source = self._load_source()
            if not self.config.allow_empty_labels:
                check_nonempty_labels(source.labels, source=source.labels_source)
            self._source = source
        return self._source

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        source = self.source
        splits = make_splits(self.config, source.labels, label_names=source.label_names)
        return [datasets.SplitGenerator(name=name, gen_kwargs={"rows": splits[name]}) for name in SPLITS]

    def _generate_examples(self, rows: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from generate_examples(self.source, rows, chunk_rows=self.config.chunk_rows)


def generate_examples(
    source: SourceData, rows: np.ndarray, *, chunk_rows: int = 4096
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Examples of the sorted source ``rows``, read block by block; NaN/inf features raise naming the row."""
    matrices = {name: getattr(source, name) for name in ("image_features", "text_features")}
    matrices = {name: matrix for name, matrix in matrices.items() if matrix is not None}
    for start, stop, selected in iter_row_blocks(source.num_rows, rows, chunk_rows):
        local = selected - start
        block = {}
        for name, matrix in matrices.items():
            values = matrix.read_rows(start, stop)[local]
            check_finite(values, source=f"{matrix.source} ({name})", rows=selected)
            block[name] = values.astype(np.float32, copy=False)
        labels = source.labels[selected]
        hit_rows, hit_cols = np.nonzero(labels)
        label_ids = np.split(hit_cols, np.searchsorted(hit_rows, np.arange(1, len(selected))))
        for j, row in enumerate(selected.tolist()):
            example = {name: values[j] for name, values in block.items()}
            example.update(index=row, labels=labels[j], **{LABEL_IDS_COLUMN: label_ids[j]})
            if source.texts is not None:
                example["text"] = source.texts[row]
            if source.images is not None:
                example["image"] = source.images[row]
            yield row, example
