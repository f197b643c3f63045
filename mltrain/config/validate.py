"""Validation of a composed config: each field's own check (declared next to the field with
:func:`mltrain.config.schema.setting`) and the cross-field rules, each failure one line
(:class:`mltrain.errors.ConfigError`) naming the setting and what is allowed; and the
conversion to typed objects (:func:`typed`)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from mltrain.config.arguments import unknown_setting
from mltrain.config.keys import fields_of, not_a_setting, subsections
from mltrain.config.registries import names_of
from mltrain.config.schema import OPTIMIZERS, SECTIONS, MLTrainConfig
from mltrain.config.scheme import SCHEMES
from mltrain.errors import ConfigError
from mltrain.registry import Registry


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _allowed(choices) -> tuple[str, ...]:
    if isinstance(choices, Registry):  # filled by the module that owns the values
        return names_of(choices)
    return tuple(choices)


def _check_section(node: DictConfig, schema, prefix: str) -> None:
    """Unknown keys (Hydra lets ``+key=value`` add them; the line of a misspelt setting,
    :func:`mltrain.config.keys.not_a_setting`), then each field's choices and check, then the
    nested sections' (``coarsening.vcycle`` ...)."""
    fields = fields_of(schema)
    sections = subsections(schema)
    allowed = [f.name for f in fields] + list(sections)
    for key in node.keys():
        if key not in allowed:  # an optimizer's: its own settings, or the other one's
            line = unknown_setting(f"{prefix}{key}", schema) if prefix == "optimizer." else None
            raise ConfigError(line or not_a_setting(f"{prefix}{key}", allowed))
    for f in fields:
        if f.metadata.get("choices") is None and f.metadata.get("check") is None:
            continue
        v = OmegaConf.select(node, f.name, throw_on_missing=True)
        key = f"{prefix}{f.name}"
        if f.metadata.get("choices") is not None:
            allowed_values = _allowed(f.metadata["choices"])
            _require(
                v in allowed_values,
                f"{key}={v!r} is not allowed: choose one of {', '.join(allowed_values)}",
            )
        check = f.metadata.get("check")
        if check is not None and v is not None:
            what = check(list(v) if OmegaConf.is_list(v) else v)
            if what is not None:
                shown = list(v) if OmegaConf.is_list(v) else (repr(v) if isinstance(v, str) else v)
                _require(False, f"{key}={shown} is not allowed: {_must(what)}")
    for name, sub in sections.items():
        _check_section(node[name], sub, f"{prefix}{name}.")


def _must(what: str) -> str:
    return what if what.startswith(("choose", "give")) else f"must be {what}"


def validate(cfg: DictConfig) -> None:
    """Check every field against its schema entry (choices, range) and the cross-field rules.

    Types and key names are already enforced by Hydra while composing; this adds what a type
    cannot say. Hierarchy rules that depend on the depth (``even_odd`` needs an even number
    of blocks, ...) are checked by :func:`mltrain.levels.base.build_hierarchy`.

    Registry-backed values (hierarchies, schedules, corpora, schemes, ...) are checked against
    :mod:`mltrain.config.registries` and :data:`mltrain.config.scheme.SCHEMES`, which the
    composition root fills first (``import mltrain.schemes``).

    Raises:
        ConfigError: one line naming the setting, its value and what is allowed.
        RegistryNotFilled: a registry's owner was not imported (a programming error).
    """
    _check_section(cfg, MLTrainConfig, "")
    for section, schema in SECTIONS.items():
        _check_section(cfg[section], schema, section + ".")
    _require(
        not OmegaConf.is_missing(cfg, "optimizer") and cfg.optimizer is not None,
        "optimizer is not set: choose optimizer=sgd or optimizer=adamw",
    )
    o = cfg.optimizer
    _require(
        isinstance(o, DictConfig) and "lr" in o,
        "optimizer: choose optimizer=sgd or optimizer=adamw",
    )
    schema = OPTIMIZERS.get(o.get("_target_"))
    if schema is not None:
        _check_section(o, schema, "optimizer.")

    m, s, t, d = cfg.model, cfg.schedule, cfg.train, cfg.data
    _require(
        m.n_embd % m.n_head == 0,
        f"model.n_embd={m.n_embd} must be divisible by model.n_head={m.n_head}",
    )
    _require(
        m.seq_len <= m.block_size,
        f"model.seq_len={m.seq_len} is larger than the model's context "
        f"model.block_size={m.block_size}: use seq_len <= block_size",
    )
    _require(
        t.target_flops is not None or s.warmup_steps < t.steps,
        f"schedule.warmup_steps={s.warmup_steps} is not allowed: must be >= 0 and < "
        f"train.steps={t.steps}: add schedule.warmup_steps={max(0, t.steps // 10)}",
    )
    _require(
        t.target_flops is not None or float(t.flops_scale) == 1.0,
        f"train.flops_scale={t.flops_scale} scales train.target_flops, which is not set: "
        "set train.target_flops=<FLOPs> or leave train.flops_scale at 1",
    )
    _check_scheme(cfg.coarsening)
    if d.name == "text_files":
        _require(
            len(d.paths) > 0,
            "data.paths is empty: data=text_files needs data.paths=[file_or_dir,...]",
        )


def _check_scheme(c: DictConfig) -> None:
    """The explicit ``coarsening.scheme`` against the sections it reads: the chosen scheme's
    own check, then every other scheme's check of its unused sections (in registry order)."""
    SCHEMES.get(c.scheme).check(c)
    for name in SCHEMES:
        if name != c.scheme:
            SCHEMES.get(name).check_unused(c)


def typed(cfg: DictConfig) -> MLTrainConfig:
    """The validated config as dataclass objects (``cfg.model`` -> :class:`ModelConfig`, ...;
    the optimizer as :class:`SGDConfig` or :class:`AdamWConfig`), interpolations resolved."""
    return OmegaConf.to_object(cfg)
