"""Stand-ins for mamba-ssm's ``selective_scan_fn`` and causal-conv1d's ``causal_conv1d_fn`` that run on a CPU.

No GPU has to be present for the layers' CUDA branch to be exercised: under
``contract_kernels()`` the Mamba layer and SS2D send every tensor down that
branch, to these functions. Each takes the real one's arguments, makes the
layout fixes its Python wrapper makes, enforces the checks its C++ entry point
makes (the kernels' sources: mamba-ssm csrc/selective_scan/selective_scan.cpp
``selective_scan_fwd``; causal-conv1d csrc/causal_conv1d.cpp
``causal_conv1d_fwd`` / ``causal_conv1d_bwd``), all but "is on a CUDA device"
(they check the tensors share one device instead), and then computes the
kernel's mathematics with PyTorch ops, so gradients flow as through the real
autograd functions. A violated check raises ``ContractViolation`` with the
kernel's own message, as the real kernel would raise a RuntimeError on its
first batch.

Arguments this project never passes (``seq_idx``, ``initial_states``,
``return_final_states``, ``return_last_state``, complex weights) are refused
rather than half-modelled.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from study.models import cuda_kernels
from study.models.selective_scan import selective_scan

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class ContractViolation(RuntimeError):
    """An argument the real CUDA kernel would reject."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


def _shape(t: torch.Tensor, name: str, *shape: int) -> None:
    _check(tuple(t.shape) == shape, f"{name} must have shape {shape}, got {tuple(t.shape)}")


def _same_device(reference: torch.Tensor, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None:
            _check(t.device == reference.device, f"{name} is on {t.device}, the input on {reference.device}")


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """mamba-ssm's ``selective_scan_fn`` contract; the scan computed by the project's PyTorch scan."""
    _check(not return_last_state, "stand-in: return_last_state is not modelled (this project never asks for it)")
    # What SelectiveScanFn.forward does before calling the kernel:
    u, delta = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta))
    B, C = (t if t.stride(-1) == 1 else t.contiguous() for t in (B, C))
    z = z if z is None or z.stride(-1) == 1 else z.contiguous()
    D = None if D is None else D.contiguous()
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    # selective_scan_fwd's checks:
    input_type, weight_type = u.dtype, A.dtype
    _check(input_type in INPUT_DTYPES, f"u: dtype {input_type} (float32, float16 or bfloat16)")
    _check(weight_type == torch.float32, f"A: dtype {weight_type} (float32; complex weights are not modelled)")
    _check(delta.dtype == input_type, f"delta: dtype {delta.dtype} must equal u's {input_type}")
    _check(B.dtype == (weight_type if B.dim() < 3 else input_type), f"B: dtype {B.dtype}")
    _check(C.dtype == (weight_type if C.dim() < 3 else input_type), f"C: dtype {C.dtype}")
    _same_device(u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    _check(u.dim() == 3, f"u must be (batch, dim, seqlen), got {tuple(u.shape)}")
    batch, dim, seqlen = u.shape
    dstate = A.shape[1] if A.dim() == 2 else -1
    _check(dstate <= 256, "selective_scan only supports state dimension <= 256")
    _shape(delta, "delta", batch, dim, seqlen)
    _shape(A, "A", dim, dstate)
    n_groups = B.shape[1]
    for name, t in (("B", B), ("C", C)):
        _shape(t, name, batch, n_groups, dstate, seqlen)
        _check(t.stride(-1) == 1 or t.size(-1) == 1, f"{name}: last dimension must be contiguous")
    # The kernel maps channel d to group d / (dim / n_groups): a remainder would read past the last group.
    _check(dim % n_groups == 0, f"dim {dim} is not a multiple of the {n_groups} groups of B and C")
    if D is not None:
        _check(D.dtype == torch.float32, f"D: dtype {D.dtype} (float32)")
        _shape(D, "D", dim)
    if delta_bias is not None:
        _check(delta_bias.dtype == torch.float32, f"delta_bias: dtype {delta_bias.dtype} (float32)")
        _check(delta_bias.stride(-1) == 1 or delta_bias.size(-1) == 1, "delta_bias: must be contiguous")
        _shape(delta_bias, "delta_bias", dim)
    if z is not None:
        _check(z.dtype == input_type, f"z: dtype {z.dtype} must equal u's {input_type}")
        _shape(z, "z", batch, dim, seqlen)
    # The mathematics: each group of dim / n_groups channels reads its own B and C.
    per = dim // n_groups
    outs = []
    for g in range(n_groups):
        part = slice(g * per, (g + 1) * per)
        outs.append(selective_scan(
            u[:, part].float(), delta[:, part].float(), A[part], B[:, g].float(), C[:, g].float(),
            None if D is None else D[part], None if z is None else z[:, part].float(),
            None if delta_bias is None else delta_bias[part], delta_softplus))
    return torch.cat(outs, dim=1).to(input_type)


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """causal-conv1d's ``causal_conv1d_fn`` contract; the convolution computed by F.conv1d."""
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu, or swish")
    _check(seq_idx is None and initial_states is None and not return_final_states and final_states_out is None,
           "stand-in: seq_idx, initial_states and final states are not modelled (this project never passes them)")
    # What CausalConv1dFn.forward does before calling the kernel:
    if x.stride(2) != 1 and x.stride(1) != 1:
        x = x.contiguous()
    bias = bias.contiguous() if bias is not None else None
    # causal_conv1d_fwd's checks (causal_conv1d_bwd repeats them on the same x, and lays dout out itself):
    _check(x.dtype in INPUT_DTYPES, f"x: dtype {x.dtype}")
    _check(weight.dtype in INPUT_DTYPES, f"weight: dtype {weight.dtype}")
    _same_device(x, weight=weight, bias=bias)
    _check(x.dim() == 3, f"x must be (batch, dim, seqlen), got {tuple(x.shape)}")
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    _shape(weight, "weight", dim, width)
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x: either the length or the channel stride must be 1")
    if x.stride(1) == 1 and x.stride(2) > 1:  # the channel-last kernel
        _check(dim % 8 == 0, "causal_conv1d only supports channel dimension divisible by 8 for now")
        _check(x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0,
               "causal_conv1d with channel last layout requires strides (x.stride(0) and x.stride(2)) "
               "to be multiples of 8")
    _check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    if bias is not None:
        _check(bias.dtype == weight.dtype, f"bias: dtype {bias.dtype} must equal weight's {weight.dtype}")
        _check(bias.stride(-1) == 1, "bias: must be contiguous")
        _shape(bias, "bias", dim)
    y = F.conv1d(x.float(), weight.float().unsqueeze(1), None if bias is None else bias.float(),
                 padding=width - 1, groups=dim)[..., :seqlen]
    if activation is not None:
        y = F.silu(y)
    return _like(y.to(x.dtype), x)


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` laid out as ``x`` (the real kernel writes its output with empty_like(x)), differentiably."""
    if x.stride(1) == 1 and x.stride(2) > 1:
        return y.transpose(1, 2).contiguous().transpose(1, 2)
    return y.contiguous()


CONTRACT = cuda_kernels.CudaKernels(selective_scan_fn, causal_conv1d_fn, "contract stand-in for mamba-ssm",
                                    "contract stand-in for causal-conv1d")


@contextlib.contextmanager
def contract_kernels():
    """Inside the block every Mamba and SS2D call takes the CUDA branch, into the stand-ins."""
    previous = cuda_kernels.override
    cuda_kernels.override = CONTRACT
    try:
        yield CONTRACT
    finally:
        cuda_kernels.override = previous
