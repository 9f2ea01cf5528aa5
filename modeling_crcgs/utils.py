"""Small helpers shared by the library, the trainer and the commands: atomic writes, argument checks,
input checks, model fingerprints and the commands' error exit.

Atomic writes follow one rule: write to a temporary path in the destination's folder, then ``os.replace``
it into place, so a reader never sees a half-written file or folder.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

__all__ = [
    "atomic_directory",
    "atomic_write",
    "atomic_write_text",
    "check_matrix",
    "check_positive_int",
    "check_same_batch",
    "model_fingerprint",
    "move_into",
    "replace_directory",
    "run_command",
]

# Errors a user's input causes (bad value, missing or misplaced file): a command ends them with one line.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


# --------------------------------------------------------------------------------------------------
# atomic writes


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temp_path)`` on a temporary file next to ``path``, then ``os.replace`` it into place.

    ``write`` creates the file (a unique name per call: process id + random), so it gets the usual
    permissions of the umask; on any error the temporary file is removed.
    """
    path = Path(path)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` (its folder created) through a temp file in the same folder and `os.replace`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def replace_directory(tmp_dir: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished folder ``tmp_dir`` onto ``target``, replacing what was there (rename, rename, delete)."""
    tmp_dir, target = Path(tmp_dir), Path(target)
    old = None
    if target.exists():
        old = tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)
        os.replace(target, os.path.join(old, target.name))
    os.replace(tmp_dir, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target`` (parents created); when the block succeeds it replaces
    ``target`` whole (:func:`replace_directory`), when it raises it is removed and ``target`` is untouched."""
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into(write: Callable[[str], Any], folder: str | os.PathLike) -> None:
    """Call ``write(temp_folder)`` on a temporary folder inside ``folder`` (created), then ``os.replace`` each
    written entry into ``folder``; an existing sub-folder of the same name is replaced whole."""
    folder = os.fspath(folder)
    if os.path.isfile(folder):
        raise ValueError(f"expected a folder, got the file {folder!r}")
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=folder)
    try:
        write(tmp)
        for name in sorted(os.listdir(tmp)):
            target = os.path.join(folder, name)
            if os.path.isdir(target):  # os.replace cannot overwrite a non-empty folder
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# checks


def check_positive_int(name: str, value: Any) -> int:
    """``int(value)``; ValueError naming ``name`` unless ``value`` is a positive (numpy) integer, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_matrix(tensor: object, name: str, width: int, dtype: torch.dtype) -> torch.Tensor:
    """A finite real (batch, width) tensor, cast to ``dtype``; ValueError naming ``name`` otherwise."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2 or tensor.shape[1] != width:
        raise ValueError(f"{name} must have shape (batch, {width}), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    if not (
        tensor.is_floating_point()
        or tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)
    ):
        raise ValueError(f"{name} must be a real tensor, got dtype {tensor.dtype}")
    tensor = tensor.to(dtype)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def check_same_batch(**tensors: Optional[torch.Tensor]) -> None:
    """All given tensors share one batch size (never broadcast one modality against the other)."""
    sizes = {name: t.shape[0] for name, t in tensors.items() if t is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ: {sizes}; every input must have the same number of rows")


# --------------------------------------------------------------------------------------------------
# fingerprints


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes): identifies the weights used."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def run_command(main: Callable[[], Any], user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run a command's ``main``; a user error (`USER_ERRORS` + ``user_errors``) ends the process with
    ``error: <message>`` on stderr and exit status 2 (argparse's status for bad usage), no traceback."""
    try:
        main()
    except USER_ERRORS + user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
