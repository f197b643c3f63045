"""Optimizers, the learning-rate schedule, and optimizer state across levels.

The optimizer is a ``_partial_`` Hydra config (``optimizer=sgd|adamw``) called on parameter
groups: weight decay applies to matrices and embeddings (dim >= 2), not to biases and norms.

Optimizer state across levels (``coarsening.hierarchy.optimizer_state``; the paper leaves it open):

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

from mltrain.config import ScheduleConfig, registries
from mltrain.errors import ConfigError
from mltrain.registry import Registry

# ``schedule.name`` -> factor(step, total, cfg): the LR multiplier of the peak at iteration
# ``step`` (0-based) of ``total``; warm-up is applied around it by :func:`lr_factor`.
SCHEDULES: Registry[Callable[[int, int, ScheduleConfig], float]] = registries.SCHEDULES


@SCHEDULES.register("cosine")
def _cosine(step: int, total: int, s: ScheduleConfig) -> float:
    """min_ratio + (1 − min_ratio)·½(1 + cos πp), p = (step − warmup)/(total − 1 − warmup):
    1 at the end of warm-up, ``min_lr_ratio`` at the last step (Loshchilov & Hutter 2017)."""
    span = total - 1 - s.warmup_steps
    p = 1.0 if span <= 0 else min(1.0, (step - s.warmup_steps) / span)
    return s.min_lr_ratio + (1.0 - s.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


@SCHEDULES.register("constant")
def _constant(step: int, total: int, s: ScheduleConfig) -> float:
    """1.0 after warm-up."""
    return 1.0


def wsd_decay_start(total: int, s: ScheduleConfig) -> int:
    """The first iteration of a warmup-stable-decay run of ``total`` iterations whose LR is
    below the peak: ``max(warmup, total − max(1, round(decay_fraction·total)))``. Before it the
    schedule does not depend on ``total``, so a run's state there is that of any longer run
    (a branch of a trunk, :mod:`mltrain.train.branch`)."""
    return max(s.warmup_steps, total - max(1, round(s.decay_fraction * total)))


@SCHEDULES.register("wsd")
def _wsd(step: int, total: int, s: ScheduleConfig) -> float:
    """Warmup-stable-decay (Hägele et al. 2024, arXiv 2405.18392): 1.0 until the last
    n_d = max(1, round(decay_fraction·total)) steps (never before the end of warm-up), which
    decay with progress p = (step − start + 1)/n_d ∈ (0, 1] to ``min_lr_ratio`` r at the last
    step: ``linear`` 1 − (1 − r)p, ``cosine`` r + (1 − r)·½(1 + cos πp), ``sqrt``
    1 − (1 − r)√p (the paper's "1 − sqrt" cooldown)."""
    start = wsd_decay_start(total, s)
    if step < start:
        return 1.0
    p = min(1.0, (step - start + 1) / max(1, total - start))
    r = s.min_lr_ratio
    if s.decay_shape == "cosine":
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    if s.decay_shape == "sqrt":
        return 1.0 - (1.0 - r) * math.sqrt(p)
    return 1.0 - (1.0 - r) * p


def lr_factor(step: int, total: int, s: ScheduleConfig) -> float:
    """LR multiplier (of the peak) at iteration ``step`` (0-based) of ``total``.

    Linear warm-up ``(step+1)/(warmup+1)`` for ``step < warmup`` (> 0 at step 0, reaching 1.0
    at ``step == warmup``), then the schedule ``s.name`` (:data:`SCHEDULES`). Steps past the
    end keep the last value.
    """
    if step < s.warmup_steps:
        return (step + 1) / (s.warmup_steps + 1)
    return SCHEDULES.get(s.name)(min(step, total - 1), total, s)


def make_schedule(schedule: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """``iteration -> factor`` for the ``schedule`` section over ``total_steps`` iterations."""
    SCHEDULES.get(schedule.name)  # an unknown name fails here, not at the first step
    return lambda step: lr_factor(step, total_steps, schedule)


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
    cfg, params: dict[str, torch.nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    """Instantiate the ``optimizer`` config (a ``_partial_`` dataclass such as
    :class:`mltrain.config.SGDConfig`, or its DictConfig) over ``params``.

    ``fused`` asks for torch's fused CUDA implementation where the optimizer has one.

    Raises:
        ConfigError: the optimizer cannot be built from these settings.
    """
    try:
        factory = hydra.utils.instantiate(cfg)
        kwargs = {"fused": True} if fused else {}
        return factory(param_groups(params, float(cfg.weight_decay)), **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer: cannot build {_target(cfg)}: {e}") from None
    except Exception as e:
        raise ConfigError(
            f"optimizer._target_={_target(cfg)!r} cannot be built: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None


def _target(cfg) -> str | None:
    return getattr(cfg, "_target_", None)


class LevelOptimizers:
    """The optimizer each level steps with, under one ``optimizer_state`` policy
    (:data:`STATE_POLICIES`; build with :func:`level_optimizers`).

    This base class is the ``separate`` policy: one persistent optimizer per level, created on
    the level's first step.

    Args:
        cfg: the ``optimizer`` section.
        level_params: for each level name, the parameters it trains (fine level first).
        fused: use fused CUDA implementations.
    """

    def __init__(
        self, cfg, level_params: dict[str, dict[str, torch.nn.Parameter]], fused: bool = False
    ) -> None:
        self.cfg, self.level_params, self.fused = cfg, level_params, fused
        self.peak_lr = float(cfg.lr)
        self.fine = next(iter(level_params))
        self._opts: dict[str, torch.optim.Optimizer] = {
            self.fine: build_optimizer(cfg, level_params[self.fine], fused)
        }

    def get(self, level: str) -> torch.optim.Optimizer:
        """The optimizer for ``level``."""
        if level not in self._opts:
            self._opts[level] = build_optimizer(self.cfg, self.level_params[level], self.fused)
        return self._opts[level]

    def start_phase(self, level: str) -> None:
        """Called when a coarse phase on ``level`` opens."""

    def inherit_state(self, source: str, target: str, inherit: dict[str, str]) -> None:
        """Optimizer state at a growth: each parameter ``n`` that ``target``'s optimizer trains
        gets a copy of the state ``source``'s optimizer holds for parameter ``inherit[n]`` (a
        trained block keeps its momentum / Adam moments, also when its tensors moved, e.g. a
        stacked block); every other parameter of ``target`` starts fresh (its state is
        dropped). Copies, read before anything is written, so it works when the two are one
        optimizer (``shared``) and the two levels' states stay independent otherwise."""
        src, dst = self.get(source), self.get(target)
        sources = self.level_params[source]
        saved = {}
        for n, s in inherit.items():
            p = sources[s]
            if p in src.state:
                saved[n] = {
                    k: v.clone() if torch.is_tensor(v) else v for k, v in src.state[p].items()
                }
        for n, p in self.level_params[target].items():
            dst.state.pop(p, None)
            if n in saved:
                dst.state[p] = saved[n]

    @staticmethod
    def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self._opts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, sd in state.items():
            self.get(name).load_state_dict(sd)
            self._fused_here(self._opts[name])

    def _fused_here(self, opt: torch.optim.Optimizer) -> None:
        """After a load: the fused implementation where this run uses one (a checkpoint's
        param groups carry the ``fused`` flag of the device that wrote it)."""
        for group in opt.param_groups:
            if "fused" in group:
                group["fused"] = True if self.fused else None


STATE_POLICIES: Registry[type[LevelOptimizers]] = registries.STATE_POLICIES
STATE_POLICIES.register("separate")(LevelOptimizers)


@STATE_POLICIES.register("shared")
class SharedOptimizer(LevelOptimizers):
    """One optimizer over all parameters; its state (momentum, Adam moments) carries across
    levels (a coarse step updates the state of the tensors it trains)."""

    def get(self, level: str) -> torch.optim.Optimizer:
        return self._opts[self.fine]

    def load_state_dict(self, state: dict) -> None:
        self._opts[self.fine].load_state_dict(state[self.fine])
        self._fused_here(self._opts[self.fine])


@STATE_POLICIES.register("reset")
class ResetOptimizers(LevelOptimizers):
    """The fine optimizer persists; each coarse phase starts a fresh optimizer."""

    def start_phase(self, level: str) -> None:
        if level != self.fine:
            self._opts.pop(level, None)


def level_optimizers(
    cfg, policy: str, level_params: dict[str, dict[str, torch.nn.Parameter]], fused: bool = False
) -> LevelOptimizers:
    """The :class:`LevelOptimizers` of ``policy`` (``separate``, ``shared`` or ``reset``).

    Raises:
        ConfigError: an unknown policy.
    """
    return STATE_POLICIES.get(policy)(cfg, level_params, fused)
