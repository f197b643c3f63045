"""``coarsening.scheme=single_level``: the fine level alone (the baseline every scheme is judged
against). Its plan builder lives with the plan (:func:`mltrain.plan.plan.single_level_plan`);
it reads no coarsening section and needs ``coarsening.hierarchy.name=none``."""

from __future__ import annotations

from mltrain.config.scheme import Scheme, register_scheme
from mltrain.errors import ConfigError
from mltrain.plan.plan import single_level_plan


def check(c) -> None:
    """A single-level run has no coarse levels.

    Raises:
        ConfigError: ``coarsening.hierarchy.name`` is not ``none``.
    """
    name = c.hierarchy.name
    if name != "none":
        raise ConfigError(
            f"coarsening.scheme=single_level trains the fine level only, but "
            f"coarsening.hierarchy.name={name}: use coarsening=none, or coarsening.scheme=vcycle "
            "or stages"
        )


SINGLE_LEVEL = register_scheme(
    Scheme(
        name="single_level",
        reads=(),
        plan=single_level_plan,
        multilevel=False,
        check=check,
        trains_coarse=lambda _c: False,
    )
)
