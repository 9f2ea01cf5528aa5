"""Access to the official distributions of the benchmarks: zip archives or their extracted folders.

MIRFLICKR-25K ships as ``mirflickr25k.zip`` (``mirflickr/im<n>.jpg``, ``mirflickr/meta/tags/tags<n>.txt``)
and ``mirflickr25k_annotations_v080.zip`` (one ``<concept>.txt`` per concept); NUS-WIDE as folders of
whitespace-separated text matrices (``Groundtruth/AllLabels/Labels_<concept>.txt``,
``NUS_WID_Tags/AllTags1k.txt``); MS-COCO as ``annotations/*.json`` and image folders or zips
(``train2014/``, ``train2014.zip``). :class:`RawFiles` reads a member by the path it has inside the
archive, whether the archive is still zipped or was extracted under the data folder.
"""

from __future__ import annotations

import io
import os
import posixpath
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import BinaryIO

import numpy as np


class RawFiles:
    """Files of one distribution: members of ``<data_dir>/<archive>`` when that zip exists, else files
    under ``<data_dir>`` (the archive extracted in place).

    Members are addressed by their POSIX path inside the archive (``"mirflickr/im1.jpg"``); :meth:`find`
    locates a file by name in any sub-folder (archives differ in their top folder). Use as a context
    manager, or call :meth:`close`, so that an open zip is released.
    """

    def __init__(self, data_dir: str | None, archive: str):
        if data_dir is None or not os.path.isdir(data_dir):
            raise ValueError(
                f"data_dir must be an existing folder holding {archive} or its files, got {data_dir!r}"
            )
        self.data_dir = data_dir
        self.archive = archive
        zip_path = os.path.join(data_dir, archive)
        self._zip: zipfile.ZipFile | None = None
        self._root = data_dir
        if os.path.isfile(zip_path):
            try:
                self._zip = zipfile.ZipFile(zip_path)
            except zipfile.BadZipFile as err:
                raise ValueError(f"{zip_path} is not a valid zip archive: {err}") from err

    @property
    def location(self) -> str:
        """Where members are read from, for error messages."""
        return os.path.join(self.data_dir, self.archive) if self._zip is not None else self._root

    def __enter__(self) -> RawFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    @cached_property
    def members(self) -> list[str]:
        """Every file of the distribution, as POSIX paths relative to its root."""
        if self._zip is not None:
            return [name for name in self._zip.namelist() if not name.endswith("/")]
        found = []
        for dirpath, _, filenames in os.walk(self._root):
            rel = os.path.relpath(dirpath, self._root)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            found.extend(prefix + name for name in filenames)
        return found

    @cached_property
    def _member_set(self) -> frozenset[str]:
        return frozenset(self.members)

    def missing(self, members: Iterable[str]) -> list[str]:
        """The members of ``members`` that the distribution lacks (one listing, then set look-ups)."""
        present = self._member_set
        return [m for m in members if m not in present]

    def read_bytes(self, member: str) -> bytes:
        """The bytes of ``member``; ValueError naming the archive or folder when it is missing."""
        try:
            if self._zip is not None:
                return self._zip.read(member)
            with open(os.path.join(self._root, *member.split("/")), "rb") as handle:
                return handle.read()
        except (KeyError, FileNotFoundError) as err:
            raise ValueError(f"missing file {member!r} in {self.location}") from err

    def open(self, member: str) -> BinaryIO:
        """A binary file object for ``member`` (streamed, not read whole); close it after use."""
        try:
            if self._zip is not None:
                return self._zip.open(member)
            return open(os.path.join(self._root, *member.split("/")), "rb")
        except (KeyError, FileNotFoundError) as err:
            raise ValueError(f"missing file {member!r} in {self.location}") from err

    def find(self, basename: str) -> str:
        """The unique member called ``basename`` in any sub-folder (archives differ in their top folder)."""
        matches = [m for m in self.members if posixpath.basename(m) == basename]
        if not matches:
            raise ValueError(f"missing file {basename!r} in {self.location}")
        if len(matches) > 1:
            raise ValueError(f"file name {basename!r} is ambiguous in {self.location}: {sorted(matches)}")
        return matches[0]


