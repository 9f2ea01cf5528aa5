"""HashIndex: exact search against a numpy reference (with ties), approximate kinds, persistence, bad input."""

import json
import os

import numpy as np
import pytest

from modeling_crcgs.hashing import pack_codes
from modeling_crcgs.retrieval.index import HashIndex

POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)


def hamming_reference(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Slow reference: loop over query/database pairs, popcount of the XOR of packed rows."""
    out = np.empty((len(queries), len(database)), dtype=np.int64)
    for i, q in enumerate(queries):
        for j, row in enumerate(database):
            out[i, j] = POPCOUNT[q ^ row].sum()
    return out


def top_k_reference(dist: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k nearest rows, ties by position (stable sort)."""
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


@pytest.fixture
def tied_codes():
    # 12-bit codes (2 bytes, 4 padding bits) in a database of 600: many rows share each distance
    rng = np.random.default_rng(0)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(640, 12))
    signs[100:140] = signs[0]  # exact duplicates as well
    packed = pack_codes(signs)
    return signs, packed[:600], packed[600:]


def test_flat_equals_reference_including_ties(tied_codes):
    signs, database, queries = tied_codes
    dist = hamming_reference(queries, database)
    # the reference distances are the docs/METHOD.md formula on sign codes: (K - a.b) / 2
    sign_dist = (12 - signs[600:].astype(np.int64) @ signs[:600].astype(np.int64).T) // 2
    np.testing.assert_array_equal(dist, sign_dist)
    k = 57
    order = top_k_reference(dist, k)

    index = HashIndex.from_codes(database, hash_bits=12)
    ids, distances = index.search(queries, k)
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_array_equal(distances, np.take_along_axis(dist, order, axis=1))
    assert ids.dtype == np.int64 and distances.dtype == np.int32

    # user ids are reported in place of positions, tie order still by insertion position
    user_ids = np.random.default_rng(1).permutation(600).astype(np.int64) * 10 + 3
    ids, _ = HashIndex.from_codes(database, ids=user_ids, hash_bits=12).search(queries, k)
    np.testing.assert_array_equal(ids, user_ids[order])


def test_add_in_parts_equals_one_build(tied_codes):
    _, database, queries = tied_codes
    whole = HashIndex.from_codes(database)
    parts = HashIndex.from_codes(database[:250])
    parts.add(database[250:])
    assert len(parts) == 600
    for a, b in zip(whole.search(queries, 20), parts.search(queries, 20), strict=True):
        np.testing.assert_array_equal(a, b)


def test_k_larger_than_index_pads_with_minus_one():
    database = np.array([[0], [255], [1]], dtype=np.uint8)
    ids, distances = HashIndex.from_codes(database).search(np.array([[3]], dtype=np.uint8), 5)
    np.testing.assert_array_equal(ids, [[2, 0, 1, -1, -1]])
    np.testing.assert_array_equal(distances, [[1, 2, 6, -1, -1]])
    empty = HashIndex.from_codes(np.zeros((0, 1), dtype=np.uint8))
    np.testing.assert_array_equal(empty.search(np.array([[3]], dtype=np.uint8), 2)[0], [[-1, -1]])
    empty.add(np.array([[7]], dtype=np.uint8), ids=np.array([42]))
    ids, distances = empty.search(np.array([[3]], dtype=np.uint8), 2)
    np.testing.assert_array_equal(ids, [[42, -1]])
    np.testing.assert_array_equal(distances, [[1, -1]])


def _random_packed(n, code_bytes, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, code_bytes), dtype=np.uint8)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("ivf", {"nlist": 8, "nprobe": 8}),  # every cell probed: exhaustive
        ("hash", {"nhash": 2, "hash_key_bits": 8, "nflip": 8}),  # every bucket probed: exhaustive
    ],
)
def test_approximate_kinds_are_exact_when_exhaustive(kind, options):
    database, queries = _random_packed(500, 2, 0), _random_packed(30, 2, 1)
    dist = hamming_reference(queries, database)
    ids, distances = HashIndex.from_codes(database, kind=kind, **options).search(queries, 15)
    expected = np.sort(dist, axis=1)[:, :15]
    np.testing.assert_array_equal(distances, expected)
    # every returned id really is at the reported distance
    np.testing.assert_array_equal(np.take_along_axis(dist, ids, axis=1), distances)


