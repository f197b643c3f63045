"""The CUDA paths, tested on the CPU: monkeypatched ``torch.cuda`` (device counts, names,
bf16 support, RNG states), a fake clock, and a second rank simulated in the all-reduce."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import pytest
import torch

from mltrain.errors import CheckpointError, ConfigError, Preempted
from mltrain.model.flops import peak_flops
from mltrain.train import checkpoint as ckpt
from mltrain.train import precision as prec
from mltrain.train.clock import StepClock
from tests.helpers import make_job, read_jsonl

CUDA = torch.device("cuda:0")


# ---------------------------------------------------------------- the gpu tests' device
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_a_job_asked_for_cuda_is_built_on_cuda_not_silently_on_the_cpu(tmp_path):
    with pytest.raises(ConfigError, match=r"train.device=cuda: CUDA is not available"):
        make_job(tmp_path / "r", "train.device=cuda")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- peak FLOP/s
@pytest.mark.parametrize(
    "name, precision, tflops",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),  # SXM5
        ("NVIDIA H100 PCIe", "bf16", 756),  # not the SXM's 989
        ("NVIDIA H100 NVL", "bf16", 835.5),
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA L40", "bf16", 181.05),  # not the L4's 121
        ("NVIDIA L4", "bf16", 121),
        ("NVIDIA GeForce RTX 3090", "bf16", 35.6),  # fp32 accumulate, not 71
        ("NVIDIA A100-SXM4-80GB", "tf32", 156),  # an fp32 run with TF32: not the bf16 312
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
        ("Tesla V100-SXM2-16GB", "fp16", 125),
        ("  nvidia h100 pcie ", "bf16", 756),  # case and spaces
    ],
)
def test_peak_flops_by_exact_name_and_precision(name, precision, tflops):
    assert peak_flops(name, precision) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize(
    "name, precision",
    [
        ("Tesla V100-SXM2-16GB", "bf16"),  # Volta has no bf16
        ("Tesla T4", "tf32"),
        ("NVIDIA H100 80GB HBM3 (some new part)", "bf16"),  # unknown: no MFU, not a guess
        ("NVIDIA H1", "bf16"),
    ],
)
def test_peak_flops_is_none_where_unknown(name, precision):
    assert peak_flops(name, precision) is None


def test_device_peak_of_an_fp32_run_uses_tf32_only_when_allowed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-40GB")
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = True
        assert prec.device_peak(CUDA, "fp32") == 156e12
        assert prec.device_peak(CUDA, "bf16") == 312e12
        matmul.allow_tf32 = False
        assert prec.device_peak(CUDA, "fp32") == 19.5e12
    finally:
        matmul.allow_tf32 = before
    assert prec.device_peak(torch.device("cpu"), "fp32") is None


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize("native, expect", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_is_bf16_only_where_the_gpu_has_it(monkeypatch, native, expect):
    calls = []

    def supported(including_emulation=True):
        calls.append(including_emulation)
        return native or including_emulation  # an sm_70 part: bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert prec.resolve("auto", CUDA) == expect
    assert calls == [False]
    _, scaler = prec.autocast_and_scaler(expect, torch.device("cpu"))
    assert (scaler is not None) == (expect == "fp16")  # fp16 is loss-scaled
    assert prec.resolve("auto", torch.device("cpu")) == "fp32"
    assert prec.resolve("auto", CUDA, saved="fp32") == "fp32"  # a CPU checkpoint stays fp32
    assert prec.resolve("fp32", CUDA, saved="bf16") == "fp32"  # an explicit setting wins


def test_precision_is_recorded_and_auto_resumes_in_the_checkpoints(tmp_path):
    ml = ["coarsening=none", "train.steps=4", "train.checkpoint_every=2", "train.eval_every=2"]
    job = make_job(tmp_path / "a", *ml)
    job.run()
    job.close()
    assert json.loads((tmp_path / "a" / "run.json").read_text())["precision"] == "fp32"
    first = ckpt.list_checkpoints(tmp_path / "a" / "checkpoints")[0]
    state = ckpt.load_checkpoint(first)
    assert state["precision"] == "fp32" and state["world"] == 1
    # the same checkpoint as if a bf16 run on a GPU with the fused optimizer had written it
    state["precision"] = "bf16"
    for sd in state["optimizers"].values():
        for group in sd["param_groups"]:
            group["fused"] = True
    torch.save(state, first)
    job = make_job(tmp_path / "b", *ml, f"train.resume={first}")
    t = job.trainer
    assert t.precision == "bf16" and t.runner.scaler is None
    with t.runner.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled(
            "cpu"
        )
    assert json.loads((tmp_path / "b" / "run.json").read_text())["precision"] == "bf16"
    groups = [g for name in t.optims.state_dict() for g in t.optims.get(name).param_groups]
    assert groups and all(g["fused"] is None for g in groups)  # no fused kernels on the CPU
    job.close()


# ---------------------------------------------------------------- CUDA RNG on resume
class FakeCudaRng:
    """``count`` visible GPUs; states are tensors; an index past the last raises IndexError
    as torch's ``default_generators[idx]`` does."""

    def __init__(self, monkeypatch, count: int):
        self.count, self.states = (
            count,
            {i: torch.tensor([i], dtype=torch.uint8) for i in range(count)},
        )
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        for mod in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(mod, "get_rng_state", self.get)
            monkeypatch.setattr(mod, "set_rng_state", self.set)
            monkeypatch.setattr(
                mod, "get_rng_state_all", lambda: [self.get(i) for i in range(self.count)]
            )

    def _index(self, device) -> int:
        index = torch.device(device).index if not isinstance(device, int) else device
        index = index or 0
        if index >= self.count:
            raise IndexError("list index out of range")
        return index

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()


