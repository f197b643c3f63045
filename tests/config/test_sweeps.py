"""Sweeps (Hydra multirun), the sweep presets, iso-FLOP baselines and mltrain-compare end to end."""

from __future__ import annotations

import itertools
import json
import shlex

import pytest
from omegaconf import OmegaConf

from mltrain.config import compose as plain_compose
from mltrain.config import config_dir, validate
from mltrain.levels import build_hierarchy
from tests.helpers import (
    PLUGIN_PRESETS,
    TINY,
    cli,
    make_job,
    read_jsonl,
    run_job,
    run_mltrain,
    wandb_records,
)

SMOKE = ["mode=smoke", *TINY]


def test_two_job_sweep_gives_two_dirs_and_two_wandb_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "sweep"
    code, out, err = cli(
        [
            "-m",
            *SMOKE,
            "logger=wandb",
            "coarsening.vcycle.delta=0.1,0.5",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name.split(",")[0] for j in jobs] == [
        "0_coarsening.vcycle.delta=0.1",
        "1_coarsening.vcycle.delta=0.5",
    ]
    ids, deltas = [], []
    for job in jobs:
        assert any("val/loss" in r for r in read_jsonl(job / "metrics.jsonl"))
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        (run,) = [r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
        ids.append(run.run_id)
        coarsening = next(
            json.loads(u.value_json) for u in run.config.update if u.key == "coarsening"
        )
        deltas.append(coarsening["vcycle"]["delta"])
        assert run.run_group == sweep.name and run.job_type == "multilevel"
        history = [r for r in wandb_records(run_file) if r.WhichOneof("record_type") == "history"]
        assert len(history) == len(read_jsonl(job / "metrics.jsonl"))  # one W&B row per record
    assert ids[0] != ids[1] and deltas == [0.1, 0.5]


@pytest.mark.parametrize(
    "sweep_args, num, swept, problem",
    [
        (
            ["coarsening.vcycle.delta=0.5,1.5"],
            1,
            "coarsening.vcycle.delta=1.5",
            "coarsening.vcycle.delta=1.5 is not allowed: must be in [0, 1]",
        ),
        (  # a rule of the plan, not of one setting: 6 blocks do not fit 2^2 recursive levels
            ["model.n_layer=4,6", "coarsening=grow_width_depth"],
            1,
            "model.n_layer=6",
            None,
        ),
    ],
)
def test_a_bad_value_in_any_job_refuses_the_sweep_before_a_job_starts(
    tmp_path, capsys, sweep_args, num, swept, problem
):
    """``coarsening.vcycle.delta=0.5,1.5`` trained job 0 (231 s at paper_small) before job 1 was
    refused. Every job is now checked as it would check itself, before the first starts: one
    line names the job and the problem, exit 2, no sweep directory; the valid values run."""
    sweep = tmp_path / "sweep"
    code, out, err = cli(["-m", *SMOKE, *sweep_args, f"hydra.sweep.dir={sweep}"], tmp_path, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and not sweep.exists(), err
    assert line.startswith(f"mltrain: error: job {num} of the sweep's 2 ({swept}): ")
    assert line.endswith("; no job was started")
    if problem is None:  # the line the job itself gives, run alone
        alone = cli([*SMOKE, *[a.replace("4,6", "6") for a in sweep_args]], tmp_path, capsys)
        problem = alone[2].strip().splitlines()[-1].removeprefix("mltrain: error: ")
        assert alone[0] == 2 and problem
    assert f"): {problem}; no job" in line
    good = [a.split("=")[0] + "=" + a.split("=")[1].split(",")[0] for a in sweep_args]
    code, out, err = cli(["-m", *SMOKE, *good, f"hydra.sweep.dir={sweep}"], tmp_path, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    "args, job, problem",
    [
        (  # composition: checked too, and before Hydra's batch of one would train job 0
            ["coarsening=none,bogus", "hydra.sweeper.max_batch_size=1"],
            "job 1 of the sweep's 2 (coarsening=bogus)",
            "Could not find 'coarsening/bogus'; available options in 'coarsening': custom, ",
        ),
        (
            ["model.n_layer=2,abc"],
            "job 1 of the sweep's 2 (model.n_layer=abc)",
            "Value 'abc' of type 'str' could not be converted to Integer",
        ),
        (  # the corpus's files are listed (not read)
            ["coarsening=none", "data=text_files", "data.paths=[{tmp}/a.txt],[{tmp}/missing.txt]"],
            "job 1 of the sweep's 2 (data.paths=[{tmp}/missing.txt])",
            "data.paths: {tmp}/missing.txt does not exist",
        ),
        (  # a multirun of one job wrote its folders before it was refused
            ["coarsening.vcycle.delta=2"],
            "job 0 of the sweep's 1 (its defaults)",
            "coarsening.vcycle.delta=2.0 is not allowed: must be in [0, 1]",
        ),
        (  # the preset's swept delta is pinned on the command line: only the seed is swept
            ["experiment=sweep_delta", "coarsening.vcycle.delta=0.5", "train.seed=0,-1"],
            "job 1 of the sweep's 2 (train.seed=-1)",
            "train.seed=-1 is not allowed",
        ),
    ],
)
def test_every_kind_of_problem_of_any_job_is_refused_before_a_job_starts(
    tmp_path, capsys, args, job, problem
):
    (tmp_path / "a.txt").write_text("some text to train on\n" * 50)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = cli(["-m", *SMOKE, *args], tmp_path, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and not (tmp_path / "outputs").exists(), err
    assert line.startswith(f"mltrain: error: {job.replace('{tmp}', str(tmp_path))}: "), line
    assert problem.replace("{tmp}", str(tmp_path)) in line and line.endswith("; no job was started")


def _presets():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mltrain.config import register_configs

    register_configs()
    for f in sorted((config_dir() / "experiment").glob("*.yaml")):
        if (
            f.stem in PLUGIN_PRESETS
        ):  # their params are the plugin's search space (tests/test_extras.py)
            continue
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
            cfg = compose("config", overrides=[f"experiment={f.stem}"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params or {})
        if params:
            yield f.stem, params


PRESETS = list(_presets())


@pytest.mark.parametrize("preset", [[], ["experiment=sweep_delta", "coarsening.vcycle.delta=0.5"]])
@pytest.mark.parametrize(
    "arg, flags",
    [
        ('hydra.sweeper.params={train.seed:"0,-1"}', ["-m"]),
        ('+hydra.sweeper.params={train.seed:"0,-1"}', ["-m"]),
        ('++hydra.sweeper.params={train.seed:"0,-1"}', ["-m"]),
        # one entry (an AssertionError traceback), -m last, or no -m but --cfg job (found by a
        # helper: the suggestion put the entries after the trailing -m, or kept --cfg with -m)
        ('hydra.sweeper.params.train.seed="0,-1"', ["-m"]),
        ('+hydra.sweeper.params.train.seed="0,-1"', ["LAST-m"]),
        ('hydra.sweeper.params={train.seed:"0,-1"}', ["--cfg", "job"]),
    ],
)
def test_sweeper_params_on_the_command_line_is_one_line_that_pastes_as_the_same_sweep(
    tmp_path, capsys, preset, arg, flags
):
    """``hydra.sweeper.params={train.seed:"0,-1"}`` ended in an AttributeError traceback from
    OmegaConf (a dict merged into the null ``params``), and under a preset that sets params in
    "Key 'train.seed' is not in struct". Now one line, exit 2, no sweep directory, and the
    command it suggests sweeps the same entries: pasted, Hydra's expansion makes the 2 jobs
    (train.seed=-1 is job 1 of 2, refused before a job starts, so nothing trains here)."""
    sweep = tmp_path / "sweep"
    first, last = ([], ["-m"]) if flags == ["LAST-m"] else (flags, [])
    args = [*first, *SMOKE, *preset, arg, f"hydra.sweep.dir={sweep}", *last]
    code, out, err = cli(args, tmp_path, capsys)
    assert (code, out) == (2, ""), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mltrain: error: {arg}: "), err
    assert not sweep.exists()
    pasted = shlex.split(lines[0].split("give its entries as overrides: ", 1)[1])
    assert pasted[0] == "mltrain" and arg not in pasted and "train.seed=0,-1" in pasted
    code, out, err = cli(pasted[1:], tmp_path, capsys)
    assert code == 2 and not sweep.exists(), err
    line = err.strip().splitlines()[-1]
    assert line.startswith("mltrain: error: job 1 of the sweep's 2 (train.seed=-1): "), err


@pytest.mark.parametrize("given", [[], ["hydra.sweep.dir=mine"]])
def test_a_sweep_over_presets_is_one_sweep_directory_naming_each_job_by_its_preset(
    tmp_path, capsys, given
):
    """``-m experiment=paper_small,grow`` wrote each preset's job to a sweep directory of its own
    (``<time>_paper_small``, ``<time>_grow``; Hydra names it from each job's experiment_name)
    and multirun.yaml to a third, ``<time>_default``: mltrain-compare over the printed sweep
    found nothing. Now one directory holds multirun.yaml and both jobs, each named after the
    preset its config says it ran (``.hydra/config.yaml``), in the directory given if any."""
    code, out, err = cli(["-m", "experiment=paper_small,grow", *SMOKE, *given], tmp_path, capsys)
    assert code == 0, err
    if given:
        sweeps = [tmp_path / "mine"]
        assert not (tmp_path / "outputs").exists()
    else:
        sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
        assert len(sweeps) == 1 and sweeps[0].name.endswith("_paper_small+grow"), sweeps
    (sweep,) = sweeps
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert (sweep / "multirun.yaml").is_file() and len(jobs) == 2
    for num, (job, preset) in enumerate(zip(jobs, ["paper_small", "grow"])):
        ran = OmegaConf.load(job / ".hydra" / "config.yaml").experiment_name
        assert ran == preset and job.name.startswith(f"{num}_{preset}_")
        assert (job / "metrics.jsonl").is_file()


def test_sweep_presets_exist():
    assert {name for name, _ in PRESETS} >= {
        "sweep_delta",
        "sweep_coarse_steps",
        "sweep_window",
        "ablation_single_coarse",
        "ablation_depth",
        "seeds",
    }


@pytest.mark.parametrize("name, params", PRESETS, ids=[n for n, _ in PRESETS])
def test_every_job_of_every_sweep_preset_composes_and_validates(name, params):
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    for combo in itertools.product(*values):
        cfg = plain_compose([f"experiment={name}", *(f"{k}={v}" for k, v in zip(keys, combo))])
        validate(cfg)
        build_hierarchy(cfg.coarsening, cfg.model.n_layer)
        assert cfg.train.steps <= 300  # small enough for a CPU


def test_iso_flop_baseline_from_target_flops_and_compare_end_to_end(tmp_path):
    run_job(
        tmp_path / "multilevel",
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=4",
        "coarsening.vcycle.window=3",
        "train.steps=6",
        "train.eval_every=2",
    )
    budget = read_jsonl(tmp_path / "multilevel" / "metrics.jsonl")[-1]["perf/flops"]
    sl = make_job(
        tmp_path / "iso", "coarsening=none", f"train.target_flops={budget}", "train.eval_every=2"
    )
    fine = sl.plan.step_flops["fine"].total
    assert sl.total_steps == round(budget / fine)
    sl.run()
    sl.close()
    final = read_jsonl(tmp_path / "iso" / "metrics.jsonl")[-1]["perf/flops"]
    assert abs(final - budget) <= fine  # within one step of the budget
    res = run_mltrain(
        [str(tmp_path), "--out", str(tmp_path / "cmp")], cwd=tmp_path, entry="mltrain-compare"
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cmp" / "loss_vs_flops.png").stat().st_size > 10_000
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    assert "single-level, same FLOPs" in summary
    # that baseline now sits beside the multilevel run at its FLOPs: no command for one
    assert "Same-FLOPs single-level baselines" not in summary
    assert res.stdout.splitlines()[0].startswith("multilevel")  # the headline comes first
