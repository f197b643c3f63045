"""The plan's operations as data, and the registry of how each is carried out.

A run's :class:`mltrain.plan.plan.Plan` says *what* each iteration does as a tuple of
:class:`Operation` objects (frozen dataclasses: printed at start, compared, part of a
checkpoint's position). :data:`HANDLERS` says *how*: one function per operation type, given
the run (:class:`mltrain.train.state.RunState`). :class:`Train` is the trainer's own operation;
the schemes (:mod:`mltrain.schemes`) add theirs with :func:`handles`. A plan whose operations
lack a handler is refused before the run starts (:func:`check_handled`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mltrain.errors import ConfigError
from mltrain.model.flops import FlopCount


class Operation:
    """Base of the plan's operations.

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

    @property
    def label(self) -> str:
        """How the plan prints it, e.g. ``Restrict(coarse_a)``."""
        level = getattr(self, "level", None)
        return type(self).__name__ + (f"({level})" if level is not None else "")


@dataclass(frozen=True)
class Train(Operation):
    """``steps`` optimizer steps on ``level``, at ``lr_scale`` times the run's learning rate
    (a V-cycle's coarse phases: ``coarsening.vcycle.coarse_lr_scale``)."""

    level: str
    steps: int
    lr_scale: float = 1.0

    @property
    def label(self) -> str:
        return f"Train({self.level}, {self.steps})"


Op = Operation

# operation type -> handler(run, op): how a run carries out each kind of operation.
HANDLERS: dict[type, Callable[[Any, Any], None]] = {}


def handles(op_type: type):
    """Decorator: register ``fn(run, op)`` as the handler of ``op_type`` operations."""

    def register(fn):
        HANDLERS[op_type] = fn
        return fn

    return register


def check_handled(ops: Iterable[Operation]) -> None:
    """Refuse a plan with an operation no module handles, before the run starts.

    Raises:
        ConfigError: naming the operation type (its scheme's module was not imported).
    """
    for op in ops:
        if type(op) not in HANDLERS:
            raise ConfigError(
                f"the plan has a {type(op).__name__} operation but no handler is registered for it "
                f"(its scheme's module {type(op).__module__} is not imported: import mltrain.schemes)"
            )


def format_ops(ops: tuple[Operation, ...]) -> str:
    """Operations on one line, e.g. ``Train(fine, 1) -> Restrict(coarse_a) -> ...``."""
    return " -> ".join(op.label for op in ops)
