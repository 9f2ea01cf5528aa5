"""Evaluator: encoding order (one and two processes), scores equal to the metric functions, report files."""

import json
import os

import datasets
import numpy as np
import pytest
import torch
from crcgs_test_utils import tiny_crcgs_model

from modeling_crcgs import CRCGSModel
from modeling_crcgs.retrieval.evaluation import (
    REPORT_FILES,
    encode_split,
    evaluate_retrieval,
    summary_markdown,
    write_evaluation_report,
)
from modeling_crcgs.retrieval.metrics import mean_average_precision

IMAGE_DIM, TEXT_DIM, NUM_LABELS, BITS = 12, 10, 5, 8


def tiny_model(seed: int = 0) -> CRCGSModel:
    """A tiny random model whose weights are spread enough to give varied hash codes."""
    model = tiny_crcgs_model(
        seed,
        image_input_dim=IMAGE_DIM,
        text_input_dim=TEXT_DIM,
        num_labels=NUM_LABELS,
        hash_bits=BITS,
        common_dim=8,
        converted_dim=8,
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.7)
    return model.eval()


def tiny_split(num_rows: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_rows, NUM_LABELS)) < 0.3).astype(np.int8)
    features = datasets.Features(
        {
            "index": datasets.Value("int64"),
            "image_features": datasets.List(datasets.Value("float32"), length=IMAGE_DIM),
            "text_features": datasets.List(datasets.Value("float32"), length=TEXT_DIM),
            "labels": datasets.List(datasets.Value("int8"), length=NUM_LABELS),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "index": np.arange(num_rows),
            "image_features": rng.normal(size=(num_rows, IMAGE_DIM)).astype(np.float32),
            "text_features": (rng.random((num_rows, TEXT_DIM)) < 0.3).astype(np.float32),
            "labels": labels,
        },
        features=features,
    )


@pytest.fixture(scope="module")
def evaluated():
    model = tiny_model()
    query, database = tiny_split(21, seed=1), tiny_split(67, seed=2)
    return model, query, database, evaluate_retrieval(model, query, database, "tiny", batch_size=8)


def test_encode_split_rows_in_order(evaluated):
    model, query, _, _ = evaluated
    encoded = encode_split(model, query, batch_size=5)  # 21 rows: uneven last batch
    x = torch.tensor(np.asarray(query.with_format("numpy")["image_features"]))
    t = torch.tensor(np.asarray(query.with_format("numpy")["text_features"]))
    with torch.no_grad():
        u, v = model.get_image_features(image_features=x), model.get_text_features(text_features=t)
        assert torch.allclose(encoded["image_embeds"], u, atol=1e-6)
        assert torch.allclose(encoded["text_embeds"], v, atol=1e-6)
        assert torch.equal(encoded["image_codes"], model.hash_codes_from_embeddings(u).to(torch.int8))
        assert torch.equal(encoded["text_codes"], model.hash_codes_from_embeddings(v).to(torch.int8))
    assert encoded["image_codes"].dtype == torch.int8 and encoded["labels"].dtype == torch.int8
    assert torch.equal(encoded["labels"], torch.tensor(np.asarray(query["labels"]), dtype=torch.int8))
    assert len(torch.unique(encoded["image_codes"], dim=0)) > 3  # the tiny model gives varied codes


def _two_process_encoding(path: str, batch_size: int) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    encoded = encode_split(
        tiny_model(), tiny_split(21, seed=1), batch_size=batch_size, accelerator=accelerator
    )
    if accelerator.is_main_process:
        processes = torch.tensor(accelerator.num_processes)
        torch.save({"num_processes": processes, **{k: v.clone() for k, v in encoded.items()}}, path)
    accelerator.wait_for_everyone()


