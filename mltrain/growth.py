"""Growth operators: how the model changes at a stage change (coarse path -> fine path).

``coarsening.grow_init`` names one of :data:`GROWTH`; the :class:`mltrain.stages.Grow`
operation applies it in place to the shared tensors (the fine model's blocks), with copies
(never views) where blocks are duplicated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mltrain.levels import Level
from mltrain.model import ODETransformer
from mltrain.operations import handles
from mltrain.registry import Registry
from mltrain.stages import Grow

if TYPE_CHECKING:
    from mltrain.trainer import Trainer

# ``coarsening.grow_init`` -> operator(model, source level, target level)
GROWTH: Registry[Callable[[ODETransformer, Level, Level], None]] = Registry("coarsening.grow_init")


@GROWTH.register("keep")
def keep(model: ODETransformer, source: Level, target: Level) -> None:
    """The control: blocks the source path skipped keep whatever they hold (e.g. their random
    initialisation); the trained blocks change step size from the source's h to the target's."""


def stand_ins(source: Level, n_layer: int) -> dict[int, int]:
    """For each block the source path skipped, the trained block that stands for it: the
    nearest source block at or before it (forward Euler evaluates F at the start of its step,
    so a coarse step from block s with h = c covers fine blocks s .. s+c−1), else the first
    source block (for blocks before it). E.g. coarse_b (0, 2, …): 2i+1 ← 2i; coarse_a
    (1, 3, …): 0 ← 1 and 2i+2 ← 2i+1."""
    trained = sorted(source.blocks)
    out = {}
    for b in range(n_layer):
        if b in source.blocks:
            continue
        before = [s for s in trained if s < b]
        out[b] = before[-1] if before else trained[0]
    return out


@GROWTH.register("ode")
def ode(model: ODETransformer, source: Level, target: Level) -> None:
    """Chang et al. 2018 (arXiv 1710.10348): every block the source path skipped becomes a copy
    of the trained block that stands for it (:func:`stand_ins`), and every block takes the
    target's step h (1 on the fine path, from the source's 2 for a half-depth path).

    First-order argument: a coarse step is x + 2F(x); two fine steps with the same F give
    x1 = x + F(x), x2 = x1 + F(x1) = x + 2F(x) + [F(x1) − F(x)], and F(x1) − F(x) = O(‖F‖·‖∂F‖),
    second order in the step: the grown model equals the coarse one up to O(h²) per step.
    """
    import torch

    with torch.no_grad():
        for dst, src in stand_ins(source, model.n_layer).items():
            for p_dst, p_src in zip(model.blocks[dst].parameters(), model.blocks[src].parameters()):
                p_dst.copy_(p_src)


@handles(Grow)
def grow(t: Trainer, op: Grow) -> None:
    """Carry out a :class:`mltrain.stages.Grow`: measure the validation loss of the source
    path, apply the growth operator, hand the trained parameters' optimizer state to the new
    stage's optimizer (new blocks start fresh), measure the loss of the grown path, and note
    ``grow/loss_before``, ``grow/loss_after`` and ``grow/loss_jump`` (after − before, nats)
    for the next record. The two evaluations count as evaluation FLOPs."""
    src, dst = t.levels[op.source], t.levels[op.level]
    before = t.evaluate(path=src.path)
    GROWTH.get(op.init)(t.model, src, dst)
    trained = set(t.level_params[src.name])
    t.optims.transfer(src.optimizer or src.name, dst.optimizer or dst.name, trained)
    after = t.evaluate(path=dst.path)
    per_block = t.eval_flops.total // len(t.fine.blocks)
    t.p.flops_eval += per_block * (src.n_blocks + dst.n_blocks)
    t.note("grow/loss_before", before)
    t.note("grow/loss_after", after)
    t.note("grow/loss_jump", after - before)
