"""Growth operators: how the model changes at a stage change (a coarse path -> a finer one).

``coarsening.stages.grow_init`` names one of :data:`GROWTH`. A :class:`Growth` changes the shared
tensors in place (the fine model's blocks; copies, never views, where blocks are duplicated)
and says which trained block each block of the new path *continues*: that block keeps the
trained block's optimizer state, every other block of the new path starts fresh.

Notation. The source path evaluates blocks ``s_0 .. s_{K-1}`` with step ``H``, the target
path ``t_0 .. t_{M-1}`` with step ``h`` (e.g. coarse_b = 0, 2, …, 10 with H = 2 grown to the
fine path 0 .. 11 with h = 1; recursive 3 -> 6 -> 12: blocks 3, 7, 11 with H = 4 grown to
1, 3, …, 11 with h = 2, then to 0 .. 11 with h = 1). A block is the residual function
``F(x) = SA(LN1(x)) + FF(LN2(x + SA(LN1(x))))`` and the step ``x <- x + h·F(x)`` lives on the
path (:class:`mltrain.model.transformer.BlockPath`), so every trained block takes the target's h.

Operators (DESIGN.md section 9):

- ``ode`` (Chang et al. 2018): each new block is a copy of the trained block whose coarse step
  covers its place on the target's grid (:func:`stand_ins`);
- ``zero``: new blocks start as the identity (output projections zeroed); the trained blocks
  keep the coarse step H as far as the block form allows (:func:`zero`);
- ``stack`` (Gong et al. 2019): the trained path repeated as a whole, the copy on top;
- ``keep``: the control, new blocks keep what they hold (their random initialisation).

The :class:`mltrain.schemes.stages.Grow` handler (:func:`grow`) applies the operator, hands the
optimizer state over (:meth:`mltrain.train.optim.LevelOptimizers.inherit_state`) and logs the validation
loss of the source path before and of the target path after (``grow/loss_before``,
``grow/loss_after``, ``grow/loss_jump``, nats/token).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mltrain.config import registries
from mltrain.levels.base import Level
from mltrain.levels.width import width_factor_of
from mltrain.model.transformer import ODETransformer
from mltrain.plan.ops import handles
from mltrain.registry import Registry
from mltrain.schemes.stages import Grow
from mltrain.schemes.width import grow_width
from mltrain.train.state import RunState


@dataclass(frozen=True)
class Growth:
    """One growth operator.

    Attributes:
        apply: ``apply(model, source, target)`` changes the model's block tensors in place.
        origins: ``origins(source, target)`` -> {target block: source block}: the trained block
            whose tensors *and optimizer state* each block of the target path continues (a
            pure function of the two levels, so the run knows the new blocks before growing).
            Target blocks not in it are new: their optimizer state starts fresh.
    """

    apply: Callable[[ODETransformer, Level, Level], None]
    origins: Callable[[Level, Level], dict[int, int]]


# ``coarsening.stages.grow_init`` -> Growth
GROWTH: Registry[Growth] = registries.GROWTH  # declared where the schema names it


def covering(source: Level, target: Level) -> list[int]:
    """For each evaluation i of the target path, the source block whose step covers it.

    The target's i-th step starts at time i·h; the source's j-th step covers [j·H, (j+1)·H),
    so it is j = ⌊i·h/H⌋ (capped at the last source step when the paths' lengths K·H and
    M·h differ). E.g. coarse_b (0, 2, …, 10; H = 2) -> fine: 0, 0, 2, 2, …, 10, 10; coarse_a
    (1, 3, …, 11) -> fine: 1, 1, 3, 3, …; blocks 3, 7, 11 (H = 4) -> 1, 3, …, 11 (h = 2):
    3, 3, 7, 7, 11, 11.
    """
    s, K = source.blocks, len(source.blocks)
    return [
        s[min(K - 1, math.floor(i * target.h / source.h + 1e-9))] for i in range(target.n_blocks)
    ]


def stand_ins(source: Level, target: Level) -> dict[int, int]:
    """{new block: trained block that stands for it} for every block of the target path that
    the source path skipped: the source block whose coarse step covers the new block's place
    on the target's grid (:func:`covering`). E.g. coarse_b -> fine: 2i+1 <- 2i; coarse_a ->
    fine: 2i <- 2i+1; 3, 7, 11 -> 1, 3, …, 11: 1 <- 3, 5 <- 7, 9 <- 11."""
    trained = set(source.blocks)
    return {
        t: s
        for t, s in zip(target.blocks, covering(source, target), strict=True)
        if t not in trained
    }


def same_block_origins(source: Level, target: Level) -> dict[int, int]:
    """Origins of an operator that leaves the trained blocks where they are: each trained block
    on the target path continues itself."""
    return {b: b for b in source.blocks if b in set(target.blocks)}


def _copy_block(model: ODETransformer, dst: int, src: dict[str, torch.Tensor]) -> None:
    for name, p in model.blocks[dst].named_parameters():
        p.copy_(src[name])


def _snapshot(model: ODETransformer, i: int) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.blocks[i].named_parameters()}


def _output_projections(model: ODETransformer, i: int) -> list[torch.Tensor]:
    """Weights and biases of block i's attention and MLP output projections (``c_proj``):
    what each sublayer adds to the residual stream is linear in them."""
    b = model.blocks[i]
    out = [b.attn.c_proj.weight, b.mlp.c_proj.weight]
    return out + [t for t in (b.attn.c_proj.bias, b.mlp.c_proj.bias) if t is not None]


def keep(model: ODETransformer, source: Level, target: Level) -> None:
    """The control: blocks the source path skipped keep whatever they hold (e.g. their random
    initialisation); the trained blocks change step size from the source's H to the target's
    h (the step is the path's)."""


@torch.no_grad()
def ode(model: ODETransformer, source: Level, target: Level) -> None:
    """Chang et al. 2018 (arXiv 1710.10348), relative to the target's grid: every block of the
    target path that the source skipped becomes a copy of the trained block whose coarse step
    covers its place (:func:`stand_ins`); every block takes the target's step h.

    First-order argument (H = 2h, a trained block s followed by its copy): the coarse step is
    x + 2h·F(x); the two fine steps give x1 = x + h·F(x) and
    x2 = x1 + h·F(x1) = x + 2h·F(x) + h·[F(x + h·F(x)) − F(x)] = x + 2h·F(x) + h²·F'(x)F(x) + O(h³),
    so the grown path agrees with the coarse one up to the O(h²) term per coarse step (the
    local error of forward Euler; for F(x) = Ax it is exactly h²A²x: (I + hA)² = I + 2hA + h²A²).
    With H = c·h each trained block and its c − 1 copies are c consecutive steps (the copies
    may come first, e.g. coarse_a -> fine: 0 <- 1), and the argument is the same.

    Measured (paper_small, AdamW, 100 coarse steps): the jump is not small (+0.14 to +0.19
    nats): the first block's output is 25 times the embedding's norm, so ‖h·F‖ ≪ ‖x‖, which
    the argument needs, fails there, and the copy of block 0 sees a very different input.
    """
    for dst, src in stand_ins(source, target).items():
        _copy_block(model, dst, dict(model.blocks[src].named_parameters()))


@torch.no_grad()
def zero(model: ODETransformer, source: Level, target: Level) -> None:
    """New blocks start as the identity, the trained blocks keep their coarse step H.

    Every block of the target path that the source skipped gets zeroed output projections
    (attention and MLP ``c_proj``, weights and biases), so F = 0 and x + h·0 = x exactly. A
    trained block moves from step H to the target's h; to keep its step H·F it takes the
    factor r = H/h in its output projections (weights and biases of ``attn.c_proj`` and
    ``mlp.c_proj`` times r), which is as close as the block form allows: with a = SA(LN1(x))
    and m(·) = FF(LN2(·)), the coarse step is x + H·a + H·m(x + a), the grown one
    x + h·r·a + h·r·m(x + r·a) = x + H·a + H·m(x + r·a). The attention sublayer's
    contribution is exactly preserved; the MLP reads x + r·a instead of x + a (inside the
    block, outside the Euler step), so the step is exact wherever a(x) = 0 (e.g. a block
    whose attention output projection is zero) and otherwise differs by
    H·[m(x + r·a) − m(x + a)] = O(H·(r − 1)·‖∂m‖·‖a‖). No change of the parameters alone can
    remove that term: LN2 is invariant to scaling its input, not to adding a.

    Measured (paper_small, AdamW, 100 coarse steps): jump +0.03 to +0.05 nats; without the fold
    (trained blocks simply at h, i.e. ``keep`` with exact identity blocks) +0.001: a trained
    pre-LN model whose residual stream is dominated by block outputs is nearly insensitive to
    a common scale of the steps (the layer norms), so preserving each step matters less than
    leaving the MLP inputs unchanged.
    """
    r = source.h / target.h
    trained = set(source.blocks)
    for b in target.blocks:
        if b in trained:
            for p in _output_projections(model, b):
                p.mul_(r)
        else:
            for p in _output_projections(model, b):
                p.zero_()


@torch.no_grad()
def stack(model: ODETransformer, source: Level, target: Level) -> None:
    """Gong et al. 2019 (progressive stacking): the trained path s_0 .. s_{K-1} is repeated
    as a whole, the original at the bottom and the copy on top: the target's i-th block gets
    the tensors of s_{i mod K} (copied, so training one never changes another), and every
    block takes the target's step h. E.g. coarse_b (0, 2, …, 10) -> fine: blocks 0 .. 5 hold
    the trained 0, 2, …, 10 in order, blocks 6 .. 11 copies of them. Trained tensors move
    (block 2's go to block 1): :func:`stack_origins` says whose optimizer state goes where.
    """
    K = len(source.blocks)
    saved = {s: _snapshot(model, s) for s in source.blocks}  # read every source before writing
    for i, t in enumerate(target.blocks):
        s = source.blocks[i % K]
        if t != s:
            _copy_block(model, t, saved[s])


def stack_origins(source: Level, target: Level) -> dict[int, int]:
    """The bottom copy continues the trained block (target block i <- s_i for i < K); the
    top copies are new blocks (fresh optimizer state)."""
    return {t: s for t, s in zip(target.blocks, source.blocks)}


GROWTH.register("ode")(Growth(ode, same_block_origins))
GROWTH.register("zero")(Growth(zero, same_block_origins))
GROWTH.register("stack")(Growth(stack, stack_origins))
GROWTH.register("keep")(Growth(keep, same_block_origins))


def inherited(model: ODETransformer, origins: dict[int, int]) -> dict[str, str]:
    """{target block parameter name: source block parameter name} for ``origins``."""
    out = {}
    for t, s in origins.items():
        for n, _ in model.blocks[t].named_parameters():
            out[f"blocks.{t}.{n}"] = f"blocks.{s}.{n}"
    return out


def new_blocks(source: Level, target: Level, init: str) -> list[int]:
    """Blocks of the target path that a growth with operator ``init`` starts fresh."""
    origins = GROWTH.get(init).origins(source, target)
    return [b for b in target.blocks if b not in origins]


@handles(Grow)
def grow(run: RunState, op: Grow) -> None:
    """Carry out a :class:`mltrain.schemes.stages.Grow`: measure the validation loss of the
    source path, apply the growth operator, hand the optimizer state over (the blocks that
    continue a trained block and the shared parameters keep its state, new blocks start
    fresh), measure the loss of the grown path, and note ``grow/loss_before``,
    ``grow/loss_after`` and ``grow/loss_jump`` (after − before, nats/token) for the next
    record. A change from or to a width level goes through
    :func:`mltrain.schemes.width.grow_width` (de-coalesce with α = 1 first; fresh optimizer
    state). The two evaluations count as evaluation FLOPs (``perf/flops_eval``, booked by
    ``run.evaluate``), not training FLOPs."""
    src, dst = run.levels[op.source], run.levels[op.level]
    growth = GROWTH.get(op.init)
    before = run.evaluate(src.eval_path, src.module(run.model))
    if width_factor_of(src) > 1 or width_factor_of(dst) > 1:  # levels on their own tensors
        grow_width(run, src, dst, growth.apply)
    else:
        growth.apply(run.model, src, dst)
        pairs = inherited(run.model, growth.origins(src, dst))
        pairs |= {n: n for n in run.params(src.name) if not n.startswith("blocks.")}
        run.optims.inherit_state(src.steps_with, dst.steps_with, pairs)
    after = run.evaluate(dst.eval_path, dst.module(run.model))
    run.note("grow/loss_before", before)
    run.note("grow/loss_after", after)
    run.note("grow/loss_jump", after - before)
