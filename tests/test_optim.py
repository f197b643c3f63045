"""LR schedules, parameter groups and optimizer-state policies."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from mltrain.config import AdamWConfig, SGDConfig
from mltrain.optim import LevelOptimizers, build_optimizer, lr_factor, param_groups


def test_cosine_peak_at_end_of_warmup_min_at_last_step_positive_at_step_0():
    total, warm, ratio = 100, 10, 0.1
    f = [lr_factor(s, total, "cosine", warm, ratio) for s in range(total)]
    assert f[0] > 0 and f[0] == pytest.approx(1 / 11)
    assert f[warm] == 1.0
    assert f[-1] == pytest.approx(ratio, abs=1e-12)
    assert all(a < b for a, b in zip(f[:warm], f[1 : warm + 1]))  # warmup rises
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1 :]))  # decay falls
    mid = warm + (total - 1 - warm) / 2  # halfway through the decay: (1 + ratio) / 2
    assert lr_factor(int(mid), total, "cosine", warm, ratio) == pytest.approx(
        ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * (int(mid) - warm) / (total - 1 - warm)))
    )


def test_cosine_without_warmup_and_constant():
    assert lr_factor(0, 50, "cosine", 0, 0.0) == 1.0
    assert lr_factor(49, 50, "cosine", 0, 0.0) == pytest.approx(0.0, abs=1e-15)
    assert [lr_factor(s, 50, "constant", 5, 1.0) for s in (0, 4, 5, 49)] == [1 / 6, 5 / 6, 1.0, 1.0]


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
    sep = LevelOptimizers(cfg, "separate", levels)
    assert sep.get("fine") is not sep.get("coarse_a") and sep.get("coarse_a") is sep.get("coarse_a")
    assert len(sep.get("coarse_a").param_groups[0]["params"]) == 2
    shared = LevelOptimizers(cfg, "shared", levels)
    assert shared.get("coarse_a") is shared.get("fine")
    reset = LevelOptimizers(cfg, "reset", levels)
    first = reset.get("coarse_a")
    reset.start_phase("coarse_a")
    assert reset.get("coarse_a") is not first
    reset.start_phase("fine")
    assert reset.get("fine") is reset.get("fine")
