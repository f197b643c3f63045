"""``mltrain``: the Hydra entry point. Compose, build, train, close.

    mltrain                                   # default CPU run (multilevel, sotu corpus)
    mltrain coarsening=none train.steps=500   # single-level
    mltrain -m coarsening.vcycle.delta=0.1,0.25,0.5  # a sweep, one job directory each
    torchrun --nproc_per_node=2 -m mltrain.cli coarsening=even_odd

Returns the final validation loss to Hydra (for sweepers). A problem the user can fix is
reported as one line ``mltrain: error: ...`` with a non-zero exit status. A multirun checks
every job's settings before the first starts; a job that fails while it runs reports +inf, the
other jobs go on, and the sweep exits non-zero at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import io
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

import mltrain.schemes  # noqa: F401  (fills the registries validate() checks names against)
from mltrain.config import absolute_paths, config_dir, register_configs, validate
from mltrain.config import arguments as A
from mltrain.config.hydra_errors import one_line
from mltrain.config.overrides import shell_command
from mltrain.errors import ConfigError, MLTrainError, Preempted
from mltrain.runrecord import LOCK_FILE
from mltrain.train import distributed as D

log = logging.getLogger("mltrain")

# Jobs of this process's multirun that failed: (job directory, message).
FAILED_JOBS: list[tuple[str, str]] = []

register_configs()


def train(cfg: DictConfig) -> float:
    """Run one job of the composed config ``cfg`` inside Hydra; return the final val loss."""
    from mltrain.job import Job  # deferred so `mltrain --help` stays fast

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    job, exit_code = None, 1
    try:
        # user-given paths are relative to where the command was launched, even when Hydra
        # changes into the run directory (hydra.job.chdir=true)
        try:
            absolute_paths(cfg, Path(hc.runtime.cwd))
            validate(cfg)  # before anything acts on a setting (e.g. the device)
        except OmegaConfBaseException as e:  # a value that does not resolve (train.steps=${oops})
            raise ConfigError(one_line(e)) from None
        ctx = D.init(cfg.train.device)
        run_dir = Path(D.broadcast_object(str(run_dir), ctx.world))
        group = Path(hc.sweep.dir).name if multirun and cfg.logger.group is None else None
        job = Job(cfg, run_dir, ctx, hydra_cfg=hc, group=group)
        notice = A.unread_notice(cfg, list(hc.overrides.task))
        if notice:
            log.warning("%s", notice)
        loss = job.run()
        exit_code = 0
        log.info("final val/loss %.4f; metrics: %s", loss, run_dir / "metrics.jsonl")
        job.tracker.summary({"final/val_loss": loss})
        if job.tracker.wandb_dir is not None:
            log.info(
                "W&B offline run: %s (upload with `%s`)",
                job.tracker.wandb_dir,
                shell_command(["wandb", "sync", str(job.tracker.wandb_dir)]),
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
    only Hydra's empty job log and the job's lock file, :func:`mltrain.runrecord.hold_run_dir`),
    and its parents up to the current directory if that left them empty; any other directory is
    left as it is."""
    try:
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"mltrain.log", LOCK_FILE}:
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
    """Hydra callback: before a multirun launches a job, check every job's settings
    (:func:`check_sweep`); at its end, list the jobs that failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_sweep(config)
        except MLTrainError as e:  # Hydra turns a callback's Exception into a warning
            print(f"mltrain: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(e.exit_code) from None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if FAILED_JOBS:
            print(f"mltrain: {len(FAILED_JOBS)} job(s) of the sweep failed:", file=sys.stderr)
            for d, msg in FAILED_JOBS:
                print(f"  {d}: {msg}", file=sys.stderr)


def check_sweep(config: DictConfig) -> None:
    """Check the settings of every job of a multirun of Hydra's basic sweeper before the first
    one starts, as each job would: its composition (an option, key or type), then
    :func:`mltrain.config.validate`, a branch's trunk
    (:func:`mltrain.train.branch.check_trunk_dir`), the plan's rules
    (:func:`mltrain.plan.plan.build_plan`) and the corpus's files
    (:func:`mltrain.data.corpora.open_corpus`: listed, not read).
    Without it a bad value in the last job was refused only after the jobs before it had
    trained. The jobs are Hydra's own expansion
    (``BasicSweeper.split_arguments`` of ``hydra.sweeper.params`` and the command line's
    overrides), each composed as its launcher composes it (``load_sweep_config``). Other
    sweepers (Optuna) choose their values as they go and are not checked here.

    Raises:
        ConfigError: one line naming the job (its number and swept values) and its problem;
            no sweep directory was made and no job ran (``SweepReport`` prints it and exits).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    from mltrain.config import typed
    from mltrain.data.corpora import open_corpus
    from mltrain.errors import ConfigError
    from mltrain.plan.plan import build_plan
    from mltrain.train.branch import check_trunk_dir

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return
    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides([*params, *task])
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    last = {o.get_key_element(): o.is_sweep_override() for o in parsed}  # the last one counts
    swept_keys = {k for k, swept in last.items() if swept}
    for num, job in enumerate(jobs):
        swept = [o for o in job if o.partition("=")[0] in swept_keys]
        where = f"job {num} of the sweep's {len(jobs)} ({' '.join(swept) or 'its defaults'})"
        try:
            cfg = loader.load_sweep_config(master_config=config, sweep_overrides=list(job))
        except (HydraException, OmegaConfBaseException) as e:  # an option, key or type
            raise ConfigError(f"{where}: {one_line(e)}; no job was started") from None
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            absolute_paths(cfg, Path.cwd())
            validate(cfg)
            checked = typed(cfg)
            if checked.train.branch_from is not None:  # a branch's trunk, as the job checks it
                check_trunk_dir(checked)
            build_plan(checked, None)
            open_corpus(checked.data)  # lists its files (a missing path), reads none
        except MLTrainError as e:
            raise ConfigError(f"{where}: {e}; no job was started") from None
        except OmegaConfBaseException as e:  # a value that does not resolve (${oops})
            raise ConfigError(f"{where}: {one_line(e)}; no job was started") from None


_hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(
    train
)


CFG_NOTE = (
    "# settings checked as a run checks them; data files and checkpoints are checked when it starts"
)


def check_cfg_request(argv: list[str]) -> list[str]:
    """Hydra's ``--cfg job|hydra|all`` (print the config, run nothing), made to fit mltrain:
    with ``-m`` it is refused in one line (Hydra ends in a traceback); ``job`` and ``all`` are
    checked as a run checks its settings (values, cross-field rules, the coarsening hierarchy)
    and printed after :data:`CFG_NOTE`; ``hydra --resolve`` is answered as ``all --resolve
    --package hydra``, so the run directory's ``${experiment_name}`` resolves (Hydra resolves
    the hydra section alone, without the job's keys). Returns the arguments to give Hydra.

    Raises:
        MLTrainError, ConfigError: one line (with ``-m``; a setting a run would refuse).
    """
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit:
        return argv  # Hydra reports malformed flags itself
    if not args.cfg:
        return argv
    if args.multirun:
        raise MLTrainError(
            f"--cfg {args.cfg} prints the config of one run and cannot be combined with "
            "-m/--multirun: give one value per setting (e.g. mltrain --cfg job coarsening.vcycle.delta=0.1)"
        )
    if args.cfg == "hydra":
        if not args.resolve or args.package is not None:
            return argv
        out = [a for a in argv if not a.startswith(("--cfg=", "-c="))]
        for i, a in enumerate(out[:-1]):
            if a in ("--cfg", "-c") and out[i + 1] == "hydra":
                out[i + 1] = "all"
        if not any(a in ("--cfg", "-c") for a in out):
            out.insert(0, "--cfg=all")
        return [*out, "--package", "hydra"]
    from mltrain.config import compose, typed, validate
    from mltrain.plan.plan import build_plan

    cfg = compose(args.overrides)
    validate(cfg)
    build_plan(typed(cfg), None)  # the hierarchy and the scheme's own rules
    notice = A.unread_notice(cfg, args.overrides)
    if notice:
        print(f"mltrain: note: {notice}", file=sys.stderr, flush=True)
    print(CFG_NOTE, flush=True)
    return argv


def main() -> None:
    """Console script ``mltrain`` (also ``python -m mltrain.cli``, e.g. under torchrun)."""
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        # Only rank 0 owns run (and sweep) directories; the others learn the run directory from
        # rank 0, write nothing there, and give Hydra a scratch directory removed at exit.
        scratch = tempfile.mkdtemp(prefix=f"mltrain-rank{rank}-")
        atexit.register(shutil.rmtree, scratch, True)
        sys.argv[1:] = A.with_overrides(
            sys.argv[1:],
            [
                f"hydra.run.dir={scratch}",
                f"hydra.sweep.dir={scratch}",
                "hydra/job_logging=disabled",
                "hydra/hydra_logging=disabled",
            ],
        )
    user_wants_traceback = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = (
        "1"  # let composition errors reach us, to print them as one line
    )
    try:
        A.check_range_sweeps(sys.argv[1:])
        A.check_one_preset(sys.argv[1:])
        A.check_deletions(sys.argv[1:])
        A.check_builder_keys(sys.argv[1:])
        A.check_sweeper_params(sys.argv[1:])
        name = A.variant_name(sys.argv[1:])
        if name is not None:  # among the overrides: not after a trailing -m or --cfg job
            sys.argv[1:] = A.with_overrides(sys.argv[1:], [name])
        sys.argv[1:] = A.with_overrides(sys.argv[1:], A.preset_sweep_dirs(sys.argv[1:]))
        sys.argv[1:] = check_cfg_request(sys.argv[1:])
        _hydra_main()
    except MLTrainError as e:
        print(f"mltrain: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (HydraException, OmegaConfBaseException, OSError) as e:
        if user_wants_traceback:
            raise
        plain_os_error = isinstance(e, OSError) and not isinstance(e, HydraException)
        what = "cannot create the run directory: " if plain_os_error else ""
        print(f"mltrain: error: {what}{one_line(e, sys.argv[1:])}", file=sys.stderr)
        sys.exit(2)
    finally:
        if not user_wants_traceback:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    if FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    main()
