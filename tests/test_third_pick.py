"""scripts/third_pick.py: the third edition's plan constants and its picks from finished runs.

Hand values: d=48, T=128, 16 x 128 = 2,048 tokens per step, 2,048-entry BPE; DESIGN.md section
3's convention: per token and block 24 d^2 + 4 T d = 79,872 FLOPs forward, the head 2 d V =
196,608, times 3 for forward and backward. The 12-block model's 443,808 parameters are the
measured run.json ``params.total``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mltrain.config import compose, typed
from mltrain.plan.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("third_pick", ROOT / "scripts" / "third_pick.py")
third_pick = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(third_pick)


@pytest.mark.parametrize("n_layer", [2, 3, 4, 6, 12])
def test_step_flops_by_hand_and_by_the_plan(n_layer):
    hand = 2048 * 3 * (n_layer * 79_872 + 196_608)
    cfg = typed(compose(["experiment=third_envelope", f"model.n_layer={n_layer}"]))
    plan = build_plan(cfg, 2048)
    assert third_pick.step_flops(n_layer) == hand == plan.step_flops["fine"].total


def test_largest_budget_is_the_presets_and_reaches_20_tokens_per_parameter():
    cfg = typed(compose(["experiment=third_envelope"]))
    assert cfg.train.target_flops * cfg.train.flops_scale == third_pick.TOP
    assert cfg.data.bpe_vocab_size == 2048
    tokens = third_pick.TOP / third_pick.step_flops(12) * 2048
    assert tokens >= 20 * 443_808  # 9.23 M tokens >= 8.88 M


def _run(root: Path, name: str, loss: float, status: str, overrides: list[str]) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"status": status}))
    rows = [
        {"step": 0, "val/loss": 9.0},
        {"step": 5, "train/loss": 1.0},
        {"step": 9, "val/loss": loss},
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def test_best_picks_the_lowest_finished_final_loss_and_drops_the_callers_keys(tmp_path, capsys):
    _run(tmp_path, "grow_tune_a", 5.0, "completed", ["optimizer.lr=2e-3", "train.seed=0"])
    _run(
        tmp_path,
        "grow_tune_b",
        4.0,
        "completed",
        [
            "optimizer.lr=4e-3",
            "coarsening.stages.shares=[0.3,0.3,0.4]",
            "train.seed=0",
            "hydra.run.dir=x",
        ],
    )
    _run(tmp_path, "grow_tune_c", 3.0, "running", ["optimizer.lr=8e-3", "train.seed=0"])
    _run(tmp_path, "late_tune_a", 2.0, "completed", ["optimizer.lr=1e-3"])
    assert third_pick.main(["best", str(tmp_path), "grow_tune_*", "--drop", "train.seed"]) == 0
    assert (
        capsys.readouterr().out.strip()
        == "optimizer.lr=4e-3 'coarsening.stages.shares=[0.3,0.3,0.4]'"
    )
    assert third_pick.main(["lrs", str(tmp_path), "grow_tune_*"]) == 0
    assert capsys.readouterr().out.split() == ["4e-3", "2e-3"]  # the running run is left out
    assert third_pick.main(["best", str(tmp_path), "patch_tune_*"]) == 0
    assert capsys.readouterr().out == ""  # nothing finished: the script's part says so


def test_the_plan_has_a_row_for_every_part_that_trains():
    """Each part of results_third.sh that runs training (its `case` labels, less the ones that
    only list, record, judge or time) is costed in `plan`; env_below by hand: 4 runs at 1/8 and
    2 at 1/4 at the 2-block rate, 4e12 / 2,189,426,688 FLOPs per step x 0.0702 s x 1.03."""
    import re

    driver = (Path(__file__).parents[1] / "scripts" / "results_third.sh").read_text()
    parts = set(re.findall(r"^  ([a-z_]+)\)", driver, re.M)) - {
        "list",
        "plan",
        "records",
        "compare",
        "time",
    }
    rows = third_pick.plan_rows()
    assert parts == {what.split(":")[0] for what, _, _ in rows}
    (below,) = [r for r in rows if r[0].startswith("env_below")]
    b8 = 4e12 / 2_189_426_688 * 0.0702 / 60 * 1.03
    assert below[1] == 6 and below[2] == pytest.approx((4 * b8 + 2 * 2 * b8) / 6, rel=1e-3)
    assert below[2] == pytest.approx(2.936, abs=0.001)
