"""Linear CCA baseline and the evaluator's baseline, protocol and collapse reports."""

import logging

import numpy as np
import pytest
import torch
from crcgs_test_utils import tiny_crcgs_model
from datasets import Dataset

from modeling_crcgs.retrieval.baselines import LinearCCA, cca_baseline
from modeling_crcgs.retrieval.evaluation import code_statistics, evaluate_retrieval, summary_markdown


def _paired(n=300, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    x = np.hstack([latent, rng.normal(size=(n, 5))]) @ rng.normal(size=(8, 8))
    t = latent @ rng.normal(size=(3, 6)) + 0.3 * rng.normal(size=(n, 6))
    return x, t


def test_cca_directions_are_whitened_and_diagonalise_the_cross_covariance():
    x, t = _paired()
    cca = LinearCCA(regularization=0.0).fit(x, t)
    a, b = cca.transform(x, "image").astype(np.float64), cca.transform(t, "text").astype(np.float64)
    n = len(x)
    np.testing.assert_allclose(a.T @ a / n, np.eye(6), atol=1e-4)
    np.testing.assert_allclose(b.T @ b / n, np.eye(6), atol=1e-4)
    np.testing.assert_allclose(a.T @ b / n, np.diag(cca.correlations), atol=1e-4)
    assert np.all(np.diff(cca.correlations) <= 1e-12) and cca.correlations[2] > 0.9 > cca.correlations[3]


def test_cca_codes_use_the_leading_directions_then_random_projections():
    x, t = _paired()
    cca = LinearCCA().fit(x, t)
    few = cca.hash_codes(x, "image", 4)
    np.testing.assert_array_equal(few, np.where(cca.transform(x, "image")[:, :4] >= 0, 1, -1))
    many = cca.hash_codes(x, "image", 32)
    assert many.shape == (300, 32) and set(np.unique(many)) == {-1, 1}
    np.testing.assert_array_equal(many, cca.hash_codes(x, "image", 32))  # seeded


def test_cca_refuses_bad_input():
    x, t = _paired()
    with pytest.raises(ValueError, match="pair rows"):
        LinearCCA().fit(x, t[:10])
    with pytest.raises(ValueError, match="image_features contains NaN"):
        LinearCCA().fit(np.full_like(x, np.nan), t)
    with pytest.raises(ValueError, match="text_features must have 6 columns"):
        LinearCCA().fit(x, t).transform(x, "text")


def _split(x, t, labels, index):
    return Dataset.from_dict(
        {
            "image_features": x.astype(np.float32).tolist(),
            "text_features": t.astype(np.float32).tolist(),
            "labels": labels.astype(np.int8).tolist(),
            "index": index.tolist(),
        }
    )


def _classic_splits(seed=0):
    """Features where CCA is informative: classes drive both modalities."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, size=260)
    centres_x, centres_t = rng.normal(size=(4, 12)) * 2, rng.normal(size=(4, 7)) * 2
    x = centres_x[classes] + rng.normal(size=(260, 12))
    t = centres_t[classes] + rng.normal(size=(260, 7))
    labels = np.eye(4)[classes]
    rows = np.arange(260)
    train = _split(x[:200], t[:200], labels[:200], rows[:200])
    test = _split(x[200:], t[200:], labels[200:], rows[200:])
    return train, test


def test_evaluation_reports_cca_protocol_and_warns_when_the_model_loses(caplog):
    train, test = _classic_splits()
    model = tiny_crcgs_model(image_input_dim=12, text_input_dim=7, num_labels=4, hash_bits=8)
    with caplog.at_level(logging.WARNING, logger="modeling_crcgs.retrieval.evaluation"):
        result = evaluate_retrieval(model, test, test, dataset_name="toy", train_split=train)
    assert result["protocol"] == {"name": "classic", "query_database_overlap": 60}
    cca = result["baselines"]["cca"]
    expected = cca_baseline(train, test, test, hash_bits=8, top_k=60)
    assert cca == expected and cca["continuous"]["i2t"]["map_all"] > 0.6  # informative features
    # The untrained model is far below CCA: the run says so, per space.
    messages = [r.getMessage() for r in caplog.records if "does not beat the cca baseline" in r.getMessage()]
    assert len(messages) == 2 and "8-bit codes" in messages[0] and "embeddings" in messages[1]
    summary = summary_markdown(result)
    assert "| baseline CCA: cosine, embeddings | mean |" in summary and "Protocol: classic" in summary


def test_hashing_protocol_and_no_baseline_without_training_split():
    train, test = _classic_splits()
    model = tiny_crcgs_model(image_input_dim=12, text_input_dim=7, num_labels=4, hash_bits=8)
    result = evaluate_retrieval(model, test, train, dataset_name="toy")
    assert result["protocol"] == {"name": "hashing", "query_database_overlap": 0}
    assert "baselines" not in result


def test_collapsed_codes_are_reported_with_their_figures(caplog):
    train, test = _classic_splits()
    model = tiny_crcgs_model(image_input_dim=12, text_input_dim=7, num_labels=4, hash_bits=8)
    with torch.no_grad():  # a hash head whose last layer ignores its input: one code for every item
        model.hash_head.hash_layer.weight.zero_()
        model.hash_head.hash_layer.bias.fill_(0.5)
    with caplog.at_level(logging.WARNING, logger="modeling_crcgs.retrieval.evaluation"):
        result = evaluate_retrieval(model, test, test, dataset_name="toy")
    stats = result["code_statistics"]["image"]
    assert stats["constant_bits"] == 8 and stats["distinct_codes"] == 1 and stats["collapsed"]
    assert any(
        "8 of the bits are constant over the 60 database items" in r.getMessage() for r in caplog.records
    )


def test_code_statistics_of_balanced_distinct_codes():
    codes = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.int8)
    stats = code_statistics(codes, torch.eye(4, dtype=torch.int8))
    assert stats == {
        "num_items": 4,
        "constant_bits": 0,
        "distinct_codes": 4,
        "distinct_label_sets": 4,
        "mean_bit_balance": 0.5,
        "collapsed": False,
    }
