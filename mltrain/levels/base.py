"""Levels of the hierarchy, restriction by injection, and prolongation (Lauga et al. 2025, Eq. 4).

A *level* is a path through the fine model's blocks with a step size. Restriction is
injection: a coarse level's parameters ARE the fine model's tensors (no copies, no second
model). A coarse phase trains them on the coarse path; prolongation then sets

    θ ← θ_before + δ · (θ_after − θ_before)

over the parameters the phase trained (Eq. 4; DESIGN.md section 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mltrain.config import CoarseningConfig
from mltrain.errors import ConfigError
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.registry import Registry


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy.

    Attributes:
        name: ``fine``, ``coarse_a``, ``coarse_b``, ``coarse_1``... (used in metric names).
        blocks: indices of the fine model's blocks this level evaluates, in order.
        h: Euler step size of every block evaluation on this level (1.0 on the fine level).
        parent: name of the next finer level (None for the fine level); the V-cycle
            descends from parent to child and prolongs back into the parent.
        patch: tokens per position (1: token level; K > 1: a patch level whose inputs are
            means of K token embeddings and whose positions predict the next K tokens).
        optimizer: the level whose optimizer this level steps with (None: its own, under the
            ``optimizer_state`` policy), e.g. random sub-paths share the fine optimizer.
    """

    name: str
    blocks: tuple[int, ...]
    h: float
    parent: str | None = None
    patch: int = 1
    optimizer: str | None = None

    @property
    def path(self) -> BlockPath:
        """The path a step of this level integrates (:meth:`sample_path` for random ones)."""
        return BlockPath(self.blocks, self.h)

    @property
    def n_blocks(self) -> int:
        """Block evaluations per forward pass (what a step's FLOPs count)."""
        return len(self.blocks)

    def sample_path(self, generator) -> BlockPath:
        """The path of the next step; a fixed level ignores ``generator`` (a
        ``torch.Generator`` whose state is checkpointed), a random one draws from it."""
        return self.path

    @property
    def is_fine(self) -> bool:
        return self.parent is None


# ``coarsening.name`` -> function (coarsening config, n_layer) -> coarse levels (fine excluded)
HIERARCHIES: Registry[Callable[[CoarseningConfig, int], list[Level]]] = Registry("coarsening.name")


def _fine(n: int) -> Level:
    return Level("fine", tuple(range(n)), 1.0)


