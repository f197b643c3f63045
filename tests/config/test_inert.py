"""One list of the settings that do not change training (schema tags), used by all four
consumers: resume, run grouping in mltrain-compare, the commands compare prints, and Hydra's
sweep job directory names."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mltrain.analysis.judging.grouping import identity
from mltrain.config import compose, flatten, inert_keys
from mltrain.errors import CheckpointError
from mltrain.train.checkpoint import check_compatible

EXPECTED = {
    "experiment_name",
    "data.cache_dir",
    "train.eval_every",
    "train.log_every",
    "train.device",
    "train.threads",
    "train.compile",
    "train.compile_backend",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.resume",
    "train.spike_factor",
    "train.progress",
    "train.branch_points",  # a trunk's kept states: training unchanged (tests/train/test_branch.py)
    "train.branch_from",  # a branch is the standalone run bit for bit (tests/train/test_branch.py)
}


def base() -> dict:
    return OmegaConf.to_container(compose(["model=tiny"]), resolve=True)


def changed(config: dict, key: str) -> dict:
    import copy

    out = copy.deepcopy(config)
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    v = node[leaf]
    node[leaf] = (
        "other"
        if isinstance(v, str) or v is None
        else [0.5]
        if isinstance(v, list)
        else (not v if isinstance(v, bool) else v + 1)
    )
    return out


def test_the_tagged_list():
    keys = set(inert_keys())
    assert EXPECTED <= keys
    assert {k for k in keys if not k.startswith("logger.")} == EXPECTED
    assert {"logger.name", "logger.mode", "logger.job_type"} <= keys
    assert not {"train.seed", "train.eval_sequences", "train.max_grad_norm"} & keys


@pytest.mark.parametrize("key", sorted(EXPECTED | {"logger.group"}))
def test_resume_and_grouping_ignore_every_inert_key(key):
    a = base()
    b = changed(a, key)
    check_compatible(a, b, "ckpt")  # a resume may change it
    assert identity(flatten(a)) == identity(flatten(b))  # the same configuration in compare


@pytest.mark.parametrize("key", ["train.seed", "train.max_grad_norm", "train.eval_sequences"])
def test_keys_that_change_training_or_its_measure_block_resume(key):
    a = base()
    with pytest.raises(CheckpointError, match=f"was written with {key}="):
        check_compatible(a, changed(a, key), "ckpt")


def test_compare_drops_inert_overrides_from_the_commands_it_prints(tmp_path):
    from mltrain.analysis.reports.summary import _other_overrides

    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(
        ["train.progress=false", "train.spike_factor=2", "optimizer=adamw", "train.seed=3"],
        tmp_path / ".hydra" / "overrides.yaml",
    )
    from types import SimpleNamespace

    run = SimpleNamespace(path=tmp_path, flat={"train.seed": 3, "optimizer._target_": "x"})
    assert _other_overrides(run) == ["optimizer=adamw"]


def test_hydra_job_names_exclude_every_inert_key():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mltrain.config import config_dir, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = hydra_compose("config", return_hydra_config=True)
    excluded = set(OmegaConf.select(cfg, "hydra.job.config.override_dirname.exclude_keys"))
    assert set(inert_keys()) <= excluded
    assert {"experiment", "mode", "logger"} <= excluded
