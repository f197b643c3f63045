"""Crash-safe checkpoints in ``<run_dir>/checkpoints/``.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
renamed over its final name (``ckpt_<step>.pt``, ``step`` = optimizer steps of all levels),
and the folder is fsync'ed; so a kill at any moment leaves either the previous set of
checkpoints or the new one, never a half-written file under a final name. The newest
``keep`` checkpoints are kept. Loading tries the newest first and falls back to an older
one, with a warning, when a file is truncated or corrupt.

Checkpoints are plain dicts loaded with ``torch.load(weights_only=True)``: tensors,
numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from mltrain.errors import CheckpointError

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Final-named checkpoints in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict, directory: Path, step: int, keep: int) -> Path:
    """Write ``state`` atomically as ``ckpt_<step>.pt`` and keep the newest ``keep`` files.

    Raises:
        CheckpointError: the folder cannot be written (names the path and the reason).
    """
    directory = Path(directory)
    final = checkpoint_path(directory, step)
    tmp = directory / f".{final.name}.tmp{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(directory)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {e.strerror or e}") from None
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path) -> dict:
    """Load one checkpoint file on the CPU.

    Raises:
        CheckpointError: missing, truncated or not a mltrain checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"train.resume: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(e).__name__}): truncated or corrupt"
        ) from None
    if not isinstance(state, dict) or state.get("format") != 1 or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not an mltrain checkpoint")
    return state


def load_latest(directory: Path) -> tuple[dict, Path] | None:
    """The newest readable checkpoint in ``directory`` and its path, or None if there is none.

    Unreadable newer files are reported (warning) and skipped; stale temporary files from a
    write that was killed are removed.

    Raises:
        CheckpointError: checkpoints exist but none is readable.
    """
    directory = Path(directory)
    if directory.is_dir():
        for stale in directory.glob(".ckpt_*.tmp*"):
            stale.unlink(missing_ok=True)
    candidates = list_checkpoints(directory)
    errors = []
    for path in reversed(candidates):
        try:
            return load_checkpoint(path), path
        except CheckpointError as e:
            log.warning("%s; trying the previous checkpoint", e)
            errors.append(str(e))
    if candidates:
        raise CheckpointError(f"no readable checkpoint in {directory}: {errors[0]}")
    return None
