"""Hierarchies (:mod:`mltrain.levels.hierarchy`, :mod:`mltrain.levels.depth`): the levels a
``coarsening`` config builds, and the block sets it refuses."""

from __future__ import annotations

import pytest

from mltrain.errors import ConfigError
from mltrain.levels import build_hierarchy
from tests.helpers import compose


def test_even_odd_hierarchy_is_the_papers():
    lv = build_hierarchy(compose("coarsening=even_odd").coarsening, 12)
    assert [x.name for x in lv] == ["fine", "coarse_a", "coarse_b"]
    assert lv[0].blocks == tuple(range(12)) and lv[0].h == 1.0
    assert lv[1].blocks == (1, 3, 5, 7, 9, 11) and lv[1].h == 2.0  # paper's "even", 1-based
    assert lv[2].blocks == (0, 2, 4, 6, 8, 10) and lv[2].h == 2.0
    assert [x.name for x in build_hierarchy(compose("coarsening=even").coarsening, 4)] == [
        "fine",
        "coarse_a",
    ]
    assert build_hierarchy(compose("coarsening=odd").coarsening, 4)[1].blocks == (0, 2)
    assert (
        build_hierarchy(
            compose("coarsening=even_odd", "coarsening.hierarchy.step_scale=1").coarsening, 4
        )[1].h
        == 1.0
    )


@pytest.mark.parametrize(
    "blocks, match",
    [
        ("[[]]", r"coarsening.hierarchy.blocks\[0\] is empty"),
        ("[[1,1,3]]", r"coarsening.hierarchy.blocks\[0\]=\[1, 1, 3\] repeats a block"),
        (
            "[[0,2],[9]]",
            r"coarsening.hierarchy.blocks\[1\] names block 9, outside the model's blocks 0..3",
        ),
    ],
)
def test_custom_block_sets_are_validated(blocks, match):
    with pytest.raises(ConfigError, match=match):
        build_hierarchy(
            compose("coarsening=custom", f"coarsening.hierarchy.blocks={blocks}").coarsening, 4
        )


def test_custom_hierarchy_default_step_is_depth_ratio():
    lv = build_hierarchy(
        compose("coarsening=custom", "coarsening.hierarchy.blocks=[[0,3],[3]]").coarsening, 4
    )
    assert [(x.blocks, x.h, x.parent) for x in lv[1:]] == [
        ((0, 3), 2.0, "fine"),
        ((3,), 4.0, "coarse_1"),
    ]


@pytest.mark.parametrize("n_layer", [5, 1])
def test_even_odd_needs_an_even_depth(n_layer):
    with pytest.raises(
        ConfigError, match=rf"even number of blocks >= 2, but model.n_layer={n_layer}"
    ):
        build_hierarchy(compose("coarsening=even_odd").coarsening, n_layer)
