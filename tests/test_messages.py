"""Messages that misled (issue 29, item 7), each tried through the command line as a user
types it; every command or setting a message suggests is pasted back and must run. Each test
fails on the code before its fix."""

from __future__ import annotations

import shlex

import pytest
from omegaconf import OmegaConf

from tests.helpers import TINY, cli, run_mltrain

SMOKE = ["mode=smoke", *TINY]
CFG = ["--cfg", "job", *TINY]


def _error(err: str) -> str:
    """The one error line of a refused command (and that it is the only line)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mltrain: error: "), err
    return lines[0].removeprefix("mltrain: error: ")


def _pasted(message: str, after: str) -> list[str]:
    """The arguments a message suggests after ``after`` (to its end), as the shell splits them."""
    return shlex.split(message.split(after, 1)[1])


# --------------------------------------------------------------------------- the split
WORDS = "rivers mountains weather spring valley harbour lantern orchard meadow timber " * 6


@pytest.mark.parametrize(
    "text, n, suggestion",
    [
        # three paragraphs: the unit is right, the share held out too small for 3
        ("\n\n".join([WORDS] * 3), 3, "data.val_fraction=0.34"),
        # one paragraph of three lines: split by line
        ("\n".join([WORDS] * 3), 1, "data.sample_by=line data.val_fraction=0.34 (3 lines)"),
    ],
)
def test_an_empty_split_suggests_settings_that_split_the_corpus(
    tmp_path, capsys, text, n, suggestion
):
    (tmp_path / "a.txt").write_text(text)
    data = [
        "data=text_files",
        "data.tokenizer=gpt2",
        "data.paths=[a.txt]",
        "data.sample_by=paragraph",
    ]
    code, _, err = cli([*SMOKE, *data], tmp_path, capsys)
    assert code == 2
    assert _error(err) == (
        f"data: the corpus has {n} non-empty paragraph(s) (data.sample_by=paragraph); a split "
        "with data.val_fraction=0.05 needs at least one for train and one for validation: "
        f"add {suggestion}"
    )
    fix = shlex.split(suggestion.split(" (")[0])
    code, _, err = cli([*SMOKE, *data, *fix, "hydra.run.dir=run"], tmp_path, capsys)
    assert code == 0, err


# --------------------------------------------------------------------------- ~key
@pytest.mark.parametrize(
    "args, fix, value",
    [
        (["~train.target_flops"], "train.target_flops=null", None),
        (["experiment=grow", "~train.target_flops"], "train.target_flops=null", None),
        (["~train.steps"], "train.steps=300", 300),
    ],
)
def test_removing_a_setting_says_how_to_set_it(tmp_path, capsys, args, fix, value):
    code, out, err = cli([*CFG, *args], tmp_path, capsys)
    key = fix.split("=")[0]
    assert code == 2 and not out
    assert _error(err).startswith(f"~{key}: {key} is a setting, which cannot be removed; ")
    assert _error(err).endswith(f" {fix}") and "does not exist" not in err
    code, out, err = cli([*CFG, *args[:-1], fix], tmp_path, capsys)
    assert code == 0, err
    assert OmegaConf.select(OmegaConf.create(out), key) == value


# --------------------------------------------------------------------------- quoting slips
def test_two_overrides_in_one_argument_are_named_and_split(tmp_path, capsys):
    code, _, err = cli([*CFG, "train.steps=30 train.seed=7"], tmp_path, capsys)
    msg = _error(err)
    assert code == 2
    assert msg.startswith("'train.steps=30 train.seed=7': mismatched input '=' expecting <EOF>; ")
    assert "it holds 2 overrides in one argument" in msg
    command = _pasted(msg, "give each its own: ")
    assert command[0] == "mltrain" and command[-2:] == ["train.steps=30", "train.seed=7"]
    code, out, err = cli(command[1:], tmp_path, capsys)
    assert code == 0, err
    cfg = OmegaConf.create(out)
    assert (cfg.train.steps, cfg.train.seed) == (30, 7)


def test_any_override_that_does_not_parse_is_named(tmp_path, capsys):
    code, _, err = cli([*CFG, "coarsening.vcycle.delta=[1"], tmp_path, capsys)
    assert code == 2 and _error(err).startswith("'coarsening.vcycle.delta=[1': ")


# --------------------------------------------------------------------------- unread settings
def test_a_setting_the_scheme_does_not_read_gets_one_line_of_notice(tmp_path, capsys):
    args = ["coarsening=none", "coarsening.vcycle.delta=0.5", "coarsening.stages.grow_warmup=2"]
    code, out, err = cli([*CFG, *args], tmp_path, capsys)
    assert code == 0
    assert err.strip().splitlines() == [
        "mltrain: note: coarsening.vcycle.delta=0.5, coarsening.stages.grow_warmup=2: not read "
        "by coarsening.scheme=single_level (it reads no coarsening section): ignored"
    ]
    code, out, err = cli(
        [*SMOKE, "coarsening=grow", "coarsening.vcycle.delta=0.5"], tmp_path, capsys
    )
    assert code == 0, err
    notes = [ln for ln in (out + err).splitlines() if "not read by" in ln]
    assert len(notes) == 1 and notes[0].endswith(
        "coarsening.vcycle.delta=0.5: not read by coarsening.scheme=stages (it reads "
        "coarsening.hierarchy, coarsening.stages, coarsening.patch, coarsening.raptr): ignored"
    )


@pytest.mark.parametrize(
    "args",
    [
        [
            "coarsening=grow",
            "mode=smoke",
        ],  # the mode's V-cycle settings: a preset's, not the user's
        ["experiment=paper_small", "coarsening=none"],  # the preset's V-cycle settings
        [
            "coarsening=grow",
            "coarsening.stages.grow_warmup=2",
            "coarsening.hierarchy.train_shared=false",
        ],
        ["coarsening.hierarchy.name=raptr", "coarsening.raptr.blocks=[2]"],  # its hierarchy's
    ],
)
def test_settings_a_run_reads_or_a_preset_sets_get_no_notice(tmp_path, capsys, args):
    code, _, err = cli([*CFG, *args], tmp_path, capsys)
    assert code == 0 and "note" not in err, err


# --------------------------------------------------------------------------- branches
BASE = [
    *TINY,
    "coarsening=none",
    "schedule=wsd",
    "train.target_flops=4e9",
    "train.threads=1",
    "train.eval_every=4",
    "optimizer.lr=0.3",
]


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """A trunk at twice the budget with a branch point at half, run by the console script."""
    root = tmp_path_factory.mktemp("trunk")
    res = run_mltrain(
        [*BASE, "train.flops_scale=2", "train.branch_points=[0.5]", "hydra.run.dir=trunk"], root
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "trunk"


def test_a_branch_past_its_trunk_gets_a_trunk_command_that_runs(trunk, tmp_path, capsys):
    branch = [*BASE, "train.flops_scale=4", f"train.branch_from={trunk}"]
    code, _, err = cli([*branch, "hydra.run.dir=b"], tmp_path, capsys)
    msg = _error(err)
    assert code == 2 and "train.branch_points, which is refused" not in msg
    assert "a branch's budget must be below its trunk's (train.flops_scale=2)" in msg
    command = _pasted(msg, "with 4 in train.branch_points: ")
    assert command[0] == "mltrain" and command[-2:] == [
        "train.flops_scale=8.0",
        "train.branch_points=[0.5,4.0]",
    ]
    code, _, err = cli([*command[1:], "hydra.run.dir=trunk2"], tmp_path, capsys)
    assert code == 0, err
    again = [*BASE, "train.flops_scale=4", f"train.branch_from={tmp_path / 'trunk2'}"]
    code, _, err = cli(again, tmp_path, capsys)
    assert code == 0, err


def test_a_branch_below_its_trunk_gets_the_trunk_again(trunk, tmp_path, capsys):
    code, _, err = cli(
        [*BASE, "train.flops_scale=0.25", f"train.branch_from={trunk}"], tmp_path, capsys
    )
    msg = _error(err)
    assert code == 2 and msg.endswith(
        "run the trunk again with 0.25 in train.branch_points: "
        + shlex.join(["mltrain", *BASE, "train.flops_scale=2", "train.branch_points=[0.25,0.5]"])
    )


def test_a_branch_with_other_settings_names_them_and_branch_from(trunk, tmp_path, capsys):
    other = ["optimizer.lr=0.1", "train.seed=3"]
    code, _, err = cli(
        [*BASE, "train.flops_scale=0.5", f"train.branch_from={trunk}", *other], tmp_path, capsys
    )
    msg = _error(err)
    assert code == 2 and not msg.startswith("train.resume")
    assert msg == (
        f"train.branch_from={trunk}: this branch's settings differ from its trunk's in "
        "optimizer.lr (trunk 0.3, here 0.1), train.seed (trunk 0, here 3); a branch may change "
        "only its budget (train.flops_scale, train.target_flops, train.steps, train.max_steps): "
        "give it the trunk's, optimizer.lr=0.3 train.seed=0"
    )
    fix = _pasted(msg, "give it the trunk's, ")
    code, _, err = cli(
        [*BASE, "train.flops_scale=0.5", f"train.branch_from={trunk}", *other, *fix],
        tmp_path,
        capsys,
    )
    assert code == 0, err


def test_a_missing_trunk_is_one_line_without_info_before_it(tmp_path, capsys, monkeypatch):
    """With a cold token cache the corpus was tokenized (an INFO line on stdout, seconds) before
    the trunk was looked for; the test passed only after another test had filled the cache."""
    monkeypatch.setenv("MLTRAIN_CACHE_DIR", str(tmp_path / "cold_cache"))
    code, out, err = cli(
        [*BASE, "train.flops_scale=0.5", "train.branch_from=/nonexistent"], tmp_path, capsys
    )
    assert code == 2 and not out.strip()
    assert _error(err) == "train.branch_from=/nonexistent: not a run directory"
    assert not (tmp_path / "cold_cache").exists()


@pytest.mark.parametrize(
    "args, line",
    [  # found by a helper: an empty value (an unset $TRUNK) trained a whole run, exit 0
        (
            ["train.branch_from="],
            "train.branch_from='': empty; give the trunk's run directory, or "
            "leave the setting out for a whole run",
        ),
        (
            ["train.branch_from=' '"],
            "train.branch_from=' ': empty; give the trunk's run "
            "directory, or leave the setting out for a whole run",
        ),
        # what the config alone decides was refused only after the corpus was tokenized
        (
            ["schedule=cosine", "train.branch_from=/nonexistent"],
            "train.branch_from needs "
            "schedule=wsd (warmup-stable-decay), not schedule.name=cosine: only there does the LR "
            "before the decay not depend on the budget",
        ),
    ],
)
def test_branch_from_mistakes_are_refused_alone_before_the_corpus(
    tmp_path, capsys, monkeypatch, args, line
):
    monkeypatch.setenv("MLTRAIN_CACHE_DIR", str(tmp_path / "cold_cache"))
    code, out, err = cli([*BASE, "train.flops_scale=0.5", *args], tmp_path, capsys)
    assert (code, out.strip(), _error(err)) == (2, "", line)
    assert not (tmp_path / "cold_cache").exists() and not (tmp_path / "outputs").exists()


def test_a_sweep_over_mistyped_trunks_is_refused_before_a_job_starts(tmp_path, capsys):
    """It passed the sweep's pre-check: a sweep directory, two job directories with a log
    each, "2 job(s) of the sweep failed" and exit 1 (found by a helper)."""
    sweep = tmp_path / "sweep"
    args = ["-m", *BASE, "train.branch_from=/nonexistent,/nope", f"hydra.sweep.dir={sweep}"]
    code, out, err = cli(args, tmp_path, capsys)
    assert code == 2 and not sweep.exists()
    assert _error(err) == (
        "job 0 of the sweep's 2 (train.branch_from=/nonexistent): train.branch_from=/nonexistent: "
        "not a run directory; no job was started"
    )


# --------------------------------------------------------------------------- hierarchies
def test_a_depth_that_does_not_fit_names_the_hierarchy_and_depths_that_do(tmp_path, capsys):
    code, _, err = cli([*CFG, "coarsening=grow_width_depth", "model.n_layer=6"], tmp_path, capsys)
    msg = _error(err)
    assert code == 2 and "coarsening=recursive" not in msg
    assert msg.startswith(
        "coarsening.hierarchy.name=recursive: factor^depth = 2^2 = 4, but it must divide "
        "model.n_layer=6: use model.n_layer=4 or model.n_layer=8, or "
    )
    for fix in ("model.n_layer=4", "model.n_layer=8"):
        code, _, err = cli([*CFG, "coarsening=grow_width_depth", fix], tmp_path, capsys)
        assert code == 0, err


def test_other_raptr_blocks_say_the_stages_change_with_them(tmp_path, capsys):
    args = ["model.n_layer=8", "coarsening=raptr", "coarsening.raptr.blocks=[4,6]"]
    code, _, err = cli([*CFG, *args], tmp_path, capsys)
    msg = _error(err)
    assert code == 2 and "coarsening.stages.levels and .shares change with them" in msg
    assert msg.endswith(
        "e.g. 'coarsening.stages.levels=[raptr_4,raptr_6,fine]' "
        "'coarsening.stages.shares=[0.33,0.33,0.34]'"
    )
    code, out, err = cli([*CFG, *args, *_pasted(msg, "e.g. ")], tmp_path, capsys)
    assert code == 0, err
    assert list(OmegaConf.create(out).coarsening.stages.levels) == ["raptr_4", "raptr_6", "fine"]


# --------------------------------------------------------------------------- presets
def test_two_presets_are_refused_in_one_line(tmp_path, capsys):
    code, out, err = cli([*CFG, "experiment=raptr", "experiment=grow"], tmp_path, capsys)
    msg = _error(err)
    assert code == 2 and not out
    assert msg.startswith("experiment= is given 2 times (experiment=raptr, experiment=grow): ")
    command = _pasted(msg, "with the last one: ")
    assert command == ["mltrain", *CFG, "experiment=grow"]
    code, out, err = cli(command[1:], tmp_path, capsys)
    assert code == 0, err
    assert OmegaConf.create(out).experiment_name == "grow"


def test_a_preset_whose_scheme_is_replaced_is_named_for_what_runs(tmp_path, capsys):
    code, out, err = cli(
        ["mode=smoke", *TINY, "experiment=grow_width", "coarsening=even_odd"], tmp_path, capsys
    )
    assert code == 0, err
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run.name.endswith("_grow_width+coarsening=even_odd")
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.experiment_name == "grow_width+coarsening=even_odd"
    assert saved.coarsening.scheme == "vcycle"


@pytest.mark.parametrize(
    "args, name",
    [
        (["experiment=grow_width"], "grow_width"),
        (["experiment=grow_width", "coarsening=grow_width"], "grow_width"),  # the preset's own
        (["experiment=grow_width", "coarsening=none", "experiment_name=mine"], "mine"),
        (["experiment=paper_small", "coarsening=none"], "paper_small+coarsening=none"),
    ],
)
def test_the_name_changes_only_when_the_preset_scheme_does(tmp_path, capsys, args, name):
    code, out, err = cli([*CFG, *args], tmp_path, capsys)
    assert code == 0, err
    assert OmegaConf.create(out).experiment_name == name


# --------------------------------------------------------------------------- misspelt settings
@pytest.mark.parametrize(
    "typo, meant, section",
    [
        ("train.stpes=10", "train.steps", "train"),
        ("coarsening.vcycle.detla=0.5", "coarsening.vcycle.delta", "coarsening.vcycle"),
        ("trian.steps=10", "train", "the top level"),
    ],
)
def test_a_misspelt_setting_names_the_closest_and_lists_the_section(
    tmp_path, capsys, typo, meant, section
):
    """Found by a new user (session 33): a misspelt key got OmegaConf's "Key 'stpes' not in
    'TrainConfig'" with no list of the settings, unlike ``+train.foo=1``."""
    code, out, err = cli([*CFG, typo], tmp_path, capsys)
    msg = _error(err)
    assert code == 2 and not out and "TrainConfig" not in msg and "MLTrainConfig" not in msg
    key = typo.split("=")[0] if section != "the top level" else typo.split(".")[0]
    assert msg.startswith(f"{key} is not a setting; did you mean {meant}? {section} has: ")
    fixed = typo.replace(key, meant, 1)
    code, out, err = cli([*CFG, fixed], tmp_path, capsys)
    assert code == 0, err


