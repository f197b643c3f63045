"""Records: ``metrics.jsonl`` in the run directory, always; Weights & Biases when enabled.

This is the only module that imports ``wandb``. W&B runs offline unless ``logger.mode`` or
the ``WANDB_MODE`` environment variable says otherwise, so it never prompts for a login
and never waits on a network it cannot reach; any W&B failure is reported once as a
warning and training goes on with ``metrics.jsonl``.

``metrics.jsonl`` is strict JSON: non-finite floats are the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (:func:`dumps_record`), read back as floats by :func:`read_metrics`.

Metric names (DESIGN.md section 5): ``step``, ``fine_step``, ``level``, ``train/loss``,
``val/loss``, ``val/ppl``, ``lr``, ``perf/flops``, ``perf/flops_nonembed``, ``perf/tokens``,
``perf/tok_per_s``, ``perf/wall_s``, ``perf/flops_level/<name>``; in W&B, ``train/*`` and
``val/*`` are plotted against ``perf/flops``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


# Non-finite floats are written as these JSON strings (``NaN``/``Infinity`` literals are not
# JSON: strict parsers reject the line); :func:`read_metrics` turns them back into floats.
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _json_value(v: Any) -> Any:
    """``v`` with every non-finite float replaced by its :data:`NON_FINITE` string."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return v


def dumps_record(record: dict) -> str:
    """One ``metrics.jsonl`` line (without the newline): strict JSON, non-finite floats as
    the strings ``"nan"``, ``"inf"``, ``"-inf"`` (``allow_nan=False`` guards the rule)."""
    return json.dumps(_json_value(record), allow_nan=False)


def _from_json(record: dict) -> dict:
    """Undo :func:`dumps_record`'s strings for every key but ``level`` (a name, not a number)."""
    return {
        k: NON_FINITE[v] if k != "level" and isinstance(v, str) and v in NON_FINITE else v
        for k, v in record.items()
    }


def read_metrics(path: Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a torn last line from a killed run is ignored).

    Non-finite values come back as floats, whether written as :data:`NON_FINITE` strings or
    as the ``NaN``/``Infinity`` literals of files written before.
    """
    out = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(_from_json(rec))
    return out


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the records with ``step <= last_step`` (atomically); return the largest step the
    file held before, so a resumed run does not log those steps to W&B twice."""
    records = read_metrics(path)
    seen = max((r.get("step", -1) for r in records), default=-1)
    keep = [r for r in records if r.get("step", -1) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(dumps_record(r) + "\n" for r in keep))
    os.replace(tmp, path)
    return seen


class Tracker:
    """Writes every record to ``metrics.jsonl`` and, if enabled, to one W&B run.

    Args:
        run_dir: the Hydra run directory (W&B files go to ``run_dir/wandb``).
        logger_cfg: the ``logger`` config group.
        config: the resolved config as a plain dict (W&B ``config``).
        job_type: ``single_level`` or ``multilevel``.
        group: W&B group (experiment or sweep).
        run_id: a W&B run id to resume (from a checkpoint), else a new one.
        wandb_after_step: records with ``step`` <= this are not sent to W&B again.
        enabled: False on non-zero ranks: nothing is written.
    """

    def __init__(
        self,
        run_dir: Path,
        logger_cfg,
        config: dict,
        job_type: str,
        group: str,
        run_id: str | None = None,
        wandb_after_step: int = -1,
        enabled: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / METRICS_FILE
        self._file = open(self.path, "a", buffering=1) if enabled else None  # noqa: SIM115
        self._wandb: Any = None
        self._wandb_after = wandb_after_step
        self.run_id = run_id
        self.wandb_dir: Path | None = None
        if enabled and logger_cfg.name == "wandb":
            self._start_wandb(logger_cfg, config, job_type, group, run_id)

    def _warn(self, what: str, err: BaseException) -> None:
        msg = f"W&B {what} failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); continuing with {self.path} only"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self._wandb = None

    def _start_wandb(
        self, cfg, config: dict, job_type: str, group: str, run_id: str | None
    ) -> None:
        mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
        if mode == "disabled":
            return
        try:
            import wandb

            run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=group,
                job_type=job_type,
                tags=list(cfg.tags),
                config=config,
                dir=str(self.run_dir),
                name=self.run_dir.name,
                id=run_id,
                resume="allow",
                mode=mode,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=60, silent=True, console="off"),
            )
            run.define_metric("perf/flops")
            run.define_metric("train/*", step_metric="perf/flops")
            run.define_metric("val/*", step_metric="perf/flops")
            self._wandb = run
            self.run_id = run.id
            self.wandb_dir = Path(run.dir).parent if run.dir else None
        except Exception as e:  # never stop training for W&B
            self._warn("start", e)

    def log(self, record: dict) -> None:
        """Append ``record`` (one optimizer step, any level) to metrics.jsonl and W&B."""
        if not self.enabled:
            return
        self._file.write(dumps_record(record) + "\n")
        if self._wandb is not None and record["step"] > self._wandb_after:
            try:
                data = {
                    k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))
                }
                self._wandb.log(data, step=int(record["step"]))
            except Exception as e:
                self._warn("log", e)

    def summary(self, values: dict) -> None:
        """Final values (e.g. ``final/val_loss``) in the W&B run summary."""
        if self._wandb is not None:
            try:
                self._wandb.summary.update(values)
            except Exception as e:
                self._warn("summary", e)

    def close(self, exit_code: int = 0) -> None:
        """Flush metrics.jsonl and finish the W&B run (called in a ``finally``)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._wandb is not None:
            try:
                self._wandb.finish(exit_code=exit_code)
            except Exception as e:
                self._warn("finish", e)
            self._wandb = None
