"""Exact resume: a run stopped anywhere and resumed matches the uninterrupted run, bit for bit.

The reference is an uninterrupted run of the same config (CPU, deterministic).
"""

from __future__ import annotations

import shutil
import signal
import time

import pytest
import torch

from mltrain.train.checkpoint import list_checkpoints, load_checkpoint
from tests.helpers import (
    final_params,
    losses,
    make_job,
    preempt,
    read_jsonl,
    run_job,
    run_mltrain,
)

ML = [
    "coarsening=even_odd",
    "coarsening.vcycle.coarse_steps=3",
    "coarsening.vcycle.window=3",
    "train.steps=6",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "model.dropout=0.1",
    "coarsening.hierarchy.optimizer_state=separate",
]


def reference(tmp_path, *extra):
    run_job(tmp_path / "ref", *ML, *extra)
    return tmp_path / "ref"


# One iteration inside the window: fine step, 3 coarse_a steps, 3 coarse_b steps (steps 1-7,
# 8-14, 15-21); then one fine step per iteration (22, 23, 24); evaluations every 2 iterations.
@pytest.mark.parametrize(
    "stop_at, policy",
    [
        (2, "separate"),  # inside the first coarse_a phase
        (6, "separate"),  # inside the first coarse_b phase
        (9, "separate"),  # the first coarse_a step of the second V-cycle
        (22, "separate"),  # the fine step that ends iteration 4, an evaluated one
        (4, "reset"),  # the last coarse_a step, before its prolongation
        (12, "shared"),  # inside the second V-cycle's coarse_b phase
    ],
)
def test_preempted_anywhere_resumes_bitwise(tmp_path, stop_at, policy):
    ref = reference(tmp_path, f"coarsening.hierarchy.optimizer_state={policy}")
    preempt(
        tmp_path / "run",
        *ML,
        f"coarsening.hierarchy.optimizer_state={policy}",
        stop_at=stop_at,
        match=rf"stopped by SIGTERM at step {stop_at} ",
    )
    saved = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert saved["progress"]["step"] == stop_at
    run_job(
        tmp_path / "run", *ML, f"coarsening.hierarchy.optimizer_state={policy}", "train.resume=auto"
    )
    assert losses(tmp_path / "run") == losses(ref)  # every step once, same values, bitwise
    flops = [r["perf/flops"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert all(a < b for a, b in zip(flops, flops[1:]))  # counters restored, never reset
    a, b = final_params(tmp_path / "run"), final_params(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_summed_combination_resumes_bitwise_mid_cycle(tmp_path):
    ref = reference(tmp_path, "coarsening.vcycle.combine=summed")
    # inside coarse_b, with coarse_a's correction deferred
    preempt(tmp_path / "run", *ML, "coarsening.vcycle.combine=summed", stop_at=6)
    assert load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])["extensions"][
        "vcycle"
    ]["deferred"]
    run_job(tmp_path / "run", *ML, "coarsening.vcycle.combine=summed", "train.resume=auto")
    assert losses(tmp_path / "run") == losses(ref)


def test_resume_from_an_explicit_path_into_a_new_run_dir(tmp_path):
    ref = reference(tmp_path)
    first = list_checkpoints(tmp_path / "ref" / "checkpoints")
    assert len(first) == 2  # keep_checkpoints=2
    ckpt = first[0]
    step = load_checkpoint(ckpt)["progress"]["step"]
    job = make_job(tmp_path / "new", *ML, f"train.resume={ckpt}")
    assert job.trainer.progress.steps == step
    job.run()
    job.close()
    assert losses(tmp_path / "new") == losses(ref)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    ref = reference(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    ckpts = list_checkpoints(run / "checkpoints")
    newest = ckpts[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    (run / "checkpoints" / ".ckpt_000000099.pt.tmp123").write_bytes(b"partial")  # killed mid-write
    job = make_job(run, *ML, "train.resume=auto")
    assert job.trainer.progress.steps == load_checkpoint(ckpts[-2])["progress"]["step"]
    assert "truncated or corrupt" in caplog.text
    assert not list((run / "checkpoints").glob(".ckpt_*"))
    job.run()
    job.close()
    assert losses(run) == losses(ref)  # redone from the previous checkpoint, bitwise


class _Killed(BaseException):
    """Stands for SIGKILL: no handler runs and no checkpoint is written on the way out."""


def test_killed_during_evaluation_resumes_bitwise(tmp_path):
    ref = reference(tmp_path)
    job = make_job(tmp_path / "run", *ML)
    t, calls = job.trainer, []
    original = t.evaluate

    def evaluate():
        calls.append(t.progress.steps)
        if len(calls) == 4:  # step 0, fine steps 2 and 4 done; killed evaluating fine step 6
            raise _Killed
        return original()

    t.evaluate = evaluate
    with pytest.raises(_Killed):
        job.run()
    job.close()
    newest = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert calls[-1] > newest["progress"]["step"]  # killed after the newest checkpoint: redone
    run_job(tmp_path / "run", *ML, "train.resume=auto")
    assert losses(tmp_path / "run") == losses(ref)
    a, b = final_params(tmp_path / "run"), final_params(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_during_a_checkpoint_write_resumes_bitwise(tmp_path, monkeypatch):
    import mltrain.train.checkpoint as checkpoint_module

    ref = reference(tmp_path)
    real, saves = checkpoint_module.save_checkpoint, []

    def dying(state, directory, step, keep):
        saves.append(step)
        if len(saves) == 2:  # half of the second checkpoint's temp file is on disk
            (directory / f".ckpt_{step:09d}.pt.tmp999").write_bytes(b"half a checkpoint")
            raise _Killed
        return real(state, directory, step, keep)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", dying)
    job = make_job(tmp_path / "run", *ML)
    with pytest.raises(_Killed):
        job.run()
    job.close()
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", real)
    run_job(tmp_path / "run", *ML, "train.resume=auto")
    assert losses(tmp_path / "run") == losses(ref)
    assert not list((tmp_path / "run" / "checkpoints").glob(".ckpt_*"))


def test_completed_run_resumed_again_changes_nothing(tmp_path):
    ref = reference(tmp_path)
    before = losses(ref)
    run_job(ref, *ML, "train.resume=auto")
    assert losses(ref) == before


def test_sigkill_mid_coarse_phase_then_resume_matches_uninterrupted(tmp_path):
    """The real command killed with SIGKILL while a coarse phase runs, then re-run with
    train.resume=auto in the same directory."""
    args = [
        "model=tiny",
        "data.batch_size=4",
        "logger=none",
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=40",
        "coarsening.vcycle.window=3",
        "train.steps=5",
        "train.checkpoint_every=1",
        "train.eval_every=1",
        "train.eval_sequences=8",
        "schedule.warmup_steps=1",
    ]
    ref = run_mltrain(args + [f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-1500:]
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "mltrain"
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(exe), *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the second V-cycle's coarse_a phase is running
        recs = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
        if sum(1 for r in recs if r.get("level") == "coarse_a") > 50:
            break
        assert proc.poll() is None, "the run ended before its second V-cycle's coarse_a phase"
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run did not reach its second V-cycle's coarse_a phase in 120 s")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = run_mltrain(args + [f"hydra.run.dir={run_dir}", "train.resume=auto"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-1500:]
    assert "resumed from" in res.stderr + res.stdout
    assert losses(run_dir) == losses(tmp_path / "ref")
    a, b = final_params(run_dir), final_params(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)
