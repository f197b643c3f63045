"""Preemption: SIGTERM/SIGINT set a flag; the run stops at the next check, after the current
optimizer step, with a checkpoint (:class:`mltrain.errors.Preempted`)."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class SignalFlag:
    """The preemption flag of one process, agreed between ranks by :meth:`raised`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.agreed = False  # some rank had a signal at the last optimizer step's all-reduce
        self._saved: dict = {}

    def install(self) -> None:
        """Catch SIGTERM and SIGINT (main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            self.signum = signum
            log.warning(
                "received %s: stopping after the current optimizer step",
                signal.Signals(signum).name,
            )

        self._saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        for s, h in self._saved.items():
            signal.signal(s, h)
        self._saved = {}

    def raised(self, world: int) -> int | None:
        """The signal number when this process received one; under torchrun when any rank
        had one at the last optimizer step's all-reduce (the flag travels with the loss,
        :meth:`mltrain.train.batch_runner.BatchRunner.reduce_and_clip`), SIGTERM on ranks that had none, so
        every rank stops at the same step without a collective of its own."""
        stop = self.signum is not None if world == 1 else self.agreed
        return (self.signum or signal.SIGTERM) if stop else None
