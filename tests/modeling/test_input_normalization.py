"""Input normalisers of the feature towers: fitting, saving with the weights, raw features after reloading."""

import numpy as np
import pytest
import torch
from crcgs_test_utils import tiny_crcgs_config
from transformers import AutoModel

from modeling_crcgs import CRCGSForPreTraining, CRCGSModel
from modeling_crcgs.normalization import FeatureNormalizer

DIMS = {"image_input_dim": 12, "text_input_dim": 7, "num_labels": 4, "hash_bits": 16}


def _features(seed: int = 0):
    rng = np.random.default_rng(seed)
    histograms = rng.dirichlet(np.full(12, 0.3), size=64).astype(np.float32)  # rows sum to 1, like SIFT BoVW
    signed = (rng.normal(size=(64, 7)) * np.linspace(0.01, 50, 7) + 3).astype(np.float32)
    return torch.from_numpy(histograms), torch.from_numpy(signed)


def _normalised_model(seed: int = 0) -> CRCGSModel:
    torch.manual_seed(seed)
    config = tiny_crcgs_config(
        **DIMS, image_feature_normalization="sqrt-standardize", text_feature_normalization="standardize"
    )
    return CRCGSModel(config).eval()


def test_fit_matches_numpy_statistics():
    images, texts = _features()
    model = _normalised_model()
    model.fit_feature_normalizers(images, texts)
    expected_image = (np.sqrt(images.numpy()) - np.sqrt(images.numpy()).mean(0)) / np.sqrt(
        images.numpy()
    ).std(0)
    expected_text = (texts.numpy() - texts.numpy().mean(0)) / texts.numpy().std(0)
    np.testing.assert_allclose(model.normalize_features(images, "image").numpy(), expected_image, atol=1e-4)
    np.testing.assert_allclose(model.normalize_features(texts, "text").numpy(), expected_text, atol=1e-4)


def test_saved_and_reloaded_model_gives_the_same_codes_on_raw_features(tmp_path):
    images, texts = _features()
    model = _normalised_model()
    model.fit_feature_normalizers(images, texts)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.image_normalizer.mean, model.image_normalizer.mean)
    assert torch.equal(reloaded.get_image_hash_codes(images), model.get_image_hash_codes(images))
    assert torch.equal(reloaded.get_text_hash_codes(texts), model.get_text_hash_codes(texts))
    assert torch.allclose(reloaded.get_text_features(texts), model.get_text_features(texts))
    # The statistics matter: an unfitted model with the same weights answers differently.
    unfitted = _normalised_model()
    assert not torch.allclose(unfitted.get_text_features(texts), model.get_text_features(texts))


def test_a_model_without_normalisation_behaves_as_before():
    images, texts = _features()
    torch.manual_seed(0)
    plain = CRCGSModel(tiny_crcgs_config(**DIMS)).eval()
    assert plain.image_normalizer is None and plain.text_normalizer is None
    assert not any("normalizer" in key for key in plain.state_dict())
    plain.fit_feature_normalizers(images, texts)  # nothing configured: nothing changes
    expected = plain.common_projection(plain.image_tower(images))
    assert torch.equal(plain.get_image_features(images), expected)


def test_teachers_train_on_the_normalised_features():
    images, texts = _features()
    torch.manual_seed(0)
    config = tiny_crcgs_config(**DIMS, text_feature_normalization="standardize", contrastive_n_data=2)
    model = CRCGSForPreTraining(config)
    model.crcgs.fit_feature_normalizers(text_features=texts)
    out = model(image_features=images, text_features=texts, stage="teacher")
    normalised = model.crcgs.normalize_features(texts, "text")
    assert torch.allclose(out.loss_terms["teacher_i2t"], (out.text_reconstruction - normalised).abs().mean())


