"""How an epoch's parts are timed, so that a history means the same on a CPU and on a GPU.

On a CPU the host clock is the device's: the time between two points of the loop is the work
done in it. On CUDA the host only queues kernels; its clock would measure queueing, and the
time would land wherever the host next waits (``loss.item()``, a checkpoint). There the clock
records CUDA events on the stream at the same points, and reads them once, at the end of the
epoch (one synchronize): ``step_seconds`` is then the GPU's time from a step's first kernel to its
last, ``data_seconds`` the gaps between steps, in which the GPU waits for the next batch.
"""

from __future__ import annotations

import time

import torch


def epoch_clock_name(device) -> str:
    """The clock a run's history was timed with, in the words its attempt records."""
    return "CUDA events" if torch.device(device).type == "cuda" else "host clock"


class HostClock:
    """Intervals of the host's monotonic clock, summed per part."""

    def __init__(self):
        self._open: dict[str, float] = {}
        self._totals: dict[str, float] = {}

    def begin(self, part: str) -> None:
        self._open[part] = time.perf_counter()

    def end(self, part: str) -> None:
        self._totals[part] = self._totals.get(part, 0.0) + time.perf_counter() - self._open.pop(part)

    def seconds(self) -> dict[str, float]:
        return dict(self._totals)


class EventClock:
    """Intervals between events recorded on the device's stream, read once in ``seconds``.

    ``make_event`` and ``synchronize`` are torch.cuda's by default; they are parameters so that the
    arithmetic can be tested without a GPU.
    """

    def __init__(self, make_event=None, synchronize=None):
        self._make_event = make_event or (lambda: torch.cuda.Event(enable_timing=True))
        self._synchronize = synchronize or torch.cuda.synchronize
        self._open: dict[str, object] = {}
        self._pairs: list[tuple[str, object, object]] = []

    def _event(self):
        event = self._make_event()
        event.record()
        return event

    def begin(self, part: str) -> None:
        self._open[part] = self._event()

    def end(self, part: str) -> None:
        self._pairs.append((part, self._open.pop(part), self._event()))

    def seconds(self) -> dict[str, float]:
        self._synchronize()  # the one wait of the epoch: every event has happened after it
        totals: dict[str, float] = {}
        for part, start, stop in self._pairs:
            totals[part] = totals.get(part, 0.0) + start.elapsed_time(stop) / 1000.0  # milliseconds
        self._pairs.clear()
        return totals


def epoch_clock(device):
    return EventClock() if torch.device(device).type == "cuda" else HostClock()
