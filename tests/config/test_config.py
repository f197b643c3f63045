"""Config composition: every option of every group, the schemas, and value checks."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from mltrain.config import config_dir, validate
from mltrain.errors import ConfigError
from mltrain.levels import build_hierarchy
from tests.helpers import compose, plugin_missing

GROUPS = ["model", "coarsening", "optimizer", "schedule", "data", "logger", "experiment", "mode"]
NEEDS = {  # options that need a value no default can supply
    ("coarsening", "custom"): ["coarsening.hierarchy.blocks=[[0,2]]"],
    ("coarsening", "raptr"): ["model.n_layer=12"],  # path lengths 6, 8, 10 of 12 blocks
    ("experiment", "raptr"): ["model.n_layer=12"],
    ("data", "text_files"): ["data.paths=[/tmp]"],
}


def options():
    for group in GROUPS:
        for f in sorted((config_dir() / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group, option", list(options()))
def test_every_option_of_every_group_composes_and_validates(group, option):
    if group == "experiment" and plugin_missing(option):
        with pytest.raises(HydraException, match=r"hydra/sweeper/optuna"):
            compose(f"{group}={option}")
        return
    cfg = compose(f"{group}={option}", *NEEDS.get((group, option), []))
    validate(cfg)
    levels = build_hierarchy(cfg.coarsening, cfg.model.n_layer)
    assert levels[0].name == "fine"
    if group in ("model", "coarsening", "optimizer", "schedule", "data", "logger"):
        assert cfg[group].get("name", option) == option or group in ("model", "optimizer")


def test_all_groups_exist():
    assert {p.name for p in config_dir().iterdir() if p.is_dir()} >= set(GROUPS) | {"hydra"}


def test_defaults_are_the_cpu_run_of_the_readme():
    cfg = compose()
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.seq_len) == (
        4,
        32,
        2,
        32,
    )  # TINY
    from mltrain.config import compose as plain

    d = plain([])
    assert (d.model.n_layer, d.model.n_embd, d.model.n_head, d.model.seq_len) == (12, 128, 4, 128)
    assert (d.data.name, d.data.tokenizer, d.data.bpe_vocab_size, d.data.batch_size) == (
        "sotu",
        "bpe",
        8192,
        16,
    )
    assert d.optimizer._target_ == "torch.optim.SGD" and d.optimizer.momentum == 0.9
    assert (
        d.schedule.name == "cosine"
        and d.coarsening.hierarchy.name == "even_odd"
        and d.coarsening.vcycle.delta == 0.25
    )
    p = plain(["experiment=paper"])
    assert (p.model.n_embd, p.model.n_layer, p.model.n_head, p.data.tokenizer) == (
        256,
        12,
        8,
        "gpt2",
    )
    assert (
        p.coarsening.hierarchy.name,
        p.coarsening.vcycle.delta,
        p.coarsening.vcycle.coarse_steps,
        p.coarsening.vcycle.window,
    ) == ("even_odd", 0.25, 100, 35)
    assert p.optimizer._target_ == "torch.optim.SGD" and p.schedule.name == "cosine"


@pytest.mark.parametrize("override", ["model.n_layr=3", "train.stpes=3"])
def test_unknown_keys_are_rejected(override):
    with pytest.raises((HydraException, OmegaConfBaseException), match=r"n_layr|stpes"):
        compose(override)


@pytest.mark.parametrize(
    "override, where",
    [
        ("+coarsening.detla=0.5", "coarsening.detla"),
        ("+optimizer.momentun=0.5", "optimizer.momentun"),
        ("+lr=0.1", "lr"),
    ],
)
def test_keys_added_with_plus_are_rejected_by_validation(override, where):
    with pytest.raises(ConfigError, match=rf"^{where} is not a setting; "):
        validate(compose(override))


def test_fields_of_a_schema_are_its_settings_without_its_sections():
    """``keys.fields_of`` (was the private ``_fields``, imported by validate and arguments as
    if public; no alias is kept)."""
    from mltrain.config import keys
    from mltrain.config.schema import CoarseningConfig, SGDConfig

    assert [f.name for f in keys.fields_of(CoarseningConfig)] == ["scheme"]  # 6 sections out
    assert [f.name for f in keys.fields_of(SGDConfig())] == [
        "_target_",
        "_partial_",
        "lr",
        "momentum",
        "nesterov",
        "dampening",
        "weight_decay",
    ]
    with pytest.raises(TypeError, match="dataclass"):
        keys.fields_of(dict)
    assert not hasattr(keys, "_fields")


@pytest.mark.parametrize(
    "override", ["model.n_layer=abc", "coarsening.vcycle.delta=high", "train.compile=maybe"]
)
def test_wrong_types_are_rejected(override):
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose(override)


def test_options_of_another_optimizer_are_rejected():
    with pytest.raises((HydraException, OmegaConfBaseException), match="momentum"):
        compose("optimizer=adamw", "optimizer.momentum=0.9")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["model.n_embd=30", "model.n_head=4"],
            r"model.n_embd=30 must be divisible by model.n_head=4",
        ),
        (
            ["model.seq_len=64", "model.block_size=32"],
            r"model.seq_len=64 is larger than the model's context model.block_size=32",
        ),
        (["train.steps=0"], r"train.steps=0 is not allowed: must be a number > 0"),
        (["train.steps=-5"], r"train.steps=-5 is not allowed"),
        (["data.batch_size=0"], r"data.batch_size=0 is not allowed"),
        (["optimizer.lr=0"], r"optimizer.lr=0.0 is not allowed"),
        (["optimizer.lr=-0.1"], r"optimizer.lr=-0.1 is not allowed"),
        (
            ["data.name=books"],
            r"data.name='books' is not allowed: choose one of sotu, text_files, fineweb_edu",
        ),
        (
            ["data.tokenizer=wordpiece"],
            r"data.tokenizer='wordpiece' is not allowed: choose bpe, gpt2, hf:<name or path>",
        ),
        (
            ["coarsening.vcycle.delta=1.5"],
            r"coarsening.vcycle.delta=1.5 is not allowed: must be in \[0, 1\]",
        ),
        (["coarsening.vcycle.delta=-0.1"], r"coarsening.vcycle.delta=-0.1 is not allowed"),
        (
            ["coarsening.vcycle.coarse_steps=-1"],
            r"coarsening.vcycle.coarse_steps=-1 is not allowed: must be >= 0",
        ),
        (
            ["coarsening.vcycle.window=-2"],
            r"coarsening.vcycle.window=-2 is not allowed: must be >= 0",
        ),
        (
            ["coarsening.hierarchy.step_scale=0"],
            r"coarsening.hierarchy.step_scale=0.0 is not allowed: must be a number > 0",
        ),
        (
            ["coarsening.hierarchy.name=halves"],
            r"coarsening.hierarchy.name='halves' is not allowed",
        ),
        (
            ["coarsening.hierarchy.optimizer_state=global"],
            r"coarsening.hierarchy.optimizer_state='global' is not allowed: choose one of separate, shared, reset",
        ),
        (
            ["schedule.warmup_steps=400", "train.steps=300"],
            r"schedule.warmup_steps=400 is not allowed: must be >= 0 and < train.steps=300",
        ),
        (
            ["train.device=tpu"],
            r"train.device='tpu' is not allowed: choose auto, cpu, cuda or cuda:<index>",
        ),
        (["train.precision=int8"], r"train.precision='int8' is not allowed"),
        (["data.val_fraction=1.0"], r"data.val_fraction=1.0 is not allowed: must be in \(0, 1\)"),
        (["data=text_files"], r"data.paths is empty: data=text_files needs data.paths"),
        (["train.target_flops=-1"], r"train.target_flops=-1.0 is not allowed"),
        (  # a scale with nothing to scale would be ignored: the run would keep its steps
            ["train.flops_scale=0.25"],
            r"train.flops_scale=0.25 scales train.target_flops, which is not set",
        ),
    ],
)
def test_bad_values_give_one_line_naming_the_setting(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate(compose(*overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "experiment", [f.stem for f in sorted((config_dir() / "experiment").glob("*.yaml"))]
)
@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.5), ("adamw", 1e-3)])
def test_every_experiment_takes_either_optimizer_with_its_own_defaults(experiment, optimizer, lr):
    if plugin_missing(experiment):
        pytest.skip("needs an optional plugin")
    cfg = compose(f"experiment={experiment}", f"optimizer={optimizer}")
    validate(cfg)
    assert cfg.optimizer.lr == lr  # a preset must not carry one optimizer's settings into another


def test_a_run_from_before_optimizer_state_moved_resumes_and_keeps_its_setting(tmp_path):
    """``optimizer_state`` and ``train_shared`` moved from ``coarsening.vcycle`` to
    ``coarsening.hierarchy`` (staged runs read them too). A committed record written before
    (the width V-cycle at 1/8: ``experiment=width_vcycle`` sets reset) upgrades to the
    hierarchy's keys with its value, and its checkpoint fits the same command composed now."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from mltrain.config import compose as plain_compose
    from mltrain.config import upgrade
    from mltrain.train.checkpoint import check_compatible

    hydra = Path(__file__).parents[2] / "docs/results/third_edition/runs/width_b8_s0/.hydra"
    old = OmegaConf.to_container(OmegaConf.load(hydra / "config.yaml"), resolve=True)
    assert old["coarsening"]["vcycle"]["optimizer_state"] == "reset"  # as it was written
    new = upgrade(old)
    assert new["coarsening"]["hierarchy"]["optimizer_state"] == "reset"
    assert new["coarsening"]["hierarchy"]["train_shared"] is True
    assert not {"optimizer_state", "train_shared"} & set(new["coarsening"]["vcycle"])
    now = plain_compose([str(o) for o in OmegaConf.load(hydra / "overrides.yaml")])
    assert now.coarsening.hierarchy.optimizer_state == "reset"
    check_compatible(old, OmegaConf.to_container(now, resolve=True), tmp_path / "ckpt.pt")
    changed = OmegaConf.to_container(now, resolve=True)
    changed["coarsening"]["hierarchy"]["optimizer_state"] = "separate"
    with pytest.raises(Exception, match="coarsening.hierarchy.optimizer_state=reset"):
        check_compatible(old, changed, tmp_path / "ckpt.pt")
