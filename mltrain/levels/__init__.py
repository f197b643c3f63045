"""Levels: what a level is (:mod:`.base`), the hierarchies that build them (:mod:`.depth`,
:mod:`.patch`, :mod:`.raptr`, assembled by :mod:`.hierarchy`), restriction and prolongation
(:mod:`.restrict_prolong`)."""

from mltrain.levels.base import HIERARCHIES, Level, fine_level
from mltrain.levels.hierarchy import build_hierarchy
from mltrain.levels.restrict_prolong import (
    apply_corrections,
    correction,
    level_parameters,
    prolong,
    snapshot,
)

__all__ = [
    "HIERARCHIES",
    "Level",
    "apply_corrections",
    "build_hierarchy",
    "correction",
    "fine_level",
    "level_parameters",
    "prolong",
    "snapshot",
]
