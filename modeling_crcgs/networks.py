"""The CRCGS building blocks (docs/METHOD.md "The four networks"): towers, teacher generation networks,
discriminators and the hash head, plus the two helpers the training stages run them with.

The model classes in :mod:`modeling_crcgs.modeling_crcgs` assemble these; nothing here knows about losses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .backbones import BackboneEncoder, BackboneTower
from .configuration_crcgs import CRCGSConfig

__all__ = [
    "Discriminator",
    "FeatureTower",
    "GenerationNetwork",
    "HashHead",
    "build_tower",
    "evaluating",
    "frozen_call",
    "mlp",
]


def mlp(dims: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """``Linear(dims[i], dims[i+1])`` followed by ``activation()`` for each consecutive pair (release ``mlp_network``)."""
    layers: list[nn.Module] = []
    for in_dim, out_dim in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(in_dim, out_dim), activation()]
    return nn.Sequential(*layers)


class FeatureTower(nn.Module):
    """Student tower on pre-extracted features: ``len(hidden_dims)`` x (Linear + tanh) (docs/METHOD.md network 3),
    after input noise and input dropout (neither in the release; the recipe for small real data uses both as
    its regularisers): in training mode ``x -> dropout(x + input_noise * N(0, I))``.

    Args:
        input_dim: width of the input features. hidden_dims: widths of the layers (release: 2048 x 3).
        input_dropout: dropout probability on the input features, active in training mode.
        input_noise: standard deviation of the Gaussian noise added to the inputs, active in training mode.
    """

    def __init__(
        self, input_dim: int, hidden_dims: list[int], input_dropout: float = 0.0, input_noise: float = 0.0
    ):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = hidden_dims[-1]
        self.input_noise = input_noise
        self.input_dropout = nn.Dropout(input_dropout)
        self.layers = mlp([input_dim, *hidden_dims], nn.Tanh)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, input_dim) -> (batch, output_dim)."""
        if self.training and self.input_noise:
            features = features + self.input_noise * torch.randn_like(features)
        return self.layers(self.input_dropout(features))


def build_tower(config: CRCGSConfig, modality: str) -> nn.Module:
    """The tower of one modality ("image" or "text"); every tower has an ``output_dim`` attribute."""
    encoder = BackboneEncoder.from_crcgs_config(config, modality) if modality in ("image", "text") else None
    regularisers = (config.tower_input_dropout, config.tower_input_noise)
    if encoder is not None:  # raw inputs: backbone -> pooled output -> the tower MLP
        return BackboneTower(
            encoder, FeatureTower(encoder.output_dim, config.tower_hidden_dims, *regularisers)
        )
    if modality == "image":
        return FeatureTower(config.image_input_dim, config.tower_hidden_dims, *regularisers)
    if modality == "text":
        return FeatureTower(config.text_input_dim, config.tower_hidden_dims, *regularisers)
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


class GenerationNetwork(nn.Module):
    """Teacher generation network: encoder E = dropout -> MLP(ReLU), decoder G = MLP(ReLU) (docs/METHOD.md networks 1-2).

    Args:
        input_dim: width of the source modality. encoder_dims: hidden widths of E. feature_dim: width of the
        generative feature E(x) (= converted_dim). decoder_dims: hidden widths of G. output_dim: width of the
        target modality. dropout: dropout on the encoder input. relu_output: whether G's last Linear is
        followed by a ReLU (the release; its targets are non-negative) or by nothing (signed targets, e.g.
        standardised features): the module indices, hence the weight names, are the same either way.
    """

    def __init__(
        self,
        input_dim: int,
        encoder_dims: list[int],
        feature_dim: int,
        decoder_dims: list[int],
        output_dim: int,
        dropout: float,
        relu_output: bool = True,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.encoder = mlp([input_dim, *encoder_dims, feature_dim], nn.ReLU)
        self.decoder = mlp([feature_dim, *decoder_dims, output_dim], nn.ReLU)
        if not relu_output:
            self.decoder[-1] = nn.Identity()

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """E(x) with input dropout (in training mode): (batch, input_dim) -> (batch, feature_dim)."""
        return self.encoder(self.dropout(source))

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """G(E(x)): (batch, input_dim) -> (batch, output_dim)."""
        return self.decoder(self.encode(source))


class Discriminator(nn.Module):
    """Teaching assistant: MLP(ReLU) over ``dims`` then Linear to 2 classes (teacher = 1, student = 0)."""

    def __init__(self, input_dim: int, dims: list[int]):
        super().__init__()
        self.layers = mlp([input_dim, *dims], nn.ReLU)
        self.classifier = nn.Linear(dims[-1] if dims else input_dim, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, input_dim) -> logits (batch, 2)."""
        return self.classifier(self.layers(inputs))


class HashHead(nn.Module):
    """Binary transform (docs/METHOD.md network 5): dropout, Linear(d, h)+tanh, Linear(h, h)+tanh, Linear(h, K)+tanh.

    The release writes the last map as a Conv1d with kernel h over one channel, which is exactly a Linear.
    """

    def __init__(self, input_dim: int, hidden_dim: int, hash_bits: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(input_dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, hidden_dim)
        self.hash_layer = nn.Linear(hidden_dim, hash_bits)

    def forward(self, embeds: torch.Tensor, apply_dropout: bool = True) -> torch.Tensor:
        """(batch, d) -> tanh outputs (batch, K); the input dropout acts in training mode when ``apply_dropout``."""
        hidden = self.dropout(embeds) if apply_dropout else embeds
        hidden = torch.tanh(self.linear1(hidden))
        hidden = torch.tanh(self.linear2(hidden))
        return torch.tanh(self.hash_layer(hidden))


def frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Run ``module`` with detached parameters: gradients reach the inputs but never the module's parameters.

    Used for the decoders and discriminators inside the student step. Unlike toggling ``requires_grad``,
    this leaves the parameters' flags alone (safe under DDP and with other optimizers holding them).
    """
    state = {name: param.detach() for name, param in module.named_parameters()}
    state.update(dict(module.named_buffers()))
    return torch.func.functional_call(module, state, args)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Temporarily put ``module`` in eval mode (the release runs the student in eval mode during D steps)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
