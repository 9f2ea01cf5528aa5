"""Speed of the CRCGS losses and of one full training step, on this machine's CPU (or the first GPU).

1. ``support_set_loss`` (matrix form) against a naive loop in the release's style (C built by three nested
   loops, support features summed per sample) at B=80, L=24, D=1024; both are checked to agree first.
2. One full student training step of CRCGSForPreTraining at the release's default dimensions (4096-d
   image, 1386-d text, 24 labels, batch 80): ``dis_iter`` discriminator steps and one student step with all
   losses, each with its own Adam optimizer (lr 1e-4, betas (0.5, 0.999)).

Usage: ``python -m benchmarks.bench_losses [--steps 5] [--loop-repeats 1] [--threads N]``. Timings are noisy on a
shared machine: the ratio in (1) is measured within one process. On a CPU that other processes keep busy,
``--threads 1`` avoids intra-op threads spinning on each other (small matrices are then much faster).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from modeling_crcgs import CRCGSConfig, CRCGSForPreTraining
from modeling_crcgs.losses import support_set_loss


def naive_support_set_loss(
    a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """docs/METHOD.md support-set loss with Python loops over samples and labels (the release's structure)."""
    batch, num_labels = labels.shape
    counts = torch.zeros(batch, batch, dtype=a.dtype)
    for i in range(batch):
        for lab in range(num_labels):
            if labels[i, lab]:
                for k in range(batch):
                    if labels[k, lab]:
                        counts[i, k] += 1
    cos = torch.nn.functional.cosine_similarity
    image_cos, text_cos = [], []
    for j in range(batch):
        num_i, den_i = torch.zeros_like(a[0]), a.new_zeros(())
        num_t, den_t = torch.zeros_like(a[0]), a.new_zeros(())
        for k in range(batch):
            if counts[j, k] == 0:
                continue
            e_i = torch.exp(cos(a[j], b[k], dim=0) / temperature) * counts[j, k]
            e_t = torch.exp(cos(a[k], b[j], dim=0) / temperature) * counts[j, k]
            num_i, den_i = num_i + e_i * b[k], den_i + e_i
            num_t, den_t = num_t + e_t * a[k], den_t + e_t
        if den_i == 0:
            continue
        image_cos.append(cos(a[j], num_i / den_i, dim=0))
        text_cos.append(cos(b[j], num_t / den_t, dim=0))
    return -torch.log((torch.stack(image_cos).mean() + torch.stack(text_cos).mean()) / 2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_support_set(device: torch.device, loop_repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    batch, num_labels, dim, tau = 80, 24, 1024, 0.06
    a = torch.relu(torch.randn(batch, dim, generator=g))
    b = torch.relu(torch.randn(batch, dim, generator=g))
    labels = (torch.rand(batch, num_labels, generator=g) < 0.15).float()
    slow_value = naive_support_set_loss(a, b, labels, tau)
    fast_value = support_set_loss(a.to(device), b.to(device), labels.to(device), tau)
    assert math.isclose(float(slow_value), float(fast_value), rel_tol=1e-4), (
        float(slow_value),
        float(fast_value),
    )

    start = time.perf_counter()
    for _ in range(loop_repeats):
        naive_support_set_loss(a, b, labels, tau)
    slow = (time.perf_counter() - start) / loop_repeats

    a_d, b_d, y_d = a.to(device), b.to(device), labels.to(device)
    repeats = 50
    for _ in range(5):
        support_set_loss(a_d, b_d, y_d, tau)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        support_set_loss(a_d, b_d, y_d, tau)
    _sync(device)
    fast = (time.perf_counter() - start) / repeats
    print(
        f"support_set_loss B={batch} L={num_labels} D={dim}, {torch.get_num_threads()} threads: "
        f"naive loop (CPU) {slow * 1e3:.1f} ms, "
        f"vectorized ({device.type}) {fast * 1e3:.3f} ms, speed-up {slow / fast:.0f}x"
    )


def bench_training_step(device: torch.device, steps: int) -> None:
    config = CRCGSConfig(
        image_input_dim=4096, text_input_dim=1386, num_labels=24, hash_bits=64, contrastive_n_data=125
    )
    model = CRCGSForPreTraining(config).to(device).train()
    student_opt = torch.optim.Adam(model.student_parameters(), lr=1e-4, betas=(0.5, 0.999))
    dis_opt = torch.optim.Adam(model.discriminator_parameters(), lr=1e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(1)
    batch = 80
    x = torch.rand(batch, config.image_input_dim, generator=g).to(device)
    t = (torch.rand(batch, config.text_input_dim, generator=g) < 0.01).float().to(device)
    y = (torch.rand(batch, config.num_labels, generator=g) < 0.15).float().to(device)

    def step() -> dict[str, float]:
        for _ in range(config.dis_iter):
            dis_opt.zero_grad(set_to_none=True)
            model(image_features=x, text_features=t, stage="discriminator").loss.backward()
            dis_opt.step()
        student_opt.zero_grad(set_to_none=True)
        out = model(image_features=x, text_features=t, labels=y, stage="student")
        out.loss.backward()
        student_opt.step()
        return {name: float(value) for name, value in out.loss_terms.items()}

    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        terms = step()
    _sync(device)
    per_step = (time.perf_counter() - start) / steps
    params = sum(p.numel() for p in model.parameters())
    print(
        f"full training step (dis_iter={config.dis_iter} D steps + 1 student step, batch {batch}, "
        f"4096-d image, 1386-d text, {params / 1e6:.1f} M parameters, {device.type}, "
        f"{torch.get_num_threads()} threads): {per_step * 1e3:.1f} ms/step over {steps} steps"
    )
    print("  last loss terms: " + ", ".join(f"{k}={v:.4f}" for k, v in terms.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the naive loop")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    bench_support_set(device, args.loop_repeats)
    bench_training_step(device, args.steps)


if __name__ == "__main__":
    main()