def test_approximate_kinds_report_true_distances():
    database, queries = _random_packed(2000, 4, 2), _random_packed(40, 4, 3)
    dist = hamming_reference(queries, database)
    for index in (
        HashIndex.from_codes(database, kind="ivf", nprobe=2),
        HashIndex.from_codes(database, kind="hash"),
    ):
        ids, distances = index.search(queries, 10)
        found = ids >= 0
        assert found.any()
        np.testing.assert_array_equal(
            np.take_along_axis(dist, np.where(found, ids, 0), axis=1)[found], distances[found]
        )
        assert np.all(np.diff(np.where(found, distances, 10**6), axis=1) >= 0)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hash"])
def test_save_load_round_trip(tmp_path, kind):
    database, queries = _random_packed(800, 8, 4), _random_packed(25, 8, 5)
    ids = np.arange(800, dtype=np.int64)[::-1] * 7
    index = HashIndex.from_codes(database, ids=ids, kind=kind, modality="image")
    if kind == "ivf":
        index.set_search_params(nprobe=3)
    elif kind == "hash":
        index.set_search_params(nflip=1)
    before = index.search(queries, 12)
    index.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path / "idx")) == ["ids.npy", "index.faiss", "index_config.json"]
    config = json.loads((tmp_path / "idx" / "index_config.json").read_text())
    assert config["kind"] == kind and config["hash_bits"] == 64 and config["num_codes"] == 800

    loaded = HashIndex.load(tmp_path / "idx")
    assert (loaded.kind, loaded.hash_bits, loaded.modality, loaded.params) == (
        kind,
        64,
        "image",
        index.params,
    )
    for a, b in zip(before, loaded.search(queries, 12), strict=True):
        np.testing.assert_array_equal(a, b)
    # overwrite in place with a different index
    HashIndex.from_codes(database[:10]).save(tmp_path / "idx")
    assert len(HashIndex.load(tmp_path / "idx")) == 10


def test_load_rejects_incomplete_or_inconsistent_folders(tmp_path):
    with pytest.raises(ValueError, match="index_config.json"):
        HashIndex.load(tmp_path)
    HashIndex.from_codes(_random_packed(20, 1, 0)).save(tmp_path)
    np.save(tmp_path / "ids.npy", np.arange(5, dtype=np.int64))
    with pytest.raises(ValueError, match="ids.npy"):
        HashIndex.load(tmp_path)
    os.remove(tmp_path / "index.faiss")
    with pytest.raises(ValueError, match="index.faiss"):
        HashIndex.load(tmp_path)


def test_bad_inputs_name_the_argument():
    database = _random_packed(100, 4, 0)
    index = HashIndex.from_codes(database)
    with pytest.raises(ValueError, match="query_codes.*4 bytes"):
        index.search(_random_packed(3, 8, 1), 5)
    with pytest.raises(ValueError, match="query_codes.*uint8"):
        index.search(database.astype(np.int64), 5)
    with pytest.raises(ValueError, match="query_codes.*2-D"):
        index.search(database[0], 5)
    with pytest.raises(ValueError, match="k must be"):
        index.search(database[:2], 0)
    with pytest.raises(ValueError, match="codes.*4 bytes"):
        index.add(_random_packed(3, 2, 1))
    with pytest.raises(ValueError, match="ids must be unique"):
        index.add(database[:2], ids=np.array([5, 6]))
    with pytest.raises(ValueError, match="ids must be a 1-D integer"):
        HashIndex.from_codes(database, ids=np.arange(99))
    with pytest.raises(ValueError, match="hash_bits=64"):
        HashIndex.from_codes(database, hash_bits=64)
    with pytest.raises(ValueError, match="kind"):
        HashIndex.from_codes(database, kind="hnsw")
    with pytest.raises(ValueError, match="nlist"):
        HashIndex.from_codes(database, kind="ivf", nlist=101)
    with pytest.raises(ValueError, match="nhash \\* hash_key_bits"):
        HashIndex.from_codes(database, kind="hash", nhash=3, hash_key_bits=16)
    with pytest.raises(ValueError, match="nprobe applies to kind='ivf'"):
        index.set_search_params(nprobe=4)
    with pytest.raises(ValueError, match="padding bits"):
        HashIndex.from_codes(np.array([[0xFF, 0xFF]], dtype=np.uint8), hash_bits=12)


