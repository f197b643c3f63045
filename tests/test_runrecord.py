"""run.json has one owner (mltrain.runrecord): its role, its writer and its reader, used by the
job and by mltrain-compare alike."""

from __future__ import annotations

import json

import pytest

from mltrain.runrecord import (
    RUN_FILE,
    RunRecord,
    UnreadableRecord,
    read_run_record,
    role_of,
    write_run_record,
)


@pytest.mark.parametrize(
    "job_type, multilevel, sized_by_flops, want",
    [
        ("frontier", True, True, "frontier"),  # logger.job_type wins
        (None, True, True, "multilevel"),
        ("", True, False, "multilevel"),  # an empty job type is unset
        (None, False, True, "single_level/same_flops"),
        (None, False, False, "single_level/same_steps"),
    ],
)
def test_role_of(job_type, multilevel, sized_by_flops, want):
    assert role_of(job_type, multilevel, sized_by_flops) == want


def _record(**changes) -> RunRecord:
    fields = dict(
        role="multilevel",
        threads=1,
        device="cpu",
        precision="fp32",
        world=1,
        torch="2.x",
        mltrain="0.1.0",
        plan={"multilevel": True, "iterations": 10},
        data={"planned": 100, "seen": None},
        validation={"sequences": 8, "tokens": 256, "fingerprint": "ab"},
        params={"total": 30, "nonembed": 20, "vocab": 5},
    )
    return RunRecord(**{**fields, **changes})


def test_written_and_read_back_in_the_documented_order(tmp_path):
    path = write_run_record(tmp_path, _record(branch_points={6: 0.5}))
    assert path == tmp_path / RUN_FILE
    meta = read_run_record(tmp_path)
    assert list(meta) == [
        "role",
        "status",
        "diverged_at",
        "threads",
        "device",
        "precision",
        "world",
        "torch",
        "mltrain",
        "multilevel",  # the plan's summary, at the top level
        "iterations",
        "data",
        "validation",
        "params",
        "branch_points",
    ]
    assert meta["status"] == "running" and meta["branch_points"] == {"6": 0.5}
    assert "branch" not in meta  # only a branch records one
    assert [p.name for p in tmp_path.iterdir()] == [RUN_FILE]  # no temporary file left


def test_an_ended_record_keeps_its_fields_and_names_its_end(tmp_path):
    where = {"step": 7, "fine_step": 5, "level": "fine"}
    ended = _record().ended("diverged", where, data={"planned": 100, "seen": 70})
    write_run_record(tmp_path, ended)
    meta = read_run_record(tmp_path)
    assert (meta["status"], meta["diverged_at"], meta["data"]["seen"]) == ("diverged", where, 70)
    assert meta["params"] == {"total": 30, "nonembed": 20, "vocab": 5}


def test_a_status_outside_the_list_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'done' is not one of running, completed"):
        write_run_record(tmp_path, _record(status="done"))
    assert not (tmp_path / RUN_FILE).exists()


def test_absent_is_empty_and_unreadable_names_the_file(tmp_path):
    assert read_run_record(tmp_path) == {}
    (tmp_path / RUN_FILE).write_text('{"status": "comp')  # torn
    with pytest.raises(UnreadableRecord, match=f"{tmp_path / RUN_FILE}: unreadable"):
        read_run_record(tmp_path)
    (tmp_path / RUN_FILE).write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(UnreadableRecord, match="not a JSON object"):
        read_run_record(tmp_path)


def test_compare_reads_an_unreadable_record_as_none_with_a_warning(tmp_path, capsys):
    from mltrain.analysis.judging.runs import read_run_json

    (tmp_path / RUN_FILE).write_text("{")
    assert read_run_json(tmp_path) == {}
    err = capsys.readouterr().err
    assert f"{tmp_path / RUN_FILE}: unreadable" in err and "config and metrics only" in err


def test_the_job_and_compare_derive_the_same_role(tmp_path):
    """A run that records no role (older runs) gets from mltrain-compare the role the job
    would have written."""
    from omegaconf import OmegaConf

    from mltrain.analysis.judging.runs import derive_role
    from mltrain.config import flatten
    from tests.helpers import run_job

    for name, overrides, want in [
        ("a", ["coarsening=none", "train.steps=2"], "single_level/same_steps"),
        ("b", ["train.steps=2", "coarsening.vcycle.window=1"], "multilevel"),
    ]:
        run_job(tmp_path / name, *overrides)
        meta = read_run_record(tmp_path / name)
        config = OmegaConf.to_container(OmegaConf.load(tmp_path / name / ".hydra/config.yaml"))
        assert meta["role"] == derive_role(flatten(config)) == want
