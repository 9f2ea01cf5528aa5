"""LoRA through peft: target discovery, what trains, adapter save/load and merging (modeling_crcgs.lora)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from transformers import BertModel, ResNetConfig, ResNetModel, ViTModel

from modeling_crcgs.backbones import BackboneEncoder, BackboneTower, build_backbone, resolve_backbone_config
from modeling_crcgs.lora import (
    find_lora_target_modules,
    load_lora_adapter,
    resolve_lora_options,
    save_lora_adapter,
)


def test_target_modules_are_found_per_architecture(vit_config, bert_config):
    assert find_lora_target_modules(ViTModel(vit_config)) == ["q_proj", "v_proj"]
    assert find_lora_target_modules(BertModel(bert_config)) == ["query", "value"]
    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    with pytest.raises(ValueError, match="cannot find attention projections.*convolution"):
        find_lora_target_modules(resnet)


def test_explicit_target_modules_override_discovery(vit_config):
    encoder = BackboneEncoder(vit_config, finetuning="lora", lora={"target_modules": ["fc1"]})
    adapted = {
        name.split(".lora_A")[0].rsplit(".", 1)[-1]
        for name, _ in encoder.named_parameters()
        if "lora_A" in name
    }
    assert adapted == {"fc1"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"r": 0}, r"\['r'\] must be a positive integer"),
        ({"lora_alpha": -1}, "lora_alpha"),
        ({"lora_dropout": 1.0}, r"lora_dropout'\] must be in \[0, 1\)"),
        ({"target_modules": []}, "target_modules"),
        ({"alpha": 8}, "unknown keys"),
        ("r=8", "must be a dict"),
    ],
)
def test_lora_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        resolve_lora_options(options, "vision_lora")


@pytest.mark.parametrize("modality", ["image", "text"])
def test_lora_trains_only_adapters_and_head(vit_config, bert_config, modality):
    torch.manual_seed(0)
    config = vit_config if modality == "image" else bert_config
    encoder = BackboneEncoder(
        config, modality=modality, finetuning="lora", lora={"r": 4, "lora_dropout": 0.0}
    )
    tower = BackboneTower(encoder, _Head())
    trainable = {name for name, p in tower.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    assert all("lora_" in name or name.startswith("head.") for name in trainable), sorted(trainable)
    assert any(name.startswith("head.") for name in trainable)
    before = {name: p.detach().clone() for name, p in tower.named_parameters()}
    optimizer = torch.optim.Adam(tower.parameters(), lr=1e-2)  # all of them, as a trainer's parameter group
    if modality == "image":
        inputs = {"pixel_values": torch.randn(4, 3, 32, 32)}
    else:
        ids = torch.randint(5, config.vocab_size, (4, 6))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    tower(**inputs).pow(2).sum().backward()
    optimizer.step()
    for name, p in tower.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if name in trainable and "lora_A" not in name:  # lora_A gets no gradient while lora_B = 0
            assert changed, f"{name} did not move"
        if name not in trainable:
            assert not changed, f"frozen {name} moved"


def test_adapter_save_load_round_trip(pretrained_bert_dir, tmp_path):
    torch.manual_seed(0)
    config = resolve_backbone_config(None, pretrained_bert_dir)
    encoder = BackboneEncoder(config, pretrained_bert_dir, modality="text", finetuning="lora").eval()
    _perturb_lora(encoder)
    target = tmp_path / "text_adapter"
    save_lora_adapter(encoder.backbone, str(target))
    save_lora_adapter(encoder.backbone, str(target))  # replacing an existing adapter folder works
    assert sorted(os.listdir(target)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary folders left behind"
    reloaded = load_lora_adapter(build_backbone(config, pretrained_bert_dir), str(target)).eval()
    ids = torch.randint(5, config.vocab_size, (3, 6))
    mask = torch.ones_like(ids)
    expected = encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).last_hidden_state, expected)
    with pytest.raises(ValueError, match="no adapter_config.json"):
        load_lora_adapter(build_backbone(config, None), str(tmp_path))


@pytest.mark.parametrize("modality", ["image", "text"])
def test_merged_encoder_equals_adapted_encoder(vit_config, bert_config, modality):
    torch.manual_seed(0)
    config = vit_config if modality == "image" else bert_config
    encoder = BackboneEncoder(config, modality=modality, finetuning="lora").eval()
    _perturb_lora(encoder)
    if modality == "image":
        inputs = {"pixel_values": torch.randn(3, 3, 32, 32)}
    else:
        ids = torch.randint(5, config.vocab_size, (3, 6))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    adapted = encoder(**inputs)
    encoder.merge_adapter()
    assert encoder.finetuning == "full"
    assert not any("lora_" in name for name, _ in encoder.named_parameters())
    assert all(p.requires_grad for p in encoder.parameters())
    torch.testing.assert_close(encoder(**inputs), adapted, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs finetuning='lora'"):
        encoder.merge_adapter()


def _perturb_lora(encoder: nn.Module) -> None:
    """Give lora_B non-zero values, as after training (at initialisation B = 0 and LoRA is the identity)."""
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)


class _Head(nn.Module):
    output_dim = 8

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))
