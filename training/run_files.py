"""The record of the files a training run wrote in its output folder, so that starting over removes only those.

`<output_dir>/.crcgs_run_files.json` lists, relative to the output folder, every file the trainer wrote
there (checkpoints, stage weights, logs, model folders, summaries). `--overwrite_output_dir` deletes the
listed files and nothing else; a file in one of the trainer's places that the record does not list (a
user's notes in a model folder, a model folder from another tool) stops the run with a message listing it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from modeling_crcgs.utils import atomic_write_text

MANIFEST_NAME = ".crcgs_run_files.json"
TRAINER_ENTRIES = (
    "checkpoints",
    "stages",
    "logs",
    "teacher_features",
    "training_args.json",
    "results.md",
    "run_summary.json",
)


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(Path(top) / name for top, _, names in os.walk(path) for name in names)


class RunFiles:
    """Read, extend and clear the record of the files the trainer wrote under ``output_dir``."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.root = Path(output_dir)
        self.path = self.root / MANIFEST_NAME

    def recorded(self) -> set[str]:
        """The recorded paths (relative, POSIX); empty when there is no record yet."""
        if not self.path.is_file():
            return set()
        try:
            files = json.loads(self.path.read_text())["files"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{self.path}: not a record of run files written by this trainer ({err})"
            ) from None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ValueError(f"{self.path}: 'files' must be a list of relative paths")
        return set(files)

    def record(self, *paths: str | os.PathLike) -> None:
        """Add every file now under ``paths`` (files or folders inside the output folder) to the record."""
        found = {f.relative_to(self.root).as_posix() for p in paths for f in _files_under(self.root / p)}
        known = self.recorded()
        if found - known:
            atomic_write_text(self.path, json.dumps({"files": sorted(known | found)}, indent=1))

    def in_the_way(self, model_folders: Iterable[str | os.PathLike] = ()) -> list[Path]:
        """Files in the trainer's places that the record does not list.

        The places are `TRAINER_ENTRIES`, the folders ``model_folders`` (the run's own model folders, which
        it replaces whole) and every ``*bits/`` folder that holds a ``model.safetensors``.
        """
        places = [self.root / e for e in TRAINER_ENTRIES] + [self.root / f for f in model_folders]
        places += [p.parent for p in self.root.glob("*bits/model.safetensors")]
        known = self.recorded()
        files = {f for place in places for f in _files_under(place)}
        return sorted(f for f in files if f.relative_to(self.root).as_posix() not in known)

    def refuse_foreign(self, model_folders: Iterable[str | os.PathLike] = ()) -> None:
        """Raise ValueError listing the files in the trainer's places that the record does not list."""
        foreign = self.in_the_way(model_folders)
        if foreign:
            shown = "\n  ".join(str(f) for f in foreign[:20])
            more = f"\n  ... and {len(foreign) - 20} more" if len(foreign) > 20 else ""
            raise ValueError(
                f"--overwrite_output_dir: {self.root} holds {len(foreign)} file(s) this trainer did not write "
                f"where a run writes; move them away or choose another --output_dir:\n  {shown}{more}"
            )

    def clear(self, model_folders: Iterable[str | os.PathLike] = ()) -> None:
        """Delete the recorded files (and the folders they leave empty); refuse when anything else is there."""
        model_folders = list(model_folders)
        self.refuse_foreign(model_folders)
        recorded = sorted(self.recorded())
        for name in recorded:
            (self.root / name).unlink(missing_ok=True)
        # deepest first, so a folder is tried after its sub-folders
        folders = {(self.root / name).parent for name in recorded}
        folders = {p for f in folders for p in [f, *f.parents] if self.root in p.parents}
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.path.unlink(missing_ok=True)


# Temp folders of `modeling_crcgs.utils.atomic_directory` / `replace_directory` and of checkpoint saves:
# `.NAME.tmp-XXXX`, `.NAME.old-XXXX`, `checkpoint-NNNNNN.tmp`.
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-[^/]+$|^checkpoint-\d+\.tmp$")


def clean_leftover_temp_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Remove the temp folders an interrupted write left in ``output_dir`` and ``output_dir/checkpoints``.

    Only names the trainer's atomic writes create match; run before a run starts (no write in flight).
    """
    removed = []
    for folder in (Path(output_dir), Path(output_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_dir() and _LEFTOVER.match(entry.name):
                shutil.rmtree(entry)
                removed.append(entry)
    return sorted(removed)
