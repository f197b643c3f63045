"""Commands that mltrain prints for a user to paste: each value written in Hydra's override
grammar, each argument quoted for a POSIX shell (:func:`shlex.join`).

A path such as ``data/dätä 実験`` becomes ``'data.paths=['"'"'data/dätä 実験'"'"']'`` on the
shell line, which the shell hands to Hydra as ``data.paths=['data/dätä 実験']``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

# a string Hydra reads back as the same string without quotes
_PLAIN = re.compile(r"^[A-Za-z_/.][\w/.:-]*$")
_KEYWORDS = {"true", "false", "null", "inf", "nan", "-inf", "+inf"}


def hydra_value(value) -> str:
    """``value`` (None, bool, int, float, str, or a list / tuple / dict of them) in Hydra's
    override grammar, so that ``key=<this>`` sets exactly ``value``: strings other than plain
    identifiers and paths are single-quoted, quotes and the backslashes Hydra would read as
    escapes escaped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    s = str(value)
    if _PLAIN.match(s) and s.lower() not in _KEYWORDS:
        return s
    # Hydra unescapes only backslashes before a quote or at the end of a quoted string
    s = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, s)
    return "'" + s.replace("'", "\\'") + "'"


def override(key: str, value) -> str:
    """``key=value`` in Hydra's grammar (:func:`hydra_value`)."""
    return f"{key}={hydra_value(value)}"


def shell_command(args: Iterable[str]) -> str:
    """The arguments as one line a POSIX shell splits back into exactly ``args``."""
    return shlex.join(str(a) for a in args)
