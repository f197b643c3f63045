"""Which settings are inert, renamed keys, and old configs brought up to date.

The one list :func:`inert_keys` (derived from the ``inert=True`` tags of the schema) is what a
resume may change, what ``mltrain-compare`` ignores when it groups runs, and what Hydra leaves
out of sweep job directory names.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence

from omegaconf import MISSING

from mltrain.config.schema import SECTIONS, MLTrainConfig
from mltrain.config.scheme import SCHEMES

_INERT_SECTIONS = ("logger.",)  # every logger setting is inert (tagged field by field below)

# line is rejected with a one-line hint (mltrain.cli).
RENAMED = {
    "data.vocab_size": "data.bpe_vocab_size",
    # the coarsening sections (one per concern) and the explicit coarsening.scheme
    "coarsening.name": "coarsening.hierarchy.name",
    "coarsening.step_scale": "coarsening.hierarchy.step_scale",
    "coarsening.factor": "coarsening.hierarchy.factor",
    "coarsening.depth": "coarsening.hierarchy.depth",
    "coarsening.blocks": "coarsening.hierarchy.blocks",
    "coarsening.step_sizes": "coarsening.hierarchy.step_sizes",
    **{
        f"coarsening.{k}": f"coarsening.vcycle.{k}"
        for k in (
            "delta",
            "coarse_steps",
            "window",
            "start",
            "every",
            "window_fraction",
            "combine",
            "fine_step",
            "coarse_lr_scale",
        )
    },
    # read by staged runs too: they moved from the V-cycle's section to the hierarchy's
    **{
        f"coarsening.{section}{k}": f"coarsening.hierarchy.{k}"
        for section in ("vcycle.", "")  # the flat name last: the oldest, RENAMED inverted keeps it
        for k in ("optimizer_state", "train_shared")
    },
    **{
        f"coarsening.{k}": f"coarsening.corrections.{k}"
        for k in ("tau", "line_search", "line_search_max", "line_search_batch", "momentum")
    },
    "coarsening.stages": "coarsening.stages.levels",
    "coarsening.stage_shares": "coarsening.stages.shares",
    "coarsening.grow_init": "coarsening.stages.grow_init",
    "coarsening.grow_warmup": "coarsening.stages.grow_warmup",
    "coarsening.patch_size": "coarsening.patch.size",
    "coarsening.raptr_blocks": "coarsening.raptr.blocks",
    "coarsening.raptr_scale": "coarsening.raptr.scale",
}

# Keys replaced by a setting in another unit: old name -> (new name, how an old value converts).
# An old key on the command line is rejected naming the new one (mltrain.cli); old configs are
# converted by :func:`upgrade`.
REPLACED = {
    "train.eval_batches": (
        "train.eval_sequences",
        "validation windows, whatever the micro-batch; the old value times data.batch_size",
    ),
}


def unread(key: str, scheme: str | None, hierarchy: str | None = None) -> bool:
    """Whether the dotted coarsening setting ``key`` is one that a run of
    ``coarsening.scheme=scheme`` does not read (its :attr:`Scheme.reads
    <mltrain.config.scheme.Scheme.reads>`, the one table of it: mltrain-compare's grouping and
    the command line's notice both ask this function): a staged run's
    V-cycle settings, a V-cycle run's stages, any coarsening section of a single-level run.
    The hierarchy named ``hierarchy`` reads the section of its own name (``coarsening.raptr``
    for ``raptr``) whatever the scheme. Keys outside ``coarsening.`` and unknown schemes: False."""
    if scheme not in SCHEMES or not key.startswith("coarsening.") or key == "coarsening.scheme":
        return False
    s = SCHEMES.get(scheme)
    section = key.split(".")[1]
    return section not in s.reads and section != hierarchy


# --------------------------------------------------------------------------- tags
def fields_of(schema) -> list[dataclasses.Field]:
    """The settings of ``schema`` (a schema dataclass of :mod:`mltrain.config.schema`, or an
    instance of one) as its :class:`dataclasses.Field` objects, in declaration order; its
    nested sections (:func:`subsections`) are left out.

    Raises:
        TypeError: ``schema`` is not a dataclass (:func:`dataclasses.fields`).
    """
    return [f for f in dataclasses.fields(schema) if not _is_section(f)]


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
        f.default_factory
    )


def subsections(schema) -> dict[str, type]:
    """Nested sections of ``schema`` by field name (``coarsening.vcycle`` ...)."""
    return {f.name: f.default_factory for f in dataclasses.fields(schema) if _is_section(f)}


def walk(schema, prefix: str = ""):
    """(dotted prefix, schema) of ``schema`` and of every nested section, depth first."""
    yield prefix, schema
    for name, sub in subsections(schema).items():
        yield from walk(sub, f"{prefix}{name}.")


def not_a_setting(key: str, names: Sequence[str]) -> str:
    """The one line for the dotted ``key``, which is none of ``names`` (the settings and
    subsections of its section): the closest of them (``difflib``), then all of them, as in
    ``train.stpes is not a setting; did you mean train.steps? train has: steps, ...`` (a
    top-level key's section is "the top level")."""
    prefix, _, name = key.rpartition(".")
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    meant = f"did you mean {' or '.join(f'{prefix}.{n}' if prefix else n for n in near)}? "
    where = prefix or "the top level"
    return f"{key} is not a setting; {meant if near else ''}{where} has: {', '.join(names)}"


def inert_keys() -> tuple[str, ...]:
    """Dotted keys of every setting tagged ``inert`` (does not change training): what a resume
    may change, what run grouping ignores, what sweep directory names leave out."""
    out = [f.name for f in fields_of(MLTrainConfig) if f.metadata.get("inert")]
    for section, schema in SECTIONS.items():
        for prefix, sub in walk(schema, section + "."):
            out += [f"{prefix}{f.name}" for f in fields_of(sub) if f.metadata.get("inert")]
    return tuple(out)


def job_name_excluded_keys() -> list[str]:
    """Overrides left out of sweep job directory names (``hydra.job.config.override_dirname.
    exclude_keys``): the inert settings, the preset and mode groups, the logger group, the
    data paths (long; kept in the job's ``.hydra/overrides.yaml``) and Hydra's own dirs."""
    return [
        *inert_keys(),
        "experiment",
        "mode",
        "logger",
        "data.paths",
        "hydra.run.dir",
        "hydra.sweep.dir",
    ]


def is_inert(key: str) -> bool:
    """Whether the dotted ``key`` is a setting that does not change training."""
    return key in _INERT or key.split(".", 1)[0] + "." in _INERT_SECTIONS


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config as ``{"dotted.key": value}`` (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``);
    lists become tuples, so values are hashable and comparable."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = hashable(v)
    return out


def hashable(v):
    """``v`` with lists (nested too) as tuples, so config values can be compared and hashed."""
    return tuple(hashable(x) for x in v) if isinstance(v, list | tuple) else v


def upgrade(config: dict) -> dict:
    """A resolved config dict written by an earlier mltrain, with renamed keys (:data:`RENAMED`)
    moved to their new names, replaced keys (:data:`REPLACED`) converted and settings added since filled in with their defaults (every new
    setting defaults to what runs did before it existed), so a run or checkpoint made before a
    setting was added compares equal to one made after it with the default (a copy;
    ``config`` is not changed)."""
    import copy

    out = copy.deepcopy(config)
    _upgrade_coarsening(out)
    train = out.get("train")
    if isinstance(train, dict) and "eval_batches" in train:  # the sequences it evaluated
        micro = (out.get("data") or {}).get("batch_size", 16)
        train.setdefault("eval_sequences", int(train.pop("eval_batches")) * int(micro))
    for old, new in RENAMED.items():
        value = _pop(out, old)
        if value is not _ABSENT:
            _set_default(out, new, value)
    for section, schema in SECTIONS.items():
        if isinstance(out.get(section), dict):
            for prefix, sub in walk(schema, section + "."):
                for key, value in _plain_defaults(sub).items():
                    _set_default(out, prefix + key, value)
    return out


_ABSENT = object()


def _pop(d: dict, dotted: str):
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.get(p)
        if not isinstance(d, dict):
            return _ABSENT
    if isinstance(d.get(leaf), dict):  # a section of the current layout, not an old key
        return _ABSENT
    return d.pop(leaf, _ABSENT)


def _set_default(d: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            return
    d.setdefault(leaf, value)


def _upgrade_coarsening(config: dict) -> None:
    """A flat ``coarsening`` section (before the sections and the explicit scheme) gets its
    scheme: ``stages`` when it listed stages, ``vcycle`` when it named a hierarchy, else
    ``single_level``; the hierarchy options that only named a staged preset (``grow``,
    ``grow_recursive``) become the hierarchy they used (``odd``, ``recursive``)."""
    c = config.get("coarsening")
    if not isinstance(c, dict) or "scheme" in c or "hierarchy" in c:
        return
    name = c.get("name", "none")
    if c.get("stages"):
        c["scheme"] = "stages"
    else:
        c["scheme"] = "single_level" if name == "none" else "vcycle"
    c["name"] = {"grow": "odd", "grow_recursive": "recursive"}.get(name, name)


def _plain_defaults(schema) -> dict:
    """The schema's defaults that are plain values (no interpolation, no required field)."""
    out = {}
    for f in fields_of(schema):
        if f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        else:
            continue
        if v == MISSING or (isinstance(v, str) and "${" in v):
            continue
        out[f.name] = v
    return out


_INERT = frozenset(inert_keys())
