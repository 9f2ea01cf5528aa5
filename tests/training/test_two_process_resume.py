"""Resume under two processes: one rank SIGKILLed mid-epoch, both resumed, the uninterrupted run's weights."""

import json

import pytest
import torch
from kill_resume import run_and_kill, run_to_end
from safetensors.torch import load_file
from tiny_training_config import tiny_config, write_config


def _config(tmp_path, name):
    out = tmp_path / name / "out"
    out.parent.mkdir()
    # Global batches of 20 = 2 x 10 rows: 120 training items make 6 whole steps per epoch.
    config = tiny_config(
        out,
        hash_bits=[8],
        hash_epochs=2,
        teacher_batch_size=20,
        student_batch_size=20,
        hash_batch_size=20,
        checkpointing_steps=1,
    )
    return write_config(out.parent / "tiny.json", config), out


@pytest.mark.slow
def test_two_process_run_with_one_rank_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    reference_config, reference = _config(tmp_path, "reference")
    finished = run_to_end(reference_config, resume=False, num_processes=2)
    assert finished.returncode == 0, finished.stderr[-3000:]

    config, out = _config(tmp_path, "killed")
    state = run_and_kill(
        config, out, "student", 1, tmp_path / "killed.log", resume=False, num_processes=2, kill_rank=1
    )
    assert (state.unit, state.epoch) == ("student", 1) and state.step_in_epoch > 0, state
    resumed = run_to_end(config, resume=True, num_processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[student] resumed from" in resumed.stderr

    got = json.loads((out / "run_summary.json").read_text())
    want = json.loads((reference / "run_summary.json").read_text())
    assert got["num_processes"] == want["num_processes"] == 2
    for unit in ("teachers", "student", "hash-8"):
        assert got["stages"][unit]["history"] == want["stages"][unit]["history"], unit
    for path in ("synthetic-8bits/model.safetensors", "stages/student/best.safetensors"):
        a, b = load_file(out / path), load_file(reference / path)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path
