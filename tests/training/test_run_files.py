"""RunFiles: --overwrite_output_dir removes only what the trainer recorded, and refuses around user files."""

import json

import pytest

from training.run_files import MANIFEST_NAME, RunFiles


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _trainer_run(out):
    """Files laid out as a run writes them, recorded the way the trainer records them."""
    files = RunFiles(out)
    _write(out / "training_args.json")
    files.record("training_args.json")
    _write(out / "checkpoints" / "checkpoint-000001" / "model.safetensors")
    _write(out / "logs" / "train_log.jsonl")
    files.record("checkpoints/checkpoint-000001", "logs")
    _write(out / "stages" / "student" / "best.safetensors")
    files.record("stages/student/best.safetensors")
    _write(out / "synthetic-64bits" / "model.safetensors")
    _write(out / "synthetic-64bits" / "teachers" / "config.json")
    files.record("synthetic-64bits")
    return files


def test_clear_removes_only_recorded_files_and_keeps_the_users(tmp_path):
    files = _trainer_run(tmp_path)
    notes = _write(tmp_path / "notes.txt")  # outside the trainer's places: kept, never in the way
    files.clear(["synthetic-64bits"])
    assert notes.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "user_file",
    [
        "synthetic-64bits/paper_draft.tex",
        "my-experiment-64bits/paper_draft.tex",
        "logs/my_analysis.ipynb",
        "checkpoints/keep-me/model.safetensors",
        "stages/notes.md",
        "results.md",
    ],
)
def test_clear_refuses_listing_user_files_and_deletes_nothing(tmp_path, user_file):
    files = _trainer_run(tmp_path)
    user = _write(tmp_path / user_file, "mine")
    if user_file.startswith("my-experiment"):  # a model folder of another run/tool, not recorded
        _write(tmp_path / "my-experiment-64bits" / "model.safetensors")
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(ValueError, match="did not write") as info:
        files.clear(["synthetic-64bits"])
    assert str(user) in str(info.value)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before
    assert user.read_text() == "mine"


def test_a_folder_with_no_record_is_all_in_the_way(tmp_path):
    _write(tmp_path / "synthetic-8bits" / "model.safetensors")
    assert RunFiles(tmp_path).in_the_way() == [tmp_path / "synthetic-8bits" / "model.safetensors"]


def test_garbage_record_is_refused_naming_it(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=MANIFEST_NAME):
        RunFiles(tmp_path).recorded()
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"files": [1, 2]}))
    with pytest.raises(ValueError, match="list of relative paths"):
        RunFiles(tmp_path).recorded()


def test_leftover_temp_folders_are_removed_and_nothing_else(tmp_path):
    from training.run_files import clean_leftover_temp_folders

    leftovers = [
        tmp_path / ".synthetic-8bits.tmp-a1b2c3",
        tmp_path / ".synthetic-8bits.old-x9y8",
        tmp_path / "checkpoints" / "checkpoint-000003.tmp",
        tmp_path / "checkpoints" / ".checkpoint-000002.old-q1",
    ]
    kept = [tmp_path / "my.tmp-notes", tmp_path / "checkpoints" / "checkpoint-000002", tmp_path / ".git"]
    for folder in leftovers + kept:
        _write(folder / "f")
    assert clean_leftover_temp_folders(tmp_path) == sorted(leftovers)
    assert all(not f.exists() for f in leftovers) and all(f.is_dir() for f in kept)
