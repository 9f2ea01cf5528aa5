"""Row readers the benchmark builders add to ``_readers.py``'s: row subsets, MATLAB images.

A plain module (no builder class), so ``datasets``' streaming patches of ``open``/``numpy.load`` do not
reach it. Each reader satisfies ``RowMatrix`` (``source``, ``shape``, ``dtype``, ``read_rows(start, stop)``) or
is a lazy sequence of ``datasets.Image`` inputs that ``common.generate_examples`` indexes row by row in
ascending order; images are read a block at a time and only the current block is kept in memory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._readers import RowMatrix, is_matlab_v73, load_array, require_file
from .common import SourceData


class SubsetRows:
    """Rows ``keep`` (sorted source rows) of another ``RowMatrix``; row ``i`` here is ``keep[i]`` there.

    A block ``start:stop`` (optionally only its rows ``local``) reads the one contiguous span of the
    underlying matrix that holds them and selects from it, so a filtered matrix is still read in one
    ascending pass.
    """

    def __init__(self, matrix: RowMatrix, keep: np.ndarray):
        keep = np.asarray(keep, dtype=np.int64)
        if keep.size and (np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= matrix.shape[0]):
            raise ValueError(
                f"{matrix.source}: row subset must be strictly increasing rows in [0, {matrix.shape[0]})"
            )
        self.matrix, self.keep = matrix, keep
        self.source, self.dtype = matrix.source, matrix.dtype
        self.shape = (int(keep.size), int(matrix.shape[1]))

    def read_rows(self, start: int, stop: int, local: np.ndarray | None = None) -> np.ndarray:
        rows = self.keep[start:stop] if local is None else self.keep[start:stop][local]
        if rows.size == 0:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        return self.matrix.read_rows(int(rows[0]), int(rows[-1]) + 1, rows - rows[0])


def nonempty_rows(matrix: RowMatrix, *, chunk_rows: int = 4096) -> np.ndarray:
    """Boolean mask of the rows of ``matrix`` with at least one non-zero entry, read block by block."""
    blocks = [
        np.any(matrix.read_rows(start, start + chunk_rows) != 0, axis=1)
        for start in range(0, matrix.shape[0], chunk_rows)
    ]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=bool)


def encode_png(image: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of one ``(H, W, 3)`` or ``(H, W)`` uint8 image (level 1: fast, still lossless)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


class MatlabImages(Sequence):
    """The images of an ``IAll``-style array as a lazy sequence of PNG bytes.

    MATLAB holds the images as ``H x W x C x N`` (``C`` = 3 or 1, uint8). A v7.3 ``.mat`` is HDF5 and
    column-major, so h5py sees the reversed shape ``(N, C, W, H)``; a row block ``[s:e]`` is read from
    HDF5 as ``(e - s, C, W, H)`` and transposed to ``(e - s, H, W, C)`` (``transpose(0, 3, 2, 1)``,
    the layout DCMH-style loaders undo). A v5 ``.mat`` is loaded whole by scipy as ``(H, W, C, N)``.
    A plain ``.h5`` (no MATLAB header or ``MATLAB_class``; or ``matlab_layout=False``) is row-major:
    ``(N, H, W, C)``, or ``(N, C, H, W)`` when only axis 1 has 1 or 3 entries.

    ``rows`` selects and orders the source images (strictly increasing); item ``i`` of the sequence
    is source image ``rows[i]``. Only ``block_rows`` decoded images are in memory at a time.
    """

    def __init__(
        self,
        data_dir: str | None,
        file: str,
        key: str,
        *,
        dataset: str,
        rows: np.ndarray | None = None,
        block_rows: int = 64,
        matlab_layout: bool | None = None,
    ):
        import h5py

        path = require_file(data_dir, file, dataset=dataset)
        self.source = f"{os.path.basename(path)}:{key}"
        self._h5 = None
        if h5py.is_hdf5(path):
            self._h5 = h5py.File(path, "r")
            if key not in self._h5:
                available = sorted(k for k in self._h5.keys() if not k.startswith("#"))
                self._h5.close()
                raise ValueError(f"{path.name}: no dataset named {key!r}; available keys: {available}")
            self._data: Any = self._h5[key]
            if matlab_layout is None:
                matlab_layout = is_matlab_v73(path) or "MATLAB_class" in self._data.attrs
            shape = tuple(self._data.shape)
            if matlab_layout:
                self._axes, expected = (0, 3, 2, 1), "MATLAB images of shape H x W x C x N"
                valid = len(shape) == 4 and shape[1] in (1, 3)
                shape = shape[::-1]
            else:
                expected = "images of shape (N, H, W, C) or (N, C, H, W)"
                valid = len(shape) == 4 and (shape[3] in (1, 3) or shape[1] in (1, 3))
                self._axes = (0, 1, 2, 3) if valid and shape[3] in (1, 3) else (0, 2, 3, 1)
        else:
            self._data = load_array(path, key)
            shape, self._axes = tuple(self._data.shape), None
            expected = "MATLAB images of shape H x W x C x N"
            valid = len(shape) == 4 and shape[2] in (1, 3)
        if not valid:
            raise ValueError(f"{self.source}: expected {expected} with C in (1, 3), got {shape}")
        if self._data.dtype != np.uint8:
            raise ValueError(f"{self.source}: expected uint8 pixels, got dtype {self._data.dtype}")
        self.num_source_rows = int(self._data.shape[0] if self._h5 is not None else shape[3])
        self.rows = np.arange(self.num_source_rows) if rows is None else np.asarray(rows, dtype=np.int64)
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.block_rows = block_rows
        self._block_index = -1
        self._block: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> MatlabImages:
        """The same images restricted to positions ``keep`` (strictly increasing) of this sequence."""
        clone = object.__new__(MatlabImages)
        clone.__dict__.update(self.__dict__)
        clone.rows = self.rows[np.asarray(keep, dtype=np.int64)]
        clone._block_index, clone._block = -1, None
        return clone

    def __len__(self) -> int:
        return int(self.rows.size)

    def _read_source(self, rows: np.ndarray) -> np.ndarray:
        """Source images ``rows`` (sorted) as ``(n, H, W, C)`` uint8, from one contiguous span."""
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if self._h5 is not None:
            span = self._data[lo:hi].transpose(self._axes)  # e.g. MATLAB (n, C, W, H) -> (n, H, W, C)
        else:
            span = self._data[..., lo:hi].transpose(3, 0, 1, 2)  # (H, W, C, n) -> (n, H, W, C)
        return span[rows - lo]

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range [0, {len(self)})")
        block = index // self.block_rows
        if block != self._block_index:
            start = block * self.block_rows
            self._block = self._read_source(self.rows[start : start + self.block_rows])
            self._block_index = block
        image = self._block[index - block * self.block_rows]
        if image.shape[-1] == 1:
            image = image[..., 0]
        return {"bytes": encode_png(np.ascontiguousarray(image)), "path": None}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def subset_source(source: SourceData, keep: np.ndarray) -> SourceData:
    """``source`` restricted to the rows ``keep`` (strictly increasing), every field streamed as before.

    Images must be a sequence with a ``subset(keep)`` method (``MatlabImages``, ``MemberBytes``).
    """
    keep = np.asarray(keep, dtype=np.int64)
    images = source.images.subset(keep) if source.images is not None else None
    texts = np.asarray(source.texts, dtype=object)[keep] if source.texts is not None else None
    return SourceData(
        labels=source.labels[keep],
        label_names=source.label_names,
        image_features=SubsetRows(source.image_features, keep) if source.image_features is not None else None,
        text_features=SubsetRows(source.text_features, keep) if source.text_features is not None else None,
        texts=texts,
        images=images,
        labels_source=source.labels_source,
        index=(np.arange(source.num_rows, dtype=np.int64) if source.index is None else source.index)[keep],
    )
