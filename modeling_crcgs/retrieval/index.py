"""A Hamming-distance search index over packed hash codes, backed by a faiss binary index.

For people who use a trained model: build an index from a dataset split (or from packed codes written by
:func:`modeling_crcgs.retrieval.encoding.encode_dataset_to_shards`), save it, load it elsewhere, and search it with
packed query codes or with raw features encoded by the model.

Distance: the Hamming distance between two K-bit codes, ``d_H(a, b) = (K - a.b) / 2`` (docs/METHOD.md), i.e.
the popcount of the XOR of their packed rows (:func:`modeling_crcgs.hashing.pack_codes` layout).

Kinds:

* ``"flat"``: ``faiss.IndexBinaryFlat``, exact exhaustive search.
* ``"ivf"``: ``faiss.IndexBinaryIVF`` with a ``faiss.IndexBinaryFlat`` coarse quantizer (binary k-means
  into ``nlist`` cells, ``nprobe`` cells visited per query); approximate.
* ``"hash"``: ``faiss.IndexBinaryMultiHash`` (multi-index hashing, Norouzi et al., CVPR 2012): ``nhash``
  hash tables keyed on disjoint ``hash_key_bits``-bit substrings, each probed within Hamming radius
  ``nflip``; candidates are re-ranked by their full Hamming distance; approximate.

Ties: faiss keeps the k best results in heaps that compare ``(distance, id)`` pairs, where ``id`` is the
insertion position. For ``"flat"`` the result is therefore exactly the first k rows of a stable sort by
``(distance, insertion position)``, including which tied rows make the cut at the k-th distance (this
is checked against a numpy reference in the tests). Approximate kinds order their candidates the same
way. Results are reported with the user ids given at insertion; with the default ids (insertion
positions) the order is ``(distance, id)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..hashing import num_packed_bytes, pack_codes
from ..utils import atomic_write, check_positive_int, model_fingerprint
from .encoding import encode_query_codes, encode_split_arrays

__all__ = ["HashIndex", "INDEX_KINDS"]

INDEX_KINDS = ("flat", "ivf", "hash")
_FORMAT_VERSION = 1
_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.npy"
_CONFIG_FILE = "index_config.json"


def _check_packed(codes: Any, name: str, code_bytes: Optional[int] = None) -> np.ndarray:
    """Validate packed codes: a 2-D ``uint8`` numpy array, ``code_bytes`` columns when given."""
    if not isinstance(codes, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray of packed uint8 codes, got {type(codes).__name__}")
    if codes.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (packed codes, see pack_codes), got {codes.dtype}")
    if codes.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_codes, code_bytes), got shape {codes.shape}")
    if code_bytes is not None and codes.shape[1] != code_bytes:
        raise ValueError(
            f"{name} must have {code_bytes} bytes per code (this index holds {code_bytes * 8}-bit-wide "
            f"packed codes), got {codes.shape[1]}"
        )
    return np.ascontiguousarray(codes)


class HashIndex:
    """Top-k Hamming search over packed binary codes, with user ids, persistence and model-based queries.

    Build one with :meth:`from_codes` or :meth:`from_model_and_split`, or :meth:`load` a saved one.

    Args:
        faiss_index (`faiss.IndexBinary`): the underlying index; its rows are in insertion order.
        ids (`np.ndarray` of int64): the user id of each row, in insertion order.
        hash_bits (`int`): the code length K (the packed width is ``ceil(K / 8)`` bytes).
        kind (`str`): one of ``"flat"``, ``"ivf"``, ``"hash"``.
        params (`dict`): the kind's parameters (``nlist``, ``nprobe`` / ``nhash``, ``hash_key_bits``,
            ``nflip``), saved with the index.
        modality (`str`, *optional*): which tower encoded the database (``"image"`` or ``"text"``).
        model_fingerprint (`str`, *optional*): SHA-256 of the weights that made the codes
            (:func:`modeling_crcgs.utils.model_fingerprint`); searches with another model are refused.
    """

    def __init__(
        self,
        faiss_index: Any,
        ids: np.ndarray,
        hash_bits: int,
        kind: str,
        params: dict[str, int],
        modality: Optional[str] = None,
        model_fingerprint: Optional[str] = None,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        self.code_bytes = num_packed_bytes(hash_bits)
        if faiss_index.d != 8 * self.code_bytes:
            raise ValueError(
                f"faiss_index has dimension {faiss_index.d} bits, expected {8 * self.code_bytes} for "
                f"hash_bits={hash_bits}"
            )
        if faiss_index.ntotal != len(ids):
            raise ValueError(f"ids has {len(ids)} entries but faiss_index holds {faiss_index.ntotal} codes")
        self.faiss_index = faiss_index
        self.ids = np.asarray(ids, dtype=np.int64)
        self.hash_bits = int(hash_bits)
        self.kind = kind
        self.params = dict(params)
        self.modality = modality
        self.model_fingerprint = model_fingerprint
        self._apply_search_params()

    # ----------------------------------------------------------------------------------------------
    # construction
    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        ids: Optional[np.ndarray] = None,
        hash_bits: Optional[int] = None,
        kind: str = "flat",
        nlist: Optional[int] = None,
        nprobe: int = 8,
        nhash: int = 1,
        hash_key_bits: Optional[int] = None,
        nflip: int = 2,
        modality: Optional[str] = None,
        model_fingerprint: Optional[str] = None,
    ) -> HashIndex:
        """Build an index over packed codes.

        Args:
            codes (`np.ndarray` uint8 `(n, ceil(K/8))`): packed database codes (:func:`pack_codes`).
            ids (`np.ndarray` int64 `(n,)`, *optional*): unique user ids; default ``0..n-1``.
            hash_bits (`int`, *optional*): K; default ``8 * codes.shape[1]``. When K is not a multiple of
                8 the padding bits must be 0.
            kind (`str`, *optional*, defaults to ``"flat"``): ``"flat"`` (exact), ``"ivf"`` or ``"hash"``.
            nlist (`int`, *optional*): IVF cells; default ``clip(sqrt(n), 1, n // 39)`` (faiss's
                k-means wants >= 39 training points per centroid). The IVF quantizer is trained on
                ``codes`` (faiss subsamples 256 points per cell).
            nprobe (`int`, *optional*, defaults to 8): IVF cells visited per query.
            nhash (`int`, *optional*, defaults to 1): hash tables of ``"hash"``.
            hash_key_bits (`int`, *optional*): bits per hash key; default ``min(16, 8 * code_bytes // nhash)``.
                ``nhash * hash_key_bits`` must not exceed ``8 * code_bytes``.
            nflip (`int`, *optional*, defaults to 2): Hamming radius probed in each hash table.
            modality (`str`, *optional*): recorded in the saved metadata.
            model_fingerprint (`str`, *optional*): the fingerprint of the model that made ``codes``.
        """
        import faiss

        codes = _check_packed(codes, "codes")
        code_bytes = codes.shape[1]
        if hash_bits is None:
            hash_bits = 8 * code_bytes
        elif num_packed_bytes(hash_bits) != code_bytes:
            raise ValueError(
                f"codes have {code_bytes} bytes per code but hash_bits={hash_bits} needs "
                f"{num_packed_bytes(hash_bits)}"
            )
        d = 8 * code_bytes
        if kind == "flat":
            index, params = faiss.IndexBinaryFlat(d), {}
        elif kind == "ivf":
            n = len(codes)
            if nlist is None:
                nlist = int(np.clip(round(np.sqrt(n)), 1, max(1, n // 39)))
            if not 1 <= nlist <= n:
                raise ValueError(f"nlist must be between 1 and the number of codes ({n}), got {nlist}")
            # faiss's Python constructor keeps a reference to the quantizer for the index's lifetime
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, nlist)
            index.train(codes)
            params = {"nlist": nlist, "nprobe": nprobe}
        elif kind == "hash":
            if hash_key_bits is None:
                hash_key_bits = min(16, d // max(nhash, 1))
            if nhash < 1 or hash_key_bits < 1 or nhash * hash_key_bits > d:
                raise ValueError(
                    f"nhash * hash_key_bits must be positive and at most the code width {d} bits, got "
                    f"nhash={nhash}, hash_key_bits={hash_key_bits}"
                )
            index = faiss.IndexBinaryMultiHash(d, nhash, hash_key_bits)
            params = {"nhash": nhash, "hash_key_bits": hash_key_bits, "nflip": nflip}
        else:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        result = cls(index, np.zeros(0, dtype=np.int64), hash_bits, kind, params, modality, model_fingerprint)
        result.add(codes, ids)
        return result

    @classmethod
    def from_model_and_split(
        cls,
        model: Any,
        split: Any,
        modality: str = "image",
        batch_size: int = 256,
        id_column: str = "index",
        processor: Any = None,
        **index_kwargs: Any,
    ) -> HashIndex:
        """Encode one modality of a dataset split with ``model`` and index its codes.

        Ids come from ``id_column`` when the split has it, else from row positions. ``index_kwargs`` go to
        :meth:`from_codes` (``kind``, ``nlist``, ...). See
        :func:`modeling_crcgs.retrieval.encoding.encode_split_arrays` for the inputs a split may hold.
        """
        arrays = encode_split_arrays(
            model,
            split,
            modalities=(modality,),
            batch_size=batch_size,
            id_column=id_column,
            processor=processor,
        )
        return cls.from_codes(
            arrays[f"{modality}_codes"],
            ids=arrays["ids"],
            hash_bits=model.config.hash_bits,
            modality=modality,
            model_fingerprint=model_fingerprint(model),
            **index_kwargs,
        )

    def add(self, codes: np.ndarray, ids: Optional[np.ndarray] = None) -> None:
        """Append packed codes; ``ids`` default to ``len(self), len(self)+1, ...``. Ids must stay unique."""
        codes = _check_packed(codes, "codes", self.code_bytes)
        if self.hash_bits % 8:
            valid_bits = pack_codes(np.ones((1, self.hash_bits), dtype=np.int8))[0]
            if np.any(codes & ~valid_bits):
                raise ValueError(
                    f"codes have non-zero padding bits beyond bit {self.hash_bits}: not packed "
                    f"{self.hash_bits}-bit codes"
                )
        if ids is None:
            ids = np.arange(len(self), len(self) + len(codes), dtype=np.int64)
        else:
            ids = np.asarray(ids)
            if ids.shape != (len(codes),) or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(
                    f"ids must be a 1-D integer array with one id per code ({len(codes)}), got shape "
                    f"{ids.shape} and dtype {ids.dtype}"
                )
            ids = ids.astype(np.int64)
        all_ids = np.concatenate([self.ids, ids])
        if len(np.unique(all_ids)) != len(all_ids):
            raise ValueError("ids must be unique across the index, got duplicated ids")
        if len(codes):
            self.faiss_index.add(codes)
        self.ids = all_ids

    def check_model(self, model: Any) -> None:
        """Refuse ``model`` when it has another code length, or other weights than the model recorded as
        the maker of the index's codes (codes of two models are not comparable)."""
        if getattr(model.config, "hash_bits", None) != self.hash_bits:
            raise ValueError(
                f"model has hash_bits={getattr(model.config, 'hash_bits', None)} but this index holds "
                f"{self.hash_bits}-bit codes"
            )
        if self.model_fingerprint is not None and model_fingerprint(model) != self.model_fingerprint:
            raise ValueError(
                "the model's weights are not those that made this index's codes (model fingerprint "
                f"{model_fingerprint(model)[:12]}..., index {self.model_fingerprint[:12]}...); rebuild the "
                "index with this model or search with the model that built it"
            )

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def _check_search_params(self) -> None:
        """Refuse search parameters faiss would not answer: ``nprobe < 1`` or ``nflip`` outside ``[0, b]``.

        faiss's multi-hash search enumerates every key within Hamming radius ``nflip`` of the query's
        ``b = hash_key_bits``-bit key; with ``nflip > b`` that enumeration never ends.
        """
        if self.kind == "ivf":
            nprobe = self.params.get("nprobe")
            if not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
                raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")
        elif self.kind == "hash":
            nflip, key_bits = self.params.get("nflip"), self.params.get("hash_key_bits")
            if not isinstance(nflip, (int, np.integer)) or not 0 <= nflip <= int(key_bits):
                raise ValueError(
                    f"nflip must be an integer between 0 and hash_key_bits={key_bits} (the bits of one hash "
                    f"key), got {nflip!r}"
                )

    def _apply_search_params(self) -> None:
        self._check_search_params()
        if self.kind == "ivf":
            self.faiss_index.nprobe = int(self.params["nprobe"])
        elif self.kind == "hash":
            self.faiss_index.nflip = int(self.params["nflip"])

    def set_search_params(self, nprobe: Optional[int] = None, nflip: Optional[int] = None) -> None:
        """Change ``nprobe`` (``"ivf"``) or ``nflip`` (``"hash"``) for later searches."""
        for name, value, kind in (("nprobe", nprobe, "ivf"), ("nflip", nflip, "hash")):
            if value is None:
                continue
            if self.kind != kind:
                raise ValueError(f"{name} applies to kind={kind!r} indexes, this one is {self.kind!r}")
            previous = dict(self.params)
            self.params[name] = value
            try:
                self._check_search_params()
            except ValueError:
                self.params = previous
                raise
        self._apply_search_params()

    # ----------------------------------------------------------------------------------------------
    # search
    def search(self, query_codes: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``k`` nearest database codes of each query by Hamming distance.

        Args:
            query_codes (`np.ndarray` uint8 `(nq, code_bytes)`): packed query codes.
            k (`int`): results per query.

        Returns:
            ``(ids, distances)``: int64 and int32 arrays of shape `(nq, k)`, ascending distance, ties in
            insertion order. Slots without a result (k larger than the index, or an approximate kind that
            found fewer candidates) hold id -1 and distance -1.
        """
        query_codes = _check_packed(query_codes, "query_codes", self.code_bytes)
        distances, positions = self.faiss_index.search(query_codes, check_positive_int("k", k))
        missing = positions < 0
        ids = (
            self.ids[np.maximum(positions, 0)] if len(self) else np.full(positions.shape, -1, dtype=np.int64)
        )
        ids[missing] = -1
        distances = np.where(missing, -1, distances).astype(np.int32)
        return ids, distances

    def search_features(
        self,
        model: Any,
        k: int = 10,
        batch_size: int = 1024,
        **inputs: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode queries with ``model`` and search.

        Pass exactly one modality's inputs as keyword arguments: ``image_features=`` or ``text_features=``
        (float arrays/tensors `(nq, dim)`), or raw inputs the model's towers accept (``pixel_values=``,
        ``input_ids=`` + ``attention_mask=``). A text query against an image index is cross-modal
        retrieval (t2i) and vice versa.
        """
        self.check_model(model)
        return self.search(encode_query_codes(model, batch_size=batch_size, **inputs), k)

    # ----------------------------------------------------------------------------------------------
    # persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``index.faiss`` (faiss binary writer), ``ids.npy`` and ``index_config.json``, each atomically.

        The config is written last, so a folder with a config holds a complete index.
        """
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / _INDEX_FILE, lambda tmp: faiss.write_index_binary(self.faiss_index, tmp))

        def write_ids(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, self.ids, allow_pickle=False)

        atomic_write(directory / _IDS_FILE, write_ids)
        config = {
            "format_version": _FORMAT_VERSION,
            "kind": self.kind,
            "hash_bits": self.hash_bits,
            "code_bytes": self.code_bytes,
            "num_codes": len(self),
            "params": self.params,
            "modality": self.modality,
            "model_fingerprint": self.model_fingerprint,
            "faiss_version": faiss.__version__,
        }

        def write_config(tmp: str) -> None:
            with open(tmp, "w") as f:
                json.dump(config, f, indent=2)

        atomic_write(directory / _CONFIG_FILE, write_config)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> HashIndex:
        """Load an index written by :meth:`save`; checks that the three files agree."""
        import faiss

        directory = Path(directory)
        config_path = directory / _CONFIG_FILE
        if not config_path.is_file():
            raise ValueError(f"directory {str(directory)!r} holds no {_CONFIG_FILE}: not a saved HashIndex")
        try:
            config = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: expected a JSON object")
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{config_path} has format_version {config.get('format_version')!r}, expected {_FORMAT_VERSION}"
            )
        for name in (_INDEX_FILE, _IDS_FILE):
            if not (directory / name).is_file():
                raise ValueError(f"directory {str(directory)!r} is missing {name}")
        try:
            index = faiss.read_index_binary(str(directory / _INDEX_FILE))
        except RuntimeError as err:
            raise ValueError(
                f"{directory / _INDEX_FILE}: cannot be read as a faiss binary index ({err})"
            ) from None
        try:
            ids = np.load(directory / _IDS_FILE, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{directory / _IDS_FILE}: cannot be read as a .npy array ({err})") from None
        if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != config["num_codes"]:
            raise ValueError(
                f"{_IDS_FILE} must be a 1-D int64 array of {config['num_codes']} ids, got {ids.dtype} {ids.shape}"
            )
        if index.ntotal != config["num_codes"]:
            raise ValueError(
                f"{_INDEX_FILE} holds {index.ntotal} codes, {_CONFIG_FILE} says {config['num_codes']}"
            )
        return cls(
            index,
            ids,
            config["hash_bits"],
            config["kind"],
            config["params"],
            config.get("modality"),
            config.get("model_fingerprint"),
        )
