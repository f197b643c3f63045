"""What a ``coarsening.scheme`` is, in one object: :class:`Scheme`, and :data:`SCHEMES`, the
one registry of them (the allowed values of ``coarsening.scheme``).

The registry is declared here, in the config layer, so that every layer may ask it (the
config's validation and unread keys, the plan, the levels, checkpoints, the job, and
``mltrain-compare`` through :mod:`mltrain.readback`); it is filled by :mod:`mltrain.schemes`,
one module per scheme, each registering one :class:`Scheme` (see
:mod:`mltrain.config.registries` for the contract: the composition root imports
:mod:`mltrain.schemes` first). No module outside ``mltrain/schemes/`` branches on a scheme's
name: it asks the scheme (``tests/test_architecture.py`` checks this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mltrain.registry import Registry


def _nothing(*_args) -> None:
    return None


@dataclass(frozen=True)
class Scheme:
    """One ``coarsening.scheme``: what it reads, how it is checked and planned, how
    ``mltrain-compare`` names and groups its runs, and how its old checkpoints are read.

    Attributes:
        name: the ``coarsening.scheme`` value.
        reads: the ``coarsening`` sections its runs read; ``mltrain-compare`` groups runs by
            the keys of these sections only, and the command line's notice names the others
            as unread (:func:`mltrain.config.keys.unread`).
        plan: builder(cfg, levels, step_flops or None, tokens per step) -> ``Plan``
            (:func:`mltrain.plan.plan.build_plan` calls it).
        multilevel: whether it may train levels besides the fine one (False: the fine level
            only; its runs read no coarsening key at all).
        staged: its levels train one after another (coarse stages before the fine one), so the
            fine level's first iteration comes after the coarse stages' optimizer steps.
        names_itself: its :attr:`label` is read without the ``multilevel`` role in front.
        check: check(coarsening DictConfig) when this scheme is chosen; raises
            :class:`mltrain.errors.ConfigError` (one line) on a config it cannot run.
        check_unused: check(coarsening DictConfig) when another scheme is chosen (e.g. its
            section set for nothing); raises :class:`mltrain.errors.ConfigError`.
        trains_coarse: trains_coarse(nested coarsening dict) -> whether a run of this config
            trains a coarse level, when its plan cannot be built (a run of an older version).
        label: label(flat config, run.json ``levels`` or None) -> the scheme in a few words for
            ``mltrain-compare`` (``even_odd δ=0.25 m=20 w=5``).
        after_plan: after_plan(coarsening config, plan): warnings about a plan that is
            allowed but probably not meant, said when the job starts.
        upgrade_checkpoint: upgrade_checkpoint(checkpoint dict, extension states by name):
            fills the states of its extensions from an older checkpoint's layout.
    """

    name: str
    reads: tuple[str, ...]
    plan: Callable[..., Any]
    multilevel: bool = True
    staged: bool = False
    names_itself: bool = False
    check: Callable[[Any], None] = _nothing
    check_unused: Callable[[Any], None] = _nothing
    trains_coarse: Callable[[dict], bool] = lambda _c: True
    label: Callable[[dict, dict | None], str] = lambda _flat, _levels: ""
    after_plan: Callable[[Any, Any], None] = _nothing
    upgrade_checkpoint: Callable[[dict, dict], None] = _nothing


def fmt_value(v) -> str:
    """A config value as it reads in a label: ``0.25``, ``[1,2]``, ``adamw``."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple | list):
        return "[" + ",".join(map(fmt_value, v)) + "]"
    return str(v)


# ``coarsening.scheme`` -> Scheme; filled by mltrain.schemes (one module per scheme)
SCHEMES: Registry[Scheme] = Registry("coarsening.scheme")


def register_scheme(scheme: Scheme) -> Scheme:
    """Add ``scheme`` to :data:`SCHEMES` under its name (for the module that defines it).

    Raises:
        ValueError: a scheme of that name is already registered.
    """
    return SCHEMES.register(scheme.name)(scheme)
