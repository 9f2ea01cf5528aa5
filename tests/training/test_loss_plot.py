"""The loss figure: smoothed terms, the per-epoch validation metric, only the stages asked for."""

import json

import numpy as np
from PIL import Image

from training.logging_utils import _smoothed, _stage_series, plot_loss_curves


def _log(path):
    records = []
    for step in range(1, 41):
        stage = "student" if step <= 20 else ("hash-16" if step <= 30 else "hash-32")
        records.append({"step": step, f"{stage}/loss/total": 1.0 / step, f"{stage}/lr": 1e-4})
        if step % 10 == 0:
            records.append({"step": step, f"{stage}/val/map": step / 100, f"{stage}/val/num_items": 50})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_stage_series_keeps_the_asked_stages_with_losses_and_validation(tmp_path):
    from training.logging_utils import read_log

    series = _stage_series(read_log(_log(tmp_path / "log.jsonl")), ["student", "hash-16", "teachers"])
    assert list(series) == ["student", "hash-16"]  # no hash-32, no missing teachers
    assert series["student"]["val"]["map"] == ([10, 20], [0.1, 0.2])
    assert series["hash-16"]["terms"]["total"][0] == list(range(21, 31))


def test_smoothing_keeps_length_and_constants_and_reduces_noise():
    noisy = np.tile([0.0, 2.0], 100)
    smooth = _smoothed(noisy)
    assert smooth.shape == noisy.shape and smooth.std() < 0.2 * noisy.std()
    np.testing.assert_allclose(_smoothed(np.full(60, 3.0)), 3.0)


def test_plot_has_one_panel_row_per_stage(tmp_path):
    log = _log(tmp_path / "log.jsonl")
    one = Image.open(plot_loss_curves(log, tmp_path / "one.png", ["hash-16"]))
    two = Image.open(plot_loss_curves(log, tmp_path / "two.png", ["student", "hash-16"]))
    assert one.width == two.width and two.height > 1.8 * one.height