def read_integer_matrix(raw: bytes | BinaryIO, *, source: str, num_columns: int | None = None) -> np.ndarray:
    r"""Parse a whitespace-separated matrix of small non-negative integers (NUS-WIDE ``AllTags1k.txt``,
    ``Labels_<concept>.txt``) into a 2-D uint8 array with ``numpy.loadtxt`` (C parser since numpy 1.23;
    ~2x faster than ``pandas.read_csv(sep=r"\s+")`` here, see benchmarks/bench_benchmark_builders.py).
    ``raw`` is the file's bytes or a binary file object (parsed as it streams).

    Raises:
        ValueError: naming ``source`` when the text is empty, ragged, holds anything but integers in
            [0, 255] (numpy names the row and column), or has a column count other than ``num_columns``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
            values = np.loadtxt(io.BytesIO(raw) if isinstance(raw, bytes) else raw, dtype=np.uint8, ndmin=2)
    except ValueError as err:
        raise ValueError(
            f"{source} is not a whitespace-separated matrix of integers in [0, 255]: {err}"
        ) from err
    if values.size == 0:
        raise ValueError(f"{source} is empty; expected a whitespace-separated integer matrix")
    if num_columns is not None and values.shape[1] != num_columns:
        raise ValueError(f"{source} has {values.shape[1]} columns, expected {num_columns}")
    return values


def read_id_list(raw: bytes, *, source: str, low: int, high: int) -> np.ndarray:
    """Integer ids, one per line (MIRFLICKR-25K concept files), checked to lie in ``[low, high]``."""
    lines = read_lines(raw)
    try:
        ids = np.asarray(lines, dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{source}: expected one integer id per line ({err})") from err
    if ids.size and (ids.min() < low or ids.max() > high):
        bad = ids[(ids < low) | (ids > high)][0]
        raise ValueError(f"{source}: id {bad} outside the valid range [{low}, {high}]")
    return ids


def read_lines(raw: bytes) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file, decoded losslessly.

    A byte that is not valid UTF-8 becomes a lone surrogate (``errors="surrogateescape"``), so different
    byte strings stay different strings: ``errors="replace"`` would turn ``b"caf\\xe9"`` and ``b"caf\\xe8"``
    into the same tag, counted together against a frequency threshold. ``printable`` gives the text
    where valid Unicode is needed (Arrow columns, JSON records).
    """
    return [
        line.strip() for line in raw.decode("utf-8", errors="surrogateescape").splitlines() if line.strip()
    ]


def printable(text: str) -> str:
    """``text`` with the undecodable bytes kept by ``read_lines`` written as ``\\xNN`` escapes (valid Unicode)."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


class MemberBytes(Sequence):
    """Lazy ``datasets.Image`` inputs: item ``i`` is ``{"bytes": ..., "path": basename}`` of member
    ``members[i]`` of ``files[which[i]]`` (images spread over several archives, e.g. COCO train/val)."""

    def __init__(self, files: Sequence[RawFiles], which: np.ndarray, members: Sequence[str]):
        self.files = list(files)
        self.which = np.asarray(which, dtype=np.int64)
        self.members = np.asarray(members, dtype=object)
        if self.which.shape != self.members.shape:
            raise ValueError(f"which has shape {self.which.shape} but members has {self.members.shape}")

    def __len__(self) -> int:
        return int(self.members.size)

    def __getitem__(self, index: int) -> dict[str, object]:  # type: ignore[override]
        member = str(self.members[index])
        return {
            "bytes": self.files[int(self.which[index])].read_bytes(member),
            "path": posixpath.basename(member),
        }

    def subset(self, keep: np.ndarray) -> MemberBytes:
        return MemberBytes(self.files, self.which[keep], self.members[keep])

    def missing(self) -> list[str]:
        """Members that their archive or folder lacks."""
        return [
            f"{files.location}: {member}"
            for i, files in enumerate(self.files)
            for member in files.missing(self.members[self.which == i].tolist())
        ]