def test_a_checkpoint_of_eight_gpus_resumes_where_one_is_visible(monkeypatch):
    rng = FakeCudaRng(monkeypatch, 8)
    rng.states[0] = torch.tensor([42], dtype=torch.uint8)
    saved = ckpt.rng_state(torch.device("cuda:0"))  # rank 0 of 8 writes the checkpoint
    rng.count, rng.states = 1, {0: torch.tensor([7], dtype=torch.uint8)}
    ckpt.set_rng_state(saved, torch.device("cuda:0"))
    assert rng.states[0].tolist() == [42]


def test_an_older_checkpoint_with_every_gpus_state_resumes_on_fewer(monkeypatch):
    rng = FakeCudaRng(monkeypatch, 1)
    saved = ckpt.rng_state(torch.device("cpu"))
    saved["cuda"] = [torch.tensor([10 + i], dtype=torch.uint8) for i in range(8)]  # 8 GPUs' states
    del saved["cuda_device"]
    ckpt.set_rng_state(saved, torch.device("cuda:0"))
    assert rng.states[0].tolist() == [10]


def test_a_resume_on_another_number_of_processes_is_refused(tmp_path):
    state = {"config": {}, "total_steps": 5, "world": 8}
    with pytest.raises(CheckpointError, match=r"written by 8 processes, this run has 2"):
        ckpt.check_fits(state, tmp_path, config={}, total_steps=5, data_fingerprint="x", world=2)
    ckpt.check_fits(state, tmp_path, config={}, total_steps=5, data_fingerprint="x", world=8)


# ---------------------------------------------------------------- the step clock
def test_the_step_clock_waits_for_the_gpu_before_each_reading():
    events: list[str] = []
    now = iter(range(100))

    def clock():
        events.append("read")
        return float(next(now))

    c = StepClock(CUDA, clock=clock, synchronize=lambda d: events.append(f"sync {d}"))
    c.start()
    events.append("launch kernels")
    assert c.stop() == 1.0
    assert events == ["sync cuda:0", "read", "launch kernels", "sync cuda:0", "read"]
    cpu = StepClock(torch.device("cpu"), clock=clock, synchronize=lambda d: events.append("x"))
    cpu.start()
    cpu.stop()
    assert "x" not in events


def test_tokens_per_second_and_mfu_come_from_the_synchronized_step_time(tmp_path):
    job = make_job(tmp_path / "r", "coarsening=none", "train.steps=3", "train.eval_every=100")
    t = job.trainer
    ticks, syncs = iter([10.0, 10.25, 20.0, 20.5, 30.0, 31.0]), []
    t.clock = StepClock(CUDA, clock=lambda: next(ticks), synchronize=syncs.append)
    t.peak = 1e9  # FLOP/s
    job.run()
    job.close()
    recs = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "train/loss" in r]
    tokens = 4 * job.typed.model.seq_len
    flops = t.plan.step_flops["fine"].total
    assert [r["perf/tok_per_s"] for r in recs] == [tokens / 0.25, tokens / 0.5, tokens / 1.0]
    assert [r["perf/mfu"] for r in recs] == pytest.approx(
        [flops / dt / 1e9 for dt in (0.25, 0.5, 1.0)]
    )
    assert len(syncs) == 6


# ---------------------------------------------------------------- the preemption flag
def test_a_signal_on_another_rank_travels_with_the_loss_all_reduce(tmp_path, monkeypatch):
    """Rank 0 of 2 (the other rank simulated inside the all-reduce): the other rank is
    signalled before step 3; rank 0 stops right after step 3 with a checkpoint, and no
    collective of its own is spent on the flag."""
    from mltrain.train import distributed as D

    job = make_job(tmp_path / "r", "coarsening=none", "train.steps=6", "train.eval_every=100")
    t = job.trainer
    t.ctx.world = 2
    seen = []

    def all_reduce_sum(x, world):
        if x.dtype == torch.float32 and x.shape == (2,):  # the step's (loss, flag)
            seen.append(x[1].item())
            other = torch.stack([x[0], torch.tensor(float(t.progress.steps >= 2))])
            return x + other
        return x * 2 if world > 1 else x

    monkeypatch.setattr(D, "all_reduce_sum", all_reduce_sum)
    no_sync = SimpleNamespace(arm=lambda params: None, finish=lambda: None)
    monkeypatch.setattr(t.runner, "grad_sync", no_sync)  # this test's all-reduces are simulated
    monkeypatch.setattr(D, "assert_identical", lambda params, world: None)
    # any other collective would fail here: world 2 is faked, with no process group
    with pytest.raises(Preempted, match=r"stopped by SIGTERM at step 3 \(fine step 3\)") as e:
        job.run()
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert seen == [0.0, 0.0, 0.0]  # this rank had no signal itself
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")] == [
        "ckpt_000000003.pt"
    ]
    job.close(exit_code=e.value.exit_code)


# ---------------------------------------------------------------- line search rows
def test_a_line_search_batch_smaller_than_the_ranks_is_refused_before_writing(tmp_path):
    from mltrain.job import Job
    from mltrain.train.distributed import DistContext
    from tests.helpers import compose

    cfg = compose(
        "coarsening=even_odd",
        "coarsening.corrections.line_search=grid",
        "coarsening.corrections.line_search_batch=1",
    )
    with pytest.raises(
        ConfigError, match=r"coarsening.corrections.line_search_batch=1 is smaller than the 2"
    ):
        Job(cfg, tmp_path / "r", DistContext(world=2))
    assert not (tmp_path / "r").exists()
