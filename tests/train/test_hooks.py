"""The order of hooks (mltrain.train.state, docs/architecture.md): higher priority first, ties
by name, the trainer's own end-of-iteration work among the extensions' at its documented
priorities; and the trainer restores a resumed run's state in its constructor."""

from __future__ import annotations

import pytest

from mltrain.train.state import EXTENSIONS, Extension, by_priority
from tests.helpers import make_job, read_jsonl


class Probe(Extension):
    """Notes, at each end of an iteration, what the trainer's hooks have done by then."""

    name = "probe"

    def __init__(self, run, priority: int) -> None:
        self.priority, self.run, self.seen = priority, run, []

    def end_iteration(self, run, iteration: int) -> None:
        ckpt = run.run_dir / "checkpoints" / f"ckpt_{iteration:09d}.pt"
        written = [r["step"] for r in read_jsonl(run.run_dir / "metrics.jsonl")]
        self.seen.append(
            {
                "evaluated": run.progress.evaluated_at == run.progress.steps,
                "record written": iteration in written,
                "checkpoint written": ckpt.exists(),
            }
        )


@pytest.fixture
def probe_at(monkeypatch):
    """Register :class:`Probe` at a priority for the next job (removed afterwards)."""

    def register(priority: int) -> None:
        monkeypatch.setitem(EXTENSIONS._entries, "probe", lambda run: Probe(run, priority))
        monkeypatch.setitem(EXTENSIONS._spellings, "probe", "probe")

    return register


def _hook(name: str, priority: int) -> Extension:
    ext = Extension()
    ext.name, ext.priority = name, priority
    return ext


def test_by_priority_runs_higher_first_and_ties_by_name_not_by_registration():
    hooks = [_hook("b", 0), _hook("low", -5), _hook("a", 0), _hook("high", 7)]
    assert [h.name for h in by_priority(hooks)] == ["high", "a", "b", "low"]


OVERRIDES = (
    "coarsening=none",
    "train.steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=2",
)


def test_the_trainer_hooks_run_in_their_documented_order(tmp_path, probe_at):
    """evaluation 300, metrics record 200, extensions 0, checkpoint -100, branch point -200
    (a trunk's: wsd, sized by a budget, a branch point)."""
    probe_at(0)
    job = make_job(
        tmp_path / "r",
        "coarsening=none",
        "schedule=wsd",
        "train.target_flops=2e10",
        "train.branch_points=[0.5]",
        "train.checkpoint_every=2",
    )
    try:
        hooks = [(h.name, h.priority) for h in job.trainer.hooks]
    finally:
        job.close()
    assert hooks == [
        ("evaluation", 300),
        ("metrics_record", 200),
        ("probe", 0),
        ("checkpoint", -100),
        ("branch_points", -200),
    ]


def test_an_extension_at_the_default_priority_runs_after_the_record_before_the_checkpoint(
    tmp_path, probe_at
):
    probe_at(0)
    job = make_job(tmp_path / "r", *OVERRIDES)
    job.run()
    job.close()
    seen = job.trainer.extension("probe").seen
    assert len(seen) == 4
    # iterations 2 and 4 evaluate; every iteration's record is written before the extension
    assert [s["evaluated"] for s in seen] == [False, True, False, True]
    assert all(s["record written"] for s in seen)
    # the checkpoint of iteration 2 is written after the extension ran (and 4 is the end's)
    assert [s["checkpoint written"] for s in seen] == [False, False, False, False]
    assert (tmp_path / "r" / "checkpoints" / "ckpt_000000002.pt").exists()


def test_an_extension_above_the_evaluation_runs_before_it(tmp_path, probe_at):
    probe_at(400)
    job = make_job(tmp_path / "r", *OVERRIDES)
    job.run()
    job.close()
    seen = job.trainer.extension("probe").seen
    assert [h.name for h in job.trainer.hooks][:2] == ["probe", "evaluation"]
    assert not any(s["evaluated"] or s["record written"] for s in seen)


def test_a_resumed_trainer_is_built_with_its_state(tmp_path):
    """The job passes where the run starts to the trainer's constructor: the trainer it
    builds already stands at the checkpoint's step, and its last checkpoint is that file."""
    job = make_job(tmp_path / "r", *OVERRIDES)
    job.run()
    job.close()
    first = tmp_path / "r" / "checkpoints" / "ckpt_000000002.pt"
    again = make_job(tmp_path / "s", *OVERRIDES, f"train.resume={first}")
    try:
        assert again.trainer.progress.steps == 2 and again.trainer.progress.iteration == 2
        assert again.trainer.last_checkpoint == first
        assert again.resume.state is None  # handed over: the job keeps no copy
    finally:
        again.close()
