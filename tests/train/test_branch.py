"""Warmup-stable-decay branches (mltrain.train.branch): a branch off a trunk is the standalone run
at its budget, bit for bit (tiny model, one thread), resumable, recorded in run.json."""

from __future__ import annotations

import json

import pytest
import torch

from mltrain.errors import CheckpointError, ConfigError
from tests.helpers import final_params, losses, make_job, preempt, run_job

# 4e9 FLOPs of 2.454e8 per tiny step: 16 steps (trunk), 8 at half (decay 20 %: from step
# 8 - round(1.6) = 6), 4 at a quarter (from 4 - round(0.8) = 3)
BASE = [
    "coarsening=none",
    "schedule=wsd",
    "train.target_flops=4e9",
    "train.threads=1",
    "train.eval_every=2",
    "optimizer.lr=0.3",
]
HALF = "train.flops_scale=0.5"


def same_run(a, b) -> None:
    assert losses(a) == losses(b)
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    root = tmp_path_factory.mktemp("branch")
    run_job(root / "trunk", *BASE, "train.branch_points=[0.5]")
    run_job(root / "alone", *BASE, HALF)
    return root


def test_a_branch_is_the_standalone_run_bit_for_bit(trunk):
    t = trunk / "trunk"
    assert json.loads((t / "run.json").read_text())["branch_points"] == {"6": 0.5}
    assert (t / "branches" / "ckpt_000000006.pt").is_file()  # the decay of 8 steps starts at 6
    run_job(trunk / "b", *BASE, HALF, f"train.branch_from={t}")
    same_run(trunk / "b", trunk / "alone")
    meta = json.loads((trunk / "b" / "run.json").read_text())
    assert meta["branch"] == {"trunk": str(t), "step": 6} and meta["status"] == "completed"
    # the trunk itself went on at the peak LR: its loss at step 8 is not the branch's
    rec = {r[0]: r for r in losses(t)}
    assert rec[8][3] != losses(trunk / "b")[-1][3]


@pytest.mark.slow
def test_a_preempted_branch_resumes_to_the_same_run(trunk):
    t = trunk / "trunk"
    preempt(trunk / "p", *BASE, HALF, f"train.branch_from={t}", stop_at=7)
    run_job(trunk / "p", *BASE, HALF, f"train.branch_from={t}", "train.resume=auto")
    same_run(trunk / "p", trunk / "alone")
    assert json.loads((trunk / "p" / "run.json").read_text())["branch"]["step"] == 6


def test_bad_branch_settings_are_one_clear_error(trunk, tmp_path):
    t = trunk / "trunk"
    with pytest.raises(CheckpointError, match=r"no branch point at step 3 .*has steps 6; run the "):
        make_job(tmp_path / "q", *BASE, "train.flops_scale=0.25", f"train.branch_from={t}")
    with pytest.raises(ConfigError, match="train.branch_from needs schedule=wsd"):
        make_job(tmp_path / "c", *BASE, HALF, "schedule=cosine", f"train.branch_from={t}")
    with pytest.raises(ConfigError, match=r"train.branch_points=\[2.0\]: each must be"):
        make_job(tmp_path / "d", *BASE, "train.branch_points=[2.0]")
    with pytest.raises(
        CheckpointError, match=r"differ from its trunk's in optimizer.lr \(trunk 0.3,"
    ):
        make_job(tmp_path / "e", *BASE, HALF, "optimizer.lr=0.1", f"train.branch_from={t}")
    assert not any((tmp_path / d).exists() for d in "qcde")  # nothing written
