"""Every script in scripts/ (not scripts/archive/) has a fast smoke test: the benchmarks on the
tiny model for one round, the table and plot tools on the committed judge outputs, the study
drivers in tests/test_script_drivers.py.

SMOKE_TESTS names each script's tests; a new script without one fails
test_every_script_has_a_smoke_test."""

from __future__ import annotations

import importlib.util
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SE = ROOT / "docs" / "results" / "second_edition"
NUMBER = r"([-+0-9.e]+|nan|inf)"

# script -> the tests (module::function) that run it
SMOKE_TESTS = {
    "bench_allreduce.py": ["tests/test_scripts.py::test_bench_allreduce"],
    "bench_checkpoint.py": ["tests/test_scripts.py::test_bench_checkpoint"],
    "bench_levels.py": ["tests/test_scripts.py::test_bench_levels"],
    "bench_time_ratio.py": [
        "tests/test_scripts.py::test_bench_time_ratio_by_hand_from_its_levels",
        "tests/test_scripts.py::test_bench_time_ratio_family_jobs_compose_and_bad_arguments_say_so",
    ],
    "bench_throughput.py": [
        "tests/test_scripts.py::test_bench_throughput_with_the_gpu_check_dry_run_arguments"
    ],
    "benchlib.py": ["tests/test_scripts.py::test_benchlib_interleaves_in_rotating_order"],
    "demo.sh": ["tests/test_script_drivers.py::test_demo_commands_compose_and_the_compare_follows"],
    "envelope.sh": ["tests/test_script_drivers.py::test_envelope_runs_a_trunk_then_its_branches"],
    "envelope_second_edition.py": [
        "tests/test_scripts.py::test_envelope_second_edition_reproduces_the_committed_tables"
    ],
    "flops_budget.py": ["tests/test_scripts.py::test_flops_budget_by_hand_and_bad_input"],
    "gpu_check.sh": [
        "tests/test_gpu_script.py::test_gpu_check_runs_every_step_from_the_repository_root_within_eight_minutes",
        "tests/test_gpu_script.py::test_the_dry_run_runs_compose_to_their_schemes",
    ],
    "headline_table.py": [
        "tests/test_scripts.py::test_headline_table_reproduces_the_committed_one"
    ],
    "plot_scaling.py": ["tests/test_scripts.py::test_plot_scaling_plots_the_csv_rows"],
    "results.sh": [
        "tests/test_script_drivers.py::test_results_every_part_runs_commands_that_compose"
    ],
    "results_third.sh": [
        "tests/test_script_drivers.py::test_results_third_every_part_runs_commands_that_compose"
    ],
    "runlib.sh": [
        "tests/test_script_drivers.py::test_runlib_marks_done_skips_and_reports_failures"
    ],
    "third_headline.py": ["tests/test_results_third.py::test_headline_rows_by_hand"],
    "third_pick.py": [
        "tests/test_third_pick.py::test_best_picks_the_lowest_finished_final_loss_and_drops_the_callers_keys"
    ],
    "wandb_view.py": ["tests/analysis/test_compare.py::test_wandb_view_definition_offline"],
}


def test_every_script_has_a_smoke_test():
    scripts = {p.name for p in SCRIPTS.iterdir() if p.is_file()}
    assert scripts == set(SMOKE_TESTS), "scripts without a smoke test (or gone): " + str(
        scripts ^ set(SMOKE_TESTS)
    )
    for tests in SMOKE_TESTS.values():
        for t in tests:
            path, name = t.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), t


