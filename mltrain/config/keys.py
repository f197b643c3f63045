"""Which settings are inert, renamed keys, and old configs brought up to date.

The one list :func:`inert_keys` (derived from the ``inert=True`` tags of the schema) is what a
resume may change, what ``mltrain-compare`` ignores when it groups runs, and what Hydra leaves
out of sweep job directory names.
"""

from __future__ import annotations

import dataclasses

from omegaconf import MISSING

from mltrain.config.schema import SECTIONS, MLTrainConfig

_INERT_SECTIONS = ("logger.",)  # every logger setting is inert (tagged field by field below)

# line is rejected with a one-line hint (mltrain.cli).
RENAMED = {"data.vocab_size": "data.bpe_vocab_size"}

# Keys replaced by a setting in another unit: old name -> (new name, how an old value converts).
# An old key on the command line is rejected naming the new one (mltrain.cli); old configs are
# converted by :func:`upgrade`.
REPLACED = {
    "train.eval_batches": (
        "train.eval_sequences",
        "validation windows, whatever the micro-batch; the old value times data.batch_size",
    ),
}


# --------------------------------------------------------------------------- tags
def _fields(schema) -> list[dataclasses.Field]:
    return list(dataclasses.fields(schema))


def inert_keys() -> tuple[str, ...]:
    """Dotted keys of every setting tagged ``inert`` (does not change training): what a resume
    may change, what run grouping ignores, what sweep directory names leave out."""
    out = [f.name for f in _fields(MLTrainConfig) if f.metadata.get("inert")]
    for section, schema in SECTIONS.items():
        out += [f"{section}.{f.name}" for f in _fields(schema) if f.metadata.get("inert")]
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
            out[key] = _hashable(v)
    return out


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, list | tuple) else v


def upgrade(config: dict) -> dict:
    """A resolved config dict written by an earlier mltrain, with renamed keys (:data:`RENAMED`)
    moved to their new names, replaced keys (:data:`REPLACED`) converted and settings added since filled in with their defaults (every new
    setting defaults to what runs did before it existed), so a run or checkpoint made before a
    setting was added compares equal to one made after it with the default (a copy;
    ``config`` is not changed)."""
    import copy

    out = copy.deepcopy(config)
    train = out.get("train")
    if isinstance(train, dict) and "eval_batches" in train:  # the sequences it evaluated
        micro = (out.get("data") or {}).get("batch_size", 16)
        train.setdefault("eval_sequences", int(train.pop("eval_batches")) * int(micro))
    for old, new in RENAMED.items():
        (s_old, k_old), (s_new, k_new) = old.split(".", 1), new.split(".", 1)
        sec = out.get(s_old)
        if isinstance(sec, dict) and k_old in sec:
            out.setdefault(s_new, {}).setdefault(k_new, sec.pop(k_old))
    for section, schema in SECTIONS.items():
        sec = out.get(section)
        if isinstance(sec, dict):
            for key, value in _plain_defaults(schema).items():
                sec.setdefault(key, value)
    return out


def _plain_defaults(schema) -> dict:
    """The schema's defaults that are plain values (no interpolation, no required field)."""
    out = {}
    for f in _fields(schema):
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
