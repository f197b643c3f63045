"""The judge over model sizes (mltrain.analysis.judging.envelope, sizes) on hand-built curves: three size
frontiers whose best size switches between budgets; every expected number is computed by hand
in the comments (log-linear interpolation between budgets, parameter counts of the tiny model)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from mltrain.analysis import compare as C
from mltrain.analysis.judging import envelope as E
from mltrain.analysis.judging import frontier as F
from mltrain.analysis.judging import judge as J
from mltrain.analysis.judging.curves import Bounded
from mltrain.analysis.judging.sizes import param_counts, run_params
from tests.analysis.test_frontier import method, tuned

# tiny model (d=32, T=32 positions, bias) with V=256: a block has 12·32² + 13·32 = 12704
# parameters, the final norm 64, the embeddings 256·32 + 32·32 = 9216
P1 = (12704 + 64 + 9216, 12704 + 64)  # 1 block: 21984 total, 12768 non-embedding
P2 = (2 * 12704 + 64 + 9216, 2 * 12704 + 64)  # 2 blocks: 34688, 25472
P4 = (4 * 12704 + 64 + 9216, 4 * 12704 + 64)  # 4 blocks: 60096, 50880
# best losses per budget (1000, 2000, 4000 FLOPs with head) of three sizes: the best size is
# 1 block at 1000, 2 blocks at 2000, 4 blocks at 4000
SIZES = {1: (4.0, 3.6, 3.5), 2: (4.2, 3.5, 3.2), 4: (4.5, 3.7, 3.1)}
V = "model.vocab_size=256"


def make_family(root: Path, sizes=SIZES, budgets=(1000, 2000, 4000), lrs=(0.1, 0.2, 0.4)):
    """Each size at each budget x lrs (the middle one best: +0.3 / +0.2 for the others)."""
    for n, best in sizes.items():
        for b, loss in zip(budgets, best):
            if loss is None:
                continue
            for lr, plus in zip(lrs, (0.3, 0.0, 0.2)):
                tuned(root, b, lr, loss + plus, 0, f"model.n_layer={n}", V)
    return root


def envelope_of(root: Path, configs=()):
    j = F.judge(C.find_runs([root]), list(configs))
    ej = E.judge_sizes(j.frontiers, list(configs))
    assert ej is not None and len(ej.envelopes) == 1
    return ej


def test_parameter_counts_by_hand_and_by_the_model():
    import torch

    from mltrain.config import typed
    from mltrain.model.transformer import ODETransformer
    from tests.helpers import compose

    for n, (total, nonembed) in ((1, P1), (2, P2), (4, P4)):
        assert param_counts(n, 32, 256, 32) == (p := param_counts(n, 32, 256, 32))
        assert (p.total, p.nonembed) == (total, nonembed)
        model = ODETransformer(typed(compose(f"model.n_layer={n}")).model, 256)
        # the tied head is one tensor: numel over parameters() counts it once
        assert sum(q.numel() for q in model.parameters()) == total
        emb = model.wte.weight.numel() + model.wpe.weight.numel()
        assert sum(q.numel() for q in model.parameters()) - emb == nonembed
    # without biases: 12·32² + 2·32 = 12352 per block, final norm 32
    assert param_counts(1, 32, 256, 32, bias=False).nonembed == 12352 + 32
    torch.manual_seed(0)


def test_envelope_switches_size_between_budgets(tmp_path):
    ej = envelope_of(make_family(tmp_path / "front"))
    (env,) = ej.envelopes
    assert [s.label for s in env.sizes] == ["1 block, d=32", "2 blocks, d=32", "4 blocks, d=32"]
    assert [(s.params.total, s.params.nonembed) for s in env.sizes] == [P1, P2, P4]
    pts = env.points["head"]
    assert [p.flops for p in pts] == [1000, 2000, 4000]
    assert [p.loss for p in pts] == pytest.approx([4.0, 3.5, 3.1])
    assert [p.size.key[0] for p in pts] == [1, 2, 4]
    # the non-embedding FLOPs of these runs are half: the same envelope at 500, 1000, 2000
    assert list(env.flops("nonembed")) == [500, 1000, 2000]
    # tokens per parameter: the best runs trained on 128 tokens (2 steps of 64)
    c = env.choices
    assert [x.size.key[0] for x in c] == [1, 2, 4]
    assert c[0].tokens == 128
    assert c[0].tokens_per_param("total") == pytest.approx(128 / 21984)  # 0.00582
    assert c[0].tokens_per_param("nonembed") == pytest.approx(128 / 12768)  # 0.01003
    assert c[2].tokens_per_param("nonembed") == pytest.approx(128 / 50880)


def test_r_same_and_r_env_by_hand(tmp_path):
    make_family(tmp_path / "front")
    method(tmp_path / "methods", "m", 3.4, 3000, "model.n_layer=4", V)
    configs = C.group_configurations(C.find_runs([tmp_path / "methods"]))
    ej = envelope_of(tmp_path / "front", configs)
    (res,) = ej.results
    (s,) = res.env.seeds
    # envelope (1000, 4.0), (2000, 3.5), (4000, 3.1): C*(3.4) = 2000 * 2**((3.5-3.4)/0.4)
    assert s.r["head"].lo == pytest.approx(
        3000 / (2000 * 2**0.25)
    )  # r_env = 3000 / 2378.41 = 1.26134
    assert s.r["head"].lo == pytest.approx(1.261345, abs=1e-6)
    # L*_env(3000) = 3.5 - 0.4 * log2(1.5) = 3.26601: gap +0.13399
    assert s.gap["head"].lo == pytest.approx(3.4 - (3.5 - 0.4 * math.log2(1.5)))
    # its own size (4 blocks: 4.5, 3.7, 3.1): C*(3.4) = 2000 * 2**0.5 -> r_same = 1.06066
    (same,) = res.same.seeds
    assert same.r["head"].lo == pytest.approx(3000 / (2000 * math.sqrt(2)))
    assert same.gap["head"].lo == pytest.approx(3.4 - (3.7 - 0.6 * math.log2(1.5)))  # +0.05098
    # non-embedding: the method spent 1000 (a third), the envelope is at 500, 1000, 2000
    assert s.r["nonembed"].lo == pytest.approx(1000 / (1000 * 2**0.25))  # 0.8409
    # its final model over the best size at its budget: nearest budget in log C is 4000
    # (log 4/3 < log 3/2), where the 4-block model is best: 1x, not exactly that budget
    mult, choice, exact = res.size_multiple("total")
    assert (mult, choice.budget, exact) == (1.0, 4000, False)
    assert res.params.total == P4[0]


def test_size_multiple_at_a_budget(tmp_path):
    make_family(tmp_path / "front")
    method(tmp_path / "methods", "m", 3.4, 2000, "model.n_layer=4", V)
    configs = C.group_configurations(C.find_runs([tmp_path / "methods"]))
    (res,) = envelope_of(tmp_path / "front", configs).results
    # at 2000 FLOPs the 2-block model is best: 60096 / 34688 = 1.732 total, 50880 / 25472 non-embed
    mult, choice, exact = res.size_multiple("total")
    assert exact and choice.size.key[0] == 2 and mult == pytest.approx(60096 / 34688)
    assert res.size_multiple("nonembed")[0] == pytest.approx(50880 / 25472)


def test_bounds_outside_the_envelope(tmp_path):
    make_family(tmp_path / "front")
    (env,) = envelope_of(tmp_path / "front").envelopes
    # below the lowest envelope loss: C* > 4000 -> r < 3000/4000
    assert env.flops_for(3.0) == Bounded.above(4000)
    assert J.ratio(3000, env.flops_for(3.0)) == Bounded.below(0.75)
    # above the first: C* < 1000 -> r > 3
    assert J.ratio(3000, env.flops_for(4.2)) == Bounded.above(3.0)
    # beyond the largest budget: L*_env(8000) < 3.1; below the smallest: > 4.0
    assert env.loss_at(8000) == Bounded.below(3.1)
    assert env.loss_at(500) == Bounded.above(4.0)


def test_sizes_with_different_ranges_are_never_extrapolated(tmp_path):
    # 1 block at 1000 and 2000 only, 4 blocks at 2000 and 4000 only
    sizes = {1: (4.0, 3.6, None), 4: (None, 3.7, 3.1)}
    (env,) = envelope_of(make_family(tmp_path / "front", sizes)).envelopes
    pts = env.points["head"]
    # 1000: only the 1-block frontier holds it; 2000: min(3.6, 3.7); 4000: only 4 blocks
    assert [(p.flops, p.loss, p.size.key[0]) for p in pts] == [
        (1000, 4.0, 1),
        (2000, 3.6, 1),
        (4000, pytest.approx(3.1), 4),
    ]
    assert pts[1].others == {"1 block, d=32": 3.6, "4 blocks, d=32": 3.7}


def test_size_edge_lr_edge_and_seed_warnings(tmp_path):
    root = make_family(tmp_path / "front")
    # a 2-block run at 1000 with lr 0.8, better than all: its best lr is at the grid's edge
    tuned(root, 1000, 0.8, 4.1, 0, "model.n_layer=2", V)
    (env,) = envelope_of(root).envelopes
    w = env.warnings
    grid = "(1 block, d=32; 2 blocks, d=32; 4 blocks, d=32)"
    M1, M2, M4 = (f"model.n_layer_{n}_model.vocab_size_256" for n in (1, 2, 4))  # run names
    assert (
        f"budget 1.00e3: the best size (1 block, d=32) is the smallest of the size grid {grid}: "
        "the compute-optimal size may lie beyond it; add a smaller model with: mltrain -m "
        "coarsening=none train.target_flops=1000 model.n_layer=1 model.vocab_size=256 "
        "model.n_embd=16 model.n_head=1 optimizer.lr=0.1,0.2,0.4 train.seed=0 "
        f"hydra.sweep.dir={root}/b1000_lr0.2_s0_{M1}_n_embd16_n_head1_lr0.1-0.2-0.4" in w
    )
    assert (
        f"budget 4.00e3: the best size (4 blocks, d=32) is the largest of the size grid {grid}: "
        "the compute-optimal size may lie beyond it; add a larger model with: mltrain -m "
        "coarsening=none train.target_flops=4000 model.vocab_size=256 model.n_layer=8 "
        "optimizer.lr=0.1,0.2,0.4 train.seed=0 "
        f"hydra.sweep.dir={root}/b4000_lr0.2_s0_{M4}_n_layer8_lr0.1-0.2-0.4" in w
    )
    assert not any(x.startswith("budget 2.00e3: the best size") for x in w)
    # each size's own warnings (printed with its frontier by mltrain.analysis.judging.frontier)
    w = env.size_warnings
    assert (
        "2 blocks, d=32: budget 1.00e3: best lr 0.8 is the largest tried (0.1, 0.2, 0.4, 0.8): "
        "the frontier may be under-tuned; extend the grid with: mltrain -m coarsening=none "
        "train.target_flops=1000 model.n_layer=2 model.vocab_size=256 optimizer.lr=1.6 "
        f"train.seed=0 hydra.sweep.dir={root}/b1000_lr0.8_s0_{M2}_lr1.6" in w
    )
    seeds = [x for x in w if x.startswith("4 blocks, d=32: budget 4.00e3: best lr 0.2 has only")]
    assert len(seeds) == 1 and seeds[0].endswith(
        "add them with: mltrain -m coarsening=none train.target_flops=4000 optimizer.lr=0.2 "
        "model.n_layer=4 model.vocab_size=256 train.seed=1,2 "
        f"hydra.sweep.dir={root}/b4000_lr0.2_s0_{M4}_seeds1-2"
    )


def test_one_size_gives_no_envelope(tmp_path):
    make_family(tmp_path / "front", {2: SIZES[2]})
    j = F.judge(C.find_runs([tmp_path / "front"]), [])
    assert E.judge_sizes(j.frontiers, []) is None


def test_run_params_from_run_json(tmp_path):
    run = tuned(tmp_path, 1000, 0.1, 4.0, 0, meta={"params": {"total": 7, "nonembed": 5}})
    (r,) = C.find_runs([run])
    assert (run_params(r).total, run_params(r).nonembed) == (7, 5)


def test_compare_writes_the_envelope_section_plots_and_csv(tmp_path, capsys):
    make_family(tmp_path / "front")
    method(tmp_path / "methods", "m", 3.4, 3000, "model.n_layer=4", V)
    C.main([str(tmp_path / "methods"), "--frontier", str(tmp_path / "front")])
    out = capsys.readouterr().out
    cmp = tmp_path / "methods" / "compare"
    assert (cmp / "isoflop.png").stat().st_size > 10_000
    assert (cmp / "envelope.png").stat().st_size > 10_000
    # the best size per budget and both r on the terminal (hand values of test_r_same_...)
    assert "  1.00e3 -> 1 block, d=32, 4.0000, 0.00582 / 0.01" in out
    assert "  2.00e3 -> 2 blocks, d=32, 3.5000" in out
    assert "  4.00e3 -> 4 blocks, d=32, 3.1000" in out
    line = [x for x in out.splitlines() if x.startswith("multilevel")][-1]
    assert "1.061" in line and "1.261" in line and "0.841" in line
    assert "1× (1× non-embed) 4 blocks, d=32 at nearest budget 4.00e3" in line
    md = (cmp / "summary.md").read_text()
    assert "## Against the compute-optimal envelope (model sizes)" in md
    import csv

    (row,) = list(csv.DictReader(open(cmp / "envelope.csv")))
    assert float(row["r_env_head"]) == pytest.approx(3000 / (2000 * 2**0.25))
    assert float(row["r_same_head"]) == pytest.approx(3000 / (2000 * math.sqrt(2)))
    assert row["best_size"] == "4 blocks, d=32" and float(row["params"]) == P4[0]


def test_warnings_no_judged_number_reads_follow_the_others_folded(tmp_path, capsys):
    """One seed everywhere: each of the 9 (size, budget) points warns. The best sizes are 1
    block at 1000 (4.0), 2 at 2000 (3.5) and 4 at 4000 FLOPs (3.1); the method ends at 2
    blocks (its r_same reads every 2-block point). Of the others, 1 block at 2000 is 0.03
    above the best there (3.53: within 0.05, better tuning could make it the best) and a
    4-block run at 1000 is still running (its point may yet be anywhere): both stay shown.
    The other 3, (1, 4000) +0.4, (4, 1000) +0.5 and (4, 2000) +0.2 above the best: their
    warnings follow the others in summary.md, folded, and are one counted line on the terminal."""
    make_family(
        tmp_path / "front", sizes={1: (4.0, 3.53, 3.5), 2: (4.2, 3.5, 3.2), 4: (4.5, 3.7, 3.1)}
    )
    tuned(tmp_path / "front", 1000, 0.8, 3.0, 0, "model.n_layer=4", V, meta={"status": "running"})
    method(tmp_path / "methods", "m", 3.4, 3000, "model.n_layer=2", V)
    C.main([str(tmp_path / "methods"), "--frontier", str(tmp_path / "front")])
    out = capsys.readouterr().out
    md = (tmp_path / "methods" / "compare" / "summary.md").read_text()
    shown, folded = md.split("### Warnings\n", 1)[1].split("<details>", 1)
    folded = folded.split("</details>", 1)[0]

    def points(text, what="best lr .* has only one seed"):
        return {(int(n), b) for n, b in re.findall(rf"n_layer=(\d): budget (\S+): {what}", text)}

    read = {(1, "1.00e3"), (2, "1.00e3"), (2, "2.00e3"), (2, "4.00e3"), (4, "4.00e3")}
    assert points(shown) == read | {(1, "2.00e3")}
    assert points(shown, "lr 0.8: seed 0 left out, running") == {(4, "1.00e3")}
    assert points(folded) == {(1, "4.00e3"), (4, "1.00e3"), (4, "2.00e3")}
    assert (
        "<summary>3 more, about the lr grid or seeds of sizes more than 0.05 nats above" in folded
    )
    assert points(out) == read | {(1, "2.00e3")}
    assert "warning: 3 more, about the lr grid or seeds of sizes more than 0.05 nats above" in out


def test_a_method_with_a_schedule_no_size_tried_is_warned(tmp_path):
    """Against the envelope, the schedules its sizes tried: a wsd method against cosine sizes
    has an r_env that credits the schedule (compare said nothing)."""
    make_family(tmp_path / "front")
    method(tmp_path / "methods", "m", 3.4, 3000, "model.n_layer=4", V, "schedule=wsd")
    configs = C.group_configurations(C.find_runs([tmp_path / "methods"]))
    ej = envelope_of(tmp_path / "front", configs)
    (res,) = ej.results
    assert [w for w in ej.all_warnings() if "not among those" in w] == [
        f"`{configs[0].label}`: schedule wsd not among those `envelope, SGD (3 sizes)` tried "
        "(cosine): r_env may credit the schedule; add frontier runs with schedule=wsd"
    ]
    # one size that tried wsd (at one budget) is enough: no warning
    for lr in (0.1, 0.2, 0.4):
        tuned(tmp_path / "front", 1000, lr, 4.6, 0, "model.n_layer=2", V, "schedule=wsd")
    ej = envelope_of(tmp_path / "front", configs)
    assert [w for w in ej.all_warnings() if "not among those" in w] == []


def test_size_grid_edge_warnings_print_commands_that_run(tmp_path):
    """ "add a smaller/larger model" prints the command that adds it at that budget: the edge
    size's best run with half the blocks (one block: half the width, as many heads per width)
    or twice the blocks, at every learning rate that size tried there; each composes and plans
    as mltrain would run it (tiny model, budgets of tens of steps)."""
    from tests.test_docs_commands import Command, compose_command

    root = tmp_path / "front"
    budgets = (40_000_000_000, 80_000_000_000, 160_000_000_000)
    for n, best in SIZES.items():  # best size: 1 block at the first budget, 4 at the last
        for b, loss in zip(budgets, best):
            for lr, plus in zip((0.1, 0.2, 0.4), (0.3, 0.0, 0.2)):
                tuned(root, b, lr, loss + plus, 0, "model=tiny", f"model.n_layer={n}")
    (env,) = envelope_of(root).envelopes
    grid = "(1 block, d=32; 2 blocks, d=32; 4 blocks, d=32)"
    assert env.warnings == [
        f"budget 4.00e10: the best size (1 block, d=32) is the smallest of the size grid {grid}: "
        "the compute-optimal size may lie beyond it; add a smaller model with: mltrain -m "
        "coarsening=none train.target_flops=40000000000 model=tiny model.n_layer=1 "
        "model.n_embd=16 model.n_head=1 optimizer.lr=0.1,0.2,0.4 train.seed=0 "
        f"hydra.sweep.dir={root}/b4e_10_lr0.2_s0_model_tiny_model.n_layer_1_n_embd16_"
        "n_head1_lr0.1-0.2-0.4",
        f"budget 1.60e11: the best size (4 blocks, d=32) is the largest of the size grid {grid}: "
        "the compute-optimal size may lie beyond it; add a larger model with: mltrain -m "
        "coarsening=none train.target_flops=160000000000 model=tiny model.n_layer=8 "
        "optimizer.lr=0.1,0.2,0.4 train.seed=0 "
        f"hydra.sweep.dir={root}/b1.6e_11_lr0.2_s0_model_tiny_model.n_layer_4_n_layer8_lr0.1-0.2-0.4",
    ]
    for w in env.warnings:
        compose_command(Command("warning", 0, w.split(" with: ", 1)[1]))


def test_an_envelope_of_one_point_is_drawn(tmp_path):
    """Two sizes measured at one budget: the envelope is one point, drawn with a marker (a line
    through one point draws nothing)."""
    from mltrain.analysis.figures import isoflop_plot

    ej = envelope_of(make_family(tmp_path / "front", {1: (4.0,), 2: (4.2,)}, budgets=(1000,)))
    fig = isoflop_plot.plot_envelope(ej)
    for ax, x in zip(fig.axes, (1000, 500)):  # with head, non-embedding (half)
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "envelope L*_env(C)"]
        assert (list(line.get_xdata()), list(line.get_ydata())) == ([x], [4.0])
        assert line.get_marker() not in ("None", "", " ", None) and line.get_markersize() > 0
