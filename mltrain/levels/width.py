"""Width levels: a level whose blocks run at width d/c on its own narrow tensors (Zou, Zhang,
Deng, ICLR 2024, arXiv 2404.07999; the maps are :mod:`mltrain.model.width`).

A depth level is a view of the fine tensors; a width level is not. It holds a narrow
:class:`~mltrain.model.transformer.ODETransformer` (width d/c, n_head/c heads of the same head
width, the blocks of the level's path in order) that *restriction* fills by coalescing the
fine model and *prolongation* writes back by de-coalescing and interpolating with α
(``θ_fine ← (1 − α)·θ_fine + α·decoalesce(θ_narrow)``; α plays the role δ plays for depth:
α = 0 changes nothing, α = 1 replaces). The narrow tensors are filled in place, so an
optimizer over them keeps its state from one V-cycle to the next.

Hierarchies (``coarsening.hierarchy``):

- ``name=width``: one coarse level ``narrow`` over all blocks with h = 1 at width d/c
  (c = ``width_factor``, default 2);
- ``width_factor`` = c > 1 with any depth hierarchy (``odd``, ``even_odd``, ``recursive``,
  ``custom``): every coarse level becomes a width level at d/c on its own path (width × depth:
  e.g. ``odd`` is blocks 0, 2, … with h = 2 at half width).

FLOPs: a step of a width level costs a step at width d/c along its path (the head too:
:func:`mltrain.model.flops.level_step_flops` reads ``width_factor``); coalescing, de-coalescing
and interpolation cost :func:`mltrain.model.width.map_flops` each time they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from mltrain.config.scheme import SCHEMES
from mltrain.errors import ConfigError
from mltrain.levels.base import HIERARCHIES, Level
from mltrain.model import width as W
from mltrain.model.flops import FlopCount
from mltrain.model.transformer import BlockPath, ODETransformer

WIDTH = "narrow"  # the level name of coarsening.hierarchy.name=width


class Narrow:
    """The narrow model of one width level (a mutable holder inside the frozen level)."""

    def __init__(self) -> None:
        self.model: ODETransformer | None = None


@dataclass(frozen=True)
class WidthLevel(Level):
    """A :class:`~mltrain.levels.base.Level` at width d/c on its own tensors.

    Attributes:
        width_factor: c (≥ 2; divides ``model.n_head``).
        narrow: the holder of the narrow model (built on first use from the fine model; not
            compared, not printed).
    """

    width_factor: int = 2
    narrow: Narrow = field(default_factory=Narrow, compare=False, repr=False)
    shape: tuple | None = field(default=None, compare=False, repr=False)

    def map_flops(self, kind: str, alpha: float | None = None) -> FlopCount:
        """FLOPs of one ``coalesce``, ``decoalesce`` or ``interpolate`` (with ``alpha``) of
        this level's tensors (:func:`mltrain.model.width.map_flops` over its blocks and
        the shared tensors; without them: the non-embedding part). Needs :attr:`shape`
        ((d, V, block_size, bias), set by :func:`with_shape`); 0 without it."""
        if self.shape is None:
            return FlopCount(0, 0)
        d, vocab, block_size, bias = self.shape
        args = (vocab, block_size, self.width_factor, bias, alpha)
        full = W.map_flops(d, self.n_blocks, *args)[kind]
        shared = W.map_flops(d, 0, *args)[kind]
        return FlopCount(full, full - shared)

    def model_of(self, fine: ODETransformer) -> ODETransformer:
        """The narrow model, coalesced from ``fine`` on first use (:func:`restrict` refills
        it). Raises ConfigError when c does not divide the heads."""
        if self.narrow.model is None:
            self.narrow.model = W.coalesce(fine, self.width_factor, self.blocks)
        return self.narrow.model

    def narrow_path(self, path: BlockPath) -> BlockPath:
        """``path`` (over fine block indices) as a path over the narrow model's blocks (narrow
        block k is fine block ``blocks[k]``), same step sizes."""
        index = {b: k for k, b in enumerate(self.blocks)}
        return BlockPath(tuple(index[b] for b in path.blocks), path.h, path.hs)

    def module(self, fine: ODETransformer) -> ODETransformer:
        """The narrow model (training and validation of this level run it)."""
        return self.model_of(fine)

    @property
    def eval_path(self) -> BlockPath:
        """The level's path over the narrow model's blocks (validation runs the narrow model)."""
        return self.narrow_path(self.path)

    def parameters(self, fine: ODETransformer) -> dict[str, torch.nn.Parameter]:
        """The narrow model's parameters (its own tensors, named as in a model of its blocks)."""
        return dict(self.model_of(fine).named_parameters())

    def loss(self, model: ODETransformer, windows: torch.Tensor, path: BlockPath) -> torch.Tensor:
        """Mean training loss (nats/token) of the narrow model along ``path`` on ``windows``
        ``(B, T + 1)`` (``model`` is the fine model: the narrow one is built from it)."""
        narrow = self.model_of(model)
        K = self.patch
        p = self.narrow_path(path)
        if K == 1:
            return narrow(windows[:, :-1], windows[:, 1:], path=p)[1]
        return narrow(windows[:, :-K], windows[:, K:], path=p, patch=K)[1]

    def restrict(self, fine: ODETransformer) -> None:
        """Coalesce ``fine`` into the narrow tensors in place (Zou et al.'s coalescing)."""
        if self.narrow.model is None:
            self.model_of(fine)
        else:
            W.coalesce(fine, self.width_factor, self.blocks, into=self.narrow.model)

    def prolong(self, fine: ODETransformer, alpha: float) -> None:
        """De-coalesce and interpolate into ``fine`` with ``alpha`` (α = 1: width growth)."""
        W.interpolate(fine, self.model_of(fine), alpha, self.width_factor, self.blocks)


