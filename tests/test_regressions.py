"""Regressions: faults found when mltrain was tried as users do. Each test fails on the code
before its fix. Runs: relative paths under Hydra's chdir, what the token cache's key holds,
checkpoints of a diverged run, sweep job directories, sort ranges, W&B job types, smoke mode.
Commands and tables: float range sweeps, an empty data file, printed commands a shell cannot
run, a run without a training step, unreadable headlines and plots, ``--cfg`` and a
still-running run in the table. (How a run fails on purpose, the guarantees of divergence,
preemption and bad input, is ``tests/test_failures.py``.)"""

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
    assert (
        len(name) <= 120 and "/" not in name and name.startswith("12_coarsening.hierarchy.blocks")
    )
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
    from mltrain.config.arguments import check_range_sweeps

    check_range_sweeps(["a=sort(range(1,11,3))", "b=sort(range(10,1,-3))", "c=range(10,0,-3)"])


# --------------------------------------------------------------------------- run roles and smoke-mode caps
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


# =========================================================================== commands and tables
# --------------------------------------------------------------------------- float ranges
def test_a_float_range_sweep_is_refused_with_the_values_meant(tmp_path, capsys):
    code, _, err = cli(
        ["-m", *SMOKE, "coarsening.vcycle.delta=range(0.1,0.4,0.1)"], tmp_path, capsys
    )
    assert code == 2
    assert err.strip() == (
        "mltrain: error: coarsening.vcycle.delta=range(0.1,0.4,0.1): hydra-core expands this to "
        "0.1,0.2,0.30000000000000004,0.4 (a float range accumulates rounding errors); write "
        "the values instead: coarsening.vcycle.delta=0.1,0.2,0.3"
    )
    assert not (tmp_path / "outputs").exists()


def test_ranges_hydra_expands_exactly_are_accepted():
    from mltrain.config.arguments import check_range_sweeps

    check_range_sweeps(["a=range(0,1,0.25)", "b=range(0.5,2.5,0.5)", "c=range(1,4)", "d=range(3)"])
    with pytest.raises(Exception, match=r"write the values instead: e=1,1.1,1.2"):
        check_range_sweeps(["e=range(1,1.3,0.1)"])


# --------------------------------------------------------------------------- empty data files
def test_an_empty_jsonl_file_alone_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "empty.jsonl").write_text("")
    args = ["data=text_files", "data.bpe_vocab_size=512", "data.paths=[data/empty.jsonl]"]
    code, _, err = cli([*SMOKE, *args], tmp_path, capsys)
    assert code != 0
    assert err.strip() == (
        f"mltrain: error: data.paths: every data file is empty: {tmp_path}/data/empty.jsonl"
    )
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_file_beside_good_ones_is_skipped_with_a_warning(tmp_path, caplog, content):
    import json

    from mltrain.config import DataConfig
    from mltrain.data.corpora import open_corpus

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(3)))
    (tmp_path / "empty.jsonl").write_text(content)
    cfg = DataConfig(name="text_files", paths=[str(tmp_path / "empty.jsonl"), str(good)])
    corpus = open_corpus(cfg)
    assert corpus.files == [good]
    assert [t for _, t in corpus.documents()] == ["document 0", "document 1", "document 2"]
    assert f"data file {tmp_path / 'empty.jsonl'} is empty: skipped" in caplog.text


def test_a_library_error_without_a_message_still_names_the_file(tmp_path, monkeypatch):
    import datasets

    from mltrain.config import DataConfig
    from mltrain.data.corpora import open_corpus
    from mltrain.errors import DataError

    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "x"}\n')

    def boom(*a, **k):
        raise StopIteration

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(DataError, match=f"^data file {f} cannot be read as json: StopIteration$"):
        list(open_corpus(DataConfig(name="text_files", paths=[str(f)])).documents())


# --------------------------------------------------------------------------- --cfg
def test_cfg_hydra_resolve_resolves_the_run_directory(tmp_path, capsys):
    code, out, err = cli(
        ["--cfg", "hydra", "--resolve", "model=tiny", "experiment_name=myexp"], tmp_path, capsys
    )
    assert code == 0, err
    run_dir = next(ln for ln in out.splitlines() if ln.strip().startswith("dir:"))
    assert run_dir.strip().startswith("dir: outputs/runs/") and run_dir.endswith("_myexp")
    assert "${" not in out.split("sweep:")[0]


