"""LR schedules, parameter groups and optimizer-state policies."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mltrain.config import AdamWConfig, ScheduleConfig, SGDConfig
from mltrain.errors import ConfigError
from mltrain.train.optim import build_optimizer, level_optimizers, lr_factor, param_groups


def sched(name="cosine", warmup=0, ratio=0.1, **kw) -> ScheduleConfig:
    return ScheduleConfig(name=name, warmup_steps=warmup, min_lr_ratio=ratio, **kw)


def test_cosine_hand_values_peak_after_warmup_min_at_last_step_positive_at_step_0():
    # 21 steps, no warm-up, min 0.1: p = step/20, factor = 0.1 + 0.45 (1 + cos(pi p))
    s = sched(ratio=0.1)
    assert lr_factor(0, 21, s) == 1.0
    assert lr_factor(5, 21, s) == pytest.approx(0.1 + 0.45 * (1 + 0.7071067811865476))  # p = 1/4
    assert lr_factor(10, 21, s) == pytest.approx(0.55)  # p = 1/2
    assert lr_factor(20, 21, s) == pytest.approx(0.1, abs=1e-15)  # last step: the minimum
    assert lr_factor(25, 21, s) == pytest.approx(0.1, abs=1e-15)  # past the end: kept
    # 10 warm-up steps: (step + 1) / 11, the peak at step 10 (> 0 at step 0)
    w = sched(warmup=10, ratio=0.1)
    assert [lr_factor(k, 100, w) for k in (0, 4, 9, 10)] == [1 / 11, 5 / 11, 10 / 11, 1.0]
    assert lr_factor(99, 100, w) == pytest.approx(0.1, abs=1e-15)


def test_constant_after_warmup():
    s = sched("constant", warmup=5, ratio=1.0)
    assert [lr_factor(k, 50, s) for k in (0, 4, 5, 49)] == [1 / 6, 5 / 6, 1.0, 1.0]


@pytest.mark.parametrize(
    "shape, quarter",  # factor one quarter into the decay, min 0.1 (hand values)
    [("linear", 1 - 0.9 * 0.25), ("cosine", 0.1 + 0.45 * (1 + 0.7071067811865476)), ("sqrt", 0.55)],
)
def test_wsd_stable_then_decay_over_the_last_fraction(shape, quarter):
    # 100 steps, 5 warm-up, decay over the last 20 (steps 80..99): p = (step - 79) / 20
    s = sched("wsd", warmup=5, ratio=0.1, decay_fraction=0.2, decay_shape=shape)
    f = [lr_factor(k, 100, s) for k in range(100)]
    assert f[0] == pytest.approx(1 / 6) and f[0] > 0  # warm-up, > 0 at step 0
    assert f[5] == 1.0 and f[79] == 1.0 and set(f[5:80]) == {1.0}  # stable at the peak
    assert f[84] == pytest.approx(quarter)  # p = 5 / 20
    assert f[99] == pytest.approx(0.1, abs=1e-12)  # the minimum at the last step
    assert all(a >= b for a, b in zip(f[79:], f[80:]))  # decays monotonically


def test_wsd_decay_never_starts_inside_warmup():
    s = sched("wsd", warmup=8, ratio=0.0, decay_fraction=0.9)
    f = [lr_factor(k, 10, s) for k in range(10)]  # decay would start at 1: held until 8
    assert f[:8] == [(k + 1) / 9 for k in range(8)] and f[8] == 0.5 and f[9] == 0.0


def test_weight_decay_only_on_matrices_and_embeddings():
    lin, emb, ln = torch.nn.Linear(3, 3), torch.nn.Embedding(5, 3), torch.nn.LayerNorm(3)
    params = {"w": lin.weight, "b": lin.bias, "e": emb.weight, "g": ln.weight}
    g = param_groups(params, 0.1)
    assert g[0]["weight_decay"] == 0.1 and {id(p) for p in g[0]["params"]} == {
        id(lin.weight),
        id(emb.weight),
    }
    assert g[1]["weight_decay"] == 0.0 and {id(p) for p in g[1]["params"]} == {
        id(lin.bias),
        id(ln.weight),
    }


@pytest.mark.parametrize("schema", [SGDConfig, AdamWConfig])
def test_partial_optimizer_config_builds(schema):
    cfg = OmegaConf.structured(schema)
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = build_optimizer(cfg, {"p": p})
    assert type(opt).__name__ == schema._target_.split(".")[-1]
    assert opt.param_groups[0]["lr"] == cfg.lr


def _params():
    torch.manual_seed(0)
    return {n: torch.nn.Parameter(torch.randn(2, 2)) for n in ("a", "b", "s")}


def test_policies_separate_shared_reset():
    ps = _params()
    levels = {"fine": ps, "coarse_a": {"a": ps["a"], "s": ps["s"]}}
    cfg = OmegaConf.structured(SGDConfig)
    sep = level_optimizers(cfg, "separate", levels)
    assert sep.get("fine") is not sep.get("coarse_a") and sep.get("coarse_a") is sep.get("coarse_a")
    assert len(sep.get("coarse_a").param_groups[0]["params"]) == 2
    shared = level_optimizers(cfg, "shared", levels)
    assert shared.get("coarse_a") is shared.get("fine")
    reset = level_optimizers(cfg, "reset", levels)
    first, fine = reset.get("coarse_a"), reset.get("fine")
    reset.start_phase("coarse_a")
    assert reset.get("coarse_a") is not first  # a fresh coarse optimizer each phase
    reset.start_phase("fine")
    assert reset.get("fine") is fine  # the fine optimizer persists
    with pytest.raises(
        ConfigError, match="coarsening.hierarchy.optimizer_state='keep' is not allowed"
    ):
        level_optimizers(cfg, "keep", levels)
