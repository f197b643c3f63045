"""The tuned-frontier judge of ``mltrain-compare`` (DESIGN.md section 8) on hand-built
curves: every expected number is computed by hand in the comments (log-linear interpolation
between budgets)."""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest

from mltrain.analysis import compare as C
from mltrain.analysis.judging import budgets as B
from mltrain.analysis.judging import frontier as F
from mltrain.analysis.judging import judge as J
from mltrain.analysis.judging.curves import Bounded, over_seeds
from mltrain.analysis.reports import headline
from tests.analysis.test_compare import EO, write_run

nan = float("nan")
# three budgets with known best losses; a method at 3e12 FLOPs and loss 3.4
CS, LS = [1e12, 2e12, 4e12], [4.0, 3.5, 3.2]
# C*(3.4): between 2e12 (3.5) and 4e12 (3.2), a third of the way in log C: 2e12 * 2**(1/3)
C_STAR = 2e12 * 2 ** (1 / 3)  # 2.5198e12
# L*(3e12): 3.5 + log2(1.5) * (3.2 - 3.5)
L_STAR = 3.5 - 0.3 * math.log2(1.5)  # 3.32451


# --------------------------------------------------------------------------- pure functions
def test_three_budgets_give_r_and_gap_by_log_linear_interpolation():
    env = F.monotone(LS)
    c_star = F.frontier_flops(3.4, CS, env)
    assert c_star.is_exact and c_star.lo == pytest.approx(C_STAR)
    assert J.ratio(3e12, c_star).lo == pytest.approx(3e12 / C_STAR)  # 1.1906
    assert J.ratio(3e12, c_star).lo == pytest.approx(1.190551, abs=1e-6)
    l_star = F.frontier_loss(3e12, CS, env)
    assert l_star.lo == pytest.approx(L_STAR) and l_star.lo == pytest.approx(3.324511, abs=1e-6)
    assert J.gap(3.4, l_star).lo == pytest.approx(3.4 - L_STAR)  # +0.0755
    # at a budget's own loss and FLOPs: that budget
    assert F.frontier_flops(3.5, CS, env) == Bounded.exact(2e12)
    assert F.frontier_loss(2e12, CS, env) == Bounded.exact(3.5)


def test_outside_the_frontier_gives_bounds_never_extrapolations():
    env = F.monotone(LS)
    # below the largest budget's loss: C* > 4e12, so r < 3e12 / 4e12 = 0.75
    r = J.ratio(3e12, F.frontier_flops(3.0, CS, env))
    assert (r.kind, r.hi, r.fmt(".2f"), r.named("r")) == ("<", 0.75, "< 0.75", "r < 0.75")
    # above the smallest budget's loss: C* < 1e12, so r > 3e12 / 1e12 = 3
    r = J.ratio(3e12, F.frontier_flops(4.2, CS, env))
    assert (r.kind, r.lo, r.named("r")) == (">", 3.0, "r > 3.00")
    # more FLOPs than the largest budget: L*(8e12) <= 3.2, so the gap of loss 3.0 is >= -0.2
    g = J.gap(3.0, F.frontier_loss(8e12, CS, env))
    assert g.kind == ">" and g.lo == pytest.approx(-0.2)
    # fewer than the smallest: L*(5e11) >= 4.0, so the gap of loss 4.5 is <= 0.5
    g = J.gap(4.5, F.frontier_loss(5e11, CS, env))
    assert g.kind == "<" and g.hi == pytest.approx(0.5)
    # within 1 % of an end budget is that budget (a budget-sized run spends up to a step less)
    assert F.frontier_loss(0.995e12, CS, env) == Bounded.exact(env[0])
    assert F.frontier_loss(4.02e12, CS, env) == Bounded.exact(env[-1])
    assert F.frontier_loss(0.98e12, CS, env).kind == ">"


def test_a_non_monotone_set_of_best_points_is_made_monotone():
    losses = [4.0, 3.3, 3.5]  # the largest budget's best is worse than the middle one's
    env = F.monotone(losses)
    assert list(env) == [4.0, 3.3, 3.3]
    # L*(3e12) on the flat part; C*(3.3) is the first budget that reaches it
    assert F.frontier_loss(3e12, CS, env) == Bounded.exact(3.3)
    assert F.frontier_flops(3.3, CS, env) == Bounded.exact(2e12)
    # C*(3.4): (4.0 - 3.4) / (4.0 - 3.3) = 6/7 of the way from 1e12 to 2e12 in log C
    assert F.frontier_flops(3.4, CS, env).lo == pytest.approx(1e12 * 2 ** (6 / 7))
    # below 3.3 there is no exact C*: more than the largest budget
    assert F.frontier_flops(3.25, CS, env) == Bounded.above(4e12)


def test_per_seed_values_aggregate_end_by_end():
    mean, lo, hi = over_seeds([Bounded.exact(0.8), Bounded.exact(1.0), Bounded.exact(0.9)])
    assert (mean.lo, mean.hi) == (pytest.approx(0.9), pytest.approx(0.9))
    assert (lo, hi) == (Bounded.exact(0.8), Bounded.exact(1.0))
    # one seed beyond the frontier's largest budget: the mean is a bound, (0.9 + 0.75) / 2
    mean, lo, hi = over_seeds([Bounded.exact(0.9), Bounded.below(0.75)])
    assert mean.fmt(".3f") == "< 0.825" and lo.fmt() == "< 0.75" and hi == Bounded.exact(0.9)
    # seeds on both sides of the range: the mean is unknown, min and max stay bounds
    mean, lo, hi = over_seeds([Bounded.below(0.75), Bounded.above(3.0)])
    assert (mean.kind, lo.fmt(), hi.fmt()) == ("?", "< 0.75", "> 3.00")