def test_cfg_with_multirun_is_one_line(tmp_path, capsys):
    code, out, err = cli(
        ["-m", "model=tiny", "coarsening.vcycle.delta=0.1,0.2", "--cfg", "job"], tmp_path, capsys
    )
    assert code == 2 and not out
    assert err.strip().splitlines() == [
        "mltrain: error: --cfg job prints the config of one run and cannot be combined with "
        "-m/--multirun: give one value per setting (e.g. mltrain --cfg job coarsening.vcycle.delta=0.1)"
    ]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("train.steps=-3", "train.steps=-3 is not allowed"),
        ("model.n_layer=5", "coarsening.hierarchy.name=even_odd needs an even number of blocks"),
    ],
)
def test_cfg_job_refuses_what_a_run_refuses(tmp_path, capsys, bad, message):
    code, out, err = cli(["--cfg", "job", "model=tiny", bad], tmp_path, capsys)
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mltrain: error: ") and message in lines[0]


def test_cfg_job_says_on_its_first_line_what_it_checked(tmp_path, capsys):
    from omegaconf import OmegaConf

    code, out, _ = cli(["--cfg", "job", "model=tiny", "train.steps=17"], tmp_path, capsys)
    assert code == 0
    assert out.splitlines()[0].startswith("# settings checked as a run checks them")
    assert OmegaConf.create(out).train.steps == 17  # still YAML


# --------------------------------------------------------------------------- mode=smoke
@pytest.mark.parametrize("preset", ["grow", "grow_recursive", "raptr", "patch_stage"])
def test_smoke_mode_shortens_a_staged_preset_without_adding_a_v_cycle(preset):
    """mode=smoke sets the V-cycle's window (coarsening.vcycle.*), which only the vcycle scheme
    reads: a staged preset keeps its stages, no stage carries coarse phases, and the run is
    capped at train.max_steps."""
    import mltrain.schemes  # noqa: F401
    from mltrain.config import compose, typed, validate
    from mltrain.plan.plan import build_plan

    cfg = compose([f"experiment={preset}", "mode=smoke"])
    validate(cfg)
    plan = build_plan(typed(cfg), 8192)
    assert cfg.coarsening.scheme == "stages" and cfg.coarsening.vcycle.window == 1
    assert len(plan.stages) >= 2 and all(not st.cycle for st in plan.stages)
    assert plan.iterations <= 20 and not any(
        type(op).__name__ == "Restrict" for op in plan.operations()
    )


# --------------------------------------------------------------------------- printed commands
ODD_DIR = "dätä 実験 it's $HOME"  # spaces, non-ASCII, a quote, a dollar


def _hint_args(configs) -> list[str]:
    import shlex

    from mltrain.analysis.reports.summary import same_flops_hints

    (line,) = same_flops_hints(configs)
    return shlex.split(line.split("→ `", 1)[1].rstrip("`"))


def test_the_same_flops_command_parses_in_the_shell_and_in_hydra(tmp_path):
    from mltrain.analysis import compare as C
    from mltrain.config import compose
    from tests.analysis.test_compare import EVEN_ODD, write_run

    data = tmp_path / ODD_DIR
    write_run(
        tmp_path / "ml",
        EVEN_ODD,
        [10, 7, 5, 3, 1.5],
        "coarsening=even_odd",
        "data=text_files",
        f"data.paths=['{data}']".replace("'s", "\\'s"),
    )
    configs = C.group_configurations(C.find_runs([tmp_path]))
    args = _hint_args(configs)
    assert args[:3] == ["mltrain", "coarsening=none", "train.target_flops=500"]
    cfg = compose(args[1:])
    assert list(cfg.data.paths) == [str(data)] and cfg.data.name == "text_files"


def test_the_same_flops_command_of_a_scaled_budget_plans_the_flops_it_names(tmp_path):
    """A run sized by train.target_flops x train.flops_scale (as the third edition's are) spent
    500 FLOPs: the hint names 500 and its command must plan 500, not 500 x 0.125 again (the
    scale was kept, so the pasted run trained 1/8 of the budget it promised). A branch's
    train.branch_from is another run's state, not the baseline's."""
    import mltrain.schemes  # noqa: F401
    from mltrain.analysis import compare as C
    from mltrain.config import compose, typed
    from tests.analysis.test_compare import EVEN_ODD, write_run

    write_run(
        tmp_path / "ml",
        EVEN_ODD,
        [10, 7, 5, 3, 1.5],
        "coarsening=even_odd",
        "train.target_flops=4000",
        "train.flops_scale=0.125",
        f"train.branch_from={tmp_path}",
    )
    args = _hint_args(C.group_configurations(C.find_runs([tmp_path])))
    assert args[:3] == ["mltrain", "coarsening=none", "train.target_flops=500"]
    assert not any(a.startswith(("train.flops_scale", "train.branch_from")) for a in args)
    train = typed(compose(args[1:])).train
    assert train.target_flops * train.flops_scale == 500