def test_a_misspelt_setting_added_with_plus_names_the_closest_too(tmp_path, capsys):
    """``+train.stpes=10`` listed train's settings without "did you mean train.steps?", which
    ``train.stpes=10`` says: both now give the same one line."""
    import dataclasses

    from mltrain.config.schema import TrainConfig

    code, out, err = cli([*CFG, "+train.stpes=10"], tmp_path, capsys)
    names = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
    assert (code, out) == (2, "")
    assert _error(err) == (
        f"train.stpes is not a setting; did you mean train.steps? train has: {names}"
    )
    assert cli([*CFG, "train.stpes=10"], tmp_path, capsys) == (2, "", err)


@pytest.mark.parametrize(
    "args, typo, meant, names",
    [
        (
            [],
            "optimizer.lrr=1e-3",
            "optimizer.lr",
            "lr, momentum, nesterov, dampening, weight_decay",
        ),
        (
            ["optimizer=adamw"],
            "optimizer.bet=[0.9,0.99]",
            "optimizer.betas",
            "lr, betas, eps, weight_decay",
        ),
    ],
)
def test_a_misspelt_optimizer_setting_names_the_closest_of_the_chosen_optimizer(
    tmp_path, capsys, args, typo, meant, names
):
    """``optimizer.lrr=1e-3`` got Hydra's "Could not override 'optimizer.lrr'; Key 'lrr' not in
    'SGDConfig'" (an internal class, no suggestion), unlike ``train.stpes=10``: the optimizer's
    settings depend on the option chosen (``optimizer=sgd|adamw``); now the same one line as
    ``+optimizer.lrr=1e-3``, with the chosen optimizer's settings."""
    key = typo.split("=")[0]
    code, out, err = cli([*CFG, *args, typo], tmp_path, capsys)
    assert (code, out) == (2, "")
    assert _error(err) == (f"{key} is not a setting; did you mean {meant}? optimizer has: {names}")
    assert cli([*CFG, *args, "+" + typo], tmp_path, capsys) == (2, "", err)
    code, out, err = cli([*CFG, *args, typo.replace(key, meant, 1)], tmp_path, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    "chosen, setting, owner, names",
    [
        ("adamw", "optimizer.momentum=0.8", "sgd", "lr, betas, eps, weight_decay"),
        (
            "sgd",
            "optimizer.betas=[0.9,0.99]",
            "adamw",
            "lr, momentum, nesterov, dampening, weight_decay",
        ),
    ],
)
def test_the_other_optimizers_setting_names_the_optimizer_it_belongs_to(
    tmp_path, capsys, chosen, setting, owner, names
):
    """``optimizer=adamw optimizer.momentum=0.8`` said "optimizer.momentum is not a setting;
    optimizer has: _target_, _partial_, lr, ...": not that momentum is SGD's, and it listed
    Hydra's build keys among the settings. The settings are those of SGDConfig/AdamWConfig
    (schema.py) less the two underscored ones; with the optimizer named the setting composes."""
    key = setting.split("=")[0]
    for added in ("", "+"):
        code, out, err = cli([*CFG, f"optimizer={chosen}", added + setting], tmp_path, capsys)
        assert (code, out) == (2, "")
        assert _error(err) == (
            f"{key} is a setting of optimizer={owner}, not of optimizer={chosen}, which has: {names}"
        )
    code, out, err = cli([*CFG, f"optimizer={owner}", setting], tmp_path, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    "arg",
    ["optimizer._target_=torch.optim.AdamW", "~optimizer._target_", "optimizer._partial_=false"],
)
def test_the_optimizers_build_keys_are_refused_naming_the_options(tmp_path, capsys, arg):
    """``optimizer._target_=torch.optim.AdamW`` under SGD's settings said "optimizer.momentum is a
    setting of optimizer=sgd" (the user wrote no momentum); ``_partial_=false`` ended mid-sentence
    in a build error; ``~optimizer._target_`` got Hydra's message. The option chooses them."""
    key = arg.lstrip("~").split("=")[0]
    code, out, err = cli([*CFG, arg], tmp_path, capsys)
    assert (code, out) == (2, "")
    assert _error(err) == (
        f"{arg}: {key} is set by the optimizer option, not a setting: choose optimizer=sgd or "
        "optimizer=adamw"
    )


