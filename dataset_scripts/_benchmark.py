"""The base of the three benchmark builders (MIRFLICKR-25K, NUS-WIDE, MS-COCO).

Each benchmark comes in up to three layouts (``BenchmarkConfig.layout``):

``"mat_images"``
    The cross-modal hashing layout of DCMH (Jiang & Li, CVPR 2017) and its successors: three MATLAB
    files ``<prefix>-iall.mat`` (``IAll``, images, H x W x C x N uint8, v7.3/HDF5), ``<prefix>-yall.mat``
    (``YAll``, N x V bag of words) and ``<prefix>-lall.mat`` (``LAll``, N x L labels). Images become
    the ``image`` column (PNG, encoded a block at a time).
``"mat_features"``
    The same with a matrix of pre-extracted image features (e.g. 4096-d VGG fc7) instead of ``IAll``
    (``image_features_file`` / ``image_features_key``), as the ``image_features`` column.
``"official"``
    The dataset's own distribution, parsed by the subclass (``_load_official``).

File names and keys are options, so other packagings of the same arrays load too (one file holding
all three keys: give the same name three times). MATLAB v5 files are read with scipy, v7.3 with h5py
(MATLAB's column-major layout undone; ``matlab_layout`` forces it on or off); plain row-major ``.h5``
files work too (images ``(N, H, W, C)`` or ``(N, C, H, W)``), and ``.npy`` for feature matrices.

Rows with an empty bag of words, and rows with no label unless the builder keeps them
(``DROP_UNLABELLED = False``: NUS-WIDE, whose release keeps them in the database), are dropped when
``drop_incomplete`` is on (default: on for the official layouts and for NUS-WIDE; off for the prepared
MIRFLICKR and COCO ``.mat`` files, where an unlabelled row is an error unless ``allow_empty_labels=True``).
The ``index`` column is always the row (or COCO image id) in the ORIGINAL files, before dropping, and
a ``split_file`` lists those values (``SourceData.dropped`` says why a row is missing).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, ClassVar

import datasets
import numpy as np

from . import _bag_of_words, _benchmark_readers, _raw_formats
from ._benchmark_readers import MatlabImages, nonempty_rows, subset_source
from .common import (
    CRCGSBuilder,
    CRCGSBuilderConfig,
    SourceData,
    load_array,
    open_matrix,
    require_file,
    to_multi_hot,
)

LAYOUTS: tuple[str, ...] = ("mat_images", "mat_features", "official")


@dataclasses.dataclass
class BenchmarkConfig(CRCGSBuilderConfig):
    """Options shared by the benchmark builders (plus the split options of ``CRCGSBuilderConfig``).

    layout (`str`, defaults to ``"mat_images"``): ``"mat_images"``, ``"mat_features"`` or ``"official"``.
    images_file, images_key (`str`): the MATLAB image array (``*-iall.mat``, ``IAll``).
    image_features_file, image_features_key (`str`): pre-extracted image features for ``"mat_features"``.
    text_file, text_key (`str`): the bag-of-words matrix (``*-yall.mat``, ``YAll``).
    labels_file, labels_key (`str`): the label matrix (``*-lall.mat``, ``LAll``).
    matlab_layout (`bool`, *optional*): force MATLAB's transposed HDF5 layout on/off (default: detect).
    label_names (`tuple[str]`, *optional*): names of the label columns of the ``.mat`` layouts.
    drop_incomplete (`bool`, *optional*): drop rows with an empty BoW and (except NUS-WIDE) rows with no
        label (default: see module).
    image_block_rows (`int`, defaults to 64): images decoded per block while preparing.
    chunk_rows (`int`, defaults to 1024): rows per written block (fewer than the base default: a block
        of encoded 224 x 224 images is ~0.1 MB a row).
    """

    layout: str = "mat_images"
    images_file: str = ""
    images_key: str = "IAll"
    image_features_file: str = ""
    image_features_key: str = "XAll"
    text_file: str = ""
    text_key: str = "YAll"
    labels_file: str = ""
    labels_key: str = "LAll"
    matlab_layout: bool | None = None
    label_names: tuple[str, ...] | None = None
    drop_incomplete: bool | None = None
    image_block_rows: int = 64
    chunk_rows: int = 1024


@dataclasses.dataclass
class LoadedSource:
    """A builder's rows before dropping (``source.index``: original ids) and facts to record."""

    source: SourceData
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)


