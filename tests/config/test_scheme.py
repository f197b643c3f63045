"""Each scheme in one place (mltrain.config.scheme): what the registry's Scheme objects say,
checked against values known from the schemes' definitions."""

from __future__ import annotations

from mltrain.config import unread
from mltrain.config.scheme import SCHEMES
from mltrain.train.checkpoint import extension_states


def test_each_scheme_reads_its_sections():
    """The V-cycle reads its own and the corrections' settings, not the stages'; a staged run
    the reverse; a single-level run no coarsening key; every multilevel run the optimizer-state
    policy."""
    assert unread("coarsening.stages.levels", "vcycle")
    assert not unread("coarsening.corrections.tau", "vcycle")
    assert unread("coarsening.vcycle.window", "stages")
    assert not unread("coarsening.stages.shares", "stages")
    assert not unread("coarsening.hierarchy.optimizer_state", "stages")
    assert unread("coarsening.hierarchy.optimizer_state", "single_level")
    assert unread("coarsening.hierarchy.name", "single_level")
    assert not unread("coarsening.raptr.blocks", "vcycle", hierarchy="raptr")  # its own section
    assert not unread("coarsening.vcycle.window", "no_such_scheme")


def test_only_the_stages_run_one_level_after_another():
    assert [n for n in SCHEMES if SCHEMES.get(n).staged] == ["stages"]
    assert [n for n in SCHEMES if not SCHEMES.get(n).multilevel] == ["single_level"]


def test_an_old_checkpoint_gives_the_vcycle_its_open_phases():
    """Checkpoints written before the V-cycle's extension kept its open phases in the
    trainer's state: they become the ``vcycle`` extension's; a newer checkpoint's own
    extension state is kept as written."""
    old = {"phases": [{"level": "coarse_a"}], "deferred": [[1.0]]}
    assert extension_states(old) == {
        "vcycle": {"phases": [{"level": "coarse_a"}], "deferred": [[1.0]]}
    }
    assert extension_states({"phases": []}) == {"vcycle": {"phases": [], "deferred": []}}
    new = {"extensions": {"vcycle": {"phases": [], "deferred": []}, "corrections": {"x": 1}}}
    assert extension_states(new) == new["extensions"]
