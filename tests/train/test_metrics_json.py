"""``metrics.jsonl`` is strict JSON.

Non-finite floats are written as the JSON strings "nan", "inf" and "-inf" (``NaN`` and
``Infinity`` literals are not JSON: strict parsers reject the line) and read back as floats by
:func:`mltrain.train.tracking.read_metrics`; files written before, with the literals, still read.
W&B still gets what it got before: NaN dropped, infinities kept.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

from mltrain.metrics import read_metrics, truncate_metrics
from mltrain.train.tracking import Tracker
from tests.helpers import cli


class FakeRun:
    """What the Tracker uses of a wandb Run (a new run: nothing sent before)."""

    id, dir, offline, step = "abc", None, False, 0

    def __init__(self):
        self.sent = []
        self.summary = {}

    def define_metric(self, *a, **k):
        pass

    def log(self, data, step):
        self.sent.append((step, data))

    def finish(self, **k):
        pass


def online(monkeypatch, run: FakeRun):
    """A logger config whose ``wandb.init`` returns ``run`` (nothing reaches the network)."""
    import wandb

    monkeypatch.setattr(wandb, "init", lambda **k: run)
    return SimpleNamespace(name="wandb", mode="online", project="p", entity=None, tags=[])


def _strict(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_strict_json_strings_and_read_back_as_floats(tmp_path, monkeypatch):
    run = FakeRun()
    t = Tracker(tmp_path, online(monkeypatch, run), {}, "multilevel", "g")
    rec = {"step": 3, "level": "fine", "val/loss": math.nan, "val/ppl": math.inf, "x": -math.inf}
    t.log(rec | {"train/loss": 2.5})
    t.log({"step": 4, "level": "inf", "train/loss": 1.0})  # a level is a name, never a number
    t.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    first, second = (_strict(line) for line in lines)
    assert (first["val/loss"], first["val/ppl"], first["x"]) == ("nan", "inf", "-inf")
    back = read_metrics(tmp_path / "metrics.jsonl")
    assert math.isnan(back[0]["val/loss"]) and back[0]["val/ppl"] == math.inf
    assert back[0]["x"] == -math.inf and back[0]["train/loss"] == 2.5
    assert back[1]["level"] == "inf"
    # W&B gets what it got before: NaN dropped, infinities kept
    assert run.sent[0] == (
        3,
        {"step": 3, "level": "fine", "val/ppl": math.inf, "x": -math.inf, "train/loss": 2.5},
    )
    # rewriting on resume keeps the file strict
    truncate_metrics(tmp_path / "metrics.jsonl", 3)
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert _strict(line)["val/loss"] == "nan"


def test_old_metrics_with_nan_literals_still_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "val/loss": NaN, "val/ppl": Infinity, "x": -Infinity}\n{"step": 2, "tr'
    )
    (rec,) = read_metrics(path)
    assert math.isnan(rec["val/loss"]) and rec["val/ppl"] == math.inf and rec["x"] == -math.inf


def test_a_diverged_run_writes_strict_json(tmp_path, capsys):
    """A diverging run: its NaN evaluation is written as "nan"."""
    code, _, _ = cli(
        [
            "mode=smoke",
            "model=tiny",
            "coarsening=none",
            "optimizer.lr=1e5",
            "train.max_grad_norm=0",
            "train.steps=20",
            "train.checkpoint_every=2",
            "train.eval_every=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
        capsys,
    )
    assert code == 3
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    strict = [_strict(line) for line in lines]
    assert any(r.get("val/loss") == "nan" for r in strict)
    assert any(
        math.isnan(r.get("val/loss", 0.0)) for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
    )
