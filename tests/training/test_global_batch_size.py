"""The stages' batch sizes are global: each process loads its share, and a size N does not divide raises."""

import pytest

from training.data import per_process_batch_size


def test_global_batch_is_split_evenly_over_the_processes():
    assert per_process_batch_size(80, 1, "--student_batch_size") == 80
    assert per_process_batch_size(80, 2, "--student_batch_size") == 40
    assert per_process_batch_size(80, 8, "--student_batch_size") == 10


def test_global_batch_not_divisible_by_the_processes_names_the_argument():
    with pytest.raises(ValueError, match=r"--hash_batch_size=100 is the global batch size.*\(3\)"):
        per_process_batch_size(100, 3, "--hash_batch_size")
