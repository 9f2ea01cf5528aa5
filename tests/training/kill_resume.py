"""Run training/train.py as `accelerate launch` children, SIGKILL them at a chosen point, and resume.

Shared by the SIGKILL test and `benchmarks/bench_resume.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import psutil

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
    config: Path,
    out: Path,
    unit: str,
    epoch: int,
    log: Path,
    resume: bool,
    timeout: float = 300,
    num_processes: int = 1,
    kill_rank: Optional[int] = None,
) -> TrainerState:
    """Start a run on `num_processes` processes (resumed from the latest checkpoint when `resume`), and
    as soon as a checkpoint inside `epoch` of `unit` appears SIGKILL it and its launcher, or with
    `kill_rank` only that rank's process (the launcher then ends the others); return the state of the
    checkpoint a resumed run would start from."""
    argv = ["--config", str(config), *(["--resume_from_checkpoint", "latest"] if resume else [])]
    with log.open("w") as stream:
        # A session of its own: `accelerate launch` runs train.py as a child, and both get the SIGKILL.
        proc = subprocess.Popen(
            [*accelerate_command(num_processes), TRAIN_PY, *argv],
            env=subprocess_env(),
            stdout=stream,
            stderr=stream,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _reached(out, unit, epoch) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if kill_rank is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            killed = _kill_rank(proc.pid, kill_rank)
            try:
                proc.wait(timeout=120)
            finally:
                with contextlib.suppress(ProcessLookupError):  # whatever is left of the session
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if killed is None:
                raise AssertionError(
                    f"rank {kill_rank} ended before it was killed:\n{log.read_text()[-3000:]}"
                )
            return TrainerState.from_file(CheckpointManager(out).resolve("latest") / STATE_NAME)
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(
            f"the run ended with {proc.returncode} before it was killed:\n{log.read_text()[-3000:]}"
        )
    latest = CheckpointManager(out).resolve("latest")
    return TrainerState.from_file(latest / STATE_NAME)


def _kill_rank(launcher_pid: int, rank: int) -> Optional[int]:
    """SIGKILL the process of `rank` (its environment's RANK) among the launcher's descendants; its pid,
    or None when it is gone already."""
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "train.py" in " ".join(child.cmdline()):
                child.send_signal(signal.SIGKILL)
                return child.pid
        except psutil.Error:  # exited meanwhile
            continue
    return None


def run_to_end(
    config: Path, resume: bool, timeout: Optional[float] = 600, num_processes: int = 1
) -> subprocess.CompletedProcess:
    """Run on `num_processes` processes (resumed from the latest checkpoint when `resume`) to the end."""
    argv = ["--config", str(config), *(["--resume_from_checkpoint", "latest"] if resume else [])]
    return subprocess.run(
        [*accelerate_command(num_processes), TRAIN_PY, *argv],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
