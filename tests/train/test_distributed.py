"""Several processes (torchrun, gloo on CPU) and torch.compile across levels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mltrain.schemes.vcycle import Prolong, Restrict, Train
from tests.helpers import TINY, make_job, read_jsonl, run_job, run_torchrun

ML = [
    "coarsening=even_odd",
    "coarsening.vcycle.coarse_steps=3",
    "coarsening.vcycle.window=3",
    "train.steps=5",
    "train.eval_every=1",
    "train.checkpoint_every=2",
]


def train_losses(run_dir: Path) -> list[tuple[int, str, float]]:
    return [
        (r["step"], r["level"], r["train/loss"])
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if "train/loss" in r
    ]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    ddp_cwd = tmp_path / "ddp"
    ddp_cwd.mkdir()
    run_torchrun(ddp_cwd, *ML, "data.batch_size=2")
    runs = list((ddp_cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1 and [p.name for p in ddp_cwd.iterdir()] == [
        "outputs"
    ]  # one run dir, rank 0's
    run_job(tmp_path / "single", *ML, "data.batch_size=4")
    ddp, one = train_losses(runs[0]), train_losses(tmp_path / "single")
    assert [(s, lv) for s, lv, _ in ddp] == [(s, lv) for s, lv, _ in one] and len(
        ddp
    ) == 5 + 3 * 2 * 3
    for (_, _, a), (_, _, b) in zip(ddp, one):
        assert a == pytest.approx(b, rel=1e-4)
    # the FLOP count is of the global batch (both ranks)
    assert (
        read_jsonl(runs[0] / "metrics.jsonl")[-1]["perf/flops"]
        == read_jsonl(tmp_path / "single" / "metrics.jsonl")[-1]["perf/flops"]
    )
    # every checkpoint first checks that all ranks hold identical parameters (all-gather)
    from mltrain.train.checkpoint import list_checkpoints, load_checkpoint

    a = load_checkpoint(list_checkpoints(runs[0] / "checkpoints")[-1])["model"]
    b = load_checkpoint(list_checkpoints(tmp_path / "single" / "checkpoints")[-1])["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)


def test_a_sweep_under_torchrun_through_the_mltrain_entry_point(tmp_path):
    """Jobs of a multirun share one process group; only rank 0 makes directories."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bindir = Path(sys.executable).parent
    res = subprocess.run(
        [
            str(bindir / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            str(bindir / "mltrain"),
            "-m",
            "mode=smoke",
            *TINY,
            "data.batch_size=2",
            "coarsening.vcycle.delta=0.1,0.5",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert len(list(sweep.glob("*/metrics.jsonl"))) == 2


def test_level_switches_do_not_recompile(tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    job = make_job(
        tmp_path / "r",
        "coarsening=even_odd",
        "train.compile=true",
        "train.compile_backend=aot_eager",
    )
    t = job.trainer

    t.run_ops([Train("fine", 1)])
    t.evaluate()  # eval mode, no grad: compiled once more
    compiled = counters["frames"]["ok"]
    for _ in range(2):
        t.run_ops(
            [
                Train("fine", 1),
                Restrict("coarse_a"),
                Train("coarse_a", 2),
                Prolong("coarse_a"),
                Restrict("coarse_b"),
                Train("coarse_b", 2),
                Prolong("coarse_b"),
            ]
        )
        t.evaluate()
    assert counters["frames"]["ok"] == compiled  # no recompilation on any level switch
    assert compiled <= 2


def test_compiled_and_eager_losses_agree_and_resume_across_compile(tmp_path):
    run_job(tmp_path / "eager", *ML)
    run_job(
        tmp_path / "comp",
        *ML,
        "train.compile=true",
        "train.compile_backend=aot_eager",
        "train.steps=5",
    )
    a, b = train_losses(tmp_path / "eager"), train_losses(tmp_path / "comp")
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for x, y in zip(a, b):
        assert x[2] == pytest.approx(y[2], rel=1e-4)
    # resume compiled from an eager checkpoint, and eager from a compiled one: plain keys
    from mltrain.train.checkpoint import list_checkpoints

    for src, flag in (("eager", "true"), ("comp", "false")):
        first = list_checkpoints(tmp_path / src / "checkpoints")[0]
        job = make_job(
            tmp_path / f"resumed_{src}",
            *ML,
            f"train.resume={first}",
            f"train.compile={flag}",
            "train.compile_backend=aot_eager",
        )
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in job.model.state_dict())
        job.run()
        job.close()
        for x, y in zip(train_losses(tmp_path / f"resumed_{src}"), a):
            assert x[:2] == y[:2] and x[2] == pytest.approx(y[2], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_inductor_compiled_losses_agree_with_eager(tmp_path):
    cuda = ("train.device=cuda", "train.precision=fp32")
    run_job(tmp_path / "eager", *ML, *cuda)
    run_job(tmp_path / "comp", *ML, *cuda, "train.compile=true")
    for x, y in zip(train_losses(tmp_path / "eager"), train_losses(tmp_path / "comp")):
        assert x[:2] == y[:2] and x[2] == pytest.approx(y[2], rel=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_multilevel_smoke(tmp_path):
    job = make_job(
        tmp_path / "r", *ML, "train.device=cuda", "train.precision=bf16", "train.compile=true"
    )
    loss = job.run()
    job.close()
    assert loss < 9.0
    assert all(
        "perf/mfu" in r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "train/loss" in r
    )


def _bucket_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from mltrain.train.distributed import all_reduce_grads
    from mltrain.train.grad_sync import BucketedAllReduce

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same parameters on both ranks, another batch on each
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 1)
    )
    frozen = net[0].bias
    params = [p for p in net.parameters() if p is not frozen]
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(rank + 1))
    grads = {}
    for name in ("flat", "bucketed", "local"):
        net.zero_grad(set_to_none=True)
        sync = BucketedAllReduce(2, bucket_bytes=16 * 16 * 4)  # several buckets
        if name == "bucketed":
            sync.arm(params)
        net(x).square().sum().backward()
        if name == "bucketed":
            sync.finish()
        elif name == "flat":
            all_reduce_grads(params, 2)
        grads[name] = [p.grad.clone() for p in params]
        grads[name + "_frozen"] = frozen.grad.clone()
    torch.save(grads, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_bucketed_all_reduce_averages_exactly_as_the_flat_one(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_bucket_worker, args=(port, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for g0, g1, f0, f1, l0, l1 in zip(
        r0["bucketed"], r1["bucketed"], r0["flat"], r1["flat"], r0["local"], r1["local"]
    ):
        assert torch.equal(g0, f0) and torch.equal(g1, f1) and torch.equal(g0, g1)
        torch.testing.assert_close(g0, (l0 + l1) / 2)  # the mean of the ranks' own gradients
        assert not torch.equal(l0, l1)
    # a parameter the step does not train keeps this rank's own gradient
    assert torch.equal(r0["bucketed_frozen"], r0["local_frozen"])
    assert not torch.equal(r0["bucketed_frozen"], r1["bucketed_frozen"])
