"""Loading a model folder that is wrong on disk: non-finite weights, damaged safetensors, no config, no folder."""

import os

import pytest
import torch
from crcgs_test_utils import save_tiny_crcgs_model
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from modeling_crcgs import CRCGSForPreTraining, CRCGSModel


@pytest.fixture
def model_dir(tmp_path):
    return save_tiny_crcgs_model(tmp_path / "model", hash_bits=16)


def _poison(model_dir, value, index=0):
    weights = load_file(str(model_dir / "model.safetensors"))
    name = sorted(weights)[index]
    weights[name].view(-1)[0] = value
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("index", [0, -1])
def test_non_finite_weights_are_refused_naming_the_tensor(model_dir, value, index):
    name = _poison(model_dir, value, index)
    with pytest.raises(ValueError, match=f"{name.split('.', 1)[-1]}' holds NaN or infinite values"):
        CRCGSModel.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        AutoModel.from_pretrained(model_dir)


def test_finite_weights_still_load(model_dir):
    assert CRCGSModel.from_pretrained(model_dir, output_loading_info=True)[0].config.hash_bits == 16


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "empty"])
def test_damaged_safetensors_names_the_folder(model_dir, damage):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "random_bytes": os.urandom(len(data)), "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match=f"{model_dir}.*cannot be read as safetensors"):
        CRCGSModel.from_pretrained(model_dir)


def test_folder_without_config_says_so(model_dir):
    (model_dir / "config.json").unlink()
    with pytest.raises(ValueError, match="holds no config.json"):
        CRCGSModel.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="holds no config.json"):
        CRCGSForPreTraining.from_pretrained(model_dir)


@pytest.mark.parametrize("name", ["nope/inner/model", "./missing-model", "/definitely/not/here"])
def test_missing_folder_says_so(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        CRCGSModel.from_pretrained(name)


def test_a_file_instead_of_a_folder_says_so(model_dir):
    with pytest.raises(ValueError, match="expected a model folder, got a file"):
        CRCGSModel.from_pretrained(model_dir / "config.json")


def test_explicit_config_does_not_need_config_json(model_dir):
    first = CRCGSModel.from_pretrained(model_dir)
    (model_dir / "config.json").unlink()
    again = CRCGSModel.from_pretrained(model_dir, config=first.config)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
