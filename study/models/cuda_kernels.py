"""mamba-ssm's selective scan and causal-conv1d's convolution: found, probed and described once per device.

An import is not proof that a kernel runs: mamba-ssm's main branch imports
without its compiled scan (``selective_scan_cuda``) and raises only when
called, and a build against another torch can import and then fail. So the
kernels count as usable on a device only after one forward and backward of
each entry point there agrees with the project's PyTorch scan and
``nn.Conv1d``; otherwise the reason is kept (``CudaKernels.problem``), the
Mamba layer falls back and says so once, and runs record it.

``SUPPORTED`` is the range of releases whose entry points this project was
checked against, from their sources: mamba-ssm 2.3.0 to 2.3.2.post1 and its
main branch (``selective_scan_fn``'s arguments and the checks of
csrc/selective_scan/selective_scan.cpp), causal-conv1d 1.4 to 1.6.1
(``causal_conv1d_fn`` and csrc/causal_conv1d.cpp). A version outside it is
used if its probe passes, with a note.

``study.models.kernel_contract`` installs stand-ins through ``override``, so
the CUDA branch of the layers runs on CPU tensors in the tests.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# mamba-ssm from 2.3.0: 2.2.x import names transformers 5 removed, so with today's transformers they
# never import (docs/install.md).
SUPPORTED = {"mamba-ssm": ((2, 3, 0), (2, 4)), "causal-conv1d": ((1, 4), (1, 7))}
CONV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CONV_WIDTHS = range(2, 5)  # causal-conv1d: "only supports width between 2 and 4"
PROBE_TOLERANCE = 1e-3  # relative to the output's size: float32 kernels against float32 PyTorch ops


@dataclass(frozen=True)
class CudaKernels:
    """The kernels a device can run, in words for a record, and why not where not."""

    scan: object | None  # selective_scan_fn, or None
    conv: object | None  # causal_conv1d_fn, or None (nn.Conv1d then SiLU runs instead)
    scan_name: str
    conv_name: str
    problem: str | None = None  # why ``scan`` is None
    notes: tuple[str, ...] = field(default_factory=tuple)  # the conv's absence, versions outside SUPPORTED

    @property
    def usable(self) -> bool:
        return self.scan is not None


override: CudaKernels | None = None  # set by study.models.kernel_contract.contract_kernels()
_lock = threading.Lock()
_found: dict[str, CudaKernels] = {}
_warned: set[str] = set()


def takes_kernel_path(x: torch.Tensor) -> bool:
    """Whether the layers send ``x`` down their CUDA branch (CUDA tensors; any tensor under the stand-ins)."""
    return x.is_cuda or override is not None


def conv_applies(x: torch.Tensor, width: int) -> bool:
    """Whether causal-conv1d's kernel takes this input dtype and filter width (else nn.Conv1d)."""
    return x.dtype in CONV_DTYPES and width in CONV_WIDTHS