def test_a_misspelt_setting_of_the_other_optimizer_names_it_and_its_option(tmp_path, capsys):
    code, out, err = cli([*CFG, "optimizer=adamw", "optimizer.momentun=0.9"], tmp_path, capsys)
    assert (code, out) == (2, "")
    assert _error(err) == (
        "optimizer.momentun is not a setting; did you mean optimizer.momentum (a setting of "
        "optimizer=sgd)? optimizer=adamw has: lr, betas, eps, weight_decay"
    )


@pytest.mark.parametrize(
    "args, key, fix, value",
    [
        ([], "optimizer.lr", "optimizer=sgd's default: optimizer.lr=0.5", 0.5),
        (
            ["optimizer=adamw"],
            "optimizer.lr",
            "optimizer=adamw's default: optimizer.lr=0.001",
            1e-3,
        ),
        (
            ["optimizer=adamw"],
            "optimizer.betas",
            "optimizer=adamw's default: 'optimizer.betas=[0.9,0.95]'",
            [0.9, 0.95],
        ),
    ],
)
def test_removing_an_optimizer_setting_says_how_to_set_it(tmp_path, capsys, args, key, fix, value):
    """``~optimizer.lr`` got Hydra's "SGDConfig (DictConfig) does not support deletion"; now the
    line other sections' settings get, with the chosen optimizer's default (SGDConfig lr 0.5,
    AdamWConfig lr 1e-3 and betas [0.9, 0.95] in schema.py), which composes when pasted."""
    code, out, err = cli([*CFG, *args, f"~{key}"], tmp_path, capsys)
    assert (code, out) == (2, "")
    assert _error(err) == (
        f"~{key}: {key} is a setting, which cannot be removed; set it instead, e.g. to {fix}"
    )
    code, out, err = cli([*CFG, *args, *shlex.split(fix.split(": ")[1])], tmp_path, capsys)
    assert code == 0, err
    assert OmegaConf.select(OmegaConf.create(out), key) == value


