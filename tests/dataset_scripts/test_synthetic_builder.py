"""The embedded `synthetic` dataset: determinism, MIRFLICKR-like statistics, learnability, export round trips."""

import datasets
import numpy as np
import pytest

import dataset_scripts
from dataset_scripts import label_names, load_crcgs_dataset, split_recipe
from dataset_scripts.synthetic import SyntheticConfig, generate_synthetic

SMALL = {
    "num_items": 300,
    "num_query": 30,
    "num_validation": 20,
    "num_train": 150,
    "image_dim": 32,
    "vocab_size": 40,
}


def _config(**overrides):
    return SyntheticConfig(name="test", **overrides)


def test_generator_is_deterministic_and_seeded():
    a, b = generate_synthetic(_config(num_items=500)), generate_synthetic(_config(num_items=500))
    for key in ("labels", "image_features", "text_features"):
        np.testing.assert_array_equal(a[key], b[key])
    c = generate_synthetic(_config(num_items=500, data_seed=1))
    assert not np.array_equal(a["image_features"], c["image_features"])


def test_statistics_are_mirflickr_like():
    arrays = generate_synthetic(_config())  # defaults: 4000 x (512 image, 500 vocab), 24 labels
    labels, image, text = arrays["labels"], arrays["image_features"], arrays["text_features"]
    assert labels.shape == (4000, 24) and labels.dtype == np.int8
    assert image.shape == (4000, 512) and image.dtype == np.float32 and (image >= 0).all()
    assert text.shape == (4000, 500) and set(np.unique(text).tolist()) == {0.0, 1.0}
    per_item = labels.sum(axis=1)
    assert per_item.min() == 1 and per_item.max() == 5
    frequency = labels.mean(axis=0)
    assert frequency[0] > 5 * frequency[-1] and frequency.min() > 0  # skewed, every label used
    assert text.sum(axis=1).min() >= 1  # no empty text
    assert np.isfinite(image).all()


def _map_cosine(query, database, query_labels, database_labels):
    """mAP@all with cosine ranking and S = 1[y.y' > 0] (loop-free reference for this test)."""
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    database = database / np.linalg.norm(database, axis=1, keepdims=True)
    order = np.argsort(-(query @ database.T), axis=1, kind="stable")
    relevant = ((query_labels @ database_labels.T) > 0)[np.arange(len(query))[:, None], order]
    precision = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    return float(np.mean((precision * relevant).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)))


def test_retrieval_is_learnable_but_not_trivial():
    arrays = generate_synthetic(_config(num_items=2000))
    labels = arrays["labels"].astype(np.float64)
    image, text = arrays["image_features"], arrays["text_features"]
    query, train, database = np.arange(200), np.arange(200, 1200), np.arange(200, 2000)

    def ridge(x, y):  # linear map to label space, a weak baseline
        x1 = np.c_[x, np.ones(len(x))]
        return np.linalg.solve(x1.T @ x1 + 10 * np.eye(x1.shape[1]), x1.T @ y)

    w_image, w_text = ridge(image[train], labels[train]), ridge(text[train], labels[train])
    image_pred = np.c_[image, np.ones(len(image))] @ w_image
    text_pred = np.c_[text, np.ones(len(text))] @ w_text
    i2t = _map_cosine(image_pred[query], text_pred[database], labels[query], labels[database])
    chance = float(((labels[query] @ labels[database].T) > 0).mean())
    assert chance + 0.15 < i2t < 0.95, (chance, i2t)


def test_builder_splits_schema_and_determinism(tmp_path):
    ds = load_crcgs_dataset("synthetic", cache_dir=str(tmp_path / "a"), **SMALL)
    assert {name: ds[name].num_rows for name in ds} == {
        "train": 150,
        "validation": 20,
        "query": 30,
        "database": 270,
    }
    assert label_names(ds) == [f"synthetic_label_{i:02d}" for i in range(24)]
    assert "SYNTHETIC" in ds["train"].info.description
    recipe = split_recipe(ds)
    assert (
        recipe["method"] == "random" and recipe["num_query"] == 30 and recipe["generator"]["num_items"] == 300
    )
    index = {name: set(ds[name]["index"]) for name in ds}
    assert not (index["query"] & index["train"]) and not (index["query"] & index["validation"])
    assert index["query"] | index["database"] == set(range(300)) and not (index["query"] & index["database"])
    arrays = generate_synthetic(_config(**SMALL))
    table = ds["train"].with_format("numpy")[:]
    np.testing.assert_array_equal(table["image_features"], arrays["image_features"][table["index"]])
    np.testing.assert_array_equal(table["labels"], arrays["labels"][table["index"]])
    again = load_crcgs_dataset("synthetic", cache_dir=str(tmp_path / "b"), **SMALL)
    other = load_crcgs_dataset("synthetic", cache_dir=str(tmp_path / "b"), seed=1, **SMALL)
    assert again["query"]["index"] == ds["query"]["index"] != other["query"]["index"]


