"""``mltrain-compare`` on hand-made metrics files of known curves (values computed by hand)."""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from mltrain import compare as C
from mltrain import plots, report
from tests.helpers import run_mltrain

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@functools.cache
def _config(overrides: tuple[str, ...]) -> str:
    from mltrain.config import compose

    cfg = compose(["model=tiny", "logger=none", *overrides])
    return json.dumps(OmegaConf.to_container(cfg, resolve=True))


def write_run(
    path: Path, flops, losses, *overrides: str, nonembed=None, coarse=False, metrics=True
) -> Path:
    """A run directory: ``.hydra/config.yaml`` of ``mltrain model=tiny <overrides>`` and a
    metrics.jsonl whose evaluations are (flops[i], losses[i]) at fine step i (i=0: step 0)."""
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


def exact(e: C.Estimate) -> float:
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
    s = C.summarize(configs)
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
    hints = C.same_flops_hints(configs)
    assert len(hints) == 1 and "mltrain coarsening=none train.target_flops=500" in hints[0]


def test_target_never_reached_and_other_baseline(tmp_path):
    configs = C.group_configurations(C.find_runs([make_sweep(tmp_path / "sweep")]))
    s = C.summarize(configs, target=1.0)
    text = "\n".join(report.wide_table(s))
    assert "not reached (> 4.00e2) (by 0/2 seeds)" in text  # the 2-seed baseline ends at 400
    assert s.rows[2].to_target["head"] == (None, 0)
    assert f"| {EO} | 1 | 1.5000 |" in text and "not reached (> 5.00e2) |" in text
    # nobody reaches 1.0: no ratio, not even a bound
    assert s.rows[2].ratios[(SL, "head")] is None and "neither reaches" in text
    s = C.summarize(configs, baseline=SF)
    assert s.target == pytest.approx(1.8) and s.baseline.label == SF
    with pytest.raises(C.CompareError, match="--baseline 'nope'"):
        C.summarize(configs, baseline="nope")


def test_baseline_reaches_its_own_mean_final_loss_even_if_a_seed_does_not(tmp_path):
    write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", "train.seed=0")
    write_run(tmp_path / "b", SINGLE, [10, 8, 6, 4, 3], "coarsening=none", "train.seed=1")
    s = C.summarize(C.group_configurations(C.find_runs([tmp_path])))
    assert s.target == pytest.approx(2.5)
    assert s.rows[0].to_target["head"] == (pytest.approx(SINGLE[-1]), 1)
    assert exact(s.rows[0].ratios[(SL, "head")]) == pytest.approx(1.0)
    assert "(1/2 seeds reach it)" in "\n".join(report.wide_table(s))


def test_labels_name_the_keys_that_differ(tmp_path):
    f, lo = SINGLE, [10, 8, 6, 4, 2]
    write_run(tmp_path / "0", f, lo, "coarsening=none")
    write_run(tmp_path / "1", f, lo, "coarsening=even_odd")
    write_run(tmp_path / "2", f, lo, "coarsening=even_odd", "coarsening.optimizer_state=shared")
    write_run(tmp_path / "3", f, lo, "coarsening=even_odd", "optimizer=adamw")
    write_run(tmp_path / "4", f, lo, "coarsening=even_odd", "coarsening.delta=0.5", "train.seed=3")
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
    s = C.summarize([c], target=3.0)
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
        "data.vocab_size=4096",
        "data.cache_dir=/elsewhere",
    )
    write_run(
        tmp_path / "3", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", "data.cache_dir=/elsewhere"
    )
    write_run(tmp_path / "4", SINGLE, [10, 8, 6, 4, 2], "coarsening=even_odd", "train.seed=1")
    rows = C.summarize(C.group_configurations(C.find_runs([tmp_path]))).rows
    notes = {r.label: "; ".join(r.notes) for r in rows}
    assert (
        len(rows) == 4 and len(rows[3].config.runs) == 2
    )  # data.cache_dir makes no new configuration
    assert (
        f"model differs from `{SL} vocab_size=8192 n_layer=4`: model.n_layer=6"
        in notes[f"{EO} vocab_size=8192 n_layer=6"]
    )
    assert (
        f"data differs from `{SL} vocab_size=8192 n_layer=4`: data.vocab_size=4096"
        in notes[f"{EO} vocab_size=4096 n_layer=4"]
    )
    assert "differ" not in notes[f"{EO} vocab_size=8192 n_layer=4"]


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
    ratio = plots.plot_flops_ratio(C.summarize(configs))
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
    assert "mltrain coarsening=none train.target_flops=500" in res.stdout
    assert "FLOPs-to-target ratio to `single_level (iso-FLOP)` (with head)" in res.stdout
    assert str(out / "loss_vs_flops.png") in res.stdout
    rows = {r["configuration"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    eo = rows["even_odd δ=0.25 m=20 w=5"]
    assert float(eo["flops_to_target_head"]) == pytest.approx(150 + 350 / 1.5)
    assert float(eo["ratio_vs[single_level (iso-FLOP)]_head"]) == pytest.approx(0.8)
    assert float(eo["flops"]) == 500 and float(eo["flops_nonembed"]) == 200
    assert rows["single_level"]["seeds"] == "2"
    # --out and --target; a configuration that never reaches it has an empty cell
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
    assert rows["single_level"]["flops_to_target_head"] == "" and "not reached" in res.stdout


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
    d = view.view_definition(group="sweep_1", by=["coarsening.delta"])
    panels = [p for s in d["sections"] for p in s["panels"]]
    assert {(p["x"], p["y"][0]) for p in panels} == {
        (x, y) for x in ("perf/flops", "perf/flops_nonembed") for y in ("val/loss", "train/loss")
    }
    assert all(p["log_x"] for p in panels)
    assert d["groupby"] == [
        {"section": "run", "name": "Group"},
        {"section": "run", "name": "JobType"},
        {"section": "config", "name": "coarsening.delta"},
    ]
    assert d["filters"] == [{"section": "run", "name": "Group", "op": "==", "value": "sweep_1"}]
    assert view.view_definition()["filters"] == []


def test_wandb_view_builds_a_workspace_when_the_package_is_installed():
    pytest.importorskip("wandb_workspaces")
    view = _wandb_view()
    model = view.build_workspace(
        view.view_definition(group="g", by=["coarsening.delta"]), "ent", "proj"
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