def test_warmup_past_a_short_run_suggests_a_warmup_that_fits(tmp_path, capsys):
    code, _, err = cli([*TINY, "train.steps=10", "schedule.warmup_steps=10"], tmp_path, capsys)
    msg = _error(err)
    assert code == 2 and msg.endswith(": add schedule.warmup_steps=1")
    code, out, err = cli([*CFG, "train.steps=10", *_pasted(msg, ": add ")], tmp_path, capsys)
    assert code == 0, err
    assert OmegaConf.create(out).schedule.warmup_steps == 1


# The name is an override mltrain adds: it goes among the command's overrides, not after a
# trailing Hydra flag (appended after `--cfg job` or `-m`, Hydra refused it as unrecognized).
def test_the_variant_name_composes_with_cfg_job_at_the_end(tmp_path):
    args = ["experiment=grow_width", "coarsening=even_odd", *TINY, "--cfg", "job"]
    r = run_mltrain(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "unrecognized arguments" not in r.stderr
    cfg = OmegaConf.create(r.stdout)
    assert cfg.experiment_name == "grow_width+coarsening=even_odd"
    assert cfg.coarsening.scheme == "vcycle"


def test_the_variant_name_composes_with_multirun_at_the_end(tmp_path):
    # train.seed=0 replaces the preset's sweep over seeds: one job, two steps
    args = ["experiment=grow_width", "coarsening=none", "mode=smoke", *TINY, "train.seed=0"]
    r = run_mltrain([*args, "train.steps=2", "train.max_steps=2", "-m"], tmp_path)
    assert r.returncode == 0, r.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert sweep.name.endswith("_grow_width+coarsening=none")
    (job,) = [d for d in sweep.iterdir() if d.is_dir()]
    saved = OmegaConf.load(job / ".hydra" / "config.yaml")
    assert saved.experiment_name == "grow_width+coarsening=none"
    assert saved.coarsening.scheme == "single_level"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["a=1", "--cfg", "job"], ["a=1", "N=1", "--cfg", "job"]),
        (["a=1", "-m"], ["a=1", "N=1", "-m"]),
        (["-m", "a=1"], ["-m", "a=1", "N=1"]),
        (["-cd", "d", "a=1", "-cn", "c"], ["-cd", "d", "a=1", "N=1", "-cn", "c"]),
        (
            ["--config-name", "c", "a=1", "hydra.run.dir=x", "--package", "p", "-c", "all"],
            ["--config-name", "c", "a=1", "hydra.run.dir=x", "N=1", "--package", "p", "-c", "all"],
        ),
        (["--cfg", "job"], ["--cfg", "job", "N=1"]),
    ],
)
def test_added_overrides_go_among_the_overrides(argv, expected):
    from mltrain.config.arguments import overrides_of, with_overrides

    out = with_overrides(argv, ["N=1"])
    assert out == expected
    assert overrides_of(out) == [*overrides_of(argv), "N=1"]