def test_the_wandb_sync_hint_is_quoted_for_the_shell():
    import shlex

    from mltrain.config.overrides import shell_command

    path = f"/runs/{ODD_DIR}/wandb/offline-run-1"
    assert shlex.split(shell_command(["wandb", "sync", path])) == ["wandb", "sync", path]


@pytest.mark.slow
def test_the_printed_same_flops_command_runs_when_pasted(tmp_path):
    """A real run on a data directory named with spaces, non-ASCII and a quote; the command
    mltrain-compare prints is split by shlex and run from another directory."""
    import shlex

    from omegaconf import OmegaConf

    from tests.helpers import run_mltrain

    data = tmp_path / "launch" / "data" / ODD_DIR
    data.mkdir(parents=True)
    (data / "a.txt").write_text(
        "\n\n".join(
            f"Paragraph {i} about rivers and the weather in spring. " * 3 for i in range(80)
        )
    )
    common = ["data=text_files", "data.tokenizer=gpt2", "data.sample_by=paragraph"]
    rel = f"data/{ODD_DIR}".replace("'", "\\'")
    res = run_mltrain(
        [*SMOKE, *common, f"data.paths=['{rel}']", "hydra.run.dir=../runs/ml"],
        cwd=tmp_path / "launch",
    )
    assert res.returncode == 0, res.stderr[-1500:]
    res = run_mltrain([str(tmp_path / "runs")], cwd=tmp_path, entry="mltrain-compare")
    assert res.returncode == 0, res.stderr[-1500:]
    line = next(ln for ln in res.stdout.splitlines() if "→ `mltrain " in ln)
    args = shlex.split(line.split("→ `", 1)[1].rstrip("`"))
    (tmp_path / "elsewhere").mkdir()
    res = run_mltrain(
        [*args[1:], f"hydra.run.dir={tmp_path / 'runs' / 'sl'}"], cwd=tmp_path / "elsewhere"
    )
    assert res.returncode == 0, res.stderr[-1500:]
    cfg = OmegaConf.load(tmp_path / "runs" / "sl" / ".hydra" / "config.yaml")
    assert list(cfg.data.paths) == [str(data)] and cfg.coarsening.hierarchy.name == "none"


# --------------------------------------------------------------------------- compare's text
def _untrained(path):
    """A run killed right after its step-0 evaluation: one record, no training step."""
    from tests.analysis.test_compare import write_run

    p = write_run(path, [0, 1], [9.0, 9.0], "coarsening=even_odd", meta={"status": "failed"})
    first = (p / "metrics.jsonl").read_text().splitlines()[0]
    (p / "metrics.jsonl").write_text(first + "\n")
    return p