# --------------------------------------------------------------------------- runs
def tuned(root: Path, budget: float, lr: float, final: float, seed: int = 0, *extra: str, **kw):
    """A frontier run: single-level, budget ``train.target_flops``, evaluations at 0, C/2, C
    (losses 10, final + 1, final); non-embedding FLOPs are half."""
    name = f"b{budget:g}_lr{lr:g}_s{seed}" + "".join(f"_{e}" for e in extra)
    return write_run(
        root / name,
        [0, budget / 2, budget],
        [10, final + 1, final],
        "coarsening=none",
        f"train.target_flops={budget}",
        f"optimizer.lr={lr}",
        f"train.seed={seed}",
        *extra,
        **kw,
    )


def make_frontier(root: Path, budgets=(1000, 2000, 4000), best=(4.0, 3.5, 3.2)) -> Path:
    """Budgets x learning rates 0.1, 0.2, 0.4: the middle one is best (+0.3 / +0.2 for the
    others), one seed each."""
    for b, loss in zip(budgets, best):
        for lr, plus in ((0.1, 0.3), (0.2, 0.0), (0.4, 0.2)):
            tuned(root, b, lr, loss + plus)
    return root


def method(root: Path, name: str, final: float, total: float = 3000, *extra: str, **kw) -> Path:
    return write_run(
        root / name,
        [0, total / 2, total],
        [10, final + 1, final],
        "coarsening=even_odd",
        *extra,
        nonembed=[0, total / 6, total / 3],
        **kw,
    )


def judged(tmp_path):
    front = C.find_runs([tmp_path / "front"])
    configs = C.group_configurations(C.find_runs([tmp_path / "methods"]))
    return F.judge(front, configs)


def test_frontier_from_runs_gives_the_hand_computed_r_and_gap(tmp_path):
    make_frontier(tmp_path / "front")
    method(tmp_path / "methods", "m", 3.4)
    j = judged(tmp_path)
    (f,) = j.frontiers
    assert f.label == "tuned frontier, SGD"
    assert [b.best_lr for b in f.budgets] == [0.2, 0.2, 0.2]
    assert list(f.losses) == [4.0, 3.5, 3.2] and list(f.flops("head")) == [1000, 2000, 4000]
    assert list(f.flops("nonembed")) == [500, 1000, 2000]
    (res,) = j.results
    (seed,) = res.seeds
    # with head: C*(3.4) = 2000 * 2**(1/3) -> r = 3000 / 2519.84 = 1.1906; L*(3000) = 3.3245
    assert seed.r["head"].lo == pytest.approx(3000 / (2000 * 2 ** (1 / 3)))
    assert seed.gap["head"].lo == pytest.approx(3.4 - L_STAR)
    # non-embedding: the method spent 1000, the frontier's budgets are 500, 1000, 2000:
    # C*(3.4) = 1000 * 2**(1/3) -> r = 0.7937; L*(1000) = 3.5 -> gap = -0.1
    assert seed.r["nonembed"].lo == pytest.approx(1000 / (1000 * 2 ** (1 / 3)))
    assert seed.gap["nonembed"].lo == pytest.approx(-0.1)
    text = headline.frontier_sentence(res)
    assert text.startswith(
        f"{EO} (one seed) against tuned frontier, SGD (3 budgets, 1.0e3 to 4.0e3 FLOPs): "
        "r = 1.19 with head, r = 0.79 non-embedding (more FLOPs than the tuned single-level "
        "training needs for its loss 3.400)."
    )
    assert text.endswith("At equal FLOPs it is 0.075 nats/token above the frontier.")


def test_bound_text_outside_the_frontier(tmp_path):
    make_frontier(tmp_path / "front")
    method(tmp_path / "methods", "m", 3.0)
    (res,) = judged(tmp_path).results
    text = headline.frontier_sentence(res)
    # r < 3000 / 4000 = 0.75; non-embedding r < 1000 / 2000 = 0.5
    assert (
        "r < 0.75 with head, r < 0.50 non-embedding: its loss 3.000 is below the largest " in text
    )
    assert "budget's 3.200, so the frontier would need more than 4.0e3 FLOPs." in text
    # the gap at 3000 FLOPs is exact: 3.0 - 3.3245
    assert "At equal FLOPs it is 0.325 nats/token below the frontier." in text


def test_budgets_are_grouped_within_one_percent(tmp_path):
    root = tmp_path / "front"
    tuned(root, 1000, 0.1, 4.3)
    tuned(root, 1005, 0.2, 4.0)  # 0.5 % above: the same budget
    tuned(root, 1020, 0.4, 4.2)  # 2 % above: another budget
    groups = B.group_budgets(C.find_runs([root]))
    assert [[B.lr_of(r) for r in g] for g in groups] == [[0.1, 0.2], [0.4]]


