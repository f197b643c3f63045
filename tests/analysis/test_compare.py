"""``mltrain-compare`` on hand-made metrics files of known curves (values computed by hand)."""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from mltrain.analysis import compare as C
from mltrain.analysis.figures import plot_axes, plots, ratio_plot
from mltrain.analysis.judging.curves import fmt_flops
from mltrain.analysis.reports import headline, tables
from mltrain.analysis.reports import summary as S
from tests.helpers import run_mltrain

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@functools.cache
def _config(overrides: tuple[str, ...]) -> str:
    from mltrain.config import compose

    cfg = compose(["model=tiny", "logger=none", *overrides])
    return json.dumps(OmegaConf.to_container(cfg, resolve=True))


def write_run(
    path: Path,
    flops,
    losses,
    *overrides: str,
    nonembed=None,
    coarse=False,
    metrics=True,
    meta: dict | None = None,
) -> Path:
    """A run directory: ``.hydra/config.yaml`` of ``mltrain model=tiny <overrides>`` and a
    metrics.jsonl whose evaluations are (flops[i], losses[i]) at fine step i (i=0: step 0);
    ``meta``: the ``run.json`` (none by default, as older runs)."""
    fine = len(flops) - 1
    extra = (
        ()
        if any(o.startswith("train.target_flops") for o in overrides)
        else (f"train.steps={fine}",)
    )
    cfg = json.loads(_config(tuple(overrides) + extra))
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), path / ".hydra" / "overrides.yaml")
    if not metrics:
        return path
    nonembed = [f / 2 for f in flops] if nonembed is None else nonembed
    recs = [
        {
            "step": 0,
            "fine_step": 0,
            "level": "fine",
            "perf/flops": 0,
            "perf/flops_nonembed": 0,
            "perf/wall_s": 0.5,
            "val/loss": losses[0],
            "val/ppl": math.exp(losses[0]),
            "perf/flops_eval": 7,
        }
    ]
    step = 0
    for i in range(1, len(flops)):
        if coarse:  # a coarse step between evaluations: FLOPs and a training loss, no evaluation
            step += 1
            recs.append(
                {
                    "step": step,
                    "fine_step": i - 1,
                    "level": "coarse_a",
                    "train/loss": 99.0,
                    "perf/flops": (flops[i - 1] + flops[i]) / 2,
                    "perf/flops_nonembed": (nonembed[i - 1] + nonembed[i]) / 2,
                    "perf/wall_s": i - 0.5,
                }
            )
        step += 1
        recs.append(
            {
                "step": step,
                "fine_step": i,
                "level": "fine",
                "train/loss": losses[i] + 0.5,
                "lr": 0.1,
                "perf/flops": flops[i],
                "perf/flops_nonembed": nonembed[i],
                "perf/tokens": 64 * i,
                "perf/tok_per_s": 100.0,
                "perf/wall_s": float(i),
                "perf/flops_level/fine": flops[i],
                "val/loss": losses[i],
                "val/ppl": math.exp(losses[i]),
                "perf/flops_eval": 7 * (i + 1),
            }
        )
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if meta is not None:
        (path / "run.json").write_text(json.dumps(meta))
    return path


SL, SF = "single-level, same fine steps", "single-level, same FLOPs"
EO = "multilevel even_odd δ=0.25 m=20 w=5"
SINGLE = [0, 100, 200, 300, 400]
EVEN_ODD = [0, 50, 100, 150, 500]
ISO = [0, 125, 250, 375, 500]


def make_sweep(root: Path) -> Path:
    """Single-level (2 seeds, final loss 2.0), even_odd (FLOPs 500) and an iso-FLOP single-level
    run with 500 FLOPs, as the numbered job directories of a multirun."""
    write_run(
        root / "0_coarsening=none,train.seed=0",
        SINGLE,
        [10, 8, 6, 4, 2],
        "coarsening=none",
        "train.seed=0",
    )
    write_run(
        root / "1_coarsening=none,train.seed=1",
        SINGLE,
        [10, 8.5, 6.5, 4, 2],
        "coarsening=none",
        "train.seed=1",
    )
    write_run(
        root / "2_coarsening=even_odd",
        EVEN_ODD,
        [10, 7, 5, 3, 1.5],
        "coarsening=even_odd",
        nonembed=[0, 20, 40, 60, 200],
        coarse=True,
    )
    write_run(
        root / "3_iso", ISO, [10, 7.5, 5, 3, 1.8], "coarsening=none", "train.target_flops=500"
    )
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def exact(e: C.Bounded) -> float:
    """The value of an estimate that must be exact (not a bound)."""
    assert e is not None and e.is_exact, e
    return e.lo


# --------------------------------------------------------------------------- pure functions
def test_flops_to_target_interpolates_linearly_in_loss():
    f, lo = [0, 100, 300], [6.0, 5.0, 3.0]
    assert C.flops_to_target(f, lo, 4.0) == pytest.approx(200.0)  # halfway from 5.0 to 3.0
    assert C.flops_to_target(f, lo, 4.5) == pytest.approx(150.0)
    assert C.flops_to_target(f, lo, 5.0) == 100.0  # reached exactly at an evaluation
    assert C.flops_to_target(f, lo, 3.0) == 300.0
    assert C.flops_to_target(f, lo, 7.0) == 0.0  # already at or below at the first evaluation
    assert C.flops_to_target(f, lo, 2.9) is None  # never reached
    # the first crossing counts, a later rise does not matter
    assert C.flops_to_target([0, 10, 20, 30], [6, 4, 5, 3], 4.5) == pytest.approx(7.5)


def test_loss_at_flops_interpolates_linearly_in_flops():
    f, lo = [0, 100, 300], [6.0, 5.0, 3.0]
    assert C.loss_at_flops(f, lo, 200) == pytest.approx(4.0)
    assert C.loss_at_flops(f, lo, 100) == 5.0
    assert C.loss_at_flops(f, lo, 300) == 3.0
    assert C.loss_at_flops(f, lo, 301) is None


def test_flops_ratio_curve_by_hand():
    base = ([0, 100, 200, 300, 400], [10, 8, 6, 4, 2])
    multi = ([0, 50, 100, 150], [10, 7, 5, 3])
    r = C.flops_ratio_curve([multi], [base], [7, 6, 5, 4, 3, 2.5])
    # L=7: 50/150; L=6: 75/200; L=5: 100/250; L=4: 125/300; L=3: 150/350; 2.5: multi never
    np.testing.assert_allclose(r[:5], [50 / 150, 75 / 200, 100 / 250, 125 / 300, 150 / 350])
    assert math.isnan(r[5])
    levels = C.ratio_levels([multi], [base])
    assert levels[0] == pytest.approx(3.0) and levels[-1] == pytest.approx(7.0)  # both reach 3..7


