"""One forward/backward of each stage on the same rows, on one process or split over DDP processes.

Shared by `test_global_batch_losses.py` and `benchmarks/bench_distributed.py`: `one_process()` and
`two_process_worker(out_dir)` (run under `accelerate.debug_launcher`) return / save the loss terms and
every parameter gradient, keyed `<stage>/term/<name>` and `<stage>/grad/<parameter>`.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import save_file

from modeling_crcgs import CRCGSForPreTraining
from modeling_crcgs.losses import global_batch
from tests.crcgs_test_utils import tiny_crcgs_config

ROWS, IMAGE_DIM, TEXT_DIM, LABELS = 12, 10, 14, 5
STAGES = ("student", "discriminator", "hash")


def tiny_model() -> CRCGSForPreTraining:
    """A tiny pre-training model (seed 0) without dropout, so that both runs draw nothing at random."""
    torch.manual_seed(0)
    config = tiny_crcgs_config(
        image_input_dim=IMAGE_DIM,
        text_input_dim=TEXT_DIM,
        num_labels=LABELS,
        hash_bits=8,
        contrastive_n_data=5,
        teacher_dropout=0.0,
        hash_dropout=0.0,
        support_set_weight=0.5,
        hash_quantization_weight=0.1,
    )
    return CRCGSForPreTraining(config)


def fixed_batch() -> dict[str, torch.Tensor]:
    """ROWS rows of features and multi-hot labels (seed 1)."""
    generator = torch.Generator().manual_seed(1)
    return {
        "image_features": torch.randn(ROWS, IMAGE_DIM, generator=generator),
        "text_features": torch.rand(ROWS, TEXT_DIM, generator=generator),
        "labels": (torch.rand(ROWS, LABELS, generator=generator) > 0.6).float(),
    }


def _step(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], batch, stage, backward):
    """Loss terms and gradients (by parameter name) of one forward/backward of `stage`."""
    for p in params.values():
        p.grad = None
    inputs = batch if stage != "discriminator" else {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, stage=stage)
    backward(out.loss)
    result = {f"term/{k}": v.detach().clone().reshape(()) for k, v in out.loss_terms.items()}
    result.update({f"grad/{k}": p.grad.clone() for k, p in params.items() if p.grad is not None})
    return result


def one_process() -> dict[str, torch.Tensor]:
    """Every stage on all ROWS rows in this process (no process group)."""
    model, batch = tiny_model().train(), fixed_batch()
    params = dict(model.named_parameters())
    results = {}
    for stage in STAGES:
        results.update(
            {
                f"{stage}/{k}": v
                for k, v in _step(model, params, batch, stage, lambda loss: loss.backward()).items()
            }
        )
    return results


def two_process_worker(out_dir: str) -> None:
    """Every stage on this rank's share of the rows inside `global_batch`; saves `<out_dir>/rank<r>.safetensors`."""
    accelerator = Accelerator(
        cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
    )
    model = tiny_model()
    params = dict(model.named_parameters())
    wrapped = accelerator.prepare(model)
    wrapped.train()
    rank, world = accelerator.process_index, accelerator.num_processes
    share = ROWS // world
    local = {k: v[rank * share : (rank + 1) * share] for k, v in fixed_batch().items()}
    results = {}
    for stage in STAGES:
        with global_batch():
            results.update(
                {
                    f"{stage}/{k}": v
                    for k, v in _step(wrapped, params, local, stage, accelerator.backward).items()
                }
            )
    save_file(results, f"{out_dir}/rank{rank}.safetensors")