class BenchmarkBuilder(CRCGSBuilder):
    """Shared ``_info``/``_load_source`` of the benchmark builders; subclasses give metadata and
    ``_load_official``. File I/O lives in plain modules (``_raw_formats``, ``_benchmark_readers``):
    ``datasets`` patches ``open``/``numpy.load`` in builder modules."""

    BUILDER_CONFIG_CLASS = BenchmarkConfig
    DATASET: ClassVar[str] = ""
    MAT_LABEL_NAMES: ClassVar[tuple[str, ...] | None] = None  # column names of LAll, when known
    DROP_INCOMPLETE_MAT: ClassVar[bool] = False
    DROP_UNLABELLED: ClassVar[bool] = True  # False: dropping removes only rows with an empty bag of words
    SOURCE_MODULES = (sys.modules[__name__], _bag_of_words, _benchmark_readers, _raw_formats)

    def __init__(self, *args: Any, **kwargs: Any):
        self._facts: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        features = self.source.features()  # reads the source first: it fills self._facts
        return self.build_info(
            features, extra={"dataset": self.DATASET, "config": self.config.name, **self._facts}
        )

    def _load_official(self) -> LoadedSource:
        raise ValueError(f"{self.DATASET}: this builder has no official layout; use layout='mat_images'")

    def _load_source(self) -> SourceData:
        config = self.config
        if config.layout not in LAYOUTS:
            raise ValueError(f"{self.DATASET}: layout must be one of {list(LAYOUTS)}, got {config.layout!r}")
        if config.layout == "official":
            loaded = self._load_official()
            drop = True if config.drop_incomplete is None else config.drop_incomplete
        else:
            loaded = self._load_mat()
            drop = self.DROP_INCOMPLETE_MAT if config.drop_incomplete is None else config.drop_incomplete
        source = loaded.source
        facts = {"layout": config.layout, "rows_in_files": source.num_rows, **loaded.facts}
        if drop:
            has_label = source.labels.any(axis=1)
            has_text = nonempty_rows(source.text_features, chunk_rows=config.chunk_rows)
            index = np.arange(source.num_rows, dtype=np.int64) if source.index is None else source.index
            if self.DROP_UNLABELLED:
                no_label, empty_text = ~has_label, has_label & ~has_text
                facts.update(dropped_without_label=int(no_label.sum()))
            else:
                no_label, empty_text = np.zeros_like(has_label), ~has_text
                facts.update(unlabelled_rows_kept=int((has_text & ~has_label).sum()))
            facts.update(dropped_empty_text=int(empty_text.sum()))
            dropped = {"no label": index[no_label], "empty bag of words": index[empty_text]}
            source = dataclasses.replace(
                subset_source(source, np.flatnonzero(~(no_label | empty_text))), dropped=dropped
            )
        facts["rows"] = source.num_rows
        self._facts = facts
        return source

    def _load_mat(self) -> LoadedSource:
        """The ``mat_images`` / ``mat_features`` layouts (see the module docstring)."""
        config, dataset = self.config, self.DATASET
        labels_path = require_file(config.data_dir, config.labels_file, dataset=dataset)
        labels_source = f"{labels_path.name}:{config.labels_key}"
        labels, facts = self._mat_labels(
            to_multi_hot(
                load_array(labels_path, config.labels_key, matlab_layout=config.matlab_layout),
                source=labels_source,
                num_labels=self._mat_num_labels(),
            ),
            labels_source,
        )
        text = open_matrix(
            require_file(config.data_dir, config.text_file, dataset=dataset),
            config.text_key,
            matlab_layout=config.matlab_layout,
        )
        images = image_features = None
        if config.layout == "mat_images":
            images = MatlabImages(
                config.data_dir,
                config.images_file,
                config.images_key,
                dataset=dataset,
                block_rows=config.image_block_rows,
                matlab_layout=config.matlab_layout,
            )
        else:
            image_features = open_matrix(
                require_file(config.data_dir, config.image_features_file, dataset=dataset),
                config.image_features_key,
                matlab_layout=config.matlab_layout,
            )
        source = SourceData(
            labels=labels,
            label_names=self._mat_label_names(labels.shape[1], labels_source),
            image_features=image_features,
            text_features=text,
            images=images,
            labels_source=labels_source,
        )
        return LoadedSource(source=source, facts=facts)

    def _mat_num_labels(self) -> int | None:
        """The number of label columns the ``.mat`` layouts must have (None: any)."""
        return None

    def _mat_labels(self, labels: np.ndarray, labels_source: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The label matrix of the ``.mat`` layouts as used, and facts to record (default: as read)."""
        return labels, {}

    def _mat_label_names(self, num_labels: int, labels_source: str) -> list[str]:
        names = self.config.label_names
        if names is None:
            known = self.MAT_LABEL_NAMES
            if known is not None and len(known) == num_labels:
                return list(known)
            return [f"label_{i:02d}" for i in range(num_labels)]
        if len(names) != num_labels:
            raise ValueError(
                f"{self.DATASET}: label_names gives {len(names)} names, but {labels_source} has {num_labels} columns"
            )
        return list(names)
