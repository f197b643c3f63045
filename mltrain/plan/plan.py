"""The plan of a run: its levels, the operations of every iteration, their FLOPs, its length.

:func:`build_plan` turns a validated config into a :class:`Plan` in one place; the trainer
walks it, the job sizes the run with it (``train.target_flops``), ``scripts/flops_budget.py``
prints it, and ``mltrain-compare`` asks it whether a finished run was multilevel
(:mod:`mltrain.readback`). Each ``coarsening.scheme`` has its builder in its
:class:`mltrain.config.scheme.Scheme` (``single_level``'s, :func:`single_level_plan`, is here;
:mod:`mltrain.schemes` registers every scheme): a new scheme registers its :class:`Scheme` and
the handlers of its operations, not a branch in those call sites.

A run is a sequence of *iterations* ``k = 0 .. iterations-1`` (the LR schedule's clock). In a
single-level or V-cycle run an iteration is one fine step, plus a V-cycle (coarse phases) on
the iterations the stage lists; ``fine steps`` and iterations then coincide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from mltrain.config import MLTrainConfig
from mltrain.config.scheme import SCHEMES
from mltrain.errors import ConfigError
from mltrain.levels import Level, build_hierarchy
from mltrain.levels.width import with_shape
from mltrain.model.flops import FlopCount, level_step_flops
from mltrain.plan.ops import Op, Train, format_ops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A span of iterations whose plain iterations take one step of ``level``.

    Attributes:
        level: the level a plain iteration trains (``fine`` in a V-cycle run).
        iterations: number of iterations in the stage.
        cycle: the operations of an iteration that carries a V-cycle (its own step of
            ``level`` included, :func:`mltrain.schemes.vcycle.build_cycle`).
        cycle_at: stage-local iteration indices (0-based) that carry the cycle.
        enter: operations run once before the stage's first iteration (e.g. a growth from the
            previous stage's level, :class:`mltrain.schemes.stages.Grow`).
    """

    level: str
    iterations: int
    cycle: tuple[Op, ...] = ()
    cycle_at: range = field(default_factory=lambda: range(0))
    enter: tuple[Op, ...] = ()

    @property
    def plain(self) -> tuple[Op, ...]:
        return (Train(self.level, 1),)

    def ops(self, j: int) -> tuple[Op, ...]:
        """Operations of stage-local iteration ``j``."""
        body = self.cycle if self.cycle and j in self.cycle_at else self.plain
        return self.enter + body if j == 0 else body

    def cycles_in(self, j0: int, j1: int) -> int:
        """How many of the iterations ``j0..j1-1`` carry the cycle."""
        if not self.cycle:
            return 0
        r = self.cycle_at  # a range with step >= 1
        first = r.start + max(0, -(-(j0 - r.start) // r.step)) * r.step  # first member >= j0
        return len(range(first, min(j1, r.stop), r.step))


def _train_steps(ops: Sequence[Op]) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in ops:
        if isinstance(op, Train):
            out[op.level] = out.get(op.level, 0) + op.steps
    return out


@dataclass
class Plan:
    """Everything a run will do, before it starts.

    Attributes:
        levels: the hierarchy, fine level first.
        stages: the iterations in order.
        step_flops: training FLOPs of one optimizer step of each level (:class:`FlopCount`,
            counts), or None when built without a vocabulary size.
        tokens_per_step: positions of one optimizer step (global batch × sequence length): the
            tokens of a token-level step (a patch level's step covers K times more,
            :meth:`tokens_of`).
    """

    levels: list[Level]
    stages: tuple[Stage, ...]
    step_flops: dict[str, FlopCount] | None
    tokens_per_step: int

    @property
    def fine(self) -> Level:
        return self.levels[0]

    def level(self, name: str) -> Level:
        return next(lv for lv in self.levels if lv.name == name)

    def tokens_of(self, level: str) -> int:
        """Tokens one optimizer step of ``level`` consumes (positions × tokens per position)."""
        return self.tokens_per_step * self.level(level).patch

    def tokens_per_level(self, k0: int = 0, k1: int | None = None) -> dict[str, int]:
        """Tokens each level trains on in iterations ``k0..k1-1`` (default: the run):
        optimizer steps × :meth:`tokens_of`."""
        return {n: s * self.tokens_of(n) for n, s in self.steps_per_level(k0, k1).items()}

    @property
    def iterations(self) -> int:
        return sum(s.iterations for s in self.stages)

    def operations(self) -> list[Op]:
        """Every distinct operation the plan holds (for :func:`mltrain.plan.ops.check_handled`)."""
        return [op for s in self.stages for op in (*s.enter, *s.cycle, *s.plain)]

    def stage_at(self, k: int) -> Stage:
        """The stage of iteration ``k`` (the last stage for ``k`` past the end)."""
        return self.locate(min(k, self.iterations - 1))[0]

    def locate(self, k: int) -> tuple[Stage, int]:
        """(stage, stage-local index) of iteration ``k``."""
        for s in self.stages:
            if k < s.iterations:
                return s, k
            k -= s.iterations
        raise IndexError(f"iteration {k} is past the end of the plan")

    def ops(self, k: int) -> tuple[Op, ...]:
        """Operations of iteration ``k`` (0-based)."""
        stage, j = self.locate(k)
        return stage.ops(j)

    def steps_per_level(self, k0: int = 0, k1: int | None = None) -> dict[str, int]:
        """Optimizer steps each level takes in iterations ``k0..k1-1`` (default: the run)."""
        k1 = self.iterations if k1 is None else k1
        out = {lv.name: 0 for lv in self.levels}
        start = 0
        for s in self.stages:
            j0, j1 = max(k0 - start, 0), min(k1 - start, s.iterations)
            if j1 > j0:
                n_cycle = s.cycles_in(j0, j1)
                for name, n in _train_steps(s.cycle).items():
                    out[name] += n * n_cycle
                out[s.level] += (j1 - j0) - n_cycle
            start += s.iterations
        return out

    @property
    def fine_steps(self) -> int:
        """Fine-level optimizer steps of the whole run."""
        return self.steps_per_level()[self.fine.name]

    @property
    def multilevel(self) -> bool:
        """Whether any iteration trains a level other than the fine one."""
        return any(n for name, n in self.steps_per_level().items() if name != self.fine.name)

    def flops(self, k0: int = 0, k1: int | None = None) -> FlopCount:
        """Training FLOPs (with head / non-embedding) of iterations ``k0..k1-1``: optimizer
        steps plus what other operations spend (:meth:`Operation.extra_flops`).

        Raises:
            ValueError: the plan was built without a vocabulary size.
        """
        total = FlopCount(0, 0)
        for f in self.flops_per_level(k0, k1).values():
            total = total + f
        return total

    def flops_per_level(self, k0: int = 0, k1: int | None = None) -> dict[str, FlopCount]:
        """:meth:`flops` booked to each level (``perf/flops_level/<name>``)."""
        if self.step_flops is None:
            raise ValueError("Plan.flops needs step_flops: build the plan with vocab_size")
        k1 = self.iterations if k1 is None else k1
        out = {name: self.step_flops[name] * n for name, n in self.steps_per_level(k0, k1).items()}
        start = 0
        for s in self.stages:
            j0, j1 = max(k0 - start, 0), min(k1 - start, s.iterations)
            if j1 > j0:
                extra = [(op, 1) for op in s.enter] if j0 == 0 else []
                extra += [(op, s.cycles_in(j0, j1)) for op in s.cycle]
                for op, n in extra:
                    if n and not isinstance(op, Train):
                        name = op.booked_to(self)
                        out[name] = out[name] + op.extra_flops(self) * n
            start += s.iterations
        return out

    def describe(self) -> str:
        """The hierarchy, the V-cycle and the FLOPs in a few lines (printed at start)."""
        lines = [
            "levels: "
            + ", ".join(
                f"{lv.name}(blocks={list(lv.blocks)}, h={lv.h:g}"
                + (f", patch={lv.patch}" if lv.patch > 1 else "")
                + (f", width=d/{lv.width_factor})" if getattr(lv, "width_factor", 1) > 1 else ")")
                for lv in self.levels
            )
        ]
        start = 0
        for s in self.stages:
            if len(self.stages) > 1:
                enter = f" after {format_ops(s.enter)}" if s.enter else ""
                lines.append(
                    f"stage {s.level}: iterations {start}..{start + s.iterations - 1}{enter}"
                )
            ca = s.cycle_at
            r = range(start + ca.start, start + min(ca.stop, s.iterations), ca.step)
            if self.multilevel and s.cycle and len(r) and s.cycles_in(0, s.iterations):
                lines.append(f"V-cycle for fine iterations {_iterations(r)}: {format_ops(s.cycle)}")
            start += s.iterations
        if self.step_flops is not None:
            per = {n: f.total for n, f in self.step_flops.items()}
            lines.append(
                "FLOPs per optimizer step (with head): "
                + ", ".join(f"{n}={v:.3e}" for n, v in per.items())
            )
            total = self.flops()
            lines.append(
                f"planned training FLOPs: {total.total:.4e} with head, {total.nonembed:.4e} "
                f"non-embedding; optimizer steps {self.steps_per_level()}"
            )
        return "\n".join(lines)

    def summary(self) -> dict:
        """What a run directory's ``run.json`` records of the plan."""
        out = {
            "multilevel": self.multilevel,
            "iterations": self.iterations,
            "fine_steps": self.fine_steps,
            "steps_per_level": self.steps_per_level(),
            "levels": {
                lv.name: {
                    "blocks": list(lv.blocks),
                    "h": lv.h,
                    "patch": lv.patch,
                    "width_factor": getattr(lv, "width_factor", 1),
                }
                for lv in self.levels
            },
            "planned_tokens": sum(self.tokens_per_level().values()),
        }
        if self.step_flops is not None:
            total = self.flops()
            out["planned_flops"], out["planned_flops_nonembed"] = total.total, total.nonembed
        return out


def _iterations(r: range) -> str:
    """The iterations of ``r`` as printed: ``0..4`` (consecutive), every member up to 12 of
    them, else the first three, ``...``, the last, and how many."""
    if r.step == 1:
        return f"{r.start}..{r[-1]}"
    if len(r) <= 12:
        return ", ".join(map(str, r))
    return f"{r[0]}, {r[1]}, {r[2]}, ..., {r[-1]} ({len(r)} iterations, every {r.step})"


def steps_for_budget(make, budget: float) -> int:
    """The iteration count whose plan's training FLOPs (with head) come closest to ``budget``:
    |total − budget| <= half an iteration's cost (``make(n)`` builds the plan of n)."""

    def total(n: int) -> int:
        return make(n).flops().total

    lo, hi = 1, 1
    while total(hi) < budget:
        hi *= 2
    while lo < hi:  # smallest n with total(n) >= budget
        mid = (lo + hi) // 2
        if total(mid) >= budget:
            hi = mid
        else:
            lo = mid + 1
    if lo > 1 and budget - total(lo - 1) < total(lo) - budget:
        lo -= 1
    return lo


def budget_of(cfg: MLTrainConfig) -> float | None:
    """The run's training FLOPs budget (with head): ``train.target_flops`` times
    ``train.flops_scale``, or None when the run is sized by ``train.steps``."""
    t = cfg.train
    return None if t.target_flops is None else float(t.target_flops) * float(t.flops_scale)


def build_plan(cfg: MLTrainConfig, vocab_size: int | None, world: int = 1) -> Plan:
    """The plan of a run of ``cfg`` (typed, validated) on ``world`` processes, by the plan
    builder of the scheme ``coarsening.scheme`` names (:data:`mltrain.config.scheme.SCHEMES`).

    ``vocab_size`` (the model's embedding rows) is needed for FLOPs and for sizing a run by
    ``train.target_flops``; without it the plan has ``train.steps`` iterations and no FLOPs.

    Raises:
        ConfigError: a scheme with no registered builder, a hierarchy the model cannot
            support, a budget below one fine step, or one that leaves no step after warm-up.
    """
    m, t = cfg.model, cfg.train
    levels = with_shape(build_hierarchy(cfg.coarsening, m.n_layer), m, vocab_size)
    tokens = m.seq_len * cfg.data.batch_size * t.grad_accum * world
    step_flops = (
        level_step_flops(levels, m.n_embd, m.seq_len, vocab_size, tokens) if vocab_size else None
    )
    return SCHEMES.get(cfg.coarsening.scheme).plan(cfg, levels, step_flops, tokens)


def sized_plan(cfg: MLTrainConfig, make, step_flops) -> Plan:
    """``make(n)`` (the plan of n iterations) with n from ``train.steps`` or, when the run is
    sized by ``train.target_flops``, the n whose training FLOPs come closest to the budget;
    capped at ``train.max_steps``.

    Raises:
        ConfigError: a budget below one iteration, or one that leaves no step after warm-up.
    """
    t = cfg.train
    if t.target_flops is None or step_flops is None:
        return make(capped(int(t.steps), t.max_steps))
    one = step_flops[make(1).fine.name].total
    budget = budget_of(cfg)
    if budget < one:
        raise ConfigError(
            f"train.target_flops={budget:.4g} is less than one fine step "
            f"({one:.4g} FLOPs with head); give a larger budget"
        )
    n = steps_for_budget(make, budget)
    if cfg.schedule.warmup_steps >= n:
        raise ConfigError(
            f"train.target_flops={budget:.3e} gives {n} fine steps, not more than "
            f"schedule.warmup_steps={cfg.schedule.warmup_steps}; raise the budget or lower the warmup"
        )
    return make(capped(n, t.max_steps))


def single_level_plan(cfg: MLTrainConfig, levels: list[Level], step_flops, tokens: int) -> Plan:
    """The fine level alone: one stage of fine steps."""

    def make(n: int) -> Plan:
        return Plan(levels, (Stage(levels[0].name, n),), step_flops, tokens)

    return sized_plan(cfg, make, step_flops)


def capped(n: int, max_steps: int | None) -> int:
    """``n`` iterations, at most ``train.max_steps`` (mode=smoke caps every run, also one sized
    by ``train.target_flops``)."""
    if max_steps is not None and n > max_steps:
        log.warning(
            "train.max_steps=%d caps the run at %d of its %d fine steps", max_steps, max_steps, n
        )
        return max_steps
    return n
