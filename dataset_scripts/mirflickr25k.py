"""MIRFLICKR-25K: 25,000 Flickr images with their tags and 24 concept labels.

Layouts (``layout`` option; configs of the same names):

``mat_images`` (default config): the cross-modal hashing files of DCMH and successors::

    data_dir/mirflickr25k-iall.mat   IAll  224 x 224 x 3 x 20015 uint8 (MATLAB v7.3 / HDF5)
    data_dir/mirflickr25k-yall.mat   YAll  20015 x 1386 tag bag of words
    data_dir/mirflickr25k-lall.mat   LAll  20015 x 24 labels (columns in the order of CONCEPTS)

``mat_features``: ``YAll``/``LAll`` as above plus pre-extracted image features (e.g. 4096-d VGG fc7)
in ``image_features_file`` (default ``mirflickr25k-xall.mat``, key ``XAll``; any .mat/.h5/.npy).

``official``: the LIACS distribution, zipped or extracted in ``data_dir``::

    mirflickr25k.zip                   mirflickr/im<n>.jpg, mirflickr/meta/tags/tags<n>.txt, n = 1..25000
    mirflickr25k_annotations_v080.zip  <concept>.txt: the numbers n of the images showing the concept

Official recipe: labels from the 24 concept files (the ``*_r1.txt`` "relevant" subsets are NOT used:
they exist for 14 concepts only and are subsets of the plain files); the tag vocabulary is every tag
used by at least ``min_tag_count`` = 20 of the 25,000 images (this is ``mirflickr/doc/common_tags.txt``,
1386 tags); the text is a binary bag of words over it; pairs without label or without a vocabulary tag
are dropped (20,015 pairs, DCMH section 4.1). ``text`` keeps the image's tags (one line each in the
tags file) joined by spaces; ``image`` holds the original JPEG bytes; ``index`` is ``n - 1``. Tags are
decoded losslessly (bytes that are not UTF-8 keep two tags apart; ``_raw_formats.read_lines``) and such
bytes are written as ``\\xNN`` in ``text`` and in the recorded vocabulary.

Splits (docs/METHOD.md): random with ``seed``, 2,000 query, 2,000 validation, 10,000 train; the database is
every non-query pair. Every size is an option.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._bag_of_words import build_bag_of_words
from ._benchmark import BenchmarkBuilder, BenchmarkConfig, LoadedSource
from ._raw_formats import MemberBytes, RawFiles, printable, read_id_list, read_lines
from ._readers import SparseRows
from .common import SourceData

_CITATION = """\
@inproceedings{huiskes2008mir,
  title={The MIR Flickr Retrieval Evaluation},
  author={Huiskes, Mark J. and Lew, Michael S.},
  booktitle={ACM International Conference on Multimedia Information Retrieval (MIR)},
  year={2008}
}
@inproceedings{jiang2017dcmh,
  title={Deep Cross-Modal Hashing},
  author={Jiang, Qing-Yuan and Li, Wu-Jun},
  booktitle={CVPR},
  year={2017}
}"""
_DESCRIPTION = (
    "MIRFLICKR-25K for cross-modal retrieval: Flickr images, their tags as a bag of words over the tags "
    "used at least 20 times (1386 words), and 24 multi-hot concept labels; 20,015 pairs with a label and "
    "a non-empty bag of words."
)
_HOMEPAGE = "https://press.liacs.nl/mirflickr/"
_LICENSE = "Images under their Flickr Creative Commons licenses (mirflickr/meta/license); research use."

# The 24 concepts of mirflickr25k_annotations_v080.zip, in file-name order (the LAll column order).
CONCEPTS: tuple[str, ...] = (
    "animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake", "male",
    "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset", "transport",
    "tree", "water",
)  # fmt: skip


@dataclasses.dataclass
class Mirflickr25kConfig(BenchmarkConfig):
    """MIRFLICKR-25K options (see the module docstring; split sizes are those of docs/METHOD.md).

    images_archive (`str`, defaults to ``"mirflickr25k.zip"``): images and tags (official layout).
    annotations_archive (`str`, defaults to ``"mirflickr25k_annotations_v080.zip"``): concept files.
    num_images (`int`, defaults to 25000): images ``im1.jpg`` .. ``im<num_images>.jpg``.
    concepts (`tuple[str]`): the concept files to read, one label each (default: the 24 CONCEPTS).
    min_tag_count (`int`, defaults to 20): keep tags used by at least this many images.
    """

    images_file: str = "mirflickr25k-iall.mat"
    image_features_file: str = "mirflickr25k-xall.mat"
    text_file: str = "mirflickr25k-yall.mat"
    labels_file: str = "mirflickr25k-lall.mat"
    num_query: int | None = 2000
    num_validation: int | None = 2000
    num_train: int | None = 10000
    images_archive: str = "mirflickr25k.zip"
    annotations_archive: str = "mirflickr25k_annotations_v080.zip"
    num_images: int = 25000
    concepts: tuple[str, ...] = CONCEPTS
    min_tag_count: int = 20


class Mirflickr25k(BenchmarkBuilder):
    """MIRFLICKR-25K builder (layouts and recipe in the module docstring)."""

    BUILDER_CONFIG_CLASS = Mirflickr25kConfig
    BUILDER_CONFIGS = [
        Mirflickr25kConfig(name="mat_images", layout="mat_images", description="DCMH .mat files with images"),
        Mirflickr25kConfig(name="mat_features", layout="mat_features", description="DCMH .mat with features"),
        Mirflickr25kConfig(name="official", layout="official", description="the LIACS zips"),
    ]
    DEFAULT_CONFIG_NAME = "mat_images"
    DATASET = "mirflickr25k"
    CITATION, DESCRIPTION, HOMEPAGE, LICENSE = _CITATION, _DESCRIPTION, _HOMEPAGE, _LICENSE
    MAT_LABEL_NAMES = CONCEPTS

    def _load_official(self) -> LoadedSource:
        config = self.config
        if config.num_images < 1 or config.min_tag_count < 1:
            raise ValueError(
                f"mirflickr25k: num_images and min_tag_count must be >= 1, got {config.num_images}, {config.min_tag_count}"
            )
        numbers = np.arange(1, config.num_images + 1)
        labels = np.zeros((config.num_images, len(config.concepts)), dtype=np.int8)
        with RawFiles(config.data_dir, config.annotations_archive) as annotations:
            for column, concept in enumerate(config.concepts):  # one file per label
                member = annotations.find(f"{concept}.txt")
                ids = read_id_list(
                    annotations.read_bytes(member),
                    source=f"{annotations.location}:{member}",
                    low=1,
                    high=config.num_images,
                )
                labels[ids - 1, column] = 1
        files = RawFiles(config.data_dir, config.images_archive)
        tag_members = [f"mirflickr/meta/tags/tags{n}.txt" for n in numbers.tolist()]
        image_members = [f"mirflickr/im{n}.jpg" for n in numbers.tolist()]
        missing = files.missing(tag_members + image_members)
        if missing:
            raise ValueError(
                f"mirflickr25k: {len(missing)} files missing in {files.location} (first: {missing[:3]}); "
                f"expected tags and images for n = 1..{config.num_images}"
            )
        tags = [read_lines(files.read_bytes(member)) for member in tag_members]
        bow = build_bag_of_words(tags, min_count=config.min_tag_count, frequency="documents")
        images = MemberBytes([files], np.zeros(config.num_images, dtype=np.int64), image_members)
        source = SourceData(
            labels=labels,
            label_names=list(config.concepts),
            text_features=SparseRows(bow.matrix, source=f"{files.location}:mirflickr/meta/tags"),
            texts=[printable(" ".join(doc)) for doc in tags],
            images=images,
            labels_source=f"{config.annotations_archive} concept files",
            index=numbers - 1,
        )
        facts = {"min_tag_count": config.min_tag_count, "vocabulary": [printable(w) for w in bow.vocabulary]}
        return LoadedSource(source=source, facts=facts)