def test_seeds_are_aggregated_on_the_mean_curve():
    curves = [([0, 100, 300], [6, 5, 3]), ([0, 100, 300], [6, 5.5, 3.5])]
    # mean curve: 6, 5.25, 3.25 -> 4.0 is reached at 100 + (5.25 - 4) / (5.25 - 3.25) * 200 = 225
    mean, reached = C.seeds_to_target(curves, 4.0)
    assert (mean, reached) == (pytest.approx(225.0), 2)
    assert C.seeds_to_target(curves, 3.2) == (None, 1)  # mean ends at 3.25; one seed reaches 3.2
    assert C.seeds_to_target(curves, 3.25) == (pytest.approx(300.0), 1)


# --------------------------------------------------------------------------- runs and summary
def test_sweep_directory_is_expanded_and_failed_job_skipped(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    write_run(
        sweep / "4_failed", SINGLE, [10] * 5, "coarsening=none", "train.seed=7", metrics=False
    )
    runs = C.find_runs([sweep])
    assert [r.path.name[0] for r in runs] == ["0", "1", "2", "3"]
    err = capsys.readouterr().err
    assert "skipping" in err and "4_failed" in err and "metrics.jsonl" in err
    # the fine-level training curve leaves the coarse steps out
    assert list(runs[2].train.loss) == [7.5, 5.5, 3.5, 2.0]


def test_summary_numbers_by_hand(tmp_path):
    configs = C.group_configurations(C.find_runs([make_sweep(tmp_path / "sweep")]))
    labels = [c.label for c in configs]
    assert labels == [SL, SF, EO]
    s = S.summarize(configs)
    assert s.baseline.label == SL and s.target == pytest.approx(2.0)
    single, iso, eo = s.rows
    assert single.final_loss == (2.0, 2.0, 2.0) and len(single.config.runs) == 2
    assert single.to_target["head"] == (pytest.approx(400.0), 2)
    # even_odd: 150 + (3 - 2) / (3 - 1.5) * (500 - 150); non-embedding FLOPs are 0.4x
    assert eo.to_target["head"][0] == pytest.approx(150 + 350 / 1.5)
    assert eo.to_target["nonembed"][0] == pytest.approx(0.4 * (150 + 350 / 1.5))
    # iso-FLOP single-level: 375 + (3 - 2) / (3 - 1.8) * 125
    assert iso.to_target["head"][0] == pytest.approx(375 + 125 / 1.2)
    assert exact(eo.ratios[(SL, "head")]) == pytest.approx((150 + 350 / 1.5) / 400)
    assert exact(eo.ratios[(SL, "nonembed")]) == pytest.approx(0.4 * (150 + 350 / 1.5) / 200)
    assert exact(eo.ratios[(SF, "head")]) == pytest.approx(0.8)
    assert exact(single.ratios[(SL, "head")]) == pytest.approx(1.0)
    # same FLOPs for all: the largest budget all runs reached is 400 FLOPs
    assert s.budget == 400
    assert single.at_budget == (2.0, 2.0, 2.0)
    assert eo.at_budget[0] == pytest.approx(3 - 250 / 350 * 1.5)
    assert iso.at_budget[0] == pytest.approx(3 - 25 / 125 * 1.2)
    # the single-level baseline spent fewer FLOPs than even_odd (400 < 500): flagged
    assert any(f"`{SL}` spent fewer FLOPs" in n for n in eo.notes)
    assert not any("spent fewer" in n for n in iso.notes)
    levels, ratios = s.ratio_curves[eo.label]["head"]
    assert np.isfinite(ratios).all() and len(levels) > 0
    # the iso-FLOP single-level run spent even_odd's 500 FLOPs: no same-FLOPs run to suggest
    assert S.same_flops_hints(configs) == []


def test_target_never_reached_and_other_baseline(tmp_path):
    configs = C.group_configurations(C.find_runs([make_sweep(tmp_path / "sweep")]))
    s = S.summarize(configs, target=1.0)
    text = "\n".join(tables.wide_table(s))
    assert "not reached (> 4.00e2) (by 0/2 seeds)" in text  # the 2-seed baseline ends at 400
    assert s.rows[2].to_target["head"] == (None, 0)
    assert f"| {EO} | 1 | 1.5000 |" in text and "not reached (> 5.00e2) |" in text
    # nobody reaches 1.0: no ratio, not even a bound
    assert s.rows[2].ratios[(SL, "head")] is None and "neither reaches" in text
    s = S.summarize(configs, baseline=SF)
    assert s.target == pytest.approx(1.8) and s.baseline.label == SF
    with pytest.raises(C.CompareError, match="--baseline 'nope'"):
        S.summarize(configs, baseline="nope")


def test_baseline_reaches_its_own_mean_final_loss_even_if_a_seed_does_not(tmp_path):
    write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", "train.seed=0")
    write_run(tmp_path / "b", SINGLE, [10, 8, 6, 4, 3], "coarsening=none", "train.seed=1")
    s = S.summarize(C.group_configurations(C.find_runs([tmp_path])))
    assert s.target == pytest.approx(2.5)
    assert s.rows[0].to_target["head"] == (pytest.approx(SINGLE[-1]), 1)
    assert exact(s.rows[0].ratios[(SL, "head")]) == pytest.approx(1.0)
    assert "(1/2 seeds reach it)" in "\n".join(tables.wide_table(s))


def test_labels_name_the_keys_that_differ(tmp_path):
    f, lo = SINGLE, [10, 8, 6, 4, 2]
    write_run(tmp_path / "0", f, lo, "coarsening=none")
    write_run(tmp_path / "1", f, lo, "coarsening=even_odd")
    write_run(
        tmp_path / "2", f, lo, "coarsening=even_odd", "coarsening.hierarchy.optimizer_state=shared"
    )
    write_run(tmp_path / "3", f, lo, "coarsening=even_odd", "optimizer=adamw")
    write_run(
        tmp_path / "4", f, lo, "coarsening=even_odd", "coarsening.vcycle.delta=0.5", "train.seed=3"
    )
    labels = [c.label for c in C.group_configurations(C.find_runs([tmp_path]))]
    assert labels == [
        f"{SL} optimizer=sgd",
        f"{EO} optimizer_state=separate optimizer=sgd",
        f"{EO} optimizer_state=shared optimizer=sgd",
        f"{EO} optimizer_state=separate optimizer=adamw",
        "multilevel even_odd δ=0.5 m=20 w=5 optimizer_state=separate optimizer=sgd",
    ]


def test_seeds_of_one_configuration_are_grouped(tmp_path):
    for seed in range(3):
        write_run(
            tmp_path / f"s{seed}",
            SINGLE,
            [10, 8, 6, 4, 2 + seed / 10],
            "coarsening=even_odd",
            f"train.seed={seed}",
            "train.device=cpu",
        )
    (c,) = C.group_configurations(C.find_runs([tmp_path]))
    assert len(c.runs) == 3 and c.label == EO
    s = S.summarize([c], target=3.0)
    assert s.baseline is None and s.rows[0].final_loss == pytest.approx((2.1, 2.0, 2.2))
    # mean curve ends 4 -> 2.1 between 300 and 400 FLOPs: 300 + (4 - 3) / (4 - 2.1) * 100
    want = 300 + 100 / 1.9
    assert s.rows[0].to_target["head"][0] == pytest.approx(want)


def test_data_and_model_differences_are_flagged(tmp_path):
    write_run(tmp_path / "0", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(tmp_path / "1", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", "model.n_layer=6")
    write_run(
        tmp_path / "2",
        SINGLE,
        [10, 8, 6, 4, 2],
        "coarsening=even_odd",
        "data.bpe_vocab_size=4096",
        "data.cache_dir=/elsewhere",
    )
    write_run(
        tmp_path / "3", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", "data.cache_dir=/elsewhere"
    )
    write_run(tmp_path / "4", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", "train.seed=1")
    rows = S.summarize(C.group_configurations(C.find_runs([tmp_path]))).rows
    notes = {r.label: "; ".join(r.notes) for r in rows}
    assert (
        len(rows) == 4 and len(rows[3].config.runs) == 2
    )  # data.cache_dir makes no new configuration
    assert (
        f"model differs from `{SL} bpe_vocab_size=8192 n_layer=4`: model.n_layer=6"
        in notes[f"{EO} bpe_vocab_size=8192 n_layer=6"]
    )
    assert (
        f"data differs from `{SL} bpe_vocab_size=8192 n_layer=4`: data.bpe_vocab_size=4096"
        in notes[f"{EO} bpe_vocab_size=4096 n_layer=4"]
    )
    assert "differ" not in notes[f"{EO} bpe_vocab_size=8192 n_layer=4"]


# --------------------------------------------------------------------------- plots
def _assert_x_inside(ax):
    lo, hi = sorted(ax.get_xlim())
    n = 0
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        assert ((x >= lo) & (x <= hi)).all(), (ax.get_xlabel(), x, lo, hi)
        n += len(x)
    for coll in ax.collections:
        for path in coll.get_paths():
            x = path.vertices[:, 0]
            assert ((x >= lo * (1 - 1e-9)) & (x <= hi * (1 + 1e-9))).all()
    return n


def test_plots_keep_every_x_inside_the_axes_and_drop_zero_flops(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    configs = C.group_configurations(C.find_runs([sweep]))
    capsys.readouterr()
    fig = plots.plot_losses(configs)
    assert "FLOPs <= 0" not in capsys.readouterr().err  # step-0 evaluations: left off silently
    odd = write_run(tmp_path / "odd", [0, 0, 200, 300, 400], [10, 9, 6, 4, 2], "coarsening=none")
    plots.plot_losses(C.group_configurations(C.find_runs([odd])))
    assert (
        f"run {odd}: 2 point(s) with FLOPs <= 0" in capsys.readouterr().err
    )  # val + train; names the run
    axes = fig.axes
    assert len(axes) == 8
    for ax in axes:
        assert _assert_x_inside(ax) > 0
        if ax.get_xscale() == "log":
            assert all((np.asarray(ln.get_xdata()) > 0).all() for ln in ax.get_lines())
    assert len(axes[0].collections) == 1  # min-max band: only the 2-seed configuration
    ratio = ratio_plot.plot_flops_ratio(S.summarize(configs))
    assert _assert_x_inside(ratio.axes[0]) > 0
    assert [1.0, 1.0] in [list(ln.get_ydata()) for ln in ratio.axes[0].get_lines()]


# --------------------------------------------------------------------------- the command
def test_cli_end_to_end(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    res = run_mltrain([str(sweep)], cwd=tmp_path, entry="mltrain-compare", timeout=120)
    assert res.returncode == 0, res.stderr
    out = sweep / "compare"
    for name in (
        "loss_vs_flops.png",
        "loss_vs_flops.svg",
        "flops_ratio.png",
        "summary.md",
        "summary.csv",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "summary.md").read_text()
    # the iso-FLOP single-level run sits beside even_odd at its 500 FLOPs: no command for one
    assert "train.target_flops=500" not in md and "Same-FLOPs single-level" not in md
    assert f"FLOPs-to-target ratio vs `{SF}` (with head)" in md
    # the terminal: the headline first, then the compact table
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{EO} (one seed) reached the final loss of the single-level runs")
    assert any(re.match(rf"{re.escape(EO)} +1 +1.5000 +5.00e2 +0.958 +0.800$", ln) for ln in lines)
    assert "ratio vs same fine steps  ratio vs same FLOPs" in res.stdout
    assert str(out / "loss_vs_flops.png") in res.stdout
    rows = {r["configuration"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    eo = rows[EO]
    assert float(eo["flops_to_target_head"]) == pytest.approx(150 + 350 / 1.5)
    assert float(eo[f"ratio_vs[{SF}]_head"]) == pytest.approx(0.8)
    assert eo[f"ratio_vs[{SF}]_head_kind"] == "=" and eo["role"] == "multilevel"
    assert float(eo["flops"]) == 500 and float(eo["flops_nonembed"]) == 200
    assert rows[SL]["seeds"] == "2"
    # --out and --target; a configuration that never reaches it has an empty cell, and the
    # other's ratio to it is a bound: even_odd reaches 1.7 at 150 + 1.3/1.5 * 350 = 453.3, the
    # single-level run ends above it at 400 FLOPs: ratio < 453.3 / 400 = 1.133
    res = run_mltrain(
        [
            str(sweep / "2_coarsening=even_odd"),
            str(sweep / "0_coarsening=none,train.seed=0"),
            "--out",
            str(tmp_path / "o"),
            "--target",
            "1.7",
        ],
        cwd=tmp_path,
        entry="mltrain-compare",
    )
    assert res.returncode == 0, res.stderr
    rows = {r["configuration"]: r for r in csv.DictReader(open(tmp_path / "o" / "summary.csv"))}
    assert rows[SL]["flops_to_target_head"] == ""
    assert float(rows[EO][f"ratio_vs[{SL}]_head"]) == pytest.approx(453.33 / 400, abs=1e-4)
    assert rows[EO][f"ratio_vs[{SL}]_head_kind"] == "<"
    # the bound 453.33 / 400 = 1.1333 is printed rounded outwards (< 1.13 would claim more)
    assert res.stdout.splitlines()[0] == (
        f"{EO} (one seed) reached the target 1.700 nats/token with < 1.14× its FLOPs "
        "(non-embedding: < 0.91×); that run never reached it."
    )
    # no same-FLOPs run: the terminal says how to make one
    assert "mltrain coarsening=none train.target_flops=500" in res.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "only_failed", "bad_baseline"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, case):
    args = {"missing": [str(tmp_path / "nope")], "empty": [str(tmp_path)]}.get(case)
    if case == "only_failed":
        write_run(tmp_path / "0_failed", SINGLE, [10] * 5, metrics=False)
        args = [str(tmp_path)]
    if case == "bad_baseline":
        write_run(tmp_path / "0", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
        args = [str(tmp_path), "--baseline", "nope"]
    res = run_mltrain(args, cwd=tmp_path, entry="mltrain-compare")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    if case == "only_failed":
        assert "skipping" in lines[0] and len(lines) == 2
    assert lines[-1].startswith("mltrain-compare: error: ") and "Traceback" not in res.stderr
    assert len(lines) == (2 if case == "only_failed" else 1)


# --------------------------------------------------------------------------- W&B view
def _wandb_view():
    spec = importlib.util.spec_from_file_location("wandb_view", SCRIPTS / "wandb_view.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wandb_view_definition_offline():
    view = _wandb_view()
    d = view.view_definition(group="sweep_1", by=["coarsening.vcycle.delta"])
    panels = [p for s in d["sections"] for p in s["panels"]]
    assert {(p["x"], p["y"][0]) for p in panels} == {
        (x, y) for x in ("perf/flops", "perf/flops_nonembed") for y in ("val/loss", "train/loss")
    }
    assert all(p["log_x"] for p in panels)
    assert d["groupby"] == [
        {"section": "run", "name": "Group"},
        {"section": "run", "name": "JobType"},
        {"section": "config", "name": "coarsening.vcycle.delta"},
    ]
    assert d["filters"] == [{"section": "run", "name": "Group", "op": "==", "value": "sweep_1"}]
    assert view.view_definition()["filters"] == []


def test_wandb_view_builds_a_workspace_when_the_package_is_installed():
    pytest.importorskip("wandb_workspaces")
    view = _wandb_view()
    model = view.build_workspace(
        view.view_definition(group="g", by=["coarsening.vcycle.delta"]), "ent", "proj"
    )._to_model()
    text = model.model_dump_json(by_alias=True)
    assert (
        '"perf/flops_nonembed"' in text and '"jobType"' in text and "coarsening.value.delta" in text
    )


def test_a_run_without_finite_validation_loss_is_listed_as_diverged(tmp_path):
    write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(tmp_path / "b", SINGLE, [float("nan")] * 5, "coarsening=even_odd")
    runs = C.find_runs([tmp_path])
    assert [(r.path.name, r.diverged_step) for r in runs] == [("a", None), ("b", 0)]
    assert math.isnan(runs[1].final_val_loss) and len(runs[1].val.loss) == 0


# --------------------------------------------------------------------------- headline
def _headline(root: Path, target=None) -> list[str]:
    configs = C.group_configurations(C.find_runs([root]))
    return headline.headline(S.summarize(configs, target), None)


def test_headline_when_every_run_reaches_the_target(tmp_path):
    lines = _headline(make_sweep(tmp_path / "sweep"))
    # even_odd reaches 2.0 at 150 + 350/1.5 = 383.3 FLOPs; the same-steps mean curve at 400;
    # non-embedding 60 + 140/1.5 = 153.3 vs 200
    assert lines[0] == (
        f"{EO} (one seed) reached the final loss of the single-level runs with the same fine "
        "steps (2.000 nats/token) with 0.96× their FLOPs (non-embedding: 0.77×)."
    )
    # the same-FLOPs run (500 FLOPs, like even_odd) reaches 2.0 at 375 + 125/1.2 = 479.2:
    # 383.3 / 479.2 = 0.80; non-embedding 153.3 / 239.6 = 0.64
    assert lines[1] == (
        "Against the single-level run with the same FLOPs (5.00e2 FLOPs each) it ended 0.300 "
        "nats/token lower (1.500 vs 1.800) and reached the target (2.000) with 0.80× that run's "
        "FLOPs (non-embedding: 0.64×)."
    )
    assert len(lines) == 2


def test_headline_gives_a_bound_when_a_baseline_never_reaches_the_target(tmp_path):
    root = tmp_path / "s"
    write_run(root / "0", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(root / "1", EVEN_ODD, [10, 7, 5, 3, 1.5], "coarsening=even_odd")
    write_run(root / "2", ISO, [10, 7.5, 5, 3, 2.2], "coarsening=none", "train.target_flops=500")
    lines = _headline(root)
    # the same-FLOPs run ends at 500 FLOPs above 2.0: it would need more than 500, so the ratio
    # is below 383.3 / 500 = 0.767 (non-embedding FLOPs are half of both)
    assert lines[1] == (
        "Against the single-level run with the same FLOPs (5.00e2 FLOPs each) it ended 0.700 "
        "nats/token lower (1.500 vs 2.200) and reached the target (2.000) with < 0.77× that "
        "run's FLOPs (non-embedding: < 0.77×); that run never reached it."
    )
    assert not any("n/a" in line for line in lines)
    text = "\n".join(tables.wide_table(S.summarize(C.group_configurations(C.find_runs([root])))))
    assert "< 0.767" in text and "n/a" not in text


def test_headline_when_the_baseline_reaches_the_target_first(tmp_path):
    write_run(tmp_path / "a" / "0", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(tmp_path / "a" / "1", EVEN_ODD, [10, 9, 8, 7, 1.5], "coarsening=even_odd")
    # reaches 2.0 at 150 + 5/5.5 * 350 = 468.2 FLOPs: 468.2 / 400 = 1.17 (non-embed. 1.17 too)
    assert _headline(tmp_path / "a")[0] == (
        f"{EO} (one seed) reached the final loss of the single-level run with the same fine "
        "steps (2.000 nats/token) with 1.17× its FLOPs (non-embedding: 1.17×), i.e. more FLOPs."
    )
    write_run(tmp_path / "b" / "0", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(tmp_path / "b" / "1", EVEN_ODD, [10, 9, 8, 7, 2.5], "coarsening=even_odd")
    # never reaches 2.0 within its 500 FLOPs: more than 500 / 400 = 1.25
    assert _headline(tmp_path / "b")[0] == (
        f"{EO} (one seed) did not reach the final loss of the single-level run with the same fine "
        "steps (2.000 nats/token): it ended at 2.500 after 5.00e2 FLOPs, so it would need "
        "> 1.25× its FLOPs."
    )


def test_runs_on_different_thread_counts_are_flagged(tmp_path):
    write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta={"threads": 1})
    write_run(tmp_path / "b", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", meta={"threads": 2})
    write_run(tmp_path / "c", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", "train.seed=1")
    s = S.summarize(C.group_configurations(C.find_runs([tmp_path])))
    assert s.remarks == [
        "runs compared across different thread counts (1: a; 2: b; not recorded: c): "
        "CPU runs repeat bit for bit only at the same thread count"
    ]
    assert "Caution: runs compared across different thread counts" in headline.headline(s, None)[-1]
    write_run(
        tmp_path / "d", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta={"device": "cuda:0"}
    )
    write_run(tmp_path / "e", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta={"device": "cpu"})
    remarks = S.hardware_remarks(C.find_runs([tmp_path / "d", tmp_path / "e"]))
    assert remarks == [
        "runs compared across different devices (cpu: e; cuda: d): results differ across devices"
    ]


# --------------------------------------------------------------------------- plot artists
def _labelled(ax, label):
    return [ln for ln in ax.get_lines() if ln.get_label() == label]


def test_target_line_and_one_marker_per_crossing_at_the_interpolated_flops(tmp_path):
    configs = C.group_configurations(C.find_runs([make_sweep(tmp_path / "sweep")]))
    s = S.summarize(configs)
    fig = plots.plot_losses(configs, s)
    val_axes, train_axes = fig.axes[:4], fig.axes[4:]
    for ax in val_axes:
        (target,) = _labelled(ax, plots.TARGET)  # exactly one target line per validation panel
        assert list(target.get_ydata()) == [2.0, 2.0]
        assert len(_labelled(ax, plots.CROSSING)) == 3  # one per configuration
    for ax in train_axes:
        assert not _labelled(ax, plots.TARGET) and not _labelled(ax, plots.CROSSING)
    # the markers sit at the FLOPs where each mean curve reaches 2.0 (by hand, see above)
    for ax, want in (
        (val_axes[0], [400, 375 + 125 / 1.2, 150 + 350 / 1.5]),
        (val_axes[1], [200, (375 + 125 / 1.2) / 2, 60 + 140 / 1.5]),
        (val_axes[3], [4, 3 + 1 / 1.2, 3 + 1 / 1.5]),  # fine steps
    ):
        got = [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in _labelled(ax, plots.CROSSING)]
        assert got == [(pytest.approx(x), 2.0) for x in want]
    # the ratio to the baseline is written next to each marker on the FLOP axes
    texts = [t.get_text() for t in val_axes[0].texts]
    assert texts == ["baseline", "1.20×", "0.96×"]  # 479.2/400, 383.3/400
    assert [t.get_text() for t in val_axes[1].texts] == ["baseline", "1.20×", "0.77×"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == [SL, SF, EO]
    assert "coarse phases (multilevel)" in legend
    assert (
        fig.legends[0]
        .get_title()
        .get_text()
        .endswith("seeds per configuration (mean, min–max band)")
    )


def test_one_seed_title_and_wall_clock_label(tmp_path):
    write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    configs = C.group_configurations(C.find_runs([tmp_path]))
    fig = plots.plot_losses(configs, S.summarize(configs))
    assert (
        fig.legends[0].get_title().get_text() == "loss against compute: one seed per configuration"
    )
    assert fig.axes[2].get_xlabel() == "wall-clock (s): depends on machine load"


def test_flop_ticks_are_labelled_on_every_flop_axis_of_a_short_run(tmp_path):
    f = [0, 1.0e9, 1.1e9, 1.2e9]
    write_run(tmp_path / "a", f, [10, 9, 8.5, 8], "coarsening=none")
    # b is below the target (8.0) at its first evaluation after the start: it crosses it at
    # 1e9 * 2 / 2.1 = 0.952e9, before its first point on the log axis
    write_run(tmp_path / "b", f, [10, 7.9, 7.8, 7.7], "coarsening=even_odd")
    configs = C.group_configurations(C.find_runs([tmp_path]))
    fig = plots.plot_losses(configs, S.summarize(configs))
    flop_axes = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(flop_axes) == 4
    crossings = [ln.get_xdata()[0] for ln in _labelled(fig.axes[0], plots.CROSSING)]
    assert crossings == [1.2e9, pytest.approx(1e9 * 2 / 2.1)]
    for ax in fig.axes:
        _assert_x_inside(ax)  # the markers too
    for ax in flop_axes:
        lo, hi = ax.get_xlim()
        ticks = [(t, lab.get_text()) for t, lab in zip(ax.get_xticks(), ax.get_xticklabels())]
        inside = [(t, s) for t, s in ticks if lo <= t <= hi and s]
        assert len(inside) >= 3, (ax.get_xlabel(), ticks)
    # with head the run spans 1e9..1.2e9, too little for 1-2-5 ticks: round linear values
    labels = [lab.get_text() for lab in flop_axes[0].get_xticklabels()]
    assert labels == ["1e9", "1.1e9", "1.2e9"]
    assert plot_axes.flop_ticks(2e12, 3e13) == [3e12, 1e13, 3e13]
    assert plot_axes.flop_ticks(2e12, 1e13) == [2e12, 5e12, 1e13]
    assert [fmt_flops(t, 3, trim=True) for t in plot_axes.flop_ticks(3e11, 9e11)] == [
        "3e11",
        "5e11",
        "7e11",
    ]


def test_a_spike_does_not_set_the_y_range_and_is_marked():
    assert list(plot_axes.spikes([9, 7, 6, 5, 12, 5, 4.5])) == [0, 0, 0, 0, 1, 0, 0]
    assert not plot_axes.spikes([9, 7, 6, 5, 5.3, 5, 4.5]).any()  # noise is not a spike
    lo, hi = plot_axes.robust_ylim([[9, 7, 6, 5, 12, 5, 4.5]], extra=[4.0])
    assert lo == pytest.approx(4.0 - 0.2) and hi == pytest.approx(9.0 + 0.2)  # 4 % of 5
    fig = Figure()
    ax = fig.subplots()
    x, y = np.arange(7.0), np.array([9, 7, 6, 5, 12, 5, 4.5])
    ax.plot(x, y)
    ax.set_ylim(lo, hi)
    plot_axes.mark_spikes(ax, x, y, "C0")
    (mark,) = _labelled(ax, plot_axes.SPIKE)
    assert (mark.get_xdata()[0], mark.get_ydata()[0]) == (4.0, hi)
    assert [t.get_text() for t in ax.texts] == ["spike 12.00"]


def test_coarse_phases_are_spans_and_break_the_training_curve(tmp_path):
    run = C.load_run(
        write_run(tmp_path / "m", [0, 10, 30, 50], [9, 8, 7, 6], "coarsening=even_odd", coarse=True)
    )
    # one coarse record between fine steps: spans from the fine step before it to it
    np.testing.assert_allclose(run.spans["flops"], [[0, 5], [10, 20], [30, 40]])
    x, y, cross = plots.break_at_spans(
        np.array([10.0, 30, 50]), np.array([8.0, 7, 6]), run.spans["flops"]
    )
    assert np.isnan(y[1]) and cross == [(10.0, 30.0, 8.0, 7.0), (30.0, 50.0, 7.0, 6.0)]


def test_no_ratio_figure_without_a_single_level_run(tmp_path):
    write_run(tmp_path / "runs" / "m", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "flops_ratio.png").write_bytes(b"stale")
    res = C.compare([tmp_path / "runs"], out)
    assert not (out / "flops_ratio.png").exists() and (out / "loss_vs_flops.png").is_file()
    assert (
        "note: flops_ratio.png not written: no single-level run to compare against" in res.terminal
    )
    assert "flops_ratio.png not written" in res.markdown
    assert res.terminal.splitlines()[0].startswith(f"{EO} (one seed) ended at 2.000 nats/token")


def test_ratio_figure_says_below_1_and_shows_half_to_one_and_a_half(tmp_path):
    configs = C.group_configurations(C.find_runs([make_sweep(tmp_path / "sweep")]))
    fig = ratio_plot.plot_flops_ratio(S.summarize(configs))
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo <= 0.5 and hi >= 1.5
    assert any(t.get_text().startswith("below 1 = fewer FLOPs") for t in ax.texts)


# --------------------------------------------------------------------------- diverged runs
def make_diverged_sweep(root: Path) -> Path:
    """lr=1e5 diverges (NaN from fine step 3, after finite evaluations at steps 0-2) and comes
    first, as in the sweep where the old table showed its step-0 loss and picked it as baseline."""
    nan = float("nan")
    write_run(
        root / "0_lr=1e5", SINGLE, [10, 9, 8.5, nan, nan], "coarsening=none", "optimizer.lr=1e5"
    )
    write_run(root / "1_lr=0.5", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", "optimizer.lr=0.5")
    write_run(
        root / "2_multi", EVEN_ODD, [10, 7, 5, 3, 1.5], "coarsening=even_odd", "optimizer.lr=0.5"
    )
    return root


def test_a_diverged_run_is_marked_and_never_the_baseline(tmp_path):
    root = make_diverged_sweep(tmp_path / "sweep")
    runs = C.find_runs([root])
    assert [r.diverged_step for r in runs] == [3, None, None]
    bad = runs[0]
    assert math.isnan(bad.final_val_loss) and list(bad.val.loss) == [10, 9, 8.5]
    configs = C.group_configurations(runs)
    s = S.summarize(configs)
    assert s.baseline.label == f"{SL} lr=0.5" and s.target == pytest.approx(2.0)
    assert [c.label for c in s.singles] == [f"{SL} lr=0.5"]
    row = s.row(configs[0])
    assert row.config.label == f"{SL} lr=100000" and row.final_loss is None
    assert row.notes == ["diverged at step 3"]
    assert set(row.ratios.values()) == {None}  # no ratio of its own, and nobody's reference
    res = C.compare([root], tmp_path / "out")
    assert res.terminal.splitlines()[0] == (
        f'"{SL} lr=100000" diverged at step 3: not used as a baseline.'
    )
    assert f"| {SL} lr=100000 | 1 | diverged at step 3 |" in res.markdown
    assert "9.0" not in res.markdown.split(f"| {SL} lr=100000 |")[1].split("\n")[0]
    assert re.search(rf"{re.escape(SL)} lr=100000 +1 +diverged at step 3", res.terminal)
    rows = {r["configuration"]: r for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert rows[f"{SL} lr=100000"]["final_val_loss_mean"] == ""
    assert rows[f"{SL} lr=100000"]["diverged"] == "diverged at step 3"
    assert rows[f"{EO} lr=0.5"]["flops_to_target_head"] != "0"
    # in the plot: the legend says so, and an x marks where its finite curve ends
    fig = plots.plot_losses(configs, s)
    assert f"{SL} lr=100000 (diverged at step 3)" in [
        t.get_text() for t in fig.legends[0].get_texts()
    ]
    ends = [
        (ln.get_xdata()[0], ln.get_ydata()[0])
        for ln in fig.axes[0].get_lines()
        if ln.get_marker() == "x"
    ]
    assert ends == [(200.0, 8.5)]
    assert "diverged at step 3" in [t.get_text() for t in fig.axes[0].texts]
    ratio = ratio_plot.plot_flops_ratio(s)
    legend = [t.get_text() for t in ratio.axes[0].get_legend().get_texts()]
    assert f"{SL} lr=100000: diverged at step 3, no curve" in legend
    with pytest.raises(C.CompareError, match="diverged at step 3; it cannot be a baseline"):
        S.summarize(configs, baseline=f"{SL} lr=100000")


def test_run_json_status_marks_divergence_even_with_finite_records(tmp_path):
    meta = {"status": "diverged", "diverged_at": {"step": 2, "fine_step": 2, "level": "fine"}}
    run = C.load_run(
        write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta=meta)
    )
    assert run.diverged_step == 2 and run.status == "diverged"
    assert list(run.val.loss) == [10, 8] and list(run.train.loss) == [8.5]
    # the JSON strings that stand for non-finite values also count as divergence
    path = write_run(tmp_path / "b", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    recs = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    recs[3]["train/loss"] = "nan"
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert C.load_run(path).diverged_step == 3


def test_roles_from_run_json_and_old_runs(tmp_path):
    a = C.load_run(write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none"))
    b = C.load_run(
        write_run(
            tmp_path / "b", ISO, [10, 8, 6, 4, 2], "coarsening=none", "train.target_flops=500"
        )
    )
    m = C.load_run(write_run(tmp_path / "m", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd"))
    u = C.load_run(
        write_run(
            tmp_path / "u", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta={"role": "probe"}
        )
    )
    assert [r.role for r in (a, b, m, u)] == [
        "single_level/same_steps",
        "single_level/same_flops",
        "multilevel",
        "probe",
    ]


def test_staged_schemes_are_named_by_what_they_do():
    """A coarse-to-fine run is named by its stages, shares and growth, a RaPTr run as random
    sub-paths, neither as "multilevel" (that is the V-cycle's name); the V-cycle a fine stage
    runs is added."""
    from mltrain.analysis.judging.grouping import base_label

    grow = {
        "coarsening.scheme": "stages",
        "coarsening.hierarchy.name": "even_odd",
        "coarsening.stages.levels": ["coarse_b", "fine"],
        "coarsening.stages.shares": [0.8, 0.2],
        "coarsening.stages.grow_init": "zero",
        "coarsening.vcycle.window": 0,
        "coarsening.vcycle.coarse_steps": 20,
        "coarsening.vcycle.delta": 0.25,
    }
    assert base_label(grow, "multilevel") == "coarse-to-fine coarse_b 0.8 → fine 0.2, grow zero"
    # a staged run reads no V-cycle settings (coarsening.scheme=stages): the window a preset or
    # mode=smoke leaves in coarsening.vcycle does not appear in its name (the demo's growth once
    # read "... grow zero + V-cycle recursive δ=0.25 m=20 w=5")
    vcycle = {**grow, "coarsening.vcycle.window": 5}
    assert base_label(vcycle, "multilevel") == base_label(grow, "multilevel")
    raptr = {
        **grow,
        "coarsening.stages.levels": ["raptr_6", "fine"],
        "coarsening.stages.shares": [0.5, 0.5],
    }
    assert base_label(raptr, "multilevel") == "random sub-paths raptr_6 0.5 → fine 0.5"
    # the label is the scheme's (coarsening.scheme), not guessed from the stages being set
    vcycle = {**grow, "coarsening.scheme": "vcycle", "coarsening.stages.levels": []}
    assert base_label(vcycle, "multilevel") == "multilevel even_odd δ=0.25 m=20 w=0"
    assert base_label(
        {**vcycle, "coarsening.stages.levels": ["coarse_b", "fine"]}, "multilevel"
    ) == ("multilevel even_odd δ=0.25 m=20 w=0")


def test_an_unfinished_run_is_named_in_a_warning(tmp_path, capsys):
    """A run still going shows its last evaluation in the tables; mltrain-compare says so."""
    write_run(tmp_path / "r" / "live", [0, 100, 200], [10, 8, 7], meta={"status": "running"})
    C.compare([tmp_path / "r"], tmp_path / "out")
    err = capsys.readouterr().err
    assert f"warning: run {tmp_path / 'r' / 'live'} is unfinished (running at fine step 2)" in err


def test_settings_a_scheme_does_not_read_do_not_split_its_runs_into_configurations():
    """Two staged runs that differ only in their (unread) V-cycle settings are one
    configuration; a V-cycle run's window still tells two V-cycle runs apart, and every
    multilevel run reads the optimizer-state policy."""
    from mltrain.analysis.judging.grouping import identity

    staged = {
        "coarsening.scheme": "stages",
        "coarsening.hierarchy.name": "odd",
        "coarsening.stages.levels": ("coarse_b", "fine"),
        "coarsening.vcycle.window": 0,
        "coarsening.hierarchy.optimizer_state": "separate",
        "train.steps": 10,
    }
    assert identity(staged) == identity({**staged, "coarsening.vcycle.window": 5})
    assert identity(staged) != identity({**staged, "coarsening.hierarchy.optimizer_state": "reset"})
    vcycle = {**staged, "coarsening.scheme": "vcycle", "coarsening.stages.levels": ()}
    assert identity(vcycle) != identity({**vcycle, "coarsening.vcycle.window": 5})
    assert identity(vcycle) == identity({**vcycle, "coarsening.stages.shares": (0.5, 0.5)})


def test_a_staged_run_is_named_by_its_models_blocks(tmp_path):
    """With run.json's levels, the demo's growth reads "3 → 6 → 12 blocks" (its levels hold 3,
    6 and 12 blocks), not its level names; widths are named when they differ."""
    from mltrain.analysis.judging.grouping import base_label

    grow = {
        "model.n_embd": 128,
        "coarsening.scheme": "stages",
        "coarsening.stages.levels": ["coarse_2", "coarse_1", "fine"],
        "coarsening.stages.shares": [0.4, 0.4, 0.2],
        "coarsening.stages.grow_init": "zero",
    }
    levels = {
        "fine": {"blocks": list(range(12)), "width_factor": 1},
        "coarse_1": {"blocks": list(range(1, 12, 2)), "width_factor": 1},
        "coarse_2": {"blocks": [3, 7, 11], "width_factor": 1},
    }
    # from the run directory: run.json's levels name the configuration
    write_run(
        tmp_path / "g",
        [0, 50, 100],
        [10, 8, 7],
        "coarsening=grow_recursive",
        "model.n_layer=12",
        meta={"status": "completed", "levels": levels},
    )
    (c,) = C.group_configurations(C.find_runs([tmp_path / "g"]))
    assert c.label == "coarse-to-fine 3 → 6 → 12 blocks at 0.4/0.4/0.2 of the FLOPs, grow zero"
    assert base_label(grow, "multilevel", levels) == (
        "coarse-to-fine 3 → 6 → 12 blocks at 0.4/0.4/0.2 of the FLOPs, grow zero"
    )
    width = {**grow, "coarsening.stages.levels": ["width_2", "fine"]}
    width["coarsening.stages.shares"] = [0.5, 0.5]
    levels["width_2"] = {"blocks": list(range(12)), "width_factor": 2}
    assert base_label(width, "multilevel", levels) == (
        "coarse-to-fine 12 blocks d=64 → 12 blocks d=128 at 0.5/0.5 of the FLOPs, grow zero"
    )


def test_no_same_flops_command_when_such_a_run_sits_beside_the_method(tmp_path, capsys):
    """The demo's pair, growth and single-level both sized by one budget (and spending within
    1 % of each other): summary.md and the terminal suggest no same-FLOPs run; a multilevel run
    at another budget still gets its command."""
    root = tmp_path / "r"
    write_run(root / "g", [0, 250, 500], [10, 8, 7], "coarsening=grow", "train.target_flops=500")
    write_run(root / "s", [0, 248, 496], [10, 8, 7.5], "coarsening=none", "train.target_flops=500")
    res = C.compare([root], tmp_path / "out")
    assert "Same-FLOPs" not in res.markdown and "train.target_flops=" not in res.terminal
    write_run(root / "v", [0, 500, 1000], [10, 8, 6], "coarsening=even_odd")
    res = C.compare([root], tmp_path / "out")
    (hint,) = S.same_flops_hints(C.group_configurations(C.find_runs([root])))
    assert hint.startswith(f"- `{EO} scheme=vcycle`: 1.0000e3 FLOPs")
    assert "mltrain coarsening=none train.target_flops=1000" in res.markdown


def test_symlinked_sweeps_are_followed(tmp_path):
    """A study links its sweeps into one directory: --frontier and the run arguments follow the
    links (each real run once, a link back up does not loop)."""
    write_run(tmp_path / "sweeps" / "a" / "0", [0, 50, 100], [10, 8, 7], "coarsening=none")
    write_run(tmp_path / "sweeps" / "b" / "0", [0, 50, 100], [10, 8, 6], "coarsening=even_odd")
    links = tmp_path / "links"
    links.mkdir()
    (links / "a").symlink_to(tmp_path / "sweeps" / "a")
    (links / "b").symlink_to(tmp_path / "sweeps" / "b")
    (links / "again").symlink_to(tmp_path / "sweeps" / "a")
    (links / "up").symlink_to(links)
    runs = C.find_runs([links])
    assert sorted(r.path.resolve() for r in runs) == sorted(
        (tmp_path / "sweeps" / x / "0").resolve() for x in "ab"
    )


def test_an_older_run_at_a_scaled_budget_is_complete_when_it_spent_it(tmp_path):
    """A run without run.json at train.target_flops=8000 x train.flops_scale=0.125 = 1000
    FLOPs that spent 1000 (two steps of 500) finished; one that stopped after 500 of them did
    not (the budget read as 8000 without the scale called the finished one stopped)."""
    for name, spent in (("done", 1000), ("cut", 500)):
        scaled = ("train.target_flops=8000", "train.flops_scale=0.125")
        write_run(tmp_path / name, [0, spent / 2, spent], [9, 5, 4], *scaled)
    by = {r.path.name: r for r in C.find_runs([tmp_path])}
    assert by["done"].incomplete() is None
    assert by["cut"].incomplete() == "stopped at 5.00e2 of 1.00e3 FLOPs (fine step 2)"
    assert not (tmp_path / "done" / "run.json").exists()  # an older run


def test_the_same_flops_command_runs_as_the_method_did_and_beside_it(tmp_path):
    """The single-level baseline keeps the method's thread count, evaluation interval and
    branch points ([] too), leaves logging and progress out, and runs beside the method's run
    (hydra.run.dir), where the same mltrain-compare finds it."""
    import shlex

    ml = write_run(
        tmp_path / "sweep" / "ml",
        ISO,
        [10, 8, 6, 4, 3],
        "coarsening=even_odd",
        "train.target_flops=400",
        "train.threads=1",
        "train.eval_every=7",
        "train.branch_points=[]",
        "train.progress=false",
    )
    res = C.compare([tmp_path / "sweep"], tmp_path / "out")
    (line,) = [x for x in res.markdown.splitlines() if "→ `mltrain " in x]
    args = shlex.split(line.split("→ `", 1)[1].rstrip("`"))
    assert {"train.threads=1", "train.eval_every=7", "train.branch_points=[]"} <= set(args)
    assert not any(a.startswith(("train.progress", "logger")) for a in args)
    assert args[-1] == f"hydra.run.dir={ml.parent / 'ml_single_level'}"


def test_a_same_flops_run_that_has_just_started_is_not_suggested_again(tmp_path, capsys):
    """The suggested baseline, pasted and just started (run.json running, no metrics yet), was
    skipped as still running and the same command suggested again: pasting it twice trained
    two processes in one directory (found by a helper). The hint now names the running run."""
    import json

    ml = write_run(tmp_path / "sweep" / "ml", ISO, [10, 8, 6, 4, 3], "coarsening=even_odd")
    started = ml.parent / "ml_single_level"
    started.mkdir()
    (started / "run.json").write_text(json.dumps({"status": "running"}))
    res = C.compare([tmp_path / "sweep"], tmp_path / "out")
    (line,) = [x for x in res.markdown.splitlines() if x.startswith("- `")]
    assert "mltrain " not in line
    assert line.endswith(
        f"its single-level run is still running in `{started}`: let it finish (or resume it "
        "with train.resume=auto)"
    )


def test_a_staged_plan_within_half_a_fine_step_of_its_budget_is_not_short(tmp_path):
    """late_tune_L3_sh0.9's record: 1343 coarse and 56 fine steps plan 3.99687e12 of 4e12 FLOPs,
    3.13e9 short: more than its mean iteration (2.86e9) but under half a fine step
    (3.974e11 / 56 = 7.10e9), where its last stage ends. Not short; a plan a whole fine step
    short still is."""
    from mltrain.analysis.judging.runs import short_of_budget

    def staged(name: str, planned: float) -> Path:
        p = write_run(
            tmp_path / name,
            [0, planned],
            [9, 4],
            "train.target_flops=4e12",
            meta={
                "status": "completed",
                "iterations": 1399,
                "planned_flops": planned,
                "steps_per_level": {"fine": 56, "coarse_1": 0, "coarse_2": 1343},
            },
        )
        recs = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
        recs[-1] |= {
            "perf/flops_level/fine": 397418692608,
            "perf/flops_level/coarse_1": 0,
            "perf/flops_level/coarse_2": planned - 397418692608,
        }
        (p / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return p

    staged("near", 3996873916416)
    staged("short", 4e12 - 7.2e9)
    by = {r.path.name: r for r in C.find_runs([tmp_path])}
    assert short_of_budget(by["near"]) is None
    assert short_of_budget(by["short"]) == "its plan stops at 3.99e12 of its 4.00e12 FLOPs budget"


def test_frontier_runs_given_as_runs_are_named_so_where_the_baseline_is_missing(tmp_path):
    """A method and budget-sized single-level runs in one folder (as make demo leaves them):
    the single-level runs are the tuned frontier's, so the FLOPs-to-target table has no
    baseline and no flops_ratio.png, and both say why (not "no single-level run")."""
    from tests.analysis.test_frontier import method, tuned

    for b, loss in ((1000, 4.0), (2000, 3.5), (4000, 3.2)):  # as their run.json records them
        for lr, plus in ((0.1, 0.3), (0.2, 0.0), (0.4, 0.2)):
            meta = {"role": "frontier", "status": "completed"}
            tuned(tmp_path / "runs" / "front", b, lr, loss + plus, meta=meta)
    method(tmp_path / "runs", "m", 3.4)
    res = C.compare([tmp_path / "runs"], tmp_path / "out")
    assert res.judgement is not None and res.judgement.results
    assert (
        "- target validation loss: none (none: the single-level runs are the tuned frontier's, "
        "which judges the methods (r below); give --target for a FLOPs-to-target table)"
    ) in res.markdown
    assert (
        "note: flops_ratio.png not written: the single-level runs are the tuned frontier's "
        "(frontier.png draws the methods against it)" in res.terminal
    )
    assert "no single-level run to compare against" not in res.terminal


def test_a_run_that_has_not_evaluated_yet_is_skipped_as_running_not_failed(tmp_path, capsys):
    """A job that started but has not written an evaluation yet (run.json status running) was
    skipped as "no metrics.jsonl (a failed job?)"; its record says it is running."""
    import json

    from mltrain.analysis.judging.runs import load_run

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(
        FileNotFoundError, match=r"^no metrics.jsonl \(still running, no evaluation yet\)$"
    ):
        load_run(tmp_path / "r")
    (tmp_path / "r" / "run.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(FileNotFoundError, match=r"\(a failed job\?\)$"):
        load_run(tmp_path / "r")
