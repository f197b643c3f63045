"""mode=smoke checks a set-up end to end: every preset's smoke run trains every level its plan
has (conf/mode/smoke.yaml: one V-cycle at the first iteration, whatever window and start a
preset sets; a staged preset's stages each keep at least one iteration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY, plugin_missing, read_jsonl, run_job

ROOT = Path(__file__).resolve().parents[1]
# the one group option that needs more than its name to compose (its yaml's example)
EXTRA = {"coarsening=custom": ["coarsening.hierarchy.blocks=[[0,3,6,9],[1,4,7,10]]"]}
PRESETS = [f"experiment={p.stem}" for p in sorted((ROOT / "conf" / "experiment").glob("*.yaml"))]
OPTIONS = [f"coarsening={p.stem}" for p in sorted((ROOT / "conf" / "coarsening").glob("*.yaml"))]


@pytest.mark.parametrize("choice", PRESETS + OPTIONS)
def test_every_preset_smoke_run_trains_every_level_of_its_plan(choice):
    import mltrain.schemes  # noqa: F401  (the plan builders)
    from mltrain.config import compose, typed, validate
    from mltrain.plan.plan import build_plan

    if plugin_missing(choice.split("=")[1]):
        pytest.skip(f"{choice} needs an optional plugin (make install-extras)")
    cfg = compose([choice, "mode=smoke", *EXTRA.get(choice, [])])
    validate(cfg)
    t = typed(cfg)
    plan = build_plan(t, 8192)
    steps = plan.steps_per_level()
    if t.coarsening.scheme == "stages":
        levels = set(t.coarsening.stages.levels)
    else:  # a V-cycle visits the whole hierarchy; single-level: the fine level
        levels = {lv.name for lv in plan.levels}
    assert {n for n, s in steps.items() if s > 0} == levels, steps
    assert plan.iterations <= 20  # still a smoke run (train.max_steps)
    if t.coarsening.scheme == "vcycle":  # one V-cycle of 2 steps per coarse level
        assert all(s == 2 for n, s in steps.items() if n != plan.fine.name), steps


def test_the_width_vcycle_alpha_sweep_under_smoke_gives_different_losses(tmp_path):
    """The preset's V-cycle starts at iteration 10, beyond a smoke run; under mode=smoke it runs
    at the first iteration: the narrow level trains the same 2 steps whatever alpha, and alpha
    (the interpolation back) changes the fine steps after it."""
    runs = {}
    for alpha in (0.25, 0.5, 1.0):
        run_job(
            tmp_path / str(alpha),
            "experiment=width_vcycle",
            "mode=smoke",
            *TINY,
            f"coarsening.vcycle.alpha={alpha}",
            "train.max_steps=2",
        )
        recs = [r for r in read_jsonl(tmp_path / str(alpha) / "metrics.jsonl") if r["step"] > 0]
        runs[alpha] = [(r["level"], r["train/loss"]) for r in recs]
    levels = [lv for lv, _ in runs[0.5]]
    assert levels == ["fine", "narrow", "narrow", "fine"]  # fine step, V-cycle, fine step
    assert all([lv for lv, _ in r] == levels for r in runs.values())
    before = {a: r[:3] for a, r in runs.items()}  # alpha acts only after the narrow steps
    assert before[0.25] == before[0.5] == before[1.0]
    after = [r[3][1] for r in runs.values()]
    assert len(set(after)) == 3, runs
