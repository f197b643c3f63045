"""Where a run is, what it has spent, and the metrics records it writes (DESIGN.md section 5).

:class:`Progress` is restored on resume; :class:`Records` holds the record of the last
optimizer step until the iteration's other operations have added to it (a line search's δ, a
growth's loss jump), so every record is written once, whole.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields

from mltrain.train.tracking import Tracker

log = logging.getLogger("mltrain.train.trainer")


@dataclass
class Progress:
    """Where the run is and what it has spent (all restored on resume).

    ``steps`` counts optimizer steps of every level (a record's ``step``); ``fine_steps`` fine optimizer steps;
    ``iteration`` is the plan iteration being run, ``op`` the index of the operation inside it
    and ``inner`` the steps already taken inside that operation. FLOPs are counts (with head /
    non-embedding), ``wall_s`` seconds since the run first started.
    """

    steps: int = 0
    fine_steps: int = 0
    iteration: int = 0
    op: int = 0
    inner: int = 0
    flops: int = 0
    flops_nonembed: int = 0
    flops_eval: int = 0
    flops_level: dict = field(default_factory=dict)
    tokens: int = 0
    tokens_level: dict = field(default_factory=dict)  # per level, only when a level has K > 1
    wall_s: float = 0.0
    val_loss: float | None = None
    loss_ema: float | None = None
    evaluated_at: int = -1
    logged_step: int = 0  # the last step whose record is in metrics.jsonl

    @classmethod
    def start(cls, levels) -> Progress:
        """The progress of a new run over ``levels``: zero counters per level, and per-level
        token counters (``perf/tokens_level/<name>``) when a level reads K > 1 tokens per
        position."""
        p = cls(flops_level={lv.name: 0 for lv in levels})
        if any(lv.patch > 1 for lv in levels):
            p.tokens_level = {lv.name: 0 for lv in levels}
        return p

    # field -> its key in a checkpoint's ``progress`` (checkpoints keep the names they had)
    SAVED_AS = {"steps": "step"}

    def state_dict(self) -> dict:
        """The fields as a checkpoint's ``progress`` holds them (:data:`SAVED_AS`)."""
        return {self.SAVED_AS.get(k, k): v for k, v in asdict(self).items()}

    @classmethod
    def from_state(cls, state: dict) -> Progress:
        """A progress from a checkpoint's ``progress`` (:meth:`state_dict`, or older layouts)."""
        state = dict(state)
        if "k" in state:  # checkpoints written before the plan refactor
            state["iteration"] = state.pop("k")
        for name, key in cls.SAVED_AS.items():
            if key in state:
                state[name] = state.pop(key)
        return cls(**state)

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved progress (a checkpoint's ``progress``, :meth:`state_dict`) in place:
        the records hold this object."""
        restored = Progress.from_state(state)
        for f in fields(self):
            setattr(self, f.name, getattr(restored, f.name))

    def spend(self, level: str, total: int, nonembed: int) -> None:
        """Count training FLOPs (with head / non-embedding) booked to ``level``."""
        self.flops += total
        self.flops_nonembed += nonembed
        self.flops_level[level] += total

    def count_step(self, level: str, fine: bool, flops: int, nonembed: int, tokens: int) -> None:
        """Count one optimizer step of ``level`` (``fine``: the fine level) that spent
        ``flops`` training FLOPs with head (``nonembed`` without) on ``tokens`` tokens."""
        self.steps += 1
        if fine:
            self.fine_steps += 1
        self.spend(level, flops, nonembed)
        self.tokens += tokens
        if self.tokens_level:
            self.tokens_level[level] += tokens

    def counters(self) -> dict:
        """The counters every record ends with."""
        return {
            "perf/flops": self.flops,
            "perf/flops_nonembed": self.flops_nonembed,
            "perf/tokens": self.tokens,
        }


class Records:
    """The metrics records of a run: a pending record (the last optimizer step's, written at
    the next step or evaluation) and the notes that go on the next record."""

    def __init__(self, tracker: Tracker, progress: Progress, wall) -> None:
        self.tracker, self.progress, self.wall = tracker, progress, wall
        self.pending: dict | None = None
        self.notes: dict[str, float] = {}

    def make(self, level: str, **values) -> dict:
        """A record: position, ``values``, then the counters."""
        p = self.progress
        return {
            "step": p.steps,
            "fine_step": p.fine_steps,
            "level": level,
            **values,
            **p.counters(),
            "perf/wall_s": self.wall(),
            **{f"perf/flops_level/{n}": v for n, v in p.flops_level.items()},
            **{f"perf/tokens_level/{n}": v for n, v in p.tokens_level.items()},
        }

    def watch_spike(self, rec: dict, loss: float, factor: float) -> None:
        """Mark ``rec`` (``train/spike``) and warn when a fine step's ``loss`` exceeds
        ``factor`` (``train.spike_factor``; 0: off) times the running mean of earlier fine
        losses; update the running mean (exponential, weight 0.1)."""
        p = self.progress
        if factor and p.loss_ema is not None and loss > factor * p.loss_ema:
            rec["train/spike"] = 1
            log.warning(
                "loss spike at step %d (fine step %d): %.4f > %.1f x running mean %.4f",
                *(p.steps, p.fine_steps, loss, factor, p.loss_ema),
            )
        p.loss_ema = loss if p.loss_ema is None else 0.9 * p.loss_ema + 0.1 * loss

    def console(self, k: int, total: int) -> None:
        """The console line of fine step ``k`` of ``total``."""
        p = self.progress
        val = f"{p.val_loss:.4f}" if p.evaluated_at == p.steps else "-"
        log.info(
            "fine step %d/%d | step %d | val %s | FLOPs %.3e | wall %.0f s",
            *(k, total, p.steps, val, p.flops, self.wall()),
        )

    def state_dict(self) -> dict:
        """The pending record (the last step's, not yet written) and the notes, as a
        checkpoint keeps them."""
        return {"pending": self.pending, "notes": dict(self.notes)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a checkpoint without them: none pending, no notes)."""
        self.pending = state.get("pending")
        self.notes = dict(state.get("notes") or {})

    def take_notes(self) -> dict[str, float]:
        notes, self.notes = self.notes, {}
        return notes

    def settle(self) -> None:
        """Bring the pending record up to what the iteration spent and noted after its last
        step, so the run's last record holds every FLOP of the plan."""
        rec, p = self.pending, self.progress
        if rec is None:
            return
        rec.update(self.take_notes())
        rec.update(p.counters())
        rec.update({f"perf/flops_level/{n}": v for n, v in p.flops_level.items()})

    def add(self, values: dict, level: str) -> None:
        """Add ``values`` to the pending record, or write them as a record of their own."""
        if self.pending is not None:
            self.pending.update(values)
        else:
            self.tracker.log(self.make(level) | values)

    def flush(self) -> None:
        """Write the pending record."""
        if self.pending is not None:
            self.tracker.log(self.pending)
            self.pending = None
        self.progress.logged_step = self.progress.steps
