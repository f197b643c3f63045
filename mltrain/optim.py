"""Optimizers, the learning-rate schedule, and optimizer state across levels.

The optimizer is a ``_partial_`` Hydra config (``optimizer=sgd|adamw``) called on parameter
groups: weight decay applies to matrices and embeddings (dim >= 2), not to biases and norms.

Optimizer state across levels (``coarsening.optimizer_state``; the paper leaves it open):

- ``separate``: one persistent optimizer per level over that level's parameters, so a coarse
  level's momentum carries from one V-cycle to the next and never mixes with the fine one's;
- ``shared``: one optimizer over all parameters; its state (momentum, Adam moments) carries
  across levels;
- ``reset``: the fine optimizer persists; each coarse phase starts a fresh optimizer.

Parameters a step does not train have ``grad=None``, which SGD and AdamW skip entirely
(no weight decay, no momentum update), so they stay bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import hydra.utils
import torch
from omegaconf import DictConfig

from mltrain.errors import ConfigError


def lr_factor(step: int, total: int, name: str, warmup: int, min_ratio: float) -> float:
    """LR multiplier (of the peak) at fine step ``step`` (0-based) of ``total``.

    Linear warmup ``(step+1)/(warmup+1)`` for ``step < warmup`` (> 0 at step 0), 1.0 at the end of
    warmup (``step == warmup``); then ``cosine``: min_ratio + (1 − min_ratio)·½(1 + cos πp),
    p = (step − warmup)/(total − 1 − warmup), reaching ``min_ratio`` at the last step;
    ``constant``: 1.0. Steps past the end keep the last value.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if name == "constant":
        return 1.0
    span = total - 1 - warmup
    p = 1.0 if span <= 0 else min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def make_schedule(schedule: DictConfig, total_steps: int) -> Callable[[int], float]:
    """``fine_step -> factor`` for the ``schedule`` config group over ``total_steps`` fine steps."""
    name, warmup, ratio = schedule.name, int(schedule.warmup_steps), float(schedule.min_lr_ratio)
    return lambda step: lr_factor(step, total_steps, name, warmup, ratio)


def param_groups(params: dict[str, torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Two groups: decayed (dim >= 2) and not decayed (biases, norms); empty groups dropped."""
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    cfg: DictConfig, params: dict[str, torch.nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    """Instantiate the ``optimizer`` config (a partial) over ``params``.

    ``fused`` asks for torch's fused CUDA implementation where the optimizer has one.

    Raises:
        ConfigError: the optimizer cannot be built from these settings.
    """
    try:
        factory = hydra.utils.instantiate(cfg)
        kwargs = {"fused": True} if fused else {}
        return factory(param_groups(params, float(cfg.weight_decay)), **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer: cannot build {cfg.get('_target_')}: {e}") from None
    except Exception as e:
        raise ConfigError(
            f"optimizer._target_={cfg.get('_target_')!r} cannot be built: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None


class LevelOptimizers:
    """The optimizer each level steps with, under one ``optimizer_state`` policy.

    Args:
        cfg: the ``optimizer`` config group.
        policy: ``separate``, ``shared`` or ``reset``.
        level_params: for each level name, the parameters it trains (fine level first).
        fused: use fused CUDA implementations.
    """

    def __init__(
        self,
        cfg: DictConfig,
        policy: str,
        level_params: dict[str, dict[str, torch.nn.Parameter]],
        fused: bool = False,
    ) -> None:
        if policy not in ("separate", "shared", "reset"):
            raise ConfigError(
                f"coarsening.optimizer_state={policy!r}: choose separate, shared or reset"
            )
        self.cfg, self.policy, self.level_params, self.fused = cfg, policy, level_params, fused
        self.peak_lr = float(cfg.lr)
        self._opts: dict[str, torch.optim.Optimizer] = {}
        fine = next(iter(level_params))
        self._opts[fine] = build_optimizer(cfg, level_params[fine], fused)
        self.fine = fine

    def get(self, level: str) -> torch.optim.Optimizer:
        """The optimizer for ``level`` (created on first use under ``separate``)."""
        if self.policy == "shared":
            return self._opts[self.fine]
        if level not in self._opts:
            self._opts[level] = build_optimizer(self.cfg, self.level_params[level], self.fused)
        return self._opts[level]

    def start_phase(self, level: str) -> None:
        """Called when a coarse phase on ``level`` opens: ``reset`` drops its old state."""
        if self.policy == "reset" and level != self.fine:
            self._opts.pop(level, None)

    @staticmethod
    def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self._opts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, sd in state.items():
            if self.policy == "shared" and name != self.fine:
                continue
            self.get(name).load_state_dict(sd)
