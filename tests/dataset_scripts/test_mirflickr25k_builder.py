"""MIRFLICKR-25K builder on tiny files in the real formats: DCMH .mat (v7.3 images, v5 BoW/labels) and
the official zips (images + tags, concept annotation files)."""

from __future__ import annotations

import datasets
import h5py
import numpy as np
import pytest
from benchmark_fixtures import (
    assert_split_contract,
    build,
    decode,
    extract_zip,
    split_rows,
    tiny_jpeg,
    write_mat5,
    write_mat73,
    write_zip,
)

from dataset_scripts import label_names, split_recipe
from dataset_scripts.mirflickr25k import CONCEPTS

N, H, W, VOCAB, FEAT = 40, 6, 5, 30, 16
SIZES = {"num_query": 5, "num_validation": 5, "num_train": 20}


def _mat_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((N, 24)) < 0.15).astype(np.float64)
    labels[np.arange(N), rng.integers(0, 24, N)] = 1
    return {
        "images": rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8),  # (N, H, W, C)
        "labels": labels,
        "bow": (rng.random((N, VOCAB)) < 0.2).astype(np.float64),
        "features": rng.normal(size=(N, FEAT)).astype(np.float32),
    }


def _write_mat_dir(directory, arrays, *, bow=None, labels=None, features=None):
    directory.mkdir(parents=True, exist_ok=True)
    write_mat73(
        directory / "mirflickr25k-iall.mat", {"IAll": arrays["images"].transpose(1, 2, 3, 0)}
    )  # H x W x C x N
    write_mat5(directory / "mirflickr25k-yall.mat", {"YAll": arrays["bow"] if bow is None else bow})
    write_mat5(directory / "mirflickr25k-lall.mat", {"LAll": arrays["labels"] if labels is None else labels})
    write_mat73(
        directory / "mirflickr25k-xall.mat", {"XAll": arrays["features"] if features is None else features}
    )
    return directory


@pytest.fixture(scope="module")
def mat_data(tmp_path_factory):
    arrays = _mat_arrays()
    return _write_mat_dir(tmp_path_factory.mktemp("mir_mat"), arrays), arrays


def test_mat_images_layout(mat_data, tmp_path):
    data_dir, arrays = mat_data
    ds = build("mirflickr25k", data_dir, tmp_path / "a", **SIZES)
    assert_split_contract(ds, num_rows=N, **SIZES)
    assert label_names(ds) == list(CONCEPTS)
    features = ds["train"].features
    assert set(features) == {"index", "image", "text_features", "labels", "label_ids"}
    assert features["text_features"].length == VOCAB and features["labels"].length == 24
    query = ds["query"]
    for example in query:
        i = example["index"]
        # A wrong transpose of MATLAB's H x W x C x N layout would scramble these non-square pixels.
        np.testing.assert_array_equal(decode(example["image"]), arrays["images"][i])
        np.testing.assert_array_equal(example["text_features"], arrays["bow"][i])
        np.testing.assert_array_equal(example["labels"], arrays["labels"][i])
    assert set(split_rows(ds)["database"]) | set(split_rows(ds)["query"]) == set(range(N))
    assert split_recipe(ds)["layout"] == "mat_images"
    # Determinism: a fresh cache gives the same splits; another seed different ones.
    again = build("mirflickr25k", data_dir, tmp_path / "b", **SIZES)
    for name, rows in split_rows(ds).items():
        np.testing.assert_array_equal(rows, split_rows(again)[name])
    other = build("mirflickr25k", data_dir, tmp_path / "c", seed=1, **SIZES)
    assert not np.array_equal(split_rows(other)["query"], split_rows(ds)["query"])


def test_mat_features_layout_reads_transposed_v73(mat_data, tmp_path):
    data_dir, arrays = mat_data
    ds = build("mirflickr25k", data_dir, tmp_path, config_name="mat_features", **SIZES)
    assert "image" not in ds["train"].features
    assert ds["train"].features["image_features"].length == FEAT
    got = np.asarray(ds["database"]["image_features"], dtype=np.float32)
    np.testing.assert_array_equal(got, arrays["features"][np.asarray(ds["database"]["index"])])


@pytest.mark.parametrize("channels_first", [True, False])
def test_plain_hdf5_images(mat_data, tmp_path, channels_first):
    data_dir, arrays = mat_data
    images = arrays["images"].transpose(0, 3, 1, 2) if channels_first else arrays["images"]
    with h5py.File(tmp_path / "images.h5", "w") as handle:  # row-major, no MATLAB header
        handle.create_dataset("images", data=images)
    ds = build(
        "mirflickr25k", data_dir, tmp_path / "cache", images_file=str(tmp_path / "images.h5"), images_key="images",
        **SIZES,
    )  # fmt: skip
    for example in ds["query"]:
        np.testing.assert_array_equal(decode(example["image"]), arrays["images"][example["index"]])


