"""A user's own pre-extracted image/text features and labels, read from a folder.

Expected ``data_dir`` layouts (row ``i`` of every array is pair ``i``)::

    data_dir/                                  # layout A: three .npy files (memory-mapped, streamed)
        image_features.npy    (N, Di) float    e.g. 4096-d CNN features
        text_features.npy     (N, Dt) float    e.g. bag-of-words
        labels.npy            (N, L) 0/1 multi-hot, or (N,) integer class ids (0-based -> one-hot)
        splits.json           optional {"train": [...], "validation": [...], "query": [...],
                              "database": [...]} of row indices (database optional: all non-query;
                              a given database may overlap query, e.g. query = database = test)
        label_names.txt       optional, one label name per line (default label_00, label_01, ...),
                              or label_names.json, a JSON list of names

    data_dir/                                  # layout B: one archive holding the three arrays
        features.npz | features.mat | features.h5   (any name; pass data_file= when several exist)
        splits.json, label_names.txt           optional, as above

Archive keys default to ``image_features``, ``text_features``, ``labels`` (options ``image_key``,
``text_key``, ``labels_key``). MATLAB v5 ``.mat`` is read with scipy (in memory); MATLAB v7.3 ``.mat``
(HDF5) is streamed in row blocks with h5py, MATLAB's column-major layout (an ``(N, D)`` matrix stored
as ``(D, N)``) undone automatically (``matlab_layout=`` forces it on or off; plain ``.h5`` files are
read row-major). ``.npz`` members are loaded whole: use ``.npy`` or v7.3 for large data.

Without ``splits.json`` (or ``split_file=``) the splits are random with ``seed``: ``num_query`` and
``num_validation`` (default 10% of rows each) and ``num_train`` (default: every remaining row);
``query_per_class``/``validation_per_class``/``train_per_class`` switch to class-balanced sampling.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .common import (
    CRCGSBuilder,
    CRCGSBuilderConfig,
    MissingFileError,
    SourceData,
    load_array,
    open_matrix,
    require_file,
    to_multi_hot,
)

_CITATION = ""
_DESCRIPTION = (
    "User-provided pre-extracted image features, text features and labels (the 'features' builder of "
    "crcgs), split into train/validation/query/database for cross-modal retrieval."
)
_HOMEPAGE = ""
_LICENSE = "as the user's data"

_NPY_FILES = {"image": "image_features.npy", "text": "text_features.npy", "labels": "labels.npy"}
_ARCHIVE_SUFFIXES = (".npz", ".mat", ".h5", ".hdf5")
_SPLITS_FILE = "splits.json"
_LABEL_NAMES_FILES = ("label_names.txt", "label_names.json")


@dataclasses.dataclass
class FeaturesConfig(CRCGSBuilderConfig):
    """Options of the ``features`` builder (plus the split options of ``CRCGSBuilderConfig``).

    data_file (`str`, *optional*): the archive (.npz/.mat/.h5) in ``data_dir`` (or an absolute path);
        default: the three ``.npy`` files, else the only archive in ``data_dir``.
    image_key, text_key, labels_key (`str`): array names inside the archive.
    matlab_layout (`bool`, *optional*): force MATLAB's transposed HDF5 layout on/off (default: detect).
    num_labels (`int`, *optional*): number of classes for integer class-id labels (default: max id + 1).
    label_names (`tuple[str]`, *optional*): label names (default: ``label_names.txt`` or label_00...).
    """

    data_file: str | None = None
    image_key: str = "image_features"
    text_key: str = "text_features"
    labels_key: str = "labels"
    matlab_layout: bool | None = None
    num_labels: int | None = None
    label_names: tuple[str, ...] | None = None


class FeaturesBuilder(CRCGSBuilder):
    """Builder of the ``features`` dataset (layouts in the module docstring)."""

    BUILDER_CONFIG_CLASS = FeaturesConfig
    BUILDER_CONFIGS = [FeaturesConfig(name="default", description="pre-extracted features from data_dir")]
    DEFAULT_CONFIG_NAME = "default"
    CITATION, DESCRIPTION, HOMEPAGE, LICENSE = _CITATION, _DESCRIPTION, _HOMEPAGE, _LICENSE

    def _info(self):
        config = self.config
        if config.split_file is None and config.data_dir and (Path(config.data_dir) / _SPLITS_FILE).is_file():
            config.split_file = str(Path(config.data_dir) / _SPLITS_FILE)
        return self.build_info(self.source.features())

    def _archive(self) -> Path | None:
        """The archive to read, or None for the three-.npy layout."""
        config = self.config
        if config.data_file:
            return require_file(config.data_dir, config.data_file, dataset="features")
        data_dir = Path(_require_dir(config.data_dir))
        if any((data_dir / name).exists() for name in _NPY_FILES.values()):
            return None
        archives = sorted(
            p for p in data_dir.iterdir() if p.suffix.lower() in _ARCHIVE_SUFFIXES and p.is_file()
        )
        if len(archives) == 1:
            return archives[0]
        if not archives:
            raise MissingFileError(
                f"features: {str(data_dir)!r} holds neither {sorted(_NPY_FILES.values())} nor one "
                f"{'/'.join(_ARCHIVE_SUFFIXES)} archive"
            )
        raise ValueError(
            f"features: several archives in {str(data_dir)!r} ({[p.name for p in archives]}); choose one with data_file="
        )

    def _load_source(self) -> SourceData:
        config = self.config
        archive = self._archive()
        if archive is None:
            paths = {
                kind: require_file(config.data_dir, name, dataset="features")
                for kind, name in _NPY_FILES.items()
            }
            image, text = open_matrix(paths["image"]), open_matrix(paths["text"])
            raw_labels, labels_source = load_array(paths["labels"]), paths["labels"].name
        else:
            layout = config.matlab_layout
            image = open_matrix(archive, config.image_key, matlab_layout=layout)
            text = open_matrix(archive, config.text_key, matlab_layout=layout)
            raw_labels = load_array(archive, config.labels_key, matlab_layout=layout)
            labels_source = f"{archive.name}:{config.labels_key}"
        labels = to_multi_hot(raw_labels, source=labels_source, num_labels=config.num_labels)
        return SourceData(
            labels=labels,
            label_names=self._label_names(labels.shape[1]),
            image_features=image,
            text_features=text,
            labels_source=labels_source,
        )

    def _label_names(self, num_labels: int) -> list[str]:
        config = self.config
        if config.label_names is not None:
            names, origin = list(config.label_names), "label_names option"
        else:
            found = [
                Path(config.data_dir) / n
                for n in _LABEL_NAMES_FILES
                if config.data_dir and (Path(config.data_dir) / n).is_file()
            ]
            if not found:
                return [f"label_{i:02d}" for i in range(num_labels)]
            if len(found) > 1:
                raise ValueError(
                    f"features: both {_LABEL_NAMES_FILES[0]} and {_LABEL_NAMES_FILES[1]} are in {config.data_dir!r}; keep one"
                )
            names, origin = _read_label_names(found[0]), found[0].name
        if len(names) != num_labels:
            raise ValueError(
                f"features: {origin} gives {len(names)} names, expected {num_labels} (one per label column)"
            )
        return names


def _read_label_names(path: Path) -> list[str]:
    """Label names from ``label_names.txt`` (one per line) or ``label_names.json`` (a list of strings)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        names = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"features: {path.name} is not valid JSON ({error})") from error
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"features: {path.name} must be a JSON list of non-empty label names")
    return [n.strip() for n in names]


def _require_dir(data_dir: str | None) -> str:
    """``data_dir`` itself, which must be an existing folder."""
    if data_dir is None:
        raise ValueError(
            "features needs data_dir=<folder with image_features.npy, text_features.npy, labels.npy>"
        )
    if not Path(data_dir).is_dir():
        raise MissingFileError(f"features: data_dir {str(data_dir)!r} is not a folder")
    return data_dir
