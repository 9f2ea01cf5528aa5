"""Checkpoints: save/load round trips, Auto classes, trust_remote_code in a fresh process, mismatch errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from modeling_crcgs import CRCGSConfig, CRCGSForPreTraining, CRCGSModel


def _inputs(config, batch=4):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, config.image_input_dim, generator=g)
    t = torch.rand(batch, config.text_input_dim, generator=g)
    y = (torch.rand(batch, config.num_labels, generator=g) > 0.5).float()
    return x, t, y


def _assert_safetensors_only(folder):
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)


def test_crcgs_model_round_trip_and_auto_classes(tiny_config, tmp_path):
    config = tiny_config()
    model = CRCGSModel(config).eval()
    x, t, y = _inputs(config)
    model.save_pretrained(tmp_path)
    _assert_safetensors_only(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CRCGSConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CRCGSModel
    a = model(image_features=x, text_features=t, labels=y, return_loss=True)
    b = loaded(image_features=x, text_features=t, labels=y, return_loss=True)
    for field in ("image_embeds", "text_embeds", "image_converted", "text_hash_logits", "loss"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.equal(model.get_image_hash_codes(x), loaded.get_image_hash_codes(x))


def test_pretraining_round_trip_and_retrieval_export(tiny_config, tmp_path):
    config = tiny_config()
    model = CRCGSForPreTraining(config).eval()
    x, t, y = _inputs(config)
    model.save_pretrained(tmp_path / "pt")
    _assert_safetensors_only(tmp_path / "pt")
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "pt").eval()
    assert type(loaded) is CRCGSForPreTraining
    for stage in ("student", "discriminator", "teacher", "hash"):
        a = model(image_features=x, text_features=t, labels=y, stage=stage)
        b = loaded(image_features=x, text_features=t, labels=y, stage=stage)
        assert torch.equal(a.loss, b.loss), stage

    model.save_retrieval_model(tmp_path / "retrieval")
    _assert_safetensors_only(tmp_path / "retrieval")
    keys = set(load_file(tmp_path / "retrieval" / "model.safetensors"))
    assert keys == set(model.crcgs.state_dict())  # student + hash head only
    assert not [n for n in os.listdir(tmp_path / "retrieval") if n.startswith(".tmp")]
    retrieval = AutoModel.from_pretrained(tmp_path / "retrieval").eval()
    assert type(retrieval) is CRCGSModel
    assert torch.equal(retrieval.get_text_features(t), model.crcgs.get_text_features(t))
    assert torch.equal(retrieval.get_image_hash_codes(x), model.crcgs.get_image_hash_codes(x))
    # A CRCGSModel also loads straight from the pretraining checkpoint (the "crcgs." prefix is stripped).
    direct = CRCGSModel.from_pretrained(tmp_path / "pt").eval()
    assert torch.equal(direct.get_text_features(t), model.crcgs.get_text_features(t))


def test_checkpoint_with_other_dims_gives_a_clear_error(tiny_config, tmp_path):
    config = tiny_config()
    CRCGSModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="image_input_dim: checkpoint 40 vs requested 48"):
        CRCGSModel.from_pretrained(tmp_path, image_input_dim=48)
    with pytest.raises(ValueError, match="common_dim"):
        AutoModel.from_pretrained(tmp_path, config=tiny_config(common_dim=16))


@pytest.mark.slow
def test_trust_remote_code_loads_in_a_fresh_process_without_the_package(tiny_config, tmp_path):
    config = tiny_config()
    model = CRCGSModel(config).eval()
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["auto_map"]["AutoModel"] == "modeling_crcgs.CRCGSModel"
    assert saved["auto_map"]["AutoConfig"] == "configuration_crcgs.CRCGSConfig"
    assert {"modeling_crcgs.py", "configuration_crcgs.py", "losses.py"} <= set(os.listdir(tmp_path / "model"))
    x = torch.rand(3, config.image_input_dim)
    save_file({"x": x}, tmp_path / "x.safetensors")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_crcgs"] = None  # the installed package is not importable here
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        x = load_file({str(tmp_path / "x.safetensors")!r})["x"]
        save_file({{"u": model.get_image_features(x).detach()}}, {str(tmp_path / "u.safetensors")!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Same weights; the subprocess may use another thread count, hence a float tolerance.
    torch.testing.assert_close(
        load_file(tmp_path / "u.safetensors")["u"], model.get_image_features(x).detach()
    )
