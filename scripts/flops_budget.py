"""Print the training FLOPs a run will spend (DESIGN.md section 3), before running it.

    python scripts/flops_budget.py experiment=paper_small            # -> 1.9972e+13 ...
    mltrain coarsening=none train.target_flops=$(python scripts/flops_budget.py --total experiment=paper_small)

The count is exact for the schedule (fine steps plus every coarse phase of the window);
evaluation FLOPs are not included. Takes the same overrides as ``mltrain``; ``--total`` prints
only the total with head (an integer, for train.target_flops).
"""

from __future__ import annotations

import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

import mltrain.schemes  # noqa: F401  (registers every scheme, as mltrain does)
from mltrain.config import compose, typed, validate
from mltrain.config.hydra_errors import one_line
from mltrain.data import build_data
from mltrain.errors import MLTrainError
from mltrain.plan.plan import build_plan


def planned_flops(overrides: list[str]) -> tuple[int, int, dict[str, int]]:
    """(total with head, total non-embedding, optimizer steps per level) of a run's plan
    (:func:`mltrain.plan.plan.build_plan`, exactly as ``mltrain`` sizes the run)."""
    cfg = compose(overrides)
    validate(cfg)
    t = typed(cfg)
    vocab = t.model.vocab_size or build_data(t.data, t.model.seq_len).vocab_size
    plan = build_plan(t, vocab)
    total = plan.flops()
    return total.total, total.nonembed, plan.steps_per_level()


def main() -> None:
    args = sys.argv[1:]
    if {"-h", "--help"} & set(args):
        print(__doc__.strip())
        return
    only_total = "--total" in args
    args = [a for a in args if a != "--total"]
    try:
        total, nonembed, steps = planned_flops(args)
    except (MLTrainError, HydraException, OmegaConfBaseException) as e:
        print(f"flops_budget.py: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    if only_total:
        print(total)
    else:
        print(
            f"training FLOPs: {total:.4e} with head, {nonembed:.4e} non-embedding; optimizer steps {steps}"
        )


if __name__ == "__main__":
    main()
