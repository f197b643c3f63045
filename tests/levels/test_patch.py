"""The patch level (sequence coarsening; Shao et al., ICLR 2025, arXiv 2407.12665): its forward by
hand, K = 1 against the token level, patch x depth levels, FLOPs against FlopCounterMode, the
sampler's windows, exact resume, FLOPs and tokens recorded = planned, the data-passes warning.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from mltrain.config import ModelConfig, typed
from mltrain.data.sampler import BatchSampler
from mltrain.errors import ConfigError
from mltrain.levels import build_hierarchy
from mltrain.model.flops import measure_train_flops, train_flops
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.plan.epochs import epoch_count
from mltrain.plan.plan import build_plan
from mltrain.schemes.vcycle import Prolong, Restrict, Train
from tests.helpers import (
    compose,
    counted_run,
    final_params,
    flat_coarsening,
    losses,
    make_job,
    preempt,
    read_jsonl,
    run_job,
    val_loss_by_hand,
)


def tiny_model(n_layer=4, d=16, V=50, T=6, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=n_layer, n_embd=d, n_head=2, seq_len=T, block_size=T, dropout=dropout)
    return ODETransformer(cfg, V)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------------ the forward
@pytest.mark.parametrize("path", [None, BlockPath((0, 2), 2.0)], ids=["fine", "odd_h2"])
def test_k1_patch_forward_equals_the_token_forward_bit_for_bit(path):
    model = tiny_model(dropout=0.1)  # dropout on: the same random draws in the same order
    idx = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    tgt = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    logits_t, loss_t = model(idx, tgt, path=path)
    loss_t.backward()
    g_t = grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    logits_p, loss_p = model.patch_forward(idx, tgt.view(3, 6, 1), path, 1)
    loss_p.backward()
    g_p = grads(model)
    assert torch.equal(loss_t, loss_p) and torch.equal(logits_t, logits_p)
    assert g_t.keys() == g_p.keys() and all(torch.equal(g_t[n], g_p[n]) for n in g_t)


def test_patch_input_is_the_mean_of_the_k_embeddings_plus_the_position():
    K, T = 3, 4
    model = tiny_model(T=T)
    idx = torch.randint(0, 50, (2, K * T), generator=torch.Generator().manual_seed(3))
    seen = {}
    model.blocks[0].register_forward_hook(lambda m, a, out: seen.update(x=a[0].detach()))
    model(idx, None, path=BlockPath((0,), 1.0), patch=K)
    wte, wpe = model.wte.weight.double(), model.wpe.weight.double()
    for b in range(2):
        for i in range(T):
            want = sum(wte[idx[b, i * K + k]] for k in range(K)) / K + wpe[i]
            assert torch.allclose(seen["x"][b, i].double(), want, atol=1e-7), (b, i)


def test_patch_targets_are_the_k_next_tokens_and_the_loss_the_mean_of_k_cross_entropies(
    tmp_path,
):
    """The trainer's split of a K·(T+1)-token window (K = 4, T = 32 of the tiny model): position
    i reads tokens iK..iK+K−1 and predicts (i+1)K..(i+1)K+K−1; the loss is the mean over
    positions of the mean of their K cross-entropies, computed here by hand in float64."""
    job = make_job(
        tmp_path / "run", "coarsening=patch", "train.steps=2", "coarsening.vcycle.window=1"
    )
    t, K, T = job.trainer, 4, 32
    expected = BatchSampler(job.data.train, T, seed=0)
    expected.load_state_dict(t.sampler.state_dict())
    windows = expected.next(t.runner.global_batch, K * (T + 1))
    calls = []
    real = job.model.patch_forward

    def spy(idx, targets, path, patch):
        logits, loss = real(idx, targets, path, patch)
        calls.append((idx, targets, patch, logits.detach(), loss.detach()))
        return logits, loss

    job.model.patch_forward = spy
    t.train_step(t.levels["patch"])
    (idx, targets, patch, logits, loss) = calls[0]
    assert patch == K and idx.shape == (4, K * T)
    assert torch.equal(idx, windows[:, : K * T])
    tk = targets.reshape(4, T, K)
    logp = torch.log_softmax(logits.double(), dim=-1)
    total = 0.0
    for b in range(4):
        for i in range(T):
            for k in range(K):
                assert tk[b, i, k] == windows[b, (i + 1) * K + k]
                total += -logp[b, i, tk[b, i, k]].item()
    assert loss.item() == pytest.approx(total / (4 * T * K), rel=1e-6)
    job.close()


def test_loss_of_k2_by_hand_on_a_tiny_model():
    K, T, V = 2, 3, 50
    model = tiny_model(T=T, V=V)
    window = torch.tensor([[5, 9, 1, 2, 7, 7, 3, 4]])  # K·(T+1) = 8 tokens
    logits, loss = model(window[:, :-K], window[:, K:], patch=K)
    logp = torch.log_softmax(logits.double(), -1)[0]
    # position 0 predicts tokens 2, 3 (ids 1, 2); 1 -> 4, 5 (7, 7); 2 -> 6, 7 (3, 4)
    ce = [-logp[0, 1], -logp[0, 2], -logp[1, 7], -logp[1, 7], -logp[2, 3], -logp[2, 4]]
    assert loss.detach().item() == pytest.approx(float(sum(ce).detach()) / 6, rel=1e-6)


# ------------------------------------------------------------------------------ the hierarchy
def test_patch_hierarchy_and_patch_times_depth_levels():
    (fine, patch) = build_hierarchy(compose("coarsening=patch").coarsening, 4)
    assert (fine.patch, patch.name, patch.blocks, patch.h, patch.patch) == (
        1,
        "patch",
        (0, 1, 2, 3),
        1.0,
        4,
    )
    c = compose("coarsening=odd", "coarsening.patch.size=4").coarsening
    (fine, odd) = build_hierarchy(c, 4)
    assert (odd.name, odd.blocks, odd.h, odd.patch) == ("coarse_b", (0, 2), 2.0, 4)
    levels = build_hierarchy(compose("coarsening=even_odd").coarsening, 4)
    assert [lv.patch for lv in levels] == [1, 1, 1]  # the default: token level everywhere
    with pytest.raises(ConfigError, match=r"coarsening.patch.size=2 needs a coarse level"):
        build_hierarchy(compose("coarsening=none", "coarsening.patch.size=2").coarsening, 4)
    with pytest.raises(ConfigError, match=r"coarsening.patch.size=0 is not allowed"):
        from mltrain.config import validate

        validate(compose("coarsening=patch", "coarsening.patch.size=0"))


def test_a_patch_times_depth_step_uses_the_depth_path_and_leaves_other_blocks_untouched(tmp_path):
    job = make_job(
        tmp_path / "run",
        "coarsening=odd",
        "coarsening.patch.size=4",
        "coarsening.vcycle.window=0",
        "coarsening.scheme=stages",
        "coarsening.stages.levels=[coarse_b,fine]",
        "coarsening.stages.shares=[0.5,0.5]",
        "train.steps=4",
    )
    t, model = job.trainer, job.model
    order, paths, io = [], [], {}
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: order.append(i))
        block.register_forward_hook(lambda m, a, out, i=i: io.update({i: (a[0], out)}))
    real = model.patch_forward
    model.patch_forward = lambda idx, tg, path, patch: (
        paths.append((path, patch)),
        real(idx, tg, path, patch),
    )[1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t.train_step(t.levels["coarse_b"])
    assert paths == [(BlockPath((0, 2), 2.0), 4)] and order == [0, 2]
    (x0, f0), (x1, _) = io[0], io[2]  # Euler step of the depth path: x1 = x0 + 2·F_0(x0)
    assert x0.shape == (4, 32, 32) and torch.equal(x1, x0 + 2.0 * f0)
    for n, p in model.named_parameters():
        untouched = n.startswith(("blocks.1.", "blocks.3."))
        assert torch.equal(p, before[n]) is untouched, n
    job.close()


# ------------------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize(
    "overrides, K",
    [
        (("coarsening=patch", "coarsening.patch.size=4"), 4),
        (("coarsening=odd", "coarsening.patch.size=2"), 2),
        (("coarsening=even_odd", "coarsening.patch.size=4"), 4),
    ],
)
def test_measured_patch_step_flops_match_the_analytic_count(overrides, K):
    cfg = compose(*overrides, "model.n_layer=8")
    d, T, V, B = 64, 32, 500, 3
    torch.manual_seed(0)
    model = ODETransformer(ModelConfig(n_layer=8, n_embd=d, n_head=4, seq_len=T, block_size=T), V)
    g = torch.Generator().manual_seed(0)
    window = torch.randint(0, V, (B, K * (T + 1)), generator=g)
    for level in build_hierarchy(cfg.coarsening, 8)[1:]:
        assert level.patch == K
        measured = measure_train_flops(model, window[:, :-K], window[:, K:], level.path, K)
        analytic = train_flops(level.n_blocks, d, T, V, B * T).total  # T positions, not K·T
        assert abs(measured - analytic) / analytic < 0.01, level.name
        model.zero_grad()


STAGED = [
    "coarsening=patch",
    "coarsening.vcycle.window=0",
    "coarsening.scheme=stages",
    "coarsening.stages.levels=[patch,fine]",
    "coarsening.stages.shares=[0.5,0.5]",
    "coarsening.stages.grow_init=keep",
    "train.steps=6",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "model.dropout=0.1",
    "optimizer=adamw",
]
DEPTH = [
    "coarsening=odd",
    "coarsening.patch.size=2",
    "coarsening.vcycle.window=0",
    "coarsening.scheme=stages",
    "coarsening.stages.levels=[coarse_b,fine]",
    "coarsening.stages.shares=[0.6,0.4]",
    "coarsening.stages.grow_init=ode",
    "train.steps=6",
    "train.eval_every=2",
]
VCYCLE = [
    "coarsening=patch",
    "coarsening.patch.size=2",
    "coarsening.vcycle.window=2",
    "coarsening.vcycle.coarse_steps=3",
    "train.steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=1",
    "model.dropout=0.1",
]


@pytest.mark.parametrize("overrides", [STAGED, DEPTH, VCYCLE], ids=["stage", "depth", "vcycle"])
def test_recorded_flops_and_tokens_equal_the_passes_that_ran(tmp_path, overrides):
    """Every optimizer step's pass, counted by hooks on the model (its blocks, the tokens it
    embedded), priced by the FLOP convention: a patch step costs a token step on the same
    path (B·T positions) and covers K times its tokens; evaluations are booked apart."""
    job, counter = counted_run(tmp_path / "run", *overrides)
    last = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert (last["perf/flops"], last["perf/flops_nonembed"]) == (
        counter.flops(),
        counter.flops(head=False),
    )
    assert last["perf/flops_eval"] == counter.flops(eval=True)
    level_of = {(lv.blocks, lv.patch): lv.name for lv in job.plan.levels}
    flops, tokens = {}, {}
    for p in counter.training():
        K = p["tokens"] // p["positions"]  # (B, K·(T+1) - K) ids in, B·T positions out
        name = level_of[(p["path"], K)]
        flops[name] = flops.get(name, 0) + p["forward"] * (1 + 2 * p["backward"])
        tokens[name] = tokens.get(name, 0) + p["tokens"]
        assert p["positions"] == 4 * 32
    for name in level_of.values():
        assert last[f"perf/flops_level/{name}"] == flops.get(name, 0), name
        assert last[f"perf/tokens_level/{name}"] == tokens.get(name, 0), name
    assert last["perf/tokens"] == sum(tokens.values())
    patch = job.plan.levels[1]
    assert patch.patch > 1 and tokens[patch.name] > 0


def test_single_level_records_have_no_per_level_tokens(tmp_path):
    run_job(tmp_path / "run", "coarsening=none", "train.steps=2")
    assert not any(
        k.startswith("perf/tokens_level")
        for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")
        for k in r
    )


# ------------------------------------------------------------------------------ V-cycle
def test_a_v_cycle_with_a_patch_level_prolongs_with_eq4(tmp_path):
    job = make_job(tmp_path / "run", *VCYCLE, "coarsening.vcycle.delta=0.25", "model.dropout=0.0")
    t, plan = job.trainer, job.plan
    ops = plan.ops(0)
    assert ops == (Train("fine", 1), Restrict("patch"), Train("patch", 3), Prolong("patch"))
    assert plan.ops(2) == (Train("fine", 1),)
    params = dict(job.model.named_parameters())
    snaps = []
    for op in ops:
        t.run_ops([op])
        snaps.append({n: p.detach().clone() for n, p in params.items()})
    after_fine, after_patch, after_prolong = snaps[0], snaps[2], snaps[3]
    for n in params:
        assert not torch.equal(after_patch[n], after_fine[n]), n  # the patch phase trains all
        assert torch.equal(after_prolong[n], torch.lerp(after_fine[n], after_patch[n], 0.25)), n
    assert t.records.pending["level"] == "patch" and t.progress.steps == 4  # 1 fine + 3 patch steps
    job.close()


# ------------------------------------------------------------------------------ data and resume
def test_sampler_restores_the_same_patch_windows():
    stream = np.arange(10_000, dtype=np.uint16)
    T, K = 8, 4
    a = BatchSampler(stream, T, seed=5)
    a.next(3)  # a token-level draw first
    state = a.state_dict()
    first = a.next(3, K * (T + 1))
    b = BatchSampler(stream, T, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.next(3, K * (T + 1)), first)
    for w in first:  # each window: K·(T+1) consecutive tokens of the stream
        assert torch.equal(w, torch.arange(int(w[0]), int(w[0]) + K * (T + 1)))
    # one draw of starts per call whatever the length: the generator ends in the same state
    c = BatchSampler(stream, T, seed=5)
    c.load_state_dict(state)
    c.next(3)
    assert torch.equal(c.generator.get_state(), a.generator.get_state())


@pytest.mark.parametrize(
    "overrides, stop_at",
    [(STAGED, 2), (STAGED, 3), (VCYCLE, 3), (VCYCLE, 5)],
    ids=["stage_step2", "stage_last_patch_step", "vcycle_in_patch_phase", "vcycle_2nd_cycle"],
)
def test_resume_inside_a_patch_stage_or_phase_is_bitwise(tmp_path, overrides, stop_at):
    run_job(tmp_path / "ref", *overrides)
    preempt(tmp_path / "run", *overrides, stop_at=stop_at)
    run_job(tmp_path / "run", *overrides, "train.resume=auto")
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")
    a, b = final_params(tmp_path / "run"), final_params(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    ref = read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    keys = ("perf/tokens", "perf/tokens_level/patch", "perf/flops")
    assert [[r.get(k) for k in keys] for r in recs] == [[r.get(k) for k in keys] for r in ref]


def test_k1_patch_stage_then_fine_equals_the_single_level_run_bitwise(tmp_path):
    """With K = 1 the patch level is the token-level model: the staged run (patch stage, keep
    growth, its optimizer state handed to the fine stage) trains exactly as single-level."""
    run_job(tmp_path / "staged", *STAGED, "coarsening.patch.size=1")
    run_job(tmp_path / "single", "coarsening=none", *STAGED[5:])
    a = read_jsonl(tmp_path / "staged" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    assert [r["level"] for r in a if "train/loss" in r][:3] == ["patch"] * 3
    keys = ("step", "train/loss", "train/grad_norm", "val/loss", "perf/flops", "perf/tokens")
    assert [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]
    x, y = final_params(tmp_path / "staged"), final_params(tmp_path / "single")
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_val_loss_in_a_patch_times_depth_stage_is_the_token_level_loss_of_its_path(tmp_path):
    from mltrain.schemes.growth import GROWTH
    from mltrain.train.checkpoint import list_checkpoints, load_checkpoint

    overrides = [*DEPTH, "train.checkpoint_every=1", "train.keep_checkpoints=20"]
    job = make_job(tmp_path / "run", *overrides)
    model, t = job.model, job.trainer
    coarse, fine = t.levels["coarse_b"], t.levels["fine"]
    at_start = val_loss_by_hand(model, t.val_batches, t.runner.micro, BlockPath((0, 2), 2.0))
    job.run()
    job.close()
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert recs[0]["step"] == 0 and recs[0]["val/loss"] == pytest.approx(at_start, rel=1e-12)
    # the growth's two measurements, by hand from the checkpoint written just before it: the
    # token-level loss of the coarse path, then of the fine path after the ode growth
    n0 = job.plan.stages[0].iterations
    (ckpt,) = [
        c
        for c in list_checkpoints(tmp_path / "run" / "checkpoints")
        if load_checkpoint(c)["progress"]["iteration"] == n0
    ]
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    before = val_loss_by_hand(model, t.val_batches, t.runner.micro, coarse.path)
    GROWTH.get("ode").apply(model, coarse, fine)
    after = val_loss_by_hand(model, t.val_batches, t.runner.micro, fine.path)
    grow = next(r for r in recs if "grow/loss_before" in r)
    assert grow["grow/loss_before"] == pytest.approx(before, rel=1e-12)
    assert grow["grow/loss_after"] == pytest.approx(after, rel=1e-12)
    assert grow["grow/loss_jump"] == pytest.approx(after - before, rel=1e-9)


# ------------------------------------------------------------------------------ data passes
def test_data_passes_by_hand():
    plan = build_plan(
        typed(compose(*STAGED, "coarsening.patch.size=4", "train.steps=10")), vocab_size=300
    )
    # 5 patch steps of 4 x 32 positions x K=4 tokens, 5 fine steps of 4 x 32 tokens
    out = epoch_count(plan, 1280, seen=640)
    assert out["tokens_per_level"] == {"fine": 5 * 128, "patch": 5 * 512}
    assert out["planned_tokens"] == 3200 and out["planned_epochs"] == 3200 / 1280
    assert out["tokens_seen"] == 640 and out["epochs"] == 0.5


def test_a_run_that_repeats_the_data_warns_and_records_its_epochs(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"{i}.txt").write_text(f"document number {i} says a few words. " * 40)
    data = [
        "data=text_files",
        f"data.paths=[{corpus}]",
        "data.bpe_vocab_size=300",
        "data.val_fraction=0.25",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    with caplog.at_level(logging.INFO, logger="mltrain.levels.patch"):
        job = run_job(tmp_path / "run", *data, *STAGED, "coarsening.patch.size=4")
    n = len(job.data.train)
    info = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert info["train_tokens"] == n and info["planned_tokens"] == 3 * 512 + 3 * 128
    assert info["tokens_seen"] == info["planned_tokens"]
    assert info["epochs"] == pytest.approx(info["tokens_seen"] / n) and info["epochs"] > 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"the run will draw 1,920 training tokens, {1920 / n:.2f} epochs" in w
        and "more than once" in w
        for w in warnings
    ), warnings
    assert any(w.startswith("the run drew 1,920 training tokens") for w in warnings)


def test_a_checkpoint_written_before_patch_size_existed_resumes(tmp_path):
    """Runs in flight when ``coarsening.patch.size`` was added: their saved config lacks it,
    which means the default (token level), so they resume; asking for K = 4 is refused."""
    from omegaconf import OmegaConf

    from mltrain.errors import CheckpointError
    from mltrain.train.checkpoint import check_compatible

    current = OmegaConf.to_container(compose("coarsening=none"), resolve=True)
    saved = json.loads(json.dumps(current))  # as written before patch levels (and the sections)
    saved["coarsening"] = flat_coarsening(current["coarsening"])
    del saved["coarsening"]["patch_size"]
    check_compatible(saved, current, tmp_path / "ckpt.pt")
    current["coarsening"]["patch"]["size"] = 4
    with pytest.raises(CheckpointError, match=r"written with coarsening.patch.size=1, this run"):
        check_compatible(saved, current, tmp_path / "ckpt.pt")
