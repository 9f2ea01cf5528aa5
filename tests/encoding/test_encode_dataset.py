"""encode_dataset_to_shards: 2 processes == 1 process == a per-row loop; resume after a crash; bad input."""

import json
import os

import datasets
import numpy as np
import pytest
import torch
from accelerate import debug_launcher
from crcgs_test_utils import tiny_crcgs_model

from modeling_crcgs import CRCGSModel, pack_codes
from modeling_crcgs.retrieval.encoding import encode_dataset_to_shards, encode_split_arrays, load_shards

NUM_ROWS, SHARD_SIZE = 37, 10  # 4 shards, the last one of 7 rows (uneven split over 2 processes)


@pytest.fixture(scope="module")
def model():
    return tiny_crcgs_model(image_input_dim=12, text_input_dim=10, num_labels=3, hash_bits=24)


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    return datasets.Dataset.from_dict(
        {
            "image_features": rng.normal(size=(NUM_ROWS, 12)).astype(np.float32),
            "text_features": rng.normal(size=(NUM_ROWS, 10)).astype(np.float32),
            "index": np.arange(NUM_ROWS, dtype=np.int64) * 3 + 1000,
        }
    )


def loop_reference(model, split):
    """One row at a time through the model's public code methods."""
    out = {"ids": np.array(split["index"], dtype=np.int64)}
    for m in ("image", "text"):
        rows = [torch.tensor([split[i][f"{m}_features"]]) for i in range(len(split))]
        with torch.no_grad():
            out[f"{m}_embeds"] = np.concatenate(
                [model.retrieval_embeddings(getattr(model, f"get_{m}_features")(r)).numpy() for r in rows]
            )
        codes = [getattr(model, f"get_{m}_hash_codes")(r).numpy() for r in rows]
        out[f"{m}_codes"] = pack_codes(np.concatenate(codes))
    return out


