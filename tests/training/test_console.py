"""What a training run prints: no [RANK i] on one process, 4-digit metrics, no bars off a terminal."""

import logging

import pytest
from accelerate.state import PartialState

from training.console import format_metrics, get_logger, progress_bar


def test_format_metrics_rounds_to_four_digits():
    assert format_metrics({"map": 0.123456789, "loss": 2.0, "epoch": 3}) == "map 0.1235, loss 2.0000, epoch 3"


def test_single_process_log_lines_have_no_rank_prefix(caplog):
    PartialState()
    with caplog.at_level(logging.INFO, logger="crcgs.console.test"):
        get_logger("crcgs.console.test").info("student epoch 1/2: map 0.5000")
    assert [r.getMessage() for r in caplog.records] == ["student epoch 1/2: map 0.5000"]


@pytest.mark.parametrize(
    ("tty", "main", "shown"), [(False, True, False), (True, False, False), (True, True, True)]
)
def test_progress_bar_only_on_a_terminal_of_the_main_process(monkeypatch, tty, main, shown):
    monkeypatch.setattr("training.console.interactive", lambda: tty)
    bar = progress_bar(10, 0, "student", main)
    assert bar.disable is (not shown)
    bar.close()
