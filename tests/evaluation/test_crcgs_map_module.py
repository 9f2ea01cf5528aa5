"""The `evaluate` metric module evaluation/crcgs_map: offline loading, its doctest, agreement with the library."""

import doctest
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from modeling_crcgs import pack_codes
from modeling_crcgs.retrieval.metrics import mean_average_precision

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "evaluation" / "crcgs_map"


@pytest.fixture(scope="module")
def crcgs_map():
    import evaluate

    return evaluate.load(str(MODULE_DIR))


def random_retrieval(seed=0, num_query=17, num_database=90, num_bits=12, num_labels=5):
    rng = np.random.default_rng(seed)
    return (
        rng.choice([-1, 1], size=(num_query, num_bits)).astype(np.int8),
        rng.choice([-1, 1], size=(num_database, num_bits)).astype(np.int8),
        (rng.random((num_query, num_labels)) < 0.3).astype(np.int8),
        (rng.random((num_database, num_labels)) < 0.3).astype(np.int8),
    )


def test_kwargs_description_doctest(monkeypatch):
    # The example loads "evaluation/crcgs_map": run it from the repository root, as documented.
    monkeypatch.chdir(REPO_ROOT)
    spec = importlib.util.spec_from_file_location("crcgs_map_under_test", MODULE_DIR / "crcgs_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(module._KWARGS_DESCRIPTION, {}, "crcgs_map._KWARGS_DESCRIPTION", None, 0)
    assert test.examples, "the example must contain >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert "AP_k(q)" in module._DESCRIPTION and "doi" in module._CITATION


def test_compute_equals_library_function(crcgs_map):
    qc, dc, ql, dl = random_retrieval()
    for top_k in (None, 17):
        expected = mean_average_precision(qc, dc, ql, dl, top_k=top_k)
        got = crcgs_map.compute(
            predictions=qc.tolist(),
            references=ql.tolist(),
            database_codes=dc,
            database_labels=dl,
            top_k=top_k,
        )
        assert got == {"map": pytest.approx(expected, abs=1e-12)}
        assert isinstance(got["map"], float)


def test_streaming_batches_packed_codes_and_cosine(crcgs_map):
    qc, dc, ql, dl = random_retrieval(seed=1)
    expected = mean_average_precision(qc, dc, ql, dl)
    for start in range(0, len(qc), 5):
        crcgs_map.add_batch(predictions=qc[start : start + 5], references=ql[start : start + 5])
    assert crcgs_map.compute(database_codes=dc, database_labels=dl)["map"] == pytest.approx(
        expected, abs=1e-12
    )
    packed = crcgs_map.compute(
        predictions=pack_codes(qc),
        references=ql,
        database_codes=pack_codes(dc),
        database_labels=dl,
        num_bits=12,
    )
    assert packed["map"] == pytest.approx(expected, abs=1e-12)
    embeddings = np.random.default_rng(2).normal(size=(len(qc), 6)).astype(np.float32)
    database = np.random.default_rng(3).normal(size=(len(dc), 6)).astype(np.float32)
    cosine = crcgs_map.compute(
        predictions=embeddings, references=ql, database_codes=database, database_labels=dl, distance="cosine"
    )
    expected = mean_average_precision(embeddings, database, ql, dl, distance="cosine")
    assert cosine["map"] == pytest.approx(expected, abs=1e-12)


def test_bad_input(crcgs_map):
    qc, dc, ql, dl = random_retrieval()
    with pytest.raises(ValueError, match="database_codes and database_labels"):
        crcgs_map.compute(predictions=qc, references=ql)
    with pytest.raises(ValueError, match="distance"):
        crcgs_map.compute(predictions=qc, references=ql, database_codes=dc, database_labels=dl, distance="l2")
    with pytest.raises(ValueError, match="same width"):
        crcgs_map.compute(predictions=qc, references=ql, database_codes=dc[:, :8], database_labels=dl)
    with pytest.raises(ValueError, match="query_codes"):
        crcgs_map.compute(predictions=qc * 0.5, references=ql, database_codes=dc, database_labels=dl)
