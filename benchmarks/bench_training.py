"""Training throughput of each stage at MIRFLICKR-25K sizes, and the stage-3 embedding-cache speed-up.

    python -m benchmarks.bench_training [--num_train 800] [--steps 5] [--hash_epochs 3]

Data: the synthetic builder at MIRFLICKR-25K dims (4096-d image features, 1386-d BoW, 24 labels),
fewer rows. Model: the release's default widths (CRCGSConfig defaults). Batch sizes: the release's
(80 for teachers and student, 100 for the hash head). Every figure times the real training step of
`training/stages.py` (one optimizer update; the student's includes its `dis_iter` = 3 discriminator
updates) after one warm-up step, in one process, on whatever this machine is: on a shared machine the
absolute numbers move with the load, the ratio of the last section is the figure to compare.
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator

from modeling_crcgs import CRCGSForPreTraining
from training.arguments import parse_args
from training.data import data_dims
from training.model_setup import build_config
from training.stages import hash_model_from, hash_unit, student_unit, teacher_unit

MIRFLICKR_DIMS = {"image_dim": 4096, "vocab_size": 1386, "num_labels": 24}


def timed_steps(spec, steps: int, batch_size: int) -> float:
    """Samples per second of `steps` training steps (after one warm-up step)."""
    spec.sampler.set_epoch(0)
    batches = iter(spec.loader)
    spec.train_step(next(batches))
    start = time.perf_counter()
    done = 0
    for _ in range(steps):
        spec.train_step(next(batches))
        done += 1
    return done * batch_size / (time.perf_counter() - start)


def timed_epochs(spec, epochs: int) -> float:
    """Seconds for `epochs` full passes of the unit's training loader."""
    start = time.perf_counter()
    for epoch in range(epochs):
        spec.sampler.set_epoch(epoch)
        for batch in spec.loader:
            spec.train_step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_train", type=int, default=800, help="training rows (MIRFLICKR: 10000)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage")
    parser.add_argument(
        "--hash_epochs",
        type=int,
        default=30,
        help="epochs of the cache comparison (MIRFLICKR's hash stage: 30)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: a shared 2-core machine punishes oversubscription)",
    )
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)

    from dataset_scripts import load_crcgs_dataset

    options = {**MIRFLICKR_DIMS, "num_train": cli.num_train, "num_validation": 100, "num_query": 100}
    splits = load_crcgs_dataset("synthetic", num_items=cli.num_train + 300, **options)
    _, _, args = parse_args(["--dataset", "synthetic", "--eval_batch_size", "256"])
    dims = data_dims(splits["train"])
    config = build_config({}, dims, 64, -(-cli.num_train // args.student_batch_size))
    torch.manual_seed(0)
    model = CRCGSForPreTraining(config)
    accelerator = Accelerator()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {accelerator.device}")
    print(
        f"data: {cli.num_train} training rows, dims {dims}; model parameters: "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M (release widths)"
    )

    print("\n## Samples per second of each stage (one optimizer update per step)")
    teacher = teacher_unit(accelerator, model, splits, args, 0)
    print(
        f"stage 1 teachers        (batch {args.teacher_batch_size}): "
        f"{timed_steps(teacher, cli.steps, args.teacher_batch_size):8.1f} samples/s"
    )
    student = student_unit(accelerator, model, splits, args, 0)
    print(
        f"stage 2 student + 3 D   (batch {args.student_batch_size}): "
        f"{timed_steps(student, cli.steps, args.student_batch_size):8.1f} samples/s"
    )
    hash_model = hash_model_from(model, config)
    cached = hash_unit(accelerator, hash_model, splits, args, 0)
    print(
        f"stage 3 hash, cached    (batch {args.hash_batch_size}): "
        f"{timed_steps(cached, cli.steps, args.hash_batch_size):8.1f} samples/s"
    )
    args.cache_student_embeddings = False
    recomputed = hash_unit(accelerator, hash_model, splits, args, 0)
    print(
        f"stage 3 hash, recompute (batch {args.hash_batch_size}): "
        f"{timed_steps(recomputed, cli.steps, args.hash_batch_size):8.1f} samples/s"
    )

    print(
        f"\n## Stage 3: cached student embeddings vs recomputing the student every epoch ({cli.hash_epochs} epochs)"
    )
    args.cache_student_embeddings = True
    start = time.perf_counter()
    cached = hash_unit(accelerator, hash_model, splits, args, 0)  # encodes the training set once
    encode_s = time.perf_counter() - start
    cached_s = timed_epochs(cached, cli.hash_epochs)
    args.cache_student_embeddings = False
    recomputed = hash_unit(accelerator, hash_model, splits, args, 0)
    recompute_s = timed_epochs(recomputed, cli.hash_epochs)
    per_cached, per_recompute = cached_s / cli.hash_epochs, recompute_s / cli.hash_epochs
    print(f"encode the training set once: {encode_s:.2f} s")
    print(f"per epoch: cached {per_cached:.3f} s, recomputed {per_recompute:.3f} s")
    print(
        f"{cli.hash_epochs} epochs: recomputing {recompute_s:.2f} s, cached {encode_s + cached_s:.2f} s "
        f"(encoding included) -> {recompute_s / (encode_s + cached_s):.2f}x faster with the cache"
    )


if __name__ == "__main__":
    main()