def as_width(level: Level, factor: int) -> WidthLevel:
    """``level`` (a coarse depth / patch level) at width d/``factor`` on its own tensors."""
    values = {f.name: getattr(level, f.name) for f in fields(level) if f.init}
    values.pop("width_factor", None)
    values.pop("narrow", None)
    values.pop("shape", None)
    return WidthLevel(**values, width_factor=int(factor))


def with_width(factor: int | list[int], coarse: list[Level]) -> list[Level]:
    """Every coarse level at width d/``factor`` (factor 1: unchanged); a list gives one factor
    per coarse level, in order (``coarsening.hierarchy.width_factors``).

    Raises:
        ConfigError: a list whose length is not the number of coarse levels.
        ConfigError: a factor below 1, or a level that steps with another level's optimizer
            (random sub-paths: the fine optimizer cannot hold narrow tensors).
    """
    if isinstance(factor, int | float):
        factors = [int(factor)] * len(coarse)
    else:
        factors = [int(f) for f in factor]
        if len(factors) != len(coarse):
            names = ", ".join(lv.name for lv in coarse)
            raise ConfigError(
                f"coarsening.hierarchy.width_factors={factors} has {len(factors)} entries for "
                f"{len(coarse)} coarse levels ({names}): give one factor per coarse level"
            )
    out = [lv for lv in coarse]
    for i, (lv, f) in enumerate(zip(coarse, factors)):
        out[i] = _with_width(f, lv)
    return out


def _with_width(factor: int, level: Level) -> Level:
    if factor < 1:
        raise ConfigError(
            f"coarsening.hierarchy.width_factor={factor} is not allowed: must be an integer >= 1"
        )
    if factor == 1 or isinstance(level, WidthLevel):
        return level
    if level.optimizer is not None:
        raise ConfigError(
            f"coarsening.hierarchy.width_factor={factor} is not allowed with level {level.name}: "
            "it steps with another level's optimizer, which cannot hold narrow tensors; use "
            "coarsening.hierarchy.width_factor=1"
        )
    return as_width(level, factor)


def with_shape(levels: list[Level], model, vocab_size: int | None) -> list[Level]:
    """``levels`` with each width level's :attr:`WidthLevel.shape` taken from the ``model``
    section and the vocabulary (what its map FLOPs need); other levels unchanged.

    Raises:
        ConfigError: a width factor that does not divide ``model.n_head`` (checked here, when
            the plan is built, before a run writes anything).
    """
    for lv in levels:
        if width_factor_of(lv) > 1:
            W.check_width(int(model.n_embd), int(model.n_head), width_factor_of(lv))
    if vocab_size is None:
        return levels
    shape = (int(model.n_embd), int(vocab_size), int(model.block_size), bool(model.bias))
    return [replace(lv, shape=shape) if isinstance(lv, WidthLevel) else lv for lv in levels]


def check_width(c, levels: list[Level]) -> None:
    """Refuse the settings a width level cannot honour (``c``: the coarsening config).

    Raises:
        ConfigError: ``coarsening.hierarchy.optimizer_state=shared`` (one optimizer's moments are
            per tensor, and a narrow tensor has another shape than the fine one), or
            ``coarsening.hierarchy.train_shared=false`` (the narrow model's embeddings are its
            own tensors, coalesced and interpolated with its blocks).
    """
    if not any(width_factor_of(lv) > 1 for lv in levels) or not SCHEMES.get(c.scheme).multilevel:
        return
    h = c.hierarchy
    if h.optimizer_state == "shared":
        raise ConfigError(
            "coarsening.hierarchy.optimizer_state=shared is not allowed with width levels (their "
            "tensors have other shapes than the fine ones): choose separate or reset"
        )
    if not h.train_shared:
        raise ConfigError(
            "coarsening.hierarchy.train_shared=false is not allowed with width levels (a narrow "
            "model's embeddings are its own tensors): use coarsening.hierarchy.train_shared=true"
        )


@HIERARCHIES.register("width")
def _width(c, n_layer: int) -> list[Level]:
    """One coarse level ``narrow``: every block, h = 1, at width d/c (c =
    ``coarsening.hierarchy.width_factor``, at least 2 here)."""
    factor = max(2, int(c.hierarchy.width_factor))
    return [WidthLevel(WIDTH, tuple(range(n_layer)), 1.0, "fine", width_factor=factor)]


def width_factor_of(level: Level) -> int:
    """c of a width level, 1 for any other level."""
    return int(getattr(level, "width_factor", 1))


__all__ = [
    "WIDTH",
    "Narrow",
    "WidthLevel",
    "as_width",
    "check_width",
    "width_factor_of",
    "with_shape",
    "with_width",
]
