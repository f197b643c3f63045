"""Faults found when mltrain was tried as users do: float range sweeps, an empty data file,
printed commands a shell cannot run, a run without a training step, unreadable headlines and
plots, ``--cfg`` and a still-running run in the table. Each test fails on the code before its
fix."""

from __future__ import annotations

import pytest

from tests.helpers import TINY, cli

SMOKE = ["mode=smoke", *TINY]


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
    from mltrain.cli import check_range_sweeps

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
