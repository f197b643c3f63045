"""The trainer's own end-of-iteration work as hooks (:class:`mltrain.train.state.Extension`),
ordered with the scheme's extensions by priority, higher first (the table in
:mod:`mltrain.train.state`): evaluation (300), the metrics record (200), the extensions
(default 0), the checkpoint (-100), a trunk's branch point (-200). They call the trainer's
public methods only; they keep no state, so checkpoints do not hold them.
"""

from __future__ import annotations

from mltrain.train.branch import BRANCH_DIR
from mltrain.train.state import (
    BRANCH_POINT_PRIORITY,
    CHECKPOINT_PRIORITY,
    EVALUATION_PRIORITY,
    RECORD_PRIORITY,
    Extension,
)


class Evaluation(Extension):
    """The validation loss every ``train.eval_every`` iterations and after the last."""

    name, priority = "evaluation", EVALUATION_PRIORITY

    def end_iteration(self, run, iteration: int) -> None:
        if iteration % run.cfg.train.eval_every == 0 or iteration == run.plan.iterations:
            run.log_validation()


class MetricsRecord(Extension):
    """Writes the iteration's pending record (with its evaluation), and the console line every
    ``train.log_every`` iterations and after the last."""

    name, priority = "metrics_record", RECORD_PRIORITY

    def end_iteration(self, run, iteration: int) -> None:
        run.records.flush()
        total = run.plan.iterations
        if iteration % run.cfg.train.log_every == 0 or iteration == total:
            run.records.console(iteration, total)


class Checkpointing(Extension):
    """A checkpoint every ``train.checkpoint_every`` iterations (the run's end writes its
    own)."""

    name, priority = "checkpoint", CHECKPOINT_PRIORITY

    def __init__(self, every: int) -> None:
        self.every = every

    def end_iteration(self, run, iteration: int) -> None:
        if iteration % self.every == 0 and iteration != run.plan.iterations:
            run.save()


class BranchPoints(Extension):
    """A trunk's kept states (:mod:`mltrain.train.branch`): at each branch point's iteration,
    a checkpoint in ``run_dir/branches`` that is never rotated away."""

    name, priority = "branch_points", BRANCH_POINT_PRIORITY

    def __init__(self, points: dict[int, float]) -> None:
        self.points = dict(points)  # iteration -> budget scale

    def end_iteration(self, run, iteration: int) -> None:
        if iteration in self.points:
            run.save(run.run_dir / BRANCH_DIR, keep=10**9)


def trainer_hooks(checkpoint_every: int, branch_points: dict[int, float]) -> list[Extension]:
    """The trainer's hooks of a run: evaluation and the record always, checkpoints when
    ``train.checkpoint_every`` > 0, branch points when the run is a trunk."""
    hooks: list[Extension] = [Evaluation(), MetricsRecord()]
    if checkpoint_every:
        hooks.append(Checkpointing(int(checkpoint_every)))
    if branch_points:
        hooks.append(BranchPoints(branch_points))
    return hooks
