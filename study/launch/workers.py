"""Worker processes that share a machine's cores, and die with their parent.

Threads per worker are decided by the caller, once (``study.launch.cpus`` says why
they must not add up to more than the free CPUs); the pool is ``study.launch.pool``.
A worker whose parent is gone (killed, its terminal closed) stops on its own:
a watchdog thread sees the parent change and sends the worker SIGTERM, which a
training run records as an interruption (resumable); an idle worker just exits,
and an orphaned worker never starts the next piece of work queued for it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

WATCH_INTERVAL_S = 1.0
_orphaned = threading.Event()


def orphaned() -> bool:
    """This worker's parent is gone: start nothing new."""
    return _orphaned.is_set()


def set_threads(threads: int) -> None:
    from study.launch.cpus import configure_process

    configure_process(threads)


def exit_with_parent(parent_pid: int, grace_s: float = 30.0) -> threading.Thread:
    """Watch ``parent_pid``; when this process is orphaned, SIGTERM itself, then exit after ``grace_s``."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(WATCH_INTERVAL_S)
        _orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)  # time for the run to record its interruption
        os._exit(143)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def run_devices(count: int, gpus: int | None = None) -> list[str | None]:
    """The device of each of ``count`` runs trained at once: on a node with G visible GPUs, run i
    gets cuda:(i mod G), so a task with several GPUs uses them all; None (the default device)
    without a GPU. A run uses one GPU: there is no data parallelism."""
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i % gpus}" if gpus else None for i in range(count)]


_worker_device: str | None = None  # this worker's GPU, taken from the pool's queue at start


def device_slots(context, count: int, gpus: int | None = None):
    """A queue holding one device per worker of a pool of ``count`` (None without a GPU): each
    worker takes one when it starts and keeps it, so runs at once are spread over the GPUs."""
    devices = run_devices(count, gpus)
    if devices[0] is None:
        return None
    slots = context.Queue()
    for device in devices:
        slots.put(device)
    return slots


def use_device(device: str | None) -> None:
    """This process's run device when it is its own single worker (a pool of one)."""
    global _worker_device
    _worker_device = device


def worker_device() -> str | None:
    """The GPU this worker process took (None in the main process or without a GPU)."""
    return _worker_device


def init_worker(threads: int, parent_pid: int, slots=None) -> None:
    """The initializer of every worker process: its share of the cores, its GPU, and the parent watch."""
    global _worker_device
    set_threads(threads)
    if slots is not None:
        _worker_device = slots.get(timeout=60)
    exit_with_parent(parent_pid)
