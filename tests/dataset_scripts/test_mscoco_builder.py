"""MS-COCO builder on tiny files in the real formats: COCO instances/captions JSON in
annotations_trainval<year>.zip, images in <split><year>.zip or extracted folders, hashing .mat files."""

from __future__ import annotations

import json
import re

import datasets
import numpy as np
import pytest
from benchmark_fixtures import (
    assert_split_contract,
    build,
    split_rows,
    tiny_jpeg,
    write_mat5,
    write_mat73,
    write_zip,
)

from dataset_scripts import label_names, split_recipe
from dataset_scripts._bag_of_words import ENGLISH_STOP_WORDS

CATEGORIES = [(1, "person"), (3, "car"), (18, "dog"), (90, "toothbrush")]  # non-contiguous ids, as in COCO
WORDS = ["dog", "car", "man", "street", "red", "park", "ball", "grass", "toothbrush"]
SIZES = {"num_query": 4, "num_validation": 3, "num_train": 10}


def _file_name(split: str, year: str, image_id: int) -> str:
    return f"COCO_{split}{year}_{image_id:012d}.jpg" if year == "2014" else f"{image_id:012d}.jpg"


def _coco(year: str = "2014", seed: int = 0):
    """Instances and captions for 20 train + 10 val images; 3 images without any instance."""
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    caption_id = 1000
    for split, image_ids in (("train", range(101, 121)), ("val", range(7, 17))):
        images = [
            {"id": i, "file_name": _file_name(split, year, i), "height": 4, "width": 4} for i in image_ids
        ]
        annotations, captions = [], []
        for i in image_ids:
            cats = (
                []
                if i in (103, 110, 9)
                else sorted(set(rng.choice([1, 3, 18, 90], size=rng.integers(1, 3)).tolist()))
            )
            annotations += [
                {"id": len(annotations) + 1, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1]}
                for c in cats
            ]
            texts = []
            for _ in range(5):
                caption_id -= 1  # later captions get lower ids: the "first" caption is the lowest id
                words = rng.choice(WORDS, size=3).tolist()
                texts.append(f"A {words[0]} and the {words[1]}, {words[2]}!  ")
                captions.append({"id": caption_id, "image_id": i, "caption": texts[-1]})
            truth[i] = (cats, texts[::-1])  # texts in ascending caption id
        files[f"annotations/instances_{split}{year}.json"] = {
            "info": {}, "images": images, "annotations": annotations,
            "categories": [{"id": c, "name": n, "supercategory": "x"} for c, n in CATEGORIES[::-1]],
        }  # fmt: skip
        files[f"annotations/captions_{split}{year}.json"] = {"images": images, "annotations": captions}
    return files, truth


def _write(directory, year="2014", files=None, truth=None, skip_image=None):
    directory.mkdir(parents=True, exist_ok=True)
    if files is None:
        files, truth = _coco(year)
    write_zip(
        directory / f"annotations_trainval{year}.zip", {k: json.dumps(v).encode() for k, v in files.items()}
    )
    train = {f"train{year}/{_file_name('train', year, i)}": tiny_jpeg(i) for i in range(101, 121)}
    write_zip(directory / f"train{year}.zip", train)
    for i in range(7, 17):  # val images as an extracted folder
        if i != skip_image:
            path = directory / f"val{year}" / _file_name("val", year, i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tiny_jpeg(i))
    return directory, truth


def _reference(truth, vocab_size):
    """Plain-loop reference: token counts over all captions, top words, any-caption BoW, kept images."""
    counts = {}
    for _, texts in truth.values():
        for text in texts:
            for token in re.findall(r"\w+", text.lower()):
                if token not in ENGLISH_STOP_WORDS:
                    counts[token] = counts.get(token, 0) + 1
    vocabulary = sorted(counts, key=lambda t: (-counts[t], t))[:vocab_size]
    rows = {}
    for image_id, (cats, texts) in truth.items():
        tokens = {t for text in texts for t in re.findall(r"\w+", text.lower())}
        bow = [1.0 if word in tokens else 0.0 for word in vocabulary]
        labels = [1 if c in cats else 0 for c, _ in CATEGORIES]
        if any(labels) and any(bow):
            rows[image_id] = (labels, bow, texts)
    return vocabulary, rows


@pytest.mark.parametrize("year", ["2014", "2017"])
def test_official_layout_matches_loop_reference(tmp_path, year):
    data_dir, truth = _write(tmp_path / "coco", year)
    ds = build("mscoco", data_dir, tmp_path / "cache", config_name=year, vocab_size=6, **SIZES)
    vocabulary, reference = _reference(truth, 6)
    recipe = split_recipe(ds)
    assert recipe["vocabulary"] == vocabulary and "and" not in vocabulary and "the" not in vocabulary
    assert label_names(ds) == [name for _, name in CATEGORIES]
    assert recipe["rows"] == len(reference) == 27
    assert_split_contract(ds, num_rows=len(reference), **SIZES)
    assert set(split_rows(ds)["database"]) | set(split_rows(ds)["query"]) == set(
        reference
    )  # index = image id
    for example in ds["database"]:
        labels, bow, texts = reference[example["index"]]
        assert example["labels"] == labels
        assert example["text_features"] == bow
        assert example["text"] == texts[0].strip()
    raw = ds["query"].cast_column("image", datasets.Image(decode=False))[0]
    assert raw["image"]["bytes"] == tiny_jpeg(raw["index"])


