"""CRCGS models with transformers backbones: raw inputs, training stages, checkpoints, LoRA merge."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, BertModel, ViTModel

from modeling_crcgs import CRCGSConfig, CRCGSForPreTraining, CRCGSModel
from modeling_crcgs.adapters import merge_lora_checkpoint
from modeling_crcgs.backbones import BackboneTower
from modeling_crcgs.lora import load_lora_adapter
from training.merge_lora import main as merge_main

IMAGE_DIM, BOW_DIM, LABELS = 16, 10, 3


def _config(vit_config, bert_config, **overrides) -> CRCGSConfig:
    kwargs = dict(
        image_input_dim=IMAGE_DIM,
        text_input_dim=BOW_DIM,
        num_labels=LABELS,
        hash_bits=8,
        tower_hidden_dims=[16, 16],
        common_dim=16,
        converted_dim=8,
        teacher_i2t_encoder_dims=[16],
        teacher_i2t_decoder_dims=[16],
        teacher_t2i_encoder_dims=[16],
        teacher_t2i_decoder_dims=[16],
        image_discriminator_dims=[8],
        text_discriminator_dims=[8],
        contrastive_n_data=4,
        support_set_weight=0.001,
        vision_config=vit_config,
        text_config=bert_config,
        vision_finetuning="lora",
        text_finetuning="lora",
    )
    kwargs.update(overrides)
    return CRCGSConfig(**kwargs)


def _batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 26, (n, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {
        "pixel_values": torch.randn(n, 3, 32, 32, generator=g),
        "input_ids": ids,
        "attention_mask": mask,
        "teacher_image_features": torch.rand(n, IMAGE_DIM, generator=g),
        "text_features": (torch.rand(n, BOW_DIM, generator=g) > 0.5).float(),
        "labels": torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.float)[:n],
    }


def _perturb_lora(model: torch.nn.Module) -> None:
    """Non-zero lora_B, as after training (B = 0 at initialisation makes LoRA the identity)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)


def _encode(model: CRCGSModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        u = model.get_image_features(pixel_values=batch["pixel_values"])
        v = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return u, v


def test_raw_inputs_through_features_hash_codes_and_forward(vit_config, bert_config):
    model = CRCGSModel(_config(vit_config, bert_config)).eval()
    assert isinstance(model.image_tower, BackboneTower) and isinstance(model.text_tower, BackboneTower)
    batch = _batch()
    u, v = _encode(model, batch)
    assert u.shape == (4, 16) and v.shape == (4, 16)
    codes = model.get_image_hash_codes(pixel_values=batch["pixel_values"])
    assert codes.dtype == torch.int8 and codes.shape == (4, 8)
    text_codes = model.get_text_hash_codes(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    )
    torch.testing.assert_close(text_codes, model.hash_codes_from_embeddings(v))
    out = model(
        pixel_values=batch["pixel_values"],
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        return_loss=True,
    )
    torch.testing.assert_close(out.image_embeds, u)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="needs pixel_values"):
        model.get_image_features(image_features=torch.rand(2, IMAGE_DIM))
    with pytest.raises(ValueError, match="needs input_ids"):
        model.get_text_features(text_features=torch.rand(2, BOW_DIM))


def test_feature_model_rejects_raw_inputs(vit_config, bert_config):
    model = CRCGSModel(_config(None, None))
    with pytest.raises(ValueError, match=r"pixel_values needs an image backbone \(config.vision_config\)"):
        model.get_image_features(pixel_values=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"input_ids needs a text backbone \(config.text_config\)"):
        model.get_text_features(input_ids=torch.ones(2, 3, dtype=torch.long))


def test_training_stages_with_raw_inputs_update_only_adapters_and_heads(vit_config, bert_config):
    torch.manual_seed(0)
    model = CRCGSForPreTraining(_config(vit_config, bert_config))
    batch = _batch()
    teacher = model(stage="teacher", **{k: batch[k] for k in ("teacher_image_features", "text_features")})
    assert torch.isfinite(teacher.loss)
    disc = model(stage="discriminator", **{k: v for k, v in batch.items() if k != "labels"})
    assert torch.isfinite(disc.loss)
    hashed = model(stage="hash", **{k: v for k, v in batch.items() if k != "teacher_image_features"})
    assert torch.isfinite(hashed.loss)

    params = model.student_parameters()
    in_group = {id(p) for p in params}
    for name, p in model.crcgs.named_parameters():  # LoRA: only adapters of the backbones join the optimizer
        if ".encoder.backbone." in name:
            assert (id(p) in in_group) == ("lora_" in name), name
    before = {name: p.detach().clone() for name, p in model.crcgs.named_parameters()}
    optimizer = torch.optim.Adam(params, lr=1e-2)
    out = model(stage="student", **batch)
    assert set(out.loss_terms) == {"base", "distillation", "adversarial", "contrastive", "support_set"}
    out.loss.backward()
    optimizer.step()
    for name, p in model.crcgs.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        in_backbone = ".encoder.backbone." in name
        if in_backbone and "lora_" not in name:
            assert not p.requires_grad and not changed, f"frozen backbone weight {name} trained"
        if "lora_B" in name or ".head." in name or name.startswith("common_projection"):
            assert changed, f"{name} did not train"
    with pytest.raises(ValueError, match=r"needs both image_features \(or pixel_values\)"):
        model(
            stage="student",
            text_features=batch["text_features"],
            input_ids=batch["input_ids"],
            teacher_image_features=batch["teacher_image_features"],
            labels=batch["labels"],
        )


