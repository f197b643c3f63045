"""The V-cycle as data: each fine iteration is a tuple of operations the trainer walks.

With the paper's settings (``coarsening=even_odd``, fine step first, sequential) one fine
iteration inside the window is::

    Train(fine, 1)
    Restrict(coarse_a)  Train(coarse_a, m)  Prolong(coarse_a)
    Restrict(coarse_b)  Train(coarse_b, m)  Prolong(coarse_b)

and after the window just ``Train(fine, 1)`` (which iterations carry the cycle is the run's
:class:`mltrain.plan.plan.Plan`). ``Restrict`` opens a coarse phase (snapshot of
the parameters it trains: restriction is injection, so there is nothing else to do);
``Prolong`` closes it with Eq. 4. A recursive hierarchy nests phases (fine -> coarse_1 ->
coarse_2 -> ... and back up); ``combine=summed`` closes sibling phases with ``Defer``
(store δ·Δ and restore θ_before) and adds all corrections at ``ApplyDeferred``.

:func:`format_cycle` renders a cycle on one line; the run log prints it at start.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from mltrain.config import CoarseningConfig, MLTrainConfig
from mltrain.config.scheme import Scheme, fmt_value, register_scheme
from mltrain.errors import ConfigError
from mltrain.levels import Level, apply_corrections, correction, prolong, snapshot
from mltrain.plan.ops import Op, Operation, Train, handles
from mltrain.plan.plan import Plan, Stage, sized_plan
from mltrain.registry import Registry
from mltrain.train.state import EXTENSIONS, Extension, RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restrict(Operation):
    """Open a coarse phase on ``level``: snapshot θ_before of the parameters it trains."""

    level: str


@dataclass(frozen=True)
class Prolong(Operation):
    """Close the phase on ``level``: θ ← θ_before + δ·(θ − θ_before) (Lauga et al. 2025, Eq. 4)."""

    level: str


@dataclass(frozen=True)
class Defer(Operation):
    """Close the phase on ``level`` for a summed combination: keep δ·(θ − θ_before) aside and
    restore θ_before, so the next sibling phase starts from the same state."""

    level: str


@dataclass(frozen=True)
class ApplyDeferred(Operation):
    """Add every correction kept by :class:`Defer` to the parameters."""


def build_cycle(
    levels: list[Level],
    coarse_steps: int,
    combine: str = "sequential",
    fine_step: str = "before",
    coarse_lr_scale: float = 1.0,
) -> tuple[Op, ...]:
    """The operations of one fine iteration inside the window.

    Args:
        levels: the hierarchy, fine level first (:func:`mltrain.levels.base.build_hierarchy`).
        coarse_steps: m, optimizer steps per coarse phase.
        combine: ``sequential`` (each phase starts from the previous one's transferred
            result) or ``summed`` (sibling phases start from the same state; their
            δ-weighted changes are added).
        fine_step: ``before`` or ``after`` the coarse phases.
        coarse_lr_scale: the coarse phases' learning rate as a multiple of the fine one.
    """
    children: dict[str | None, list[Level]] = {}
    for lv in levels:
        children.setdefault(lv.parent, []).append(lv)
    fine = levels[0]

    def descend(lv: Level, close: type) -> list[Op]:
        ops: list[Op] = [Restrict(lv.name), Train(lv.name, coarse_steps, coarse_lr_scale)]
        for child in children.get(lv.name, []):
            ops += descend(child, Prolong)
        ops.append(close(lv.name))
        return ops

    coarse: list[Op] = []
    if coarse_steps > 0:
        top = children.get(fine.name, [])
        close = Defer if combine == "summed" else Prolong
        for lv in top:
            coarse += descend(lv, close)
        if combine == "summed" and top:
            coarse.append(ApplyDeferred())
    fine_op = [Train(fine.name, 1)]
    return tuple(fine_op + coarse if fine_step == "before" else coarse + fine_op)


# ``decorate(cycle, coarsening config, levels, seq_len) -> cycle``: schemes that change the
# V-cycle's operations register here (mltrain.schemes.corrections); applied in order.
CYCLE_DECORATORS: Registry = Registry("coarsening.corrections")


def window_of(c: CoarseningConfig, iterations: int) -> int:
    """The window in iterations: ``coarsening.vcycle.window``, or ``window_fraction`` of the
    run's ``iterations`` rounded to the nearest (halves up) when that is set."""
    v = c.vcycle
    if v.window_fraction is None:
        return int(v.window)
    return int(math.floor(float(v.window_fraction) * iterations + 0.5))


