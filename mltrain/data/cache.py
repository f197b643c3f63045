"""The token cache: train/validation token streams as memory-mapped ``.npy`` arrays.

A cache entry is a folder named by a fingerprint of everything that changes the tokens
(corpus inputs, tokenizer, split rule, format version). It is built in a temporary folder
and renamed into place, so a killed build never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$MLTRAIN_CACHE_DIR``, else ``~/.cache/mltrain``."""
    env = os.environ.get("MLTRAIN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mltrain"


def fingerprint(**parts) -> str:
    """sha256 (hex) of the JSON of ``parts`` plus the cache format version."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load(entry: Path) -> dict[str, np.ndarray] | None:
    """``{"train": memmap, "val": memmap}`` of a complete entry, or None when absent."""
    if not (entry / "meta.json").is_file():
        return None
    return {s: np.load(entry / f"{s}.npy", mmap_mode="r") for s in ("train", "val")}


def save(entry: Path, arrays: dict[str, np.ndarray], meta: dict) -> dict[str, np.ndarray]:
    """Write ``arrays`` (``train``, ``val``) and ``meta.json`` atomically; return memmaps."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
    try:
        for split, arr in arrays.items():
            np.save(tmp / f"{split}.npy", arr)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process finished the same entry first: use theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = load(entry)
    assert out is not None
    return out
