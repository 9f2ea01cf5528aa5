"""Shared contract of every crcgs dataset builder: schema, splits, input checks and streaming readers.

How a builder uses this module
------------------------------
A dataset module (``dataset_scripts/<name>.py``) defines ``_CITATION``, ``_DESCRIPTION``, ``_HOMEPAGE``,
``_LICENSE``, a ``CRCGSBuilderConfig`` subclass (or instances of it) carrying the protocol defaults, and one
``CRCGSBuilder`` subclass that implements only two methods::

    class MyBuilder(CRCGSBuilder):
        BUILDER_CONFIG_CLASS = MyConfig            # a CRCGSBuilderConfig subclass
        BUILDER_CONFIGS = [MyConfig(name="default", num_query=2000, num_validation=2000, num_train=10000)]
        DEFAULT_CONFIG_NAME = "default"
        CITATION, DESCRIPTION, HOMEPAGE, LICENSE = _CITATION, _DESCRIPTION, _HOMEPAGE, _LICENSE

        def _info(self):
            return self.build_info(self.source.features())   # self.source: cached result of _load_source()

        def _load_source(self) -> SourceData:
            image = open_matrix(require_file(self.config.data_dir, "img.mat"), key="X")   # lazy rows
            labels = to_multi_hot(load_array(...), source="lab.mat:L")
            return SourceData(labels=labels, label_names=[...], image_features=image, ...)

Readers and checks live in ``_readers.py`` and split recipes in ``_splits.py`` (plain modules: datasets
patches ``numpy.load``/``open`` inside builder modules, which breaks memory-mapping); this module
re-exports them, so builders import everything from ``dataset_scripts.common``. Do not call
``np.load(mmap_mode=...)`` in a builder module: use ``open_matrix``/``load_array``.

The base class then draws the four splits from the config (``make_splits``: a ``split_file``, else
class-balanced per-class counts, else seeded random sizes), validates them, records the recipe in the
``DatasetInfo`` description, and streams the rows of each split block by block (``chunk_rows`` source
rows at a time) from the readers, so a 190k x 4096 matrix is never loaded whole.

Contract (docs/DESIGN.md, "Data contract")
------------------------------------------
* Splits ``train``, ``validation``, ``query``, ``database``; ``database`` = every row not in ``query``;
  ``train``, ``validation`` and ``query`` are pairwise disjoint. Rows of a split are in ascending
  source order. The same config (seed) gives identical splits.
* Columns: ``index`` (int64, row in the source), ``image_features`` (fixed-length float32) and/or
  ``image`` (``datasets.Image``), ``text_features`` (fixed-length float32 BoW) and/or ``text``
  (string), ``labels`` (fixed-length multi-hot int8) and ``label_ids`` (``List(ClassLabel(names))``:
  the positive label ids of the row). ``label_ids`` is where the label names live: a ``ClassLabel``
  is part of ``Features``, which datasets serialises into ``save_to_disk`` folders and into the Arrow
  schema metadata of Parquet files, so ``label_names(ds)`` works after either round trip.
* Bad input raises ``ValueError`` naming the file and field, with expected vs got
  (``MissingFileError`` for an absent file is also a ``FileNotFoundError``).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import json
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import pyarrow as pa

from . import _readers, _splits
from ._readers import (
    ArrayRows,
    H5Rows,
    MissingFileError,
    NpyRows,
    RowMatrix,
    check_feature_matrix,
    check_finite,
    check_nonempty_labels,
    check_row_counts,
    is_matlab_v73,
    iter_row_blocks,
    load_array,
    open_matrix,
    require_file,
    to_multi_hot,
)
from ._splits import (
    SPLITS,
    class_balanced_splits,
    random_splits,
    read_split_file,
    split_file_digest,
    validate_splits,
)

__all__ = [
    "LABEL_IDS_COLUMN",
    "SPLITS",
    "ArrayRows",
    "CRCGSBuilder",
    "CRCGSBuilderConfig",
    "H5Rows",
    "MissingFileError",
    "NpyRows",
    "RowMatrix",
    "SourceData",
    "check_feature_matrix",
    "check_finite",
    "check_nonempty_labels",
    "check_row_counts",
    "class_balanced_splits",
    "describe_split_recipe",
    "block_to_table",
    "generate_examples",
    "iter_blocks",
    "is_matlab_v73",
    "iter_row_blocks",
    "label_names",
    "load_array",
    "make_features",
    "make_info",
    "make_splits",
    "open_matrix",
    "random_splits",
    "read_split_file",
    "require_file",
    "split_file_digest",
    "split_method",
    "split_recipe",
    "to_multi_hot",
    "validate_splits",
]

LABEL_IDS_COLUMN = "label_ids"
_RECIPE_MARKER = "crcgs_split_recipe: "


@dataclasses.dataclass
class CRCGSBuilderConfig(datasets.BuilderConfig):
    """Options shared by every crcgs builder (each overridable as a keyword of the builder / loader).

    Split recipe, in order of precedence:
      * ``split_file`` (`str`): JSON ``{"train": [...], "validation": [...], "query": [...],
        "database": [...]}`` (``database`` optional = every non-query row), or a folder of the CRCGS
        release's ``train_data_list.npy``/``val_data_list.npy``/``test_data_list.npy`` (test = query).
        Entries are ORIGINAL rows, the ``index`` column: rows of the original files before the
        builder dropped any (MS-COCO official: image ids); naming a dropped row is an error. A cached
        build is re-prepared when the file's sha256 differs from the recorded one;
      * class-balanced when ``query_per_class``, ``validation_per_class``, ``train_per_class`` are set;
      * random otherwise: ``num_query``, ``num_validation`` (``None``: 10% of the rows each) and
        ``num_train`` (``None``: every remaining row).
    seed (`int`, defaults to 0): the split seed; the same seed gives identical splits.
    allow_empty_labels (`bool`, defaults to False): keep rows without any label instead of raising.
    chunk_rows (`int`, defaults to 4096): source rows read per block while preparing.
    """

    seed: int = 0
    num_query: int | None = None
    num_validation: int | None = None
    num_train: int | None = None
    query_per_class: int | None = None
    validation_per_class: int | None = None
    train_per_class: int | None = None
    split_file: str | None = None
    allow_empty_labels: bool = False
    chunk_rows: int = 4096


def split_method(config: CRCGSBuilderConfig) -> str:
    """``"file"``, ``"class_balanced"`` or ``"random"``, by the precedence documented on ``CRCGSBuilderConfig``."""
    if config.split_file:
        return "file"
    per_class = (config.query_per_class, config.validation_per_class, config.train_per_class)
    if any(v is not None for v in per_class):
        if any(v is None for v in per_class):
            raise ValueError(
                "class-balanced splits need query_per_class, validation_per_class and train_per_class together, "
                f"got {per_class}"
            )
        return "class_balanced"
    return "random"


def describe_split_recipe(config: CRCGSBuilderConfig) -> dict[str, Any]:
    """The split recipe of ``config`` as a JSON-able dict (recorded in the DatasetInfo description)."""
    method = split_method(config)
    recipe: dict[str, Any] = {"method": method, "database": "all rows not in query"}
    if method == "file":
        path = Path(config.split_file)
        recipe["database"] = "as listed in the split file (may overlap query), else all rows not in query"
        recipe["split_file"] = str(path)
        if path.exists():
            recipe["split_file_sha256"] = split_file_digest(path)
    elif method == "class_balanced":
        recipe.update(
            seed=config.seed,
            query_per_class=config.query_per_class,
            validation_per_class=config.validation_per_class,
            train_per_class=config.train_per_class,
            sampler="per pass (query, validation, train), classes from the rarest up, uniform draws among "
            "the remaining rows carrying the class",
        )
    else:
        recipe.update(
            seed=config.seed,
            num_query=config.num_query if config.num_query is not None else "10% of rows",
            num_validation=config.num_validation if config.num_validation is not None else "10% of rows",
            num_train=config.num_train if config.num_train is not None else "all remaining rows",
        )
    return recipe


def make_splits(
    config: CRCGSBuilderConfig,
    labels: np.ndarray,
    *,
    label_names: Sequence[str] | None = None,
    index: np.ndarray | None = None,
    dropped: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The four splits of a source with ``labels`` (N, L) following ``config`` (see ``CRCGSBuilderConfig``).

    A ``split_file`` lists original rows (``index``: the source's ``index`` column, ``None``: positions);
    naming a row in ``dropped`` (reason -> original rows) is an error that gives the reason.
    """
    num_rows = labels.shape[0]
    method = split_method(config)
    if method == "file":
        return read_split_file(config.split_file, num_rows, index=index, dropped=dropped)
    if method == "class_balanced":
        return class_balanced_splits(
            labels,
            query_per_class=config.query_per_class,
            validation_per_class=config.validation_per_class,
            train_per_class=config.train_per_class,
            seed=config.seed,
            label_names=label_names,
        )
    tenth = max(1, num_rows // 10)
    return random_splits(
        num_rows,
        num_query=config.num_query if config.num_query is not None else tenth,
        num_validation=config.num_validation if config.num_validation is not None else tenth,
        num_train=config.num_train,
        seed=config.seed,
    )


# ----------------------------------------------------------------------------------------------
# Schema and metadata
# ----------------------------------------------------------------------------------------------


def make_features(
    label_names: Sequence[str],
    *,
    image_dim: int | None = None,
    text_dim: int | None = None,
    with_image: bool = False,
    with_text: bool = False,
) -> datasets.Features:
    """The typed ``Features`` of the contract; columns appear only for the inputs that exist."""
    if len(label_names) < 1 or len(set(label_names)) != len(label_names):
        raise ValueError(
            f"label_names must be non-empty and unique, got {len(label_names)} names ({len(set(label_names))} unique)"
        )
    if image_dim is None and not with_image:
        raise ValueError("a dataset needs image_features (image_dim) and/or raw images (with_image=True)")
    if text_dim is None and not with_text:
        raise ValueError("a dataset needs text_features (text_dim) and/or raw texts (with_text=True)")
    columns: dict[str, Any] = {"index": datasets.Value("int64")}
    if image_dim is not None:
        columns["image_features"] = datasets.List(datasets.Value("float32"), length=int(image_dim))
    if with_image:
        columns["image"] = datasets.Image()
    if text_dim is not None:
        columns["text_features"] = datasets.List(datasets.Value("float32"), length=int(text_dim))
    if with_text:
        columns["text"] = datasets.Value("string")
    columns["labels"] = datasets.List(datasets.Value("int8"), length=len(label_names))
    columns[LABEL_IDS_COLUMN] = datasets.List(datasets.ClassLabel(names=list(label_names)))
    return datasets.Features(columns)


def _features_of(obj: Any) -> datasets.Features:
    if isinstance(obj, datasets.Features):
        return obj
    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if not obj:
            raise ValueError("label_names: got an empty DatasetDict")
        obj = next(iter(obj.values()))
    features = getattr(obj, "features", None)
    if features is None:
        raise ValueError(
            f"expected a Dataset, DatasetDict or Features with a {LABEL_IDS_COLUMN!r} column, got {type(obj).__name__}"
        )
    return features


def label_names(ds_or_split: Any) -> list[str]:
    """Label names of a crcgs dataset (Dataset, DatasetDict, IterableDataset or Features).

    Read from the ``ClassLabel`` of the ``label_ids`` column, which survives ``save_to_disk`` and Parquet.
    """
    features = _features_of(ds_or_split)
    column = features.get(LABEL_IDS_COLUMN)
    inner = getattr(column, "feature", None)
    if not isinstance(inner, datasets.ClassLabel):
        raise ValueError(
            f"no label names: expected a {LABEL_IDS_COLUMN!r} column of ClassLabel, got {column!r}"
        )
    return list(inner.names)


def make_info(
    config: CRCGSBuilderConfig,
    features: datasets.Features,
    *,
    description: str,
    citation: str = "",
    homepage: str = "",
    license: str = "",
    extra: Mapping[str, Any] | None = None,
) -> datasets.DatasetInfo:
    """``DatasetInfo`` whose description ends with the split recipe (read back by ``split_recipe``)."""
    recipe = describe_split_recipe(config)
    if extra:
        recipe.update(extra)
    text = f"{description.strip()}\n\n{_RECIPE_MARKER}{json.dumps(recipe, sort_keys=True)}"
    return datasets.DatasetInfo(
        description=text, citation=citation, homepage=homepage, license=license, features=features
    )


def split_recipe(ds_or_split: Any) -> dict[str, Any]:
    """The split recipe recorded in the DatasetInfo of a prepared crcgs dataset."""
    if isinstance(ds_or_split, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        ds_or_split = next(iter(ds_or_split.values()))
    description = getattr(getattr(ds_or_split, "info", None), "description", "") or ""
    for line in description.splitlines():
        if line.startswith(_RECIPE_MARKER):
            return json.loads(line[len(_RECIPE_MARKER) :])
    raise ValueError(
        "no split recipe in the DatasetInfo description (was this dataset prepared by a crcgs builder?)"
    )


# ----------------------------------------------------------------------------------------------
# The base builder
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SourceData:
    """Everything a builder reads from its files; row ``i`` of every field is source row ``i``.

    labels: (N, L) int8 multi-hot, in memory. label_names: L names.
    image_features / text_features: ``RowMatrix`` readers (streamed), or None.
    texts: N strings, or None. images: N ``datasets.Image`` inputs (paths or bytes), or None.
    index: N int64 values written to the ``index`` column (the row in the ORIGINAL files when the
    builder dropped rows, e.g. unlabelled ones); default ``arange(N)``. A ``split_file`` lists these
    values; splits and the generator keys are positions ``0..N-1`` of this source.
    dropped: original rows (``index`` values) the builder dropped, by reason (e.g. ``"empty bag of
    words"``), so that a split file naming one gets an error saying why.
    """

    labels: np.ndarray
    label_names: list[str]
    image_features: RowMatrix | None = None
    text_features: RowMatrix | None = None
    texts: Sequence[str] | None = None
    images: Sequence[Any] | None = None
    labels_source: str = "labels"
    index: np.ndarray | None = None
    dropped: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.labels.ndim != 2 or self.labels.dtype != np.int8:
            raise ValueError(
                f"{self.labels_source}: expected (N, L) int8 multi-hot labels, got {self.labels.dtype} {self.labels.shape}"
            )
        if self.labels.shape[1] != len(self.label_names):
            raise ValueError(
                f"{self.labels_source}: {self.labels.shape[1]} label columns but {len(self.label_names)} label names"
            )
        counts = {self.labels_source: self.labels.shape[0]}
        for matrix in (self.image_features, self.text_features):
            if matrix is not None:
                counts[matrix.source] = matrix.shape[0]
        for name, values in (("texts", self.texts), ("images", self.images)):
            if values is not None:
                counts[name] = len(values)
        if self.index is not None:
            self.index = np.asarray(self.index, dtype=np.int64)
            counts["index"] = len(self.index)
        check_row_counts(counts)

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_dim(self) -> int | None:
        return None if self.image_features is None else int(self.image_features.shape[1])

    @property
    def text_dim(self) -> int | None:
        return None if self.text_features is None else int(self.text_features.shape[1])

    def features(self) -> datasets.Features:
        """The ``make_features`` schema of this source: a column for each input it holds."""
        return make_features(
            self.label_names,
            image_dim=self.image_dim,
            text_dim=self.text_dim,
            with_image=self.images is not None,
            with_text=self.texts is not None,
        )


def source_digest(cls: type) -> str:
    """Hash of the code a builder runs: its module, this module, ``_readers``, ``_splits`` and the
    builder's ``SOURCE_MODULES``; a code change gives a fresh cache folder."""
    digest = hashlib.sha256()
    for module in (
        inspect.getmodule(cls),
        inspect.getmodule(source_digest),
        _readers,
        _splits,
        *cls.SOURCE_MODULES,
    ):
        digest.update(
            inspect.getsource(module).encode("utf-8")
        )  # no open(): datasets patches it in builder modules
    return digest.hexdigest()[:16]


class CRCGSBuilder(datasets.GeneratorBasedBuilder, abc.ABC):
    """Base builder: subclasses implement ``_info`` (with ``make_features``/``make_info``) and ``_load_source``.

    A subclass's ``_info`` may read the source (label names, dimensions, vocabulary, drop counts), which
    can take seconds to minutes (NUS-WIDE's text files, COCO's JSON). ``datasets`` calls ``_info()`` in
    its constructor, before it looks into the cache, and then replaces the result by the cached
    ``dataset_info.json`` when the prepared folder exists. So the constructor here hands ``datasets`` a
    placeholder info instead, and calls ``_info()`` only when ``datasets`` did not restore one from the
    cache: a cached load never reads the source. Preparing (``_split_generators``) always recomputes
    the info from the source, so ``download_mode="force_redownload"`` writes the current features.
    """

    BUILDER_CONFIG_CLASS = CRCGSBuilderConfig
    CITATION: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str] = ""
    LICENSE: ClassVar[str] = ""
    SOURCE_MODULES: ClassVar[tuple[types.ModuleType, ...]] = ()  # helper modules hashed into the cache key

    def __init__(
        self,
        *args: Any,
        hash: str | None = None,
        features: datasets.Features | None = None,
        **kwargs: Any,
    ):
        self._source: SourceData | None = None
        self._custom_features = features
        placeholder = datasets.DatasetInfo()
        super().__init__(*args, hash=hash or source_digest(type(self)), info=placeholder, **kwargs)
        self._info_from_source = self.info is placeholder  # not replaced from the cache
        if self._info_from_source:
            self.info = self._source_info()

    def _source_info(self) -> datasets.DatasetInfo:
        """``_info()`` completed as ``datasets``' constructor completes it (names, version, features)."""
        info = self._info()
        info.builder_name, info.dataset_name = self.name, self.dataset_name
        info.config_name, info.version = self.config.name, self.config.version
        if self._custom_features is not None:
            info.features = self._custom_features
        return info

    def build_info(
        self, features: datasets.Features, *, extra: Mapping[str, Any] | None = None
    ) -> datasets.DatasetInfo:
        """``make_info`` of this builder's config with its ``DESCRIPTION``/``CITATION``/``HOMEPAGE``/``LICENSE``."""
        return make_info(
            self.config,
            features,
            description=self.DESCRIPTION,
            citation=self.CITATION,
            homepage=self.HOMEPAGE,
            license=self.LICENSE,
            extra=extra,
        )

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:
        """As in ``datasets``, but a bad-input ``ValueError`` raised while writing a split surfaces as itself
        (``datasets`` wraps it in ``DatasetGenerationError``), e.g. NaN features found in a streamed block.
        A cached build whose ``split_file`` changed since (sha256 differs from the recorded one) is
        prepared again."""
        if not self._info_from_source and self._split_file_changed():
            kwargs["download_mode"] = datasets.DownloadMode.FORCE_REDOWNLOAD
        try:
            super().download_and_prepare(*args, **kwargs)
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error.__cause__
            if isinstance(cause, ValueError):
                raise type(cause)(*cause.args) from error
            raise

    def _split_file_changed(self) -> bool:
        """Whether the cached info records a split file whose content differs from the file on disk now."""
        try:
            recipe = split_recipe(self)
        except ValueError:  # no recipe recorded: nothing to compare
            return False
        if recipe.get("method") != "file":
            return False
        path = Path(recipe["split_file"])
        current = split_file_digest(path) if path.exists() else None
        return current != recipe.get("split_file_sha256")

    @abc.abstractmethod
    def _load_source(self) -> SourceData:
        """Open the files of ``self.config.data_dir`` (lazily for large matrices) and check them."""

    @property
    def source(self) -> SourceData:
        """``_load_source()``, computed once, with the empty-label check of the config applied."""
        if self._source is None:
            source = self._load_source()
            if not self.config.allow_empty_labels:
                check_nonempty_labels(source.labels, source=source.labels_source)
            self._source = source
        return self._source

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        if not self._info_from_source:  # the info came from the cache: describe the data about to be written
            self.info = self._source_info()
            self._info_from_source = True
        source = self.source
        splits = make_splits(
            self.config,
            source.labels,
            label_names=source.label_names,
            index=source.index,
            dropped=source.dropped,
        )
        return [datasets.SplitGenerator(name=name, gen_kwargs={"rows": splits[name]}) for name in SPLITS]

    def _generate_examples(self, rows: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """One example per source row of the split (used by ``as_streaming_dataset``)."""
        yield from generate_examples(self.source, rows, chunk_rows=self.config.chunk_rows)

    def _generate_tables(self, rows: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
        """The same rows as ``_generate_examples``, one Arrow table per source block (used to prepare)."""
        schema = self.info.features.arrow_schema
        for selected, block in iter_blocks(self.source, rows, chunk_rows=self.config.chunk_rows):
            yield int(selected[0]), block_to_table(block, self.info.features, schema)

    def _prepare_split_single(
        self,
        gen_kwargs: dict,
        fpath: str,
        file_format: str,
        max_shard_size: int,
        split_info: Any,
        job_id: int,
    ) -> Iterator[tuple[int, bool, Any]]:
        # Private-API override, on purpose (checked against datasets 5.2). Builders must be
        # GeneratorBasedBuilders, whose writer encodes one example at a time: every float of a 4096-d row
        # becomes a Python object (~0.5 us each), i.e. minutes for NUS-WIDE-sized inputs. datasets has no
        # public hook that lets a GeneratorBasedBuilder write Arrow tables (the public table path,
        # ArrowBasedBuilder, is a sibling class, not a GeneratorBasedBuilder), so this hands the writing to
        # ArrowBasedBuilder's writer, which consumes _generate_tables; split_info (passed by
        # GeneratorBasedBuilder._prepare_split) is not an argument of the Arrow writer. If an upgrade
        # renames or stops calling this method, preparing would silently fall back to the per-example path:
        # test_prepare_writes_arrow_blocks_not_examples (tests/dataset_scripts) fails then, as does every
        # prepare test if the Arrow writer's arguments change.
        yield from datasets.ArrowBasedBuilder._prepare_split_single(
            self,
            gen_kwargs=gen_kwargs,
            fpath=fpath,
            file_format=file_format,
            max_shard_size=max_shard_size,
            job_id=job_id,
        )


def iter_blocks(
    source: SourceData, rows: np.ndarray, *, chunk_rows: int = 4096
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``(positions, columns)`` for the sorted source ``rows``, one pair per block of ``chunk_rows`` rows.

    ``positions`` are the source positions of the block's rows; ``columns`` has the keys ``index`` (n,)
    int64 (``source.index`` of those rows), ``image_features``/``text_features`` (n, D) float32 when
    present, ``labels`` (n, L) int8, ``label_ids`` (list of n arrays), ``text``/``image`` (lists) when
    present. NaN/inf features raise ``ValueError`` naming the file, field, source row and column.
    """
    matrices = {name: getattr(source, name) for name in ("image_features", "text_features")}
    matrices = {name: matrix for name, matrix in matrices.items() if matrix is not None}
    for start, stop, selected in iter_row_blocks(source.num_rows, rows, chunk_rows):
        block: dict[str, Any] = {"index": selected if source.index is None else source.index[selected]}
        for name, matrix in matrices.items():
            values = matrix.read_rows(start, stop, selected - start)
            check_finite(values, source=f"{matrix.source} ({name})", rows=selected)
            block[name] = values.astype(np.float32, copy=False)
        if source.images is not None:
            block["image"] = [source.images[row] for row in selected.tolist()]
        if source.texts is not None:
            block["text"] = [source.texts[row] for row in selected.tolist()]
        labels = source.labels[selected]
        hit_rows, hit_cols = np.nonzero(labels)
        block["labels"] = labels
        block[LABEL_IDS_COLUMN] = np.split(hit_cols, np.searchsorted(hit_rows, np.arange(1, len(selected))))
        yield selected, block


def generate_examples(
    source: SourceData, rows: np.ndarray, *, chunk_rows: int = 4096
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(source position, example)`` pairs of the sorted ``rows``, read block by block (see ``iter_blocks``)."""
    for selected, block in iter_blocks(source, rows, chunk_rows=chunk_rows):
        for j, row in enumerate(selected.tolist()):
            yield row, {name: values[j] for name, values in block.items()}


def block_to_table(block: dict[str, Any], features: datasets.Features, schema: pa.Schema) -> pa.Table:
    """A block from ``iter_blocks`` as an Arrow table of ``features`` (vectorized, no per-value objects)."""
    columns = {}
    for name in features:
        values = block[name]
        if name == LABEL_IDS_COLUMN:
            offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in values])]).astype(np.int32)
            flat = np.concatenate(values).astype(np.int64)
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        elif isinstance(values, np.ndarray) and values.ndim == 2:  # fixed-length float32 / int8 rows
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        elif name == "image":
            encoded = [features[name].encode_example(value) for value in values]
            columns[name] = pa.array(encoded, type=features[name].pa_type)
        else:
            columns[name] = pa.array(values)
    return pa.Table.from_pydict(columns).cast(schema)