def test_all_captions_and_vocab_size_option(tmp_path):
    data_dir, truth = _write(tmp_path / "coco")
    ds = build("mscoco", data_dir, tmp_path / "cache", text_mode="all", vocab_size=3, **SIZES)
    vocabulary, reference = _reference(truth, 3)
    assert split_recipe(ds)["vocabulary"] == vocabulary and len(vocabulary) == 3
    assert ds["train"].features["text_features"].length == 3
    for example in ds["query"]:
        assert example["text"] == "\n".join(t.strip() for t in reference[example["index"]][2])
        assert example["text_features"] == reference[example["index"]][1]


def test_mat_features_layout(tmp_path):
    rng = np.random.default_rng(1)
    n = 25
    labels = (rng.random((n, 80)) < 0.05).astype(np.float64)
    labels[np.arange(n), rng.integers(0, 80, n)] = 1
    features = rng.normal(size=(n, 8)).astype(np.float32)
    bow = (rng.random((n, 20)) < 0.3).astype(np.float64)
    write_mat73(tmp_path / "mscoco-xall.mat", {"XAll": features})
    write_mat5(tmp_path / "mscoco-yall.mat", {"YAll": bow})
    write_mat5(tmp_path / "mscoco-lall.mat", {"LAll": labels})
    ds = build("mscoco", tmp_path, tmp_path / "cache", config_name="mat_features", **SIZES)
    assert label_names(ds)[:3] == ["person", "bicycle", "car"] and len(label_names(ds)) == 80
    assert_split_contract(ds, num_rows=n, **SIZES)
    got = np.asarray(ds["database"]["image_features"], dtype=np.float32)
    np.testing.assert_array_equal(got, features[np.asarray(ds["database"]["index"])])


def test_bad_inputs(tmp_path):
    files, truth = _coco()
    options = {"vocab_size": 6, **SIZES}
    data_dir, _ = _write(tmp_path / "a", files=files, truth=truth, skip_image=12)
    with pytest.raises(ValueError, match=r"1 image files missing.*val2014/COCO_val2014_000000000012.jpg"):
        build("mscoco", data_dir, tmp_path / "c1", **options)
    broken = {**files, "annotations/instances_val2014.json": {"images": [], "annotations": []}}
    data_dir, _ = _write(tmp_path / "b", files=broken, truth=truth)
    with pytest.raises(ValueError, match=r"instances_val2014.json: missing fields \['categories'\]"):
        build("mscoco", data_dir, tmp_path / "c2", **options)
    stray = json.loads(json.dumps(files))
    stray["annotations/instances_train2014.json"]["annotations"].append(
        {"id": 9, "image_id": 555, "category_id": 1}
    )
    data_dir, _ = _write(tmp_path / "c", files=stray, truth=truth)
    with pytest.raises(ValueError, match="instances: annotation refers to unknown image id 555"):
        build("mscoco", data_dir, tmp_path / "c3", **options)
    no_file_name = json.loads(json.dumps(files))
    del no_file_name["annotations/instances_val2014.json"]["images"][2]["file_name"]
    data_dir_2, _ = _write(tmp_path / "d", files=no_file_name, truth=truth)
    with pytest.raises(ValueError, match="annotations_trainval2014.zip: a COCO .* lacks a field .*file_name"):
        build("mscoco", data_dir_2, tmp_path / "c6", **options)
    with pytest.raises(ValueError, match="missing file 'annotations/instances_test2014.json'"):
        build("mscoco", data_dir, tmp_path / "c4", annotation_splits=("train", "test"), **options)
    with pytest.raises(ValueError, match="text_mode must be 'first' or 'all', got 'some'"):
        build("mscoco", data_dir, tmp_path / "c5", text_mode="some", **options)


@pytest.mark.parametrize("frequency", ["tokens", "documents"])
def test_bag_of_words_matches_loop(frequency):
    from dataset_scripts._bag_of_words import build_bag_of_words

    rng = np.random.default_rng(4)
    docs = [rng.choice(WORDS, size=rng.integers(0, 6)).tolist() for _ in range(40)]
    bow = build_bag_of_words(docs, min_count=3, max_size=5, frequency=frequency, binary=False)
    counts = {}
    for doc in docs:
        for word in doc if frequency == "tokens" else set(doc):
            counts[word] = counts.get(word, 0) + 1
    vocabulary = sorted((w for w in counts if counts[w] >= 3), key=lambda w: (-counts[w], w))[:5]
    assert bow.vocabulary == vocabulary
    assert bow.counts.tolist() == [counts[w] for w in vocabulary]
    expected = np.array([[doc.count(w) for w in vocabulary] for doc in docs], dtype=np.float32)
    np.testing.assert_array_equal(bow.matrix.toarray(), expected)


def test_mat_labels_with_the_release_extra_column_drop_it(tmp_path):
    # The release's label.npy has 81 columns and its loader removes the last; a row whose only positive
    # is that column would otherwise be relevant to every other such row.
    rng = np.random.default_rng(2)
    n = 25
    labels = np.zeros((n, 81), dtype=np.float64)
    labels[np.arange(n), rng.integers(0, 80, n)] = 1
    labels[:, 80] = 1
    write_mat73(tmp_path / "mscoco-xall.mat", {"XAll": rng.normal(size=(n, 8)).astype(np.float32)})
    write_mat5(tmp_path / "mscoco-yall.mat", {"YAll": (rng.random((n, 20)) < 0.3).astype(np.float64)})
    write_mat5(tmp_path / "mscoco-lall.mat", {"LAll": labels})
    ds = build("mscoco", tmp_path, tmp_path / "cache", config_name="mat_features", **SIZES)
    assert len(label_names(ds)) == 80 and label_names(ds)[-1] == "toothbrush"
    recipe = split_recipe(ds)
    assert (recipe["dropped_label_column"], recipe["dropped_label_column_positives"]) == (80, n)
    got = np.asarray(ds["database"]["labels"])
    np.testing.assert_array_equal(got, labels[np.asarray(ds["database"]["index"]), :80])
