"""The registries whose names are config values, declared in the config layer and filled by
the modules that own the concepts; so the schema names them without importing upward.

Each :class:`mltrain.registry.Registry` here is empty until its owner is imported: hierarchies
(:mod:`mltrain.levels`), LR schedules and optimizer-state policies (:mod:`mltrain.train.optim`),
corpora (:mod:`mltrain.data.corpora`), the tokenizer check (:mod:`mltrain.data.tokenizers`),
growth operators (:mod:`mltrain.schemes.growth`) and the schemes
(:data:`mltrain.config.scheme.SCHEMES`). **Contract**: the composition root fills them before
it validates a config: :mod:`mltrain.job`, :mod:`mltrain.cli` and :mod:`mltrain.readback`
import :mod:`mltrain.schemes`, which imports every owner. Validating against a registry that
nobody filled raises :class:`RegistryNotFilled` (a programming error, never a user's).
"""

from __future__ import annotations

from collections.abc import Callable

from mltrain.registry import Registry

# ``coarsening.hierarchy.name`` -> function (coarsening config, n_layer) -> coarse levels
HIERARCHIES: Registry[Callable] = Registry("coarsening.hierarchy.name")
# ``schedule.name`` -> factor(step, total, cfg): the LR multiplier of the peak
SCHEDULES: Registry[Callable] = Registry("schedule.name")
# ``coarsening.hierarchy.optimizer_state`` -> the LevelOptimizers class of that policy
STATE_POLICIES: Registry[type] = Registry("coarsening.hierarchy.optimizer_state")
# ``data.name`` -> Corpus class
CORPORA: Registry[type] = Registry("data.name")
# ``coarsening.stages.grow_init`` -> Growth
GROWTH: Registry = Registry("coarsening.stages.grow_init")
# a setting -> its check (value -> what is allowed, or None), for checks owned above config
CHECKS: Registry[Callable[[object], str | None]] = Registry("check")


class RegistryNotFilled(RuntimeError):
    """A config was validated before the registry's owner was imported (see the module)."""


def names_of(registry: Registry) -> tuple[str, ...]:
    """The names registered in ``registry``.

    Raises:
        RegistryNotFilled: nothing is registered (its owner was not imported).
    """
    if not registry.names():
        raise RegistryNotFilled(
            f"no {registry.setting} is registered: import mltrain.schemes (the composition "
            "root, mltrain.job, does) before validating a config"
        )
    return tuple(registry.names())


def registered_check(setting: str) -> Callable[[object], str | None]:
    """The check of ``setting`` that its owner registers in :data:`CHECKS` (looked up when a
    value is checked, so the schema can name it before the owner is imported)."""

    def check(value) -> str | None:
        if setting not in CHECKS:
            raise RegistryNotFilled(
                f"no check of {setting} is registered: import mltrain.schemes (the composition "
                "root, mltrain.job, does) before validating a config"
            )
        return CHECKS.get(setting)(value)

    check.__name__ = f"registered_check[{setting}]"
    return check
