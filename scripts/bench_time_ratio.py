"""The third edition's time ratio (issue 30, part 5): each scheme's CPU time over the envelope's
at equal loss, from the CPU time per step of every level's path measured side by side.

    python scripts/bench_time_ratio.py docs/results/third_edition/adamw/envelope.csv \\
        [docs/results/third_edition/sgd/envelope.csv] --runs docs/results/third_edition/runs \\
        --out docs/results/third_edition/time [--rounds 7]
    python scripts/bench_time_ratio.py --family --out docs/results/third_edition/time  # levels only

``--family`` times the levels of the third edition's presets (:data:`FAMILY`: the sizes 1-12
blocks, each scheme family's levels at d=48) without runs: OUT/levels.csv only.

Measure (one process, one thread, interleaved): a job is built from the recorded overrides of
one run per envelope size (``env_L<n>_*``, ``sgd_L<n>_*``) and per scheme and set of levels (the
first run named ``SCHEME_b<k>_s<n>`` in the CSVs with those overrides, less its seed and budget
settings: growth to the best size ends at another depth per budget, a job ``SCHEME@b<k>`` each).
For every level
of every job, ``Trainer.train_step(level)`` (forward, backward and optimizer step of that level's
path: its blocks, its width, its patching; RaPTr's random paths of its level's length) is timed
in alternating rounds (scripts/benchlib.py) by the process's CPU time; the median per step is
written with the level's FLOPs per step (the plan's, with head) to OUT/levels.csv:
``job,level,blocks,width_factor,patch,step_flops,cpu_s_per_step,cpu_s_per_gflop``.

Ratio, per judged run ``SCHEME_b<k>_s<n>`` of the CSVs (mltrain-compare's envelope.csv):

    T_scheme = sum over levels of steps_per_level[level] (run.json) x cpu_s_per_step[level]
    T_env    = C*_env(L) x cpu_s_per_flop(best size at that budget),  C*_env(L) = flops / r_env
    time ratio = T_scheme / T_env     (below 1: the scheme reaches its loss in less CPU time)

with ``r_env`` the CSV's ``r_env_head`` (FLOPs with head). The mean over seeds per scheme and
budget goes to OUT/time.csv (``scheme,budget,time_ratio,time_ratio_kind``; scripts/third_headline.py
--time).
Both sides count the optimizer steps' compute only: evaluation, checkpoints and a scheme's
restriction and prolongation (a copy of the parameters per phase) are left out. A run whose
r_env is a bound (``<``/``>``: its loss is outside the envelope's range) gets a bound on its
ratio, the same way, and so does the mean over seeds that holds one; the
envelope's side uses the best size at the run's budget, which can differ from the size that
reaches the run's loss first (the sizes' CPU time per FLOP differ by up to 1.37x here, 1 block
against 12: docs/results/third_edition/time/levels.csv).

Raises SystemExit with one line when a run named in a CSV has no record under --runs, or a
level of a run is not among its job's levels.
"""

from __future__ import annotations

import argparse
import csv
import functools
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import interleaved, make_job  # noqa: E402

from mltrain.runrecord import read_run_record  # noqa: E402

NAME = re.compile(r"^(?P<scheme>.+?)_(?P<budget>b[1248])_s(?P<seed>\d+)$")
SIZE = re.compile(r"^(?P<n>\d+) blocks?,")  # mltrain.analysis.sizes.size_label
# the third edition's family (scripts/results_third.sh FAM) and each scheme family's levels
FAM = [
    "model=third_d48",
    "data.bpe_vocab_size=2048",
    "data.batch_size=16",
    "train.target_flops=3.2e13",
    "train.eval_sequences=128",
]
FAMILY = {
    **{
        f"env_L{n}": ["experiment=third_envelope", *FAM, f"model.n_layer={n}"]
        for n in (1, 2, 3, 4, 6, 12)
    },
    "grow": ["experiment=grow_recursive", *FAM],
    "wd": ["experiment=grow_width_depth", *FAM, "coarsening.hierarchy.width_factors=[1,3]"],
    "vcycle": ["experiment=paper_small", "optimizer=adamw", "schedule=wsd", *FAM],
    "width": ["experiment=width_vcycle", *FAM, "coarsening.hierarchy.width_factor=3"],
    "patch_K2": ["experiment=patch_stage", "schedule=wsd", *FAM, "coarsening.patch.size=2"],
    "patch_K4": ["experiment=patch_stage", "schedule=wsd", *FAM, "coarsening.patch.size=4"],
    "raptr": ["experiment=raptr", *FAM],
}
# overrides that name a run's place in a study, not its levels' paths
DROP = ("train.branch_from", "train.branch_points", "train.resume", "train.flops_scale")


