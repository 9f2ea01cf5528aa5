"""Shared dataset contract: split recipes, split validation, label conversion, row readers, schema."""

import json

import datasets
import h5py
import numpy as np
import pytest
import scipy.io

from dataset_scripts._readers import transpose
from dataset_scripts.common import (
    ArrayRows,
    CRCGSBuilder,
    CRCGSBuilderConfig,
    H5Rows,
    MissingFileError,
    NpyRows,
    SourceData,
    check_finite,
    check_nonempty_labels,
    check_row_counts,
    class_balanced_splits,
    describe_split_recipe,
    iter_row_blocks,
    label_names,
    load_array,
    make_features,
    make_info,
    make_splits,
    open_matrix,
    random_splits,
    read_split_file,
    require_file,
    split_method,
    to_multi_hot,
    validate_splits,
)


def _random_multi_hot(rng, num_rows, num_labels, density=0.3):
    labels = (rng.random((num_rows, num_labels)) < density).astype(np.int8)
    labels[np.arange(num_rows), rng.integers(0, num_labels, num_rows)] = 1  # no empty row
    return labels


def _assert_protocol(splits, num_rows):
    for a, b in (("query", "train"), ("query", "validation"), ("train", "validation"), ("query", "database")):
        assert np.intersect1d(splits[a], splits[b]).size == 0, (a, b)
    np.testing.assert_array_equal(np.union1d(splits["query"], splits["database"]), np.arange(num_rows))
    for rows in splits.values():
        assert np.all(np.diff(rows) > 0)  # sorted, unique


# ---------------------------------------------------------------------------------- random splits


def test_random_splits_sizes_disjoint_and_deterministic():
    splits = random_splits(1000, num_query=100, num_validation=50, num_train=400, seed=7)
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 400,
        "validation": 50,
        "query": 100,
        "database": 900,
    }
    _assert_protocol(splits, 1000)
    again = random_splits(1000, num_query=100, num_validation=50, num_train=400, seed=7)
    other = random_splits(1000, num_query=100, num_validation=50, num_train=400, seed=8)
    for name in splits:
        np.testing.assert_array_equal(splits[name], again[name])
    assert not np.array_equal(splits["query"], other["query"])


def test_random_splits_train_defaults_to_all_remaining_rows():
    splits = random_splits(200, num_query=20, num_validation=30, num_train=None, seed=0)
    assert len(splits["train"]) == 150
    assert np.union1d(np.union1d(splits["train"], splits["validation"]), splits["query"]).size == 200


def test_random_splits_too_large_raises():
    with pytest.raises(ValueError, match="more than the 100 rows"):
        random_splits(100, num_query=50, num_validation=30, num_train=30, seed=0)


# -------------------------------------------------------------------------- class-balanced splits


# Hand fixture: classes R (column 0) and K (column 1); row 5 has no label.
#   row:  0   1   2   3   4   5   6
#   R:    1   1   1   0   0   0   0     3 positives: the rarer class, drawn first
#   K:    1   0   0   1   1   0   1     4 positives
# Query pass, one row per class: R draws one of {0, 1, 2} (1/3 each); K then draws among the K rows still
# left: {3, 4, 6} (1/3 each) when R took row 0, else {0, 3, 4, 6} (1/4 each). So query = {0, x} has
# probability 1/3 * 1/3 for x in {3, 4, 6}, and {r, x} for r in {1, 2} has 1/3 * 1/4 for x in {0, 3, 4, 6};
# row 0, with two labels, is a query with probability 1/3 + 2/3 * 1/4 = 1/2, rows 3, 4, 6 with 1/4 + 1/12.
_HAND_LABELS = np.array([[1, 1], [1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 1]], dtype=np.int8)


def _hand_query_probabilities():
    probabilities = {(0, x): 1 / 9 for x in (3, 4, 6)}
    for r in (1, 2):
        for x in (0, 3, 4, 6):
            probabilities[tuple(sorted((r, x)))] = 1 / 12
    return probabilities


def test_class_balanced_follows_the_release_sampler_by_hand():
    expected = _hand_query_probabilities()
    assert abs(sum(expected.values()) - 1) < 1e-12
    trials = 3000
    seen = {}
    for seed in range(trials):
        splits = class_balanced_splits(
            _HAND_LABELS, query_per_class=1, validation_per_class=0, train_per_class=1, seed=seed
        )
        key = tuple(splits["query"].tolist())
        seen[key] = seen.get(key, 0) + 1
        assert 5 not in splits["query"] and 5 not in splits["train"]  # unlabelled: never drawn
        assert 5 in splits["database"]
        assert _HAND_LABELS[splits["train"]].sum(axis=0).min() >= 1
    assert set(seen) == set(expected)  # exactly the hand-enumerated outcomes
    for key, probability in expected.items():
        sigma = np.sqrt(probability * (1 - probability) / trials)
        assert abs(seen[key] / trials - probability) < 4.5 * sigma, (key, seen[key], probability)


