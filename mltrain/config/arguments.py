"""The command line's overrides, read before and after Hydra composes them: mistakes Hydra
would accept silently or report without the argument or the fix (one preset at a time, a
setting removed with ``~``, two overrides in one argument, a range sweep Hydra expands to other
values, ``hydra.sweeper.params`` set there), what a run is named when its
preset's scheme is replaced, and the settings given there that the run's scheme ignores.

Each suggestion is written with :func:`mltrain.config.overrides.override` (Hydra's grammar) and
:func:`mltrain.config.overrides.shell_command` (the shell's), so it runs when pasted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import re
from decimal import Decimal

from omegaconf import DictConfig

from mltrain.config.keys import fields_of, not_a_setting, subsections, unread, walk
from mltrain.config.overrides import override, shell_command
from mltrain.config.schema import OPTIMIZERS, SECTIONS, MLTrainConfig
from mltrain.config.scheme import SCHEMES
from mltrain.errors import ConfigError


def overrides_of(argv: list[str]) -> list[str]:
    """The overrides among mltrain's arguments (flags such as ``-m``, ``--cfg job`` left
    out); none when the flags are malformed (Hydra reports them)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return list(get_args_parser().parse_args(argv).overrides)
    except SystemExit:
        return []


def with_overrides(argv: list[str], extra: list[str]) -> list[str]:
    """``argv`` with the overrides ``extra`` added after its own overrides. Hydra's parser
    takes the overrides as one block of positional arguments, so an override appended after
    a trailing flag (``--cfg job``, ``-m``) is refused as an unrecognized argument; the
    position kept is the last one where Hydra reads the same flags and values as in ``argv``
    and the overrides of ``argv`` followed by ``extra``. Appended when ``argv`` does not
    parse (Hydra reports it)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def parse(args: list[str]) -> dict | None:
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                return vars(parser.parse_args(args))
        except SystemExit:
            return None

    before = parse(argv)
    if before is None or not extra:
        return [*argv, *extra]
    want = {**before, "overrides": [*before["overrides"], *extra]}
    for i in range(len(argv), -1, -1):
        candidate = [*argv[:i], *extra, *argv[i:]]
        if parse(candidate) == want:
            return candidate
    return [*argv, *extra]


def _parsed(overrides: list[str]) -> list[tuple[str, object]]:
    """(argument, Hydra's ``Override``) of each override that parses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in overrides:
        try:
            out.append((arg, parser.parse_override(arg)))
        except Exception:
            continue  # Hydra reports a malformed override itself
    return out


def _choices(parsed, group: str) -> list[tuple[str, object]]:
    """The plain (not swept, not deleted) choices of ``group`` among ``parsed``."""
    return [
        (a, o)
        for a, o in parsed
        if o.key_or_group == group and not o.is_delete() and not o.is_sweep_override()
    ]


def check_one_preset(argv: list[str]) -> None:
    """Refuse two different ``experiment=`` presets on one command line (Hydra keeps the last
    one silently, so the first preset's settings are dropped without a word).

    Raises:
        ConfigError: one line naming both and the command with the last one only.
    """
    overrides = overrides_of(argv)
    given = _choices(_parsed(overrides), "experiment")
    if len({o.value() for _, o in given}) < 2:
        return
    drop = {a for a, _ in given[:-1]}
    kept = [a for a in argv if a not in drop]
    raise ConfigError(
        f"experiment= is given {len(given)} times ({', '.join(a for a, _ in given)}): a run "
        f"takes one preset (override its settings after it); with the last one: "
        + shell_command(["mltrain", *kept])
    )


def _setting_field(key: str) -> dataclasses.Field | None:
    """The schema field of the dotted ``key``, or None when ``key`` is not a setting, or an
    optimizer's (whose fields and defaults depend on the option: Hydra's message stands)."""
    section = key.partition(".")[0]
    if section == "optimizer":
        return None
    if section in SECTIONS:
        schemas = list(walk(SECTIONS[section], section + "."))
    else:
        schemas = [("", MLTrainConfig)]
    for prefix, schema in schemas:
        for f in fields_of(schema):
            if prefix + f.name == key:
                return f
    return None


def unknown_setting(key: str, schema: type | None = None) -> str | None:
    """The one line for a dotted ``key`` that is not a setting of a section the schema has
    (``train.stpes``): :func:`mltrain.config.keys.not_a_setting` with every setting and
    subsection of that section, the line :func:`mltrain.config.validate` gives a ``+key=value``
    that adds it. A section chosen among alternative schemas (``optimizer``: ``optimizer=sgd``
    or ``adamw``, :data:`mltrain.config.schema.OPTIMIZERS`) has the settings of ``schema``, the
    schema of the node the key was looked up in (OmegaConf's ``object_type``), one of those
    alternatives. None where ``key``'s section is not the schema's, or is an optimizer's
    without ``schema``."""
    prefix, _, name = key.rpartition(".")
    section = key.partition(".")[0]
    if not prefix:  # a top-level key: the top-level settings and the sections
        names = [f.name for f in fields_of(MLTrainConfig)] + list(SECTIONS)
    elif section == "optimizer" and prefix == section and schema in OPTIMIZERS.values():
        return _unknown_optimizer_setting(key, schema)
    elif section == "optimizer" or section not in SECTIONS:
        return None
    else:
        schemas = dict(walk(SECTIONS[section], section + "."))
        if prefix + "." not in schemas:
            return None
        names = [f.name for f in fields_of(schemas[prefix + "."])]
        names += list(subsections(schemas[prefix + "."]))
    return None if name in names else not_a_setting(key, names)


def optimizer_option(schema: type) -> str:
    """The option of the ``optimizer`` group that selects ``schema``, one of
    :data:`mltrain.config.schema.OPTIMIZERS` (``SGDConfig`` -> ``sgd``, ``AdamWConfig`` ->
    ``adamw``: the class name of its ``_target_``, lower case, as ``conf/optimizer/`` names)."""
    return schema._target_.rpartition(".")[2].lower()


def _optimizer_settings(schema: type) -> list[str]:
    """The settings a user sets on ``schema``: its fields less Hydra's ``_target_`` and
    ``_partial_``, which build the optimizer."""
    return [f.name for f in fields_of(schema) if not f.name.startswith("_")]


def _unknown_optimizer_setting(key: str, schema: type) -> str | None:
    """The line for ``optimizer.<name>`` that the chosen optimizer ``schema`` lacks: the other
    optimizer it belongs to (``optimizer.momentum`` under ``optimizer=adamw`` is SGD's), else
    the closest of the chosen one's settings (:func:`not_a_setting`). None when it is one."""
    name = key.rpartition(".")[2]
    if name in [f.name for f in fields_of(schema)]:
        return None
    names = _optimizer_settings(schema)
    owners = [optimizer_option(s) for s in OPTIMIZERS.values() if name in _optimizer_settings(s)]
    if owners:
        return (
            f"{key} is a setting of {' and '.join(f'optimizer={o}' for o in owners)}, not of "
            f"optimizer={optimizer_option(schema)}, which has: {', '.join(names)}"
        )
    others = {n: optimizer_option(s) for s in OPTIMIZERS.values() for n in _optimizer_settings(s)}
    near = difflib.get_close_matches(name, list(others), n=1, cutoff=0.6)
    # the chosen optimizer's own closest (not_a_setting's cutoff) first
    if not near or difflib.get_close_matches(name, names, n=1, cutoff=0.6):
        return not_a_setting(key, names)
    return (
        f"{key} is not a setting; did you mean optimizer.{near[0]} (a setting of "
        f"optimizer={others[near[0]]})? optimizer={optimizer_option(schema)} has: "
        + ", ".join(names)
    )


def check_builder_keys(argv: list[str]) -> None:
    """Refuse ``optimizer._target_`` and ``optimizer._partial_`` on the command line (set,
    added or removed): they build the optimizer its option chose, and another class under
    the option's settings composes or fails in misleading ways (SGD's momentum under
    ``torch.optim.AdamW``).

    Raises:
        ConfigError: one line naming the override and the options to choose instead.
    """
    for arg, o in _parsed(overrides_of(argv)):
        key = o.key_or_group
        if key in ("optimizer._target_", "optimizer._partial_"):
            options = " or ".join(f"optimizer={optimizer_option(s)}" for s in OPTIMIZERS.values())
            raise ConfigError(
                f"{arg}: {key} is set by the optimizer option, not a setting: choose {options}"
            )


def _sweeper_entry(key: str, value, arg: str, swept: bool) -> str:
    """One entry of ``hydra.sweeper.params`` as the override the basic sweeper makes of it: a
    string as written (``"0,1"`` sweeps 0 and 1), in Hydra's grammar when it would not parse
    so; an unquoted sweep as written in ``arg``; any other value via :func:`override`."""
    if swept:
        return f"{key}={arg.split('=', 1)[1]}"
    if isinstance(value, str) and _parsed([f"{key}={value}"]):
        return f"{key}={value}"
    return override(key, value)


def _without_cfg_request(argv: list[str]) -> list[str]:
    """``argv`` less ``--cfg``/``-c`` with its value, ``--resolve`` and ``--package``/``-p``
    with its value: a multirun cannot print its config."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--cfg", "-c", "--package", "-p"):
            skip = True
        elif not a.startswith(("--cfg=", "--package=")) and a != "--resolve":
            out.append(a)
    return out


def check_sweeper_params(argv: list[str]) -> None:
    """Refuse ``hydra.sweeper.params`` on the command line, whole (``={...}``) or one entry
    (``hydra.sweeper.params.train.seed="0,1"``), also with ``+``/``++``: the basic sweeper's
    ``params`` is null until a preset sets it, so OmegaConf fails with a traceback (a dict
    merged into null, an ``AssertionError`` for an entry), and under a preset that sets it
    with "not in struct". The sweep asked for is its entries given as overrides, which the
    line suggests in full, ``-m`` added and a ``--cfg`` request left out.

    Raises:
        ConfigError: one line with the command that sweeps the same values.
    """
    prefix = "hydra.sweeper.params"
    bad, entries = [], []
    for arg, o in _parsed(overrides_of(argv)):
        key = o.key_or_group
        if o.is_delete() or not (key == prefix or key.startswith(prefix + ".")):
            continue
        value = o.value()
        if key == prefix:
            if not isinstance(value, dict) or not value:
                continue  # null or {}: Hydra takes them
            items = [(k, v, False) for k, v in value.items()]
        else:
            items = [(key.removeprefix(prefix + "."), value, o.is_sweep_override())]
        bad.append(arg)
        entries += [_sweeper_entry(k, v, arg, swept) for k, v, swept in items]
    if not bad:
        return
    rest = _without_cfg_request([a for a in argv if a not in bad])
    command = with_overrides(rest, list(dict.fromkeys(entries)))
    if not any(a in ("-m", "--multirun") for a in command):
        command = ["-m", *command]
    raise ConfigError(
        f"{bad[0]}: hydra.sweeper.params is set by presets (conf/experiment/*.yaml), not on the "
        "command line; give its entries as overrides: " + shell_command(["mltrain", *command])
    )


def removed_optimizer_setting(key: str, schema: type | None) -> str | None:
    """The line for ``~optimizer.<name>`` (Hydra: "AdamWConfig (DictConfig) does not support
    deletion"), as :func:`check_deletions` gives for other sections' settings: set it instead,
    to the chosen optimizer's (``schema``'s) default. None when ``key`` is not one of its
    settings or ``schema`` is not an optimizer's."""
    section, _, name = key.partition(".")
    if section != "optimizer" or schema not in OPTIMIZERS.values():
        return None
    f = next((f for f in fields_of(schema) if f.name == name and not name.startswith("_")), None)
    if f is None:
        return None
    return (
        f"~{key}: {key} is a setting, which cannot be removed; set it instead, e.g. to "
        f"optimizer={optimizer_option(schema)}'s default: "
        + shell_command([override(key, _default(f))])
    )


def _default(f: dataclasses.Field):
    """The default of the schema field ``f`` (None when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def check_deletions(argv: list[str]) -> None:
    """Refuse ``~key`` for a setting of the schema with what to write instead: Hydra cannot
    remove a typed setting (a null one it reports as "does not exist", a set one as "does not
    support deletion"), but it can be set, a nullable one to ``null``.

    Raises:
        ConfigError: one line naming the setting and a replacement that composes.
    """
    for arg, o in _parsed(overrides_of(argv)):
        if not o.is_delete():
            continue
        key = o.key_or_group
        f = _setting_field(key)
        if f is None:
            continue  # a group (~experiment) or an unknown key: Hydra's own message
        default = _default(f)
        if default is None or "None" in str(f.type):
            how = f"leave it unset with {shell_command([override(key, None)])}"
        else:
            how = f"set it instead, e.g. to the schema's default: {shell_command([override(key, default)])}"
        raise ConfigError(f"{arg}: {key} is a setting, which cannot be removed; {how}")


def joined_overrides(bad: str, argv: list[str]) -> str | None:
    """When the override ``bad`` that Hydra could not parse is several overrides joined by
    spaces (a quoting slip, ``'train.steps=3 train.seed=1'``), what to say: the command with
    each of them its own argument. None otherwise."""
    parts = bad.split()
    if len(parts) < 2 or len(_parsed(parts)) < len(parts) or not all("=" in p for p in parts):
        return None
    fixed: list[str] = []
    for a in argv:
        fixed.extend(parts if a == bad else [a])
    return (
        f"it holds {len(parts)} overrides in one argument (a quoting slip?): give each its own: "
        + shell_command(["mltrain", *fixed])
    )


def variant_name(argv: list[str]) -> str | None:
    """``experiment_name=<preset>+coarsening=<option>`` when the command line replaces the
    coarsening option of an ``experiment=`` preset (the run then is not the preset's scheme,
    and its directory and W&B group say so); None when the preset's own option runs, the name
    is given, or there is nothing to name."""
    from mltrain.config.compose import compose

    overrides = overrides_of(argv)
    parsed = _parsed(overrides)
    coarse = _choices(parsed, "coarsening")
    if not _choices(parsed, "experiment") or not coarse:
        return None
    if any(o.key_or_group == "experiment_name" for _, o in parsed):
        return None
    skip = {a for a, _ in coarse} | {a for a, o in parsed if o.is_sweep_override()}
    try:  # the preset as it is, without the replaced option
        cfg = compose([a for a in overrides if a not in skip], hydra=True)
        preset_option = cfg.hydra.runtime.choices.coarsening
    except Exception:
        return None  # Hydra reports what does not compose
    option = coarse[-1][1].value()
    if option == preset_option:
        return None
    return override("experiment_name", f"{cfg.experiment_name}+coarsening={option}")


def preset_sweep_dirs(argv: list[str]) -> list[str]:
    """The overrides that keep a multirun over presets (``-m experiment=a,b``) in one sweep
    directory: Hydra names each job's sweep directory from that job's config, and the default
    name ends with ``${experiment_name}``, so each preset's jobs went to a directory of their
    own and the sweep's ``multirun.yaml`` to a third (``..._default``). The directory is named
    after the presets (``<time>_a+b``; ``experiments`` for a ``glob``) and each job directory
    after its preset (``0_a_<overrides>``). Settings the command line gives itself are kept;
    nothing is added when the presets are not swept.
    """
    from hydra.core.override_parser.types import ChoiceSweep

    parsed = _parsed(overrides_of(argv))
    swept = [o for _, o in parsed if o.key_or_group == "experiment" and o.is_sweep_override()]
    if not swept:
        return []
    given = {o.key_or_group for _, o in parsed}
    value = swept[-1].value()
    names = "+".join(map(str, value.list)) if isinstance(value, ChoiceSweep) else "experiments"
    out = []
    if "hydra.sweep.dir" not in given:
        out.append(
            "hydra.sweep.dir='${oc.env:MLTRAIN_OUTPUTS,outputs}/multirun/"
            "${now:%Y-%m-%d_%H-%M-%S.%f}_" + re.sub(r"[^\w.+-]", "_", names) + "'"
        )
    if "hydra.sweep.subdir" not in given:
        out.append(
            "hydra.sweep.subdir='${mltrain_job_subdir:${hydra.job.num}_${experiment_name},"
            "${hydra.job.override_dirname}}'"
        )
    return out


def unread_notice(cfg: DictConfig, overrides: list[str]) -> str | None:
    """One line naming the command line's overrides of coarsening settings that the run's
    scheme does not read (:func:`mltrain.config.keys.unread`), or None. Presets and group
    options are not named: they set sections for several schemes on purpose."""
    c = cfg.coarsening
    ignored = [
        arg
        for arg, o in _parsed(overrides)
        if not o.is_delete() and unread(o.key_or_group, c.scheme, c.hierarchy.name)
    ]
    if not ignored:
        return None
    reads = SCHEMES.get(c.scheme).reads if c.scheme in SCHEMES else ()
    read = [f"coarsening.{s}" for s in reads]
    return (
        f"{', '.join(ignored)}: not read by coarsening.scheme={c.scheme} (it reads "
        f"{', '.join(read) if read else 'no coarsening section'}): ignored"
    )


_RANGE = re.compile(
    r"^([^=]+)=\s*(sort\(\s*)?range\(([^()]*)\)\s*"
    r"(?:,\s*reverse\s*=\s*(\w+)\s*)?(\))?\s*$"
)


def _meant(args: str) -> list[Decimal]:
    """The values of ``range(args)`` as written, in exact decimal arithmetic (``range(0.1,
    0.4,0.1)`` is 0.1, 0.2, 0.3: the stop is exclusive, as Python's ``range``)."""
    nums = [Decimal(x.strip()) for x in args.split(",")]
    start, stop, step = (nums + [Decimal(1)])[:3] if len(nums) >= 2 else (0, nums[0], 1)
    if step == 0:
        raise ValueError("step 0")
    out, x = [], Decimal(start)
    while (x < stop) if step > 0 else (x > stop):
        out.append(x)
        x += step
    return out


def check_range_sweeps(args: list[str]) -> None:
    """Refuse ``key=range(...)`` and ``key=sort(range(...))`` sweeps that hydra-core 1.3.8
    expands to other values than the range written: ``sort(range(10,0,-3))`` launches 3,6,9,12
    instead of 1,4,7,10 (a range whose stop the step does not land on, sorted; or sorted with
    ``reverse=true``), and a float range accumulates rounding errors (``range(0.1,0.4,0.1)``
    launches 0.1, 0.2, 0.30000000000000004 and 0.4, past the exclusive stop). Ranges Hydra
    expands exactly (integers, ``range(0,1,0.25)``) pass.

    Raises:
        ConfigError: one line with the override, what Hydra would launch, and the values to
            write instead.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        m = _RANGE.match(arg)
        if not m or bool(m.group(2)) != bool(m.group(5)):
            continue
        try:
            meant = _meant(m.group(3))
            launched = list(parser.parse_override(arg).sweep_iterator())
        except Exception:
            continue  # Hydra reports a malformed override itself
        if m.group(2):
            meant.sort(reverse=(m.group(4) or "").lower() == "true")
        if len(meant) != len(launched) or any(float(a) != b for a, b in zip(meant, launched)):
            why = (
                "a bug of hydra-core 1.3's sort(range(...))"
                if m.group(2)
                else "a float range accumulates rounding errors"
            )
            raise ConfigError(
                f"{arg}: hydra-core expands this to {','.join(map(str, launched))} ({why}); "
                f"write the values instead: {m.group(1)}={','.join(map(str, meant))}"
            )
