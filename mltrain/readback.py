"""Reading a finished run's plan back from its resolved config (for ``mltrain-compare`` and
scripts): which levels it trained, whether it was multilevel, its stages.

It imports :mod:`mltrain.schemes` (every scheme's plan builder), so it is, with the job, one of
the two places the whole scheme registry is loaded; :mod:`mltrain.analysis` reads plans only
through it.
"""

from __future__ import annotations

import functools
import logging

from omegaconf import OmegaConf

import mltrain.schemes  # noqa: F401  (registers every scheme: mltrain.config.scheme.SCHEMES)
from mltrain.config import SECTIONS, MLTrainConfig, flatten, typed, upgrade
from mltrain.config.keys import hashable
from mltrain.config.scheme import SCHEMES, Scheme
from mltrain.plan.plan import Plan, build_plan

log = logging.getLogger("mltrain.plan.plan")


def typed_config(config: dict) -> MLTrainConfig:
    """A finished run's resolved config dict (``.hydra/config.yaml`` or a checkpoint's
    ``config``, as written by this or an earlier mltrain; renamed keys are upgraded, settings
    added since filled with their defaults) as the typed config.

    Raises:
        ConfigError / omegaconf errors: a config this mltrain cannot read.
    """
    config = upgrade(config)
    base = OmegaConf.structured(MLTrainConfig)
    known = {s: config[s] for s in SECTIONS if isinstance(config.get(s), dict)}
    merged = OmegaConf.merge(base, known)
    merged.optimizer = config.get("optimizer") or {}
    return typed(merged)


def plan_of_config(config: dict, vocab_size: int | None = None) -> Plan:
    """The plan of a finished run from its resolved config dict (:func:`typed_config`).

    Raises:
        ConfigError / omegaconf errors: a config this mltrain cannot read.
    """
    cfg = typed_config(config)
    # a finished run's plan is read, not started: its run-time warnings (max_steps caps) are
    # not news for the reader (mltrain-compare)
    previous = log.level
    log.setLevel(logging.ERROR)
    try:
        return build_plan(cfg, vocab_size)
    finally:
        log.setLevel(previous)


def _unflatten(config: dict) -> dict:
    out: dict = {}
    for key, value in config.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _listify(value)
    return out


def _listify(v):
    return [_listify(x) for x in v] if isinstance(v, list | tuple) else v


@functools.lru_cache(maxsize=4096)
def _multilevel(items: tuple) -> bool:
    config = upgrade(_unflatten(dict(items)))
    try:
        return plan_of_config(config).multilevel
    except Exception:  # a config this version cannot build: its scheme's own rule
        c = config.get("coarsening", {})
        name = c.get("scheme")
        return name in SCHEMES and SCHEMES.get(name).trains_coarse(c)


def scheme_of(flat: dict) -> Scheme | None:
    """The :class:`Scheme` that a run's flattened config names (``coarsening.scheme``), None
    when it names none that this version registers."""
    name = flat.get("coarsening.scheme")
    return SCHEMES.get(name) if name in SCHEMES else None


def is_multilevel(config: dict) -> bool:
    """Whether a run of this resolved config (nested, or flattened ``{"a.b": v}``) trains any
    level besides the fine one, as its :class:`Plan` says (built without a vocabulary, with
    ``train.steps`` iterations). The one place mltrain decides "single-level or multilevel"."""
    flat = flatten(config) if any(isinstance(v, dict) for v in config.values()) else config
    return _multilevel(tuple(sorted((k, hashable(v)) for k, v in flat.items())))