def test_class_balanced_takes_rows_the_one_label_assignment_could_not():
    # Every row of the rare class also carries the common one: assigning each row to one of its labels
    # would leave the rare class about 7 of its 14 rows, fewer than the 9 it needs; drawing it first,
    # per pass, takes 3 of the rare rows left each time.
    labels = np.zeros((400, 2), dtype=np.int8)
    labels[:, 1] = 1
    labels[:14, 0] = 1
    splits = class_balanced_splits(
        labels, query_per_class=3, validation_per_class=3, train_per_class=3, seed=0, label_names=["r", "c"]
    )
    for name in ("query", "validation", "train"):
        assert len(splits[name]) == 6
        assert labels[splits[name], 0].sum() >= 3
    _assert_protocol(splits, 400)


def test_class_balanced_every_class_represented_and_deterministic():
    rng = np.random.default_rng(1)
    labels = _random_multi_hot(rng, 900, 6, density=0.2)
    a = class_balanced_splits(labels, query_per_class=5, validation_per_class=5, train_per_class=20, seed=3)
    b = class_balanced_splits(labels, query_per_class=5, validation_per_class=5, train_per_class=20, seed=3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert labels[a["query"]].sum(axis=0).min() >= 5  # every class has >= its own quota of queries
    assert labels[a["train"]].sum(axis=0).min() >= 20


def test_class_balanced_too_few_rows_names_the_class_and_pass():
    labels = np.zeros((50, 3), dtype=np.int8)
    labels[:45, 0] = 1
    labels[30:, 1] = 1
    labels[:6, 2], labels[:6, 0] = 1, 0  # 6 rows of 'rare' only: query and validation take 2 each
    with pytest.raises(
        ValueError,
        match=r"class-balanced train split needs 5 rows of class 'rare', but only 2 rows carrying it",
    ):
        class_balanced_splits(
            labels,
            query_per_class=2,
            validation_per_class=2,
            train_per_class=5,
            seed=0,
            label_names=["a", "b", "rare"],
        )


def test_config_precedence_and_recipe(tmp_path):
    assert split_method(CRCGSBuilderConfig(name="x")) == "random"
    cfg = CRCGSBuilderConfig(name="x", query_per_class=1, validation_per_class=1, train_per_class=2, seed=5)
    assert split_method(cfg) == "class_balanced"
    assert describe_split_recipe(cfg)["train_per_class"] == 2
    with pytest.raises(ValueError, match="together"):
        split_method(CRCGSBuilderConfig(name="x", query_per_class=1))
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": [0, 1], "validation": [2], "query": [3]}))
    cfg = CRCGSBuilderConfig(
        name="x", split_file=str(path), query_per_class=1, validation_per_class=1, train_per_class=1
    )
    assert split_method(cfg) == "file"
    assert len(describe_split_recipe(cfg)["split_file_sha256"]) == 64
    splits = make_splits(cfg, np.ones((6, 2), dtype=np.int8))
    np.testing.assert_array_equal(splits["database"], [0, 1, 2, 4, 5])
    default = make_splits(CRCGSBuilderConfig(name="x"), np.ones((100, 2), dtype=np.int8))
    assert len(default["query"]) == 10 and len(default["validation"]) == 10 and len(default["train"]) == 80


# ------------------------------------------------------------------------------ split validation


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": [0, 1], "validation": [2], "query": [10]}, r"row index 10 outside \[0, 10\)"),
        ({"train": [0, 1], "validation": [2], "query": [-1]}, "row index -1 outside"),
        ({"train": [0, 1, 1], "validation": [2], "query": [3]}, "lists row 1 more than once"),
        ({"train": [0, 1, 3], "validation": [2], "query": [3]}, "'query' and 'train' must be disjoint"),
        ({"train": [0, 1], "validation": [2, 3], "query": [3]}, "'query' and 'validation' must be disjoint"),
        ({"train": [0, 2], "validation": [2], "query": [3]}, "'train' and 'validation' must be disjoint"),
        ({"train": [0], "validation": [2], "query": [3], "test": [4]}, r"unknown split names \['test'\]"),
        ({"train": [0], "query": [3]}, r"missing splits \['validation'\]"),
        ({"train": [0.5], "validation": [2], "query": [3]}, "integer row indices"),
        ({"train": [], "validation": [2], "query": [3]}, "'train' is empty"),
    ],
)
def test_validate_splits_errors(splits, message):
    with pytest.raises(ValueError, match=message):
        validate_splits(splits, 10, source="my_splits.json")


