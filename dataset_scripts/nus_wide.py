"""NUS-WIDE: 269,648 Flickr images, 1000-d tag bag of words, 81 concepts; the 21 (or 10) most frequent.

Configs ``tc21`` / ``tc10`` (the 21 / 10 most frequent concepts) in each layout:

``tc21``, ``tc10`` (``mat_images``): the cross-modal hashing files of DCMH and successors::

    data_dir/nus-wide-tc21-iall.mat   IAll  224 x 224 x 3 x N uint8 (MATLAB v7.3 / HDF5)
    data_dir/nus-wide-tc21-yall.mat   YAll  N x 1000 tag bag of words
    data_dir/nus-wide-tc21-lall.mat   LAll  N x 21 labels           (tc10: nus-wide-tc10-*.mat, N x 10)

``tc21_features``, ``tc10_features`` (``mat_features``): ``YAll``/``LAll`` plus pre-extracted image
features in ``image_features_file`` (default ``nus-wide-tc21-xall.mat``, key ``XAll``).

``tc21_official``, ``tc10_official``: the NUS distribution, as zips or extracted in ``data_dir``::

    Groundtruth.zip   .../AllLabels/Labels_<concept>.txt   one 0/1 line per image, 81 concepts
    NUS_WID_Tags.zip  .../AllTags1k.txt                    one line of 1000 0/1 values per image
                      .../TagList1k.txt                    optional: the 1000 tag names

The concepts are the ``num_concepts`` with the most positive images (ties: alphabetical), or the
``concepts`` option; label columns are in decreasing frequency. NUS-WIDE ships no captions and only
image URLs, so the official layout has the tag bag of words as ``text_features`` and needs
pre-extracted image features for its image modality: ``image_features_file`` (default
``image_features.npy``; or .mat/.h5 with ``image_features_key``), one row per line of ``AllTags1k.txt``. ``index`` is the image's line in ``AllTags1k.txt``.

Pairs with an empty bag of words are dropped in every layout; pairs with no label among the chosen
concepts are KEPT, as the CRCGS release keeps them (``process_data.py`` drops only empty bags of
words): they are never drawn into query/validation/train, so they sit in the database as items no
query finds relevant (``split_recipe`` records ``unlabelled_rows_kept``). Splits are class-balanced
(docs/METHOD.md), by the release's sampler (``_splits.class_balanced_splits``): query, then validation,
then train, each pass visiting the concepts from the rarest up and drawing 100 / 100 / 500 pairs per
concept uniformly among the remaining pairs that carry it (2,100 / 2,100 / 10,500 for tc21); options
``query_per_class``, ``validation_per_class``, ``train_per_class``; the database is every non-query
pair. ``split_file`` may also be a folder holding the release's ``*_data_list.npy`` files, which index
the rows of the original files as ``index`` does.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re

import numpy as np

from ._benchmark import BenchmarkBuilder, BenchmarkConfig, LoadedSource
from ._raw_formats import RawFiles, printable, read_integer_matrix, read_lines
from .common import ArrayRows, SourceData, check_row_counts, open_matrix, require_file

_CITATION = """\
@inproceedings{chua2009nuswide,
  title={NUS-WIDE: A Real-World Web Image Database from National University of Singapore},
  author={Chua, Tat-Seng and Tang, Jinhui and Hong, Richang and Li, Haojie and Luo, Zhiping and Zheng, Yantao},
  booktitle={ACM International Conference on Image and Video Retrieval (CIVR)},
  year={2009}
}"""
_DESCRIPTION = (
    "NUS-WIDE for cross-modal retrieval: Flickr images, a 1000-d tag bag of words and the 21 (or 10) most "
    "frequent of its 81 concepts as multi-hot labels; pairs without tag dropped, pairs without label kept in "
    "the database; class-balanced query/validation/train splits drawn from the rarest concept up."
)
_HOMEPAGE = "https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html"
_LICENSE = "Research use; images under their Flickr licenses."

_LABEL_FILE = re.compile(r"Labels_(.+)\.txt")


@dataclasses.dataclass
class NusWideConfig(BenchmarkConfig):
    """NUS-WIDE options (see the module docstring).

    num_concepts (`int`, defaults to 21): the most frequent concepts to keep (the LAll width for .mat).
    concepts (`tuple[str]`, *optional*): explicit concepts for the official layout instead.
    labels_archive (`str`, defaults to ``"Groundtruth.zip"``), tags_archive (`str`, defaults to
        ``"NUS_WID_Tags.zip"``): where the official files are (zip, or extracted in ``data_dir``).
    tags_file (`str`, defaults to ``"AllTags1k.txt"``), tag_names_file (`str`, defaults to
        ``"TagList1k.txt"``): file names inside them (found in any sub-folder).
    """

    num_concepts: int = 21
    concepts: tuple[str, ...] | None = None
    labels_archive: str = "Groundtruth.zip"
    tags_archive: str = "NUS_WID_Tags.zip"
    tags_file: str = "AllTags1k.txt"
    tag_names_file: str = "TagList1k.txt"
    query_per_class: int | None = 100
    validation_per_class: int | None = 100
    train_per_class: int | None = 500
    allow_empty_labels: bool = True  # unlabelled pairs stay in the database, as in the release


def _config(num: int, layout: str) -> NusWideConfig:
    suffix = {"mat_images": "", "mat_features": "_features", "official": "_official"}[layout]
    prefix = f"nus-wide-tc{num}"
    return NusWideConfig(
        name=f"tc{num}{suffix}",
        layout=layout,
        num_concepts=num,
        images_file=f"{prefix}-iall.mat",
        image_features_file="image_features.npy" if layout == "official" else f"{prefix}-xall.mat",
        text_file=f"{prefix}-yall.mat",
        labels_file=f"{prefix}-lall.mat",
        description=f"the {num} most frequent concepts, {layout} layout",
    )


class NusWide(BenchmarkBuilder):
    """NUS-WIDE builder (layouts and recipe in the module docstring)."""

    BUILDER_CONFIG_CLASS = NusWideConfig
    BUILDER_CONFIGS = [
        _config(num, layout) for num in (21, 10) for layout in ("mat_images", "mat_features", "official")
    ]
    DEFAULT_CONFIG_NAME = "tc21"
    DATASET = "nus_wide"
    CITATION, DESCRIPTION, HOMEPAGE, LICENSE = _CITATION, _DESCRIPTION, _HOMEPAGE, _LICENSE
    DROP_INCOMPLETE_MAT = True
    DROP_UNLABELLED = False

    def _mat_num_labels(self) -> int | None:
        return self.config.num_concepts

    def _load_official(self) -> LoadedSource:
        config = self.config
        features_path = require_file(config.data_dir, config.image_features_file, dataset="nus_wide")
        image_features = open_matrix(
            features_path, config.image_features_key, matlab_layout=config.matlab_layout
        )
        with RawFiles(config.data_dir, config.labels_archive) as groundtruth:
            labels, names, counts = self._read_concepts(groundtruth)
        with RawFiles(config.data_dir, config.tags_archive) as tag_files:
            member = tag_files.find(config.tags_file)
            tags_source = f"{tag_files.location}:{member}"
            with tag_files.open(member) as handle:  # ~540 MB of text: parsed as it streams
                tags = read_integer_matrix(handle, source=tags_source)
            vocabulary = None
            if any(posixpath.basename(m) == config.tag_names_file for m in tag_files.members):
                vocabulary = [
                    printable(tag)
                    for tag in read_lines(tag_files.read_bytes(tag_files.find(config.tag_names_file)))
                ]
                if len(vocabulary) != tags.shape[1]:
                    raise ValueError(
                        f"{config.tag_names_file} lists {len(vocabulary)} tags but {tags_source} has {tags.shape[1]} columns"
                    )
        source = SourceData(
            labels=labels,
            label_names=names,
            image_features=image_features,
            text_features=ArrayRows(tags, source=tags_source),
            labels_source=f"{config.labels_archive} AllLabels",
        )
        facts = {"concepts": names, "concept_counts": counts, "vocabulary": vocabulary}
        return LoadedSource(source=source, facts=facts)

    def _read_concepts(self, groundtruth: RawFiles) -> tuple[np.ndarray, list[str], list[int]]:
        """The (N, k) labels of the chosen concepts, their names and positive counts."""
        config = self.config
        files = {
            match.group(1): member
            for member in groundtruth.members
            if posixpath.basename(posixpath.dirname(member)) == "AllLabels"
            and (match := _LABEL_FILE.fullmatch(posixpath.basename(member)))
        }
        if not files:
            raise ValueError(f"nus_wide: no AllLabels/Labels_<concept>.txt files in {groundtruth.location}")
        names = sorted(files)
        if config.concepts is not None:
            unknown = sorted(set(config.concepts) - set(files))
            if unknown:
                raise ValueError(
                    f"nus_wide: concepts {unknown} have no Labels_<concept>.txt in {groundtruth.location}"
                )
            names = list(config.concepts)
        elif not 1 <= config.num_concepts <= len(names):
            raise ValueError(
                f"nus_wide: num_concepts must be in [1, {len(names)}], got {config.num_concepts}"
            )
        columns = {}
        for name in names:  # one file per concept
            source = f"{groundtruth.location}:{files[name]}"
            columns[source] = read_integer_matrix(
                groundtruth.read_bytes(files[name]), source=source, num_columns=1
            )
        check_row_counts({source: column.shape[0] for source, column in columns.items()})
        stacked = np.concatenate(list(columns.values()), axis=1)
        not_binary = np.flatnonzero(stacked.max(axis=0) > 1)
        if not_binary.size:
            source = list(columns)[not_binary[0]]
            raise ValueError(f"{source}: expected 0/1 values, got {stacked[:, not_binary[0]].max()}")
        labels = stacked.astype(np.int8)
        counts = labels.sum(axis=0, dtype=np.int64)
        order = np.argsort(-counts, kind="stable")  # names sorted: ties alphabetical
        if config.concepts is None:
            order = order[: config.num_concepts]
        return labels[:, order], [names[i] for i in order], counts[order].tolist()
