"""Depth hierarchies (Lauga et al. 2025): coarse levels that take a subset of the fine
model's blocks with a larger Euler step. Each builder's rule is in its docstring;
``coarsening.hierarchy.name`` chooses one (:data:`mltrain.levels.base.HIERARCHIES`)."""

from __future__ import annotations

import math

from mltrain.config import CoarseningConfig
from mltrain.errors import ConfigError
from mltrain.levels.base import HIERARCHIES, Level, fine_level


def _multiples(n_layer: int, m: int) -> str:
    """``model.n_layer=<k>`` for the multiples k of ``m`` next to ``n_layer`` (what to use
    instead of a depth that ``m`` does not divide)."""
    below = n_layer // m * m
    ks = [k for k in (below, below + m) if k >= m]
    return " or ".join(f"model.n_layer={k}" for k in ks)


@HIERARCHIES.register("none")
def _none(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """Single-level: the fine level only."""
    return []


def _halves(c: CoarseningConfig, n_layer: int, which: str) -> list[Level]:
    if n_layer < 2 or n_layer % 2:
        raise ConfigError(
            f"coarsening.hierarchy.name={which} needs an even number of blocks >= 2, but "
            f"model.n_layer={n_layer}: use {_multiples(n_layer, 2)}"
        )
    h = float(c.hierarchy.step_scale)
    a = Level("coarse_a", tuple(range(1, n_layer, 2)), h, "fine")
    b = Level("coarse_b", tuple(range(0, n_layer, 2)), h, "fine")
    return {"even_odd": [a, b], "even": [a], "odd": [b]}[which]


@HIERARCHIES.register("even_odd")
def _even_odd(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """The paper's pair: coarse_a = blocks 1,3,…,N−1 then coarse_b = 0,2,…,N−2, both children of
    the fine level, h = ``step_scale`` (Lauga et al. 2025, Sec. 3)."""
    return _halves(c, n_layer, "even_odd")


@HIERARCHIES.register("even")
def _even(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """coarse_a alone (the paper's "even" blocks, 1-based)."""
    return _halves(c, n_layer, "even")


@HIERARCHIES.register("odd")
def _odd(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """coarse_b alone (the paper's "odd" blocks, 1-based)."""
    return _halves(c, n_layer, "odd")


@HIERARCHIES.register("recursive")
def _recursive(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """coarse_l = blocks c^l−1, 2c^l−1, … with h = c^l (c = ``factor``), l = 1..``depth``,
    each the child of the previous one."""
    f, depth = int(c.hierarchy.factor), int(c.hierarchy.depth)
    if depth > n_layer.bit_length() or n_layer % (f**depth):  # (f^depth > n_layer first)
        power = f"{f**depth}" if depth <= n_layer.bit_length() else f"more than {n_layer}"
        fits = f" {_multiples(n_layer, f**depth)}, or" if depth <= n_layer.bit_length() else ""
        raise ConfigError(
            f"coarsening.hierarchy.name=recursive: factor^depth = {f}^{depth} = {power}, but it "
            f"must divide model.n_layer={n_layer}: use{fits} a smaller coarsening.hierarchy.depth "
            "or factor (and the levels named after them)"
        )
    levels = [fine_level(n_layer)]
    for ell in range(1, depth + 1):
        stride = f**ell
        levels.append(
            Level(
                f"coarse_{ell}",
                tuple(range(stride - 1, n_layer, stride)),
                float(stride),
                levels[-1].name,
            )
        )
    return levels[1:]


@HIERARCHIES.register("custom")
def _custom(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """``blocks`` lists, h = ``step_sizes[i]`` or N/len(blocks[i]); a level whose blocks all
    belong to an earlier level is nested under the nearest such level (the V-cycle recurses
    into it), any other level is a sibling under the fine level (like even_odd)."""
    blocks, steps = c.hierarchy.blocks, c.hierarchy.step_sizes
    if len(blocks) == 0:
        raise ConfigError(
            "coarsening=custom needs coarsening.hierarchy.blocks=[[i,j,...],...] (one list per level)"
        )
    if len(steps) not in (0, len(blocks)):
        raise ConfigError(
            f"coarsening.hierarchy.step_sizes has {len(steps)} entries: give none or one per level ({len(blocks)})"
        )
    levels: list[Level] = []
    for i, bl in enumerate(blocks):
        bl = [int(b) for b in bl]
        if not bl:
            raise ConfigError(
                f"coarsening.hierarchy.blocks[{i}] is empty: a coarse level needs at least one block"
            )
        if len(set(bl)) != len(bl):
            raise ConfigError(
                f"coarsening.hierarchy.blocks[{i}]={bl} repeats a block: each block at most once"
            )
        bad = [b for b in bl if not 0 <= b < n_layer]
        if bad:
            raise ConfigError(
                f"coarsening.hierarchy.blocks[{i}] names block {bad[0]}, outside the model's blocks 0..{n_layer - 1}"
            )
        h = float(steps[i]) if steps else n_layer / len(bl)
        if not math.isfinite(h) or h <= 0:
            raise ConfigError(
                f"coarsening.hierarchy.step_sizes[{i}]={h} is not allowed: must be a finite number > 0"
            )
        # nested under the nearest earlier level that contains all its blocks (a V-cycle
        # recursion, as in `recursive`), else a sibling of the others under the fine level
        parent = next((lv.name for lv in reversed(levels) if set(bl) <= set(lv.blocks)), "fine")
        levels.append(Level(f"coarse_{i + 1}", tuple(bl), h, parent))
    return levels