def _device_key(device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def kernels_for(device) -> CudaKernels:
    """The kernels for ``device``, probed on first use (once per process and device)."""
    if override is not None:
        return override
    key = _device_key(device)
    with _lock:
        if key not in _found:
            _found[key] = _discover(torch.device(key))
        return _found[key]


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def version_note(name: str, version: str | None) -> str | None:
    if version is None:
        return None
    low, high = SUPPORTED[name]
    if low <= _release(version) < high:
        return None
    span = f"{'.'.join(map(str, low))} to below {'.'.join(map(str, high))}"
    return f"{name} {version} is outside the releases this project was checked against ({span})"


def _discover(device: torch.device) -> CudaKernels:
    # The first Mamba call may come under no_grad or inference_mode (an evaluation, a benchmark):
    # the probes need gradients, and full float32.
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        return _discover_now(device)


def _discover_now(device: torch.device) -> CudaKernels:
    notes = []
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # noqa: BLE001  not installed, or built against another torch
        return CudaKernels(None, None, "none", "nn.Conv1d", f"mamba-ssm does not import ({_first_line(exc)})")
    scan_version = package_version("mamba-ssm") or package_version("mamba_ssm") or "unknown version"
    problem = probe_scan(selective_scan_fn, device)
    if problem is not None:
        return CudaKernels(None, None, "none", "nn.Conv1d", f"mamba-ssm {scan_version}: {problem}")
    notes += [n for n in [version_note("mamba-ssm", scan_version)] if n]
    conv, conv_name = None, "nn.Conv1d"
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as exc:  # noqa: BLE001
        notes.append(f"causal-conv1d does not import ({_first_line(exc)}): nn.Conv1d runs the Mamba's conv")
    else:
        conv_version = package_version("causal-conv1d") or package_version("causal_conv1d") or "unknown version"
        conv_problem = probe_conv(causal_conv1d_fn, device)
        if conv_problem is None:
            conv, conv_name = causal_conv1d_fn, f"causal-conv1d {conv_version}"
            notes += [n for n in [version_note("causal-conv1d", conv_version)] if n]
        else:
            notes.append(f"causal-conv1d {conv_version}: {conv_problem}: nn.Conv1d runs the Mamba's conv")
    return CudaKernels(selective_scan_fn, conv, f"mamba-ssm {scan_version}", conv_name, None, tuple(notes))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return float((got.float() - want.float()).abs().max()) <= PROBE_TOLERANCE * (1.0 + float(want.abs().max()))


def probe_scan(fn, device: torch.device) -> str | None:
    """One forward and backward of ``fn`` (selective_scan_fn's signature) on ``device`` against the
    project's PyTorch scan; None when they agree, else what went wrong."""
    from study.models.selective_scan import selective_scan

    generator = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 12, 16, 33  # 12 channels: not a multiple of 8, as the -T model's widths

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(device)

    args = [rand(b, d, length), rand(b, d, length, scale=0.5), -rand(d, n).abs() - 0.1, rand(b, n, length),
            rand(b, n, length), rand(d), rand(b, d, length), rand(d, scale=0.1)]
    try:
        outs, grads = [], []
        for scan in (fn, selective_scan):
            leaves = [a.clone().requires_grad_() for a in args]
            u, delta, A, B, C, D, z, bias = leaves
            y = scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
            y.square().sum().backward()
            outs.append(y.detach())
            grads.append([leaf.grad for leaf in leaves])
        _synchronize(device)
    except Exception as exc:  # noqa: BLE001  e.g. "selective_scan_cuda is not installed"
        return f"its selective_scan_fn failed on {device} ({_first_line(exc)})"
    if not _close(outs[0], outs[1]) or not all(_close(g, w) for g, w in zip(*grads)):
        return f"its selective_scan_fn disagrees with the PyTorch scan on {device}"
    return None


def probe_conv(fn, device: torch.device) -> str | None:
    """One forward and backward of ``fn`` (causal_conv1d_fn's signature) against nn.Conv1d's maths."""
    generator = torch.Generator().manual_seed(1)
    b, d, width, length = 2, 12, 4, 33
    args = [torch.randn(*s, generator=generator).to(device) for s in ((b, d, length), (d, width), (d,))]
    try:
        outs, grads = [], []
        for conv in (fn, _reference_conv):
            leaves = [a.clone().requires_grad_() for a in args]
            y = conv(*leaves, activation="silu")
            y.square().sum().backward()
            outs.append(y.detach())
            grads.append([leaf.grad for leaf in leaves])
        _synchronize(device)
    except Exception as exc:  # noqa: BLE001
        return f"its causal_conv1d_fn failed on {device} ({_first_line(exc)})"
    if not _close(outs[0], outs[1]) or not all(_close(g, w) for g, w in zip(*grads)):
        return f"its causal_conv1d_fn disagrees with nn.Conv1d on {device}"
    return None


def _synchronize(device: torch.device) -> None:
    """Kernels run asynchronously: a crash inside one surfaces here, inside the probe, with its name.
    After such a crash the CUDA context is unusable, and so is the fallback: say so."""
    if device.type != "cuda":
        return
    try:
        torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"a kernel crashed while running ({_first_line(exc)}); this process's GPU context is "
                           "unusable: reinstall the kernels and run `python -m study doctor --device cuda`") from exc


def _reference_conv(x, weight, bias=None, activation=None):
    """causal_conv1d_fn's maths in PyTorch ops: a causal depthwise conv of (batch, dim, L), then SiLU."""
    width = weight.shape[-1]
    y = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(y) if activation in ("silu", "swish") else y


def warn_fallback(found: CudaKernels) -> None:
    """Say once per process that a CUDA tensor runs the PyTorch scan, and why."""
    message = (f"warning: the Mamba layers run the PyTorch scan on the GPU, several times slower: "
               f"{found.problem}. Runs record this under 'kernels'; see the README's GPU install")
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr, flush=True)


def describe(device, probe: bool = True) -> dict:
    """For a record: the kernel packages' versions, and (``probe``) what is missing or outside the
    checked range. Without ``probe`` (the 'torch' backend) the kernels are never imported."""
    out = {"mamba_ssm": package_version("mamba-ssm") or package_version("mamba_ssm"),
           "causal_conv1d": package_version("causal-conv1d") or package_version("causal_conv1d")}
    if not probe:
        return out
    found = kernels_for(device)
    if found.problem:
        out["problem"] = found.problem
    if found.notes:
        out["notes"] = list(found.notes)
    return out
