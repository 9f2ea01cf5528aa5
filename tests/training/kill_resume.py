"""Run training/train.py as `accelerate launch` children, SIGKILL them at a chosen point, and resume.

Shared by the SIGKILL test and `benchmarks/bench_resume.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from tests.training.tiny_training_config import REPO_ROOT, accelerate_command, subprocess_env
from training.checkpointing import STATE_NAME, CheckpointManager, TrainerState

TRAIN_PY = str(REPO_ROOT / "training" / "train.py")


def _reached(out: Path, unit: str, epoch: int) -> bool:
    """Whether a checkpoint inside `epoch` of `unit` (after at least one of its batches) exists."""
    for state_file in (out / "checkpoints").glob(f"checkpoint-*/{STATE_NAME}"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):  # pruned or renamed while being read
            continue
        if (state["unit"], state["epoch"]) == (unit, epoch) and state["step_in_epoch"] > 0:
            return True
    return False


def run_and_kill(
    config: Path, out: Path, unit: str, epoch: int, log: Path, resume: bool, timeout: float = 300
) -> TrainerState:
    """Start a run (resumed from the latest checkpoint when `resume`), SIGKILL it and its launcher as
    soon as a checkpoint inside `epoch` of `unit` appears, and return the state of the checkpoint a
    resumed run would start from."""
    argv = ["--config", str(config), *(["--resume_from_checkpoint", "latest"] if resume else [])]
    with log.open("w") as stream:
        # A session of its own: `accelerate launch` runs train.py as a child, and both get the SIGKILL.
        proc = subprocess.Popen(
            [*accelerate_command(1), TRAIN_PY, *argv],
            env=subprocess_env(),
            stdout=stream,
            stderr=stream,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _reached(out, unit, epoch) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(
            f"the run ended with {proc.returncode} before it was killed:\n{log.read_text()[-3000:]}"
        )
    latest = CheckpointManager(out).resolve("latest")
    return TrainerState.from_file(latest / STATE_NAME)


def run_to_end(config: Path, resume: bool, timeout: Optional[float] = 600) -> subprocess.CompletedProcess:
    """Run (resumed from the latest checkpoint when `resume`) to the end."""
    argv = ["--config", str(config), *(["--resume_from_checkpoint", "latest"] if resume else [])]
    return subprocess.run(
        [*accelerate_command(1), TRAIN_PY, *argv],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
