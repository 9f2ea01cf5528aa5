"""Backbone construction, pooling and fine-tuning modes (modeling_crcgs.backbones)."""

from __future__ import annotations

import json
import types

import pytest
import torch
from torch import nn
from transformers import BertConfig, PreTrainedConfig, PreTrainedModel, ViTConfig

from modeling_crcgs.backbones import (
    BackboneEncoder,
    BackboneTower,
    backbone_output_dim,
    build_backbone,
    pool_backbone_output,
    resolve_backbone_config,
    resolve_pooling,
    set_backbone_fields,
)


def test_resolve_backbone_config_from_object_dict_and_path(vit_config, pretrained_bert_dir):
    assert resolve_backbone_config(None, None) is None
    assert resolve_backbone_config(vit_config, None) is vit_config
    from_dict = resolve_backbone_config(vit_config.to_dict(), None)
    assert isinstance(from_dict, ViTConfig) and from_dict.hidden_size == 32 and from_dict.patch_size == 8
    from_path = resolve_backbone_config(None, pretrained_bert_dir)
    assert isinstance(from_path, BertConfig) and from_path.hidden_size == 32


@pytest.mark.parametrize(
    ("value", "path", "match"),
    [
        ({"hidden_size": 32}, None, "model_type"),
        ({"model_type": "no-such-model"}, None, "unknown model_type"),
        (42, None, "must be a transformers config"),
        (None, "/no/such/folder", "cannot load a backbone config"),
    ],
)
def test_resolve_backbone_config_errors(value, path, match):
    with pytest.raises(ValueError, match=match):
        resolve_backbone_config(value, path, "vision_config")


def test_resolve_pooling_reads_sentence_transformers_folder(tmp_path):
    assert resolve_pooling("auto", None) == "auto"
    assert resolve_pooling("auto", str(tmp_path)) == "auto"  # no 1_Pooling/config.json
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert resolve_pooling("auto", str(tmp_path)) == "mean"
    assert resolve_pooling("cls", str(tmp_path)) == "cls"  # an explicit choice wins
    with pytest.raises(ValueError, match="text_pooling must be one of"):
        resolve_pooling("max", None, "text_pooling")


def test_set_backbone_fields_validates_and_fills(vit_config):
    config = PreTrainedConfig()
    set_backbone_fields(config, "image", vit_config.to_dict(), None, "lora", {"r": 4}, "auto")
    assert isinstance(config.vision_config, ViTConfig)
    assert config.vision_backbone is None and config.vision_finetuning == "lora"
    assert config.vision_lora["r"] == 4 and config.vision_lora["lora_alpha"] == 16
    with pytest.raises(ValueError, match="text_finetuning must be one of"):
        set_backbone_fields(config, "text", None, None, "partial", None, "auto")
    with pytest.raises(ValueError, match="text_lora has unknown keys"):
        set_backbone_fields(config, "text", None, None, "lora", {"rank": 4}, "auto")


def test_masked_mean_pooling_matches_loop_reference():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    outputs = types.SimpleNamespace(last_hidden_state=hidden, pooler_output=None)
    pooled = pool_backbone_output(outputs, "auto", mask)
    for i in range(3):
        kept = [hidden[i, j] for j in range(5) if mask[i, j]]
        torch.testing.assert_close(pooled[i], torch.stack(kept).mean(0))
    torch.testing.assert_close(pool_backbone_output(outputs, "mean"), hidden.mean(1))
    torch.testing.assert_close(pool_backbone_output(outputs, "cls", mask), hidden[:, 0])


def test_pooling_prefers_pooler_output_and_handles_feature_maps():
    pooler = torch.randn(2, 4, 1, 1)
    outputs = types.SimpleNamespace(last_hidden_state=torch.randn(2, 4, 3, 3), pooler_output=pooler)
    torch.testing.assert_close(pool_backbone_output(outputs, "auto"), pooler.flatten(1))
    torch.testing.assert_close(
        pool_backbone_output(outputs, "mean"), outputs.last_hidden_state.mean(dim=(2, 3))
    )
    with pytest.raises(ValueError, match="feature map"):
        pool_backbone_output(outputs, "cls")


def test_pooling_errors():
    outputs = types.SimpleNamespace(last_hidden_state=torch.randn(2, 3, 4), pooler_output=None)
    with pytest.raises(ValueError, match="no pooler_output"):
        pool_backbone_output(outputs, "pooler")
    with pytest.raises(ValueError, match="without any token"):
        pool_backbone_output(outputs, "mean", torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 3\)"):
        pool_backbone_output(outputs, "mean", torch.ones(2, 4))


