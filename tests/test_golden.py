"""Fixed-seed runs give the golden metrics bit for bit (tests/golden/, one CPU thread).

The goldens were written by the code before the "one plan of the run" refactor; a change that
is not meant to alter training must leave every recorded value identical. Keys added to the
records later are allowed only when listed in ``ADDED`` (with what added them).
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.golden.make_golden import CASES, HERE, run_case

ADDED: set[str] = set()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_run_matches_golden(name, tmp_path, one_thread):
    golden = [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]
    got = run_case(name, tmp_path)
    assert len(got) == len(golden)
    for want, have in zip(golden, got):
        extra = set(have) - set(want) - ADDED
        assert not extra, f"step {want['step']}: new keys {extra}"
        for key, value in want.items():
            assert have.get(key, "<missing>") == value, (
                f"step {want['step']} {key}: {have.get(key)} != golden {value}"
            )
