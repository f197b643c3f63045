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

from dataclasses import dataclass

from mltrain.levels.base import Level
from mltrain.model.flops import FlopCount


class Operation:
    """Base of the plan's operations (the V-cycle's here; stages and corrections add more).

    :meth:`extra_flops` is what an operation spends besides optimizer steps (the gradient
    passes of a τ-correction, the forwards of a line search...): the plan counts it in its
    total and the trainer adds it to the counters (``perf/flops``, and
    ``perf/flops_level/<level>`` of the level :meth:`booked_to` names) when the operation runs,
    so planned and spent FLOPs are the same number.
    """

    def extra_flops(self, plan) -> FlopCount:
        """Training FLOPs (with head / non-embedding) spent besides optimizer steps."""
        return FlopCount(0, 0)

    def booked_to(self, plan) -> str:
        """The level whose ``perf/flops_level`` counter receives :meth:`extra_flops`."""
        return getattr(self, "level", plan.fine.name)


@dataclass(frozen=True)
class Train(Operation):
    """``steps`` optimizer steps on ``level``."""

    level: str
    steps: int


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


Op = Operation


def build_cycle(
    levels: list[Level], coarse_steps: int, combine: str = "sequential", fine_step: str = "before"
) -> tuple[Op, ...]:
    """The operations of one fine iteration inside the window.

    Args:
        levels: the hierarchy, fine level first (:func:`mltrain.levels.base.build_hierarchy`).
        coarse_steps: m, optimizer steps per coarse phase.
        combine: ``sequential`` (each phase starts from the previous one's transferred
            result) or ``summed`` (sibling phases start from the same state; their
            δ-weighted changes are added).
        fine_step: ``before`` or ``after`` the coarse phases.
    """
    children: dict[str | None, list[Level]] = {}
    for lv in levels:
        children.setdefault(lv.parent, []).append(lv)
    fine = levels[0]

    def descend(lv: Level, close: type) -> list[Op]:
        ops: list[Op] = [Restrict(lv.name), Train(lv.name, coarse_steps)]
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


def format_cycle(cycle: tuple[Op, ...]) -> str:
    """One line per operation, e.g. ``Train(coarse_a, 100)``."""
    parts = []
    for op in cycle:
        if isinstance(op, Train):
            parts.append(f"Train({op.level}, {op.steps})")
        elif isinstance(op, ApplyDeferred):
            parts.append("ApplyDeferred")
        elif hasattr(op, "label"):  # an operation that names itself (e.g. stages.Grow)
            parts.append(op.label)
        else:
            parts.append(f"{type(op).__name__}({op.level})")
    return " -> ".join(parts)
