"""Session set-up: W&B disabled, no hub access, one token cache per test session."""

from __future__ import annotations

import os

import pytest
import torch

# The composition root's registrations (as mltrain.job and mltrain.cli do): every scheme, and
# the registries of mltrain.config.registries that validate() checks names against.
import mltrain.schemes  # noqa: F401

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """One token cache for the whole session (tokenizing the corpus once takes ~6 s)."""
    os.environ["MLTRAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("mltrain-cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
