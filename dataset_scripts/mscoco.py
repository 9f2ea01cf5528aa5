"""MS-COCO for cross-modal retrieval: images, their five captions as a bag of words, 80 object labels.

Configs ``2014`` (default) and ``2017`` read the official distribution, zipped or extracted in
``data_dir``::

    annotations_trainval2014.zip   annotations/instances_{train,val}2014.json  (80 labels)
                                   annotations/captions_{train,val}2014.json   (captions)
    train2014.zip, val2014.zip     train2014/<file_name>, val2014/<file_name>  (images; or the folders)

Recipe: the images of every annotation split listed in ``annotation_splits`` (default train + val,
the hashing literature's pool), in ascending image id. Labels: multi-hot over the 80 categories, in
ascending category id (the ids are not contiguous). Text: every caption is lower-cased, split into
``\\w+`` tokens and stripped of English stop words (``_bag_of_words.ENGLISH_STOP_WORDS``, NLTK's list
written out); the vocabulary is the ``vocab_size`` = 2000 most frequent tokens over all captions (ties
alphabetical); an image's bag of words is 1 for each vocabulary word in ANY of its captions. The
``text`` column is the image's first caption (lowest annotation id) with ``text_mode="first"``, or all
its captions joined by newlines with ``"all"``. Images without a label or without a vocabulary word
are dropped. ``image`` holds the original JPEG bytes; ``index`` is the COCO image id.

``mat_features`` / ``mat_images`` read the hashing-style ``.mat`` layout instead (defaults
``mscoco-{xall,iall,yall,lall}.mat``, keys ``XAll``/``IAll``/``YAll``/``LAll``; no common naming exists
in the field for COCO, so set the file names and keys of your copy). A label matrix with 81 columns is
the CRCGS release's ``label.npy`` layout: its last column is dropped, as the release's loader does
(``split_recipe`` records ``dropped_label_column``), so it never takes part in relevance; rows left
without a label are then an error unless ``allow_empty_labels=True``.

Splits (docs/METHOD.md): random with ``seed``, 5,000 query, 5,000 validation, 10,000 train; the database
is every non-query image. Every size is an option.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._bag_of_words import ENGLISH_STOP_WORDS, build_bag_of_words, tokenize
from ._benchmark import BenchmarkBuilder, BenchmarkConfig, LoadedSource
from ._raw_formats import MemberBytes, RawFiles
from ._readers import SparseRows
from .common import SourceData

_CITATION = """\
@inproceedings{lin2014coco,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro and
          Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  year={2014}
}"""
_DESCRIPTION = (
    "MS-COCO for cross-modal retrieval: images, a bag of words over the 2000 most frequent caption words "
    "(stop words removed) and 80 multi-hot object labels; images without label dropped."
)
_HOMEPAGE = "https://cocodataset.org/"
_LICENSE = "Annotations CC BY 4.0; images under their Flickr licenses (see the COCO terms of use)."

# The 80 category names in ascending category id (the LAll column order assumed for .mat files).
CATEGORIES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


@dataclasses.dataclass
class MscocoConfig(BenchmarkConfig):
    """MS-COCO options (see the module docstring; split sizes are those of docs/METHOD.md).

    year (`str`, defaults to ``"2014"``): ``"2014"`` or ``"2017"``.
    annotation_splits (`tuple[str]`, defaults to ``("train", "val")``): annotation files to pool.
    annotations_archive (`str`, *optional*): default ``annotations_trainval<year>.zip``.
    vocab_size (`int`, defaults to 2000): the most frequent caption words kept.
    remove_stop_words (`bool`, defaults to True): drop English stop words before counting.
    text_mode (`str`, defaults to ``"first"``): ``"first"`` caption or ``"all"`` captions as ``text``.
    """

    layout: str = "official"
    images_file: str = "mscoco-iall.mat"
    image_features_file: str = "mscoco-xall.mat"
    text_file: str = "mscoco-yall.mat"
    labels_file: str = "mscoco-lall.mat"
    num_query: int | None = 5000
    num_validation: int | None = 5000
    num_train: int | None = 10000
    year: str = "2014"
    annotation_splits: tuple[str, ...] = ("train", "val")
    annotations_archive: str = ""
    vocab_size: int = 2000
    remove_stop_words: bool = True
    text_mode: str = "first"


def _read_json(files: RawFiles, member: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """A COCO annotation file, checked to be a JSON object with ``fields``."""
    source = f"{files.location}:{member}"
    try:
        content = json.loads(files.read_bytes(member))
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON ({err})") from err
    missing = [field for field in fields if not isinstance(content, dict) or field not in content]
    if missing:
        raise ValueError(
            f"{source}: missing fields {missing}; expected a COCO annotation file with {list(fields)}"
        )
    return content


def _rows_of(ids: np.ndarray, sorted_ids: np.ndarray, *, source: str, what: str) -> np.ndarray:
    """Positions of ``ids`` in ``sorted_ids``; ValueError naming ``source`` for an unknown id."""
    rows = np.searchsorted(sorted_ids, ids)
    unknown = (rows >= sorted_ids.size) | (sorted_ids[np.minimum(rows, sorted_ids.size - 1)] != ids)
    if unknown.any():
        raise ValueError(f"{source}: annotation refers to unknown {what} {ids[unknown][0]}")
    return rows


class Mscoco(BenchmarkBuilder):
    """MS-COCO builder (layouts and recipe in the module docstring)."""

    BUILDER_CONFIG_CLASS = MscocoConfig
    BUILDER_CONFIGS = [
        MscocoConfig(name="2014", year="2014", description="official 2014 annotations and images"),
        MscocoConfig(name="2017", year="2017", description="official 2017 annotations and images"),
        MscocoConfig(name="mat_features", layout="mat_features", description=".mat with image features"),
        MscocoConfig(name="mat_images", layout="mat_images", description=".mat with images"),
    ]
    DEFAULT_CONFIG_NAME = "2014"
    DATASET = "mscoco"
    CITATION, DESCRIPTION, HOMEPAGE, LICENSE = _CITATION, _DESCRIPTION, _HOMEPAGE, _LICENSE
    MAT_LABEL_NAMES = CATEGORIES

    def _mat_labels(self, labels: np.ndarray, labels_source: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The release's 81-column ``label.npy`` layout: its last column is not one of the 80 categories,
        and the release's loader removes it (``label[:, :-1]``); so is it here, before any relevance."""
        if labels.shape[1] != len(CATEGORIES) + 1:
            return labels, {}
        return labels[:, : len(CATEGORIES)], {
            "dropped_label_column": len(CATEGORIES),
            "dropped_label_column_positives": int(labels[:, -1].sum()),
        }

    def _load_official(self) -> LoadedSource:
        config = self.config
        if config.text_mode not in ("first", "all"):
            raise ValueError(f"mscoco: text_mode must be 'first' or 'all', got {config.text_mode!r}")
        if config.vocab_size < 1 or not config.annotation_splits:
            raise ValueError(
                f"mscoco: need vocab_size >= 1 and annotation splits, got {config.vocab_size}, {config.annotation_splits}"
            )
        with RawFiles(
            config.data_dir, config.annotations_archive or f"annotations_trainval{config.year}.zip"
        ) as ann:
            instances = {
                split: _read_json(
                    ann,
                    f"annotations/instances_{split}{config.year}.json",
                    ("images", "annotations", "categories"),
                )
                for split in config.annotation_splits
            }
            captions = {
                split: _read_json(
                    ann, f"annotations/captions_{split}{config.year}.json", ("images", "annotations")
                )
                for split in config.annotation_splits
            }
            location = ann.location
        try:
            ids, file_names, split_of = self._images(instances, location)
            labels, names = self._labels(instances, ids, location)
            bow, texts = self._captions(captions, ids, location)
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{location}: a COCO image/annotation/category record is malformed or lacks a field ({err!r})"
            ) from err
        image_files = [
            RawFiles(config.data_dir, f"{split}{config.year}.zip") for split in config.annotation_splits
        ]
        members = [
            f"{config.annotation_splits[s]}{config.year}/{name}"
            for s, name in zip(split_of, file_names, strict=True)
        ]
        images = MemberBytes(image_files, split_of, members)
        missing = images.missing()
        if missing:
            raise ValueError(f"mscoco: {len(missing)} image files missing (first: {missing[:3]})")
        source = SourceData(
            labels=labels,
            label_names=names,
            text_features=SparseRows(bow.matrix, source=f"{location}:captions"),
            texts=texts,
            images=images,
            labels_source=f"{location}:instances",
            index=ids,
        )
        return LoadedSource(
            source=source, facts={"vocabulary": bow.vocabulary, "text_mode": config.text_mode}
        )

    def _images(self, instances: dict[str, dict], location: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Image ids (ascending), file names and annotation-split number of every image."""
        ids, names, split_of = [], [], []
        for number, content in enumerate(instances.values()):
            ids.extend(image["id"] for image in content["images"])
            names.extend(image["file_name"] for image in content["images"])
            split_of.extend([number] * len(content["images"]))
        ids_array = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids_array, kind="stable")
        ids_array = ids_array[order]
        duplicated = ids_array[1:][ids_array[1:] == ids_array[:-1]]
        if duplicated.size:
            raise ValueError(f"{location}: image id {duplicated[0]} appears in several annotation splits")
        return (
            ids_array,
            np.asarray(names, dtype=object)[order].tolist(),
            np.asarray(split_of, dtype=np.int64)[order],
        )

    def _labels(
        self, instances: dict[str, dict], ids: np.ndarray, location: str
    ) -> tuple[np.ndarray, list[str]]:
        """(N, 80) multi-hot labels over the categories in ascending id, and their names."""
        categories = None
        image_ids, category_ids = [], []
        for split, content in instances.items():
            listed = sorted((c["id"], c["name"]) for c in content["categories"])
            if categories is None:
                categories = listed
            elif listed != categories:
                raise ValueError(
                    f"{location}: the categories of instances_{split} differ from the first file's"
                )
            image_ids.extend(a["image_id"] for a in content["annotations"])
            category_ids.extend(a["category_id"] for a in content["annotations"])
        category_array = np.asarray([c[0] for c in categories], dtype=np.int64)
        rows = _rows_of(
            np.asarray(image_ids, dtype=np.int64), ids, source=f"{location}:instances", what="image id"
        )
        columns = _rows_of(
            np.asarray(category_ids, dtype=np.int64),
            category_array,
            source=f"{location}:instances",
            what="category id",
        )
        labels = np.zeros((ids.size, category_array.size), dtype=np.int8)
        labels[rows, columns] = 1
        return labels, [c[1] for c in categories]

    def _captions(self, captions: dict[str, dict], ids: np.ndarray, location: str):
        """The image-level bag of words (any caption) and the ``text`` column."""
        config = self.config
        image_ids, caption_ids, texts = [], [], []
        for content in captions.values():
            image_ids.extend(a["image_id"] for a in content["annotations"])
            caption_ids.extend(a["id"] for a in content["annotations"])
            texts.extend(a["caption"] for a in content["annotations"])
        rows = _rows_of(
            np.asarray(image_ids, dtype=np.int64), ids, source=f"{location}:captions", what="image id"
        )
        order = np.lexsort((np.asarray(caption_ids, dtype=np.int64), rows))  # by image, then caption id
        rows, texts = rows[order], np.asarray(texts, dtype=object)[order]
        stop_words = ENGLISH_STOP_WORDS if config.remove_stop_words else frozenset()
        bow = build_bag_of_words(
            tokenize(texts.tolist(), stop_words), max_size=config.vocab_size, frequency="tokens", binary=False
        )
        # (images x captions) 0/1 grouping matrix: an image's words are those of any of its captions.
        grouping = sp.csr_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, np.arange(rows.size))), (ids.size, rows.size)
        )
        image_bow = (grouping @ bow.matrix).tocsr()
        image_bow.data[:] = 1.0
        starts = np.searchsorted(rows, np.arange(ids.size + 1))
        if config.text_mode == "first":
            first = np.full(ids.size, "", dtype=object)
            has_caption = starts[1:] > starts[:-1]
            first[has_caption] = texts[starts[:-1][has_caption]]
            image_texts = [text.strip() for text in first.tolist()]
        else:
            image_texts = ["\n".join(t.strip() for t in group) for group in np.split(texts, starts[1:-1])]
        return dataclasses.replace(bow, matrix=image_bow), image_texts
