"""The ablation command: one row per student objective, the chance level, a markdown table."""

import pytest
from tiny_training_config import tiny_config, write_config

from training.ablation import ablation_rows, main


def test_ablation_rows_switch_terms_off_by_weight():
    rows = dict(ablation_rows({"support_set_weight": 0.5, "dis_iter": 2}))
    assert list(rows) == [
        "base loss only",
        "base + distillation",
        "base + adversarial",
        "base + contrastive",
        "base + support set",
        "full objective",
    ]
    terms = ("distillation_weight", "adversarial_weight", "contrastive_weight", "support_set_weight")
    assert all(rows["base loss only"][t] == 0 for t in terms)
    assert rows["base + support set"]["support_set_weight"] == 0.5
    assert rows["base + support set"]["contrastive_weight"] == 0
    assert rows["full objective"]["contrastive_weight"] == 0.03  # the config default
    assert all(r["dis_iter"] == 2 for r in rows.values())


@pytest.mark.slow
def test_ablation_command_writes_the_table(tmp_path):
    config = write_config(
        tmp_path / "tiny.json",
        tiny_config(tmp_path / "abl", hash_bits=[8], student_epochs=1, hash_epochs=1),
    )
    text = main(["--config", str(config)])
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert table == text
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 7  # header + 6 objectives + untrained
    assert lines[-1].startswith("| untrained model |")
    assert (tmp_path / "abl" / "teachers" / "stages" / "teachers" / "done.json").is_file()
