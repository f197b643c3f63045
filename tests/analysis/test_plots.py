"""Figures of ``mltrain-compare`` (mltrain.analysis.figures.plots) read back from their artists: what a
reader sees of a coarse-to-fine run on the fine-steps axis (hand-made records, values by hand)."""

from __future__ import annotations

import json
import math

from mltrain.analysis import compare as C
from mltrain.analysis.figures import plots
from mltrain.analysis.reports import summary as S
from tests.analysis.test_compare import write_run


def growth_records() -> list[dict]:
    """A coarse-to-fine run: step 0's evaluation, 4 steps of its coarse stage (fine step 0;
    evaluations 8.0 and 6.0 at steps 2 and 4), then 2 fine steps (evaluations 5.5, 5.0)."""
    recs = [{"step": 0, "fine_step": 0, "level": "fine", "val/loss": 10.0}]
    for step in range(1, 7):
        fine = max(0, step - 4)
        rec = {
            "step": step,
            "fine_step": fine,
            "level": "fine" if fine else "coarse_b",
            "train/loss": 9.0 - step / 2,
        }
        if step in (2, 4, 5, 6):
            rec["val/loss"] = {2: 8.0, 4: 6.0, 5: 5.5, 6: 5.0}[step]
        recs.append(rec)
    for r in recs:
        r |= {"perf/flops": 50.0 * r["step"], "perf/flops_nonembed": 25.0 * r["step"]}
        r |= {"perf/wall_s": float(r["step"])}
    return recs


def test_a_growth_run_starts_at_its_first_stage_on_the_fine_steps_axis(tmp_path):
    """Its coarse stage's steps count as iterations: its validation curve starts at (0, 10),
    not at the loss its fine stage began with, and it first reaches the target 5.8 (the
    single-level run's final loss) between iteration 4 (6.0) and 5 (5.5): 4 + 0.2 / 0.5 = 4.4,
    not at 0.4 (iteration 0 with every coarse-stage evaluation on it). Its fine-level training
    steps are iterations 5 and 6."""
    write_run(
        tmp_path / "r" / "single",
        [0, 100, 200, 300, 400, 500, 600],
        [10, 9, 8, 7, 6.5, 6, 5.8],
        "coarsening=none",
    )
    grow = write_run(tmp_path / "r" / "grow", [0], [10], "coarsening=grow", metrics=False)
    (grow / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in growth_records()))
    configs = C.group_configurations(C.find_runs([tmp_path / "r"]))
    assert [c.single_level for c in configs] == [True, False]
    s = S.summarize(configs)
    assert s.target == 5.8
    fig = plots.plot_losses(configs, s)
    val, train = fig.axes[3], fig.axes[7]  # the fine-steps column
    assert val.get_xlabel().startswith("fine steps")
    (curve,) = [ln for ln in val.get_lines() if ln.get_color() == "C1" and ln.get_marker() == "o"]
    assert list(curve.get_xdata()) == [0, 2, 4, 5, 6]
    assert list(curve.get_ydata()) == [10, 8, 6, 5.5, 5]
    marks = [ln for ln in val.get_lines() if ln.get_label() == plots.CROSSING]
    assert [(ln.get_xdata()[0], ln.get_mec()) for ln in marks][1][1] == "C1"
    assert math.isclose(marks[1].get_xdata()[0], 4.4)
    (steps,) = [ln for ln in train.get_lines() if ln.get_color() == "C1" and len(ln.get_xdata())]
    assert list(steps.get_xdata()) == [5, 6]
