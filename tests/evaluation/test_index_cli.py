"""evaluation/encode_dataset.py -> build_index.py -> search.py end to end on a tiny synthetic dataset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from crcgs_test_utils import save_tiny_crcgs_model

from dataset_scripts import label_names
from evaluation import build_index, search
from evaluation.encode_dataset import DatasetArguments, load_split
from modeling_crcgs import CRCGSModel, pack_codes
from modeling_crcgs.retrieval.index import HashIndex

REPO_ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {
    "num_items": 240,
    "num_labels": 5,
    "image_dim": 16,
    "vocab_size": 40,
    "words_per_label": 5,
    "num_query": 40,
    "num_validation": 40,
    "num_train": 100,
}
DATASET_FLAGS = ["--dataset", "synthetic", "--dataset_options", json.dumps(OPTIONS)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_crcgs_model(
        tmp_path_factory.mktemp("model"), image_input_dim=16, text_input_dim=40, num_labels=5, hash_bits=16
    )


def _split(name):
    return load_split(DatasetArguments(dataset="synthetic", dataset_options=json.dumps(OPTIONS)), name)


def _encode_with_the_command(tmp_path, model_dir):
    """1. the encoder command, as users run it (fresh process from another folder: Accelerator, shards)."""
    encoded_dir = tmp_path / "encoded"
    command = [
        sys.executable,
        str(REPO_ROOT / "evaluation" / "encode_dataset.py"),
        "--model_dir",
        str(model_dir),
    ]
    command += DATASET_FLAGS + ["--split", "database", "--output_dir", str(encoded_dir), "--shard_size", "64"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "num_shards": 4,
        "encoded": [0, 1, 2, 3],
        "skipped": [],
    }
    return encoded_dir


def _search_by_rows(tmp_path, model_dir, model, queries, index):
    """3. search by dataset rows (text queries against the image index) == searching the model's codes."""
    rows = [0, 3, 7]
    out_file = tmp_path / "results" / "t2i.json"
    search.main(
        [
            "--index_dir",
            str(tmp_path / "a"),
            "--model_dir",
            str(model_dir),
            *DATASET_FLAGS,
            "--rows",
            "0",
            "3",
            "7",
        ]
        + ["--query_modality", "text", "--k", "5", "--format", "json", "--output_file", str(out_file)]
    )
    result = json.loads(out_file.read_text())
    text = torch.tensor(np.asarray(queries.select(rows)["text_features"]))
    expected_ids, expected_dist = index.search(pack_codes(model.get_text_hash_codes(text).numpy()), 5)
    assert [r["query_row"] for r in result["results"]] == rows
    assert [r["query_id"] for r in result["results"]] == [queries[r]["index"] for r in rows]
    assert result["query_modality"] == "text" and result["direction"] == "text -> image"
    # each result item: the database row's label names and whether it shares a label with its query
    database = _split("database")
    names = label_names(database)
    row_of = {item_id: row for row, item_id in enumerate(database["index"])}
    for query_row, query in zip(rows, result["results"], strict=True):
        query_labels = np.asarray(queries[query_row]["labels"], dtype=bool)
        for item_id, item in zip(query["ids"], query["items"], strict=True):
            labels = np.asarray(database[row_of[item_id]]["labels"], dtype=bool)
            assert item["labels"] == [n for n, on in zip(names, labels, strict=True) if on]
            assert item["shares_label"] == bool((labels & query_labels).any())
    assert [r["ids"] for r in result["results"]] == expected_ids.tolist()
    assert [r["distances"] for r in result["results"]] == expected_dist.tolist()
    table = search.format_table(result)
    assert "query row 3 (id " in table and "text -> image" in table
    first = query["items"][0]
    assert (
        f"{query['ids'][0]:>8}  {query['distances'][0]:>4}  {'*' if first['shares_label'] else ' '}" in table
    )
    return text, expected_ids, expected_dist


def _search_by_files(tmp_path, model_dir, model, text, expected_ids):
    """4. search by a features .npy and by a packed-codes .npy give the same answer."""
    np.save(tmp_path / "features.npy", text.numpy())
    by_features = search.run_search(
        DatasetArguments(),
        search.SearchArguments(
            index_dir=str(tmp_path / "a"),
            model_dir=str(model_dir),
            features=str(tmp_path / "features.npy"),
            k=5,
        ),
    )
    np.save(tmp_path / "codes.npy", pack_codes(model.get_text_hash_codes(text).numpy()))
    by_codes = search.run_search(
        DatasetArguments(),
        search.SearchArguments(index_dir=str(tmp_path / "a"), query_codes=str(tmp_path / "codes.npy"), k=5),
    )
    assert by_features["results"] == by_codes["results"]
    assert [r["ids"] for r in by_codes["results"]] == expected_ids.tolist()


