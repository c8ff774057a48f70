"""Leases on run folders: who trains a run, safe across processes, hosts and dead nodes.

A holder writes ``lease.<n>`` (created with O_EXCL) in the run folder and
renews it every ``interval`` seconds from a background thread. A lease is
dead when it has not been renewed for ``STUDY_LOCK_LEASE_S`` seconds (default
300), on any host; on the holder's own host also as soon as its process is
gone. A dead lease is taken over by creating the next generation
``lease.<n+1>``: O_EXCL lets exactly one taker create it, and a taker that
then sees another live lease backs off, so two processes never both hold a
run. A holder that finds a newer generation (it was paused past its lease
and taken over) has lost the run and must stop writing to it: ``lost`` says so.
An empty or unreadable lease file (a holder killed while writing it, a full
disk) is dead once it is older than the lease.

The lease period is the store's: written once, by the first process that
needs it, into the store (``Store.lease_period_path``, from that process's
``STUDY_LOCK_LEASE_S``), and read by every later process on every host, so a
host with a shorter setting cannot take over a run its holder renews at the
store's pace.

A lease's age is read on one clock: the file system's. Each renewal rewrites
the lease file, whose modification time the file server sets; an observer
writes a probe file into the same folder and reads its modification time as
"now". No host's own wall clock enters the decision, so a node whose clock
runs minutes ahead or behind neither takes over a live run nor keeps a dead
one blocked (``renewed_at`` in the file is kept for people, not used). The
lease's time is the earlier of its modification time and its inode change
time (ctime, which the file system sets to its own now at every change and no
tool can set back or ahead): a modification time set into the future by hand
cannot pin a run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from study.store.atomic import atomic_write_json
from study.store.files import UnsafeFile, open_regular, read_regular

LEASE_ENV = "STUDY_LOCK_LEASE_S"
DEFAULT_LEASE_S = 300.0
_NAME = re.compile(r"lease\.([1-9][0-9]{0,8})")


def lease_seconds() -> float:
    from study.settings import current

    raw = current().lock_lease_s
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1
        if value > 0:
            return value
        from study.errors import ConfigError

        raise ConfigError(f"{LEASE_ENV}={raw!r}: expected a positive number of seconds")
    return DEFAULT_LEASE_S


def store_period(path: Path) -> float:
    """The store's lease period from ``path``; the first process writes its own (``lease_seconds``) there.
    A store this process cannot write (read-only, a labmate's) without the file: this process's setting."""
    for _ in range(3):
        try:
            data = json.loads(read_regular(path, LEASE_LIMIT))
            value = float(data["lease_s"])
            if value > 0 and value == value:
                return value
            raise ValueError(value)
        except FileNotFoundError:
            pass
        except (UnsafeFile, ValueError, KeyError, TypeError, OSError):
            from study.errors import ConfigError

            raise ConfigError(f"{path}: the store's lease period is unreadable; expected {{\"lease_s\": <positive "
                              "seconds>}} (delete the file to let the next run write it again)") from None
        own = lease_seconds()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue  # written by another process just now: read it
        except OSError:
            return own
        with os.fdopen(fd, "w") as fh:
            json.dump({"lease_s": own, "written_by": socket.gethostname()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return own
    return lease_seconds()


def is_lease_file(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def pid_alive(pid: int) -> bool:
    """A live process on this host (a zombie, exited but not yet reaped, is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\tZ" not in next(line for line in fh if line.startswith("State:"))
    except (OSError, StopIteration):
        return True


def store_now(folder: Path) -> float:
    """The file system's "now" in ``folder``: the modification time of a probe file written there
    (the file server's clock on NFS; the same clock that stamps the lease files)."""
    probe = folder / f".clock-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"t")
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


@dataclass(frozen=True)
class Holder:
    """What a lease file says, and how old it is by the store's clock."""

    generation: int
    host: str | None
    pid: int | None
    token: str | None
    age_s: float  # since the file was last written, on the file system's clock
    alive: bool
    store_clock: bool = True  # False: the folder is not writable here, so the age is by this host's clock

    def describe(self) -> str:
        if self.host is None:
            return f"an unreadable lease (lease.{self.generation})"
        clock = "" if self.store_clock else " by this host's clock (the store is read-only here)"
        return f"host {self.host}, pid {self.pid}, last heartbeat {max(0.0, self.age_s):.0f} s ago{clock}"


LEASE_LIMIT = 4096  # a lease is one line of JSON


class RunLease:
    def __init__(self, run_dir: Path, lease_s: float | None = None):
        self.dir = Path(run_dir)
        self.lease_s = lease_s if lease_s is not None else lease_seconds()
        self.generation: int | None = None
        self.token: str | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading
    def _path(self, generation: int) -> Path:
        return self.dir / f"lease.{generation}"

    def _generations(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_NAME.fullmatch, names) if m)

    def _now(self) -> tuple[float, bool]:
        """(now, on the store's clock). A folder this process cannot write (a labmate reading the
        store, a read-only mount, a full disk) leaves only this host's clock: good enough to show,
        and taking over needs a writable folder anyway."""
        try:
            return store_now(self.dir), True
        except OSError:
            return time.time(), False

    def _read(self, generation: int, now: tuple[float, bool] | None = None) -> Holder | None:
        path = self._path(generation)
        clock, on_store = now or self._now()
        try:
            # open first: NFS revalidates its cached attributes on open; a regular file only, never
            # through a link (a FIFO would block, /dev/zero would never end)
            with os.fdopen(open_regular(path, LEASE_LIMIT), "rb") as fh:
                info = os.fstat(fh.fileno())
                age = clock - min(info.st_mtime, info.st_ctime)  # a future mtime cannot pin the run
                text = fh.read(LEASE_LIMIT)
        except FileNotFoundError:
            return None
        except UnsafeFile:  # not a lease this harness wrote: it holds nothing
            return Holder(generation, None, None, None, float("inf"), False, on_store)
        except OSError:
            return Holder(generation, None, None, None, 0.0, True, on_store)
        try:
            data = json.loads(text)
            host, pid, token = str(data["host"]), int(data["pid"]), str(data["token"])
        except (ValueError, KeyError, TypeError):
            # Being written right now, or left empty by a holder that died writing it.
            return Holder(generation, None, None, None, age, age <= self.lease_s, on_store)
        alive = age <= self.lease_s
        if alive and host == socket.gethostname():
            alive = pid_alive(pid)
        return Holder(generation, host, pid, token, age, alive, on_store)

    def holder(self) -> Holder | None:
        """The live holder of this run, if any."""
        generations = self._generations()
        now = self._now() if generations else None
        for generation in reversed(generations):
            h = self._read(generation, now)
            if h is not None and h.alive and (self.token is None or h.token != self.token):
                return h
        return None

    # -- holding
    def _content(self, started: float) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "started_at": started, "renewed_at": time.time()}

    def acquire(self) -> bool:
        """Take the lease; False when a live holder has it. Raises StoreWriteError if it cannot be written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            generations = self._generations()
            if self.holder() is not None:
                return False
            target = (generations[-1] + 1) if generations else 1
            self.token = uuid.uuid4().hex
            try:
                fd = os.open(self._path(target), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                continue  # another taker was faster: look again
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(self._content(time.time()), fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self._path(target).unlink(missing_ok=True)
                from study.store.atomic import StoreWriteError

                raise StoreWriteError(f"{self._path(target)}: cannot write ({exc.strerror or exc})") from None
            self.generation = target
            if self.holder() is not None:  # a racing taker holds another generation: back off
                self._path(target).unlink(missing_ok=True)
                self.generation = self.token = None
                return False
            for g in generations:  # dead generations: clean up
                if g != target:
                    self._path(g).unlink(missing_ok=True)
            self._started = time.time()
            return True
        return False

    def still_held(self) -> bool:
        if self.generation is None:
            return False
        mine = self._read(self.generation)
        if mine is None or mine.token != self.token:
            return False
        return all(g <= self.generation for g in self._generations())

    def renew(self) -> bool:
        if not self.still_held():
            self._lost.set()
            return False
        try:
            atomic_write_json(self._path(self.generation), self._content(self._started))
        except Exception:  # a full disk: try again next beat; others take over only after the lease
            pass
        return True

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def start_heartbeat(self, interval: float | None = None) -> None:
        interval = interval if interval is not None else min(30.0, self.lease_s / 4)

        def beat():
            while not self._stop.wait(interval):
                if not self.renew():
                    return

        self._thread = threading.Thread(target=beat, name="run-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.generation is not None and self.still_held():
            self._path(self.generation).unlink(missing_ok=True)
        self.generation = None