def build_hierarchy(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """The levels of ``coarsening=<name>``, fine level first, in V-cycle order
    (:data:`HIERARCHIES`; each option's rule is in its function's docstring); every coarse
    level takes ``coarsening.patch_size`` tokens per position (:mod:`mltrain.levels.patch`).

    Raises:
        ConfigError: an unknown name, a hierarchy the depth cannot support, or an invalid
            custom block list.
    """
    from mltrain.levels.patch import with_patch

    return [_fine(n_layer)] + with_patch(c, HIERARCHIES.get(c.name)(c, n_layer))


@HIERARCHIES.register("none")
def _none(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """Single-level: the fine level only."""
    return []


def _halves(c: CoarseningConfig, n_layer: int, which: str) -> list[Level]:
    if n_layer < 2 or n_layer % 2:
        raise ConfigError(
            f"coarsening={which} needs an even number of blocks >= 2, but model.n_layer={n_layer}"
        )
    h = float(c.step_scale)
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
    f, depth = int(c.factor), int(c.depth)
    if depth > n_layer.bit_length() or n_layer % (f**depth):  # (f^depth > n_layer first)
        power = f"{f**depth}" if depth <= n_layer.bit_length() else f"more than {n_layer}"
        raise ConfigError(
            f"coarsening=recursive: factor^depth = {f}^{depth} = {power}, but it must divide "
            f"model.n_layer={n_layer} (lower coarsening.depth or coarsening.factor)"
        )
    levels = [_fine(n_layer)]
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


@HIERARCHIES.register("grow")
def _grow(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """coarse_b alone (as ``odd``): the coarse path that coarse-to-fine training
    (``conf/coarsening/grow.yaml``, :mod:`mltrain.schemes.stages`) trains before growing."""
    return _halves(c, n_layer, "odd")


@HIERARCHIES.register("grow_recursive")
def _grow_recursive(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """The ``recursive`` levels, trained coarsest first with a growth at each change
    (``conf/coarsening/grow_recursive.yaml``: 3 -> 6 -> 12 blocks)."""
    return _recursive(c, n_layer)


@HIERARCHIES.register("custom")
def _custom(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """``blocks`` lists, h = ``step_sizes[i]`` or N/len(blocks[i]); a level whose blocks all
    belong to an earlier level is nested under the nearest such level (the V-cycle recurses
    into it), any other level is a sibling under the fine level (like even_odd)."""
    blocks, steps = c.blocks, c.step_sizes
    if len(blocks) == 0:
        raise ConfigError(
            "coarsening=custom needs coarsening.blocks=[[i,j,...],...] (one list per level)"
        )
    if len(steps) not in (0, len(blocks)):
        raise ConfigError(
            f"coarsening.step_sizes has {len(steps)} entries: give none or one per level ({len(blocks)})"
        )
    levels: list[Level] = []
    for i, bl in enumerate(blocks):
        bl = [int(b) for b in bl]
        if not bl:
            raise ConfigError(
                f"coarsening.blocks[{i}] is empty: a coarse level needs at least one block"
            )
        if len(set(bl)) != len(bl):
            raise ConfigError(
                f"coarsening.blocks[{i}]={bl} repeats a block: each block at most once"
            )
        bad = [b for b in bl if not 0 <= b < n_layer]
        if bad:
            raise ConfigError(
                f"coarsening.blocks[{i}] names block {bad[0]}, outside the model's blocks 0..{n_layer - 1}"
            )
        h = float(steps[i]) if steps else n_layer / len(bl)
        if not math.isfinite(h) or h <= 0:
            raise ConfigError(
                f"coarsening.step_sizes[{i}]={h} is not allowed: must be a finite number > 0"
            )
        # nested under the nearest earlier level that contains all its blocks (a V-cycle
        # recursion, as in `recursive`), else a sibling of the others under the fine level
        parent = next((lv.name for lv in reversed(levels) if set(bl) <= set(lv.blocks)), "fine")
        levels.append(Level(f"coarse_{i + 1}", tuple(bl), h, parent))
    return levels


def level_parameters(
    model: ODETransformer, level: Level, train_shared: bool = True
) -> dict[str, torch.nn.Parameter]:
    """Restriction by injection: the fine model's own parameter tensors that ``level`` trains.

    The level's blocks, plus the shared embeddings (tied with the head) and final norm unless
    ``train_shared`` is False (the fine level always includes them). Returned in the model's
    registration order, so optimizers built over them are reproducible.
    """
    wanted = {n for i in level.blocks for n in model.block_parameter_names(i)}
    if train_shared or level.is_fine:
        wanted.update(model.shared_parameter_names())
    return {n: p for n, p in model.named_parameters() if n in wanted}


def snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """θ_before: detached copies of ``params`` (the only copies the multilevel scheme makes)."""
    return {n: p.detach().clone() for n, p in params.items()}


@torch.no_grad()
def prolong(
    params: dict[str, torch.nn.Parameter], before: dict[str, torch.Tensor], delta: float
) -> None:
    """Eq. 4 in place: θ ← θ_before + δ·(θ − θ_before) for every tensor in ``before``.

    Uses ``torch.lerp``, which returns θ_before exactly for δ = 0 and θ exactly for δ = 1.
    """
    for n, b in before.items():
        p = params[n]
        p.copy_(torch.lerp(b, p, delta))


@torch.no_grad()
def correction(
    params: dict[str, torch.nn.Parameter], before: dict[str, torch.Tensor], delta: float
) -> dict[str, torch.Tensor]:
    """δ·(θ − θ_before) for ``coarsening.combine=summed``, restoring θ to θ_before."""
    out = {}
    for n, b in before.items():
        p = params[n]
        out[n] = (p - b) * delta
        p.copy_(b)
    return out


@torch.no_grad()
def apply_corrections(
    params: dict[str, torch.nn.Parameter], corrections: Sequence[dict[str, torch.Tensor]]
) -> None:
    """θ ← θ + Σ corrections (the summed combination of several coarse phases)."""
    for corr in corrections:
        for n, c in corr.items():
            params[n].add_(c)


# hierarchies of other modules register on import (mltrain.levels.patch: coarsening=patch)
import mltrain.levels.patch  # noqa: E402, F401
import mltrain.levels.raptr  # noqa: E402, F401  (registers the random sub-path hierarchy)
