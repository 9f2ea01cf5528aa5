"""crcgs datasets as ``datasets`` builders, and the one loader the trainer, the evaluator and users call.

``datasets`` 5 no longer runs loading scripts (``load_dataset("x.py")`` raises), so every dataset is a
``GeneratorBasedBuilder`` class instantiated directly; ``load_crcgs_dataset`` does that::

    from dataset_scripts import load_crcgs_dataset, label_names

    ds = load_crcgs_dataset("synthetic")                                  # embedded default, no files
    ds = load_crcgs_dataset("features", data_dir="my_features/", num_query=500, num_validation=500)
    ds = load_crcgs_dataset("mirflickr25k", data_dir="/data/mirflickr")
    ds["train"], ds["validation"], ds["query"], ds["database"]             # database = all non-query rows
    label_names(ds)

The same builders can be used by hand: ``B(config_name=..., data_dir=..., cache_dir=..., **options)``,
``.download_and_prepare()``, ``.as_dataset()``. Prepared data is cached as Arrow files under
``cache_dir`` (default: the ``datasets`` cache); a change of options, data_dir or builder code gives a
new cache folder. A cached load reads only that folder (``dataset_info.json`` holds the features, label
names and split recipe), never the source files: after editing them in place, pass
``download_mode="force_redownload"``. To publish prepared data, ``ds.push_to_hub(repo_id)`` uploads Parquet (needs network
and a token; offline it raises ``OfflineModeIsEnabled``), or ``ds[split].to_parquet(path)`` writes the
files the Hub would hold: ``Dataset.from_parquet(path)`` restores the same features, label names
included.
"""

from __future__ import annotations

import importlib
from typing import Any

import datasets

from .common import label_names, split_recipe

__all__ = ["DATASET_NAMES", "get_builder_class", "label_names", "load_crcgs_dataset", "split_recipe"]

# name -> module under dataset_scripts; each module defines exactly one CRCGSBuilder subclass.
_MODULES: dict[str, str] = {
    "mirflickr25k": "mirflickr25k",
    "nus_wide": "nus_wide",
    "mscoco": "mscoco",
    "features": "features",
    "synthetic": "synthetic",
}
DATASET_NAMES: tuple[str, ...] = tuple(_MODULES)


def get_builder_class(name: str) -> type[datasets.GeneratorBasedBuilder]:
    """The builder class registered under ``name``, imported on first use."""
    if name not in _MODULES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASET_NAMES)}")
    module_name = f"{__name__}.{_MODULES[name]}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ValueError(f"dataset {name!r}: its builder module {module_name} is not available") from error
    from .common import CRCGSBuilder

    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, CRCGSBuilder) and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise ValueError(
            f"{module_name} must define exactly one CRCGSBuilder subclass, found {[c.__name__ for c in classes]}"
        )
    return classes[0]


def load_crcgs_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    config_name: str | None = None,
    cache_dir: str | None = None,
    download_mode: str | datasets.DownloadMode | None = None,
    **options: Any,
) -> datasets.DatasetDict:
    """Prepare (or reuse from cache) and return the ``train``/``validation``/``query``/``database`` splits.

    Args:
        name: one of ``"mirflickr25k"``, ``"nus_wide"``, ``"mscoco"``, ``"features"``, ``"synthetic"``.
        data_dir: folder with the dataset's files (layout in each builder module's docstring); not used
            by ``"synthetic"``.
        config_name: a named BuilderConfig of that builder (default: its default config).
        cache_dir: where ``datasets`` keeps the prepared Arrow files.
        download_mode: e.g. ``"force_redownload"`` to rebuild after editing the source files in place.
        **options: overrides of config fields, e.g. ``seed``, ``num_query``, ``split_file``.
    """
    builder_class = get_builder_class(name)
    builder = builder_class(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **options)
    builder.download_and_prepare(download_mode=download_mode)
    return builder.as_dataset()