def test_edge_of_grid_and_seed_warnings(tmp_path):
    root = tmp_path / "front"
    for lr, loss in ((0.1, 4.0), (0.2, 4.1), (0.4, 4.2)):  # best: the smallest tried
        tuned(root, 1000, lr, loss)
    for lr, loss in ((0.1, 3.8), (0.2, 3.6), (0.4, 3.5)):  # best: the largest tried
        tuned(root, 2000, lr, loss)
    for lr, loss in ((0.1, 3.5), (0.2, 3.2), (0.4, 3.4)):  # best in the middle, 3 seeds
        for seed in range(3):
            tuned(root, 4000, lr, loss + seed / 100, seed)
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert f.warnings == [
        "budget 1.00e3: best lr 0.1 is the smallest tried (0.1, 0.2, 0.4): the frontier may be "
        "under-tuned; extend the grid with: mltrain -m coarsening=none train.target_flops=1000 "
        f"optimizer.lr=0.05 train.seed=0 hydra.sweep.dir={root}/b1000_lr0.1_s0_lr0.05",
        "budget 1.00e3: best lr 0.1 has only one seed (DESIGN.md §8 asks ≥ 3); add them with: "
        "mltrain -m coarsening=none train.target_flops=1000 optimizer.lr=0.1 train.seed=1,2 "
        f"hydra.sweep.dir={root}/b1000_lr0.1_s0_seeds1-2",
        "budget 2.00e3: best lr 0.4 is the largest tried (0.1, 0.2, 0.4): the frontier may be "
        "under-tuned; extend the grid with: mltrain -m coarsening=none train.target_flops=2000 "
        f"optimizer.lr=0.8 train.seed=0 hydra.sweep.dir={root}/b2000_lr0.4_s0_lr0.8",
        "budget 2.00e3: best lr 0.4 has only one seed (DESIGN.md §8 asks ≥ 3); add them with: "
        "mltrain -m coarsening=none train.target_flops=2000 optimizer.lr=0.4 train.seed=1,2 "
        f"hydra.sweep.dir={root}/b2000_lr0.4_s0_seeds1-2",
        "3 budgets (DESIGN.md §8 asks ≥ 4); add one at 8.00e3 with: mltrain -m coarsening=none "
        "train.target_flops=4000 train.flops_scale=2 optimizer.lr=0.1,0.2,0.4 train.seed=0 "
        f"hydra.sweep.dir={root}/b4000_lr0.2_s0_flops_scale2_lr0.1-0.2-0.4",
    ]
    # the best learning rate is chosen by the mean final loss over its seeds: 3.21
    assert f.budgets[2].best_lr == 0.2 and f.budgets[2].loss == pytest.approx(3.21)
    assert f.budgets[2].spread() == (pytest.approx(3.2), pytest.approx(3.22))


def test_a_non_monotone_frontier_from_runs_is_warned(tmp_path):
    make_frontier(tmp_path / "front", best=(4.0, 3.3, 3.5))
    method(tmp_path / "methods", "m", 3.4)
    j = judged(tmp_path)
    (f,) = j.frontiers
    assert list(f.envelope) == [4.0, 3.3, 3.3]
    assert (
        "budget 4.00e3: best loss 3.5000 is above a smaller budget's (3.3000); the frontier uses "
        "3.3000 there (made monotone)" in f.warnings
    )
    # r = 3000 / (1000 * 2**(6/7))
    assert j.results[0].seeds[0].r["head"].lo == pytest.approx(3000 / (1000 * 2 ** (6 / 7)))


def test_a_diverged_run_is_never_a_frontier_point(tmp_path):
    root = make_frontier(tmp_path / "front")
    # lr 0.8 at budget 2000: its last finite evaluation (3.0) beats every other lr, then NaN
    write_run(
        root / "b2000_lr0.8",
        [0, 1000, 1500, 2000],
        [10, 3.0, nan, nan],
        "coarsening=none",
        "train.target_flops=2000",
        "optimizer.lr=0.8",
    )
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert [b.best_lr for b in f.budgets] == [0.2, 0.2, 0.2] and f.losses[1] == 3.5
    assert "budget 2.00e3: lr 0.8 not a frontier point: seed 0 diverged at step 2" in f.warnings


def test_seeds_of_a_method_are_judged_one_by_one(tmp_path):
    make_frontier(tmp_path / "front")
    for seed, loss in enumerate((3.4, 3.5, 3.3)):
        method(tmp_path / "methods", f"m{seed}", loss, 3000, f"train.seed={seed}")
    (res,) = judged(tmp_path).results
    # per seed: C*(3.4) = 2000 * 2**(1/3), C*(3.5) = 2000, C*(3.3) = 2000 * 2**(2/3)
    want = [3000 / (2000 * 2 ** (1 / 3)), 1.5, 3000 / (2000 * 2 ** (2 / 3))]
    got = [s.r["head"].lo for s in res.seeds]
    assert got == [pytest.approx(w) for w in want]
    mean, lo, hi = res.r["head"]
    assert mean.lo == pytest.approx(np.mean(want)) and (lo.lo, hi.lo) == (
        pytest.approx(min(want)),
        pytest.approx(max(want)),
    )
    # gap: the same L*(3000) for every seed, so the mean gap is mean(loss) - L*
    assert res.gap["head"][0].lo == pytest.approx(3.4 - L_STAR)


def test_the_per_seed_table_gives_each_seeds_numbers_and_why_a_seed_has_none(tmp_path):
    """Seed 0 ends at 3.5 = L*(2000) after 3000 FLOPs: r = 3000 / 2000 with head, gap
    3.5 - L*(3000); non-embedding both spent 1000 for 3.5 (r 1, gap 0). Seed 1 diverges: its row
    names why (its FLOPs are what it spent: to 3000, NaN from step 1) and leaves the loss, r and
    gap columns empty."""
    from mltrain.analysis.reports.tables import per_seed_table

    make_frontier(tmp_path / "front")
    method(tmp_path / "methods", "m0", 3.5, 3000, "train.seed=0")
    write_run(
        tmp_path / "methods" / "m1",
        [0, 1500, 3000],
        [10, nan, nan],
        "coarsening=even_odd",
        "train.seed=1",
        nonembed=[0, 500, 1000],
    )
    rows = [x for x in per_seed_table(judged(tmp_path)) if x.startswith(f"| {EO} |")]
    assert rows == [
        f"| {EO} | 0 | m0 | 3.00e3 | 1.00e3 | 3.5000 | 1.500 | 1.000 | {3.5 - L_STAR:+.3f} | +0.000 |",
        f"| {EO} | 1 | m1 | 3.00e3 | 1.00e3 | diverged at step 1 |  |  |  |  |",
    ]


