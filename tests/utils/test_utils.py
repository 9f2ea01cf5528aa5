"""modeling_crcgs.utils: atomic writes leave either the old or the new content, never a mix or temp files."""

import os

import numpy as np
import pytest
import torch

from modeling_crcgs.utils import (
    atomic_directory,
    atomic_write_text,
    check_matrix,
    check_positive_int,
    check_same_batch,
    model_fingerprint,
    move_into,
)


def test_atomic_directory_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "deep" / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
        assert not target.exists()  # nothing visible before the block ends
    assert sorted(os.listdir(target)) == ["a.txt"]
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("two")
        raise RuntimeError("boom")
    assert sorted(os.listdir(target)) == ["a.txt"] and (target / "a.txt").read_text() == "one"
    with atomic_directory(target) as tmp:
        (tmp / "c.txt").write_text("three")
    assert sorted(os.listdir(target)) == ["c.txt"]  # replaced whole, not merged
    assert sorted(os.listdir(target.parent)) == ["out"]  # no temp or old folders left


def test_move_into_keeps_other_files_and_replaces_subfolders(tmp_path):
    (tmp_path / "keep.txt").write_text("kept")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "stale.bin").write_text("old")

    def write(tmp):
        os.makedirs(os.path.join(tmp, "adapter"))
        open(os.path.join(tmp, "adapter", "new.bin"), "w").close()
        open(os.path.join(tmp, "config.json"), "w").close()

    move_into(write, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["adapter", "config.json", "keep.txt"]
    assert os.listdir(tmp_path / "adapter") == ["new.bin"]
    with pytest.raises(ValueError, match="expected a folder"):
        move_into(write, tmp_path / "keep.txt")


def test_atomic_write_text_creates_parents_and_leaves_no_temp(tmp_path):
    atomic_write_text(tmp_path / "a" / "b.json", "{}")
    assert (tmp_path / "a" / "b.json").read_text() == "{}" and os.listdir(tmp_path / "a") == ["b.json"]


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_check_positive_int_rejects_with_the_name(value):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        check_positive_int("batch_size", value)


def test_check_positive_int_accepts_numpy_integers():
    assert check_positive_int("k", np.int64(3)) == 3 and type(check_positive_int("k", np.int64(3))) is int


def test_check_matrix_and_batch():
    assert check_matrix(torch.ones(2, 3, dtype=torch.int8), "x", 3, torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\), got \(2, 3\)"):
        check_matrix(torch.ones(2, 3), "x", 4, torch.float32)
    with pytest.raises(ValueError, match="x contains NaN"):
        check_matrix(torch.tensor([[float("nan")]]), "x", 1, torch.float32)
    with pytest.raises(ValueError, match="batch sizes differ"):
        check_same_batch(a=torch.ones(2, 1), b=torch.ones(3, 1), c=None)


def test_model_fingerprint_follows_the_weights():
    layer = torch.nn.Linear(3, 2)
    before = model_fingerprint(layer)
    assert model_fingerprint(layer) == before
    with torch.no_grad():
        layer.bias[0] += 1
    assert model_fingerprint(layer) != before
