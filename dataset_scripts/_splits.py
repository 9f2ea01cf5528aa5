"""Split recipes of the crcgs protocol (docs/METHOD.md "Protocol"): seeded random, class-balanced, or a file.

All functions return ``{"train", "validation", "query", "database"}`` as sorted int64 row indices,
validated by ``validate_splits`` (database = every row not in query unless a file says otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._readers import MissingFileError

SPLITS: tuple[str, ...] = ("train", "validation", "query", "database")

# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def validate_splits(
    splits: Mapping[str, Any], num_rows: int, *, source: str = "splits"
) -> dict[str, np.ndarray]:
    """Check a ``{split: row indices}`` mapping and return it as sorted int64 arrays.

    ``train``, ``validation`` and ``query`` are required; ``database`` defaults to every row not in
    ``query`` (the hashing protocol). A ``database`` that is given may share rows with ``query``: the
    classic protocol of Wikipedia, Pascal Sentence or NUS-WIDE-10k is query = database = the test pairs.
    Errors: unknown split, non-integer index, index outside ``[0, num_rows)``, duplicate index in a split,
    empty query/train/database, and overlap between any two of train, validation and query.
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
    ):
        common = np.intersect1d(out[first], out[second], assume_unique=True)
        if common.size:
            raise ValueError(
                f"{source}: splits {first!r} and {second!r} must be disjoint, got {common.size} shared rows "
                f"(first: {common[:5].tolist()})"
            )
    return {name: out[name] for name in SPLITS}


# The split files of the CRCGS release (``*_data_list.npy``, rows of its ``label.npy``); ``test`` is the query set.
RELEASE_SPLIT_FILES: dict[str, str] = {
    "train": "train_data_list.npy",
    "validation": "val_data_list.npy",
    "query": "test_data_list.npy",
}


def split_file_digest(path: str | os.PathLike) -> str:
    """sha256 of a split file, or of the release's three ``*_data_list.npy`` files of a split folder."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for name in sorted(RELEASE_SPLIT_FILES.values()):
            member = path / name
            digest.update(name.encode() + b"\0" + (member.read_bytes() if member.is_file() else b""))
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_split_file(
    path: str | os.PathLike,
    num_rows: int,
    *,
    index: np.ndarray | None = None,
    dropped: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Read a split file and return its splits as validated positions ``0..num_rows-1`` of the source.

    Formats: a JSON object ``{"train": [...], "validation": [...], "query": [...], "database": [...]}``
    (``database`` optional), or a folder holding the CRCGS release's ``train_data_list.npy``,
    ``val_data_list.npy`` and ``test_data_list.npy`` (the query set; the database is every non-query row).

    A split file lists ORIGINAL rows: the values of the ``index`` column, i.e. the rows of the original
    files before the builder dropped any (MS-COCO official layout: image ids), as the release's lists index
    its full ``label.npy``. ``index`` (sorted or not) maps them to source positions (``None``: identity);
    a row the builder dropped raises naming the row and the reason, from ``dropped`` (reason -> rows).
    """
    path = Path(path)
    if path.is_dir():
        content, source = _read_release_lists(path), path.name
    elif path.is_file():
        content, source = _read_json_splits(path), path.name
    else:
        raise MissingFileError(
            f"split file {str(path)!r} not found (expected a JSON file or a folder of {sorted(RELEASE_SPLIT_FILES.values())})"
        )
    if index is not None:
        content = {
            name: _positions(name, np.asarray(rows, dtype=np.int64), index, dropped or {}, source)
            for name, rows in content.items()
        }
    return validate_splits(content, num_rows, source=source)


def _read_json_splits(path: Path) -> dict[str, Any]:
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
    return content


def _read_release_lists(folder: Path) -> dict[str, np.ndarray]:
    missing = [name for name in RELEASE_SPLIT_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise MissingFileError(
            f"split folder {str(folder)!r} lacks {missing}; expected the release's {list(RELEASE_SPLIT_FILES.values())}"
        )
    content = {}
    for split, name in RELEASE_SPLIT_FILES.items():
        rows = np.load(folder / name, allow_pickle=False)
        if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) and rows.dtype != np.bool_):
            raise ValueError(
                f"{folder.name}/{name}: expected a 1-D integer array of row indices, got {rows.dtype} of shape {rows.shape}"
            )
        content[split] = rows
    return content


