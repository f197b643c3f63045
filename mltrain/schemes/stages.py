"""Coarse-to-fine stages (nested iteration, the start of a full multigrid cycle): a run trains
one level after another, each for its share of the budget, growing the model at each change.

``coarsening.stages.levels=[coarse_b,fine] coarsening.stages.shares=[0.6,0.4]`` trains the coarse path
for 60 % of the run's training FLOPs, then grows to the fine path (:class:`Grow`, operator
``coarsening.stages.grow_init``, :mod:`mltrain.schemes.growth`) and trains it for the remaining 40 %.
Every stage is plain training of its level: a staged run runs no V-cycle and reads no
``coarsening.vcycle`` setting (the optimizer state across levels and whether coarse levels
train the shared tensors are the hierarchy's: ``coarsening.hierarchy.optimizer_state`` and
``train_shared``), so ``coarsening.vcycle.window`` is ignored (the command line says so). The budget is
``train.target_flops`` × ``train.flops_scale``, or ``train.steps`` fine-step equivalents
(``train.steps`` × one fine step's FLOPs), so a coarse stage takes more iterations than its
share of ``train.steps``. Each stage boundary is placed so the cumulative FLOPs are closest to
the cumulative shares: the stages share the budget to within half a step.

Each stage's blocks must include the previous stage's (a growth keeps the trained blocks), e.g.
recursive ``coarsening.stages.levels=[coarse_2,coarse_1,fine]`` (3 -> 6 -> 12 blocks), with a growth at
each change; or random sub-path stages (``coarsening=raptr``, :mod:`mltrain.levels.raptr`), which
train every block and need no growth. The LR schedule runs over the iterations of all stages.

Stages are data (:class:`mltrain.plan.plan.Stage` with the growth as its ``enter`` operation), so
they are printed at start, resumable at any step and part of every checkpoint's position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mltrain.config import MLTrainConfig
from mltrain.config.overrides import override, shell_command
from mltrain.config.scheme import Scheme, fmt_value, register_scheme
from mltrain.errors import ConfigError
from mltrain.levels import Level
from mltrain.levels.width import WidthLevel
from mltrain.model.flops import FlopCount
from mltrain.plan.ops import Operation
from mltrain.plan.plan import Plan, Stage, budget_of, capped


@dataclass(frozen=True)
class Grow(Operation):
    """Change the model from stage level ``source`` to ``level`` (the next stage's) with the
    growth operator ``init`` (:data:`mltrain.schemes.growth.GROWTH`; handler :func:`mltrain.schemes.growth.grow`).
    No training FLOPs but the width maps' (:meth:`extra_flops`): it changes tensors in place,
    and the losses measured before and after it are evaluation (``perf/flops_eval``)."""

    source: str
    level: str
    init: str

    def extra_flops(self, plan) -> FlopCount:
        """0 for depth levels; leaving a width level de-coalesces it, entering one coalesces
        (:meth:`mltrain.levels.width.WidthLevel.map_flops`)."""
        out = FlopCount(0, 0)
        src, dst = plan.level(self.source), plan.level(self.level)
        if isinstance(src, WidthLevel):
            out = out + src.map_flops("decoalesce")
        if isinstance(dst, WidthLevel):
            out = out + dst.map_flops("coalesce")
        return out

    @property
    def label(self) -> str:
        """How the plan prints it, e.g. ``Grow(coarse_b -> fine, ode)``."""
        return f"Grow({self.source} -> {self.level}, {self.init})"


def check_stages(cfg: MLTrainConfig, levels: list[Level]) -> tuple[list[str], list[float]]:
    """The stage levels and shares, checked.

    Raises:
        ConfigError: unknown level names, a length mismatch, shares that are not positive or
            do not add up to 1, or a last stage that is not the fine level.
    """
    c = cfg.coarsening
    names = [lv.name for lv in levels]
    stages, shares = list(c.stages.levels), [float(x) for x in c.stages.shares]
    bad = [s for s in stages if s not in names]
    if bad:
        raise ConfigError(
            f"coarsening.stages.levels names level {bad[0]!r}, but coarsening.hierarchy.name="
            f"{c.hierarchy.name} has levels {', '.join(names)}: the stages name the levels "
            "that the hierarchy's settings make, so coarsening.stages.levels and .shares change "
            "with them" + _stages_hint(levels, shares)
        )
    if len(shares) != len(stages):
        raise ConfigError(
            f"coarsening.stages.shares has {len(shares)} entries for {len(stages)} stages: give one "
            "share of the budget per stage, e.g. coarsening.stages.shares=[0.6,0.4]"
        )
    if any(not math.isfinite(x) or x <= 0 for x in shares) or abs(sum(shares) - 1) > 1e-6:
        raise ConfigError(
            f"coarsening.stages.shares={shares} is not allowed: give positive shares that add up to 1"
        )
    if stages[-1] != levels[0].name:
        raise ConfigError(
            f"coarsening.stages.levels={stages} must end with the fine level ({levels[0].name}): the run's "
            "model is the fine one"
        )
    by_name = {lv.name: lv for lv in levels}
    for a, b in zip(stages, stages[1:]):
        missing = sorted(set(by_name[a].blocks) - set(by_name[b].blocks))
        if missing:
            raise ConfigError(
                f"coarsening.stages.levels: {b} follows {a} but lacks its blocks {missing}: a growth keeps "
                "the trained blocks, so each stage's blocks must include the previous stage's"
            )
    return stages, shares


def _stages_hint(levels: list[Level], shares: list[float]) -> str:
    """``, e.g. '<levels>' '<shares>'``: stages over the hierarchy's ``levels`` (fine first)
    that :func:`check_stages` accepts, coarsest first, each holding the previous one's blocks;
    the given ``shares`` when they fit, else equal shares that add up to 1."""
    chain: list[Level] = []
    for lv in sorted(levels[1:], key=lambda lv: (lv.n_blocks, len(lv.blocks), lv.name)):
        if not chain or set(chain[-1].blocks) <= set(lv.blocks):
            chain.append(lv)
    names = [lv.name for lv in chain] + [levels[0].name]
    if len(shares) != len(names):
        each = round(1 / len(names), 2)
        shares = [each] * (len(names) - 1) + [round(1 - each * (len(names) - 1), 2)]
    return ", e.g. " + shell_command(
        [override("coarsening.stages.levels", names), override("coarsening.stages.shares", shares)]
    )


def grows(source: Level, target: Level) -> bool:
    """Whether changing from stage level ``source`` to ``target`` needs a :class:`Grow`: the
    target evaluates blocks the source did not train, or another step, or trains with another
    optimizer (a patch level over all blocks: its optimizer state must be handed over, as in
    any growth). A random sub-path level (:mod:`mltrain.levels.raptr`) trains every block of the fine
    path with the fine optimizer, so the stages after it need no growth."""

    def optimizer(lv: Level) -> str:
        return lv.optimizer or lv.name

    return (
        set(source.blocks) != set(target.blocks)
        or source.h != target.h
        or optimizer(source) != optimizer(target)
    )


def staged_plan(cfg: MLTrainConfig, levels: list[Level], step_flops, tokens: int) -> Plan:
    """The plan of a staged run (see the module docstring): each stage as many iterations as
    its share of the budget buys (``train.target_flops`` × ``flops_scale``, or ``train.steps``
    fine steps' FLOPs), the cumulative FLOPs closest to the cumulative shares.

    Raises:
        ConfigError: see :func:`check_stages`; a run whose stages leave no step after warm-up.
    """
    stages, shares = check_stages(cfg, levels)
    t = cfg.train
    if step_flops is None:  # no vocabulary (a finished run's config): shares of train.steps
        counts = [max(1, round(s * t.steps)) for s in shares]
        return Plan(levels, _make(cfg, levels, stages, counts), None, tokens)
    budget = budget_of(cfg) or float(t.steps) * step_flops[levels[0].name].total
    counts: list[int] = []
    spent = 0.0
    for i, name in enumerate(stages):
        target = budget * sum(shares[: i + 1]) - spent  # the cumulative share, less spent
        per = step_flops[name].total
        n = max(1, round(target / per))
        counts.append(n)
        spent += n * per
    counts = capped_stages(counts, t.max_steps)
    plan = Plan(levels, _make(cfg, levels, stages, counts), step_flops, tokens)
    if cfg.schedule.warmup_steps >= plan.iterations:
        raise ConfigError(
            f"the stages take {plan.iterations} iterations, not more than "
            f"schedule.warmup_steps={cfg.schedule.warmup_steps}; raise the budget or lower the warmup"
        )
    return plan


def capped_stages(counts: list[int], max_steps: int | None) -> list[int]:
    """Stage lengths whose sum is at most ``train.max_steps`` (mode=smoke caps every run): the
    stages shrink in proportion, each keeps at least one iteration (so every growth happens)."""
    total = sum(counts)
    if max_steps is None or total <= max_steps:
        return counts
    capped(total, max_steps)  # the warning
    out = [max(1, c * max_steps // total) for c in counts]
    while sum(out) > max(max_steps, len(out)):
        i = out.index(max(out))
        out[i] -= 1
    return out


def _make(cfg, levels, stages, counts) -> tuple[Stage, ...]:
    by_name = {lv.name: lv for lv in levels}
    out = []
    for i, (name, n) in enumerate(zip(stages, counts)):
        grow = i and grows(by_name[stages[i - 1]], by_name[name])
        enter = (Grow(stages[i - 1], name, cfg.coarsening.stages.grow_init),) if grow else ()
        out.append(Stage(name, n, enter=enter))
    return tuple(out)


# --------------------------------------------------------------------------- the scheme
def check(c) -> None:
    """A staged run names its stages.

    Raises:
        ConfigError: ``coarsening.stages.levels`` is empty.
    """
    if len(c.stages.levels) == 0:
        raise ConfigError(
            "coarsening.scheme=stages needs coarsening.stages.levels=[<coarse level>,...,fine] "
            "and coarsening.stages.shares"
        )


def check_unused(c) -> None:
    """Stages listed for a run of another scheme would be ignored.

    Raises:
        ConfigError: ``coarsening.stages.levels`` is set.
    """
    if len(c.stages.levels) > 0:
        raise ConfigError(
            f"coarsening.stages.levels={list(c.stages.levels)} is set but coarsening.scheme="
            f"{c.scheme}: set coarsening.scheme=stages to train the levels in stages"
        )


def stage_sizes(stages, flat: dict, levels: dict | None) -> str | None:
    """The stages' models as a reader counts them, from ``run.json``'s ``levels``:
    ``3 → 6 → 12 blocks``, or with widths when they differ (``6 blocks d=64 → 6 blocks
    d=128``); None when a stage's level is not recorded."""
    if not isinstance(levels, dict) or not all(isinstance(levels.get(s), dict) for s in stages):
        return None
    blocks = [len(levels[s].get("blocks") or ()) for s in stages]
    d = flat.get("model.n_embd")
    widths = [int(d // (levels[s].get("width_factor") or 1)) if d else None for s in stages]
    if len(set(widths)) == 1:
        return " → ".join(map(str, blocks)) + " blocks"
    return " → ".join(f"{n} block{'' if n == 1 else 's'} d={w}" for n, w in zip(blocks, widths))


def label(flat: dict, levels: dict | None = None) -> str:
    """``coarse-to-fine coarse_b 0.7 → fine 0.3, grow ode`` (with ``run.json``'s ``levels``:
    ``coarse-to-fine 6 → 12 blocks at 0.7/0.3 of the FLOPs, grow ode``), or ``random sub-paths
    raptr_6 0.25 → ...`` for random sub-path stages."""
    stages = flat.get("coarsening.stages.levels") or ()
    shares = flat.get("coarsening.stages.shares") or ()
    parts = [f"{s} {fmt_value(x)}" for s, x in zip(stages, shares)]
    if stages and str(stages[0]).startswith(
        "raptr_"
    ):  # no growth: every path trains the fine tensors
        return "random sub-paths " + " → ".join(parts)
    sizes = stage_sizes(stages, flat, levels)
    shares = "/".join(map(fmt_value, shares))
    what = f"{sizes} at {shares} of the FLOPs" if sizes else " → ".join(parts)
    return f"coarse-to-fine {what}, grow {flat.get('coarsening.stages.grow_init')}"


STAGES = register_scheme(
    Scheme(
        name="stages",
        reads=("hierarchy", "stages", "patch", "raptr"),
        plan=staged_plan,
        staged=True,
        names_itself=True,
        check=check,
        check_unused=check_unused,
        label=label,
    )
)
