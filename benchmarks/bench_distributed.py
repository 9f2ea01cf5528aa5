"""Global-batch training on two gloo processes against one process (CPU).

1. One forward/backward of each stage (student, discriminator, hash) on the same 12 rows: whole on one
   process, and 6 + 6 on two DDP processes inside `modeling_crcgs.losses.global_batch`. Printed: the
   largest |difference| of the loss terms and of the parameter gradients per stage, per rank.
2. The tiny synthetic training run of the test suite (three stages, one 8-bit head, global batch sizes
   divisible by 2 rows per process and by the 120 training items), through `accelerate launch` with 1 and
   with 2 processes: wall time of each (ratio to the 1-process run) and the final I2T/T2I mAP@all.

    .venv/bin/python -m benchmarks.bench_distributed
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from accelerate import debug_launcher
from safetensors.torch import load_file

from tests.training.global_batch_step import STAGES, one_process, two_process_worker
from tests.training.tiny_training_config import launch_training, tiny_config, write_config


def step_differences(root: Path) -> None:
    debug_launcher(two_process_worker, args=(str(root),), num_processes=2)
    expected = one_process()
    print("1 vs 2 processes, one step on 12 rows: max |difference|")
    for rank in (0, 1):
        got = load_file(root / f"rank{rank}.safetensors")
        for stage in STAGES:
            diffs = {
                kind: max(
                    (got[k] - v).abs().max().item()
                    for k, v in expected.items()
                    if k.startswith(f"{stage}/{kind}/")
                )
                for kind in ("term", "grad")
            }
            print(f"  rank {rank} {stage:13s} loss terms {diffs['term']:.2e}   gradients {diffs['grad']:.2e}")


def tiny_run(root: Path, num_processes: int) -> tuple[float, dict]:
    out = root / f"run{num_processes}"
    config = tiny_config(
        out,
        hash_bits=[8],
        teacher_batch_size=20,
        student_batch_size=20,
        hash_batch_size=20,
        eval_batch_size=8,
    )
    path = write_config(root / f"tiny{num_processes}.json", config)
    started = time.perf_counter()
    result = launch_training(path, num_processes, timeout=900)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{num_processes}-process run failed:\n{result.stderr[-3000:]}")
    evaluation = json.loads((out / "synthetic-8bits" / "eval_results.json").read_text())
    return wall, evaluation


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        step_differences(root)
        print("\ntiny three-stage run (120 training items, global batch 20), accelerate launch on CPU:")
        baseline = None
        for n in (1, 2):
            wall, ev = tiny_run(root, n)
            baseline = baseline or wall
            h, c = ev["hamming"], ev["continuous"]
            print(
                f"  {n} process(es): {wall:6.1f} s (x{wall / baseline:.2f})   mAP@all Hamming I2T "
                f"{h['i2t']['map_all']:.6f} T2I {h['t2i']['map_all']:.6f}   continuous I2T "
                f"{c['i2t']['map_all']:.6f} T2I {c['t2i']['map_all']:.6f}"
            )


if __name__ == "__main__":
    main()