def test_method_and_frontier_settings_that_differ_are_warned(tmp_path):
    make_frontier(tmp_path / "front")
    method(tmp_path / "methods", "a", 3.4, 3000, "model.n_layer=6")
    method(tmp_path / "methods", "b", 3.4, 3000, "data.batch_size=8", "data.cache_dir=/elsewhere")
    j = judged(tmp_path)
    warns = j.all_warnings()
    assert any(
        w.endswith("model differs from `tuned frontier, SGD`: model.n_layer=6") for w in warns
    )
    # tiny model: 16 x 32 tokens per step in the frontier, 8 x 32 in run b; cache_dir is inert
    assert any(
        w.endswith("tokens per step differ from `tuned frontier, SGD`: 256 vs 512") for w in warns
    )
    assert not any("cache_dir" in w or "data differs" in w for w in warns)


@pytest.mark.parametrize("optimizer, warned", [("sgd", True), ("adamw", False)])
def test_a_method_with_another_optimizer_than_the_frontier_is_warned(tmp_path, optimizer, warned):
    """An SGD method against an AdamW frontier: its r compares optimizers as well as methods,
    so compare warns (it said nothing); an AdamW method against it is not warned."""
    for b, loss in zip((1000, 2000, 4000), (4.0, 3.5, 3.2)):
        for lr, plus in ((1e-3, 0.3), (2e-3, 0.0), (4e-3, 0.2)):
            tuned(tmp_path / "front", b, lr, loss + plus, 0, "optimizer=adamw")
    method(tmp_path / "methods", "m", 3.4, 3000, f"optimizer={optimizer}")
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[tmp_path / "front"])
    line = f"`{EO}`: optimizer differs from `tuned frontier, AdamW`: optimizer=sgd"
    assert (f"warning: {line}" in res.terminal.splitlines()) is warned
    assert (f"- {line}" in res.markdown.splitlines()) is warned
    assert ("optimizer differs" in res.terminal + res.markdown) is warned


SCHED = (
    "`{}`: schedule {} not among those `tuned frontier, SGD` tried ({}): r may credit the "
    "schedule; add frontier runs with {}"
)


@pytest.mark.parametrize(
    "extra, frontier_wsd, line",
    [
        (("schedule=wsd",), False, SCHED.format(EO, "wsd", "cosine", "schedule=wsd")),
        (("schedule=wsd",), True, None),  # the frontier tried wsd at one budget: not warned
        ((), False, None),  # cosine, as the frontier: not warned
        (
            ("schedule=wsd", "schedule.decay_fraction=0.1"),
            True,
            SCHED.format(
                EO,
                "wsd decay_fraction=0.1",
                "cosine, wsd",
                "schedule=wsd schedule.decay_fraction=0.1",
            ),
        ),
    ],
)
def test_a_method_with_a_schedule_the_frontier_never_tried_is_warned(
    tmp_path, extra, frontier_wsd, line
):
    """A wsd method against a cosine frontier: its r credits the schedule as well as the
    method, so compare warns with the frontier runs that would try it (it said nothing); a
    schedule the frontier tried at any budget is not warned."""
    make_frontier(tmp_path / "front")
    if frontier_wsd:  # wsd at the smallest budget only, worse than cosine there
        for lr in (0.1, 0.2, 0.4):
            tuned(tmp_path / "front", 1000, lr, 4.5, 0, "schedule=wsd")
    method(tmp_path / "methods", "m", 3.4, 3000, *extra)
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[tmp_path / "front"])
    said = [x for x in (res.terminal + res.markdown).splitlines() if "not among those" in x]
    assert said == ([] if line is None else [f"warning: {line}", f"- {line}"])


def test_frontiers_per_optimizer(tmp_path):
    make_frontier(tmp_path / "front")
    for b, loss in zip((1000, 2000, 4000), (3.9, 3.4, 3.1)):
        for lr in (1e-3, 2e-3, 4e-3):
            tuned(
                tmp_path / "front", b, lr, loss + (0 if lr == 2e-3 else 0.2), 0, "optimizer=adamw"
            )
    method(tmp_path / "methods", "m", 3.4)
    j = judged(tmp_path)
    assert [f.label for f in j.frontiers] == ["tuned frontier, SGD", "tuned frontier, AdamW"]
    assert [len(j.results), j.frontiers[1].budgets[0].best_lr] == [2, 2e-3]
    # against AdamW's frontier 3.4 is reached at 2000 exactly: r = 1.5
    assert j.results[1].seeds[0].r["head"] == Bounded.exact(1.5)


