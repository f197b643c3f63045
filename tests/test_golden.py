"""Fixed-seed runs give the golden metrics (tests/golden/, one CPU thread): bit for bit on a
machine where the goldens were checked bit for bit (tests/golden/exact_on.json), within the
float32 tolerance of tests/golden/tolerance.py on any other CPU.

The goldens were written by the code before the "one plan of the run" refactor; a change that
is not meant to alter training must leave every recorded value identical where the check is
bitwise, and within the tolerance elsewhere. The tolerance is shown to be needed (another
kernel set of torch changes the last bits) and tight (a 1 % change of one knob of a scheme
fails it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.golden.make_golden import CASES, HERE, run_case
from tests.golden.tolerance import exact_here, machine, mismatches


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def golden(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_run_matches_golden(name, tmp_path, one_thread):
    got = run_case(name, tmp_path)
    assert mismatches(golden(name), got, exact=False) == []
    if exact_here():
        assert mismatches(golden(name), got, exact=True) == []


def test_the_reported_other_cpu_value_is_within_tolerance():
    """The first step of ``single_level_budget`` on an AVX2-only EPYC (issue 29): 9.027116775512695
    against 9.027115821838379, 1.06e-7 relative; off by one more unit it is still in, and off by
    1e-4 relative it is out."""
    want = golden("single_level_budget")[:2]
    assert want[1]["train/loss"] == 9.027115821838379
    for value, ok in ((9.027116775512695, True), (9.027115821838379 * (1 + 1e-4), False)):
        have = [dict(want[0]), dict(want[1], **{"train/loss": value})]
        assert (mismatches(want, have, exact=False) == []) is ok
        assert mismatches(want, have, exact=True) != []


OTHER_KERNELS = """
import json, os, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
os.environ["WANDB_MODE"] = "disabled"
from tests.golden.make_golden import run_case
from tests.golden.tolerance import exact_here
with tempfile.TemporaryDirectory() as tmp:
    got = run_case(sys.argv[1], Path(tmp))
print(json.dumps({"exact_here": exact_here(), "records": got}))
"""


def rerun_with_kernels(name: str, capability: str) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-c", OTHER_KERNELS, name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name, capability",
    [
        ("single_level_budget", "avx2"),
        pytest.param("even_odd_sgd", "default", marks=pytest.mark.slow),
        pytest.param("corrections", "avx2", marks=pytest.mark.slow),
        pytest.param("grow_recursive", "default", marks=pytest.mark.slow),
    ],
)
def test_other_kernel_set_passes_within_tolerance(name, capability):
    """torch's AVX2 or scalar kernels stand in for another CPU (the issue's AVX2-only EPYC gives
    the same first-step value as ``ATEN_CPU_CAPABILITY=avx2`` here). Where this machine uses
    AVX-512 kernels, the rerun differs in the last bits, so bitwise goldens would fail, and
    the tolerance accepts it; a rerun on a lowered kernel set is never treated as exact."""
    res = rerun_with_kernels(name, capability)
    assert not res["exact_here"]
    assert mismatches(golden(name), res["records"], exact=False) == []
    if machine()["capability"] == "AVX512":
        assert mismatches(golden(name), res["records"], exact=True) != []


# one knob of each scheme changed by about 1 % (or the smallest change of a discrete knob)
CHANGED = {
    "even_odd_sgd": ["coarsening.vcycle.delta=0.2525"],
    "recursive_adamw_summed": ["coarsening.vcycle.coarse_lr_scale=0.505"],
    "single_level_budget": ["train.max_grad_norm=0.505"],
    "grow_recursive": ["coarsening.stages.shares=[0.5,0.3,0.2]"],
    "raptr": ["coarsening.raptr.scale=none"],
    "patch_stage": ["coarsening.stages.shares=[0.6,0.4]"],
    "corrections": ["coarsening.corrections.momentum=0.505"],
}
FAST = ("even_odd_sgd", "corrections")


@pytest.mark.parametrize(
    "name",
    [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CHANGED)],
)
def test_tolerance_fails_a_changed_scheme(name, tmp_path, one_thread, monkeypatch):
    from tests.golden import make_golden

    monkeypatch.setitem(make_golden.CASES, name, CASES[name] + CHANGED[name])
    got = run_case(name, tmp_path)
    assert mismatches(golden(name), got, exact=False) != []


def test_tolerance_fails_prolongation_off_by_a_thousandth(tmp_path, one_thread, monkeypatch):
    """A code change, not a setting: the V-cycle's prolongation (Lauga et al. 2025, Eq. 4)
    with δ off by 0.1 % moves the even/odd V-cycle's golden past the tolerance."""
    import mltrain.schemes.vcycle as vcycle

    real = vcycle.prolong
    monkeypatch.setattr(vcycle, "prolong", lambda p, b, delta: real(p, b, delta * 1.001))
    got = run_case("even_odd_sgd", tmp_path)
    assert mismatches(golden("even_odd_sgd"), got, exact=False) != []
