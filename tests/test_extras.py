"""The optional Hydra plugins (``make test-extras``): the Optuna sweeper preset and the
submitit launcher with its local executor, including one sweep point run by two processes."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import TINY, has_module, read_jsonl, run_mltrain

pytestmark = pytest.mark.extras
SMOKE = ["mode=smoke", *TINY]


@pytest.mark.skipif(
    not has_module("hydra_plugins.hydra_optuna_sweeper"),
    reason="needs hydra-optuna-sweeper (make install-extras)",
)
def test_optuna_preset_minimises_the_final_validation_loss(tmp_path):
    res = run_mltrain(
        [
            "-m",
            "experiment=optuna_delta",
            *SMOKE,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    finals = [
        [r for r in read_jsonl(j / "metrics.jsonl") if "val/loss" in r][-1]["val/loss"]
        for j in sorted((tmp_path / "sweep").iterdir())
        if (j / "metrics.jsonl").is_file()
    ]
    assert len(finals) == 2 and best["best_value"] == pytest.approx(min(finals))


needs_submitit = pytest.mark.skipif(
    not has_module("hydra_plugins.hydra_submitit_launcher"),
    reason="needs hydra-submitit-launcher (make install-extras)",
)


@needs_submitit
def test_submitit_local_launcher_runs_each_sweep_point(tmp_path):
    res = run_mltrain(
        [
            "-m",
            *SMOKE,
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "coarsening.vcycle.delta=0.1,0.5",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list((tmp_path / "sweep").glob("*/metrics.jsonl"))) == 2


@needs_submitit
def test_submitit_job_with_two_tasks_trains_with_two_processes(tmp_path):
    res = run_mltrain(
        [
            "-m",
            *SMOKE,
            "data.batch_size=2",
            "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.timeout_min=10",
            "train.device=cpu",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (metrics,) = (tmp_path / "sweep").glob("*/metrics.jsonl")
    last = read_jsonl(metrics)[-1]
    assert last["perf/tokens"] == 8 * 2 * 2 * 32  # 8 steps x 2 ranks x batch 2 x 32 tokens
