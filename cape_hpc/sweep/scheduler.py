"""The sweep's model queue (thread-safe; used by rank 0's dispatcher thread and its local worker).

Models are handed out in the planned order; a model locked by a live process elsewhere comes back
as ``busy`` and is offered again after ``retry_s`` (at most ``CAPE_SWEEP_MAX_WAIT_S`` seconds,
default a day), so two runs of the same job share the work instead of duplicating it.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cape_hpc.sweep.runner import ModelRun

__all__ = ["Scheduler"]



class Scheduler:
    def __init__(self, names: list[str], retry_s: float = 1.0):
        self.queue = deque(names)
        self.deferred: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.results: dict[str, ModelRun] = {}
        self.stopping = False
        self.retry_s = retry_s
        self.defer_count: dict[str, int] = {}
        self.max_defer = int(os.environ.get("CAPE_SWEEP_MAX_WAIT_S", 24 * 3600) / retry_s)

    def next(self) -> str | tuple[str, float] | None:
        with self.lock:
            if self.stopping:
                return None
            if self.queue:
                return self.queue.popleft()
            if self.deferred:
                now = time.monotonic()
                self.deferred.sort()
                t, name = self.deferred[0]
                if t <= now:
                    self.deferred.pop(0)
                    return name
                return ("wait", t - now)
            return None

    def done(self, run: ModelRun) -> None:
        with self.lock:
            if run.status == "busy" and not self.stopping:
                n = self.defer_count[run.model] = self.defer_count.get(run.model, 0) + 1
                if n <= self.max_defer:
                    self.deferred.append((time.monotonic() + self.retry_s, run.model))
                    return
            self.results[run.model] = run

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
