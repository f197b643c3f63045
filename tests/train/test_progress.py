"""A run's position and counters (mltrain/train/progress.py) as checkpoints hold them: the
field ``steps`` is saved under the key ``step`` it always had, so checkpoints written before and
after the rename load alike."""

from __future__ import annotations

from mltrain.train.progress import Progress


def test_steps_is_saved_as_step_and_read_back():
    p = Progress(steps=7, fine_steps=3, iteration=3, inner=2)
    saved = p.state_dict()
    assert saved["step"] == 7 and "steps" not in saved
    assert Progress.from_state(saved) == p


def test_an_older_checkpoints_progress_loads_in_place():
    older = {**Progress().state_dict(), "step": 5, "k": 4}  # 'k': before the plan refactor
    del older["iteration"]
    p = Progress()
    p.load_state_dict(older)
    assert (p.steps, p.iteration) == (5, 4)
