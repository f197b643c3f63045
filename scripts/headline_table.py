"""The headline table of docs/results.md from mltrain-compare's judge output.

Reads the per-run ``frontier.csv`` files that ``mltrain-compare --frontier`` writes and prints a
markdown table, one row per scheme and budget: seeds, FLOPs spent (with head), mean final
validation loss, r = C / C*(L) with head and non-embedding (mean, min–max over seeds; a bound
keeps its sign), the gap at equal FLOPs (with head) and the wall-clock ratio: the scheme's mean
wall time (``perf/wall_s`` of its last record) over that of a reference single-level run at the
same budget (``--wall-ref``: run-name pattern with ``{b}`` for the budget tag; the runs ran side
by side, single-threaded, on the same machine). A scheme is the run directory name without its
seed suffix ``_s<n>`` and budget tag ``_Q``/``_H``/``_B``/``_D`` (scripts/results.sh names runs
so); ``--runs`` is the directory holding the run directories.

    python scripts/headline_table.py docs/results/second_edition/*/frontier.csv --runs outputs/study
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path

NAME = re.compile(r"^(?P<scheme>.+?)(?:_(?P<budget>[QHBD]))?_s(?P<seed>\d+)$")
BUDGET_ORDER = {"Q": 0, "H": 1, "B": 2, "D": 3}


def wall_s(run_dir: Path) -> float | None:
    """``perf/wall_s`` of the run's last record (seconds), None if absent."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    last = None
    for line in path.open():
        if line.strip():
            last = json.loads(line)
    return None if last is None else last.get("perf/wall_s")


def fmt(vals: list[tuple[str, float]], spec: str = ".2f") -> str:
    """Mean (min–max) of (kind, value) pairs; a bound when any value is one."""
    kinds = {k for k, _ in vals}
    xs = [v for _, v in vals]
    mean = sum(xs) / len(xs)
    sign = "" if kinds == {"="} else (next(iter(kinds - {"="})) + " ")
    if len(xs) == 1:
        return f"{sign}{mean:{spec}}"
    return f"{sign}{mean:{spec}} ({min(xs):{spec}}–{max(xs):{spec}})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, nargs="+")
    ap.add_argument("--runs", type=Path, required=True, help="directory of the run directories")
    ap.add_argument("--wall-ref", default="wsd_{b}_lr2e-3_s*", help="reference runs per budget")
    args = ap.parse_args(argv)

    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for f in args.csv:
        for r in csv.DictReader(f.open()):
            m = NAME.match(r["run"])
            if m is None:
                continue
            rows[(m["scheme"], m["budget"] or "B")].append(r)
    print(
        "| scheme | budget | seeds | FLOPs (with head) | final val loss | r (with head) "
        "| r (non-embed) | gap at equal FLOPs | wall-clock ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (scheme, b), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], BUDGET_ORDER[kv[0][1]])):
        walls = [w for r in rs if (w := wall_s(args.runs / r["run"])) is not None]
        refs = [
            w for d in args.runs.glob(args.wall_ref.format(b=b)) if (w := wall_s(d)) is not None
        ]
        wall = (
            f"{(sum(walls) / len(walls)) / (sum(refs) / len(refs)):.2f}" if walls and refs else "—"
        )
        flops = sum(float(r["flops"]) for r in rs) / len(rs)
        loss = [("=", float(r["final_val_loss"])) for r in rs]
        print(
            f"| {scheme} | {b} | {len(rs)} | {flops:.2e} | {fmt(loss, '.3f')} "
            f"| {fmt([(r['r_head_kind'], float(r['r_head'])) for r in rs])} "
            f"| {fmt([(r['r_nonembed_kind'], float(r['r_nonembed'])) for r in rs])} "
            f"| {fmt([(r['gap_head_kind'], float(r['gap_head'])) for r in rs], '+.3f')} | {wall} |"
        )


if __name__ == "__main__":
    main()