# --------------------------------------------------------------------------- end to end
def saved_frontier_figure(monkeypatch, png: Path, dpi: int = 110):
    """Keep the figure mltrain-compare draws for ``frontier.png``; after the run, check that
    the file holds it (its pixels are a fresh rendering of that figure at ``dpi``, its size
    the figure's inches × dpi) and return it for its data to be read."""
    from matplotlib.image import imread

    from mltrain.analysis.figures import frontier_plot

    figures = []
    plot = frontier_plot.plot_frontier

    def keeping(*args, **kwargs):
        figures.append(plot(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(frontier_plot, "plot_frontier", keeping)

    def check():
        (fig,) = figures
        saved = imread(png)
        fig.savefig(png.with_name("again.png"), dpi=dpi)
        w, h = fig.get_size_inches() * dpi
        assert saved.shape[:2] == (round(h), round(w))
        assert np.array_equal(saved, imread(png.with_name("again.png")))
        return fig

    return check


def points(ax) -> set:
    """(x, y) of every scatter point of ``ax``."""
    return {tuple(map(float, xy)) for c in ax.collections for xy in c.get_offsets()}


def test_frontier_sweep_and_a_multilevel_run_give_the_plot_and_the_headline_table(
    tmp_path, monkeypatch
):
    make_frontier(tmp_path / "front", budgets=(1000, 2000, 4000, 8000), best=(4.0, 3.5, 3.2, 3.0))
    method(tmp_path / "methods", "m", 3.4)
    saved = saved_frontier_figure(monkeypatch, tmp_path / "out" / "frontier.png")
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[tmp_path / "front"])
    fig = saved()
    md = res.markdown
    assert "## Against the tuned frontier" in md
    # configuration, frontier, FLOPs, final val loss, r (head / non-embed), gap (head / non-embed),
    # seeds; non-embedding: budgets 500..4000, method 1000 -> r = 0.794, gap = 3.4 - 3.5; tokens:
    # write_run records 64 tokens per fine step, the method ran 2
    assert (
        f"| {EO} | tuned frontier, SGD | 3.00e3 | 128 | 3.4000 | 1.191 | 0.794 | +0.075 | -0.100 | 1 |"
        in md
    )
    assert (
        "| 8.00e3 | 8.00e3 | 4.00e3 | 0.1: 3.3000 (1); 0.2: 3.0000 (1); 0.4: 3.2000 (1) | cosine, 0.2 | 3.0000 (3.0000–3.0000) | — | 3.0000 |"
        in md
    )
    assert "best lr 0.2 has only one seed" in md
    (row,) = list(csv.DictReader(open(tmp_path / "out" / "frontier.csv")))
    assert float(row["r_head"]) == pytest.approx(1.190551, abs=1e-6) and row["r_head_kind"] == "="
    assert float(row["gap_nonembed"]) == pytest.approx(-0.1) and row["run"] == "m"
    assert res.terminal.splitlines()[0].startswith(f"{EO} (one seed) against tuned frontier, SGD")
    ax = fig.axes[0]  # with head: every tuned run (lr 0.1: +0.3, 0.2: best, 0.4: +0.2)
    tuned_runs = {
        (float(b), round(best + plus, 9))
        for b, best in zip((1000, 2000, 4000, 8000), (4.0, 3.5, 3.2, 3.0))
        for plus in (0.3, 0.0, 0.2)
    }
    assert tuned_runs <= {(x, round(y, 9)) for x, y in points(ax)}
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]  # the method, at 3000
    assert [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in stars] == [([3000], [3.4])]
    envelope = [ln for ln in ax.get_lines() if ln.get_linewidth() == 2]
    assert [list(ln.get_xdata()) for ln in envelope] == [[1000, 2000, 4000, 8000]]
    assert [list(ln.get_ydata()) for ln in envelope] == [[4.0, 3.5, 3.2, 3.0]]
    assert "r = 1.19" in [t.get_text() for t in ax.texts]
    assert "r = 0.79" in [t.get_text() for t in fig.axes[1].texts]


def test_a_tuned_run_far_above_is_marked_on_the_top_edge_and_not_in_the_legend(
    tmp_path, monkeypatch
):
    """A learning rate whose only run ends far above the others (9.0 against 3.0 to 4.3; the
    panel reaches one span of the best points and the method, 3.0 to 4.0, above them) lies
    outside the panel's y-range; it was listed in the legend as if shown, and as the first run
    found it stretched the panel to 9 (the spike rule is for curves in time order). Now a ^
    at the top edge marks it at its FLOPs, its legend entry says so, and the figure's legend
    says what the ^ is; "1 budget" is singular."""
    make_frontier(tmp_path / "front", budgets=(1000, 2000, 4000, 8000), best=(4.0, 3.5, 3.2, 3.0))
    tuned(tmp_path / "front", 1000, 0.01, 9.0)  # the first run found: the order must not matter
    method(tmp_path / "methods", "m", 3.4)
    saved = saved_frontier_figure(monkeypatch, tmp_path / "out" / "frontier.png")
    C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[tmp_path / "front"])
    ax = saved().axes[0]
    top = ax.get_ylim()[1]
    assert top < 9.0
    assert (1000.0, top) in points(ax) and (1000.0, 9.0) not in points(ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "lr 0.01 (above the range)",  # its only run is the ^: named as such
        "lr 0.1",
        "lr 0.2",
        "lr 0.4",
    ]
    legend = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert "tuned run above the y-range (top edge, at its FLOPs)" in legend
    assert ax.get_title().startswith("tuned frontier, SGD: 4 budgets, ")

    make_frontier(tmp_path / "one", budgets=(1000,), best=(4.0,))
    monkeypatch.undo()
    from mltrain.analysis.figures import frontier_plot

    plot, figures = frontier_plot.plot_frontier, []
    monkeypatch.setattr(
        frontier_plot, "plot_frontier", lambda *a, **k: figures.append(plot(*a, **k)) or figures[-1]
    )
    C.compare([tmp_path / "methods"], tmp_path / "out1", frontier=[tmp_path / "one"])
    ax = figures[0].axes[0]
    assert ax.get_title().startswith("tuned frontier, SGD: 1 budget, ")
    assert not any("above the y-range" in t.get_text() for t in ax.figure.legends[0].get_texts())