def test_scripts_use_no_private_member_of_another_object():
    """Scripts use mltrain's public API (a private trainer member moved once and broke two
    benchmarks unseen): no ``x._name`` on anything but ``self``."""
    import ast

    offenders = []
    for path in sorted(SCRIPTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not offenders, offenders


# --------------------------------------------------------------------------- helpers
def load(name: str):
    """scripts/<name>.py as a module (main(argv) runs it in this process)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numbers(pattern: str, text: str) -> list[float]:
    m = re.search(pattern, text)
    assert m, (pattern, text)
    return [float(x) for x in m.groups()]


def positive(*xs: float) -> bool:
    return all(math.isfinite(x) and x > 0 for x in xs)


# tiny: d=32, 4 blocks, T=32, the 8192-entry BPE; per token and block evaluation 24d² + 4Td,
# head 2dV (DESIGN.md section 3); even_odd's coarse_a evaluates 2 of the 4 blocks
BLOCK, HEAD = 24 * 32 * 32 + 4 * 32 * 32, 2 * 32 * 8192
COARSE_OVER_FINE = (2 * BLOCK + HEAD) / (4 * BLOCK + HEAD)  # 0.9103


def dry_run_bench_args() -> list[str]:
    """The benchmark arguments of gpu_check.sh's CPU dry run, read from the script."""
    text = (SCRIPTS / "gpu_check.sh").read_text()
    (args,) = re.findall(r"^\s*BENCH=\(([^)]*--device cpu[^)]*)\)", text, re.M)
    return shlex.split(args)


# --------------------------------------------------------------------------- benchmarks
def test_bench_throughput_with_the_gpu_check_dry_run_arguments(capsys):
    args = dry_run_bench_args()
    assert args[:2] == ["--models", "tiny"]
    load("bench_throughput").main(args)
    out = capsys.readouterr().out
    plain, ml, ratio = numbers(
        rf"tiny \(cpu, 4x32 tokens/step\): plain PyTorch {NUMBER} tok/s, mltrain {NUMBER} "
        rf"tok/s, ratio mltrain/plain {NUMBER}",
        out,
    )
    assert positive(plain, ml, ratio) and ratio == pytest.approx(ml / plain, rel=0.02)
    measured, analytic, q = numbers(
        rf"tiny: coarse/fine step time {NUMBER} vs analytic FLOP ratio {NUMBER} "
        rf"\(measured/analytic {NUMBER}\)",
        out,
    )
    assert positive(measured, q) and analytic == round(COARSE_OVER_FINE, 3)
    with pytest.raises(SystemExit) as e:
        load("bench_throughput").main(["--models", "huge"])
    assert e.value.code == 2
    assert "--models huge is not allowed: choose from tiny, small, paper" in capsys.readouterr().err


def test_bench_levels(capsys, monkeypatch):
    import contextlib
    import io
    import types

    bench = load("bench_levels")

    def in_process(cmd, **_):  # the memory workers in this process (no interpreter start-ups)
        assert cmd[:3] == [sys.executable, bench.__file__, "--worker"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            bench.main(cmd[2:])
        return types.SimpleNamespace(stdout=buf.getvalue())

    monkeypatch.setattr(bench.subprocess, "run", in_process)
    bench.main(["--models", "tiny", "--rounds", "1", "--steps", "3"])
    out = capsys.readouterr().out
    ratio, coarse_ms, fine_ms, head, nonembed, q = numbers(
        rf"tiny: coarse/fine step time {NUMBER} \(median {NUMBER} / {NUMBER} ms\), analytic FLOP "
        rf"ratio {NUMBER} with head, {NUMBER} non-embedding; measured/analytic {NUMBER}",
        out,
    )
    assert positive(ratio, coarse_ms, fine_ms, q)
    assert head == round(COARSE_OVER_FINE, 3) and nonembed == 0.5  # 2 of 4 blocks
    multi, single, mem = numbers(
        rf"tiny: peak RSS multilevel {NUMBER} MiB / single-level {NUMBER} MiB = {NUMBER}", out
    )
    assert positive(multi, single) and mem == pytest.approx(multi / single, abs=0.01)


def test_bench_checkpoint(capsys):
    load("bench_checkpoint").main(["--smoke", "--steps", "4", "--every", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    params, mib, write = numbers(
        rf"tiny model \({NUMBER} M parameters, optimizers of 3 levels\): checkpoint {NUMBER} MiB, "
        rf"write {NUMBER} s \(median of 1\)",
        out,
    )
    # tied embedding 8192x32, positions 32x32, 4 blocks of 12,704, final norm 64: 0.314 M
    assert params == 0.3 and positive(write)
    assert mib * 2**20 >= 314_048 * 4  # at least the fp32 parameters
    ratio, with_ck, without = numbers(
        rf"tiny model, 4 fine steps: checkpoint every 2 steps / only at the end = {NUMBER} "
        rf"\(medians {NUMBER} s / {NUMBER} s\)",
        out,
    )
    assert positive(ratio, with_ck, without)


def test_bench_allreduce():
    """Two gloo processes (torch.multiprocessing.spawn needs the script as __main__)."""
    res = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_allreduce.py"), "--model", "tiny"]
        + ["--rounds", "1", "--per-round", "1", "--batch", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    flat, bucketed, ratio = numbers(
        rf"tiny \(0.3 M parameters, batch 2, 2 gloo processes\): flat {NUMBER} ms/step, "
        rf"bucketed {NUMBER} ms/step, ratio bucketed/flat {NUMBER}; same gradients: True",
        res.stdout,
    )
    # the times are printed to 0.1 ms and the ratio to 0.001: the ratio of the printed times is
    # off by at most ratio x 0.05 ms x (1/flat + 1/bucketed) (a fixed 0.01 failed at ~5 ms/step)
    slack = 0.0005 + ratio * 0.05 * (1 / flat + 1 / bucketed) * 1.01
    assert positive(flat, bucketed) and abs(ratio - bucketed / flat) <= slack


def test_benchlib_interleaves_in_rotating_order():
    bench = load("benchlib")
    calls = []
    med = bench.interleaved(
        {k: (lambda k=k: calls.append(k)) for k in "abc"}, rounds=3, per_round=1, warmup=1
    )
    # one warm-up call each, then rounds starting at a, b, c in turn
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"
    assert set(med) == set("abc") and all(v >= 0 for v in med.values())


def test_flops_budget_by_hand_and_bad_input(capsys, monkeypatch):
    fb = load("flops_budget")
    # single-level, 5 fine steps of 4 x 32 tokens: 3 x (4 blocks + head) per token
    monkeypatch.setattr(
        sys,
        "argv",
        ["flops_budget.py", "--total", "model=tiny", "coarsening=none"]
        + ["data.batch_size=4", "train.steps=5", "schedule.warmup_steps=0"],
    )
    fb.main()
    assert int(capsys.readouterr().out) == 5 * 4 * 32 * 3 * (4 * BLOCK + HEAD)
    monkeypatch.setattr(sys, "argv", ["flops_budget.py", "coarsening.vcycle.delta=1.5"])
    with pytest.raises(SystemExit) as e:
        fb.main()
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("flops_budget.py: error: coarsening.vcycle.delta=1.5 is not allowed")
    # as a command, in an interpreter of its own (the tests' process has imported every
    # scheme; the script once relied on mltrain.cli's import of them and failed alone)
    args = ["--total", "model=tiny", "coarsening=none", "data.batch_size=4", "train.steps=5"]
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "flops_budget.py"),
            *args,
            "schedule.warmup_steps=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) == 5 * 4 * 32 * 3 * (4 * BLOCK + HEAD)


# --------------------------------------------------------------------------- study tools
def test_envelope_second_edition_reproduces_the_committed_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # it reads docs/results/second_edition/
    load("envelope_second_edition").main(["--out", str(tmp_path)])
    assert "| 1 x B | 3 | 5.0177 | 0.571 (0.558 to 0.592) |" in capsys.readouterr().out
    for name in ("summary.md", "points.csv", "growth.csv"):
        assert (tmp_path / name).read_text() == (SE / "envelope" / name).read_text(), name


def test_headline_table_reproduces_the_committed_one(tmp_path, capsys):
    csvs = [str(SE / part / "frontier.csv") for part in ("adamw", "controls", "corrections", "sgd")]
    load("headline_table").main([*csvs, "--runs", str(tmp_path)])  # no runs: no wall-clock
    got = capsys.readouterr().out.splitlines()
    committed = (SE / "headline.md").read_text().splitlines()
    assert len(got) == len(committed) > 10
    for a, b in zip(got, committed):  # every column but the wall-clock ratio
        assert a.split("|")[:-2] == b.split("|")[:-2]


def test_plot_scaling_plots_the_csv_rows(tmp_path, monkeypatch, capsys):
    import csv

    from matplotlib.figure import Figure

    figs = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self))
    csv_path = SE / "adamw" / "frontier.csv"
    load("plot_scaling").main([str(csv_path), "--schemes", "grow_rec442", "--out", "r.png"])
    assert capsys.readouterr().out.strip() == "plot_scaling: wrote r.png"
    rows = [r for r in csv.DictReader(csv_path.open()) if r["run"].startswith("grow_rec442_")]
    want = {(float(r["flops"]), float(r["r_head"])) for r in rows}
    (fig,) = figs
    got = {tuple(map(float, xy)) for c in fig.axes[0].collections for xy in c.get_offsets()}
    assert want and want <= got


def test_bench_time_ratio_by_hand_from_its_levels(tmp_path, capsys):
    """Two envelope sizes and a recursive growth (tiny: 4 blocks, levels of 1, 2, 4 blocks), one
    round: every level is timed, and the time ratio is the hand formula of the script's docstring
    over the measured levels.csv (the mean of two seeds; a bound row's ratio is a bound too)."""
    import csv
    import json

    import yaml

    bench = load("bench_time_ratio")
    runs = tmp_path / "runs"
    tiny = ["model=tiny", "data.batch_size=4", "train.eval_sequences=8"]
    made = {
        "env_L2_lr4e-3_b8_s0": ["experiment=third_envelope", *tiny, "model.n_layer=2"],
        "env_L4_lr4e-3_b8_s0": ["experiment=third_envelope", *tiny, "model.n_layer=4"],
        "grow_b8_s0": ["experiment=grow_recursive", *tiny, "train.flops_scale=0.125"],
        "grow_b8_s1": ["experiment=grow_recursive", *tiny, "train.seed=1"],
        "grow_b1_s0": ["experiment=grow_recursive", *tiny, "train.branch_from=/nowhere"],
        # growth to the best size: other levels per budget (8 blocks at b1: 2, 4, 8)
        "gb_b8_s0": ["experiment=grow_recursive", *tiny],
        "gb_b1_s0": ["experiment=grow_recursive", *tiny, "model.n_layer=8"],
    }
    steps = {"coarse_2": 40, "coarse_1": 40, "fine": 20}
    for name, over in made.items():
        (runs / name / ".hydra").mkdir(parents=True)
        (runs / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(over))
        (runs / name / "run.json").write_text(json.dumps({"steps_per_level": steps}))
    head = ["run", "flops", "r_env_head", "r_env_head_kind", "best_size"]
    rows = [
        ["grow_b8_s0", "1e12", "1.25", "=", "2 blocks, d=32"],
        ["grow_b8_s1", "1e12", "0.8", "=", "2 blocks, d=32"],
        ["grow_b1_s0", "8e12", "1.5", ">", "4 blocks, d=32"],  # a bound: a bound ratio
        ["gb_b8_s0", "1e12", "1.0", "=", "2 blocks, d=32"],
        ["gb_b1_s0", "8e12", "1.0", "=", "4 blocks, d=32"],
    ]
    env = tmp_path / "envelope.csv"
    with open(env, "w", newline="") as fh:
        csv.writer(fh).writerows([head, *rows])
    out = tmp_path / "time"
    assert bench.main([str(env), "--runs", str(runs), "--out", str(out), "--rounds", "1"]) == 0
    with open(out / "levels.csv") as fh:
        levels = {(r["job"], r["level"]): r for r in csv.DictReader(fh)}
    assert set(levels) == {
        ("grow", "coarse_2"), ("grow", "coarse_1"), ("grow", "fine"),
        ("env_L2", "fine"), ("env_L4", "fine"),
        ("gb", "coarse_2"), ("gb", "coarse_1"), ("gb", "fine"),
        ("gb@b1", "coarse_2"), ("gb@b1", "coarse_1"), ("gb@b1", "fine"),
    }  # fmt: skip
    # the scheme timed with the levels each budget's runs had: 1, 2, 4 and 2, 4, 8 blocks
    assert [int(levels[("gb@b1", lv)]["blocks"]) for lv in ("coarse_2", "coarse_1", "fine")] == [
        2,
        4,
        8,
    ]
    assert [int(levels[("grow", lv)]["blocks"]) for lv in ("coarse_2", "coarse_1", "fine")] == [
        1,
        2,
        4,
    ]
    sec = {k: float(v["cpu_s_per_step"]) for k, v in levels.items()}
    t_scheme = sum(n * sec[("grow", lv)] for lv, n in steps.items())
    per_flop = sec[("env_L2", "fine")] / float(levels[("env_L2", "fine")]["step_flops"])
    want = (t_scheme / (1e12 / 1.25 * per_flop) + t_scheme / (1e12 / 0.8 * per_flop)) / 2
    with open(out / "time.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [(r["scheme"], r["budget"], r["time_ratio_kind"]) for r in got] == [
        ("gb", "b1", "="),
        ("gb", "b8", "="),
        ("grow", "b1", ">"),
        ("grow", "b8", "="),
    ]
    got = {(r["scheme"], r["budget"]): float(r["time_ratio"]) for r in got}
    assert got[("grow", "b8")] == pytest.approx(want, rel=1e-12)
    per_flop4 = sec[("env_L4", "fine")] / float(levels[("env_L4", "fine")]["step_flops"])
    assert got[("grow", "b1")] == pytest.approx(t_scheme / (8e12 / 1.5 * per_flop4), rel=1e-12)
    t_gb1 = sum(n * sec[("gb@b1", lv)] for lv, n in steps.items())
    assert got[("gb", "b1")] == pytest.approx(t_gb1 / (8e12 * per_flop4), rel=1e-12)
    printed = capsys.readouterr().out
    assert (
        "grow b8: time ratio " in printed
        and f"grow b1: time ratio > {got[('grow', 'b1')]:.3f}" in printed
    )
    (runs / "grow_b8_s1" / ".hydra" / "overrides.yaml").unlink()
    with pytest.raises(SystemExit, match="no record of run"):
        bench.main([str(env), "--runs", str(runs), "--out", str(out), "--rounds", "1"])


def test_bench_time_ratio_family_jobs_compose_and_bad_arguments_say_so(capsys):
    """--family's jobs (the third edition's presets at d=48) compose into valid configs; the two
    modes are exclusive."""
    from mltrain.config import compose

    bench = load("bench_time_ratio")
    for name, over in bench.FAMILY.items():
        cfg = compose([*over, "logger=none"])
        assert cfg.model.n_embd == 48, name
    with pytest.raises(SystemExit) as e:
        bench.main(["--out", "/tmp/unused"])
    assert e.value.code == 2
    assert "give envelope.csv files with --runs, or --family (not both)" in capsys.readouterr().err
