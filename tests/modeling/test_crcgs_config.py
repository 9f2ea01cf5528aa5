"""CRCGSConfig: release defaults, validation errors naming the field, JSON round trip, docstring examples."""

import doctest
import json

import pytest

import modeling_crcgs.hashing
import modeling_crcgs.modeling_crcgs
from modeling_crcgs import CRCGSConfig, configuration_crcgs


def test_release_defaults():
    c = CRCGSConfig()
    assert (c.image_input_dim, c.text_input_dim, c.num_labels, c.hash_bits) == (4096, 1386, 24, 64)
    assert c.tower_hidden_dims == [2048, 2048, 2048]
    assert (c.common_dim, c.converted_dim, c.hash_head_hidden_dim) == (1024, 1024, 512)
    assert c.teacher_i2t_encoder_dims == [2048] and c.teacher_i2t_decoder_dims == [2000]
    assert c.teacher_t2i_encoder_dims == [2048] and c.teacher_t2i_decoder_dims == [2048]
    assert c.image_discriminator_dims == [2048, 1024, 512] and c.text_discriminator_dims == [512, 64, 32]
    assert (c.teacher_dropout, c.hash_dropout) == (0.3, 0.3)
    assert (c.label_loss_weight, c.similarity_loss_weight, c.modality_gap_loss_weight) == (1.0, 1.0, 0.001)
    assert (c.distillation_weight, c.adversarial_weight, c.dis_iter) == (0.2, 0.01, 3)
    assert (c.contrastive_weight, c.contrastive_temperature, c.contrastive_n_data) == (0.03, 0.07, None)
    assert c.contrastive_eps == 1e-7
    assert (c.support_set_weight, c.support_set_temperature) == (40.0, 0.06)
    assert (c.hash_similarity_weight, c.hash_label_weight, c.hash_quantization_weight) == (1.0, 1.0, 0.0)
    assert c.model_type == "crcgs"


@pytest.mark.parametrize(
    "field,value",
    [
        ("image_input_dim", 0),
        ("text_input_dim", -3),
        ("common_dim", 2.5),
        ("converted_dim", 0),
        ("num_labels", 0),
        ("hash_bits", 7),
        ("hash_bits", 1025),
        ("hash_bits", True),
        ("contrastive_temperature", 0.0),
        ("support_set_temperature", -0.1),
        ("support_set_weight", -1.0),
        ("label_loss_weight", float("nan")),
        ("hash_quantization_weight", -0.5),
        ("adversarial_weight", float("inf")),
        ("teacher_dropout", 1.0),
        ("hash_dropout", -0.1),
        ("dis_iter", -1),
        ("contrastive_n_data", 0),
        ("hash_hidden_dim", 0),
        ("tower_hidden_dims", []),
        ("tower_hidden_dims", 2048),
        ("image_discriminator_dims", [16, 0]),
        ("retrieval_embedding", "posterior"),
        ("retrieval_embedding", ["common"]),
        ("label_agreement_weight", -1.0),
    ],
)
def test_invalid_field_raises_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        CRCGSConfig(**{field: value})


def test_json_round_trip_and_overrides_are_validated(tmp_path):
    config = CRCGSConfig(num_labels=5, hash_bits=16, tower_hidden_dims=[8, 8], contrastive_n_data=12)
    config.save_pretrained(tmp_path)
    loaded = CRCGSConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_labels == 5 and loaded.tower_hidden_dims == [8, 8]
    assert CRCGSConfig.from_pretrained(tmp_path, hash_bits=32).hash_bits == 32
    with pytest.raises(ValueError, match="hash_bits"):
        CRCGSConfig.from_pretrained(tmp_path, hash_bits=3)


def test_num_labels_follows_id2label():
    assert CRCGSConfig(id2label={0: "dog", 1: "sky"}).num_labels == 2


@pytest.mark.parametrize(
    "module", [configuration_crcgs, modeling_crcgs.modeling_crcgs, modeling_crcgs.hashing]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_config_docstring_has_example_blocks():
    finder = doctest.DocTestFinder()
    names = {t.name.split(".")[-1] for t in finder.find(configuration_crcgs) if t.examples}
    assert "CRCGSConfig" in names
    names = {t.name.split(".")[-1] for t in finder.find(modeling_crcgs.modeling_crcgs) if t.examples}
    assert {"CRCGSModel", "CRCGSForPreTraining"} <= names


@pytest.mark.parametrize(
    "typo, closest",
    [
        ("hash_bit", "hash_bits"),
        ("commn_dim", "common_dim"),
        ("support_set_wieght", "support_set_weight"),
        ("tower_hidden_dim", "tower_hidden_dims"),
        ("vision_backbon", "vision_backbone"),
    ],
)
def test_unknown_field_is_refused_naming_the_closest(tmp_path, typo, closest):
    with pytest.raises(ValueError, match=f"no field '{typo}'; did you mean '{closest}'"):
        CRCGSConfig(**{typo: 32})
    # the same typo in a saved config.json
    CRCGSConfig(hash_bits=16).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved[typo] = 32
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=f"no field '{typo}'"):
        CRCGSConfig.from_pretrained(tmp_path)


def test_unknown_field_far_from_any_name_is_refused_without_a_guess():
    with pytest.raises(ValueError, match="no field 'zzqqxx'$"):
        CRCGSConfig(zzqqxx=1)


def test_transformers_base_keys_still_load(tmp_path):
    config = CRCGSConfig(
        hash_bits=16,
        architectures=["CRCGSModel"],
        dtype="float32",
        torch_dtype="float32",
        pad_token_id=0,
        use_cache=False,
        output_attentions=False,
        auto_map={"AutoModel": "modeling_crcgs.CRCGSModel"},
        _attn_implementation_autoset=True,
    )
    config.save_pretrained(tmp_path)
    assert CRCGSConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("weights", "uses"),
    [
        ({}, True),  # the release's weights
        ({"distillation_weight": 0, "adversarial_weight": 0, "contrastive_weight": 0}, False),
        ({"distillation_weight": 0, "adversarial_weight": 0.01, "contrastive_weight": 0}, True),
        (  # without discriminator steps the adversarial term still runs through the teachers' decoders
            {"distillation_weight": 0, "adversarial_weight": 0.01, "contrastive_weight": 0, "dis_iter": 0},
            True,
        ),
        ({"distillation_weight": 0, "adversarial_weight": 0, "contrastive_weight": 0.03}, True),
        (
            {
                "distillation_weight": 0,
                "adversarial_weight": 0,
                "contrastive_weight": 0,
                "support_set_weight": 1,
            },
            False,
        ),
    ],
)
def test_student_uses_teachers_follows_the_teacher_terms(weights, uses):
    assert CRCGSConfig(**weights).student_uses_teachers is uses


def test_retrieval_embedding_sets_the_ranking_distance():
    assert CRCGSConfig().retrieval_distance == "cosine"  # the paper: common space, cosine
    assert CRCGSConfig(retrieval_embedding="label_posterior").retrieval_distance == "inner_product"


def test_label_posteriors_need_the_label_term():
    with pytest.raises(ValueError, match="label_posterior.*label_loss_weight must be > 0"):
        CRCGSConfig(retrieval_embedding="label_posterior", label_loss_weight=0.0)
