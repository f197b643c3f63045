"""Divergence guard, W&B faults, preemption, and the catalogue of bad inputs.

Every bad input must give one line ``mltrain: error: ...`` naming the setting, a non-zero
exit status, and leave existing run directories and checkpoints untouched.
"""

from __future__ import annotations

import math
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mltrain.train.checkpoint import list_checkpoints, load_checkpoint
from tests.helpers import TINY, cli, digest, read_jsonl, run_mltrain

SMOKE = ["mode=smoke", *TINY]
NAN = ["optimizer.lr=1e12", "train.max_grad_norm=0"]


def test_non_finite_loss_stops_with_step_level_and_exit_3(tmp_path, capsys):
    code, out, err = cli(
        SMOKE + NAN + ["coarsening=none", "train.checkpoint_every=1", "train.steps=6"],
        tmp_path,
        capsys,
    )
    assert code == 3
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    # step 1 (lr 1e12) leaves huge but finite parameters; step 2's loss is NaN. The step and
    # fine step are numbered as the failing step's record would be.
    assert err.strip().splitlines() == [
        "mltrain: error: non-finite loss (nan) at step 2 (fine step 2, level fine); stopped, the last good "
        f"checkpoint is kept: {run_dir / 'checkpoints' / 'ckpt_000000001.pt'}"
    ]
    kept = list_checkpoints(run_dir / "checkpoints")
    assert kept and all(
        math.isfinite(v.float().sum()) for v in load_checkpoint(kept[-1])["model"].values()
    )


def test_divergent_job_reports_inf_and_the_sweep_finishes_the_others_then_fails(tmp_path, capsys):
    from mltrain import cli as entry

    returned = []
    original = entry.train

    def spy(cfg):
        returned.append(original(cfg))
        return returned[-1]

    entry_main = entry._hydra_main
    entry._hydra_main = entry.hydra.main(
        version_base="1.3", config_path=str(entry.config_dir()), config_name="config"
    )(spy)
    try:
        code, out, err = cli(
            ["-m", *SMOKE, "optimizer.lr=1e12,0.1", "train.max_grad_norm=0"], tmp_path, capsys
        )
    finally:
        entry._hydra_main = entry_main
    assert code == 1
    assert returned[0] == math.inf and math.isfinite(returned[1])  # +inf for the sweeper, never NaN
    assert "1 job(s) of the sweep failed" in err and "non-finite loss" in err
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    ok = [r for r in read_jsonl(jobs[1] / "metrics.jsonl") if "val/loss" in r]
    assert ok[-1]["fine_step"] == 4 and math.isfinite(ok[-1]["val/loss"])  # the other job completed


def test_wandb_that_cannot_start_warns_once_and_training_goes_on(tmp_path, capsys, monkeypatch):
    import wandb

    calls = []
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(
        wandb,
        "init",
        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(RuntimeError("no service")),
    )
    with pytest.warns(
        RuntimeWarning,
        match=r"W&B start failed \(RuntimeError: no service\); continuing with .*metrics.jsonl only",
    ):
        code, out, err = cli([*SMOKE, "logger=wandb"], tmp_path, capsys)
    assert code == 0 and calls == [1]
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    assert any("val/loss" in r for r in read_jsonl(run_dir / "metrics.jsonl"))


