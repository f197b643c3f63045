"""The format of ``metrics.jsonl``: one strict-JSON record per line (DESIGN.md section 5).

Non-finite floats are the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (:func:`dumps_record`),
read back as floats by :func:`read_metrics`. Written by :mod:`mltrain.train.tracking`, read by
the job on resume and by :mod:`mltrain.analysis`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


# Non-finite floats are written as these JSON strings (``NaN``/``Infinity`` literals are not
# JSON: strict parsers reject the line); :func:`read_metrics` turns them back into floats.
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _json_value(v: Any) -> Any:
    """``v`` with every non-finite float replaced by its :data:`NON_FINITE` string."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return v


def dumps_record(record: dict) -> str:
    """One ``metrics.jsonl`` line (without the newline): strict JSON, non-finite floats as
    the strings ``"nan"``, ``"inf"``, ``"-inf"`` (``allow_nan=False`` guards the rule)."""
    return json.dumps(_json_value(record), allow_nan=False)


def _from_json(record: dict) -> dict:
    """Undo :func:`dumps_record`'s strings for every key but ``level`` (a name, not a number)."""
    return {
        k: NON_FINITE[v] if k != "level" and isinstance(v, str) and v in NON_FINITE else v
        for k, v in record.items()
    }


def read_metrics(path: Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a torn last line from a killed run is ignored).

    Non-finite values come back as floats, whether written as :data:`NON_FINITE` strings or
    as the ``NaN``/``Infinity`` literals of files written before.
    """
    out = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(_from_json(rec))
    return out


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the records with ``step <= last_step`` (atomically); return the largest step the
    file held before (what the interrupted run had reached)."""
    records = read_metrics(path)
    seen = max((r.get("step", -1) for r in records), default=-1)
    keep = [r for r in records if r.get("step", -1) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(dumps_record(r) + "\n" for r in keep))
    os.replace(tmp, path)
    return seen


# ---------------------------------------------------------------- W&B's own record of a run
# An offline W&B run is a file ``wandb/offline-run-<time>-<id>/run-<id>.wandb`` that the
# wandb-core process writes in LevelDB's log format: a 7-byte header (":W&B", magic 0xBEE1
# little-endian, version 0), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32
# of the type byte then the data, little-endian uint32; length, uint16; type: 1 full, 2 first,
# 3 middle, 4 last) and a protobuf ``wandb.proto.Record`` split over one or more chunks; a
# block's last < 7 bytes are zero padding. wandb-core buffers the file, so a process killed
# with SIGKILL leaves a prefix of its records, the last one possibly torn: the reader keeps the
# records whose every chunk is complete and checksummed, and stops at the first that is not.
