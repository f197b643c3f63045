"""Width levels in the V-cycle and in stages (Zou, Zhang, Deng, ICLR 2024, arXiv 2404.07999;
the levels are :class:`mltrain.levels.width.WidthLevel`, the maps :mod:`mltrain.model.width`).

**Width V-cycle** (their Alg. 1 with our window/placement settings): for a width level the
V-cycle's ``Restrict``/``Prolong`` become :class:`WidthRestrict` (coalesce the fine model into
the level's narrow tensors, in place) and :class:`WidthProlong` (de-coalesce and interpolate,
θ_fine ← (1 − α)·θ_fine + α·decoalesce(θ_narrow)). This is Eq. 4 of Lauga et al. with
θ_before the fine tensors and θ_after the de-coalesced narrow ones, so α plays δ's role:
``coarsening.vcycle.alpha``, or δ when it is not set. The maps' own FLOPs are booked through
the operations' :meth:`~mltrain.plan.ops.Operation.extra_flops` to the width level.

**Optimizer state** (``coarsening.hierarchy.optimizer_state``): ``separate`` keeps one narrow
optimizer per width level whose tensors each coalescing refills in place, so its moments carry
from one V-cycle to the next; ``reset`` starts a fresh one at each coarse phase (Zou et al.'s
stages each start a fresh AdamW); ``shared`` is refused (other shapes,
:func:`mltrain.levels.width.check_width`). The fine optimizer is untouched by a coarse phase.

**Checkpoints**: the fine model and every optimizer as usual, plus the narrow tensors of each
width level in this module's extension (``width``), so a run stopped inside a coarse phase
resumes bitwise.

**Width growth** (stages): :func:`mltrain.schemes.growth.grow` calls :func:`grow_width` when a
stage change leaves or enters a width level: de-coalesce with α = 1 (function-preserving:
the fine model along the source's path computes the narrow model's function exactly), then the
depth growth operator for the blocks the source skipped, then (entering a width level)
coalesce. The target starts with fresh optimizer state.

Not supported with width levels (refused with one line when the plan is built): nested width
levels (a width level whose parent is not the fine level), ``combine=summed`` and the
corrections (τ, line search, outer momentum), which act on views of the fine tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from mltrain.config import CoarseningConfig
from mltrain.errors import ConfigError
from mltrain.levels import Level
from mltrain.levels.width import WidthLevel, width_factor_of
from mltrain.model.flops import FlopCount
from mltrain.plan.ops import Op, Operation, handles
from mltrain.schemes.corrections import uses_corrections
from mltrain.schemes.vcycle import CYCLE_DECORATORS, Prolong, Restrict
from mltrain.train.state import EXTENSIONS, Extension, RunState


@dataclass(frozen=True)
class WidthRestrict(Operation):
    """Open a coarse phase on width level ``level``: coalesce the fine model into its narrow
    tensors in place (Zou et al. 2024, coalescing)."""

    level: str

    def extra_flops(self, plan) -> FlopCount:
        return plan.level(self.level).map_flops("coalesce")

    @property
    def label(self) -> str:
        return f"Coalesce({self.level})"


@dataclass(frozen=True)
class WidthProlong(Operation):
    """Close the phase on width level ``level``: θ_fine ← (1 − α)·θ_fine +
    α·decoalesce(θ_narrow) (Zou et al. 2024, de-coalescing and interpolation)."""

    level: str
    alpha: float

    def extra_flops(self, plan) -> FlopCount:
        if self.alpha == 0.0:  # interpolate writes nothing and de-coalesces nothing
            return FlopCount(0, 0)
        lv = plan.level(self.level)
        return lv.map_flops("decoalesce") + lv.map_flops("interpolate", self.alpha)

    @property
    def label(self) -> str:
        return f"Decoalesce({self.level}, alpha={self.alpha:g})"


def alpha_of(c: CoarseningConfig) -> float:
    """α of the width interpolation: ``coarsening.vcycle.alpha``, or δ when it is not set."""
    v = c.vcycle
    return float(v.delta if v.alpha is None else v.alpha)


@CYCLE_DECORATORS.register("width")
def decorate_cycle(
    cycle: tuple[Op, ...], c: CoarseningConfig, levels: list[Level], seq_len: int
) -> tuple[Op, ...]:
    """The V-cycle with each width level's ``Restrict``/``Prolong`` replaced by
    :class:`WidthRestrict`/:class:`WidthProlong` (unchanged without width levels).

    Raises:
        ConfigError: a nested width level, ``combine=summed``, or a correction switched on.
    """
    width = {lv.name for lv in levels if width_factor_of(lv) > 1}
    if not width or not cycle:
        return cycle
    nested = [lv.name for lv in levels if lv.name in width and lv.parent != levels[0].name]
    if nested:
        raise ConfigError(
            f"coarsening.hierarchy.name={c.hierarchy.name} with width_factor="
            f"{c.hierarchy.width_factor} nests width level {nested[0]} inside another coarse "
            "level: a width V-cycle needs every coarse level's parent to be the fine level "
            "(e.g. odd, even_odd, width)"
        )
    if c.vcycle.combine != "sequential":
        raise ConfigError(
            f"coarsening.vcycle.combine={c.vcycle.combine} is not allowed with width levels: "
            "use coarsening.vcycle.combine=sequential"
        )
    if uses_corrections(c):
        raise ConfigError(
            "coarsening.corrections (tau, line_search, momentum) are not allowed with width "
            "levels: set them to none / 0 or coarsening.hierarchy.width_factor=1"
        )
    alpha = alpha_of(c)
    out: list[Op] = []
    for op in cycle:
        if isinstance(op, Restrict) and op.level in width:
            op = WidthRestrict(op.level)
        elif isinstance(op, Prolong) and op.level in width:
            op = WidthProlong(op.level, alpha)
        out.append(op)
    return tuple(out)


@handles(WidthRestrict)
def _restrict(run: RunState, op: WidthRestrict) -> None:
    """Start the phase's optimizer (``reset``: a fresh one) and coalesce into the level."""
    run.optims.start_phase(op.level)
    run.levels[op.level].restrict(run.model)