def test_wandb_log_failure_mid_run_warns_once(tmp_path):
    from mltrain.train.tracking import Tracker

    class Broken:
        id = "x"
        dir = None

        def log(self, *a, **k):
            self.n = getattr(self, "n", 0) + 1
            raise ConnectionError("lost")

        def finish(self, **k):
            pass

    logger = type("L", (), {"name": "none"})()
    t = Tracker(tmp_path, logger, {}, "single_level", "g")
    broken = t._wandb = Broken()
    with pytest.warns(RuntimeWarning, match="W&B log failed") as rec:
        for step in range(1, 4):
            t.log({"step": step, "train/loss": 1.0})
    t.close()
    assert len(rec) == 1 and broken.n == 1  # disabled after the first failure
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_loss_spike_check_is_logged(tmp_path, capsys):
    code, out, err = cli(
        [*SMOKE, "coarsening=none", "train.steps=8", "train.spike_factor=0.5"], tmp_path, capsys
    )
    assert code == 0
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    spikes = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("train/spike")]
    assert spikes and "loss spike at step" in (run_dir / "mltrain.log").read_text()


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(tmp_path):
    args = [
        *TINY,
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=150",
        "coarsening.vcycle.window=2",
        "train.steps=3",
        "train.eval_every=1",
        "train.checkpoint_every=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mltrain"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > 20):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(
                f"the run did not reach step 20 while running: {proc.communicate()[1][-1500:]}"
            )
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-1500:]
    assert "stopped by SIGTERM at step" in err and "train.resume=auto" in err
    (ckpt,) = list_checkpoints(tmp_path / "run" / "checkpoints")
    state = load_checkpoint(ckpt)
    assert (
        state["extensions"]["vcycle"]["phases"] and state["progress"]["op"] > 0
    )  # saved inside a coarse phase
    # the command the message prints continues the run when pasted (the run's own overrides)
    line = next(x for x in err.splitlines() if "continue with: " in x)
    printed = shlex.split(line.split("continue with: ", 1)[1])
    assert printed[0] == "mltrain" and printed[-2:] == [
        "train.resume=auto",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    res = run_mltrain(printed[1:], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-1500:]
    steps = [r["step"] for r in read_jsonl(metrics)]
    assert steps == list(range(0, 3 + 2 * 2 * 150 + 1))  # every step once


# --------------------------------------------------------------------------- catalogue
@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A finished run whose directory must survive every bad input untouched."""
    import os

    base = tmp_path_factory.mktemp("existing")
    env = dict(os.environ)
    res = run_mltrain([*SMOKE, f"hydra.run.dir={base / 'run'}"], cwd=base, env=env)
    assert res.returncode == 0, res.stderr[-1500:]
    return base / "run"


def _files(tmp: Path) -> dict[str, Path]:
    (tmp / "empty_dir").mkdir()
    (tmp / "empty.txt").write_text("")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "latin1.txt").write_bytes("naïve café".encode("latin-1") * 10)
    (tmp / "small").mkdir()
    for i in range(3):
        (tmp / "small" / f"{i}.txt").write_text("a few words")
    (tmp / "corrupt.pt").write_bytes(b"not a checkpoint")
    (tmp / "afile").write_text("x")
    return {"tmp": tmp}


CATALOGUE = [
    # config values
    (["model.n_embd=30", "model.n_head=4"], "model.n_embd=30 must be divisible by model.n_head=4"),
    (
        ["model.seq_len=64", "model.block_size=32"],
        "model.seq_len=64 is larger than the model's context model.block_size=32",
    ),
    (["train.steps=0"], "train.steps=0 is not allowed"),
    (["train.steps=-3"], "train.steps=-3 is not allowed"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed"),
    (["optimizer.lr=-1"], "optimizer.lr=-1.0 is not allowed"),
    (
        ["coarsening.vcycle.delta=1.5"],
        "coarsening.vcycle.delta=1.5 is not allowed: must be in [0, 1]",
    ),
    (["coarsening.vcycle.coarse_steps=-1"], "coarsening.vcycle.coarse_steps=-1 is not allowed"),
    (["coarsening.vcycle.window=-1"], "coarsening.vcycle.window=-1 is not allowed"),
    (["coarsening.hierarchy.step_scale=0"], "coarsening.hierarchy.step_scale=0.0 is not allowed"),
    (
        ["model.n_layer=5"],
        "coarsening.hierarchy.name=even_odd needs an even number of blocks >= 2, but "
        "model.n_layer=5: use model.n_layer=4 or model.n_layer=6",
    ),
    (
        ["coarsening=recursive", "coarsening.hierarchy.depth=3"],
        "factor^depth = 2^3 = 8, but it must divide model.n_layer=4",
    ),
    (
        ["coarsening=custom", "coarsening.hierarchy.blocks=[[0,0]]"],
        "coarsening.hierarchy.blocks[0]=[0, 0] repeats a block",
    ),
    (
        ["coarsening=custom", "coarsening.hierarchy.blocks=[[7]]"],
        "coarsening.hierarchy.blocks[0] names block 7, outside",
    ),
    (["coarsening=custom"], "coarsening=custom needs coarsening.hierarchy.blocks="),
    (
        ["schedule.warmup_steps=10"],
        "schedule.warmup_steps=10 is not allowed: must be >= 0 and < train.steps=4",
    ),
    (["train.device=tpu"], "train.device='tpu' is not allowed"),
    (["train.device=cuda"], "train.device=cuda: CUDA is not available here"),
    (["data.val_fraction=0"], "data.val_fraction=0.0 is not allowed"),
    # config types
    (
        ["model.n_layer=abc"],
        "model.n_layer=abc; Value 'abc' of type 'str' could not be converted to Integer",
    ),
    (["coarsening.vcycle.delta=[1,2]"], "could not be converted to Float"),
    (["train.compile=maybe"], "train.compile=maybe"),
    # unknown keys and group options
    (["model.n_layr=2"], "model.n_layr is not a setting; did you mean model.n_layer? model has: "),
    (["+train.foo=1"], "train.foo is not a setting"),
    (
        ["coarsening=halves"],
        "Could not find 'coarsening/halves'; available options in 'coarsening': custom, even, even_odd, grow, grow_recursive, grow_width, grow_width_depth, none, odd, patch, raptr, recursive, width",
    ),
    (
        ["optimizer=adam"],
        "Could not find 'optimizer/adam'; available options in 'optimizer': adamw, sgd",
    ),
    (["data=books"], "Could not find 'data/books'"),
    (
        ["data.vocab_size=4096"],
        "Could not override 'data.vocab_size'; Key 'vocab_size' not in 'DataConfig'; "
        "data.vocab_size was renamed data.bpe_vocab_size: use data.bpe_vocab_size=...",
    ),
    # the flat coarsening keys of earlier versions name their section's key
    (
        ["coarsening.delta=0.5"],
        "coarsening.delta was renamed coarsening.vcycle.delta: use coarsening.vcycle.delta=...",
    ),
    (["coarsening.tau=exact"], "coarsening.tau was renamed coarsening.corrections.tau"),
    (
        ["coarsening.stages=[coarse_b,fine]"],
        "coarsening.stages was renamed coarsening.stages.levels",
    ),
    (["coarsening.patch_size=2"], "coarsening.patch_size was renamed coarsening.patch.size"),
    # read by staged runs too, they moved from the V-cycle's section to the hierarchy's
    (
        ["coarsening.vcycle.optimizer_state=reset"],
        "coarsening.vcycle.optimizer_state was renamed coarsening.hierarchy.optimizer_state: use "
        "coarsening.hierarchy.optimizer_state=...",
    ),
    (
        ["coarsening.train_shared=false"],
        "coarsening.train_shared was renamed coarsening.hierarchy.train_shared",
    ),
    (
        ["coarsening=width", "model.n_head=1"],
        "coarsening.hierarchy.width_factor=2 is not allowed: it must divide model.n_head=1",
    ),
    # a scheme and the sections it reads
    (
        ["coarsening=none", "coarsening.scheme=vcycle"],
        "coarsening.scheme=vcycle needs coarse levels, but coarsening.hierarchy.name=none",
    ),
    (
        ["coarsening=even_odd", "coarsening.stages.levels=[coarse_b,fine]"],
        "coarsening.stages.levels=['coarse_b', 'fine'] is set but coarsening.scheme=vcycle",
    ),
    # data
    (["data=text_files", "data.paths=[{tmp}/missing]"], "data.paths: {tmp}/missing does not exist"),
    (
        ["data=text_files", "data.paths=[{tmp}/empty_dir]"],
        "data.paths: directory {tmp}/empty_dir holds no",
    ),
    (
        ["data=text_files", "data.paths=[{tmp}/empty.txt]"],
        "data.paths: every data file is empty: {tmp}/empty.txt",
    ),
    (
        ["data=text_files", "data.paths=[{tmp}/empty.jsonl]"],
        "data.paths: every data file is empty: {tmp}/empty.jsonl",
    ),
    (
        ["train.eval_batches=2"],
        "train.eval_batches was replaced by train.eval_sequences",
    ),
    (
        ["-m", "coarsening.vcycle.delta=range(0.1,0.4,0.1)"],
        "write the values instead: coarsening.vcycle.delta=0.1,0.2,0.3",
    ),
    (["-m", "--cfg", "job"], "--cfg job prints the config of one run and cannot be combined"),
    (
        ["data=text_files", "data.paths=[{tmp}/latin1.txt]"],
        "data file {tmp}/latin1.txt is not UTF-8",
    ),
    (
        [
            "data=text_files",
            "data.paths=[{tmp}/small]",
            "data.tokenizer=gpt2",
            "data.val_fraction=0.5",
        ],
        "the train split holds 8 tokens, fewer than model.seq_len + 1 = 33",
    ),
    (
        ["model.vocab_size=100"],
        "model.vocab_size=100 is smaller than the vocabulary of data.tokenizer=bpe (8192)",
    ),
    (
        ["data.tokenizer=hf:{tmp}/no_such_tokenizer"],
        "data.tokenizer=hf:{tmp}/no_such_tokenizer: cannot load it",
    ),
    # output directory and checkpoints
    (["hydra.run.dir={tmp}/afile/run"], "cannot create the run directory"),
    (["train.resume={tmp}/missing.pt"], "train.resume: checkpoint {tmp}/missing.pt does not exist"),
    (["train.resume={tmp}/corrupt.pt"], "checkpoint {tmp}/corrupt.pt is unreadable"),
    (
        ["hydra.run.dir={run}"],
        "run directory {run} already holds a run; continue it with train.resume=auto",
    ),
    (
        ["hydra.run.dir={run}", "train.resume=auto", "coarsening.vcycle.delta=0.5"],
        "was written with coarsening.vcycle.delta=0.25, this run has coarsening.vcycle.delta=0.5",
    ),
    (
        ["hydra.run.dir={run}", "train.resume=auto", "model.n_embd=64"],
        "was written with model.n_embd=32, this run has model.n_embd=64",
    ),
    (
        ["train.resume={ckpt}", "model.n_head=4"],
        "was written with model.n_head=2, this run has model.n_head=4",
    ),
]


@pytest.mark.parametrize("args, message", CATALOGUE, ids=[" ".join(a) for a, _ in CATALOGUE])
def test_bad_input_gives_one_line_and_touches_nothing(
    args, message, existing_run, tmp_path, capsys
):
    _files(tmp_path)
    ckpt = list_checkpoints(existing_run / "checkpoints")[-1]
    fill = {"tmp": tmp_path, "run": existing_run, "ckpt": ckpt}
    args = [a.format(**fill) for a in args]
    before = digest(existing_run)
    code, out, err = cli([*SMOKE, *args], tmp_path, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("mltrain: error: "), err
    assert message.format(**fill) in lines[0]
    assert digest(existing_run) == before
    assert not any((tmp_path / "outputs").rglob("metrics.jsonl"))