def cycle_iterations(c: CoarseningConfig, iterations: int) -> range:
    """Stage-local iterations that carry the V-cycle: start, start + every, ... below
    min(window, iterations)."""
    v = c.vcycle
    return range(int(v.start), min(window_of(c, iterations), iterations), int(v.every))


def warn_window(c: CoarseningConfig, plan: Plan) -> None:
    """Warn when the V-cycle's window (``coarsening.vcycle.window``) is longer than the run
    (``plan.iterations`` fine steps) or no iteration carries a V-cycle (its ``start`` is not
    below the window): both are allowed, and probably not meant."""
    v = c.vcycle
    if v.window_fraction is None and v.window > plan.iterations:
        log.warning(
            "coarsening.vcycle.window=%d is longer than the run (%d fine steps): every fine "
            "iteration runs coarse phases",
            *(v.window, plan.iterations),
        )
    if v.coarse_steps and not plan.multilevel and v.start:
        log.warning(
            "coarsening.vcycle.start=%d is not below the window: no fine iteration runs a V-cycle",
            v.start,
        )


def vcycle_stage(cfg: MLTrainConfig, levels: list[Level], iterations: int) -> Stage:
    """The fine level's stage: ``iterations`` fine steps, the V-cycle on iterations
    ``coarsening.vcycle.start``, start + ``every``, ... below the window (Lauga et al. 2025:
    start 0, every 1, the first ``window`` iterations), decorated by :data:`CYCLE_DECORATORS`."""
    c = cfg.coarsening
    v = c.vcycle
    cycle = build_cycle(levels, v.coarse_steps, v.combine, v.fine_step, v.coarse_lr_scale)
    for name in CYCLE_DECORATORS.names():
        cycle = CYCLE_DECORATORS.get(name)(cycle, c, levels, cfg.model.seq_len)
    return Stage(levels[0].name, iterations, cycle, cycle_iterations(c, iterations))


def vcycle_plan(cfg: MLTrainConfig, levels: list[Level], step_flops, tokens: int) -> Plan:
    """A V-cycle run: one fine stage whose iterations in the window carry the V-cycle, as
    many iterations as ``train.steps`` or the budget allows (:func:`sized_plan`)."""

    def make(n: int) -> Plan:
        return Plan(levels, (vcycle_stage(cfg, levels, n),), step_flops, tokens)

    return sized_plan(cfg, make, step_flops)


# --------------------------------------------------------------------------- run state
@dataclass
class VCycleState(Extension):
    """The open coarse phases of the V-cycle (a run extension, in every checkpoint).

    Attributes:
        delta: δ of Eq. 4 (``coarsening.vcycle.delta``).
        phases: (level, θ_before of the parameters it trains) of each open phase, innermost
            last.
        deferred: δ-weighted corrections kept by :class:`Defer` (``combine=summed``).
    """

    delta: float = 0.25
    phases: list = field(default_factory=list)
    deferred: list = field(default_factory=list)
    name = "vcycle"

    def state_dict(self) -> dict:
        return {
            "phases": [[n, {k: v.cpu() for k, v in snap.items()}] for n, snap in self.phases],
            "deferred": [{k: v.cpu() for k, v in d.items()} for d in self.deferred],
        }

    def load_state_dict(self, state: dict) -> None:
        dev = self.device
        self.phases = [(n, {k: v.to(dev) for k, v in snap.items()}) for n, snap in state["phases"]]
        self.deferred = [{k: v.to(dev) for k, v in d.items()} for d in state["deferred"]]

    def close(self, level: str) -> dict[str, torch.Tensor]:
        """Pop the innermost phase (it must be ``level``'s); returns its θ_before."""
        name, before = self.phases.pop()
        assert name == level, f"V-cycle out of order: closing {level}, open {name}"
        return before


