"""The three CRCGS training stages as `UnitSpec`s for `training.loop.UnitRunner`.

1. teachers: I2T and T2I generation networks, L1 reconstruction, Adam, lr halved on a plateau of the
   validation loss, best epoch by validation loss;
2. student: the full objective with `dis_iter` discriminator steps per student step (separate Adam
   optimizers, teachers frozen), best epoch by validation mAP on continuous embeddings;
2b. with ``--refit_student``, the student again (unit ``student-refit``): from its initial weights, on
   train + validation, for the number of epochs stage 2 kept; no validation, the last epoch kept;
3. hash head (one per code length): student frozen, trained from student embeddings cached once
   (or recomputed each epoch, as the release does), best epoch by validation mAP on Hamming codes.

Every model call goes through `CRCGSForPreTraining.forward(stage=...)` of the prepared (possibly DDP)
model, so gradients are synchronised across processes. The `--*_batch_size` of a stage is the GLOBAL
batch: each of N processes loads B/N rows (`training.data.per_process_batch_size`) and the training
steps run inside `modeling_crcgs.losses.global_batch`, so the batch-level losses (likelihood, NCE,
support set, discriminators, hash terms) see all B rows, as on one process (the teachers' L1 is a
per-row mean: DDP's gradient average over equal shards is already the global one). Each stage sets
which parameters train before `accelerator.prepare`, after `accelerator.free_memory()` drops the
previous stage's objects, so an Accelerate checkpoint holds exactly one stage's model and optimizers.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from modeling_crcgs import CRCGSForPreTraining
from modeling_crcgs.losses import global_batch
from training.averaging import ParameterAverage
from training.data import (
    TensorDictDataset,
    eval_loader,
    per_process_batch_size,
    train_and_validation,
    train_loader,
)
from training.loop import UnitSpec, check_finite
from training.model_setup import (
    STUDENT_REFIT,
    load_partial_state,
    set_trainable,
    trainable_state,
    without_hash_head,
)
from training.validation import (
    check_each_item_once,
    encode_validation,
    retrieval_map,
    teacher_validation_loss,
)


def _adam(params: list[torch.nn.Parameter], lr: float, betas: list[float]) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(betas[0], betas[1]))


def _local_batch(accelerator: Any, args: Any, name: str) -> int:
    """This process's share of the global ``--<name>``."""
    return per_process_batch_size(getattr(args, name), accelerator.num_processes, f"--{name}")


def _terms(output: Any) -> dict[str, torch.Tensor]:
    return {"total": output.loss.detach(), **output.loss_terms}


def _optimize(accelerator: Any, output: Any, optimizer: Any) -> None:
    """One optimizer step on ``output.loss`` (refused when the loss is not finite); inside ``accumulate``
    the prepared optimizer steps only at the window's last micro-batch."""
    check_finite(accelerator, output)
    accelerator.backward(output.loss)
    optimizer.step()
    optimizer.zero_grad()


def _retrieval_validate(accelerator: Any, model: CRCGSForPreTraining, loader: Any, num_items: int, kind: str):
    """Validation mAP of `model.crcgs` on the full validation split (see `training.validation`)."""

    def validate() -> dict[str, float]:
        encoded = encode_validation(accelerator, model.crcgs, loader)
        check_each_item_once(encoded, num_items)
        scores = retrieval_map(encoded, kind, model.crcgs.config.retrieval_distance)
        return {
            "map": scores["mean"],
            "map_i2t": scores["i2t"],
            "map_t2i": scores["t2i"],
            "num_items": len(encoded["index"]),
        }

    return validate


def teacher_unit(
    accelerator: Any, model: CRCGSForPreTraining, splits: Any, args: Any, num_workers: int
) -> UnitSpec:
    """Stage 1: both generation networks, L1 reconstruction (METHOD.md networks 1-2)."""
    params = model.teacher_parameters()
    set_trainable(model, params)
    model.train()
    optimizer = _adam(params, args.teacher_learning_rate, args.teacher_adam_betas)
    loader, sampler = train_loader(
        splits["train"], _local_batch(accelerator, args, "teacher_batch_size"), args.seed, num_workers
    )
    val = eval_loader(splits["validation"], args.eval_batch_size, num_workers)
    accelerator.free_memory()
    wrapped, optimizer, loader, val = accelerator.prepare(model, optimizer, loader, val)

    def step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch.pop("index")
        with accelerator.accumulate(wrapped), global_batch():
            out = wrapped(
                image_features=batch["image_features"], text_features=batch["text_features"], stage="teacher"
            )
            _optimize(accelerator, out, optimizer)
        return _terms(out)

    return UnitSpec(
        name="teachers",
        epochs=args.teacher_epochs,
        loader=loader,
        sampler=sampler,
        train_step=step,
        validate=lambda: {"loss": teacher_validation_loss(accelerator, wrapped, val)},
        metric="loss",
        greater_is_better=False,
        optimizer=optimizer,
        best_tensors=lambda: trainable_state(model),
        load_best=lambda tensors: load_partial_state(model, tensors, "best teachers"),
        plateau_patience=args.teacher_lr_patience,
        min_lr=args.min_learning_rate,
    )


