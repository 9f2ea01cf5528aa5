"""A tiny synthetic training setup shared by the training tests (seconds per run on one core)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.crcgs_test_utils import TINY_NETWORKS  # (importable from benchmarks too)

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_DATASET = {
    "num_items": 300,
    "num_labels": 6,
    "image_dim": 24,
    "vocab_size": 30,
    "words_per_label": 4,
    "latent_dim": 8,
    "hidden_dim": 16,
    "num_query": 50,
    "num_validation": 61,  # odd: uneven last batches across two processes
    "num_train": 120,
}

TINY_MODEL = {**TINY_NETWORKS, "tower_hidden_dims": [32, 32, 32], "dis_iter": 2, "support_set_weight": 0.5}


def tiny_config(output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Arguments of a full three-stage run on tiny synthetic data."""
    config = {
        "dataset": "synthetic",
        "dataset_options": TINY_DATASET,
        "output_dir": str(output_dir),
        "hash_bits": [8, 16],
        "seed": 7,
        "teacher_epochs": 1,
        "teacher_batch_size": 16,
        "student_epochs": 2,
        "student_batch_size": 16,
        "student_learning_rate": 1e-3,
        "hash_epochs": 2,
        "hash_batch_size": 20,
        "eval_batch_size": 8,
        "logging_steps": 1,
        "model_config": TINY_MODEL,
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def subprocess_env() -> dict[str, str]:
    """The suite's offline environment, one thread per process (results identical across runs)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


def accelerate_command(num_processes: int = 1) -> list[str]:
    """`accelerate launch` with real processes on CPU (`--multi_gpu` + gloo for two; see ECOSYSTEM.md)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    common = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        port = str(_free_port())
        return [
            *launcher,
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "--main_process_port",
            port,
            *common,
        ]
    return [*launcher, "--num_processes", "1", *common]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_training(config_path: Path, num_processes: int, timeout: float) -> subprocess.CompletedProcess:
    """`accelerate launch training/train.py --config CONFIG` on `num_processes` CPU processes, output captured."""
    return subprocess.run(
        [
            *accelerate_command(num_processes),
            str(REPO_ROOT / "training" / "train.py"),
            "--config",
            str(config_path),
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