def _official_fixture(directory):
    """30 images; tags around the threshold 3; some rows without label or without a kept tag."""
    rng = np.random.default_rng(5)
    n = 30
    tags = {i: ["common"] if i % 2 else ["sunny day"] for i in range(1, n + 1)}  # "sunny day": 15 images
    for i in (1, 2, 3):
        tags[i].append("edge")  # used exactly 3 times: kept with min_tag_count=3
    tags[4].append("rare")
    tags[6] = ["rare"]  # "rare" used twice: dropped; image 6 has no kept tag -> pair dropped
    concept_ids = {
        c: sorted(rng.choice(np.arange(1, n + 1), size=4, replace=False).tolist()) for c in CONCEPTS
    }
    concept_ids["sky"] = sorted(set(concept_ids["sky"]) | {6})
    labelled = set().union(*concept_ids.values())
    unlabelled = sorted(set(range(1, n + 1)) - labelled)
    assert unlabelled, "the fixture must hold pairs without labels"
    members = {f"mirflickr/meta/tags/tags{i}.txt": ("\n".join(t) + "\n").encode() for i, t in tags.items()}
    members.update({f"mirflickr/im{i}.jpg": tiny_jpeg(i) for i in range(1, n + 1)})
    members["mirflickr/doc/README.txt"] = b"readme"
    write_zip(directory / "mirflickr25k.zip", members)
    annotations = {f"{c}.txt": "".join(f"{i}\n" for i in ids).encode() for c, ids in concept_ids.items()}
    annotations["animals_r1.txt"] = f"{unlabelled[0]}\n".encode()  # must be ignored
    annotations["README.txt"] = b"annotations"
    write_zip(directory / "mirflickr25k_annotations_v080.zip", annotations)
    return n, tags, concept_ids, members


def _official_reference(n, tags, concept_ids, min_count):
    """Plain-loop reference of the official recipe."""
    counts = {}
    for i in range(1, n + 1):
        for tag in set(tags[i]):
            counts[tag] = counts.get(tag, 0) + 1
    vocabulary = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    rows = {}
    for i in range(1, n + 1):
        labels = [1 if i in concept_ids[c] else 0 for c in CONCEPTS]
        bow = [1.0 if word in tags[i] else 0.0 for word in vocabulary]
        if any(labels) and any(bow):
            rows[i - 1] = (labels, bow, " ".join(tags[i]))
    return vocabulary, rows