def test_frontier_runs_are_found_by_their_role_and_by_the_cli(tmp_path, capsys):
    root = tmp_path / "all"
    for b, loss in zip((1000, 2000, 4000), (4.0, 3.5, 3.2)):
        for lr, plus in ((0.1, 0.3), (0.2, 0.0), (0.4, 0.2)):
            tuned(root, b, lr, loss + plus, meta={"role": "frontier", "status": "completed"})
    method(root, "m", 3.4)
    res = C.compare([root], tmp_path / "out")
    assert [len(r.config.runs) for r in res.summary.rows] == [1]  # the frontier is apart
    assert res.judgement.results[0].seeds[0].r["head"].lo == pytest.approx(1.190551, abs=1e-6)
    with pytest.raises(SystemExit) as e:
        C.main([str(root / "m"), "--frontier", str(tmp_path / "nothing_here")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mltrain-compare: error: ") and "does not exist" in err[-1]
    C.main(["--frontier", *(str(p) for p in sorted(root.glob("b*"))), "--", str(root / "m")])
    out = capsys.readouterr().out
    assert out.startswith(f"{EO} (one seed) against tuned frontier, SGD (3 budgets")
    assert "frontier.png" in out


def test_unfinished_frontier_runs_are_left_out_and_no_frontier_is_one_line_exit_2(tmp_path, capsys):
    root = make_frontier(tmp_path / "front")
    # lr 0.8 at budget 4000 would be best (2.9) but is still running
    tuned(root, 4000, 0.8, 2.9, meta={"role": "frontier", "status": "running"})
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert f.budgets[2].best_lr == 0.2
    assert (
        "budget 4.00e3: lr 0.8: seed 0 left out, running at fine step 2 "
        "(no finished seed: not a frontier point)" in f.warnings
    )
    # a finished seed of the same lr is used, the running one left out: 0.8 becomes the best
    tuned(root, 4000, 0.8, 3.1, seed=1)
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert f.budgets[2].best_lr == 0.8 and f.budgets[2].loss == pytest.approx(3.1)
    assert [r.seed for r in f.budgets[2].best] == [1]
    assert "budget 4.00e3: lr 0.8: seed 0 left out, running at fine step 2" in f.warnings
    # the seeds asked for are not the running one: pasting the command twice started it twice
    (w,) = [w for w in f.warnings if "best lr 0.8 has" in w]
    assert w.startswith(
        "budget 4.00e3: best lr 0.8 has only one seed (DESIGN.md §8 asks ≥ 3); seed 0 unfinished "
        "(left out above): let it finish if running, else resume it (train.resume=auto); add the "
        "others with: "
        "mltrain -m "
    )
    args = shlex.split(w.split("add the others with: ", 1)[1])
    assert [a for a in args if a.startswith("train.seed=")] == ["train.seed=2"]
    method(tmp_path / "only_multi", "m", 3.4)
    with pytest.raises(SystemExit) as e:
        C.main([str(tmp_path / "only_multi"), "--frontier", str(tmp_path / "only_multi")])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mltrain-compare: error: no frontier: ") and "not single-level" in line


def test_a_seed_that_has_just_started_is_not_asked_for_again(tmp_path, capsys):
    """A job that has started but written no metrics yet (run.json running, its config there)
    was skipped as unreadable, so "add the others with" asked for its seed again: pasting the
    command started the seed twice. It is now read as running and named like a running seed;
    the line asks for the seeds after it. A failed job without metrics is still skipped."""
    root = make_frontier(tmp_path / "front")
    started = tuned(root, 4000, 0.2, 3.0, seed=1, meta={"role": "frontier", "status": "running"})
    (started / "metrics.jsonl").unlink()
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert f.budgets[2].best_lr == 0.2 and [r.seed for r in f.budgets[2].best] == [0]
    assert "budget 4.00e3: lr 0.2: seed 1 left out, running at fine step 0" in f.warnings
    (w,) = [w for w in f.warnings if w.startswith("budget 4.00e3: best lr 0.2 has")]
    assert "seed 1 unfinished (left out above)" in w
    args = shlex.split(w.split("add the others with: ", 1)[1])
    assert [a for a in args if a.startswith("train.seed=")] == ["train.seed=2"]
    failed = tuned(root, 4000, 0.2, 3.0, seed=3, meta={"role": "frontier", "status": "failed"})
    (failed / "metrics.jsonl").unlink()
    C.find_runs([root])
    assert f"skipping {failed}: no metrics.jsonl (a failed job?)" in capsys.readouterr().err
    # among the methods a job that has not evaluated is skipped with that reason
    method(tmp_path / "methods", "m", 3.4)
    going = method(tmp_path / "methods", "n", 3.3, meta={"status": "running"})
    (going / "metrics.jsonl").unlink()
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[root])
    assert f"skipping {going}: still running, no evaluation yet" in capsys.readouterr().err
    assert [len(r.config.runs) for r in res.summary.rows] == [1]
    # the only method given has not evaluated: the headline did say "only the tuned frontier
    # was given" (found by a helper)
    res = C.compare([going], tmp_path / "out2", frontier=[root])
    assert "- No run to judge: only tuned-frontier runs were read (its budgets" in res.markdown


def test_the_next_budget_is_not_asked_for_while_its_runs_are_going(tmp_path):
    """Three budgets finished and every lr of the fourth (8000) still running: "add one at
    8.00e3 with: ..." would start those runs twice, and "no learning rate finished without
    diverging" said they diverged. Now the fourth is named as having no point yet."""
    root = make_frontier(tmp_path / "front")
    for lr in (0.1, 0.2, 0.4):
        tuned(root, 8000, lr, 3.0, meta={"role": "frontier", "status": "running"})
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert [b.budget for b in f.budgets] == [1000, 2000, 4000]
    assert "budget 8.00e3: no learning rate has finished yet; no frontier point" in f.warnings
    assert (
        "3 budgets (DESIGN.md §8 asks ≥ 4); 8.00e3 has runs but no frontier point yet (its "
        "warning says why)" in f.warnings
    )
    assert not any("add one at" in w or "diverging" in w for w in f.warnings)


def test_frontier_preset_sweep_and_a_multilevel_run_end_to_end(tmp_path, capsys, monkeypatch):
    """experiment=frontier on the tiny model: 2 budgets x 2 learning rates, then one multilevel
    run judged against them: the frontier plot and the headline table with r."""
    from tests.helpers import TINY, cli, read_jsonl

    code, _, err = cli(
        [
            "-m",
            "experiment=frontier",
            *TINY,
            "train.target_flops=4e9",
            "train.flops_scale=0.5,1",
            "optimizer.lr=0.1,0.3",
            "hydra.sweep.dir=frontier",
        ],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    jobs = [p for p in (tmp_path / "frontier").iterdir() if p.is_dir()]
    assert len(jobs) == 4
    steps = sorted(int(json.loads((j / "run.json").read_text())["iterations"]) for j in jobs)
    assert steps == [8, 8, 16, 16]  # 2e9 and 4e9 FLOPs of 2.454e8 per tiny fine step
    assert {json.loads((j / "run.json").read_text())["role"] for j in jobs} == {"frontier"}
    code, _, err = cli(
        [
            *TINY,
            "coarsening=even_odd",
            "train.steps=8",
            "coarsening.vcycle.window=2",
            "coarsening.vcycle.coarse_steps=2",
            "hydra.run.dir=ml",
        ],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    saved = saved_frontier_figure(monkeypatch, tmp_path / "cmp" / "frontier.png")
    C.main(
        [
            str(tmp_path / "ml"),
            "--out",
            str(tmp_path / "cmp"),
            "--frontier",
            str(tmp_path / "frontier"),
        ]
    )
    out = capsys.readouterr().out
    # the figure in the file shows each frontier run and the method where their metrics end
    ax = saved().axes[0]
    final = {}
    for run in [*jobs, tmp_path / "ml"]:
        last = [r for r in read_jsonl(run / "metrics.jsonl") if "val/loss" in r][-1]
        final[run.name] = (float(last["perf/flops"]), last["val/loss"])
    assert {final[j.name] for j in jobs} <= points(ax)
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in stars] == [final["ml"]]
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    assert "tuned frontier" in summary and "r (with head)" in summary
    assert "multilevel even_odd" in out


def test_the_schedule_is_tuned_like_the_learning_rate(tmp_path):
    """A wsd run that beats every cosine run of a budget sets that budget's point; both
    schedules form one frontier, and only the winning schedule's grid is checked."""
    root = tmp_path / "front"
    make_frontier(root)  # cosine: best 4.0, 3.5, 3.2 at lr 0.2
    tuned(root, 2000, 0.2, 3.3, 0, "schedule=wsd")  # wsd beats cosine at 2000 only
    tuned(root, 2000, 0.4, 3.4, 0, "schedule=wsd")
    tuned(root, 4000, 0.2, 3.25, 0, "schedule=wsd")  # loses at 4000
    warnings: list[str] = []
    (f,) = F.frontier_families(C.find_runs([root]), warnings)
    assert [b.schedule for b in f.budgets] == ["cosine", "wsd", "cosine"]
    assert list(f.losses) == [4.0, 3.3, 3.2]
    assert f.budgets[1].others == {"cosine": 3.5} and f.budgets[2].others == {"wsd": 3.25}
    assert any("budget 2.00e3: best lr (wsd) 0.2 is the smallest tried" in w for w in f.warnings)
    assert not any("(wsd)" in w and "4.00e3" in w for w in f.warnings)


def test_a_run_scaled_by_flops_scale_sits_at_its_scaled_budget(tmp_path):
    """experiment=frontier sets train.target_flops to the reference and train.flops_scale per
    run: the budget is their product (a wsd run at 1/4 of the reference was counted at the
    reference budget before)."""
    root = make_frontier(tmp_path / "front")
    tuned(root, 8000, 0.3, 3.0, 0, "train.flops_scale=0.5")  # spends 4000 FLOPs
    (f,) = F.frontier_families(C.find_runs([root]), [])
    (b,) = [b for b in f.budgets if b.budget == 4000]
    assert b.best_lr == 0.3 and b.loss == pytest.approx(3.0)
    assert all(b.budget != 8000 for b in f.budgets)


def test_an_unfinished_method_run_is_left_out_of_the_judgement(tmp_path):
    """A method seed still running has no final loss: r and the gap come from the finished
    seeds only, and a warning names the one left out."""
    make_frontier(tmp_path / "front", budgets=(1000, 2000, 4000, 8000), best=(4.0, 3.5, 3.2, 3.0))
    method(tmp_path / "methods", "m0", 3.4)
    method(tmp_path / "methods", "m1", 3.9, 3000, "train.seed=1", meta={"status": "running"})
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[tmp_path / "front"])
    (row,) = list(csv.DictReader(open(tmp_path / "out" / "frontier.csv")))
    assert row["run"] == "m0" and float(row["r_head"]) == pytest.approx(1.190551, abs=1e-6)
    assert any("seed 1 left out, running" in w for w in res.judgement.all_warnings())


# --------------------------------------------------------------------------- issue 29
def test_runs_capped_by_max_steps_sit_at_what_they_planned_and_are_named(tmp_path, capsys):
    """mode=smoke caps every run of a frontier sweep at train.max_steps: four configured budgets
    (1e3 to 8e3 FLOPs) whose runs each planned and spent 2 steps of 250 FLOPs (run.json) are one
    budget at 500 FLOPs, not four budgets at 500 FLOPs judged without a word; each capped run is
    named in one line, and the headline says one budget."""
    root = tmp_path / "front"
    meta = {"role": "frontier", "status": "completed", "planned_flops": 500, "iterations": 2}
    for b in (1000, 2000, 4000, 8000):
        for lr, loss in ((0.1, 4.2), (0.2, 4.0)):
            write_run(
                root / f"b{b}_lr{lr}",
                [0, 250, 500],
                [10, loss + 1, loss],
                "coarsening=none",
                f"train.target_flops={b}",
                "train.max_steps=2",
                f"optimizer.lr={lr}",
                meta=meta,
            )
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert [(b.budget, b.best_lr, b.loss) for b in f.budgets] == [(500, 0.2, 4.0)]
    capped = [w for w in f.warnings if "capped its plan" in w]
    assert len(capped) == 8  # one line per run
    assert (
        f"{root / 'b8000_lr0.2'}: train.max_steps=2 capped its plan at 5.00e2 of its 8.00e3 FLOPs "
        "budget; it is a frontier point at 5.00e2, not at its configured budget" in capped
    )
    assert any(w.startswith("1 budget (DESIGN.md §8 asks ≥ 4); add one at ") for w in f.warnings)
    # a capped method run is named too; the headline has one budget at 500 FLOPs
    method(
        tmp_path / "methods",
        "m",
        4.1,
        500,
        "train.target_flops=1000",
        "train.max_steps=2",
        meta={"status": "completed", "planned_flops": 500, "iterations": 2},
    )
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[root])
    assert "against tuned frontier, SGD (one budget, 5.0e2 FLOPs)" in res.terminal
    assert (
        f"warning: run {tmp_path / 'methods' / 'm'}: train.max_steps=2 capped its plan at 5.00e2 "
        "of its 1.00e3 FLOPs budget" in capsys.readouterr().err
    )


