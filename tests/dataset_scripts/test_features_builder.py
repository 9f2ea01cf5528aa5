"""The `features` builder: a user's pre-extracted arrays in .npy / .npz / MATLAB v5 / MATLAB v7.3 files."""

import json

import datasets
import h5py
import numpy as np
import pytest
import scipy.io

from dataset_scripts import label_names, load_crcgs_dataset, split_recipe
from dataset_scripts.common import MissingFileError

N, DI, DT, L = 120, 12, 10, 6
SIZES = {"num_query": 15, "num_validation": 10, "num_train": 60}


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((N, L)) < 0.3).astype(np.int8)
    labels[np.arange(N), rng.integers(0, L, N)] = 1
    return {
        "image_features": rng.standard_normal((N, DI)).astype(np.float32),
        "text_features": (rng.random((N, DT)) < 0.2).astype(np.float32),
        "labels": labels,
    }


def _write_mat_v73(path, arrays):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte MAT header, column-major matrices."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, value in arrays.items():
            dataset = handle.create_dataset(key, data=np.asarray(value, dtype=np.float64).T)
            dataset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: crcgs tests HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def _write(folder, fmt, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        for key, value in arrays.items():
            np.save(folder / f"{key}.npy", value)
    elif fmt == "npz":
        np.savez(folder / "features.npz", **arrays)
    elif fmt == "mat_v5":
        scipy.io.savemat(folder / "features.mat", {k: v.astype(np.float64) for k, v in arrays.items()})
    elif fmt == "mat_v73":
        _write_mat_v73(folder / "features.mat", arrays)
    return folder


def _load(folder, tmp_path, **options):
    return load_crcgs_dataset(
        "features", data_dir=str(folder), cache_dir=str(tmp_path / "cache"), **{**SIZES, **options}
    )


@pytest.mark.parametrize("fmt", ["npy", "npz", "mat_v5", "mat_v73"])
def test_every_format_gives_the_same_dataset(tmp_path, fmt):
    arrays = _arrays()
    ds = _load(_write(tmp_path / fmt, fmt, arrays), tmp_path, seed=3)
    assert {name: ds[name].num_rows for name in ds} == {
        "train": 60,
        "validation": 10,
        "query": 15,
        "database": 105,
    }
    features = ds["train"].features
    assert features["image_features"] == datasets.List(datasets.Value("float32"), length=DI)
    assert features["text_features"] == datasets.List(datasets.Value("float32"), length=DT)
    assert features["labels"] == datasets.List(datasets.Value("int8"), length=L)
    assert label_names(ds) == [f"label_{i:02d}" for i in range(L)]
    index = {name: np.asarray(ds[name]["index"]) for name in ds}
    for a, b in (("query", "train"), ("query", "validation"), ("train", "validation"), ("query", "database")):
        assert np.intersect1d(index[a], index[b]).size == 0
    np.testing.assert_array_equal(np.union1d(index["query"], index["database"]), np.arange(N))
    table = ds["database"].with_format("numpy")[:]
    np.testing.assert_allclose(table["image_features"], arrays["image_features"][table["index"]], rtol=1e-6)
    np.testing.assert_array_equal(table["text_features"], arrays["text_features"][table["index"]])
    np.testing.assert_array_equal(table["labels"], arrays["labels"][table["index"]])
    first = ds["query"][0]
    assert first["label_ids"] == np.flatnonzero(arrays["labels"][first["index"]]).tolist()
    # same seed -> identical splits whatever the file format
    reference = random_reference_query(seed=3)
    np.testing.assert_array_equal(index["query"], reference)


def random_reference_query(seed):
    from dataset_scripts.common import random_splits

    return random_splits(N, seed=seed, **SIZES)["query"]


def test_streaming_block_size_does_not_change_the_data(tmp_path):
    folder = _write(tmp_path / "npy", "npy", _arrays())
    small = _load(folder, tmp_path, chunk_rows=7)["train"].with_format("numpy")[:]
    large = _load(folder, tmp_path, chunk_rows=4096)["train"].with_format("numpy")[:]
    for key in ("index", "image_features", "text_features", "labels"):
        np.testing.assert_array_equal(small[key], large[key])


def test_splits_json_label_names_and_class_ids(tmp_path):
    arrays = _arrays()
    arrays["labels"] = np.arange(N) % 4  # integer class ids -> one-hot
    folder = _write(tmp_path / "ids", "npy", arrays)
    split = {"train": list(range(0, 50)), "validation": list(range(50, 60)), "query": list(range(60, 70))}
    (folder / "splits.json").write_text(json.dumps(split))
    (folder / "label_names.txt").write_text("sky\nsea\ndog\ncat\n")
    ds = load_crcgs_dataset("features", data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    assert ds["train"]["index"] == split["train"] and ds["query"]["index"] == split["query"]
    assert ds["database"].num_rows == N - 10
    assert label_names(ds) == ["sky", "sea", "dog", "cat"]
    assert ds["train"][5]["labels"] == [0, 1, 0, 0]
    recipe = split_recipe(ds)
    assert recipe["method"] == "file" and recipe["split_file"].endswith("splits.json")


def test_class_balanced_option_and_determinism(tmp_path):
    folder = _write(tmp_path / "npy", "npy", _arrays())
    options = {"query_per_class": 2, "validation_per_class": 1, "train_per_class": 5}
    a = load_crcgs_dataset("features", data_dir=str(folder), cache_dir=str(tmp_path / "a"), seed=1, **options)
    b = load_crcgs_dataset("features", data_dir=str(folder), cache_dir=str(tmp_path / "b"), seed=1, **options)
    assert a["query"].num_rows == 2 * L and a["train"].num_rows == 5 * L
    for name in a:
        assert a[name]["index"] == b[name]["index"]
    assert split_recipe(a)["method"] == "class_balanced" and split_recipe(a)["seed"] == 1


def _expect_error(folder, tmp_path, match, error=ValueError, **options):
    with pytest.raises(error, match=match):
        _load(folder, tmp_path, **options)


def test_missing_file_and_folder(tmp_path):
    folder = _write(tmp_path / "npy", "npy", _arrays())
    (folder / "labels.npy").unlink()
    _expect_error(folder, tmp_path, r"'labels.npy' not found", MissingFileError)
    _expect_error(tmp_path / "nowhere", tmp_path, "is not a folder", MissingFileError)
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", tmp_path, "holds neither", MissingFileError)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_crcgs_dataset("features", cache_dir=str(tmp_path / "cache"))


def test_wrong_key_and_ambiguous_archives(tmp_path):
    folder = _write(tmp_path / "npz", "npz", _arrays())
    _expect_error(folder, tmp_path, r"features.npz: no array named 'img'", image_key="img")
    _write(folder, "mat_v73", _arrays())
    _expect_error(folder, tmp_path, r"several archives .*data_file=")
    ds = _load(folder, tmp_path, data_file="features.mat")
    assert ds["train"].num_rows == 60
    _expect_error(
        folder, tmp_path, "features.mat: no dataset named 'lab'", data_file="features.mat", labels_key="lab"
    )


def test_row_counts_disagree(tmp_path):
    arrays = _arrays()
    arrays["text_features"] = arrays["text_features"][:-1]
    folder = _write(tmp_path / "npy", "npy", arrays)
    _expect_error(folder, tmp_path, r"row counts disagree.*labels.npy has 120.*text_features.npy has 119")


@pytest.mark.parametrize("fmt", ["npy", "mat_v73"])
def test_non_finite_features_name_file_and_row(tmp_path, fmt):
    arrays = _arrays()
    arrays["image_features"][37, 4] = np.nan
    folder = _write(tmp_path / fmt, fmt, arrays)
    name = "image_features.npy" if fmt == "npy" else "features.mat:image_features"
    _expect_error(
        folder, tmp_path, rf"{name} \(image_features\): expected finite values, got nan at row 37, column 4"
    )


def test_empty_label_rows(tmp_path):
    arrays = _arrays()
    arrays["labels"][[3, 8]] = 0
    folder = _write(tmp_path / "npy", "npy", arrays)
    _expect_error(folder, tmp_path, r"labels.npy: 2 rows have no label \(first rows: \[3, 8\]\)")
    ds = _load(folder, tmp_path, allow_empty_labels=True)
    assert ds["database"].num_rows + ds["query"].num_rows == N


@pytest.mark.parametrize(
    ("split", "match"),
    [
        (
            {"train": [0, 1], "validation": [2], "query": [N]},
            rf"splits.json: split 'query' has row index {N} outside",
        ),
        (
            {"train": [0, 1, 1], "validation": [2], "query": [3]},
            "splits.json: split 'train' lists row 1 more than once",
        ),
        (
            {"train": [0, 1, 3], "validation": [2], "query": [3]},
            "splits.json: splits 'query' and 'train' must be disjoint",
        ),
    ],
)
def test_bad_split_file(tmp_path, split, match):
    folder = _write(tmp_path / "npy", "npy", _arrays())
    (folder / "splits.json").write_text(json.dumps(split))
    _expect_error(folder, tmp_path, match)


def test_bad_labels_and_label_names(tmp_path):
    arrays = _arrays()
    arrays["labels"] = arrays["labels"] * 2
    _expect_error(
        _write(tmp_path / "two", "npy", arrays), tmp_path, "labels.npy: multi-hot labels must be 0 or 1"
    )
    folder = _write(tmp_path / "names", "npy", _arrays())
    (folder / "label_names.txt").write_text("a\nb\n")
    _expect_error(folder, tmp_path, r"label_names.txt gives 2 names, expected 6")


def test_unknown_option_and_dataset(tmp_path):
    folder = _write(tmp_path / "npy", "npy", _arrays())
    _expect_error(folder, tmp_path, "doesn't have a 'num_querys' key", num_querys=3)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_crcgs_dataset("cifar")


def test_label_names_option(tmp_path):
    folder = _write(tmp_path / "npy", "npy", _arrays())
    names = ["a", "b", "c", "d", "e", "f"]
    assert label_names(_load(folder, tmp_path, label_names=names)) == names
    _expect_error(folder, tmp_path, "label_names option gives 2 names, expected 6", label_names=["a", "b"])


def test_cached_load_does_not_read_the_source(tmp_path, monkeypatch):
    """A second load takes features, label names and recipe from the cache; force_redownload re-reads."""
    from dataset_scripts.features import FeaturesBuilder

    folder = _write(tmp_path / "npy", "npy", _arrays())
    (folder / "label_names.txt").write_text("".join(f"name{i}\n" for i in range(L)))
    first = _load(folder, tmp_path)
    calls = []
    read_source = FeaturesBuilder._load_source

    def spy(self):
        calls.append(self.config.data_dir)
        return read_source(self)

    monkeypatch.setattr(FeaturesBuilder, "_load_source", spy)
    again = _load(folder, tmp_path)
    assert calls == []
    assert again["train"].info.features == first["train"].info.features
    assert label_names(again) == [f"name{i}" for i in range(L)]
    assert split_recipe(again) == split_recipe(first)
    for name in first:
        assert again[name].num_rows == first[name].num_rows
        for column in ("index", "image_features", "text_features", "labels", "label_ids"):
            assert again[name][column] == first[name][column], (name, column)

    # edited in place: a wider BoW and new names; the cache still answers until force_redownload
    arrays = _arrays(seed=1)
    arrays["text_features"] = np.ones((N, DT + 2), dtype=np.float32)
    _write(folder, "npy", arrays)
    (folder / "label_names.txt").write_text("".join(f"new{i}\n" for i in range(L)))
    assert len(_load(folder, tmp_path)["query"][0]["text_features"]) == DT and calls == []
    fresh = _load(folder, tmp_path, download_mode="force_redownload")
    assert len(calls) == 1
    assert len(fresh["query"][0]["text_features"]) == DT + 2
    assert label_names(fresh) == [f"new{i}" for i in range(L)]
    np.testing.assert_array_equal(
        fresh["query"]["image_features"], arrays["image_features"][fresh["query"]["index"]]
    )


def test_label_names_json_and_its_errors(tmp_path):
    folder = _write(tmp_path / "json", "npy", _arrays())
    names = ["art", "biology", "geography", "history", "media", "music"]
    (folder / "label_names.json").write_text(json.dumps(names))
    assert label_names(_load(folder, tmp_path)) == names
    (folder / "label_names.json").write_text('{"art": 0}')
    _expect_error(folder, tmp_path / "b", "label_names.json must be a JSON list of non-empty label names")
    (folder / "label_names.json").write_text("[broken")
    _expect_error(folder, tmp_path / "c", "label_names.json is not valid JSON")
    (folder / "label_names.json").write_text(json.dumps(names))
    (folder / "label_names.txt").write_text("\n".join(names))
    _expect_error(folder, tmp_path / "d", "both label_names.txt and label_names.json")
