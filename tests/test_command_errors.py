"""Every command ends a user error with one `error: ...` line and exit status 2, without a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    codes = tmp / "codes.npy"
    np.save(codes, np.zeros((4, 2), dtype=np.uint8))
    (tmp / "truncated.npy").write_bytes(codes.read_bytes()[:20])
    missing = str(tmp / "no" / "such" / "model")
    synthetic = ["--dataset", "synthetic"]
    return {
        "train: typo in --model_config": (
            [
                "training/train.py",
                *synthetic,
                "--model_config",
                json.dumps({"commn_dim": 64}),
                "--output_dir",
                str(tmp / "o"),
            ],
            "did you mean 'common_dim'",
        ),
        "train: --output_dir is a file": (
            ["training/train.py", *synthetic, "--output_dir", str(codes)],
            "is a file",
        ),
        "build_index: nflip above the key bits": (
            [
                "evaluation/build_index.py",
                "--codes",
                str(codes),
                "--kind",
                "hash",
                "--nflip",
                "17",
                "--output_dir",
                str(tmp / "i"),
            ],
            "nflip must be an integer between 0 and hash_key_bits=16",
        ),
        "build_index: truncated .npy": (
            [
                "evaluation/build_index.py",
                "--codes",
                str(tmp / "truncated.npy"),
                "--output_dir",
                str(tmp / "j"),
            ],
            "truncated.npy",
        ),
        "search: no index": (
            ["evaluation/search.py", "--index_dir", str(tmp / "nothing"), "--query_codes", str(codes)],
            "index_config.json",
        ),
        "encode_dataset: missing model folder": (
            [
                "evaluation/encode_dataset.py",
                "--model_dir",
                missing,
                *synthetic,
                "--output_dir",
                str(tmp / "e"),
            ],
            "config.json",
        ),
        "run_evaluation: missing model folder": (
            ["evaluation/run_evaluation.py", "--model_dir", missing, *synthetic],
            "config.json",
        ),
        "merge_lora: missing model folder": (
            ["training/merge_lora.py", "--model_dir", missing, "--output_dir", str(tmp / "m")],
            "config.json",
        ),
        "ablation: typo in --model_config": (
            [
                "training/ablation.py",
                *synthetic,
                "--model_config",
                json.dumps({"hash_bit": 8}),
                "--output_dir",
                str(tmp / "a"),
            ],
            "did you mean",
        ),
    }


CASE_NAMES = [
    "train: typo in --model_config",
    "train: --output_dir is a file",
    "build_index: nflip above the key bits",
    "build_index: truncated .npy",
    "search: no index",
    "encode_dataset: missing model folder",
    "run_evaluation: missing model folder",
    "merge_lora: missing model folder",
    "ablation: typo in --model_config",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_user_error_is_one_line_and_status_2(tmp_path, case):
    argv, message = _cases(tmp_path)[case]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / argv[0]), *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in done.stderr, done.stderr[-3000:]
