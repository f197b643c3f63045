"""The validation set is one fixed set of windows per data split and sequence length: the same
tokens, and the same mean loss, whatever the micro-batch, accumulation or process count; its
fingerprint is in ``run.json`` and ``mltrain-compare`` refuses to compare losses measured on
different sets."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mltrain.train import distributed as D
from tests.helpers import make_job


def _step0(tmp_path, name, *overrides):
    job = make_job(tmp_path / name, "coarsening=none", *overrides)
    t = job.trainer
    return job, t, t.evaluate()


def _reference_loss(job, windows) -> float:
    """The mean token loss over ``windows`` (``(n, T + 1)``) in one forward pass."""
    model = job.model
    model.eval()
    with torch.no_grad():
        _, loss = model(windows[:, :-1], windows[:, 1:])
    model.train()
    return float(loss)


def test_validation_loss_of_the_same_weights_does_not_depend_on_the_micro_batch(tmp_path):
    job16, t16, v16 = _step0(tmp_path, "a", "data.batch_size=16", "train.grad_accum=1")
    job8, t8, v8 = _step0(tmp_path, "b", "data.batch_size=8", "train.grad_accum=2")
    job3, t3, v3 = _step0(tmp_path, "c", "data.batch_size=3", "train.grad_accum=5")  # short last
    # the same weights (same seed) and the same windows
    assert torch.equal(t16.val_batches, t8.val_batches)
    assert torch.equal(t16.val_batches, t3.val_batches)
    ref = _reference_loss(job16, t16.val_batches)
    assert v16 == pytest.approx(ref, rel=1e-6)  # float32 rounding
    assert v8 == pytest.approx(ref, rel=1e-6)  # float32 rounding
    assert v3 == pytest.approx(ref, rel=1e-6)  # float32 rounding
    for j in (job16, job8, job3):
        j.close()


def test_validation_chunks_spread_over_ranks_sum_to_the_one_process_mean(tmp_path, monkeypatch):
    job, t, single = _step0(tmp_path, "a", "data.batch_size=3")
    totals = []
    monkeypatch.setattr(D, "all_reduce_sum", lambda x, world: totals.append(x.clone()) or x)
    ctx = t.ctx
    for rank in range(3):
        t.ctx = dataclasses.replace(ctx, rank=rank, world=3)
        t.evaluate()
    t.ctx = ctx
    total = sum(totals)
    tokens = t.val_batches[:, 1:].numel()
    assert float(total[1]) == tokens  # every token counted once, over the three ranks
    assert float(total[0] / total[1]) == pytest.approx(single, rel=1e-12)
    job.close()


def test_eval_sequences_counts_windows_not_micro_batches(tmp_path):
    job, t, _ = _step0(tmp_path, "a", "data.batch_size=3", "train.eval_sequences=7")
    assert t.val_batches.shape == (7, t.seq_len + 1)
    job.close()


def test_run_json_records_the_validation_fingerprint(tmp_path):
    from mltrain.data.sampler import eval_windows, validation_fingerprint

    a, _, _ = _step0(tmp_path, "a", "data.batch_size=16")
    b, _, _ = _step0(tmp_path, "b", "data.batch_size=8", "train.grad_accum=2")
    c, _, _ = _step0(tmp_path, "c", "train.eval_sequences=4")
    info = [json.loads((tmp_path / n / "run.json").read_text())["validation"] for n in "abc"]
    assert info[0] == info[1]
    assert info[0]["sequences"] == 8 and info[0]["tokens"] == 8 * 32
    assert info[2]["sequences"] == 4 and info[2]["fingerprint"] != info[0]["fingerprint"]
    # the fingerprint is a hash of the window tokens (one window changed: another fingerprint)
    w = eval_windows(a.data.val, 32, 8)
    assert validation_fingerprint(w) == info[0]
    w[3, 5] += 1
    assert validation_fingerprint(w)["fingerprint"] != info[0]["fingerprint"]
    for j in (a, b, c):
        j.close()


def test_the_old_eval_batches_key_is_refused_naming_the_new_one(tmp_path, capsys):
    from tests.helpers import TINY, cli

    code, _, err = cli(["mode=smoke", *TINY, "train.eval_batches=2"], tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train.eval_batches was replaced by train.eval_sequences" in err
    assert not (tmp_path / "outputs").exists()


def test_an_old_config_with_eval_batches_is_upgraded_to_the_sequences_it_evaluated():
    from mltrain.config import upgrade

    old = {"data": {"batch_size": 16}, "train": {"eval_batches": 8}}
    new = upgrade(old)
    assert new["train"]["eval_sequences"] == 128 and "eval_batches" not in new["train"]


# --------------------------------------------------------------------------- mltrain-compare
def _valset(fp: str, n: int = 8) -> dict:
    return {"validation": {"sequences": n, "tokens": 32 * n, "fingerprint": fp}}


def test_compare_and_the_judge_refuse_losses_on_different_validation_sets(tmp_path, capsys):
    from mltrain.analysis import compare as C
    from tests.analysis.test_compare import SINGLE, write_run

    a = write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta=_valset("aa"))
    write_run(tmp_path / "b", SINGLE, [10, 7, 5, 3, 1], "coarsening=even_odd", meta=_valset("bb"))
    with pytest.raises(C.CompareError) as e:
        C.compare([tmp_path / "a", tmp_path / "b"], out=tmp_path / "out")
    msg = str(e.value)
    assert "different validation sets" in msg and "\n" not in msg
    assert f"aa (8 sequences, 256 tokens): {a}" in msg and str(tmp_path / "b") in msg
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(C.CompareError, match="different validation sets"):  # the judge's input
        C.compare([tmp_path / "a"], frontier=[tmp_path / "b"], out=tmp_path / "out")
    with pytest.raises(SystemExit) as ex:
        C.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and "different validation sets" in err[0]


def test_compare_warns_when_a_run_records_no_validation_set(tmp_path, capsys):
    from mltrain.analysis import compare as C
    from tests.analysis.test_compare import SINGLE, write_run

    write_run(tmp_path / "a", SINGLE, [10, 8, 6, 4, 2], "coarsening=none", meta=_valset("aa"))
    write_run(tmp_path / "b", SINGLE, [10, 7, 5, 3, 1], "coarsening=even_odd", meta=_valset("aa"))
    C.compare([tmp_path / "a", tmp_path / "b"], out=tmp_path / "o1")
    assert "validation-set fingerprint" not in capsys.readouterr().err
    write_run(tmp_path / "c", SINGLE, [10, 7, 5, 3, 1], "coarsening=even_odd", "train.seed=1")
    C.compare([tmp_path], out=tmp_path / "o2")
    err = capsys.readouterr().err
    assert f"no validation-set fingerprint in run.json of {tmp_path / 'c'}" in err


def test_a_validation_set_larger_than_the_split_is_capped_with_a_warning(caplog):
    """Fewer windows than asked are used only when the split holds fewer, and the run says so."""
    import logging

    import numpy as np

    from mltrain.data.sampler import eval_windows

    tokens = np.arange(10 * 8 + 1)  # exactly 10 windows of 8 + 1 tokens
    with caplog.at_level(logging.WARNING, logger="mltrain.data.sampler"):
        w = eval_windows(tokens, 8, 25)
    assert w.shape == (10, 9)
    assert "train.eval_sequences=25: the validation split holds 10 windows" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mltrain.data.sampler"):
        assert eval_windows(tokens, 8, 4).shape == (4, 9)
    assert caplog.text == ""
