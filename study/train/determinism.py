"""Which operations of a run cannot repeat bit for bit on a GPU, by name.

Two ways to know, both by PyTorch's own account:

* **Observed** (``collect_alerts``): under ``use_deterministic_algorithms(True,
  warn_only=True)`` PyTorch warns "OP does not have a deterministic implementation"
  each time such an op runs on CUDA. The collector keeps the op names; a run
  records them in its attempt, and ``study doctor --device cuda`` prints them per row.
* **Predicted** (``dispatched_ops`` + ``CUDA_NONDETERMINISTIC``): the aten ops a row
  dispatches in one forward and backward, on any device, intersected with the ops
  PyTorch documents as nondeterministic on CUDA (``torch.use_deterministic_algorithms``'s
  docstring: the ops that raise or warn, with the backward name each dispatches as).
  No CPU op alerts, so on a CPU this is how the doctor and the docs name a row's ops.

mamba-ssm's selective-scan backward adds some gradients with atomics too, in a
kernel PyTorch does not see: it never appears in either list (``numerics``'s docstring).
"""

from __future__ import annotations

import contextlib
import re
import warnings

from torch.utils._python_dispatch import TorchDispatchMode

# aten op (as dispatched) -> what it is, for the ops of PyTorch's documented list that
# these models could reach (pooling, interpolation, padding, losses, reductions).
CUDA_NONDETERMINISTIC = {
    "upsample_linear1d_backward": "linear interpolation, backward",
    "upsample_bilinear2d_backward": "bilinear interpolation, backward",
    "upsample_bicubic2d_backward": "bicubic interpolation, backward",
    "upsample_trilinear3d_backward": "trilinear interpolation, backward",
    "adaptive_max_pool2d_backward": "adaptive max-pool, backward",
    "_adaptive_avg_pool2d_backward": "adaptive average pool, backward",
    "adaptive_avg_pool3d_backward": "adaptive average pool 3-D, backward",
    "avg_pool3d_backward": "average pool 3-D, backward",
    "fractional_max_pool2d_backward": "fractional max-pool, backward",
    "reflection_pad1d_backward": "reflection padding, backward",
    "reflection_pad2d_backward": "reflection padding, backward",
    "reflection_pad3d_backward": "reflection padding, backward",
    "grid_sampler_2d_backward": "grid sample, backward",
    "nll_loss2d_forward": "NLL loss",
    "histc": "histogram",
    "bincount": "bincount with weights",
    "cumsum": "cumulative sum (floating point)",
    "median": "median with indices",
    "max_unpool2d": "max-unpool",
    "put_": "put_",
}

# PyTorch's wording (c10's alertNotDeterministic): "<op> does not have a deterministic implementation, ..."
_ALERT = re.compile(r"^(?P<op>[\w.:]+) does not have a deterministic implementation")


def op_from_alert(message: str) -> str | None:
    """The op a PyTorch nondeterminism warning names, or None for any other warning."""
    found = _ALERT.match(message.strip())
    return found.group("op") if found else None


class AlertLog:
    """The op names PyTorch's nondeterminism warnings named inside ``collect_alerts`` blocks."""

    def __init__(self):
        self.ops: set[str] = set()
        self.registry: dict = {}  # other warnings pass on once per block, as Python's default does

    def as_list(self) -> list[str]:
        return sorted(self.ops)


@contextlib.contextmanager
def collect_alerts(log: AlertLog):
    """Inside the block, PyTorch's nondeterminism warnings go into ``log`` (other warnings pass on)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield log
        finally:
            recorded = list(caught)
    # Outside the recording block: a warning passed on here reaches the caller's filters.
    for w in recorded:
        op = op_from_alert(str(w.message))
        if op is not None:
            log.ops.add(op)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=log.registry)


class _Dispatched(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def dispatched_ops():
    """The aten op names dispatched inside the block (a set, filled as they run)."""
    mode = _Dispatched()
    with mode:
        yield mode.ops


def aten_name(op: str) -> str:
    """An alert's op as dispatched: PyTorch's CUDA alerts name the kernel (``..._out_cuda``)."""
    for suffix in ("_out_cuda", "_cuda", "_out"):
        if op.endswith(suffix):
            return op[: -len(suffix)]
    return op


def predicted_cuda_ops(ops: set[str]) -> list[str]:
    """Of the dispatched ``ops``, those PyTorch documents as nondeterministic on CUDA."""
    return sorted(op for op in ops if aten_name(op) in CUDA_NONDETERMINISTIC)


__all__ = ["AlertLog", "CUDA_NONDETERMINISTIC", "aten_name", "collect_alerts", "dispatched_ops", "op_from_alert",
           "predicted_cuda_ops"]
