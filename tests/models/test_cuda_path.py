"""The CUDA branch of the Mamba layers, run on a CPU through contract-checking stand-ins.

No GPU has ever run this project's CUDA path. These tests send every Mamba row
through it anyway: ``contract_kernels()`` routes the layers to stand-ins for
mamba-ssm's ``selective_scan_fn`` and causal-conv1d's ``causal_conv1d_fn`` that
enforce the real kernels' checks (layouts, strides, dtypes, the multiple-of-8
rule of causal-conv1d's channel-last kernel) and compute the reference maths.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from study.errors import ConfigError
from study.models import cuda_kernels
from study.models import mamba as mamba_mod
from study.models.baselines._ss2d import SS2D
from study.models.kernel_contract import ContractViolation, causal_conv1d_fn, contract_kernels, selective_scan_fn
from study.models.mamba import Mamba
from study.models.selective_scan import selective_scan_reference
from study.train.engine import prepare_batch, prepare_model
from study.train.losses import bce_dice_loss
from study.variants import load_tables


def _mamba_rows():
    rows = {}
    for table in load_tables().values():
        for row in table.rows:
            model = row.build_model()
            if any(isinstance(m, (Mamba, SS2D)) for m in model.modules()):
                rows.setdefault(row.id, row)
    return rows


MAMBA_ROWS = _mamba_rows()


def _mamba_widths() -> list[int]:
    widths = set()
    for row in MAMBA_ROWS.values():
        widths |= {m.d_model for m in row.build_model().modules() if isinstance(m, Mamba)}
    return sorted(widths)


def test_the_rows_the_issue_names_are_covered():
    # the rows whose Mamba has d_inner 12 (not a multiple of 8), and the two Mamba baselines
    for row_id in ("ultralbm-t", "ultralight-vm-unet", "t2-all-glmbp", "t7-full", "t7-none", "mambau-lite"):
        assert row_id in MAMBA_ROWS
    assert 6 in _mamba_widths()  # d_model 6 -> d_inner 12


def _forward_backward(module, x):
    x = x.clone().requires_grad_()
    y = module(x)
    y.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("d_model", _mamba_widths())
def test_every_mamba_width_runs_the_cuda_branch(d_model):
    torch.manual_seed(d_model)
    layer = Mamba(d_model)
    x = torch.randn(3, 37, d_model)
    with mamba_mod.using_backend("torch"):
        want = _forward_backward(layer, x)
    with contract_kernels(), mamba_mod.using_backend("cuda"):
        assert mamba_mod.choose_path(x).scan is selective_scan_fn
        got = _forward_backward(layer, x)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-4)
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], atol=1e-5, rtol=1e-4, msg=name)


def test_ss2d_runs_the_cuda_branch():
    torch.manual_seed(0)
    layer = SS2D(8)
    x = torch.randn(2, 6, 5, 8)
    with mamba_mod.using_backend("torch"):
        want = _forward_backward(layer, x)
    with contract_kernels():
        got = _forward_backward(layer, x)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], atol=1e-5, rtol=1e-4, msg=name)


def _step(model, images, masks):
    logits = model.forward_logits(prepare_batch(images, model))
    loss = bce_dice_loss(logits, masks)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return loss.detach(), grads


@pytest.mark.slow
@pytest.mark.parametrize("row_id", sorted(MAMBA_ROWS))
@pytest.mark.parametrize("layout", ["NCHW", "channels_last"])  # CUDA trains NCHW; the CPU channels_last
def test_one_training_step_of_every_mamba_row_on_the_cuda_branch(row_id, layout):
    torch.manual_seed(0)
    model = prepare_model(MAMBA_ROWS[row_id].build_model(), "fast", "cpu", channels_last=layout == "channels_last")
    model.train()
    images = torch.randn(2, 3, 64, 64)
    masks = (torch.rand(2, 1, 64, 64) > 0.5).float()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with mamba_mod.using_backend("torch"):
        want_loss, want_grads = _step(model, images, masks)
    model.load_state_dict(state)  # BatchNorm statistics moved
    with contract_kernels(), mamba_mod.using_backend("cuda"):
        loss, grads = _step(model, images, masks)
    torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-4)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


# -- the stand-ins enforce what the real kernels check


def test_conv_stand_in_refuses_the_channel_last_layout_for_12_channels():
    # What Mamba.forward handed causal-conv1d before the fix: a transposed view, channel stride 1.
    xz = torch.randn(2, 30, 24).transpose(1, 2)
    x, _ = xz.chunk(2, dim=1)
    assert x.stride(1) == 1 and x.stride(2) > 1
    with pytest.raises(ContractViolation, match="divisible by 8"):
        causal_conv1d_fn(x, torch.randn(12, 4), torch.randn(12), activation="silu")
    causal_conv1d_fn(x.contiguous(), torch.randn(12, 4), torch.randn(12), activation="silu")  # the plain kernel


def test_conv_stand_in_channel_last_with_16_channels_is_allowed_and_keeps_the_layout():
    x = torch.randn(2, 30, 32).transpose(1, 2).chunk(2, dim=1)[0]
    out = causal_conv1d_fn(x, torch.randn(16, 4), torch.randn(16))
    assert out.stride(1) == 1


@pytest.mark.parametrize("bad, message", [
    (dict(weight=torch.randn(12, 1, 4)), "weight must have shape"),
    (dict(weight=torch.randn(12, 5)), "width between 2 and 4"),
    (dict(bias=torch.randn(12, dtype=torch.float64)), "bias: dtype"),
    (dict(x=torch.randn(2, 12, 30, dtype=torch.float64)), "x: dtype"),
])
def test_conv_stand_in_checks(bad, message):
    args = dict(x=torch.randn(2, 12, 30), weight=torch.randn(12, 4), bias=torch.randn(12))
    args.update(bad)
    with pytest.raises(ContractViolation, match=message):
        causal_conv1d_fn(**args)


def _scan_args(b=2, d=8, n=16, length=21, groups=None):
    B = torch.randn(b, n, length) if groups is None else torch.randn(b, groups, n, length)
    C = torch.randn_like(B)
    return dict(u=torch.randn(b, d, length), delta=torch.randn(b, d, length) * 0.5, A=-torch.rand(d, n) - 0.1,
                B=B, C=C, D=torch.randn(d), z=torch.randn(b, d, length), delta_bias=torch.randn(d) * 0.1,
                delta_softplus=True)


@pytest.mark.parametrize("bad, message", [
    (dict(D=torch.randn(8, dtype=torch.float64)), "D: dtype"),
    (dict(delta=torch.randn(2, 8, 21, dtype=torch.float64)), "delta: dtype"),
    (dict(A=-torch.rand(8, 300)), "state dimension <= 256"),
    (dict(delta_bias=torch.randn(7)), "delta_bias must have shape"),
    (dict(z=torch.randn(2, 8, 20)), "z must have shape"),
    (dict(B=torch.randn(2, 3, 16, 21), C=torch.randn(2, 3, 16, 21)), "not a multiple of the 3 groups"),
])
def test_scan_stand_in_checks(bad, message):
    args = _scan_args()
    args.update(bad)
    with pytest.raises(ContractViolation, match=message):
        selective_scan_fn(**args)


def test_scan_stand_in_computes_the_scan_per_group():
    args = _scan_args(d=8, groups=2)
    got = selective_scan_fn(**args)
    for g, part in enumerate((slice(0, 4), slice(4, 8))):
        want = selective_scan_reference(
            args["u"][:, part], args["delta"][:, part], args["A"][part], args["B"][:, g], args["C"][:, g],
            args["D"][part], args["z"][:, part], args["delta_bias"][part], True)
        torch.testing.assert_close(got[:, part], want, atol=1e-5, rtol=1e-4)


# -- discovery: importing is not enough


def test_probes_accept_kernels_that_compute_the_maths():
    assert cuda_kernels.probe_scan(selective_scan_fn, torch.device("cpu")) is None
    assert cuda_kernels.probe_conv(causal_conv1d_fn, torch.device("cpu")) is None


def test_probes_refuse_a_scan_that_raises_when_called_or_computes_something_else():
    def not_built(*args, **kwargs):  # mamba-ssm's main branch without its compiled scan
        raise RuntimeError("selective_scan_cuda is not installed. To use Mamba-1, reinstall with ...")

    assert "selective_scan_cuda is not installed" in cuda_kernels.probe_scan(not_built, torch.device("cpu"))

    def wrong(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus) * 1.01

    assert "disagrees" in cuda_kernels.probe_scan(wrong, torch.device("cpu"))


def _fake_packages(monkeypatch, scan, conv=None):
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = scan
    modules = {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
               "mamba_ssm.ops.selective_scan_interface": interface}
    if conv is not None:
        modules["causal_conv1d"] = types.ModuleType("causal_conv1d")
        modules["causal_conv1d"].causal_conv1d_fn = conv
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_a_first_call_under_no_grad_still_probes_with_gradients(monkeypatch, context):
    # `study bench` and evaluations make their first Mamba call without autograd.
    _fake_packages(monkeypatch, selective_scan_fn, causal_conv1d_fn)
    with getattr(torch, context)():
        found = cuda_kernels._discover(torch.device("cpu"))
    assert found.usable and found.conv is causal_conv1d_fn, found.problem


@pytest.mark.slow
def test_pool_workers_each_keep_their_own_gpu():
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from study.launch.workers import device_slots, init_worker

    context = multiprocessing.get_context("spawn")
    slots = device_slots(context, 3, gpus=2)
    with context.Manager() as manager, ProcessPoolExecutor(3, mp_context=context, initializer=init_worker,
                                                           initargs=(1, os.getpid(), slots)) as pool:
        meet = manager.Barrier(3)  # each item waits for the other two: three items, three workers
        seen = sorted(pool.map(_device_when_all_three_run, [meet] * 3))
    assert seen == ["cuda:0", "cuda:0", "cuda:1"]


def _device_when_all_three_run(meet):
    from study.launch.workers import worker_device

    meet.wait(timeout=120)
    return worker_device()


def test_a_mamba_ssm_that_imports_but_cannot_scan_is_not_used(monkeypatch):
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")

    def selective_scan_fn_unbuilt(*args, **kwargs):
        raise RuntimeError("selective_scan_cuda is not installed")

    interface.selective_scan_fn = selective_scan_fn_unbuilt
    for name, module in {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
                         "mamba_ssm.ops.selective_scan_interface": interface}.items():
        monkeypatch.setitem(sys.modules, name, module)
    found = cuda_kernels._discover(torch.device("cpu"))
    assert not found.usable
    assert "selective_scan_cuda is not installed" in found.problem


def test_version_ranges():
    assert cuda_kernels.version_note("mamba-ssm", "2.3.2.post1") is None
    assert cuda_kernels.version_note("mamba-ssm", "2.3.0") is None
    # 2.2.x import names transformers 5 removed: below the floor, and said so
    assert "outside" in cuda_kernels.version_note("mamba-ssm", "2.2.2")
    assert "outside" in cuda_kernels.version_note("mamba-ssm", "2.4.0")
    assert "outside" in cuda_kernels.version_note("causal-conv1d", "1.3.0.post1")
    assert cuda_kernels.version_note("causal-conv1d", "1.6.1+cu12torch2.6") is None


# -- the backend switch


def test_a_misspelt_backend_is_an_error_not_auto(monkeypatch):
    monkeypatch.setattr(mamba_mod, "_backend", "cudaa")
    with pytest.raises(ConfigError, match="STUDY_MAMBA_BACKEND='cudaa' is not a Mamba backend"):
        Mamba(8)(torch.randn(1, 5, 8))


def test_complexity_counting_does_not_depend_on_the_backend():
    from study.complexity import macs_ptflops, macs_thop
    from study.variants import find_row

    model = find_row("ultralbm-t").build_model()
    with mamba_mod.using_backend("auto"):
        want = macs_thop(model), macs_ptflops(model)
    with mamba_mod.using_backend("cuda"):  # no CUDA tensor anywhere: counting must not call the kernels
        assert (macs_thop(model), macs_ptflops(model)) == want


# -- a whole run with STUDY_MAMBA_BACKEND=cuda, through the CUDA branch


def test_a_run_on_the_cuda_backend_completes_and_records_its_kernels(tmp_path):
    from test_train import tiny

    from study.store.runs import Store
    from study.train.run import train_run

    with contract_kernels(), mamba_mod.using_backend("cuda"):
        record = train_run(tiny("t7-none"), 0, Store(tmp_path), progress=False)  # the -T model: d_inner 12
    assert record.completed, record.reason
    kernels = record.details["kernels"]
    assert kernels["mamba_backend"] == "cuda"
    assert kernels["scan"] == "contract stand-in for mamba-ssm"
    assert kernels["conv1d"] == "contract stand-in for causal-conv1d"
    assert record.gmacs_thop > 0  # the finishing step's complexity count ran on the CPU model


# -- no per-step host round trip on a GPU: the data path and the loss on the meta device,
# which refuses every read of a value (what would make the host wait for a GPU)


class _CopiesToDevice(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and args[0].device.type == "cpu":
            targets = [a for a in [*args[1:], *kwargs.values()] if isinstance(a, (str, torch.device))]
            self.copies += any(torch.device(t).type == "meta" for t in targets)
        return func(*args, **kwargs)


class _Split:
    rows = list(range(10))
    run_angle = None
    mask_scale = 1.0
    frame_ratios = None
    value_ranges = None

    def __init__(self, rotation="per_sample"):
        from study.data.transforms import TransformConfig

        self.transforms = TransformConfig(rotation=rotation, rotation_p=0.5)

    def _open(self):
        rng = torch.Generator().manual_seed(0)
        images = torch.randint(0, 255, (10, 16, 16, 3), generator=rng, dtype=torch.uint8).numpy()
        return images, (torch.rand(10, 16, 16, generator=rng) > 0.5).to(torch.uint8).numpy()


def test_the_batched_data_path_never_reads_the_device_and_copies_once_per_batch():
    from study.data.batched import ResidentSplit

    split = ResidentSplit(_Split(), "meta")
    with _CopiesToDevice() as watch:
        batches = list(split.batches(4, order_seed=1, augment_seed=2))
    assert len(batches) == 3 and batches[0][0].device.type == "meta"
    assert watch.copies <= 1 + len(batches)  # the epoch's order, then one packed copy per batch


def test_the_batched_path_gives_the_same_batches_on_any_device():
    from study.data.batched import ResidentSplit

    first = list(ResidentSplit(_Split(), "cpu").batches(4, order_seed=1, augment_seed=2))
    again = list(ResidentSplit(_Split(), "cpu").batches(4, order_seed=1, augment_seed=2))
    for (a, b), (c, d) in zip(first, again):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_the_distillation_loss_never_reads_the_device():
    from study.config import DistillConfig
    from study.train.objective import Objective

    class Teacher(torch.nn.Module):
        def forward_logits(self, x):
            return x[:, :1] * 2.0

    objective = Objective(DistillConfig(soft=0.5, kl=0.1, attention=0.2, grad=0.3), Teacher())
    images = torch.empty(2, 3, 16, 16, device="meta")
    total, terms = objective(torch.empty(2, 1, 16, 16, device="meta"), images, torch.empty(2, 1, 16, 16, device="meta"))
    assert total.device.type == "meta" and set(terms) == {"hard", "soft", "kl", "attention", "grad"}


def test_the_teacher_is_fed_in_its_own_layout():
    from study.config import DistillConfig
    from study.train.engine import prepare_model
    from study.train.objective import Objective
    from study.variants import find_row

    teacher = prepare_model(find_row("ultralbm").build_model(), "fast", "cpu")
    seen = []
    original = teacher.forward_logits
    teacher.forward_logits = lambda x: seen.append(x.is_contiguous(memory_format=torch.channels_last)) or original(x)
    objective = Objective(DistillConfig(soft=0.5), teacher)
    images = torch.randn(2, 3, 64, 64)
    objective(torch.randn(2, 1, 64, 64), images, (torch.rand(2, 1, 64, 64) > 0.5).float())
    assert seen == [True]


# -- devices, numerics


def test_each_run_of_a_multi_gpu_task_gets_its_own_device():
    from study.launch.workers import run_devices

    assert run_devices(4, gpus=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert run_devices(3, gpus=0) == [None, None, None]


def test_a_profile_with_more_gpus_than_runs_per_task_is_refused():
    from study.launch.slurm import profile_from_dict

    with pytest.raises(ConfigError, match="gpus_per_task = 2 but runs_per_task = 1: each run uses one GPU"):
        profile_from_dict({"gpus_per_task": 2}, name="two-gpus")
    assert profile_from_dict({"gpus_per_task": 2, "runs_per_task": 4}).gpus_per_task == 2


def test_training_and_bench_share_the_numerical_settings(monkeypatch):
    from study.train import numerics

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # PyTorch's default: restored after
    for flag in ("deterministic", "benchmark"):
        monkeypatch.setattr(torch.backends.cudnn, flag, getattr(torch.backends.cudnn, flag))
    was = (torch.backends.cuda.matmul.allow_tf32, torch.are_deterministic_algorithms_enabled(),
           torch.utils.deterministic.fill_uninitialized_memory)
    try:
        settings = numerics.apply("cpu")
        assert settings == {"deterministic_algorithms": True, "fill_uninitialized_memory": False}
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == numerics.CUBLAS_WORKSPACE
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was[0]
        torch.use_deterministic_algorithms(was[1])
        torch.utils.deterministic.fill_uninitialized_memory = was[2]


def test_channels_last_is_a_cpu_choice_only():
    from study.train.engine import prepare_model
    from study.variants import find_row

    model = prepare_model(find_row("ultralbm").build_model(), "fast", "cpu")
    assert model.input_memory_format is torch.channels_last
    from study.train.engine import uses_channels_last

    assert not uses_channels_last(model, "fast", "cuda")  # PyTorch's CUDA GroupNorm converts to NCHW
    assert not uses_channels_last(model, "plain", "cpu")


def test_the_gpu_install_commands_carry_the_checked_version_ranges():
    import re
    import tomllib

    from conftest import REPO_ROOT

    install = (REPO_ROOT / "docs" / "install.md").read_text()
    block = re.search(r"<!-- gpu-install -->\s*```bash\n(.*?)```", install, re.S).group(1)
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cuda"]
    for requirement in extra:  # the same bounds in the extra and the commands
        assert f"'{requirement}'" in block, requirement
    for name, (low, high) in cuda_kernels.SUPPORTED.items():
        spec = next(r for r in extra if r.startswith(name))
        assert spec == f"{name}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
    lines = block.splitlines()
    torch_line = next(i for i, line in enumerate(lines) if re.search(r"pip install .*\btorch\b", line))
    for kernel in ("causal-conv1d", "mamba-ssm"):  # after torch, compiled against it
        i = next(i for i, line in enumerate(lines) if f"'{kernel}" in line)
        assert i > torch_line and "--no-build-isolation" in lines[i]
    assert lines[-1] == "python -m study doctor --device cuda"


def test_a_fallback_on_the_gpu_is_said_once_and_named(monkeypatch, capsys):
    unusable = cuda_kernels.CudaKernels(None, None, "none", "nn.Conv1d", "mamba-ssm does not import (ImportError)")
    monkeypatch.setattr(cuda_kernels, "override", unusable)  # as a CUDA tensor without working kernels
    monkeypatch.setattr(cuda_kernels, "_warned", set())
    layer = Mamba(8)
    with mamba_mod.using_backend("auto"):
        for _ in range(3):
            layer(torch.randn(1, 5, 8))
        described = mamba_mod.describe_paths("cpu")
    err = capsys.readouterr().err
    assert err.count("warning: the Mamba layers run the PyTorch scan on the GPU") == 1
    assert "mamba-ssm does not import" in err
    assert described["scan"] == "PyTorch scan (mamba-ssm unusable: mamba-ssm does not import (ImportError))"
    with mamba_mod.using_backend("cuda"), pytest.raises(RuntimeError, match="cannot run here: mamba-ssm does not"):
        layer(torch.randn(1, 5, 8))
