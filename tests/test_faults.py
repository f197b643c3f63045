"""Faults found when mltrain was tried as users do (issue 12 items 2, 3, 4, 7, 8; issue 13
items 3, 4): each test fails on the code before its fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mltrain.config import DataConfig
from mltrain.config.compose import _sweep_subdir
from mltrain.train.checkpoint import list_checkpoints, load_checkpoint, load_latest, save_checkpoint
from tests.helpers import TINY, cli

SMOKE = ["mode=smoke", *TINY]


def paragraphs(n: int = 60) -> str:
    return "\n\n".join(
        f"Paragraph {i} of a small text about rivers, mountains and the weather in spring." * 3
        for i in range(n)
    )


# --------------------------------------------------------------------------- item 2: paths
def test_relative_paths_resolve_against_the_launch_dir_with_hydra_chdir(tmp_path, capsys):
    (tmp_path / "rel" / "dir").mkdir(parents=True)
    (tmp_path / "rel" / "dir" / "file.txt").write_text(paragraphs())
    code, out, err = cli(
        [
            *SMOKE,
            "data=text_files",
            "data.paths=[rel/dir/file.txt]",
            "data.sample_by=paragraph",
            "data.tokenizer=gpt2",
            "data.cache_dir=cache",
            "hydra.job.chdir=true",
            "hydra.run.dir=out/run",
        ],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    saved = OmegaConf.load(tmp_path / "out" / "run" / ".hydra" / "config.yaml")
    assert list(saved.data.paths) == [str(tmp_path / "rel" / "dir" / "file.txt")]
    assert saved.data.cache_dir == str(tmp_path / "cache")
    assert any((tmp_path / "cache" / "tokens").iterdir())  # the cache is where the user said
    assert not (tmp_path / "out" / "run" / "cache").exists()


# --------------------------------------------------------------------------- item 3: cache key
@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.txt").write_text(paragraphs(10) + f" file {i}")
    return d


def _hf_dir(tmp_path: Path, lowercase: bool = False) -> Path:
    """A transformers tokenizer directory; ``lowercase`` adds a normaliser to tokenizer.json."""
    from transformers import PreTrainedTokenizerFast

    from mltrain.data.tokenizers import train_bpe

    out = tmp_path / "tok"
    bpe = train_bpe([paragraphs(5)], 300)
    PreTrainedTokenizerFast(tokenizer_object=bpe._impl, eos_token="<|endoftext|>").save_pretrained(
        out
    )
    if lowercase:
        spec = json.loads((out / "tokenizer.json").read_text())
        spec["normalizer"] = {"type": "Lowercase"}
        (out / "tokenizer.json").write_text(json.dumps(spec))
    return out


def _build(corpus: Path, cache: Path, **kw):
    from mltrain.data import build_data

    cfg = DataConfig(name="text_files", paths=[str(corpus)], **{"val_fraction": 0.25, **kw})
    return build_data(cfg, 8, cache_dir=cache)


def test_a_tokenizer_changed_in_place_is_not_served_from_the_cache(tmp_path, corpus):
    tok = _hf_dir(tmp_path)
    a = _build(corpus, tmp_path / "c", tokenizer=f"hf:{tok}")
    _hf_dir(tmp_path, lowercase=True)  # same directory, a normaliser added
    b = _build(corpus, tmp_path / "c", tokenizer=f"hf:{tok}")
    assert a.fingerprint != b.fingerprint
    assert list(b.train[:50]) == b.tokenizer.encode(b.tokenizer.decode(b.train[:50]))
    assert list(a.train) != list(b.train)  # "Paragraph" is lowercased now: other ids


def test_corpus_content_changed_with_the_same_size_and_mtime_is_not_served(tmp_path, corpus):
    a = _build(corpus, tmp_path / "c", tokenizer="gpt2")
    f = corpus / "1.txt"
    st = f.stat()
    text = f.read_text()
    f.write_text(text.replace("rivers", "Rivers", 1))  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    b = _build(corpus, tmp_path / "c", tokenizer="gpt2")
    assert a.fingerprint != b.fingerprint and list(a.train) != list(b.train)


def test_split_settings_and_code_version_are_in_the_key(tmp_path, corpus, monkeypatch):
    import mltrain.data as data

    a = _build(corpus, tmp_path / "c", tokenizer="gpt2")
    assert _build(corpus, tmp_path / "c", tokenizer="gpt2").fingerprint == a.fingerprint
    b = _build(corpus, tmp_path / "c", tokenizer="gpt2", val_fraction=0.5)
    assert b.fingerprint != a.fingerprint
    monkeypatch.setattr(data, "TOKENIZE_VERSION", data.TOKENIZE_VERSION + 1)
    calls = []
    real = data._tokenize
    monkeypatch.setattr(data, "_tokenize", lambda *x, **k: calls.append(1) or real(*x, **k))
    c = _build(corpus, tmp_path / "c", tokenizer="gpt2")
    assert c.fingerprint != a.fingerprint and calls  # tokenized again, not read from the cache


# --------------------------------------------------------------------------- item 4: divergence
def test_a_diverged_run_never_calls_a_non_finite_checkpoint_good(tmp_path, capsys):
    args = [
        *SMOKE,
        "coarsening=none",
        "optimizer.lr=1e5",
        "train.max_grad_norm=0",
        "train.steps=20",
        "train.checkpoint_every=2",
        "train.eval_every=2",
        "hydra.run.dir=run",
    ]
    code, out, err = cli(args, tmp_path, capsys)
    assert code == 3
    # the evaluation at fine step 2 is NaN: the run stops there, before a checkpoint is written
    assert err.strip() == (
        "mltrain: error: non-finite validation loss (nan) at step 2 (fine step 2, level fine); "
        "stopped, no finite checkpoint had been written yet"
    )
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "diverged" and info["diverged_at"]["step"] == 2


def test_resume_auto_skips_a_checkpoint_written_after_divergence(tmp_path):
    good = {"format": 1, "model": {}, "healthy": True}
    bad = {"format": 1, "model": {}, "healthy": False}
    save_checkpoint(good, tmp_path, 2, keep=5)
    save_checkpoint(bad, tmp_path, 4, keep=5)
    state, path = load_latest(tmp_path)
    assert path.name == "ckpt_000000002.pt" and state["healthy"]


def test_checkpoints_record_whether_the_state_is_finite(tmp_path, capsys):
    code, _, err = cli([*SMOKE, "coarsening=none", "hydra.run.dir=run"], tmp_path, capsys)
    assert code == 0, err
    (last,) = list_checkpoints(tmp_path / "run" / "checkpoints")[-1:]
    assert load_checkpoint(last)["healthy"] is True


# --------------------------------------------------------------------------- item 7: job dirs
def test_sweep_job_directory_names_are_one_level_and_bounded():
    assert _sweep_subdir(0, "data.tokenizer=hf:/some/dir") == "0_data.tokenizer=hf:_some_dir"
    long = ",".join(f"coarsening.hierarchy.blocks=[[{i},{i + 1}]]" for i in range(40))
    name = _sweep_subdir(12, long)
    assert len(name) <= 120 and "/" not in name and name.startswith("12_coarsening.blocks")
    assert name != _sweep_subdir(12, long + ",x=1")  # the hash keeps different jobs apart


def test_a_sweep_with_slashes_and_long_overrides_runs_every_job(tmp_path, capsys):
    tok = _hf_dir(tmp_path)
    tags = "[" + ",".join(f"tag{i}" for i in range(40)) + "]"
    blocks = "[" + ",".join("[0,1,2,3]" for _ in range(12)) + "]"
    code, _, err = cli(
        [
            "-m",
            *SMOKE,
            f"data.tokenizer=hf:{tok}",
            "coarsening=custom",
            f"coarsening.hierarchy.blocks={blocks}",
            f"logger.tags={tags}",
            "train.seed=0,1",
            "hydra.sweep.dir=sweep",
        ],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2 and all((j / "metrics.jsonl").is_file() for j in jobs)
    assert all(len(j.name) <= 120 for j in jobs)
    saved = OmegaConf.load(jobs[0] / ".hydra" / "overrides.yaml")
    assert any(str(tok) in o and o.startswith("data.tokenizer=") for o in saved)  # kept in full


# --------------------------------------------------------------------------- item 8: ranges
def test_sort_range_whose_stop_the_step_misses_is_refused_with_the_values(tmp_path, capsys):
    code, _, err = cli(
        ["-m", *SMOKE, "coarsening.vcycle.coarse_steps=sort(range(10,0,-3))"], tmp_path, capsys
    )
    assert code == 2
    assert err.strip() == (
        "mltrain: error: coarsening.vcycle.coarse_steps=sort(range(10,0,-3)): hydra-core expands this "
        "to 3,6,9,12 (a bug of hydra-core 1.3's sort(range(...))); write the values instead: "
        "coarsening.vcycle.coarse_steps=1,4,7,10"
    )
    assert not (tmp_path / "outputs").exists()


def test_sort_range_forms_hydra_gets_right_are_accepted():
    from mltrain.cli import check_range_sweeps

    check_range_sweeps(["a=sort(range(1,11,3))", "b=sort(range(10,1,-3))", "c=range(10,0,-3)"])


# --------------------------------------------------------------------------- issue 13
def test_same_steps_and_same_flops_runs_have_their_own_wandb_job_types(tmp_path, monkeypatch):
    from tests.helpers import run_job, wandb_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["coarsening=none", "logger=wandb", "train.steps=2"]
    run_job(tmp_path / "a", *common)
    run_job(tmp_path / "b", *common, "train.target_flops=5e8")
    types = {}
    for name in ("a", "b"):
        (f,) = (tmp_path / name / "wandb").glob("offline-run-*/run-*.wandb")
        runs = [r.run for r in wandb_records(f) if r.HasField("run")]
        types[name] = (runs[0].job_type, runs[0].display_name)
    assert types["a"][0] == "single_level/same_steps"
    assert types["b"][0] == "single_level/same_flops"
    assert types["b"][1] == "single_level/same_flops b"


def test_smoke_mode_caps_a_run_sized_by_a_budget():
    from mltrain.config import compose, typed
    from mltrain.plan.plan import build_plan

    cfg = typed(compose(["mode=smoke", "train.target_flops=1.9972e13"]))
    plan = build_plan(cfg, 8192)
    assert plan.iterations == 20  # not the 20,349 steps the budget would give
    f = {n: c.total for n, c in plan.step_flops.items()}  # one V-cycle of 2 + 2 coarse steps
    assert plan.flops().total == 20 * f["fine"] + 2 * (f["coarse_a"] + f["coarse_b"])
