"""Two gloo processes x B/2 rows give the loss terms and gradients of one process x B rows.

Each stage (student, discriminator, hash) takes one forward/backward on the same 12 rows: split 6 + 6
over two DDP processes inside `losses.global_batch`, or whole on one process; loss terms and every
parameter gradient must agree within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import debug_launcher
from safetensors.torch import load_file

from modeling_crcgs.losses import gather_batch, global_batch
from tests.training.global_batch_step import STAGES, one_process, two_process_worker

TOLERANCE = 1e-5


@pytest.mark.slow
def test_two_processes_give_the_loss_terms_and_gradients_of_one(tmp_path):
    debug_launcher(two_process_worker, args=(str(tmp_path),), num_processes=2)
    expected = one_process()
    for stage in STAGES:
        assert any(k.startswith(f"{stage}/grad/") for k in expected), stage
        assert any(k.startswith(f"{stage}/term/") for k in expected), stage
    for rank in (0, 1):
        got = load_file(tmp_path / f"rank{rank}.safetensors")
        assert set(got) == set(expected)
        for name, value in expected.items():
            diff = (got[name] - value).abs().max().item()
            assert diff <= TOLERANCE, f"rank {rank} {name}: max |2 processes - 1 process| = {diff:.2e}"


def test_gather_batch_is_the_identity_outside_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    with global_batch():
        assert gather_batch(x) is x
    assert gather_batch(None) is None
