"""How each operation of a run's plan is carried out: a handler per operation type.

The plan (:mod:`mltrain.plan.plan`) says *what* each iteration does as data (:mod:`mltrain.plan.vcycle`'s
Train/Restrict/Prolong/Defer/ApplyDeferred, :class:`mltrain.schemes.stages.Grow`, the corrections of
:mod:`mltrain.schemes.corrections`); :data:`HANDLERS` says *how*, given the trainer. A new operation is
a dataclass and one ``@handles`` function in the module that owns the concept; the trainer's
loop does not change. :data:`EXTENSIONS` lets such a module keep state across steps (saved in
checkpoints) and adjust gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mltrain.levels.base import apply_corrections, correction, prolong, snapshot
from mltrain.plan.vcycle import ApplyDeferred, Defer, Prolong, Restrict, Train

if TYPE_CHECKING:
    from mltrain.train.trainer import Trainer

# operation type -> handler(trainer, op): how the trainer carries out each kind of operation of
# the plan. The V-cycle's are below; other modules register theirs with @handles(OpType)
# (mltrain.schemes.stages' Grow in mltrain.schemes.growth, the corrections in mltrain.schemes.corrections).
HANDLERS: dict[type, Callable[[Trainer, Any], None]] = {}

# factories(trainer) -> an extension or None (when the config does not use it). An extension
# keeps state across steps (saved in checkpoints under its ``name``) and may adjust gradients:
#   name: str; state_dict() -> dict; load_state_dict(dict) -> None;
#   on_gradients(trainer, level) -> None   (optional: after the all-reduce, before clipping)
#   after_step(trainer, level) -> None     (optional: right after the optimizer step)
EXTENSIONS: list[Callable[[Trainer], Any]] = []


def handles(op_type: type):
    """Decorator: register ``fn(trainer, op)`` as the handler of ``op_type`` operations."""

    def register(fn):
        HANDLERS[op_type] = fn
        return fn

    return register


# --------------------------------------------------------------------------- V-cycle operations
@handles(Train)
def _train(t: Trainer, op: Train) -> None:
    """``op.steps`` optimizer steps on ``op.level``, continuing from ``p.inner`` done."""
    while t.p.inner < op.steps:
        t._step(t.levels[op.level])
        t.p.inner += 1
        t._check_signal()


@handles(Restrict)
def _restrict(t: Trainer, op: Restrict) -> None:
    """Open a coarse phase: θ_before of the parameters it trains (injection: no copy else)."""
    t.optims.start_phase(op.level)
    t.phases.append((op.level, snapshot(t.level_params[op.level])))


@handles(Prolong)
@handles(Defer)
def _close(t: Trainer, op: Prolong | Defer) -> None:
    """Close the innermost phase with Eq. 4 (Prolong) or keep its correction aside (Defer)."""
    name, before = t.phases.pop()
    assert name == op.level, f"V-cycle out of order: closing {op.level}, open {name}"
    if isinstance(op, Prolong):
        prolong(t.level_params[name], before, t.delta)
    else:
        t.deferred.append(correction(t.level_params[name], before, t.delta))


@handles(ApplyDeferred)
def _apply_deferred(t: Trainer, op: ApplyDeferred) -> None:
    """Add every deferred correction (``combine=summed``)."""
    apply_corrections(t.all_params, t.deferred)
    t.deferred.clear()
