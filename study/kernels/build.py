"""Compiling the C kernels on first use, into a private per-user cache.

The library is built by the system's C compiler from this package's own
sources and loaded with ctypes; nothing else is ever compiled or loaded. Its
file name is a digest of the sources, the flags, the compiler's version and
this CPU's features, so a cache shared by cluster nodes with different CPUs
(or a changed source) gets a new build, never a wrong one. Builds write to a
temporary file, flush it to disk, record its sha256 beside it
(``<library>.sha256``) and rename it into place, so processes starting
together never load half a file. A cached library is loaded only when its
bytes match that digest: a truncated file (a node that died after a build)
would kill the process with SIGBUS inside dlopen, and a foreign or garbage
file would load the wrong code; either is set aside and built again. A
library file (or its folder) not owned by this user, or writable by others,
is refused rather than loaded. The compiler runs in its own process group,
killed whole at the time limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import platform
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

SOURCES = ("selective_scan.c", "group_norm.c", "group_norm_pool_gelu.c")
HEADERS = ("common.h", "group_norm.h")
# Vector-friendly float maths without -ffast-math: that flag also links code that
# switches the whole process to flush-to-zero, which would change PyTorch's results.
FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
         "-fno-trapping-math")
# Tried in this order: this CPU's vector units and OpenMP, then plain x86-64 /
# aarch64 with OpenMP, then without OpenMP (one thread). With -fopenmp the library
# needs libgomp.so.1, and the dynamic loader reuses the one PyTorch has loaded.
VARIANTS = (("-march=native", "-fopenmp"), ("-fopenmp",), ())
HERE = Path(__file__).resolve().parent


# A build takes about a second; a compiler still running after this is hung (a broken
# toolchain, a stalled license server): give up on the kernels rather than stall the run.
COMPILE_TIMEOUT_S = 60
LOCK_NAME = ".build.lock"


class BuildFailed(Exception):
    """The kernels could not be built or loaded here; the message says why."""


class CompilerHung(BuildFailed):
    """The compiler did not finish in time: no other variant is tried with it."""


class RefusedFile(BuildFailed):
    """A file or folder someone else could have written: refused at once, nothing else is tried."""


def cache_dir() -> Path:
    from study.settings import current

    if current().kernel_cache is not None:
        return current().kernel_cache
    home = os.path.expanduser("~")
    if not os.path.isabs(home):  # no HOME and no passwd entry (some batch jobs): never the working folder
        return Path(tempfile.gettempdir()) / f"ultralbm-study-kernels-{os.getuid()}"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return Path(base) / "ultralbm-study" / "kernels"


def openmp_runtimes() -> list[str]:
    """The OpenMP runtime files loaded in this process (Linux): more than one means the
    kernels did not share PyTorch's, and torch.set_num_threads does not govern them."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    names = ("libgomp", "libiomp", "libomp")
    return sorted({line.split()[-1] for line in lines if any(n in line.rsplit("/", 1)[-1] for n in names)})


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise BuildFailed(f"no C compiler ({cc!r} is not on PATH; install gcc, or set CC)")
    return path


def _digest(cc: str, arch: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in HEADERS + SOURCES:
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S).stdout
    except subprocess.TimeoutExpired:
        raise CompilerHung(f"{cc} --version did not answer in {COMPILE_TIMEOUT_S} s") from None
    for part in (" ".join(FLAGS + arch), version, platform.machine(), _cpu_features()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


def _check_private(path: Path) -> None:
    # The folder too: in a folder others can write to, the file could be swapped after this check.
    for item in (path.parent, path):
        info = item.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise RefusedFile(f"{item}: not owned by this user, or writable by others; refusing to load "
                              f"{path.name} (remove it, or point STUDY_KERNEL_CACHE at a private folder)")


def _digest_file(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file, on disk before the rename."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _run_compiler(command: list[str]) -> subprocess.CompletedProcess:
    """The compiler in its own process group: at the time limit the whole group (cc1, as, ld) is killed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise CompilerHung(f"{' '.join(command)} did not finish in {COMPILE_TIMEOUT_S} s") from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _compile(cc: str, arch: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        command = [cc, *FLAGS, *arch, "-I", str(HERE), "-o", tmp, *(str(HERE / s) for s in SOURCES), "-lm"]
        done = _run_compiler(command)
        if done.returncode != 0:
            raise BuildFailed(f"{' '.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # The digest first: a library in place is never without the record of its bytes.
        _write_synced(_digest_file(target), _sha256(Path(tmp)).encode() + b"\n")
        os.replace(tmp, target)
        _sync_folder(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def _build_lock(folder: Path):
    """One build at a time per cache: parallel workers starting together wait for the first
    one's build and load it, instead of each compiling its own copy. A file system without locks
    (some NFS homes) builds unlocked; a lock held longer than two builds (its holder's node died)
    is given up on, not waited for forever."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / LOCK_NAME, "a") as fh:
        locked = False
        deadline = time.monotonic() + 2 * COMPILE_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            except OSError:  # ENOLCK, EOPNOTSUPP: no locks here
                break
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fh, fcntl.LOCK_UN)


def verified(target: Path) -> tuple[bool, str]:
    """Whether ``target`` is the library this cache built: its bytes match the digest written beside
    it at the build. (False, why) for a missing digest, a truncated, garbage or foreign file."""
    digest = _digest_file(target)
    try:
        expected = digest.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False, f"no digest ({digest.name}) records its build"
    try:
        actual = _sha256(target)
    except OSError as e:
        return False, f"unreadable ({e})"
    if actual != expected:
        return False, f"its bytes do not match {digest.name} (truncated, overwritten or foreign)"
    return True, ""


def _set_aside(target: Path, why: str, notes: list[str]) -> None:
    aside = target.with_name(f"{target.name}.unverified-{os.getpid()}")
    os.replace(target, aside)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_digest_file(target))
    notes.append(f"{target}: {why}; set aside as {aside.name} and built again")


def _load(target: Path) -> ctypes.CDLL:
    _check_private(target)  # a file someone else could have written is never loaded
    _check_private(_digest_file(target))
    return ctypes.CDLL(str(target))


# What build_and_load found and repaired in this process, said once (study.kernels prints it).
repairs: list[str] = []


def build_and_load() -> tuple[ctypes.CDLL, Path]:
    """The loaded library and its file, building it first when the cache has none. A cached file
    that fails its digest (torn, truncated, garbage, foreign) is set aside and built again; one
    that then does not load tries the next variant."""
    cc = _compiler()
    failures = []
    for arch in VARIANTS:  # the next variant only when this one does not compile or load
        try:
            target = cache_dir() / f"study-kernels-{_digest(cc, arch)}.so"
            if target.exists() and verified(target)[0]:
                try:
                    return _load(target), target  # the usual case: built before, no lock needed
                except OSError as e:  # a library that does not load here (noexec, missing libgomp):
                    failures.append(f"{target}: {e}")  # the file is fine, another variant may load
                    continue
            with _build_lock(target.parent):
                if target.exists():
                    ok, why = verified(target)
                    if not ok:
                        _check_private(target)  # never move a file we should not have touched either
                        _set_aside(target, why, repairs)
                if not target.exists():
                    _compile(cc, arch, target)
                try:
                    return _load(target), target
                except OSError as e:
                    failures.append(f"{target}: {e}")
        except RefusedFile:
            raise
        except CompilerHung as e:
            failures.append(str(e))
            break
        except (BuildFailed, OSError, subprocess.SubprocessError) as e:
            failures.append(str(e))
    raise BuildFailed("\n".join(failures))
