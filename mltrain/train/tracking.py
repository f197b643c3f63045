"""Records: ``metrics.jsonl`` in the run directory, always; Weights & Biases when enabled.

This is the only module that imports ``wandb``. W&B runs offline unless ``logger.mode`` or
the ``WANDB_MODE`` environment variable says otherwise, so it never prompts for a login
and never waits on a network it cannot reach; any W&B failure is reported once as a
warning and training goes on with ``metrics.jsonl``.

``metrics.jsonl`` is strict JSON: non-finite floats are the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (:func:`dumps_record`), read back as floats by :func:`read_metrics`.

After any interruption the W&B run holds every step of ``metrics.jsonl`` exactly once: a
resumed :class:`Tracker` reads what W&B itself holds (offline, the earlier run files, with
:func:`read_wandb_records`; online, the resumed run's step) and re-sends only the rest.

Metric names (DESIGN.md section 5): ``step``, ``fine_step``, ``level``, ``train/loss``,
``val/loss``, ``val/ppl``, ``lr``, ``perf/flops``, ``perf/flops_nonembed``, ``perf/tokens``,
``perf/tok_per_s``, ``perf/wall_s``, ``perf/flops_level/<name>``; in W&B, ``train/*`` and
``val/*`` are plotted against ``perf/flops``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

from mltrain.metrics import METRICS_FILE, dumps_record, read_metrics

log = logging.getLogger(__name__)

WANDB_HEADER = b":W&B" + (0xBEE1).to_bytes(2, "little") + b"\x00"
_BLOCK, _HDR = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# a stream's directory: offline-run-<time>-<id>[-<n>] (offline) or run-<time>-<id>[-<n>] (online)
_STREAM_DIR = re.compile(r"(?:offline-)?run-(?P<time>\d{8}_\d{6})-(?P<rest>.+)")


def read_wandb_payloads(path: Path) -> list[bytes]:
    """The serialised records of a ``run-<id>.wandb`` file, up to the first torn or corrupt
    one (a file shorter than its header, as a run killed at once leaves, has none).

    Raises:
        ValueError: the file does not start with W&B's log header (another format).
    """
    data = Path(path).read_bytes()
    if len(data) < _HDR:
        return []
    if data[:_HDR] != WANDB_HEADER:
        raise ValueError(f"{path} does not start with W&B's log header {WANDB_HEADER!r}")
    crc = {t: zlib.crc32(bytes([t])) for t in (_FULL, _FIRST, _MIDDLE, _LAST)}
    pos, out, parts = _HDR, [], None
    while pos + _HDR <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HDR:  # block trailer: zero padding
            pos += left
            continue
        checksum = int.from_bytes(data[pos : pos + 4], "little")
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0 and checksum == 0:  # zeroed space: nothing more written
            break
        chunk = data[pos + _HDR : pos + _HDR + length]
        if kind not in crc or len(chunk) < length or zlib.crc32(chunk, crc[kind]) != checksum:
            break  # torn or corrupt: what follows cannot be trusted
        pos += _HDR + length
        if kind == _FULL and parts is None:
            out.append(chunk)
        elif kind == _FIRST and parts is None:
            parts = [chunk]
        elif kind in (_MIDDLE, _LAST) and parts is not None:
            parts.append(chunk)
            if kind == _LAST:
                out.append(b"".join(parts))
                parts = None
        else:  # a chunk out of sequence
            break
    return out


def read_wandb_records(path: Path) -> list:
    """The complete records of a ``run-<id>.wandb`` file as ``wandb.proto`` ``Record``
    messages (see :func:`read_wandb_payloads`); a record that does not parse ends the list."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for payload in read_wandb_payloads(path):
        rec = pb.Record()
        try:
            rec.ParseFromString(payload)
        except Exception:  # protobuf's DecodeError
            break
        out.append(rec)
    return out


def wandb_history_steps(path: Path) -> list[int]:
    """The ``step`` of every history row in a ``run-<id>.wandb`` file, in file order."""
    return [
        r.history.step.num
        for r in read_wandb_records(path)
        if r.WhichOneof("record_type") == "history"
    ]


def wandb_run_files(run_dir: Path, run_id: str | None = None) -> list[Path]:
    """The ``run-<id>.wandb`` files of ``run_dir/wandb``, oldest first: one per W&B stream
    started there, in ``offline-run-<time>-<id>`` (offline) or ``run-<time>-<id>`` (online),
    W&B adding ``-1``, ``-2``... when a stream starts in the same second as another. Only those
    of ``run_id`` when given; the ``latest-run`` link is skipped (it repeats one of them)."""
    root = Path(run_dir) / "wandb"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STREAM_DIR.fullmatch(d.name)
        if m is None or d.is_symlink() or not d.is_dir():
            continue
        for f in d.glob("run-*.wandb"):
            rid = wandb_file_run_id(f)
            if run_id is not None and rid != run_id:
                continue
            rest = m["rest"]
            if rest == rid:
                n = 0
            elif rest.startswith(rid + "-") and rest[len(rid) + 1 :].isdigit():
                n = int(rest[len(rid) + 1 :])
            else:  # the file does not belong to this directory's run
                continue
            found.append((m["time"], n, f))
    return [f for *_, f in sorted(found)]


def wandb_file_run_id(path: Path) -> str:
    """The W&B run id of a ``run-<id>.wandb`` file (from its name)."""
    return Path(path).name[len("run-") : -len(".wandb")]