def test_parquet_and_save_to_disk_round_trip(tmp_path):
    ds = load_crcgs_dataset("synthetic", cache_dir=str(tmp_path / "cache"), **SMALL)
    query = ds["query"]
    query.to_parquet(str(tmp_path / "query.parquet"))
    restored = datasets.Dataset.from_parquet(str(tmp_path / "query.parquet"), cache_dir=str(tmp_path / "pq"))
    assert restored.features == query.features
    assert label_names(restored) == label_names(query)
    assert restored.to_dict() == query.to_dict()
    ds.save_to_disk(str(tmp_path / "saved"))
    loaded = datasets.load_from_disk(str(tmp_path / "saved"))
    assert loaded["database"].features == ds["database"].features and label_names(loaded) == label_names(ds)
    assert split_recipe(loaded) == split_recipe(ds)


def test_raw_text_and_images(tmp_path):
    ds = load_crcgs_dataset("synthetic", cache_dir=str(tmp_path / "c"), with_text=True, image_size=8, **SMALL)
    row = ds["query"][0]
    words = row["text"].split()
    assert words and all(w.startswith("synthetic_word_") for w in words)
    assert sorted(int(w[-4:]) for w in words) == np.flatnonzero(row["text_features"]).tolist()
    assert row["image"].size == (8, 8) and row["image"].mode == "RGB"


def test_bad_options_raise():
    with pytest.raises(ValueError, match="labels_per_item_probs"):
        generate_synthetic(_config(labels_per_item_probs=(0.5, 0.4)))
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        generate_synthetic(_config(num_labels=0))
    with pytest.raises(ValueError, match="background"):
        generate_synthetic(_config(background=1.5))


def test_registry_reports_a_missing_builder_module(monkeypatch):
    monkeypatch.setitem(dataset_scripts._MODULES, "not_yet", "not_yet_written")
    monkeypatch.setattr(dataset_scripts, "DATASET_NAMES", (*dataset_scripts.DATASET_NAMES, "not_yet"))
    with pytest.raises(ValueError, match="builder module dataset_scripts.not_yet_written is not available"):
        dataset_scripts.get_builder_class("not_yet")
    assert dataset_scripts.get_builder_class("synthetic").__name__ == "Synthetic"


def test_streaming_examples_match_prepared_tables(tmp_path):
    """``_generate_examples`` (streaming) and ``_generate_tables`` (prepare) give the same rows."""
    builder = dataset_scripts.get_builder_class("synthetic")(cache_dir=str(tmp_path), with_text=True, **SMALL)
    builder.download_and_prepare()
    prepared, streamed = builder.as_dataset(), builder.as_streaming_dataset()
    for split in ("query", "validation"):
        assert list(streamed[split]) == prepared[split].to_list()


def test_prepare_writes_arrow_blocks_not_examples(tmp_path, monkeypatch):
    """Preparing goes through CRCGSBuilder._prepare_split_single (one Arrow table per block of chunk_rows
    source rows), never through datasets' per-example writer: guards the private-API override against a
    datasets upgrade that renames or stops calling it."""
    builder_class = dataset_scripts.get_builder_class("synthetic")
    blocks = []
    write_tables = builder_class._generate_tables

    def spy(self, rows):
        for key, table in write_tables(self, rows):
            blocks.append(table.num_rows)
            yield key, table

    def per_example(self, rows):
        raise AssertionError("prepared through the per-example path")

    monkeypatch.setattr(builder_class, "_generate_tables", spy)
    monkeypatch.setattr(builder_class, "_generate_examples", per_example)
    builder = builder_class(cache_dir=str(tmp_path), chunk_rows=64, **SMALL)
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert sum(blocks) == sum(split.num_rows for split in ds.values())
    assert len(blocks) > len(ds) and max(blocks) <= 64