def test_output_dim_of_transformer_and_cnn_configs(vit_config):
    assert backbone_output_dim(vit_config) == 32
    assert backbone_output_dim(types.SimpleNamespace(hidden_sizes=[8, 16, 24])) == 24
    with pytest.raises(ValueError, match="output width"):
        backbone_output_dim(types.SimpleNamespace())


def test_image_and_text_encoders_shapes_and_input_errors(vit_config, bert_config):
    image = BackboneEncoder(vit_config, modality="image")
    assert image(pixel_values=torch.randn(2, 3, 32, 32)).shape == (2, 32)
    text = BackboneEncoder(bert_config, modality="text", pooling="mean")
    ids = torch.randint(5, bert_config.vocab_size, (3, 7))
    mask = torch.ones_like(ids)
    assert text(input_ids=ids, attention_mask=mask).shape == (3, 32)
    with pytest.raises(ValueError, match="needs pixel_values"):
        image(input_ids=ids)
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, channels, height, width\)"):
        image(pixel_values=torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="needs input_ids"):
        text(pixel_values=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="finetuning must be one of"):
        BackboneEncoder(vit_config, finetuning="partial")


def test_padding_does_not_change_a_text_embedding(bert_config):
    """Masked mean pooling: the same text padded to a longer batch embeds identically."""
    text = BackboneEncoder(bert_config, modality="text", pooling="mean").eval()
    ids = torch.tensor([[2, 8, 9, 3]])
    padded = torch.tensor([[2, 8, 9, 3, 0, 0], [2, 8, 9, 10, 11, 3]])
    mask = (padded != 0).long()
    alone = text(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(text(input_ids=padded, attention_mask=mask)[:1], alone, atol=1e-5, rtol=1e-5)


def test_frozen_backbone_has_no_gradient_and_stays_in_eval_mode(vit_config):
    encoder = BackboneEncoder(vit_config, finetuning="frozen")
    tower = BackboneTower(encoder, _Head(32, 8))
    tower.train()
    assert not encoder.backbone.training and tower.head.training
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    out = tower(pixel_values=torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert tower.head.linear.weight.grad is not None


def test_full_finetuning_gives_backbone_gradients(vit_config):
    encoder = BackboneEncoder(vit_config, finetuning="full")
    encoder(pixel_values=torch.randn(2, 3, 32, 32)).sum().backward()
    grads = {name: p.grad for name, p in encoder.backbone.named_parameters() if "layers." in name}
    assert grads and all(g is not None for g in grads.values())


def test_build_backbone_loads_pretrained_weights(pretrained_bert_dir):
    config = resolve_backbone_config(None, pretrained_bert_dir)
    loaded = build_backbone(config, pretrained_bert_dir)
    again = build_backbone(config, pretrained_bert_dir)
    fresh = build_backbone(config, None)
    name = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(loaded.state_dict()[name], again.state_dict()[name])
    assert not torch.equal(loaded.state_dict()[name], fresh.state_dict()[name])
    with pytest.raises(ValueError, match="cannot load backbone weights"):
        build_backbone(config, pretrained_bert_dir + "-missing")


def test_build_backbone_on_meta_device_skips_the_pretrained_folder(bert_config):
    """Inside an outer from_pretrained (meta device) the checkpoint supplies the weights: no file is read."""
    with torch.device("meta"):
        backbone = build_backbone(bert_config, "/folder/that/does/not/exist")
    assert next(backbone.parameters()).device.type == "meta"


class _Head(nn.Module):
    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.linear, self.output_dim = nn.Linear(input_dim, output_dim), output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


class _Outer(PreTrainedModel):
    """An outer model whose ``_init_weights`` would overwrite every Linear and Embedding."""

    config_class = PreTrainedConfig

    def __init__(self, config, encoder):
        super().__init__(config)
        self.tower = BackboneTower(encoder, _Head(32, 8))
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.constant_(module.weight, 0.5)


@pytest.mark.parametrize("finetuning", ["full", "lora"])
def test_outer_post_init_keeps_pretrained_weights_and_zero_lora_b(pretrained_bert_dir, finetuning):
    config = resolve_backbone_config(None, pretrained_bert_dir)
    reference = build_backbone(config, pretrained_bert_dir).state_dict()
    encoder = BackboneEncoder(config, pretrained_bert_dir, modality="text", finetuning=finetuning)
    outer = _Outer(PreTrainedConfig(), encoder)
    state = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in encoder.backbone.state_dict().items()
    }
    for name, value in reference.items():
        torch.testing.assert_close(state[name], value, msg=name)
    lora_b = [v for k, v in encoder.backbone.state_dict().items() if "lora_B" in k]
    assert (finetuning == "lora") == bool(lora_b)
    assert all(bool((b == 0).all()) for b in lora_b)
    assert bool((outer.tower.head.linear.weight == 0.5).all())  # the head is the outer model's to initialise
