"""The ablation command: one row per student objective, the chance level, a markdown table."""

import pytest
from tiny_training_config import tiny_config, write_config

from training.ablation import ablation_rows, main, markdown_table


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
    with_leave_one_out = dict(ablation_rows({"support_set_weight": 0.5}, leave_one_out=True))
    assert list(with_leave_one_out)[6:] == [
        "full - distillation",
        "full - adversarial",
        "full - contrastive",
        "full - support set",
    ]
    assert with_leave_one_out["full - contrastive"]["contrastive_weight"] == 0
    assert with_leave_one_out["full - contrastive"]["support_set_weight"] == 0.5
    assert with_leave_one_out["full - contrastive"]["adversarial_weight"] == 0.01
    # A config that switches terms off (the features recipe) still gets rows that test them.
    recipe = dict(ablation_rows({"distillation_weight": 0.0, "contrastive_weight": 0.1}))
    assert recipe["base + distillation"]["distillation_weight"] == 0.2  # the release's
    assert recipe["base + contrastive"]["contrastive_weight"] == 0.1  # the config's
    assert recipe["full objective"]["distillation_weight"] == 0.2


def test_table_cells_are_mean_and_std_over_seeds():
    def result(value):
        scores = {"i2t": {"map_all": value}, "t2i": {"map_all": value + 0.1}}
        return {8: {"continuous": scores, "hamming": scores}}

    table = markdown_table([("base loss only", [result(0.2), result(0.4)])])
    row = table.splitlines()[-1]
    assert row.startswith("| base loss only | 0.3000 ± 0.1000 | 0.4000 ± 0.1000 | 0.3500 ± 0.1000 |")


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
    assert (tmp_path / "abl" / "seed7" / "teachers" / "stages" / "teachers" / "done.json").is_file()
    # A second invocation reuses every finished row: same table, no training.
    assert main(["--config", str(config)]) == text