def test_finetuning_modes_per_tower(vit_config, bert_config):
    model = CRCGSModel(_config(vit_config, bert_config, vision_finetuning="frozen", text_finetuning="full"))
    model.train()
    assert not any(p.requires_grad for p in model.image_tower.encoder.parameters())
    assert not model.image_tower.encoder.backbone.training
    assert all(p.requires_grad for p in model.text_tower.encoder.parameters())
    pretraining = CRCGSForPreTraining(model.config)
    in_group = {id(p) for p in pretraining.student_parameters()}
    assert not any(id(p) in in_group for p in pretraining.crcgs.image_tower.encoder.parameters())
    assert all(id(p) in in_group for p in pretraining.crcgs.text_tower.encoder.parameters())
    assert all(id(p) in in_group for p in pretraining.crcgs.image_tower.head.parameters())


def test_lora_checkpoint_round_trip_adapters_and_merge(
    vit_config, bert_config, tmp_path, image_processor, tokenizer
):
    torch.manual_seed(0)
    model = CRCGSModel(_config(vit_config, bert_config)).eval()
    _perturb_lora(model)
    batch = _batch()
    u, v = _encode(model, batch)
    model.save_pretrained(tmp_path / "lora")
    model.save_pretrained(tmp_path / "lora")  # saving twice replaces the adapter folders
    for adapter in ("image_adapter", "text_adapter"):
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(
            os.listdir(tmp_path / "lora" / adapter)
        )
    from modeling_crcgs import CRCGSProcessor

    CRCGSProcessor(image_processor, tokenizer).save_pretrained(tmp_path / "lora")

    reloaded = AutoModel.from_pretrained(tmp_path / "lora").eval()
    for got, expected in zip(_encode(reloaded, batch), (u, v), strict=True):
        torch.testing.assert_close(got, expected)

    # The peft-format adapter on the plain backbone reproduces the adapted backbone.
    base = BertModel(bert_config)
    base.load_state_dict(
        {
            k.replace("base_model.model.", "").replace(".base_layer", ""): t
            for k, t in model.text_tower.encoder.backbone.state_dict().items()
            if "lora_" not in k
        }
    )
    adapted = load_lora_adapter(base, str(tmp_path / "lora" / "text_adapter")).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.testing.assert_close(
        adapted(input_ids=ids, attention_mask=mask).last_hidden_state,
        model.text_tower.encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state,
    )

    merged_dir = merge_main(["--model_dir", str(tmp_path / "lora"), "--output_dir", str(tmp_path / "merged")])
    config = json.loads(open(os.path.join(merged_dir, "config.json")).read())
    assert config["vision_finetuning"] == config["text_finetuning"] == "full"
    assert os.path.isfile(os.path.join(merged_dir, "processor_config.json"))
    assert not os.path.exists(os.path.join(merged_dir, "image_adapter"))
    with safe_open(os.path.join(merged_dir, "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora_" in k or "base_layer" in k]
    merged = AutoModel.from_pretrained(merged_dir).eval()
    assert isinstance(merged.image_tower.encoder.backbone, ViTModel)
    for got, expected in zip(_encode(merged, batch), (u, v), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no LoRA backbone to merge"):
        merge_lora_checkpoint(merged_dir, str(tmp_path / "again"))
    with pytest.raises(ValueError, match="--output_dir must differ from --model_dir"):
        merge_main(["--model_dir", merged_dir, "--output_dir", merged_dir])


def test_pretrained_backbone_paths_load_and_checkpoints_do_not_need_them(
    pretrained_vit_dir, pretrained_bert_dir, tmp_path
):
    vit_copy = shutil.copytree(pretrained_vit_dir, tmp_path / "vit")
    config = _config(
        None,
        None,
        vision_backbone=str(vit_copy),
        text_backbone=pretrained_bert_dir,
        vision_finetuning="full",
        text_finetuning="frozen",
    )
    assert config.vision_config.model_type == "vit" and config.text_config.model_type == "bert"
    model = CRCGSModel(config).eval()
    pretrained = ViTModel.from_pretrained(pretrained_vit_dir).state_dict()
    for name, value in model.image_tower.encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, pretrained[name], msg=name)
    batch = _batch()
    u, v = _encode(model, batch)
    model.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(vit_copy)  # the checkpoint holds the weights: the pretrained folder is no longer needed
    reloaded = AutoModel.from_pretrained(tmp_path / "ckpt").eval()
    for got, expected in zip(_encode(reloaded, batch), (u, v), strict=True):
        torch.testing.assert_close(got, expected)