def test_a_given_database_may_overlap_the_queries_a_derived_one_never_does():
    classic = validate_splits({"train": [0, 1], "validation": [2], "query": [3, 4], "database": [4, 3]}, 10)
    np.testing.assert_array_equal(classic["database"], classic["query"])  # query = database = the test pairs
    derived = validate_splits({"train": [0, 1], "validation": [2], "query": [3, 4]}, 10)
    assert np.intersect1d(derived["query"], derived["database"]).size == 0


def test_read_split_file_errors_name_the_file(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="splits.json: not valid JSON"):
        read_split_file(path, 10)
    path.write_text(json.dumps({"train": [0, True], "validation": [], "query": [1]}))
    with pytest.raises(ValueError, match="splits.json: split 'train' must be a list of integer"):
        read_split_file(path, 10)
    with pytest.raises(MissingFileError, match="absent.json"):
        read_split_file(tmp_path / "absent.json", 10)


def test_read_split_file_maps_original_rows(tmp_path):
    index = np.array([0, 2, 3, 5, 9])  # original rows 1, 4, 6, 7, 8 were dropped
    dropped = {"no label": np.array([1, 4]), "empty bag of words": np.array([6, 7, 8])}
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": [9, 0], "validation": [3], "query": [5]}))
    splits = read_split_file(path, 5, index=index, dropped=dropped)
    assert {k: v.tolist() for k, v in splits.items()} == {
        "train": [0, 4],
        "validation": [2],
        "query": [3],
        "database": [0, 1, 2, 4],
    }
    path.write_text(json.dumps({"train": [0], "validation": [3], "query": [4, 7]}))
    with pytest.raises(
        ValueError,
        match=r"splits.json: split 'query' names original row 4, but the builder dropped it \(no label\); 2 rows",
    ):
        read_split_file(path, 5, index=index, dropped=dropped)


def test_read_split_file_release_folder(tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    np.save(folder / "train_data_list.npy", np.array([4, 0]))
    np.save(folder / "test_data_list.npy", np.array([2]))
    with pytest.raises(MissingFileError, match=r"split folder .*release' lacks \['val_data_list.npy'\]"):
        read_split_file(folder, 6)
    np.save(folder / "val_data_list.npy", np.array([1.0]))
    with pytest.raises(ValueError, match=r"release/val_data_list.npy: expected a 1-D integer array"):
        read_split_file(folder, 6)
    np.save(folder / "val_data_list.npy", np.array([1]))
    splits = read_split_file(folder, 6)
    assert {k: v.tolist() for k, v in splits.items()} == {
        "train": [0, 4],
        "validation": [1],
        "query": [2],
        "database": [0, 1, 3, 4, 5],
    }


# ----------------------------------------------------------------------------- labels and checks


def test_to_multi_hot_class_ids_and_matlab_vectors():
    ids = np.array([2, 0, 1, 2])
    expected = np.eye(3, dtype=np.int8)[ids]
    np.testing.assert_array_equal(to_multi_hot(ids, source="l"), expected)
    np.testing.assert_array_equal(to_multi_hot(ids[:, None].astype(float), source="l"), expected)  # (N, 1)
    np.testing.assert_array_equal(to_multi_hot(ids[None, :], source="l"), expected)  # (1, N)
    assert to_multi_hot(ids, source="l", num_labels=5).shape == (4, 5)
    multi = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float64)
    out = to_multi_hot(multi, source="l")
    assert out.dtype == np.int8 and out.tolist() == [[1, 0, 1], [0, 1, 0]]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[1, 2], [0, 1]]), "must be 0 or 1, got 2 at row 0, column 1"),
        (np.array([[1.0, np.nan], [0, 1]]), "expected finite labels"),
        (np.array([0, -1, 2]), r"class ids must lie in \[0, 3\)"),
        (np.array([0.5, 1.0]), "integer class ids"),
        (np.zeros((2, 2, 2)), "shape"),
        (np.array(["a", "b"]), "numeric labels"),
    ],
)
def test_to_multi_hot_errors_name_the_source(labels, message):
    with pytest.raises(ValueError, match=message) as info:
        to_multi_hot(labels, source="labels.npy")
    assert "labels.npy" in str(info.value)