# --------------------------------------------------------------------------- the judge's commands
def test_the_judges_commands_sweep_next_to_the_run_they_repeat(tmp_path, capsys):
    """ "add them with" and "extend the grid with" name a sweep directory beside the best run
    (so the same mltrain-compare over the folder above finds the new runs), quoted for Hydra
    where the folder has a space, a comma and a quote; pasted, Hydra composes that directory
    and the seeds or learning rate the message promises."""
    from mltrain.analysis.judging import frontier as F
    from mltrain.analysis.judging.runs import find_runs
    from tests.analysis.test_frontier import tuned

    root = tmp_path / "a dir, 'odd"
    for lr, loss in ((0.1, 4.0), (0.2, 4.1), (0.4, 4.2)):  # best: the smallest tried, one seed
        tuned(root, 1000, lr, loss)
    (f,) = F.frontier_families(find_runs([root]), [])
    cmds = {
        k: shlex.split(next(w for w in f.warnings if k in w).split(k, 1)[1])
        for k in ("extend the grid with: ", "add them with: ", "add one at 2.00e3 with: ")
    }
    want = {
        "extend the grid with: ": ("b1000_lr0.1_s0_lr0.05", "optimizer.lr=0.05", "train.seed=0"),
        "add them with: ": ("b1000_lr0.1_s0_seeds1-2", "optimizer.lr=0.1", "train.seed=1,2"),
        "add one at 2.00e3 with: ": (  # the next budget: twice the largest, its lr grid
            "b1000_lr0.1_s0_flops_scale2_lr0.05-0.1-0.2",
            "optimizer.lr=0.05,0.1,0.2",
            "train.seed=0",
        ),
    }
    for k, args in cmds.items():
        assert args[:2] == ["mltrain", "-m"]
        one = [
            a.split(",")[0] if a.startswith(("train.seed=", "optimizer.lr=")) else a
            for a in args[2:]
        ]
        code, out, err = cli([*one, *TINY, "--cfg", "hydra"], tmp_path, capsys)  # one of its jobs
        assert code == 0, err
        hydra = OmegaConf.create(out)
        sweep_dir, lr, seeds = want[k]
        assert hydra.hydra.sweep.dir == str(root / sweep_dir)
        assert lr in args and args[-2] == seeds
        assert ("train.flops_scale=2" in args) == k.startswith("add one")