def test_repeated_seeds_count_once_and_are_named(tmp_path):
    """train.seed=0,0 on top of a seed-0 run: three runs of seed 0 are one seed (the ≥ 3-seed
    warning stays, with the seeds it lacks), the repeat is named, and a seed's runs are averaged
    before the seeds are: seed 0 (3.2, 3.2, 3.5 -> 3.3) and seed 1 (3.0) give 3.15, not the
    runs' mean 3.225."""
    root = make_frontier(tmp_path / "front")
    for k, loss in ((1, 3.2), (2, 3.5)):
        write_run(
            root / f"again{k}",
            [0, 2000, 4000],
            [10, loss + 1, loss],
            "coarsening=none",
            "train.target_flops=4000",
            "optimizer.lr=0.2",
            "train.seed=0",
        )
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert (
        "budget 4.00e3: best lr 0.2 has only one seed (DESIGN.md §8 asks ≥ 3); add them with: "
        "mltrain -m coarsening=none train.target_flops=4000 optimizer.lr=0.2 train.seed=1,2 "
        f"hydra.sweep.dir={root}/again1_seeds1-2" in f.warnings
    )
    assert f.budgets[2].seeds == 1
    runs = ", ".join(str(root / n) for n in ("again1", "again2", "b4000_lr0.2_s0"))
    assert (
        f"budget 4.00e3: lr 0.2: one seed repeated, counted once: seed 0 by 3 runs ({runs})"
        in f.warnings
    )
    tuned(root, 4000, 0.2, 3.0, 1)
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert f.budgets[2].loss == pytest.approx(3.15) and f.budgets[2].seeds == 2
    assert any(
        "best lr 0.2 has 2 seeds" in w
        and w.endswith("train.seed=2 hydra.sweep.dir=" + str(root / "again1_seeds2"))
        for w in f.warnings
    )
    # a method configuration: two runs of seed 0 are one seed, said where it is counted
    method(tmp_path / "methods", "m", 3.4)
    method(tmp_path / "methods", "m_again", 3.4)
    res = C.compare([tmp_path / "methods"], tmp_path / "out", frontier=[root])
    assert res.terminal.startswith(f"{EO} (one seed, 2 runs) against tuned frontier, SGD")
    judge_rows = [x for x in res.markdown.splitlines() if x.startswith(f"| {EO} | tuned")]
    assert judge_rows and judge_rows[0].endswith("| 1 |")
    assert "one seed repeated, counted once: seed 0 by 2 runs" in res.markdown