def _vcycle_state(run: RunState) -> VCycleState | None:
    if run.cfg.coarsening.scheme != "vcycle":
        return None
    state = VCycleState(float(run.cfg.coarsening.vcycle.delta))
    state.device = run.device
    return state


EXTENSIONS.register("vcycle")(_vcycle_state)


def state_of(run: RunState) -> VCycleState:
    """The run's :class:`VCycleState`."""
    return run.extension("vcycle")


# --------------------------------------------------------------------------- handlers
@handles(Restrict)
def _restrict(run: RunState, op: Restrict) -> None:
    """Open a coarse phase: θ_before of the parameters it trains (injection: no copy else)."""
    run.optims.start_phase(op.level)
    state_of(run).phases.append((op.level, snapshot(run.params(op.level))))


@handles(Prolong)
@handles(Defer)
def _close(run: RunState, op: Prolong | Defer) -> None:
    """Close the innermost phase with Eq. 4 (Prolong) or keep its correction aside (Defer)."""
    state = state_of(run)
    before = state.close(op.level)
    params = run.params(op.level)
    if isinstance(op, Prolong):
        prolong(params, before, state.delta)
    else:
        state.deferred.append(correction(params, before, state.delta))


@handles(ApplyDeferred)
def _apply_deferred(run: RunState, op: ApplyDeferred) -> None:
    """Add every deferred correction (``combine=summed``)."""
    state = state_of(run)
    apply_corrections(run.all_params, state.deferred)
    state.deferred.clear()


# --------------------------------------------------------------------------- the scheme
def check(c) -> None:
    """A V-cycle needs coarse levels.

    Raises:
        ConfigError: ``coarsening.hierarchy.name=none``.
    """
    if c.hierarchy.name == "none":
        raise ConfigError(
            f"coarsening.scheme={c.scheme} needs coarse levels, but coarsening.hierarchy.name=none: "
            "choose a hierarchy (e.g. coarsening=even_odd) or coarsening.scheme=single_level"
        )


def trains_coarse(c: dict) -> bool:
    """Whether a V-cycle run of the nested coarsening dict ``c`` runs a coarse phase: a window
    and coarse steps (the rule for a config whose plan this version cannot build)."""
    v = c.get("vcycle", {})
    return bool(v.get("window")) and bool(v.get("coarse_steps"))


def label(flat: dict, _levels: dict | None = None) -> str:
    """``even_odd δ=0.25 m=20 w=5``: the hierarchy, δ, coarse steps and window."""
    return (
        f"{flat.get('coarsening.hierarchy.name')} δ={fmt_value(flat.get('coarsening.vcycle.delta'))} "
        f"m={flat.get('coarsening.vcycle.coarse_steps')} w={flat.get('coarsening.vcycle.window')}"
    )


def upgrade_checkpoint(state: dict, extensions: dict) -> None:
    """Checkpoints written before the V-cycle's extension kept its open phases in the
    trainer's state (``phases``, ``deferred``): they become the ``vcycle`` extension's."""
    if "phases" in state:
        extensions.setdefault(
            "vcycle", {"phases": state["phases"], "deferred": state.get("deferred", [])}
        )


VCYCLE = register_scheme(
    Scheme(
        name="vcycle",
        reads=("hierarchy", "vcycle", "corrections", "patch"),
        plan=vcycle_plan,
        check=check,
        trains_coarse=trains_coarse,
        label=label,
        after_plan=warn_window,
        upgrade_checkpoint=upgrade_checkpoint,
    )
)