def _positions(
    name: str, rows: np.ndarray, index: np.ndarray, dropped: Mapping[str, np.ndarray], source: str
) -> np.ndarray:
    """Source positions of the original ``rows`` (values of ``index``); ValueError for an unknown row."""
    order = np.argsort(index, kind="stable")
    ordered = np.asarray(index, dtype=np.int64)[order]
    at = np.minimum(np.searchsorted(ordered, rows), max(ordered.size - 1, 0))
    found = (ordered[at] == rows) if ordered.size else np.zeros(rows.size, dtype=bool)
    if not found.all():
        bad = int(rows[~found][0])
        reasons = [reason for reason, lost in dropped.items() if np.isin(bad, lost)]
        why = (
            f"the builder dropped it ({reasons[0]})" if reasons else "no such row exists in the source files"
        )
        raise ValueError(
            f"{source}: split {name!r} names original row {bad}, but {why}; {int((~found).sum())} rows of "
            f"{name!r} are not available. Split files list original rows (the 'index' column: the row in the "
            "original files before dropping; MS-COCO official: the image id)"
        )
    return order[at]


def random_splits(
    num_rows: int, *, num_query: int, num_validation: int, num_train: int | None, seed: int
) -> dict[str, np.ndarray]:
    """Seeded random protocol (MIRFLICKR-25K, MS-COCO; docs/METHOD.md "Protocol").

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
    """Class-balanced protocol of the CRCGS release (NUS-WIDE; docs/METHOD.md "Protocol": 100 query, 100
    validation, 500 train per class), the ``sample()`` of its ``utils/process_data.py``.

    Three passes, query, then validation, then train, each over the rows that no earlier pass took. A
    pass visits the classes from the rarest up (fewest positives among the rows available when the pass
    starts; ties by column), and for class ``c`` draws ``n_pass`` rows uniformly without replacement
    (``numpy.random.default_rng(seed).choice``) from the available rows that carry ``c``; the drawn rows
    leave the pool at once. So every class has at least ``n_pass`` positives in each set, no row is drawn
    twice, and rows without a label are never drawn (they end up in the database). A row with ``k``
    labels is a candidate in up to ``k`` draws, so the sets lean to rows with many labels, as the
    release's do. The database is every row not in the query set.

    Raises:
        ValueError: naming the class and the pass when fewer than ``n_pass`` rows carrying it are left.
    """
    per_class = (query_per_class, validation_per_class, train_per_class)
    if min(per_class) < 0 or query_per_class < 1 or train_per_class < 1:
        raise ValueError(
            f"per-class counts (query, validation, train) must be >= 0 with query, train >= 1, got {per_class}"
        )
    rng = np.random.default_rng(seed)
    num_rows, num_labels = labels.shape
    positive = np.asarray(labels) > 0
    available = np.ones(num_rows, dtype=bool)
    splits: dict[str, np.ndarray] = {}
    for split, count in zip(("query", "validation", "train"), per_class, strict=True):
        order = np.argsort(positive[available].sum(axis=0), kind="stable")  # rarest first, ties by column
        drawn = []
        for label in order.tolist():  # one vectorized draw per class
            candidates = np.flatnonzero(available & positive[:, label])
            if candidates.size < count:
                name = label_names[label] if label_names is not None else str(label)
                raise ValueError(
                    f"class-balanced {split} split needs {count} rows of class {name!r}, but only "
                    f"{candidates.size} rows carrying it are left ({int(positive[:, label].sum())} in the data, "
                    f"per class: {per_class[0]} query + {per_class[1]} validation + {per_class[2]} train, "
                    "drawn from the rarest class up)"
                )
            picked = rng.choice(candidates, size=count, replace=False)
            available[picked] = False
            drawn.append(picked)
        splits[split] = np.concatenate(drawn) if drawn else np.zeros(0, dtype=np.int64)
    return validate_splits(splits, num_rows, source="class-balanced splits")
