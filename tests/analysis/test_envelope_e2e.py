"""End to end on tiny models: a depth family of 3 sizes x 2 learning rates x 3 budgets built with
warmup-stable-decay branches, and a growth run judged against its envelope by mltrain-compare."""

from __future__ import annotations

import json

import pytest

from mltrain.analysis import compare as C
from tests.helpers import run_job

FAMILY = ["coarsening=none", "schedule=wsd", "train.target_flops=4e9", "logger.job_type=frontier"]


@pytest.mark.slow
def test_depth_family_with_branches_and_a_growth_run(tmp_path, capsys):
    front = tmp_path / "front"
    for n in (1, 2, 4):
        for lr in (0.01, 0.03):
            trunk = front / f"n{n}_lr{lr}_trunk"
            size = (f"model.n_layer={n}", f"optimizer.lr={lr}")
            run_job(trunk, *FAMILY, *size, "train.branch_points=[0.25,0.5]")
            for s in (0.25, 0.5):
                run_job(
                    front / f"n{n}_lr{lr}_s{s}",
                    *FAMILY,
                    *size,
                    f"train.flops_scale={s}",
                    f"train.branch_from={trunk}",
                )
    branches = [p for p in front.iterdir() if "_s0." in p.name]
    assert len(branches) == 12
    assert all(json.loads((p / "run.json").read_text())["branch"]["step"] > 0 for p in branches)
    # growth: 2 of the 4 blocks (h=2) for 80 % of the steps, then all 4, at half the budget
    run_job(
        tmp_path / "grow" / "g",
        "coarsening=grow",
        "schedule=wsd",
        "train.target_flops=4e9",
        "train.flops_scale=0.5",
        "optimizer.lr=0.03",
    )
    C.main([str(tmp_path / "grow"), "--frontier", str(front), "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr().out
    # the best size per budget (3 budgets) and both r of the growth run
    head = out.index("envelope, SGD (3 sizes): budget (FLOPs with head) -> best size")
    budget_lines = out[head:].splitlines()[1:5]
    assert [x.split(" -> ")[0].strip() for x in budget_lines[:3]] == ["1.00e9", "2.00e9", "4.00e9"]
    assert all("block" in x for x in budget_lines[:3]) and " -> " not in budget_lines[3]
    row = [x for x in out.splitlines() if x.startswith("coarse-to-fine")][-1]
    # its final model (4 blocks) as a multiple of the best size at its budget
    assert "× (" in row and " non-embed) " in row and "d=32 at " in row
    res = C.compare([tmp_path / "grow"], tmp_path / "cmp2", frontier=[front]).sizes.results[0]
    assert res.same is not None and res.env.healthy  # r_same (4 blocks) and r_env both judged
    r_env, r_same = res.env.r["head"][0], res.same.r["head"][0]
    # the envelope is at or below the 4-block frontier everywhere: r_env >= r_same
    assert r_env.lo >= r_same.lo * (1 - 1e-9) or r_env.kind != "="
    assert (tmp_path / "cmp" / "isoflop.png").is_file()