def test_search_features_with_a_tiny_model():
    import datasets
    import torch
    from crcgs_test_utils import tiny_crcgs_model

    dims = dict(image_input_dim=12, text_input_dim=10, num_labels=3)
    model = tiny_crcgs_model(hash_bits=16, **dims)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(90, 12)).astype(np.float32)
    split = datasets.Dataset.from_dict(
        {"image_features": image, "index": np.arange(90, dtype=np.int64) + 500}
    )
    index = HashIndex.from_model_and_split(model, split, modality="image", batch_size=16)
    assert (index.modality, index.hash_bits, len(index)) == ("image", 16, 90)

    text = rng.normal(size=(7, 10)).astype(np.float32)
    ids, distances = index.search_features(model, text_features=text, k=9, batch_size=3)
    # reference: sign codes from the model, distances by docs/METHOD.md's (K - a.b) / 2, stable sort
    image_signs = model.get_image_hash_codes(torch.from_numpy(image)).numpy().astype(np.int64)
    text_signs = model.get_text_hash_codes(torch.from_numpy(text)).numpy().astype(np.int64)
    dist = (16 - text_signs @ image_signs.T) // 2
    order = top_k_reference(dist, 9)
    np.testing.assert_array_equal(ids, order + 500)
    np.testing.assert_array_equal(distances, np.take_along_axis(dist, order, axis=1))

    with pytest.raises(ValueError, match="exactly one modality"):
        index.search_features(model, text_features=text, image_features=image[:7])
    with pytest.raises(ValueError, match="exactly one modality"):
        index.search_features(model, audio=text)
    with pytest.raises(ValueError, match="text_features must be 2-D"):
        index.search_features(model, text_features=text[0])
    other = tiny_crcgs_model(hash_bits=32, **dims)
    with pytest.raises(ValueError, match="hash_bits=32"):
        index.search_features(other, text_features=text)


@pytest.mark.parametrize("nflip", [17, 100, -1])
def test_nflip_beyond_the_key_bits_is_refused_at_build_load_and_set(tmp_path, nflip):
    # faiss's multi-hash search never returns when nflip exceeds the key's bits: refuse instead
    codes = pack_codes(np.random.default_rng(0).choice(np.array([-1, 1], np.int8), size=(50, 32)))
    with pytest.raises(ValueError, match=f"nflip must be an integer between 0 and hash_key_bits=16.*{nflip}"):
        HashIndex.from_codes(codes, kind="hash", hash_key_bits=16, nflip=nflip)
    index = HashIndex.from_codes(codes, kind="hash", hash_key_bits=16, nflip=16)
    with pytest.raises(ValueError, match="nflip must be an integer between 0 and hash_key_bits=16"):
        index.set_search_params(nflip=nflip)
    assert index.params["nflip"] == 16 and index.faiss_index.nflip == 16  # unchanged by the refused call
    index.save(tmp_path)
    config = json.loads((tmp_path / "index_config.json").read_text())
    config["params"]["nflip"] = nflip
    (tmp_path / "index_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="nflip must be an integer between 0 and hash_key_bits=16"):
        HashIndex.load(tmp_path)


@pytest.mark.parametrize("nprobe", [0, -3])
def test_nprobe_below_one_is_refused_at_build_and_set(nprobe):
    codes = pack_codes(np.random.default_rng(0).choice(np.array([-1, 1], np.int8), size=(100, 16)))
    with pytest.raises(ValueError, match=f"nprobe must be a positive integer, got {nprobe}"):
        HashIndex.from_codes(codes, kind="ivf", nlist=2, nprobe=nprobe)
    index = HashIndex.from_codes(codes, kind="ivf", nlist=2, nprobe=1)
    with pytest.raises(ValueError, match=f"nprobe must be a positive integer, got {nprobe}"):
        index.set_search_params(nprobe=nprobe)
    assert index.faiss_index.nprobe == 1


@pytest.mark.parametrize(
    "name, damage",
    [
        ("index.faiss", "truncated"),
        ("index.faiss", "random_bytes"),
        ("ids.npy", "truncated"),
        ("ids.npy", "random_bytes"),
        ("index_config.json", "truncated"),
        ("index_config.json", "random_bytes"),
    ],
)
def test_damaged_index_files_are_named(tmp_path, name, damage):
    codes = pack_codes(np.random.default_rng(0).choice(np.array([-1, 1], np.int8), size=(50, 32)))
    HashIndex.from_codes(codes).save(tmp_path)
    path = tmp_path / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with pytest.raises(ValueError, match=str(path)):
        HashIndex.load(tmp_path)
