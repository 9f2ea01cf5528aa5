"""Raw images and captions (tiny ViT and BERT towers under LoRA) trained and evaluated on two processes."""

import json

import pytest
from tiny_training_config import launch_training

from tests.backbones.test_raw_end_to_end import run_config, write_backbones, write_coco


@pytest.mark.slow
def test_raw_input_run_on_two_processes(tmp_path):
    write_coco(tmp_path / "coco")
    vit, bert = write_backbones(tmp_path)
    config = run_config(tmp_path, vit, bert)
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = launch_training(tmp_path / "config.json", 2, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["num_processes"] == 2
    # 8 validation items, each counted once per epoch although both processes encode a share.
    assert [h["num_items"] for h in summary["stages"]["student"]["history"]] == [8, 8]
    folder = tmp_path / "out" / "mscoco-8bits"
    for name in ("model.safetensors", "processor_config.json", "image_adapter", "text_adapter"):
        assert (folder / name).exists(), name
    evaluation = json.loads((folder / "eval_results.json").read_text())
    assert evaluation["num_query"] == 8
    for space in ("hamming", "continuous"):
        for direction in ("i2t", "t2i"):
            assert 0.0 < evaluation[space][direction]["map_all"] <= 1.0
