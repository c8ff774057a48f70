"""One pool of worker processes for all work done several at once on one machine.

``run --jobs`` (local runs), a SLURM task's ``runs_per_task`` runs and the
search's workers all go through ``WorkerPool``: each worker gets the thread
count its caller decided once (``study.launch.cpus``), one GPU of the node's
(round robin, ``study.launch.workers``) and a watch on its parent, and every
piece of work comes back as an ``Outcome``. With one worker the work runs in
this process, with the same threads.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from study.launch.workers import device_slots, init_worker, orphaned, run_devices, set_threads, use_device

Item = TypeVar("Item")
FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What became of one piece of work: a run (its id, its record's status) or a search worker."""

    name: str
    status: str  # a run's Status value, "busy" (another process held it), or "failed"
    reason: str | None = None
    test_dsc: float | None = None
    seconds: float = 0.0

    @classmethod
    def failed(cls, name: str, exc: BaseException, seconds: float = 0.0) -> "Outcome":
        return cls(name, FAILED, f"{type(exc).__name__}: {exc}", None, seconds)


def _unless_orphaned(work: Callable[[Item], Outcome], item: Item) -> Outcome:
    """A worker's next piece of work, unless its parent is gone: then it exits instead of starting it."""
    if orphaned():
        os._exit(143)
    return work(item)


class WorkerPool:
    """``workers`` processes with ``threads`` torch threads each (this process when ``workers`` is 1).

    ``run(work, items, name)`` yields ``(item, Outcome)`` as each finishes; ``work(item)`` returns
    an Outcome and must be picklable (a module-level function or a ``functools.partial`` of one).
    An exception escaping ``work`` is that item's failed Outcome, named by ``name(item)``.
    """

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = max(1, int(workers)), max(1, int(threads))
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "WorkerPool":
        if self.workers == 1:
            set_threads(self.threads)
            use_device(run_devices(1)[0])  # the first GPU, named, as a pool's worker would get it
        else:
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=init_worker,
                initargs=(self.threads, os.getpid(), device_slots(context, self.workers)))
        return self

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def run(self, work: Callable[[Item], Outcome], items: Iterable[Item],
            name: Callable[[Item], str] = str) -> Iterator[tuple[Item, Outcome]]:
        items = list(items)
        if self._executor is None:
            for item in items:
                started = time.monotonic()
                try:
                    outcome = work(item)
                except Exception as exc:  # the work's own record says more
                    outcome = Outcome.failed(name(item), exc, time.monotonic() - started)
                yield item, outcome
            return
        futures = {self._executor.submit(_unless_orphaned, work, item): item for item in items}
        for future in as_completed(futures):
            item = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # a worker that died (BrokenProcessPool) or work that raised
                outcome = Outcome.failed(name(item), exc)
            yield item, outcome
