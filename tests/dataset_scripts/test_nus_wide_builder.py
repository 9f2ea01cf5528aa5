"""NUS-WIDE builder on tiny files in the real formats: DCMH-style v7.3 .mat files and the official
Groundtruth/AllLabels + NUS_WID_Tags text matrices (folders or zips)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_fixtures import (
    assert_split_contract,
    build,
    decode,
    split_rows,
    write_mat5,
    write_mat73,
    write_zip,
)

from dataset_scripts import label_names, split_recipe

PER_CLASS = {"query_per_class": 2, "validation_per_class": 2, "train_per_class": 5}
CONCEPTS = ("animal", "beach", "clouds", "sky", "water")  # positives: 60, 45, 30, 60, 8 of 150
N, VOCAB, FEAT = 150, 12, 6


def _official_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros((N, len(CONCEPTS)), dtype=np.uint8)
    for column, count in enumerate((60, 45, 30, 60, 8)):
        labels[rng.choice(N, size=count, replace=False), column] = 1
    tags = (rng.random((N, VOCAB)) < 0.15).astype(np.uint8)
    tags[:20:3] = 0  # some images without any of the 1k tags
    return {"labels": labels, "tags": tags, "features": rng.normal(size=(N, FEAT)).astype(np.float32)}


def _write_official(directory, arrays, *, zipped: bool, label_overrides=None):
    directory.mkdir(parents=True, exist_ok=True)
    label_files = {
        f"Groundtruth/AllLabels/Labels_{c}.txt": "".join(f"{v}\n" for v in arrays["labels"][:, j]).encode()
        for j, c in enumerate(CONCEPTS)
    }
    label_files["Groundtruth/TrainTestLabels/Labels_sky_Train.txt"] = b"1\n0\n"  # not an AllLabels file
    label_files.update(label_overrides or {})
    tag_files = {
        "NUS_WID_Tags/AllTags1k.txt": "".join(
            "\t".join(map(str, row)) + "\n" for row in arrays["tags"]
        ).encode(),
        "NUS_WID_Tags/TagList1k.txt": "".join(f"tag{k}\n" for k in range(VOCAB)).encode(),
    }
    if zipped:
        write_zip(directory / "Groundtruth.zip", label_files)
        write_zip(directory / "NUS_WID_Tags.zip", tag_files)
    else:
        for name, data in {**label_files, **tag_files}.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
    np.save(directory / "image_features.npy", arrays["features"])
    return directory


def _reference(arrays, num_concepts):
    """Plain-loop reference: top concepts by count (ties alphabetical), rows with a tag (labelled or not)."""
    counts = {c: int(arrays["labels"][:, j].sum()) for j, c in enumerate(CONCEPTS)}
    chosen = sorted(CONCEPTS, key=lambda c: (-counts[c], c))[:num_concepts]
    rows = {}
    for i in range(N):
        labels = [int(arrays["labels"][i, CONCEPTS.index(c)]) for c in chosen]
        if arrays["tags"][i].any():
            rows[i] = labels
    return chosen, rows


@pytest.mark.parametrize("zipped", [False, True])
def test_official_layout_matches_loop_reference(tmp_path, zipped):
    arrays = _official_arrays()
    data_dir = _write_official(tmp_path / "nus", arrays, zipped=zipped)
    ds = build(
        "nus_wide", data_dir, tmp_path / "cache", config_name="tc21_official", num_concepts=3, **PER_CLASS
    )
    chosen, reference = _reference(arrays, 3)
    assert label_names(ds) == chosen == ["animal", "sky", "beach"]
    recipe = split_recipe(ds)
    assert recipe["rows"] == len(reference) and recipe["method"] == "class_balanced"
    assert recipe["vocabulary"] == [f"tag{k}" for k in range(VOCAB)]
    assert recipe["unlabelled_rows_kept"] == sum(not any(v) for v in reference.values()) > 0
    assert_split_contract(ds, num_query=6, num_validation=6, num_train=15, num_rows=len(reference))
    for split in ("query", "validation", "train"):
        assert np.asarray(ds[split]["labels"]).any(axis=1).all(), split  # unlabelled rows: database only
        per_class = np.asarray(ds[split]["labels"]).sum(axis=0)
        assert np.all(per_class >= {"query": 2, "validation": 2, "train": 5}[split]), (split, per_class)
    database = ds["database"]
    assert set(database["index"]) | set(ds["query"]["index"]) == set(reference)
    for example in database.select(range(10)):
        i = example["index"]
        assert example["labels"] == reference[i]
        np.testing.assert_array_equal(example["text_features"], arrays["tags"][i])
        np.testing.assert_allclose(example["image_features"], arrays["features"][i])


def test_official_cached_load_does_not_parse_the_files(tmp_path, monkeypatch):
    from dataset_scripts.nus_wide import NusWide

    data_dir = _write_official(tmp_path / "nus", _official_arrays(), zipped=False)
    options = {"config_name": "tc21_official", "num_concepts": 3, **PER_CLASS}
    first = build("nus_wide", data_dir, tmp_path / "cache", **options)

    def fail(self):
        raise AssertionError("a cached load parsed the official files")

    monkeypatch.setattr(NusWide, "_load_official", fail)
    again = build("nus_wide", data_dir, tmp_path / "cache", **options)
    assert split_recipe(again) == split_recipe(first) and label_names(again) == label_names(first)
    for split in first:
        assert again[split].to_dict() == first[split].to_dict(), split


@pytest.fixture(scope="module")
def mat_data(tmp_path_factory):
    rng = np.random.default_rng(3)
    n = 60
    labels = (rng.random((n, 3)) < 0.4).astype(np.float64)
    labels[np.arange(n), rng.integers(0, 3, n)] = 1
    labels[[4, 11]] = 0  # no label -> dropped
    bow = (rng.random((n, VOCAB)) < 0.3).astype(np.float64)
    bow[[7, 11, 30]] = 0  # empty bag of words -> dropped
    images = rng.integers(0, 256, (n, 5, 7, 3), dtype=np.uint8)
    directory = tmp_path_factory.mktemp("nus_mat")
    write_mat73(directory / "nus-wide-tc10-iall.mat", {"IAll": images.transpose(1, 2, 3, 0)})
    write_mat73(directory / "nus-wide-tc10-yall.mat", {"YAll": bow})
    write_mat73(directory / "nus-wide-tc10-lall.mat", {"LAll": labels})
    return directory, {"labels": labels, "bow": bow, "images": images}


def test_mat_layout_drops_incomplete_pairs(mat_data, tmp_path):
    directory, arrays = mat_data
    ds = build("nus_wide", directory, tmp_path, config_name="tc10", num_concepts=3, **PER_CLASS)
    recipe = split_recipe(ds)
    # rows 7, 11, 30 have an empty bag of words: dropped; row 4 has no label: kept, as the release keeps it
    assert (recipe["unlabelled_rows_kept"], recipe["dropped_empty_text"], recipe["rows"]) == (1, 3, 57)
    assert "dropped_without_label" not in recipe
    assert_split_contract(ds, num_query=6, num_validation=6, num_train=15, num_rows=57)
    kept = set(split_rows(ds)["database"]) | set(split_rows(ds)["query"])
    assert kept == set(range(60)) - {7, 11, 30}  # index = row in the .mat files
    assert 4 in split_rows(ds)["database"]
    for example in ds["query"]:
        i = example["index"]
        np.testing.assert_array_equal(decode(example["image"]), arrays["images"][i])
        np.testing.assert_array_equal(example["text_features"], arrays["bow"][i])
        np.testing.assert_array_equal(example["labels"], arrays["labels"][i])
    again = build("nus_wide", directory, tmp_path / "again", config_name="tc10", num_concepts=3, **PER_CLASS)
    for name, rows in split_rows(ds).items():
        np.testing.assert_array_equal(rows, split_rows(again)[name])


def test_mat_label_width_must_match_num_concepts(mat_data, tmp_path):
    with pytest.raises(ValueError, match=r"nus-wide-tc10-lall.mat:LAll: expected 10 label columns, got 3"):
        build("nus_wide", mat_data[0], tmp_path, config_name="tc10", **PER_CLASS)


def test_too_few_rows_per_class(mat_data, tmp_path):
    with pytest.raises(ValueError, match=r"class-balanced query split needs 100 rows of class 'label_0\d'"):
        build("nus_wide", mat_data[0], tmp_path, config_name="tc10", num_concepts=3)


def test_official_bad_inputs(tmp_path):
    arrays = _official_arrays()
    options = {"config_name": "tc21_official", "num_concepts": 3, **PER_CLASS}
    short = {"Groundtruth/AllLabels/Labels_beach.txt": b"0\n" * (N - 1)}
    data_dir = _write_official(tmp_path / "a", arrays, zipped=False, label_overrides=short)
    with pytest.raises(ValueError, match=r"row counts disagree.*Labels_beach.txt has 149"):
        build("nus_wide", data_dir, tmp_path / "c1", **options)
    not_binary = {"Groundtruth/AllLabels/Labels_beach.txt": b"2\n" * N}
    data_dir = _write_official(tmp_path / "b", arrays, zipped=True, label_overrides=not_binary)
    with pytest.raises(
        ValueError,
        match=r"Groundtruth.zip:Groundtruth/AllLabels/Labels_beach.txt: expected 0/1 values, got 2",
    ):
        build("nus_wide", data_dir, tmp_path / "c2", **options)
    data_dir = _write_official(tmp_path / "c", {**arrays, "tags": arrays["tags"][:-1]}, zipped=True)
    with pytest.raises(ValueError, match=r"row counts disagree.*AllTags1k.txt has 149"):
        build("nus_wide", data_dir, tmp_path / "c3", **options)
    data_dir = _write_official(tmp_path / "d", arrays, zipped=True)
    with pytest.raises(ValueError, match=r"concepts \['mountain'\] have no Labels_<concept>.txt"):
        build("nus_wide", data_dir, tmp_path / "c4", concepts=("sky", "mountain"), **options)
    (data_dir / "image_features.npy").unlink()
    with pytest.raises(ValueError, match="required file 'image_features.npy' not found"):
        build("nus_wide", data_dir, tmp_path / "c5", **options)


def _write_release_lists(folder, *, query, validation, train):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("test", query), ("val", validation), ("train", train)):
        np.save(folder / f"{name}_data_list.npy", np.asarray(rows, dtype=np.int64))
    return folder


def test_split_files_list_original_rows(mat_data, tmp_path):
    # Rows 7, 11, 30 are dropped (empty bag of words): positions and original rows differ after row 7.
    directory = mat_data[0]
    options = {"config_name": "tc10", "num_concepts": 3}
    split_json = tmp_path / "splits.json"
    split_json.write_text('{"query": [8, 9, 40], "validation": [12], "train": [0, 31, 59]}')
    ds = build("nus_wide", directory, tmp_path / "c1", split_file=str(split_json), **options)
    rows = split_rows(ds)
    assert rows["query"].tolist() == [8, 9, 40] and rows["train"].tolist() == [0, 31, 59]
    assert rows["validation"].tolist() == [12]
    assert set(rows["database"]) == set(range(60)) - {7, 11, 30, 8, 9, 40}
    # the release's *_data_list.npy files, read directly (test = query)
    release = _write_release_lists(tmp_path / "release", query=[40, 9, 8], validation=[12], train=[59, 0, 31])
    again = build("nus_wide", directory, tmp_path / "c2", split_file=str(release), **options)
    for name in rows:
        np.testing.assert_array_equal(split_rows(again)[name], rows[name])
    assert split_recipe(again)["method"] == "file"


def test_split_file_naming_a_dropped_row_says_why(mat_data, tmp_path):
    release = _write_release_lists(tmp_path / "release", query=[8, 30], validation=[12], train=[0])
    with pytest.raises(
        ValueError,
        match=r"release: split 'query' names original row 30, but the builder dropped it \(empty bag of words\)",
    ):
        build(
            "nus_wide",
            mat_data[0],
            tmp_path / "c",
            split_file=str(release),
            config_name="tc10",
            num_concepts=3,
        )
    release = _write_release_lists(tmp_path / "beyond", query=[8, 60], validation=[12], train=[0])
    with pytest.raises(
        ValueError, match=r"names original row 60, but no such row exists in the source files"
    ):
        build(
            "nus_wide",
            mat_data[0],
            tmp_path / "c",
            split_file=str(release),
            config_name="tc10",
            num_concepts=3,
        )


def test_split_file_edited_in_place_is_read_again(mat_data, tmp_path):
    options = {"config_name": "tc10", "num_concepts": 3}
    release = _write_release_lists(tmp_path / "release", query=[8, 9], validation=[12], train=[0])
    first = build("nus_wide", mat_data[0], tmp_path / "cache", split_file=str(release), **options)
    assert split_rows(first)["query"].tolist() == [8, 9]
    _write_release_lists(release, query=[20, 21, 22], validation=[12], train=[0])
    edited = build("nus_wide", mat_data[0], tmp_path / "cache", split_file=str(release), **options)
    assert split_rows(edited)["query"].tolist() == [20, 21, 22]
    assert split_recipe(edited)["split_file_sha256"] != split_recipe(first)["split_file_sha256"]


def test_mat_v5_sparse_bag_of_words_and_labels(tmp_path):
    import scipy.sparse

    rng = np.random.default_rng(5)
    n = 40
    labels = (rng.random((n, 3)) < 0.5).astype(np.float64)
    labels[np.arange(n), rng.integers(0, 3, n)] = 1
    bow = (rng.random((n, VOCAB)) < 0.3).astype(np.float64)
    bow[[2, 9]] = 0  # empty bag of words: dropped
    features = rng.normal(size=(n, FEAT)).astype(np.float32)
    write_mat5(tmp_path / "nus-wide-tc10-yall.mat", {"YAll": scipy.sparse.csc_matrix(bow)})
    write_mat5(tmp_path / "nus-wide-tc10-lall.mat", {"LAll": scipy.sparse.csc_matrix(labels)})
    write_mat5(tmp_path / "nus-wide-tc10-xall.mat", {"XAll": features})
    ds = build(
        "nus_wide", tmp_path, tmp_path / "cache", config_name="tc10_features", num_concepts=3, **PER_CLASS
    )
    assert split_recipe(ds)["rows"] == n - 2
    for example in ds["database"]:
        i = example["index"]
        np.testing.assert_array_equal(example["text_features"], bow[i])
        np.testing.assert_array_equal(example["labels"], labels[i])
        np.testing.assert_allclose(example["image_features"], features[i])
