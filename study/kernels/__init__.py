"""Native CPU kernels: the selective scan and channels_last GroupNorm (alone, and
fused with the 2x2 max-pool and GELU that follow it in the encoders) in C.

On a CPU these two dominate UltraLBM-UNet's training step when written as
PyTorch ops: the scan materialises its (L, batch, D, N) states several times
over, and PyTorch's channels_last GroupNorm backward is several times slower
than its NCHW one. The C versions keep the states in cache and make two
passes over a GroupNorm's data. They are built with the system's C compiler
on first use (``study.kernels.build``) and are optional: without a compiler,
or with ``STUDY_NATIVE_KERNELS=0``, the PyTorch versions run, and
``status()`` says why. ``study.kernels.ops`` holds their autograd functions.

The kernels share batch rows out over OpenMP threads: PyTorch's own (the
library reuses the libgomp PyTorch loaded), so ``torch.set_num_threads``
governs them and no second set of threads competes for the cores. A row is
always computed whole by one thread, so results do not depend on the number
of threads.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading

from study.kernels import build as _build
from study.kernels.build import BuildFailed, build_and_load, openmp_runtimes
from study.settings import current

_lock = threading.Lock()
_state: dict = {}  # "lib", "path" and "runtimes", or "reason": filled once per process
_enabled = current().native_kernels

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {
    "scan_forward": [_ptr] * 6 + [_i64] * 4,
    "scan_backward": [_ptr] * 11 + [_i64] * 4,
    "group_norm_forward": [_ptr] * 6 + [_i64] * 4 + [ctypes.c_double],
    "group_norm_backward": [_ptr] * 8 + [_i64] * 4,
    "group_norm_pool_gelu_forward": [_ptr] * 8 + [_i64] * 5 + [ctypes.c_double],
    "group_norm_pool_gelu_backward": [_ptr] * 10 + [_i64] * 5,
}


def set_enabled(flag: bool) -> None:
    """Turn the kernels on or off for this process (tests, benchmarks)."""
    global _enabled
    _enabled = bool(flag)


def enabled() -> bool:
    return _enabled


def library():
    """The loaded kernels, or None when disabled or unavailable (``status`` says why)."""
    if not _enabled:
        return None
    import torch  # noqa: F401  PyTorch's libgomp must be loaded first: the kernels then share it

    with _lock:
        if not _state:
            # What a machine may lack (a compiler, a writable cache, a loadable library) leaves the
            # PyTorch ops running and says why in status(); anything else (a kernel missing from a
            # library that built, a signature table that does not fit) is a bug of ours and raises.
            try:
                lib, path = build_and_load()
            except (BuildFailed, OSError, subprocess.SubprocessError) as e:
                _state["reason"] = str(e) or type(e).__name__
            else:
                for name, args in SIGNATURES.items():
                    fn = getattr(lib, name)  # AttributeError: a kernel renamed on one side only
                    fn.argtypes, fn.restype = args, ctypes.c_int
                _state.update(lib=lib, path=path, runtimes=openmp_runtimes())
            for note in _build.repairs:  # a cached library that failed its check, rebuilt: said once
                print(f"warning: the C kernels' cache: {note}", file=sys.stderr, flush=True)
            _build.repairs.clear()
            if "reason" in _state:
                # Said once per process; every run records it too (kernels.cpu in record.json).
                print(f"warning: the C kernels are not used ({_state['reason'].splitlines()[0]}); the PyTorch "
                      "ops run instead, about 1.3-1.7x slower per training step", file=sys.stderr, flush=True)
    return _state.get("lib")


def status() -> str:
    """One line: which kernels run here, and why when not the native ones."""
    if not _enabled:
        return "PyTorch ops (native CPU kernels turned off: STUDY_NATIVE_KERNELS=0)"
    if library() is not None:
        runtimes = _state["runtimes"]
        shared = "" if len(runtimes) <= 1 else (
            f"; {len(runtimes)} OpenMP runtimes loaded ({', '.join(runtimes)}): the kernels' threads are not "
            "governed by torch.set_num_threads")
        return f"native CPU kernels ({_state['path']}){shared}"
    return f"PyTorch ops (native CPU kernels unavailable: {_state['reason'].splitlines()[0]})"


def call(fn, *args) -> None:
    """Calls a kernel; its nonzero return means a work buffer could not be allocated."""
    if fn(*args):
        raise MemoryError(f"{fn.__name__}: the kernel could not allocate its work buffer")