@pytest.mark.parametrize("extracted", [False, True])
def test_official_layout_matches_loop_reference(tmp_path, extracted):
    zips = tmp_path / "zips"
    zips.mkdir()
    n, tags, concept_ids, members = _official_fixture(zips)
    data_dir = zips
    if extracted:  # the same distribution unzipped in place
        data_dir = tmp_path / "extracted"
        extract_zip(zips / "mirflickr25k.zip", data_dir)
        extract_zip(zips / "mirflickr25k_annotations_v080.zip", data_dir / "mirflickr25k_annotations_v080")
    sizes = {"num_query": 3, "num_validation": 2, "num_train": 8}
    ds = build(
        "mirflickr25k",
        data_dir,
        tmp_path / "cache",
        config_name="official",
        num_images=n,
        min_tag_count=3,
        **sizes,
    )
    vocabulary, reference = _official_reference(n, tags, concept_ids, min_count=3)
    assert split_recipe(ds)["vocabulary"] == vocabulary == ["common", "sunny day", "edge"]
    assert split_recipe(ds)["rows"] == len(reference)
    assert_split_contract(ds, num_rows=len(reference), **sizes)
    assert 5 not in reference  # image 6 (index 5): only the rare tag
    for example in ds["database"]:
        labels, bow, text = reference[example["index"]]
        assert example["labels"] == labels
        assert example["text_features"] == bow
        assert example["text"] == text
        assert example["image"].format == "JPEG"
    first = ds["query"][0]
    assert first["image"].size == (4, 4)
    raw = ds["query"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert raw["bytes"] == members[f"mirflickr/im{first['index'] + 1}.jpg"]


def test_vocabulary_threshold_is_an_option(tmp_path):
    n, tags, concept_ids, _ = _official_fixture(tmp_path)
    ds = build(
        "mirflickr25k", tmp_path, tmp_path / "cache", config_name="official", num_images=n, min_tag_count=2,
        num_query=3, num_validation=2, num_train=8,
    )  # fmt: skip
    assert split_recipe(ds)["vocabulary"] == ["common", "sunny day", "edge", "rare"]
    assert ds["train"].features["text_features"].length == 4


# ---------------------------------------------------------------------------------------------
# Bad inputs: ValueError naming the file and field
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    arrays = _mat_arrays()
    data_dir = _write_mat_dir(tmp_path / "d", arrays)
    (data_dir / "mirflickr25k-lall.mat").unlink()
    with pytest.raises(ValueError, match="mirflickr25k-lall.mat"):
        build("mirflickr25k", data_dir, tmp_path / "cache", **SIZES)


def test_wrong_key(mat_data, tmp_path):
    with pytest.raises(ValueError, match="no variable named 'Labels'.*LAll"):
        build("mirflickr25k", mat_data[0], tmp_path, labels_key="Labels", **SIZES)
    with pytest.raises(ValueError, match="no dataset named 'Images'.*IAll"):
        build("mirflickr25k", mat_data[0], tmp_path, images_key="Images", **SIZES)


def test_row_counts_disagree(tmp_path):
    arrays = _mat_arrays()
    data_dir = _write_mat_dir(tmp_path / "d", arrays, bow=arrays["bow"][:-1])
    with pytest.raises(ValueError, match=r"row counts disagree.*mirflickr25k-yall.mat:YAll has 39"):
        build("mirflickr25k", data_dir, tmp_path / "cache", **SIZES)


def test_non_finite_features(tmp_path):
    arrays = _mat_arrays()
    features = arrays["features"].copy()
    features[7, 3] = np.nan
    data_dir = _write_mat_dir(tmp_path / "d", arrays, features=features)
    with pytest.raises(ValueError, match=r"mirflickr25k-xall.mat:XAll.*row 7, column 3"):
        build("mirflickr25k", data_dir, tmp_path / "cache", config_name="mat_features", **SIZES)


def test_empty_label_rows(tmp_path):
    arrays = _mat_arrays()
    labels = arrays["labels"].copy()
    labels[[3, 9]] = 0
    data_dir = _write_mat_dir(tmp_path / "d", arrays, labels=labels)
    with pytest.raises(ValueError, match=r"mirflickr25k-lall.mat:LAll: 2 rows have no label"):
        build("mirflickr25k", data_dir, tmp_path / "cache", **SIZES)
    ds = build("mirflickr25k", data_dir, tmp_path / "cache2", drop_incomplete=True, **SIZES)
    assert split_recipe(ds)["dropped_without_label"] == 2
    assert not {3, 9} & (set(split_rows(ds)["database"]) | set(split_rows(ds)["query"]))


def test_bad_image_array(tmp_path):
    arrays = _mat_arrays()
    data_dir = _write_mat_dir(tmp_path / "d", arrays)
    write_mat73(data_dir / "mirflickr25k-iall.mat", {"IAll": arrays["images"][..., 0]})  # no channel axis
    with pytest.raises(
        ValueError, match=r"mirflickr25k-iall.mat:IAll: expected MATLAB images of shape H x W x C x N"
    ):
        build("mirflickr25k", data_dir, tmp_path / "cache", **SIZES)


def test_official_bad_annotations(tmp_path):
    n, tags, concept_ids, _ = _official_fixture(tmp_path)
    options = {"config_name": "official", "num_images": n, "min_tag_count": 3, **SIZES}
    with pytest.raises(
        ValueError, match="missing file 'mountain.txt' in .*mirflickr25k_annotations_v080.zip"
    ):
        build("mirflickr25k", tmp_path, tmp_path / "c1", concepts=("sky", "mountain"), **options)
    with pytest.raises(ValueError, match=r"sky.txt: id 31 outside the valid range \[1, 30\]"):
        annotations = {f"{c}.txt": "".join(f"{i}\n" for i in ids).encode() for c, ids in concept_ids.items()}
        annotations["sky.txt"] = b"1\n31\n"
        write_zip(tmp_path / "mirflickr25k_annotations_v080.zip", annotations)
        build("mirflickr25k", tmp_path, tmp_path / "c2", **options)
    with pytest.raises(ValueError, match=r"files missing in .*mirflickr25k.zip.*tags31.txt"):
        build("mirflickr25k", tmp_path, tmp_path / "c3", **{**options, "num_images": 31})


def test_tags_that_are_not_utf8_stay_apart(tmp_path):
    # b"caf\xe9" and b"caf\xe8" (Latin-1 bytes, not UTF-8) on 2 images each: a lossy decode would merge
    # them into one tag on 4 images, above the threshold 3. b"s\xfcd" on 3 images is kept, as "s\\xfcd".
    n, tags, concept_ids, members = _official_fixture(tmp_path)
    extra = {
        7: b"caf\xe9",
        8: b"caf\xe9",
        9: b"caf\xe8",
        10: b"caf\xe8",
        11: b"s\xfcd",
        12: b"s\xfcd",
        13: b"s\xfcd",
    }
    for i, tag in extra.items():
        members[f"mirflickr/meta/tags/tags{i}.txt"] += tag + b"\n"
    write_zip(tmp_path / "mirflickr25k.zip", members)
    ds = build(
        "mirflickr25k", tmp_path, tmp_path / "cache", config_name="official", num_images=n, min_tag_count=3,
        num_query=3, num_validation=2, num_train=8,
    )  # fmt: skip
    vocabulary = split_recipe(ds)["vocabulary"]
    assert vocabulary == ["common", "sunny day", "edge", "s\\xfcd"]
    rows = {example["index"]: example for example in ds["database"]} | {e["index"]: e for e in ds["query"]}
    assert rows[10]["text"].endswith(" s\\xfcd") and rows[10]["text_features"][3] == 1.0
    assert rows[6]["text"].endswith(" caf\\xe9") and sum(rows[6]["text_features"]) == 1.0