# batch 4: 6 batches, 3 per process; batch 5: 5 batches, so process 1 gets a repeated (padding) batch
@pytest.mark.parametrize("batch_size", [4, 5])
def test_encode_split_two_processes_counts_each_row_once(tmp_path, evaluated, batch_size):
    from accelerate import debug_launcher

    path = str(tmp_path / "encoded.pt")
    debug_launcher(_two_process_encoding, args=(path, batch_size), num_processes=2)
    distributed = torch.load(path, weights_only=True)
    assert int(distributed.pop("num_processes")) == 2
    single = encode_split(tiny_model(), tiny_split(21, seed=1), batch_size=4)
    assert set(distributed) == set(single)
    for key in single:
        assert distributed[key].shape == single[key].shape, key  # 21 rows, padding dropped
        assert torch.allclose(distributed[key].float(), single[key].float(), atol=1e-6), key


def test_scores_equal_metric_functions(evaluated):
    model, query, database, result = evaluated
    q, db = encode_split(model, query), encode_split(model, database)
    assert (result["dataset"], result["hash_bits"], result["num_query"], result["num_database"]) == (
        "tiny",
        BITS,
        21,
        67,
    )
    for space, suffix, distance in (("hamming", "codes", "hamming"), ("continuous", "embeds", "cosine")):
        for direction, qm, dm in (("i2t", "image", "text"), ("t2i", "text", "image")):
            scores = result[space][direction]
            args = (q[f"{qm}_{suffix}"], db[f"{dm}_{suffix}"], q["labels"], db["labels"])
            assert scores["k"] == 21
            assert scores["map_all"] == pytest.approx(
                mean_average_precision(*args, distance=distance), abs=1e-12
            )
            assert scores["map_at_k"] == pytest.approx(
                mean_average_precision(*args, top_k=21, distance=distance), abs=1e-12
            )
            assert 0.0 < scores["map_all"] <= 1.0
    assert result["hamming"]["i2t"]["map_all"] != result["hamming"]["t2i"]["map_all"]
    assert len(result["curves"]["hamming"]["i2t"]["pr_curve"]["precision"]) == BITS + 1


def test_top_k_is_capped_at_database_size(evaluated):
    model, query, database, _ = evaluated
    result = evaluate_retrieval(model, database, query, "tiny", batch_size=64)  # 67 queries, 21 items
    assert result["continuous"]["t2i"]["k"] == 21
    assert result["continuous"]["t2i"]["map_at_k"] == result["continuous"]["t2i"]["map_all"]


def test_report_files_are_deterministic_and_shaped(tmp_path, evaluated):
    *_, result = evaluated
    first = write_evaluation_report(result, tmp_path / "a")
    second = write_evaluation_report(json.loads(json.dumps(result)), tmp_path / "b")
    assert [p.name for p in first] == list(REPORT_FILES)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert sorted(os.listdir(tmp_path / "a")) == sorted(REPORT_FILES)  # no temp files left behind
    written = json.loads((tmp_path / "a" / "eval_results.json").read_text())
    assert {"dataset", "hash_bits", "num_query", "num_database", "hamming", "continuous"} <= set(written)
    for space in ("hamming", "continuous"):
        for direction in ("i2t", "t2i"):
            entry = written[space][direction]
            assert isinstance(entry["map_all"], float) and isinstance(entry["map_at_k"], float)
            assert isinstance(entry["k"], int)
    assert (tmp_path / "a" / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "a" / "eval_summary.md").read_text()
    assert summary == summary_markdown(result)
    assert f"{result['hamming']['i2t']['map_all']:.4f}" in summary and "mAP@21" in summary


def test_bad_input(evaluated, tmp_path):
    model, query, database, result = evaluated
    with pytest.raises(ValueError, match="query_split lacks the column"):
        evaluate_retrieval(model, query.remove_columns(["labels"]), database, "tiny")
    with pytest.raises(ValueError, match="database_split is empty"):
        evaluate_retrieval(model, query, database.select([]), "tiny")
    with pytest.raises(ValueError, match="batch_size"):
        encode_split(model, query, batch_size=0)
    with pytest.raises(ValueError, match="dataset_name"):
        evaluate_retrieval(model, query, database, "")
    with pytest.raises(ValueError, match="result lacks"):
        write_evaluation_report({"dataset": "x"}, tmp_path)
