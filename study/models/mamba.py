"""A Mamba (S6) layer that runs everywhere.

Parameter names and shapes are those of ``mamba_ssm.Mamba`` (in_proj, conv1d,
x_proj, dt_proj, A_log, D, out_proj), so state dicts load both ways. On a CUDA
tensor the layer calls mamba-ssm's selective-scan kernel and causal-conv1d's
convolution when they are installed and pass a probe (``study.models.cuda_kernels``);
on a CPU it calls the project's C scan (``study.kernels``) when that builds here,
else its pure-PyTorch scan (``selective_scan``).

Choose the backend per process with ``set_backend`` or the ``STUDY_MAMBA_BACKEND``
environment variable: ``auto`` (default: the kernels that can run),
``torch`` (always the pure-PyTorch scan, the oracle), ``native`` (the C scan
on CPU tensors, or a clear error) or ``cuda`` (mamba-ssm's kernels, or a
clear error). Where ``auto`` falls back to the PyTorch scan on a CUDA tensor it
says so once on stderr, and runs record it (``kernels`` in ``record.json``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.kernels import library as native_library
from study.kernels import ops as native_ops
from study.kernels import status as native_status
from study.models import cuda_kernels as cuda
from study.models.selective_scan import native_selective_scan, selective_scan
from study.settings import current

BACKENDS = ("auto", "torch", "native", "cuda")
BACKEND_VARIABLE = "STUDY_MAMBA_BACKEND"
_backend = current().mamba_backend  # checked where it is used: get_backend


def set_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ConfigError(f"mamba backend: unknown {name!r}; allowed: {', '.join(BACKENDS)}")
    _backend = name


def get_backend() -> str:
    if _backend not in BACKENDS:  # a misspelt environment variable must not act as 'auto'
        raise ConfigError(f"{BACKEND_VARIABLE}={_backend!r} is not a Mamba backend; allowed: {', '.join(BACKENDS)}")
    return _backend


@contextlib.contextmanager
def using_backend(name: str):
    """The backend set to ``name`` inside the block, restored after (complexity counting, benchmarks)."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        globals()["_backend"] = previous


def available_backends() -> list[str]:
    """Backends that can run on this machine right now."""
    names = ["torch"]
    if native_library() is not None:
        names.append("native")
    if torch.cuda.is_available() and cuda.kernels_for(torch.device("cuda")).usable:
        names.append("cuda")
    return names


@dataclass(frozen=True)
class KernelPath:
    """What runs a Mamba layer's scan and depthwise conv on a given tensor, and in words."""

    scan: object  # selective_scan_fn's signature
    conv: object | None  # causal_conv1d_fn's signature, or None: nn.Conv1d then SiLU
    scan_name: str
    conv_name: str


def _torch_path(scan=selective_scan, name: str = "PyTorch scan") -> KernelPath:
    return KernelPath(scan, None, name, "nn.Conv1d")


def choose_path(x: torch.Tensor) -> KernelPath:
    """The scan and conv the backend runs on ``x`` (raises where the backend insists and cannot)."""
    backend = get_backend()
    if backend == "torch":
        return _torch_path()
    if backend != "native" and cuda.takes_kernel_path(x):
        found = cuda.kernels_for(x.device)
        if found.usable:
            return KernelPath(found.scan, found.conv, found.scan_name, found.conv_name)
        if backend == "cuda":
            raise RuntimeError(f"mamba backend 'cuda': the mamba-ssm kernels cannot run here: {found.problem}")
        cuda.warn_fallback(found)
        return _torch_path(name=f"PyTorch scan (mamba-ssm unusable: {found.problem})")
    if backend == "cuda":
        raise RuntimeError(f"mamba backend 'cuda' runs mamba-ssm's kernels, which need a CUDA tensor; here: "
                           f"{x.device.type} (see the README's GPU install)")
    if native_ops.scan_applies(x):
        return _torch_path(native_selective_scan, "C scan")
    if backend == "native":
        raise RuntimeError(f"mamba backend 'native' needs float32 CPU tensors and the C kernels; here: "
                           f"{x.device.type} {x.dtype}, {native_status()}")
    return _torch_path()


def scan_function(x: torch.Tensor):
    """The selective scan (``selective_scan_fn``'s signature) that the backend runs on ``x``."""
    return choose_path(x).scan


def describe_paths(device: str | torch.device) -> dict:
    """What a float32 tensor on ``device`` runs through: {"scan": ..., "conv1d": ...} (a run's provenance)."""
    try:
        path = choose_path(torch.zeros(1, 1, 1, device=device))  # a float32 tensor on the device
    except (RuntimeError, ConfigError) as exc:
        return {"scan": f"none ({exc})", "conv1d": "none"}
    return {"scan": path.scan_name, "conv1d": path.conv_name}


class Mamba(nn.Module):
    """Selective state-space layer: (batch, length, d_model) -> same shape."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # S4D-real initialisation of A, and dt log-uniform in [dt_min, dt_max],
        # as mamba-ssm does (a model-wide init may overwrite the linears later).
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
            dt = torch.exp(
                torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (batch, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)
        path = choose_path(hidden)
        if path.conv is not None and cuda.conv_applies(hidden, self.d_conv):
            # x is a transposed view (channel stride 1): causal-conv1d would take it down its
            # channel-last kernel, which needs d_inner % 8 == 0 (the -T model's 12 fails). Its
            # general kernel takes an L-contiguous (batch, d_inner, L) tensor of any width.
            x = path.conv(x.contiguous(), self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        else:
            x = F.silu(self.conv1d(x)[..., :length])

        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2*state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj without its bias: the bias goes into the scan (delta_bias), as in mamba-ssm.
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)
        B = B.transpose(1, 2).contiguous()
        C = C.transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        y = path.scan(
            x.contiguous(), delta.contiguous(), A, B, C, self.D.float(), z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))

    def macs_per_call(self, batch: int, length: int) -> int:
        """Multiply-accumulates of one call, for the explicit ptflops convention.

        Projections and the depthwise conv as their weights' size per token; the
        scan as 3 MACs per (token, channel, state): the decay times the state,
        the input drive, and the read-out by C.
        """
        per_token = (
            self.in_proj.weight.numel()
            + self.conv1d.weight.numel()
            + self.x_proj.weight.numel()
            + self.dt_proj.weight.numel()
            + self.out_proj.weight.numel()
            + 3 * self.d_inner * self.d_state
        )
        return batch * length * per_token