def test_checks_name_file_field_and_row(tmp_path):
    with pytest.raises(ValueError, match="image_features.npy has 10, labels.npy has 9"):
        check_row_counts({"image_features.npy": 10, "labels.npy": 9})
    assert check_row_counts({"a": 3, "b": 3}) == 3
    block = np.ones((4, 3))
    block[2, 1] = np.inf
    with pytest.raises(ValueError, match="img.mat:X: expected finite values, got inf at row 42, column 1"):
        check_finite(block, source="img.mat:X", rows=np.array([5, 9, 42, 50]))
    with pytest.raises(ValueError, match=r"lab: 1 rows have no label \(first rows: \[1\]\)"):
        check_nonempty_labels(np.array([[1, 0], [0, 0]], dtype=np.int8), source="lab")
    with pytest.raises(MissingFileError, match="'labels.npy' not found"):
        require_file(tmp_path, "labels.npy", dataset="features")
    with pytest.raises(ValueError, match="needs data_dir"):
        require_file(None, "labels.npy")


# ------------------------------------------------------------------------------------ row readers


def test_iter_row_blocks_matches_loop():
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(103, size=40, replace=False))
    got = [(s, e, sel.tolist()) for s, e, sel in iter_row_blocks(103, rows, 10)]
    expected = []
    for start in range(0, 103, 10):
        selected = [r for r in rows.tolist() if start <= r < start + 10]
        if selected:
            expected.append((start, min(start + 10, 103), selected))
    assert got == expected
    with pytest.raises(ValueError, match="chunk_rows"):
        list(iter_row_blocks(10, rows, 0))


def _write_mat_v73(path, arrays):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte MAT header, column-major matrices."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, value in arrays.items():
            dataset = handle.create_dataset(key, data=np.asarray(value).T)
            dataset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: crcgs tests HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def test_tiled_transpose_matches_numpy():
    matrix = np.arange(130 * 70, dtype=np.float32).reshape(130, 70)
    out = transpose(matrix, tile=16)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, matrix.T)