@handles(WidthProlong)
def _prolong(run: RunState, op: WidthProlong) -> None:
    """De-coalesce the narrow tensors and interpolate them into the fine model with α."""
    run.levels[op.level].prolong(run.model, op.alpha)


# --------------------------------------------------------------------------- growth
def grow_width(run: RunState, source: Level, target: Level, apply) -> None:
    """A stage change that leaves or enters a width level: de-coalesce ``source`` into the
    fine model with α = 1 (exact), ``apply(model, source, target)`` (the depth growth operator
    on the fine tensors, for the blocks the source skipped), coalesce into ``target`` when it
    is a width level; the target's optimizer starts fresh (a narrow tensor's moments have
    another shape)."""
    if isinstance(source, WidthLevel):
        source.prolong(run.model, 1.0)
    apply(run.model, source, target)
    if isinstance(target, WidthLevel):
        target.restrict(run.model)
    run.optims.inherit_state(target.steps_with, target.steps_with, {})  # drops every moment


# --------------------------------------------------------------------------- checkpoints
class WidthState(Extension):
    """The narrow tensors of every width level (a run extension, in every checkpoint), loaded
    in place so the optimizers over them keep their parameters."""

    name = "width"  # its key among a checkpoint's extension states (mltrain.export reads it)

    def __init__(self, run: RunState, levels: list[WidthLevel]) -> None:
        self.models = {lv.name: lv.module(run.model) for lv in levels}

    def state_dict(self) -> dict:
        return {
            n: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            for n, m in self.models.items()
        }

    def load_state_dict(self, state: dict) -> None:
        for n, sd in state.items():
            self.models[n].load_state_dict(sd)


@EXTENSIONS.register(WidthState.name)
def _width_state(run: RunState) -> WidthState | None:
    levels = [lv for lv in run.plan.levels if isinstance(lv, WidthLevel)]
    return WidthState(run, levels) if levels else None
