"""Step timing that counts the GPU's work: CUDA kernels run asynchronously, so reading the host
clock right after launching a step measures the launches, not the step (the previous step's
kernels still running are counted in this one, this step's left for the next). A
:class:`StepClock` waits for the device (``torch.cuda.synchronize``) before each reading, so
``perf/tok_per_s`` and ``perf/mfu`` measure every kernel of the step, once. On the CPU it is
a plain clock.

The cost is one wait per optimizer step, after the optimizer's kernels: the step already
waits for its loss and gradient norm (``.tolist()`` before the optimizer step), so only the
optimizer update no longer overlaps the next step's first launches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class StepClock:
    """Seconds per optimizer step on ``device``.

    Args:
        device: where the step's kernels run (CUDA: synchronized before each reading).
        clock: the host clock (seconds; default :func:`time.perf_counter`; tests pass a fake).
        synchronize: waits for ``device`` (default :func:`torch.cuda.synchronize`).
    """

    def __init__(
        self,
        device: torch.device,
        clock: Callable[[], float] = time.perf_counter,
        synchronize: Callable[[torch.device], None] | None = None,
    ) -> None:
        self.device, self.clock = device, clock
        self.synchronize = synchronize or torch.cuda.synchronize
        self._start: float | None = None

    def now(self) -> float:
        """The host clock after the device has finished every kernel queued so far."""
        if self.device.type == "cuda":
            self.synchronize(self.device)
        return self.clock()

    def start(self) -> None:
        """Mark the start of a step."""
        self._start = self.now()

    def stop(self) -> float:
        """Seconds since :meth:`start` (device work included)."""
        if self._start is None:
            raise RuntimeError("StepClock.stop() without start()")
        dt, self._start = self.now() - self._start, None
        return dt