def student_unit(
    accelerator: Any,
    model: CRCGSForPreTraining,
    splits: Any,
    args: Any,
    num_workers: int,
    refit_epochs: Optional[int] = None,
) -> UnitSpec:
    """Stage 2: the student objective, alternating with `dis_iter` discriminator steps (METHOD.md 1-6).

    With gradient accumulation the discriminator optimizer follows the same gating as the student's:
    its gradients add up over the window and it takes its steps at the window's last micro-batch.
    With `refit_epochs` the unit is the refit ``student-refit``: `refit_epochs` epochs on train +
    validation, no validation, no early stopping and no plateau schedule, the last epoch kept.
    """
    config = model.config
    refit = refit_epochs is not None
    adversarial = bool(config.adversarial_weight) and config.dis_iter > 0
    student_params = model.student_parameters()
    disc_params = model.discriminator_parameters() if adversarial else []
    set_trainable(model, student_params + disc_params)
    model.train()
    optimizer = _adam(student_params, args.student_learning_rate, args.student_adam_betas)
    loader, sampler = train_loader(
        train_and_validation(splits) if refit else splits["train"],
        _local_batch(accelerator, args, "student_batch_size"),
        args.seed,
        num_workers,
    )
    objects: list[Any] = [model, optimizer, loader]
    if adversarial:
        objects.append(_adam(disc_params, args.discriminator_learning_rate, args.discriminator_adam_betas))
    if not refit:
        objects.append(eval_loader(splits["validation"], args.eval_batch_size, num_workers))
    accelerator.free_memory()
    prepared = accelerator.prepare(*objects)
    wrapped, optimizer, loader = prepared[:3]
    disc_optimizer = prepared[3] if adversarial else None
    validate = (
        None
        if refit
        else _retrieval_validate(accelerator, model, prepared[-1], len(splits["validation"]), "continuous")
    )

    def step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch.pop("index")
        disc_terms: dict[str, torch.Tensor] = {}
        with accelerator.accumulate(wrapped), global_batch():
            for _ in range(config.dis_iter if adversarial else 0):
                d_out = wrapped(**batch, stage="discriminator")  # features, and raw inputs of backbone towers
                _optimize(accelerator, d_out, disc_optimizer)
                disc_terms = {"discriminator": d_out.loss_terms["discriminator"]}
            out = wrapped(**batch, stage="student")
            _optimize(accelerator, out, optimizer)
        return {**_terms(out), **disc_terms}

    return UnitSpec(
        name=STUDENT_REFIT if refit else "student",
        epochs=refit_epochs if refit else args.student_epochs,
        loader=loader,
        sampler=sampler,
        train_step=step,
        validate=validate,
        metric="map",
        greater_is_better=True,
        optimizer=optimizer,
        best_tensors=lambda: trainable_state(model),
        load_best=lambda tensors: load_partial_state(model, tensors, "best student"),
        plateau_patience=None if refit else args.student_lr_patience,
        min_lr=args.min_learning_rate,
        early_stopping_patience=None if refit else args.early_stopping_patience,
        average=(
            ParameterAverage(
                {n: p for n, p in model.named_parameters() if p.requires_grad}, args.student_ema_decay
            )
            if args.student_ema_decay
            else None
        ),
    )


def hash_model_from(model: CRCGSForPreTraining, config: Any) -> CRCGSForPreTraining:
    """A fresh model with `config`'s hash length carrying every other weight of `model` (student, teachers)."""
    hash_model = CRCGSForPreTraining(config)
    load_partial_state(hash_model, without_hash_head(model), "student and teachers")
    return hash_model


def cache_student_embeddings(
    accelerator: Any, model: CRCGSForPreTraining, split: Any, args: Any, num_workers: int
):
    """Encode the training split once with the frozen student: u, v and labels of every item, in order."""
    loader = accelerator.prepare(eval_loader(split, args.eval_batch_size, num_workers))
    encoded = encode_validation(
        accelerator, model.crcgs, loader, with_codes=False, retrieval_embeddings=False
    )
    check_each_item_once(encoded, len(split))
    return TensorDictDataset(
        {
            "image_embeds": encoded["image_embeds"],
            "text_embeds": encoded["text_embeds"],
            "labels": encoded["labels"],
        }
    )


def hash_unit(
    accelerator: Any, model: CRCGSForPreTraining, splits: Any, args: Any, num_workers: int
) -> UnitSpec:
    """Stage 3 for `model.config.hash_bits`: the hash-head loss with the student frozen (METHOD.md)."""
    bits = model.config.hash_bits
    params = model.hash_head_parameters()
    set_trainable(model, params)
    model.train()
    accelerator.free_memory()
    if args.cache_student_embeddings:
        train_data = cache_student_embeddings(accelerator, model, splits["train"], args, num_workers)
        accelerator.free_memory()
    else:
        train_data = splits["train"]
    optimizer = _adam(params, args.hash_learning_rate, args.hash_adam_betas)
    loader, sampler = train_loader(
        train_data, _local_batch(accelerator, args, "hash_batch_size"), args.seed, num_workers
    )
    val = eval_loader(splits["validation"], args.eval_batch_size, num_workers)
    wrapped, optimizer, loader, val = accelerator.prepare(model, optimizer, loader, val)

    def step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch.pop("index", None)
        with accelerator.accumulate(wrapped), global_batch():
            out = wrapped(**batch, stage="hash")
            _optimize(accelerator, out, optimizer)
        return _terms(out)

    return UnitSpec(
        name=f"hash-{bits}",
        epochs=args.hash_epochs,
        loader=loader,
        sampler=sampler,
        train_step=step,
        validate=_retrieval_validate(accelerator, model, val, len(splits["validation"]), "hamming"),
        metric="map",
        greater_is_better=True,
        optimizer=optimizer,
        best_tensors=lambda: trainable_state(model),
        load_best=lambda tensors: load_partial_state(model, tensors, f"best hash head ({bits} bits)"),
        early_stopping_patience=args.early_stopping_patience,
    )
