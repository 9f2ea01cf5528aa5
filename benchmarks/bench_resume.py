"""Exactness of resume: per-epoch validation histories of runs SIGKILLed at chosen points, then resumed.

The baseline is an uninterrupted run of the same tiny synthetic configuration (the test suite's, with 3
student epochs, a checkpoint after every step and one 8-bit hash head). Each other run is started,
SIGKILLed (launcher and trainer) as soon as a checkpoint inside the named epoch exists, and resumed
with `--resume_from_checkpoint latest`. Printed: every unit's per-epoch figures of every run (all
digits), whether each equals the baseline, and whether the final model weights are identical.

    .venv/bin/python -m benchmarks.bench_resume
    .venv/bin/python -m benchmarks.bench_resume --student_epochs 4 --kills student:0 student:3 hash-8:1
    .venv/bin/python -m benchmarks.bench_resume --num_processes 2 --kills student:1 hash-8:1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.training.kill_resume import run_and_kill, run_to_end  # the kill helpers live with the tests
from tests.training.tiny_training_config import tiny_config, write_config


def _run(root: Path, name: str, args: argparse.Namespace, kill: str | None) -> Path:
    out = root / name / "out"
    out.parent.mkdir(parents=True)
    config = write_config(
        out.parent / "tiny.json",
        tiny_config(
            out,
            hash_bits=[8],
            student_epochs=args.student_epochs,
            hash_epochs=args.hash_epochs,
            checkpointing_steps=1,
            **(
                {"teacher_batch_size": 20, "student_batch_size": 20, "hash_batch_size": 20}
                if args.num_processes > 1
                else {}
            ),
        ),
    )
    if kill is not None:
        unit, epoch = kill.split(":")
        state = run_and_kill(
            config,
            out,
            unit,
            int(epoch),
            out.parent / "killed.log",
            resume=False,
            num_processes=args.num_processes,
            kill_rank=1 if args.num_processes > 1 else None,
        )
        print(f"{name}: killed; resuming from {state.unit} epoch {state.epoch}, batch {state.step_in_epoch}")
    finished = run_to_end(config, resume=kill is not None, num_processes=args.num_processes)
    if finished.returncode != 0:
        raise SystemExit(f"{name} failed:\n{finished.stderr[-3000:]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student_epochs", type=int, default=3)
    parser.add_argument("--hash_epochs", type=int, default=2)
    parser.add_argument(
        "--kills",
        nargs="+",
        default=["student:0", "student:1", "student:2", "hash-8:1"],
        help="unit:epoch of each killed run (killed after its first checkpoint inside that epoch)",
    )
    parser.add_argument(
        "--num_processes",
        type=int,
        default=1,
        help="processes of every run (gloo on CPU); with 2 or more, only rank 1 is SIGKILLed and the global "
        "batches are 20 (2 x 10 rows)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crcgs-bench-resume-") as tmp:
        root = Path(tmp)
        runs = {"uninterrupted": _run(root, "uninterrupted", args, None)}
        for kill in args.kills:
            runs[f"killed@{kill}"] = _run(root, f"killed@{kill}".replace(":", "-e"), args, kill)
        stages = {
            name: json.loads((out / "run_summary.json").read_text())["stages"] for name, out in runs.items()
        }
        base = stages["uninterrupted"]
        for unit, summary in base.items():
            metrics = [k for k in summary["history"][0] if k not in ("epoch", "num_items")]
            print(f"\n[{unit}] per-epoch validation {', '.join(metrics)}; best epoch in brackets")
            for name, got in stages.items():
                rows = [" ".join(repr(h[k]) for k in metrics) for h in got[unit]["history"]]
                same = "equal" if got[unit] == summary else "DIFFERENT"
                print(f"  {name:<18} [{got[unit]['best_epoch']}] {' | '.join(rows)}  ({same})")
        print("\nfinal model weights (synthetic-8bits/model.safetensors) and best weights of every unit:")
        for name, out in list(runs.items())[1:]:
            same = []
            for path in [
                "synthetic-8bits/model.safetensors",
                *(f"stages/{u}/best.safetensors" for u in base),
            ]:
                got, want = load_file(str(out / path)), load_file(str(runs["uninterrupted"] / path))
                same.append(got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got))
            print(f"  {name:<18} {'identical' if all(same) else 'DIFFERENT'} to the uninterrupted run")


if __name__ == "__main__":
    main()