def overrides(run: Path, extra: list[str]) -> list[str]:
    """The run's recorded command-line overrides (.hydra/overrides.yaml) less hydra.* and DROP,
    then ``extra`` and one thread."""
    items = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    keep = [i for i in items if not i.split("=", 1)[0].lstrip("+~").startswith(("hydra.", *DROP))]
    return [*keep, *extra, "train.threads=1"]


def read_rows(csvs: list[Path]) -> list[dict]:
    rows = []
    for f in csvs:
        with open(f, newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


@functools.cache
def levels_key(run: Path) -> tuple[str, ...]:
    """What builds a run's levels: its overrides (:func:`overrides`) less its seed. Growth to
    the best size ends at another depth per budget (``growbest``: 1 -> 2 blocks at 1/8, 3 -> 6
    at 1x), so a scheme's runs can need several jobs."""
    return tuple(o for o in overrides(run, []) if not o.startswith("train.seed="))


def scheme_job(run: Path, jobs: dict[str, Path]) -> str:
    """The job that times ``run``'s levels among ``jobs`` (:func:`jobs_to_time`): the one of its
    scheme built from the same overrides (:func:`levels_key`)."""
    m = NAME.match(run.name)
    key = levels_key(run)
    return next(
        j for j, r in jobs.items() if j.split("@")[0] == m["scheme"] and levels_key(r) == key
    )


def jobs_to_time(rows: list[dict], runs: Path) -> dict[str, Path]:
    """Job name -> the run whose overrides build it: per scheme and distinct levels
    (:func:`levels_key`) the scheme's name, ``<scheme>@<budget>`` for a second set of levels,
    and ``env_L<n>`` / ``sgd_L<n>`` per best size (its first envelope run, by :func:`env_job`)."""
    out: dict[str, Path] = {}
    for r in rows:
        m = NAME.match(r["run"])
        if m and not (runs / r["run"] / ".hydra" / "overrides.yaml").exists():
            raise SystemExit(
                f"no record of run {r['run']} under {runs} (its .hydra/overrides.yaml)"
            )
        if m:
            key = levels_key(runs / r["run"])
            mine = [j for j in out if j.split("@")[0] == m["scheme"]]
            if not any(levels_key(out[j]) == key for j in mine):
                out[f"{m['scheme']}@{m['budget']}" if mine else m["scheme"]] = runs / r["run"]
        s = SIZE.match(r.get("best_size") or "")
        job = env_job(runs / r["run"], s["n"]) if m and s else None
        if job is not None and job not in out:
            found = sorted(runs.glob(f"{job}_*"))
            if found:
                out[job] = found[0]
    for name, run in out.items():
        if not (run / ".hydra" / "overrides.yaml").exists():
            raise SystemExit(f"no record of run {run.name} (job {name}) under {runs}")
    return out


def env_job(run: Path, n: str) -> str:
    """The envelope job of an n-block best size for a run: ``sgd_L<n>`` where the run trains
    with SGD (judged against the SGD envelope), else ``env_L<n>``."""
    sgd = "optimizer=sgd" in (run / ".hydra" / "overrides.yaml").read_text()
    return f"{'sgd' if sgd else 'env'}_L{n}"


def measure(jobs: dict[str, list[str]], rounds: int) -> list[dict]:
    """One row per (job, level): its path's shape, FLOPs per step and median CPU s per step;
    ``jobs``: job name -> the overrides that build it."""
    import torch

    torch.set_num_threads(1)
    built, fns = {}, {}
    for name, over in jobs.items():
        job = make_job(over)
        built[name] = job
        t = job.trainer
        for lv in t.levels:
            fns[(name, lv)] = lambda t=t, lv=lv: t.train_step(t.levels[lv])
    keys = list(fns)
    med = interleaved(
        {f"{j}/{lv}": fns[(j, lv)] for j, lv in keys},
        rounds=rounds,
        per_round=3,
        clock=time.process_time,
    )
    out = []
    for j, lv in keys:
        t = built[j].trainer
        level = t.levels[lv]
        flops = t.plan.step_flops[lv].total
        s = med[f"{j}/{lv}"]
        out.append(
            {
                "job": j,
                "level": lv,
                "blocks": len(level.blocks),
                "width_factor": getattr(level, "width_factor", 1),
                "patch": level.patch,
                "step_flops": flops,
                "cpu_s_per_step": s,
                "cpu_s_per_gflop": s / flops * 1e9,
            }
        )
    for job in built.values():
        job.close()
    return out


def ratios(rows: list[dict], runs: Path, levels: list[dict], jobs: dict[str, Path]) -> list[dict]:
    """(scheme, budget, time ratio: the mean over seeds), see the module's docstring; ``jobs``:
    :func:`jobs_to_time`'s, whose levels each run's steps are timed by."""
    per_step = {(x["job"], x["level"]): float(x["cpu_s_per_step"]) for x in levels}
    per_flop = {x["job"]: float(x["cpu_s_per_step"]) / float(x["step_flops"]) for x in levels}
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        m, s = NAME.match(r["run"]), SIZE.match(r.get("best_size") or "")
        if not m or not s or not r.get("r_env_head"):
            continue
        kind = r.get("r_env_head_kind") or "="
        info = read_run_record(runs / r["run"])
        if "steps_per_level" not in info:
            raise SystemExit(f"run {r['run']}: its run record has no steps_per_level")
        t_scheme = 0.0
        job = scheme_job(runs / r["run"], jobs)
        for lv, n in info["steps_per_level"].items():
            if (job, lv) not in per_step:
                raise SystemExit(f"level {lv} of run {r['run']} is not among job {job}'s")
            t_scheme += n * per_step[(job, lv)]
        t_env = (
            float(r["flops"]) / float(r["r_env_head"]) * per_flop[env_job(runs / r["run"], s["n"])]
        )
        acc[(m["scheme"], m["budget"])].append((kind, t_scheme / t_env))
    return [
        {
            "scheme": k[0],
            "budget": k[1],
            "time_ratio": statistics.fmean(x for _, x in v),
            # a bound on r_env bounds the ratio the same way (T_env is C / r_env), and so the
            # mean over seeds where any is one
            "time_ratio_kind": next((c for c, _ in v if c in ("<", ">")), "="),
        }
        for k, v in sorted(acc.items())
    ]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["scheme"])
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="*", type=Path, help="envelope.csv files (mltrain-compare)")
    p.add_argument("--runs", type=Path, help="the runs' records (with the CSVs)")
    p.add_argument("--family", action="store_true", help="time the presets' levels (FAMILY) only")
    p.add_argument("--out", type=Path, required=True, help="folder for levels.csv, time.csv")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--extra", nargs="*", default=[], help="overrides added to every job")
    a = p.parse_args(argv)
    if a.family == bool(a.csv) or (a.csv and a.runs is None):
        p.error("give envelope.csv files with --runs, or --family (not both)")
    if a.family:
        jobs = {k: [*v, *a.extra, "train.threads=1"] for k, v in FAMILY.items()}
    else:
        rows = read_rows(a.csv)
        runs_of = jobs_to_time(rows, a.runs)
        jobs = {k: overrides(r, a.extra) for k, r in runs_of.items()}
        if not jobs:
            print("no judged scheme runs in the CSVs: nothing to time", file=sys.stderr)
            return 1
    levels = measure(jobs, a.rounds)
    write(a.out / "levels.csv", levels)
    for x in levels:
        print(
            f"{x['job']:>14s} {x['level']:>10s}: {x['blocks']:2d} blocks, width /"
            f"{x['width_factor']}, patch {x['patch']}: {x['cpu_s_per_step'] * 1e3:7.1f} ms/step, "
            f"{x['cpu_s_per_gflop'] * 1e3:6.2f} ms/GFLOP"
        )
    if a.family:
        return 0
    out = ratios(rows, a.runs, levels, runs_of)
    write(a.out / "time.csv", out)
    for x in out:
        sign = "" if x["time_ratio_kind"] == "=" else x["time_ratio_kind"] + " "
        print(f"{x['scheme']} {x['budget']}: time ratio {sign}{x['time_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