def _build_from_codes_file(tmp_path, index, expected_dist):
    """5. build_index from a codes .npy (+ ids), an approximate kind."""
    np.save(tmp_path / "db_codes.npy", index.faiss_index.reconstruct_n(0, len(index)))
    np.save(tmp_path / "db_ids.npy", index.ids)
    summary = build_index.main(
        [
            "--codes",
            str(tmp_path / "db_codes.npy"),
            "--ids",
            str(tmp_path / "db_ids.npy"),
            "--hash_bits",
            "16",
        ]
        + ["--kind", "ivf", "--nlist", "4", "--nprobe", "4", "--output_dir", str(tmp_path / "c")]
    )
    assert summary["params"] == {"nlist": 4, "nprobe": 4}
    ids, dist = HashIndex.load(tmp_path / "c").search(np.load(tmp_path / "codes.npy"), 5)
    np.testing.assert_array_equal(dist, expected_dist)  # every cell probed: exact distances


@pytest.mark.slow
def test_encode_build_search_end_to_end(tmp_path, model_dir):
    model = CRCGSModel.from_pretrained(model_dir).eval()
    database, queries = _split("database"), _split("query")
    encoded_dir = _encode_with_the_command(tmp_path, model_dir)

    # 2. build_index from the shards and from the model + split: the same index
    from_shards = build_index.main(
        ["--shards_dir", str(encoded_dir), "--modality", "image", "--output_dir", str(tmp_path / "a")]
    )
    assert from_shards["num_codes"] == len(database) and from_shards["hash_bits"] == 16
    build_index.main(["--model_dir", str(model_dir), *DATASET_FLAGS, "--output_dir", str(tmp_path / "b")])
    index_a, index_b = HashIndex.load(tmp_path / "a"), HashIndex.load(tmp_path / "b")
    np.testing.assert_array_equal(index_a.ids, np.array(database["index"]))
    np.testing.assert_array_equal(index_a.ids, index_b.ids)

    text, expected_ids, expected_dist = _search_by_rows(tmp_path, model_dir, model, queries, index_b)
    _search_by_files(tmp_path, model_dir, model, text, expected_ids)
    _build_from_codes_file(tmp_path, index_a, expected_dist)


def test_cli_bad_arguments(tmp_path, model_dir):
    codes = tmp_path / "codes.npy"
    np.save(codes, np.zeros((4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="exactly one of --codes, --shards_dir, --model_dir"):
        build_index.main(
            ["--codes", str(codes), "--model_dir", str(model_dir), "--output_dir", str(tmp_path)]
        )
    with pytest.raises(ValueError, match="--codes: expected an existing .npy"):
        build_index.main(["--codes", str(tmp_path / "nope.npy"), "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="hash_bits=8"):
        build_index.main(["--codes", str(codes), "--hash_bits", "8", "--output_dir", str(tmp_path / "i")])
    with pytest.raises(ValueError, match="nflip must be an integer between 0 and hash_key_bits=16.*got 17"):
        build_index.main(
            ["--codes", str(codes), "--kind", "hash", "--nflip", "17", "--output_dir", str(tmp_path / "h")]
        )
    assert not (tmp_path / "h").exists()
    build_index.main(["--codes", str(codes), "--output_dir", str(tmp_path / "i")])
    with pytest.raises(ValueError, match="--model_dir: needed to encode --features"):
        search.main(["--index_dir", str(tmp_path / "i"), "--features", str(codes)])
    with pytest.raises(ValueError, match="query_codes.*2 bytes"):
        search.main(
            [
                "--index_dir",
                str(tmp_path / "i"),
                "--query_codes",
                str(_save(tmp_path, np.zeros((1, 3), np.uint8))),
            ]
        )
    with pytest.raises(ValueError, match="--dataset: required"):
        search.main(["--index_dir", str(tmp_path / "i"), "--model_dir", str(model_dir), "--rows", "0"])
    with pytest.raises(ValueError, match="--dataset_options: expected a JSON object"):
        DatasetArguments(dataset="synthetic", dataset_options="{nope")


def _save(tmp_path, array):
    path = tmp_path / "array.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize("source", ["model", "shards"])
def test_search_with_another_model_is_refused(tmp_path, model_dir, source):
    other = save_tiny_crcgs_model(
        tmp_path / "other", seed=1, image_input_dim=16, text_input_dim=40, num_labels=5, hash_bits=16
    )
    if source == "model":
        build_index.main(["--model_dir", str(model_dir), *DATASET_FLAGS, "--output_dir", str(tmp_path / "i")])
    else:
        encoded_dir = _encode_with_the_command(tmp_path, model_dir)
        build_index.main(
            ["--shards_dir", str(encoded_dir), "--modality", "image", "--output_dir", str(tmp_path / "i")]
        )
    index = HashIndex.load(tmp_path / "i")
    assert index.model_fingerprint is not None
    features = _save(tmp_path, np.zeros((2, 40), np.float32))
    argv = ["--index_dir", str(tmp_path / "i"), "--features", str(features), "--query_modality", "text"]
    with pytest.raises(ValueError, match="--model_dir .*not those that made this index's codes"):
        search.main([*argv, "--model_dir", str(other)])
    with pytest.raises(ValueError, match="not those that made this index's codes"):
        index.search_features(CRCGSModel.from_pretrained(other), text_features=np.zeros((2, 40), np.float32))
    assert len(search.main([*argv, "--model_dir", str(model_dir)])["results"]) == 2
