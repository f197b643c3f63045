"""The judge protocol (mltrain.analysis.judging.judge) on hand-built two-point frontiers: both
judges implement it, and r, r_same, r_env are computed by hand in the comments (linear in
log FLOPs between the two budgets)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from mltrain.analysis.judging import judge as J
from mltrain.analysis.judging.budgets import Budget
from mltrain.analysis.judging.curves import Bounded
from mltrain.analysis.judging.envelope import Envelope, Point, Size
from mltrain.analysis.judging.frontier import Frontier

FLAT = {"model.n_layer": 2, "model.seq_len": 32, "data.batch_size": 4, "data.name": "tiny"}


def fake_run(flops: float, **changes):
    """A stand-in for a best run: the FLOPs it spent (both totals) and its settings."""
    return SimpleNamespace(total=lambda total: flops, flat=FLAT | changes, world=1)


def two_point(losses=(4.0, 3.0), budgets=(1e12, 4e12), label="tuned frontier, AdamW", **flat):
    bs = [
        Budget(c, {0.1: []}, {0.1: loss}, 0.1, [fake_run(c, **flat)])
        for c, loss in zip(budgets, losses)
    ]
    return Frontier(label, bs, [], [])


def envelope_of(*frontiers: Frontier) -> Envelope:
    """Two sizes; the envelope's points are the first size at 1e12 and the second at 4e12."""
    sizes = [Size(f, (n, 32, 4), f"{n} blocks", None) for n, f in enumerate(frontiers, 1)]
    pts = [Point(1e12, 4.0, 4.0, sizes[0]), Point(4e12, 3.0, 3.0, sizes[1])]
    return Envelope("envelope", sizes, {"head": pts, "nonembed": pts}, [])


def test_frontier_and_envelope_are_judges():
    f = two_point()
    env = envelope_of(two_point((4.2, 3.2)), f)
    assert isinstance(f, J.Judge) and isinstance(env, J.Judge)
    assert not isinstance(SimpleNamespace(label="x"), J.Judge)
    assert f.bounds() == (1e12, 4e12) and env.bounds("nonembed") == (1e12, 4e12)


def test_loss_at_and_flops_for_a_two_point_frontier_by_hand():
    f = two_point()
    # halfway in log C between 1e12 and 4e12 is 2e12: L* = (4.0 + 3.0) / 2
    got = f.loss_at(2e12)
    assert got.is_exact and got.lo == pytest.approx(3.5)
    assert f.flops_for(3.5).lo == pytest.approx(2e12)
    # outside the measured FLOPs: bounds, not extrapolations
    assert f.loss_at(8e12) == Bounded.below(3.0) and f.loss_at(5e11) == Bounded.above(4.0)
    # r = 3e12 / 2e12
    assert J.r_frontier(3e12, 3.5, f).lo == pytest.approx(1.5)


def test_r_env_and_r_same_by_hand():
    own = two_point((4.2, 3.2))  # the method's own size: 4.2 at 1e12, 3.2 at 4e12
    env = envelope_of(own, two_point())
    # L = 3.25 on the envelope (4.0 -> 3.0): t = 0.75 of the way in log C, C* = 1e12 * 4^0.75
    assert J.r_env(2e12, 3.25, env).lo == pytest.approx(2 / 4**0.75)  # 0.70711
    # on its own size (4.2 -> 3.2): t = 0.95, C* = 1e12 * 4^0.95 = 3.7321e12
    assert J.r_same(2e12, 3.25, own).lo == pytest.approx(0.53589, abs=1e-5)  # 2 / 4^0.95
    # below the envelope's last loss C* > 4e12: r_env < 2e12 / 4e12
    assert J.r_env(2e12, 2.9, env) == Bounded.below(0.5)
    assert math.isclose(J.r_env(1e12, 4.0, env).lo, 1.0)


def test_each_judge_decides_which_differences_it_warns_about():
    f = two_point()
    env = envelope_of(two_point((4.2, 3.2)), f)
    other = fake_run(1e12, **{"model.n_layer": 4, "data.name": "other"})
    assert f.differences(other) == {"data": ["data.name=other"], "model": ["model.n_layer=4"]}
    # an envelope's sizes differ in the model: only the data is a difference
    assert env.differences(other) == {"data": ["data.name=other"]}


def test_both_judges_warn_about_another_optimizer_class():
    adamw = {"optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 1e-3}
    f = two_point(**adamw)
    env = envelope_of(two_point((4.2, 3.2), **adamw), f)
    sgd = fake_run(1e12, **{"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.5})
    assert f.differences(sgd) == {"optimizer": ["optimizer=sgd"]}
    assert env.differences(sgd) == {"optimizer": ["optimizer=sgd"]}
    # the same class at another learning rate (what a frontier tunes) is no difference
    assert f.differences(fake_run(1e12, **adamw | {"optimizer.lr": 4e-3})) == {}


def _defined_names(tree) -> list[str]:
    """The module-level functions, classes and constants (``NAME = ...``) of ``tree``."""
    import ast

    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
    return out


def test_no_two_analysis_modules_define_the_same_name():
    """One definition per function, class and constant across the analysis modules."""
    import ast
    from collections import Counter
    from pathlib import Path

    import mltrain.analysis

    root = Path(mltrain.analysis.__file__).parent
    names = Counter(
        name for path in root.rglob("*.py") for name in _defined_names(ast.parse(path.read_text()))
    )
    assert [n for n, k in names.items() if k > 1] == []


def test_the_definition_scan_sees_constants():
    """The rule can fail: a constant defined twice is a name the scan counts twice."""
    import ast

    code = 'TITLES = {"head": "x"}\nsmall = 1\ndef f(): pass\nclass C: pass\nN: int = 2\n'
    assert _defined_names(ast.parse(code)) == ["TITLES", "f", "C", "N"]


def test_a_printed_bound_still_holds():
    """A bound is rounded outwards at its printed precision: r > 0.99976 is "> 0.99" (the
    nearest, "> 1.00", would claim r above 1, which is not known), r < 1.1333 is "< 1.14";
    a range widens on both ends; an exact value rounds to nearest; 0.70 stays 0.70 (no float
    noise pushes it a step out)."""
    from mltrain.analysis.judging.curves import Bounded

    assert Bounded.above(0.99976).fmt(".2f") == "> 0.99"
    assert Bounded.below(453.33 / 400).fmt(".2f") == "< 1.14"
    assert Bounded(0.524, 0.896).fmt(".2f") == "0.52 to 0.90"
    assert Bounded(0.526, 0.894).fmt(".2f") == "0.52 to 0.90"
    assert Bounded.exact(0.99976).fmt(".2f") == "1.00"
    assert Bounded.below(0.7).fmt(".2f") == "< 0.70" and Bounded.above(0.7).fmt(".2f") == "> 0.70"
    assert Bounded.above(-0.0304).fmt(".3f", signed=True) == "> -0.031"
