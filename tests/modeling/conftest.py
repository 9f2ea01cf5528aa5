"""A tiny CRCGS config factory (dims like 32) shared by the modeling tests."""

import pytest
from crcgs_test_utils import tiny_crcgs_config

from modeling_crcgs import CRCGSConfig

# Uneven sizes (decoder 20 wide, discriminators of different depths) catch a swapped dimension.
TINY = dict(
    image_input_dim=40,
    text_input_dim=24,
    num_labels=6,
    hash_bits=12,
    tower_hidden_dims=[32, 32, 32],
    common_dim=32,
    teacher_i2t_decoder_dims=[20],
    image_discriminator_dims=[32, 16, 8],
    text_discriminator_dims=[16, 8, 4],
    contrastive_n_data=7,
)


@pytest.fixture()
def tiny_config():
    """``tiny_config(**overrides)`` -> a CRCGSConfig with tiny dimensions."""

    def make(**overrides) -> CRCGSConfig:
        return tiny_crcgs_config(**{**TINY, **overrides})

    return make