def test_the_edge_of_the_grid_warning_prints_a_command_that_runs(tmp_path):
    """Best lr at the grid's edge: the warning prints the run one grid step beyond it (the
    grid's own ratio: 0.1 / 2 = 0.05 below, 0.4 x 2 = 0.8 above) at the best lr's seeds, and
    every printed command composes and plans as mltrain would run it (the tiny model with the
    default 8192-entry BPE: budgets of tens of steps)."""
    from tests.test_docs_commands import Command, compose_command

    root = tmp_path / "front"
    for lr, loss in ((0.1, 4.0), (0.2, 4.1), (0.4, 4.2)):  # best: the smallest tried
        tuned(root, 40_000_000_000, lr, loss, 0, "model=tiny")
    for lr, loss in ((0.1, 3.8), (0.2, 3.6), (0.4, 3.5)):  # best: the largest tried
        tuned(root, 80_000_000_000, lr, loss, 0, "model=tiny")
    (f,) = F.frontier_families(C.find_runs([root]), [])
    assert (
        "budget 4.00e10: best lr 0.1 is the smallest tried (0.1, 0.2, 0.4): the frontier may be "
        "under-tuned; extend the grid with: mltrain -m coarsening=none "
        "train.target_flops=40000000000 model=tiny optimizer.lr=0.05 train.seed=0 "
        f"hydra.sweep.dir={root}/b4e_10_lr0.1_s0_model_tiny_lr0.05" in f.warnings
    )
    assert any(
        w.startswith("budget 8.00e10: best lr 0.4 is the largest tried")
        and w.endswith(
            f"model=tiny optimizer.lr=0.8 train.seed=0 hydra.sweep.dir={root}/b8e_10_lr0.4_s0_model_tiny_lr0.8"
        )
        for w in f.warnings
    )
    commands = [w.split(" with: ", 1)[1] for w in f.warnings if " with: " in w]
    assert len(commands) == 5  # two grid edges, two seed commands, the next budget
    for text in commands:
        compose_command(Command("warning", 0, text))