def assert_same_encoding(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if key.endswith("_embeds"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
        else:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _encode_in_process(model, split, output_dir):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    # a forked worker may inherit a single-process state created earlier in the pytest process
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    accelerator = Accelerator()
    assert accelerator.num_processes == 2
    encode_dataset_to_shards(
        model,
        split,
        output_dir,
        batch_size=3,
        shard_size=SHARD_SIZE,
        accelerator=accelerator,
        show_progress=False,
    )
    # a folder of another run is refused on every process (no process is left waiting in a collective)
    with pytest.raises(ValueError, match="different run|refused by the main process"):
        encode_dataset_to_shards(model, split, output_dir, shard_size=SHARD_SIZE + 1, accelerator=accelerator)
    # the in-memory path gathers too: every process gets every row, in order
    arrays = encode_split_arrays(model, split, batch_size=4, accelerator=accelerator)
    np.save(os.path.join(output_dir, f"arrays_ids_rank{accelerator.process_index}.npy"), arrays["ids"])


def test_two_processes_give_the_one_process_result_in_order(tmp_path, model, split):
    reference = loop_reference(model, split)
    summary = encode_dataset_to_shards(model, split, tmp_path / "one", batch_size=4, shard_size=SHARD_SIZE)
    assert summary == {"num_shards": 4, "encoded": [0, 1, 2, 3], "skipped": []}
    one = load_shards(tmp_path / "one")
    assert_same_encoding(one, reference)

    debug_launcher(_encode_in_process, args=(model, split, str(tmp_path / "two")), num_processes=2)
    assert_same_encoding(load_shards(tmp_path / "two"), one)
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest == json.loads((tmp_path / "one" / "manifest.json").read_text())
    for rank in (0, 1):
        np.testing.assert_array_equal(
            np.load(tmp_path / "two" / f"arrays_ids_rank{rank}.npy"), reference["ids"]
        )


def test_label_posterior_model_stores_posteriors_and_codes_of_the_common_space(tmp_path, split):
    model = tiny_crcgs_model(
        image_input_dim=12,
        text_input_dim=10,
        num_labels=3,
        hash_bits=24,
        retrieval_embedding="label_posterior",
    )
    encode_dataset_to_shards(model, split, tmp_path, batch_size=4, shard_size=SHARD_SIZE, show_progress=False)
    shards = load_shards(tmp_path)
    assert_same_encoding(shards, loop_reference(model, split))
    assert shards["image_embeds"].shape == (NUM_ROWS, 3)
    np.testing.assert_allclose(shards["text_embeds"].sum(axis=1), 1.0, rtol=1e-5)


class _CrashAfter:
    """Wrap ``model.get_text_features`` to count encoded rows and to raise after ``limit`` calls."""

    def __init__(self, model, limit=None):
        self.model, self.limit, self.calls, self.rows = model, limit, 0, 0
        self.original = type(model).get_text_features.__get__(model)  # the unpatched method

    def __call__(self, **inputs):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise RuntimeError("simulated crash")
        self.rows += len(inputs["text_features"])
        return self.original(**inputs)


def test_resume_skips_completed_shards(tmp_path, model, split, monkeypatch):
    out = tmp_path / "shards"
    encode_dataset_to_shards(model, split, out, batch_size=4, shard_size=SHARD_SIZE, show_progress=False)
    complete = load_shards(out)
    mtimes = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}

    # crash 1: the last shard is lost and a half-written temp file is left behind
    os.remove(out / "shard_00003.safetensors")
    (out / ".shard_00003.safetensors.abc123.tmp").write_bytes(b"partial")
    counter = _CrashAfter(model)
    monkeypatch.setattr(model, "get_text_features", counter)
    summary = encode_dataset_to_shards(
        model, split, out, batch_size=4, shard_size=SHARD_SIZE, show_progress=False
    )
    assert summary == {"num_shards": 4, "encoded": [3], "skipped": [0, 1, 2]}
    assert counter.rows == NUM_ROWS - 3 * SHARD_SIZE  # only the missing shard was recomputed
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    for name in ("shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors"):
        assert os.stat(out / name).st_mtime_ns == mtimes[name]
    assert_same_encoding(load_shards(out), complete)

    # crash 2: the process dies in the middle of the run (in the 2nd batch of shard 1)
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(model, "get_text_features", _CrashAfter(model, limit=3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_dataset_to_shards(
            model, split, fresh, batch_size=5, shard_size=SHARD_SIZE, show_progress=False
        )
    assert sorted(n for n in os.listdir(fresh) if not n.startswith(".")) == [
        "manifest.json",
        "shard_00000.safetensors",
        "shard_00000.safetensors.sha256",
    ]
    with pytest.raises(ValueError, match="missing 3 of 4 shards"):
        load_shards(fresh)
    counter = _CrashAfter(model)
    monkeypatch.setattr(model, "get_text_features", counter)
    summary = encode_dataset_to_shards(
        model, split, fresh, batch_size=5, shard_size=SHARD_SIZE, show_progress=False
    )
    assert summary["encoded"] == [1, 2, 3] and counter.rows == NUM_ROWS - SHARD_SIZE
    assert_same_encoding(load_shards(fresh), complete)


def test_rerun_with_other_settings_or_weights_is_refused(tmp_path, model, split):
    encode_dataset_to_shards(model, split, tmp_path, shard_size=SHARD_SIZE, show_progress=False)
    with pytest.raises(ValueError, match="different run.*shard_size"):
        encode_dataset_to_shards(model, split, tmp_path, shard_size=8, show_progress=False)
    other = CRCGSModel(model.config).eval()
    with pytest.raises(ValueError, match="different run.*model_fingerprint"):
        encode_dataset_to_shards(other, split, tmp_path, shard_size=SHARD_SIZE, show_progress=False)


def test_processor_plugs_in_for_raw_columns(tmp_path, model, split):
    # a raw "text" column (whitespace-separated numbers) and a processor that turns it into text_features
    texts = [" ".join(f"{v:.6f}" for v in row) for row in np.asarray(split["text_features"])]
    raw = split.remove_columns(["text_features"]).add_column("text", texts)

    def processor(text, return_tensors, **kwargs):
        assert return_tensors == "pt"
        return {"text_features": torch.tensor([[float(v) for v in t.split()] for t in text])}

    with pytest.raises(ValueError, match="'text_features' column \\(or a 'text' column and a processor\\)"):
        encode_split_arrays(model, raw)
    from_raw = encode_split_arrays(model, raw, batch_size=6, processor=processor)
    from_features = encode_split_arrays(model, split, batch_size=6)
    assert_same_encoding(from_raw, from_features)


def test_bad_inputs(tmp_path, model, split):
    with pytest.raises(ValueError, match="modalities"):
        encode_dataset_to_shards(model, split, tmp_path, modalities=("audio",))
    with pytest.raises(ValueError, match="shard_size"):
        encode_dataset_to_shards(model, split, tmp_path, shard_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        encode_split_arrays(model, split, batch_size=-1)
    with pytest.raises(ValueError, match="split is empty"):
        encode_dataset_to_shards(model, split.select([]), tmp_path)
    with pytest.raises(ValueError, match="'image_features' column"):
        encode_dataset_to_shards(model, split.remove_columns(["image_features"]), tmp_path)
    wrong_width = split.remove_columns(["text_features"]).rename_column("image_features", "text_features")
    with pytest.raises(ValueError, match="text_features"):
        encode_split_arrays(model, wrong_width, ("text",))
    with pytest.raises(ValueError, match="no manifest.json"):
        load_shards(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "empty", "no_checksum", "flipped_byte"])
def test_damaged_shard_is_redone_on_resume_and_named_at_load(tmp_path, model, split, damage):
    reference = encode_dataset_to_shards(model, split, tmp_path, shard_size=SHARD_SIZE, show_progress=False)
    assert reference["encoded"] == [0, 1, 2, 3]
    want = load_shards(tmp_path)
    shard = tmp_path / "shard_00002.safetensors"
    data = shard.read_bytes()
    if damage == "no_checksum":
        (tmp_path / "shard_00002.safetensors.sha256").unlink()
    else:
        damaged = {
            "truncated": data[: len(data) // 2],
            "random_bytes": os.urandom(len(data)),
            "empty": b"",
            "flipped_byte": data[:-1] + bytes([data[-1] ^ 0xFF]),
        }[damage]
        shard.write_bytes(damaged)
    with pytest.raises(ValueError, match="shard .*shard_00002.safetensors"):
        load_shards(tmp_path)
    # a rerun counts the damaged shard as not done and rewrites it
    again = encode_dataset_to_shards(model, split, tmp_path, shard_size=SHARD_SIZE, show_progress=False)
    assert again["encoded"] == [2] and again["skipped"] == [0, 1, 3]
    assert_same_encoding(load_shards(tmp_path), want)
