"""The hierarchy of a run: the fine level and the coarse levels of
``coarsening.hierarchy.name``, built by the builders registered in
:data:`mltrain.levels.base.HIERARCHIES` (registered by importing this package's modules)."""

from __future__ import annotations

from dataclasses import replace

from mltrain.config import CoarseningConfig
from mltrain.levels import depth, patch, raptr, width  # noqa: F401  (each registers its hierarchies)
from mltrain.levels.base import HIERARCHIES, Level, fine_level


def build_hierarchy(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """The levels of ``coarsening=<name>``, fine level first, in V-cycle order
    (:data:`HIERARCHIES`; each option's rule is in its function's docstring); every coarse
    level takes ``coarsening.patch.size`` tokens per position (:mod:`mltrain.levels.patch`)
    and trains the shared tensors unless ``coarsening.hierarchy.train_shared`` is false; with
    ``coarsening.hierarchy.width_factor`` = c > 1 every coarse level runs at width d/c on its
    own tensors (:mod:`mltrain.levels.width`).

    Raises:
        ConfigError: an unknown name, a hierarchy the depth cannot support, or an invalid
            custom block list.
    """
    coarse = patch.with_patch(c, HIERARCHIES.get(c.hierarchy.name)(c, n_layer))
    h = c.hierarchy
    coarse = width.with_width(list(h.width_factors) or h.width_factor, coarse)
    if not c.hierarchy.train_shared:
        coarse = [replace(lv, train_shared=False) for lv in coarse]
    width.check_width(c, coarse)
    return [fine_level(n_layer)] + coarse