def test_a_run_without_a_training_step_gets_no_ratio_and_no_command(tmp_path):
    from mltrain.analysis import compare as C
    from tests.analysis.test_compare import SINGLE, write_run

    write_run(tmp_path / "sl", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    _untrained(tmp_path / "ml")
    res = C.compare([tmp_path], out=tmp_path / "out")
    ml = next(r for r in res.summary.rows if not r.config.single_level)
    assert ml.final_loss is None
    assert all(v is None for v in ml.ratios.values())
    assert "no training step: ml stopped after its step-0 evaluation" in ml.notes
    assert "train.target_flops=0" not in res.terminal and "0.00×" not in res.terminal
    assert "had no training step (stopped after its step-0 evaluation): no final loss" in (
        res.terminal
    )


def test_the_headline_says_when_neither_run_reached_the_target(tmp_path):
    from mltrain.analysis import compare as C
    from tests.analysis.test_compare import ISO, SINGLE, write_run

    write_run(tmp_path / "sl", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(tmp_path / "iso", ISO, [10, 8, 6, 4, 3], "coarsening=none", "train.target_flops=400")
    write_run(tmp_path / "ml", ISO, [10, 8, 6, 4, 2.5], "coarsening=even_odd", coarse=True)
    res = C.compare([tmp_path], out=tmp_path / "out")
    assert "--" not in res.terminal.split("\n\n")[0]
    assert "neither run reached the target (2.000)" in res.terminal


def test_a_still_running_run_is_marked_in_the_table_itself(tmp_path):
    from mltrain.analysis import compare as C
    from tests.analysis.test_compare import SINGLE, write_run

    write_run(tmp_path / "sl", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    write_run(
        tmp_path / "ml",
        SINGLE,
        [10, 7, 5, 3, 1.5],
        "coarsening=even_odd",
        meta={"status": "running"},
    )
    res = C.compare([tmp_path], out=tmp_path / "out")
    row = next(ln for ln in res.terminal.splitlines() if "1.5000" in ln)  # the table's row
    assert row.startswith("multilevel")
    assert "1.5000 (last evaluation: running at fine step 4)" in row
    md_row = next(ln for ln in res.markdown.splitlines() if ln.startswith("| multilevel"))
    assert "running at fine step 4" in md_row


def test_a_diverged_run_with_a_huge_finite_loss_does_not_flatten_the_others(tmp_path):
    from mltrain.analysis import compare as C
    from mltrain.analysis.figures import plots
    from mltrain.analysis.reports.summary import summarize
    from tests.analysis.test_compare import SINGLE, write_run

    write_run(tmp_path / "sl", SINGLE, [10, 8, 6, 4, 2], "coarsening=none")
    bad = write_run(
        tmp_path / "bad",
        [0, 100],
        [10, 9],
        "coarsening=even_odd",
        meta={"status": "diverged", "diverged_at": {"step": 2}},
    )
    metrics = bad / "metrics.jsonl"  # a last validation loss finite but huge
    metrics.write_text(metrics.read_text().replace('"val/loss": 9', '"val/loss": 800000000.0'))
    configs = C.group_configurations(C.find_runs([tmp_path]))
    fig = plots.plot_losses(configs, summarize(configs))
    val_axes = fig.axes[: len(plots.COLUMNS)]
    for ax in val_axes:
        lo, hi = ax.get_ylim()
        assert 1.5 < lo < 2 and hi < 11  # the healthy curve sets the range (4 % margin)
    texts = [t.get_text() for t in val_axes[0].texts]
    assert any("last loss 8e+08, above the axis" in t for t in texts), texts


def test_the_same_flops_command_of_a_smoke_sweep_reaches_its_flops(tmp_path):
    """mode=smoke caps runs at train.max_steps=20: the pasted same-FLOPs command lifts the cap
    (it ran 20 of its 24 steps, compare tabulated it as the same-FLOPs run and printed the
    same command again); a capped run is not counted as one."""
    import shlex

    from tests.helpers import run_mltrain

    hint = "no single-level run with the same FLOPs yet"
    sweep = ["-m", *TINY, "mode=smoke", "train.steps=20", "coarsening=none,even_odd"]
    r = run_mltrain(sweep, tmp_path)
    assert r.returncode == 0, r.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()

    def compare(*paths: Path) -> str:
        r = run_mltrain([str(p) for p in paths], tmp_path, entry="mltrain-compare")
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = compare(sweep_dir)
    assert hint in out
    (line,) = [x for x in out.splitlines() if "→ `" in x]
    args = shlex.split(line.split("→ `", 1)[1].rstrip("`"))
    assert args[:2] == ["mltrain", "coarsening=none"] and args[-2] == "train.max_steps=null"
    # it runs beside the even_odd run, inside the sweep mltrain-compare was given
    run_dir = Path(args[-1].removeprefix("hydra.run.dir="))
    assert run_dir.parent == sweep_dir and run_dir.name.endswith(
        "even_odd_data.batch_size_4_model_tiny_schedule.warmup_steps_0_train.eval_sequences_8_train.steps_20_single_level"
    )
    target = float(args[2].removeprefix("train.target_flops="))

    # the command without the lifted cap: capped, and not counted as the same-FLOPs run
    capped_dir = tmp_path / "capped"
    r = run_mltrain([*args[1:-2], f"hydra.run.dir={capped_dir}"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train.max_steps=20 caps the run" in r.stdout + r.stderr
    out = compare(sweep_dir, capped_dir)
    assert "single-level, capped short of" in out and hint in out
    assert "single-level, same FLOPs" not in out

    # the command as printed: it reaches its FLOPs, and the same compare finds its run
    r = run_mltrain(args[1:], tmp_path / "capped")  # from another directory
    assert r.returncode == 0, r.stderr
    assert "caps the run" not in r.stdout + r.stderr
    meta = json.loads((run_dir / "run.json").read_text())
    step = meta["planned_flops"] / meta["iterations"]
    assert abs(meta["planned_flops"] - target) <= step
    out = compare(sweep_dir, capped_dir)
    assert hint not in out
    assert "single-level, same FLOPs" in out
