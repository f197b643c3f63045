"""Hydra's and OmegaConf's composition errors as one line (``mltrain: error: ...``), built from
the exceptions' fields rather than their tracebacks: a missing option lists the options, a
misspelt setting gets :func:`mltrain.config.arguments.unknown_setting`'s line, a renamed or
replaced key names its new name, and a missing optional plugin says how to install it.
"""

from __future__ import annotations

from omegaconf.errors import OmegaConfBaseException

from mltrain.config import arguments as A
from mltrain.config.overrides import shell_command


def one_line(err: BaseException, argv: list[str] | None = None) -> str:
    """A Hydra/OmegaConf composition error (or an OSError) as one line, built from the
    exceptions' fields: a missing group option lists the available options (schema nodes
    hidden); an override error gives the override, then the cause's message (its first line);
    an override that does not parse is named, and when it is several joined by spaces the
    command with each its own argument (``argv``: the command line's arguments); a renamed
    key names its new name; a missing optional plugin says how to install it."""
    from hydra.errors import MissingConfigException, OverrideParseException

    from mltrain.config.keys import RENAMED, REPLACED

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group = err.missing_cfg_file.rsplit("/", 1)[0]
        options = [o for o in err.options if not o.endswith("_schema")]
        msg = (
            f"Could not find '{err.missing_cfg_file}'; available options in '{group}': "
            + ", ".join(options)
        )
    elif (unknown := _unknown_key(err)) is not None:
        msg = unknown
    elif (removed := _removed_optimizer_setting(err)) is not None:
        msg = removed
    else:
        parts = []
        for e in (err, err.__cause__):
            if e is None:
                continue
            text = (e.msg if isinstance(e, OmegaConfBaseException) and e.msg else str(e)) or ""
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            parts.append(first.replace("Error merging override ", "").rstrip(".:"))
            key = getattr(e, "full_key", None)
            if key in RENAMED:
                parts.append(f"{key} was renamed {RENAMED[key]}: use {RENAMED[key]}=...")
            if key in REPLACED:
                new, how = REPLACED[key]
                parts.append(f"{key} was replaced by {new} ({how}): use {new}=...")
        msg = "; ".join(dict.fromkeys(parts))
    if isinstance(err, OverrideParseException) and err.override:
        hint = A.joined_overrides(err.override, argv or [])
        msg = f"{shell_command([err.override])}: {msg}" + (f"; {hint}" if hint else "")
    for plugin, extra in (("hydra/sweeper/optuna", "optuna"), ("hydra/launcher/submitit", "slurm")):
        if plugin in msg:
            msg += f' (an optional plugin: pip install "mltrain[{extra}]" or make install-extras)'
    return msg


def _unknown_key(err: BaseException) -> str | None:
    """The one line of :func:`mltrain.config.arguments.unknown_setting` when ``err`` (or its
    cause) is OmegaConf's "Key ... not in ..." for a misspelt setting, else None (a renamed or
    replaced key keeps its own message). The schema OmegaConf looked the key up in names the
    settings of a section with alternative schemas (``optimizer.lrr`` under ``optimizer=sgd``:
    SGD's)."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from mltrain.config.keys import RENAMED, REPLACED

    for e in (err, err.__cause__):
        key = getattr(e, "full_key", None)
        if key in RENAMED or key in REPLACED:  # one_line names its new name
            return None
        if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and key:
            return A.unknown_setting(key, getattr(e, "object_type", None))
    return None


def _removed_optimizer_setting(err: BaseException) -> str | None:
    """The one line of :func:`mltrain.config.arguments.removed_optimizer_setting` when ``err``
    (or its cause) is OmegaConf's "... does not support deletion" for ``~optimizer.<setting>``
    (the other sections' settings are refused before Hydra composes: ``check_deletions``)."""
    from omegaconf.errors import ConfigTypeError

    for e in (err, err.__cause__):
        if isinstance(e, ConfigTypeError) and "deletion" in str(e):
            key = getattr(e, "full_key", None) or ""
            return A.removed_optimizer_setting(key, getattr(e, "object_type", None))
    return None