def test_readers_agree_across_formats(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((37, 5)).astype(np.float32)
    np.save(tmp_path / "c.npy", matrix)
    np.save(tmp_path / "f.npy", np.asfortranarray(matrix))
    np.savez(tmp_path / "a.npz", x=matrix)
    scipy.io.savemat(tmp_path / "v5.mat", {"x": matrix})
    _write_mat_v73(tmp_path / "v73.mat", {"x": matrix})
    with h5py.File(tmp_path / "plain.h5", "w") as handle:
        handle.create_dataset("x", data=matrix)
    readers = {
        "c.npy": open_matrix(tmp_path / "c.npy"),
        "f.npy": open_matrix(tmp_path / "f.npy"),
        "a.npz": open_matrix(tmp_path / "a.npz", "x"),
        "v5.mat": open_matrix(tmp_path / "v5.mat", "x"),
        "v73.mat": open_matrix(tmp_path / "v73.mat", "x"),
        "plain.h5": open_matrix(tmp_path / "plain.h5", "x"),
    }
    assert isinstance(readers["c.npy"], NpyRows) and isinstance(readers["v73.mat"], H5Rows)
    assert isinstance(readers["v5.mat"], ArrayRows)
    assert readers["v73.mat"].matlab_layout and not readers["plain.h5"].matlab_layout
    for name, reader in readers.items():
        assert reader.shape == (37, 5), name
        np.testing.assert_allclose(reader.read_rows(8, 21), matrix[8:21], err_msg=name)
        np.testing.assert_allclose(reader.read_rows(30, 99), matrix[30:], err_msg=name)
        few, most = np.array([1, 7]), np.array([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        np.testing.assert_allclose(reader.read_rows(20, 33, few), matrix[20 + few], err_msg=name)
        np.testing.assert_allclose(reader.read_rows(20, 33, most), matrix[20 + most], err_msg=name)
        np.testing.assert_allclose(load_array(tmp_path / name, "x"), matrix, err_msg=name)


def test_reader_errors_name_file_and_key(tmp_path):
    np.savez(tmp_path / "a.npz", img=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"a.npz: no array named 'x'; available keys: \['img'\]"):
        open_matrix(tmp_path / "a.npz", "x")
    scipy.io.savemat(tmp_path / "v5.mat", {"img": np.ones((3, 2))})
    with pytest.raises(ValueError, match=r"v5.mat: no variable named 'x'; available keys: \['img'\]"):
        open_matrix(tmp_path / "v5.mat", "x")
    _write_mat_v73(tmp_path / "v73.mat", {"img": np.ones((3, 2))})
    with pytest.raises(ValueError, match=r"v73.mat: no dataset named 'x'; available keys: \['img'\]"):
        open_matrix(tmp_path / "v73.mat", "x")
    with pytest.raises(ValueError, match=r"v73.mat: no dataset named 'x'"):
        load_array(tmp_path / "v73.mat", "x")
    np.save(tmp_path / "vec.npy", np.ones(4))
    with pytest.raises(
        ValueError, match=r"vec.npy: expected a 2-D \(num_rows, dim\) matrix, got shape \(4,\)"
    ):
        open_matrix(tmp_path / "vec.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        open_matrix(tmp_path / "x.csv")


# ----------------------------------------------------------------------------------------- schema


def test_make_features_and_label_names():
    features = make_features(["cat", "dog"], image_dim=4, text_dim=3, with_text=True)
    assert list(features) == ["index", "image_features", "text_features", "text", "labels", "label_ids"]
    assert features["labels"] == datasets.List(datasets.Value("int8"), length=2)
    assert features["image_features"] == datasets.List(datasets.Value("float32"), length=4)
    assert label_names(features) == ["cat", "dog"]
    ds = datasets.Dataset.from_dict(
        {
            "index": [0],
            "image_features": [[0.0] * 4],
            "text_features": [[0.0] * 3],
            "text": ["a"],
            "labels": [[1, 0]],
            "label_ids": [[0]],
        },
        features=features,
    )
    assert label_names(ds) == label_names(datasets.DatasetDict({"train": ds})) == ["cat", "dog"]
    with pytest.raises(ValueError, match="unique"):
        make_features(["a", "a"], image_dim=1, text_dim=1)
    with pytest.raises(ValueError, match="image_features"):
        make_features(["a"], text_dim=1)
    with pytest.raises(ValueError, match="label_ids"):
        label_names(datasets.Features({"x": datasets.Value("int8")}))


class _ToyBuilder(CRCGSBuilder):
    """A builder whose source dropped rows: ``index`` holds the original row numbers."""

    BUILDER_CONFIGS = [CRCGSBuilderConfig(name="default", num_query=4, num_validation=3, num_train=10)]

    def _info(self):
        features = make_features(["a", "b", "c"], image_dim=2, text_dim=3)
        return make_info(self.config, features, description="toy")

    def _load_source(self):
        rng = np.random.default_rng(0)
        labels = np.eye(3, dtype=np.int8)[np.arange(30) % 3]
        return SourceData(
            labels=labels,
            label_names=["a", "b", "c"],
            image_features=ArrayRows(rng.random((30, 2)), source="img"),
            text_features=ArrayRows(rng.random((30, 3)), source="txt"),
            index=np.arange(30) * 10 + 7,
        )


def test_source_index_maps_positions_to_original_rows(tmp_path):
    builder = _ToyBuilder(cache_dir=str(tmp_path), chunk_rows=4)
    builder.download_and_prepare()
    ds = builder.as_dataset()
    positions = random_splits(30, num_query=4, num_validation=3, num_train=10, seed=0)
    for name in ds:
        assert ds[name]["index"] == (positions[name] * 10 + 7).tolist()
    assert ds["train"][0]["labels"] == np.eye(3, dtype=int)[positions["train"][0] % 3].tolist()
    with pytest.raises(ValueError, match="row counts disagree.*index has 29"):
        SourceData(labels=np.ones((30, 1), np.int8), label_names=["a"], index=np.arange(29))


def test_source_digest_covers_the_builder_and_its_helper_modules(monkeypatch):
    """The cache key (builder hash) changes with the builder's module and with each helper module it runs."""
    import inspect

    from dataset_scripts import _raw_formats, get_builder_class
    from dataset_scripts.common import source_digest

    nus_wide, synthetic = get_builder_class("nus_wide"), get_builder_class("synthetic")
    before = {cls: source_digest(cls) for cls in (nus_wide, synthetic)}
    assert source_digest(get_builder_class("mirflickr25k")) != before[nus_wide]
    read = inspect.getsource
    monkeypatch.setattr(
        inspect, "getsource", lambda obj: read(obj) + ("# edited" if obj is _raw_formats else "")
    )
    assert source_digest(nus_wide) != before[nus_wide]  # _raw_formats is one of its SOURCE_MODULES
    assert source_digest(synthetic) == before[synthetic]  # not read by the synthetic builder