@pytest.mark.parametrize(
    ("fields", "i2t_relu", "t2i_relu"),
    [
        ({}, True, True),  # the release: non-negative targets, ReLU outputs
        ({"text_feature_normalization": "standardize"}, False, True),
        ({"image_feature_normalization": "sqrt-standardize"}, True, False),
        ({"text_feature_normalization": "standardize", "teacher_output_activation": "relu"}, True, True),
        ({"teacher_output_activation": "linear"}, False, False),
    ],
)
def test_teacher_decoders_end_linear_on_normalised_targets(fields, i2t_relu, t2i_relu):
    model = CRCGSForPreTraining(tiny_crcgs_config(**DIMS, contrastive_n_data=2, **fields))
    assert isinstance(model.teacher_i2t.decoder[-1], torch.nn.ReLU) == i2t_relu
    assert isinstance(model.teacher_t2i.decoder[-1], torch.nn.ReLU) == t2i_relu
    assert isinstance(model.teacher_i2t.decoder[-2], torch.nn.Linear)  # the same weight names either way
    release = CRCGSForPreTraining(tiny_crcgs_config(**DIMS, contrastive_n_data=2))
    teacher_weights = [key for key in model.state_dict() if key.startswith("teacher_")]
    assert teacher_weights == [key for key in release.state_dict() if key.startswith("teacher_")]


def test_teachers_learn_standardised_signed_targets():
    """Standardised targets are negative half the time: a ReLU output could fit at most their positive part."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(256, 12, generator=generator)
    texts = images @ torch.randn(12, 7, generator=generator) + 3.0  # a linear, signed target
    torch.manual_seed(0)
    config = tiny_crcgs_config(
        **DIMS, text_feature_normalization="standardize", teacher_dropout=0.0, contrastive_n_data=2
    )
    model = CRCGSForPreTraining(config)
    model.crcgs.fit_feature_normalizers(text_features=texts)
    optimizer = torch.optim.Adam(model.teacher_parameters(), lr=1e-2)
    for _ in range(300):
        out = model(image_features=images, text_features=texts, stage="teacher")
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    zero_prediction = model.crcgs.normalize_features(texts, "text").abs().mean()
    assert float(out.loss_terms["teacher_i2t"]) < 0.3 * float(zero_prediction)


def test_bad_teacher_output_activation_is_refused():
    with pytest.raises(ValueError, match="teacher_output_activation must be one of .*got 'tanh'"):
        tiny_crcgs_config(**DIMS, teacher_output_activation="tanh")


def test_constant_feature_maps_to_zero_and_negative_histograms_are_refused():
    normalizer = FeatureNormalizer(3, "standardize")
    features = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    normalizer.fit(features)
    assert torch.all(normalizer(features)[:, 1] == 0) and torch.isfinite(normalizer(features)).all()
    histogram = FeatureNormalizer(3, "sqrt-standardize")
    with pytest.raises(ValueError, match="image_features has negative values"):
        histogram.fit(features - 4, "image_features")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_feature_normalization", "zscore", "image_feature_normalization must be one of"),
        ("text_feature_normalization", None, "text_feature_normalization must be one of"),
        ("tower_input_dropout", 1.0, "tower_input_dropout must be a probability"),
        ("tower_input_noise", -0.1, "tower_input_noise must be a finite number >= 0"),
        ("tower_input_noise", float("inf"), "tower_input_noise must be a finite number >= 0"),
    ],
)
def test_bad_normalisation_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_crcgs_config(**DIMS, **{field: value})


def test_fit_refuses_bad_training_features():
    model = _normalised_model()
    with pytest.raises(ValueError, match=r"text_features must have shape \(n, 7\)"):
        model.fit_feature_normalizers(text_features=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="text_features contains NaN"):
        model.fit_feature_normalizers(text_features=torch.full((5, 7), float("nan")))


def test_tower_input_noise_perturbs_training_only():
    """Gaussian noise of the configured std on the towers' inputs in training mode; none in eval mode."""
    from modeling_crcgs.networks import FeatureTower

    tower = FeatureTower(64, [8], input_noise=0.5)
    inputs = torch.zeros(4000, 64)
    tower.layers = torch.nn.Sequential()  # look at what the layers receive
    tower.train()
    torch.manual_seed(0)
    noisy = tower(inputs)
    assert abs(float(noisy.std()) - 0.5) < 0.01 and abs(float(noisy.mean())) < 0.01
    tower.eval()
    assert torch.equal(tower(inputs), inputs)
    quiet = FeatureTower(64, [8], input_noise=0.0).train()
    quiet.layers = torch.nn.Sequential()
    assert torch.equal(quiet(inputs), inputs)
