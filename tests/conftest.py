"""Session set-up: W&B disabled, no hub access, one token cache per test session."""

from __future__ import annotations

import os

import pytest
import torch

# The composition root's registrations (as mltrain.job and mltrain.cli do): every scheme, and
# the registries of mltrain.config.registries that validate() checks names against.
import mltrain.schemes  # noqa: F401

os.environ["WANDB_MODE"] = "disabled"
# the user's shell must not reach the tests: an outputs root shared by every test (and xdist
# worker), full Hydra tracebacks in place of the one-line errors, a launcher's distributed env
for _key in (
    "MLTRAIN_OUTPUTS",
    "HYDRA_FULL_ERROR",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SUBMITIT_EXECUTOR",
):
    os.environ.pop(_key, None)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """One token cache for the whole session (tokenizing the corpus once takes ~6 s)."""
    os.environ["MLTRAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("mltrain-cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture(autouse=True)
def _logging_handlers():
    """Handlers a test leaves on the loggers are removed after it. Hydra's job logging (an
    in-process ``mltrain`` under capsys) binds a StreamHandler to that test's captured stream;
    left in place, a later test's log line goes to the closed stream and logging prints a
    "Logging error" traceback into that test's stderr (which the one-line error tests read)."""
    import logging

    loggers = [logging.getLogger()] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
    ]
    before = {id(lg): list(lg.handlers) for lg in loggers}
    yield
    for lg in [logging.getLogger()] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
    ]:
        keep = before.get(id(lg), [])
        for h in list(lg.handlers):
            if h not in keep:
                lg.removeHandler(h)