def wandb_offline_watermark(run_dirs: list[Path], run_id: str, exclude: Path | None = None) -> int:
    """The largest step that the offline W&B streams of run ``run_id`` in ``run_dirs`` hold,
    -1 if none: what an earlier (possibly killed) process of this run got W&B to write.

    Each stream is a prefix of what its process sent, and each process sends from the
    previous watermark on, so every step up to the watermark is in some stream, once.
    ``exclude`` is the current stream's own directory (it is being written).
    """
    mark = -1
    seen = set()
    for run_dir in run_dirs:
        for f in wandb_run_files(run_dir, run_id):
            key = f.resolve()
            if key in seen or not f.parent.name.startswith("offline-"):
                continue
            seen.add(key)
            if exclude is not None and f.parent.resolve() == Path(exclude).resolve():
                continue
            mark = max([mark, *wandb_history_steps(f)])
    return mark


class Tracker:
    """Writes every record to ``metrics.jsonl`` and, if enabled, to one W&B run.

    A resumed run continues the W&B run of its checkpoint (or, restarted without one, the
    W&B run already in ``run_dir/wandb``). W&B may hold fewer steps than ``metrics.jsonl``:
    a process killed with SIGKILL loses what wandb-core had not written yet. So the Tracker
    asks W&B what it holds of this run (the *watermark*: offline, the largest step in the
    earlier ``offline-run-*-<id>`` files; online, the resumed run's step counter), re-sends the
    records of ``metrics.jsonl`` above it, and from then on sends only steps above it, each
    once, never going backwards (W&B drops a step lower than one it has).

    Args:
        run_dir: the Hydra run directory (W&B files go to ``run_dir/wandb``).
        logger_cfg: the ``logger`` config group.
        config: the resolved config as a plain dict (W&B ``config``).
        job_type: ``single_level`` or ``multilevel``.
        group: W&B group (experiment or sweep).
        run_id: a W&B run id to resume (from a checkpoint), else the one already in
            ``run_dir/wandb`` if ``metrics.jsonl`` is there (the run restarts), else a new one.
        earlier_run_dir: another run directory whose offline W&B files of ``run_id`` count as
            sent (a checkpoint of that directory continues into this one).
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
        earlier_run_dir: Path | None = None,
        enabled: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / METRICS_FILE
        restart = enabled and self.path.is_file()
        self._file = open(self.path, "a", buffering=1) if enabled else None  # noqa: SIM115
        self._wandb: Any = None
        self._wandb_after = -1  # steps <= this are in W&B already (earlier streams)
        self._wandb_last = -1  # the last step sent in this stream
        if run_id is None and restart:
            earlier = wandb_run_files(self.run_dir)
            run_id = wandb_file_run_id(earlier[-1]) if earlier else None
        self.run_id = run_id
        self.wandb_dir: Path | None = None
        self._search = [self.run_dir] + ([Path(earlier_run_dir)] if earlier_run_dir else [])
        if enabled and logger_cfg.name == "wandb":
            self._start_wandb(logger_cfg, config, job_type, group, run_id)
            if self._wandb is not None:
                self._catch_up()

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
                name=f"{job_type} {self.run_dir.name}",  # role and settings
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

    def _watermark(self) -> int:
        """The largest step W&B holds of this run before this process sends anything."""
        run = self._wandb
        if getattr(run, "offline", False):
            return wandb_offline_watermark(self._search, self.run_id, exclude=self.wandb_dir)
        # online: "the W&B step of the next log() call", set from the server on resume
        # (the run's last step + 1; 0 for a new run or one with no history yet)
        return int(run.step) - 1

    def _catch_up(self) -> None:
        """Find the watermark, then re-send the records of ``metrics.jsonl`` above it (those
        that an earlier, killed process wrote to the file but W&B never got)."""
        try:
            self._wandb_after = self._watermark()
        except Exception as e:  # unknown: losing steps is worse than sending some twice
            msg = f"W&B: cannot tell which steps run {self.run_id} holds ({type(e).__name__}: {e}); sending every step of {self.path} (some may reach W&B twice)"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            self._wandb_after = -1
        resend = [r for r in read_metrics(self.path) if r.get("step", -1) > self._wandb_after]
        if resend:
            log.info(
                "W&B run %s holds steps up to %d; sending steps %d..%d again from %s",
                self.run_id,
                self._wandb_after,
                resend[0]["step"],
                resend[-1]["step"],
                self.path,
            )
        for record in resend:
            self._send(record)

    def _send(self, record: dict) -> None:
        """Send one record to W&B if W&B lacks its step: above the watermark, and not below the
        last step sent (an equal step merges into W&B's open row, as W&B does)."""
        if self._wandb is None:
            return
        step = int(record["step"])
        if step <= self._wandb_after or step < self._wandb_last:
            return
        try:
            data = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}
            self._wandb.log(data, step=step)
            self._wandb_last = step
        except Exception as e:
            self._warn("log", e)

    def log(self, record: dict) -> None:
        """Append ``record`` (one optimizer step, any level) to metrics.jsonl and W&B."""
        if not self.enabled:
            return
        self._file.write(dumps_record(record) + "\n")
        self._send(record)

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
            self._wait_written()

    def _wait_written(self, timeout_s: float = 60.0) -> None:
        """Wait until wandb-core has written the run file's exit record. ``wandb.finish()``
        returns before its writer has flushed, and a process that exits at once can leave the
        file without its last records (seen on a loaded machine: a resumed stream without any
        history): the W&B data must hold every step of metrics.jsonl. Warns after ``timeout_s``
        seconds and goes on."""
        if self.wandb_dir is None or self.run_id is None:
            return
        stream = self.wandb_dir / f"run-{self.run_id}.wandb"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                recs = read_wandb_records(stream)
            except Exception:  # not there yet, or no protobuf module: nothing to wait for
                recs = None
            if recs and recs[-1].WhichOneof("record_type") == "exit":
                return
            time.sleep(0.05)
        self._warn("finish", TimeoutError(f"{stream} has no exit record after {timeout_s:.0f} s"))