@pytest.mark.parametrize(
    "own",
    [
        ["train.branch_points=[]"],  # make demo's 1-block run: its [] is kept
        ["train.branch_points=[]", "train.branch_from=trunk"],  # a trunk's decay
    ],
)
def test_the_judges_seed_command_for_a_run_without_branches_runs(tmp_path, own):
    """experiment=third_envelope's preset branches at 1/8, 1/4 and 1/2: a 1/8 run made with
    train.branch_points=[] (make demo's) repeated without it fails validation ("below this
    trunk's train.flops_scale=0.125"), as the pasted command did. Kept, or for a branch given
    as [] with train.branch_from left out, the command composes, validates and plans."""
    from mltrain.analysis.judging import frontier as F
    from mltrain.analysis.judging.runs import find_runs
    from tests.analysis.test_frontier import tuned
    from tests.test_docs_commands import Command, compose_command

    base = ["experiment=third_envelope", *TINY[:2], "train.flops_scale=0.125"]
    for lr, loss in ((2e-3, 4.1), (4e-3, 4.0), (8e-3, 4.2)):
        tuned(tmp_path / "front", 3.2e13, lr, loss, 0, *base, *own)
    (f,) = F.frontier_families(find_runs([tmp_path / "front"]), [])
    (w,) = [w for w in f.warnings if "add them with: " in w]
    args = shlex.split(w.split("add them with: ", 1)[1])
    assert "train.branch_points=[]" in args
    assert not any(a.startswith("train.branch_from") for a in args)
    assert args[-1].strip("'").endswith("_seeds1-2")  # named by the seeds only
    compose_command(Command("warning", 0, shlex.join(args)))
