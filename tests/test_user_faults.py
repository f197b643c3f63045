"""Faults found when mltrain was tried as users do: float range sweeps, an empty data file,
printed commands a shell cannot run, a run without a training step, unreadable headlines and
plots, ``--cfg`` and a still-running run in the table. Each test fails on the code before its
fix."""

from __future__ import annotations

import pytest

from tests.helpers import TINY, cli

SMOKE = ["mode=smoke", *TINY]


# --------------------------------------------------------------------------- float ranges
def test_a_float_range_sweep_is_refused_with_the_values_meant(tmp_path, capsys):
    code, _, err = cli(["-m", *SMOKE, "coarsening.delta=range(0.1,0.4,0.1)"], tmp_path, capsys)
    assert code == 2
    assert err.strip() == (
        "mltrain: error: coarsening.delta=range(0.1,0.4,0.1): hydra-core expands this to "
        "0.1,0.2,0.30000000000000004,0.4 (a float range accumulates rounding errors); write "
        "the values instead: coarsening.delta=0.1,0.2,0.3"
    )
    assert not (tmp_path / "outputs").exists()


def test_ranges_hydra_expands_exactly_are_accepted():
    from mltrain.cli import check_range_sweeps

    check_range_sweeps(["a=range(0,1,0.25)", "b=range(0.5,2.5,0.5)", "c=range(1,4)", "d=range(3)"])
    with pytest.raises(Exception, match=r"write the values instead: e=1,1.1,1.2"):
        check_range_sweeps(["e=range(1,1.3,0.1)"])
