"""The student stage alternates `dis_iter` discriminator optimizer steps with each student step."""

import math
from collections import Counter

import pytest
from accelerate import Accelerator
from tiny_training_config import TINY_MODEL, tiny_config, write_config
from torch.optim.optimizer import register_optimizer_step_post_hook

from modeling_crcgs import CRCGSForPreTraining
from training.arguments import parse_args
from training.data import data_dims, load_splits
from training.model_setup import build_config
from training.stages import student_unit


@pytest.mark.parametrize("dis_iter", [1, 3])
def test_each_student_step_follows_dis_iter_discriminator_steps(tmp_path, dis_iter):
    config = tiny_config(tmp_path / "out", model_config={**TINY_MODEL, "dis_iter": dis_iter})
    data_args, model_args, args = parse_args(["--config", str(write_config(tmp_path / "tiny.json", config))])
    splits = load_splits(data_args)
    num_batches = math.ceil(len(splits["train"]) / args.student_batch_size)
    model = CRCGSForPreTraining(
        build_config(model_args.model_config, data_dims(splits["train"]), 8, num_batches)
    )
    groups = {
        frozenset(map(id, model.student_parameters())): "student",
        frozenset(map(id, model.discriminator_parameters())): "discriminator",
    }
    spec = student_unit(Accelerator(), model, splits, args, num_workers=0)

    steps: Counter = Counter()
    order: list[str] = []

    def count(optimizer, *_):
        name = groups.get(frozenset(id(p) for g in optimizer.param_groups for p in g["params"]), "other")
        steps[name] += 1
        order.append(name)

    handle = register_optimizer_step_post_hook(count)
    try:
        for batch in spec.loader:
            spec.train_step(batch)
    finally:
        handle.remove()
    assert num_batches == 8
    assert steps == {"student": num_batches, "discriminator": dis_iter * num_batches}
    assert order == (["discriminator"] * dis_iter + ["student"]) * num_batches
