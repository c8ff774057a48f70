"""The C kernels (study.kernels): equal to the PyTorch ops they replace, independent of the
thread count, built privately, and replaced by the PyTorch ops where they cannot run."""

import os
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import _missing

from study import kernels
from study.kernels import build, ops
from study.models import mamba as mamba_mod
from study.models.selective_scan import native_selective_scan, selective_scan, selective_scan_reference
from study.train.engine import ChannelsLastGroupNorm, prepare_model


@pytest.fixture
def native():
    """The built kernels; under CI=true they must build (gcc is installed there)."""
    if kernels.library() is None:
        _missing(f"the C kernels do not build here: {kernels.status()}")
    return kernels.library()


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _scan_inputs(batch, d, n, length, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=1.0: torch.randn(*shape, generator=g, dtype=torch.float64) * s  # noqa: E731
    u, delta = r(batch, d, length), r(batch, d, length, s=delta_scale)
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 4 - 0.1
    B, C = r(batch, n, length), r(batch, n, length)
    D, z, bias = r(d), r(batch, d, length), r(d)
    return [u, delta, A, B, C, D, z, bias]


def _scan(fn, xs, dtype):
    xs = [x.to(dtype).requires_grad_() for x in xs]
    u, delta, A, B, C, D, z, bias = xs
    y = fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    weights = torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)  # a gradient that is not all ones
    grads = torch.autograd.grad((y * weights).sum(), xs)
    return y.detach().double(), [g.double() for g in grads]


@pytest.mark.parametrize("n", [16, 5])  # 16: the model's state size (its own code path); 5: any other
@pytest.mark.parametrize("length", [1, 2, 63, 300])
def test_native_scan_matches_the_sequential_definition(native, n, length):
    xs = _scan_inputs(3, 4, n, length, seed=length)
    y_ref, g_ref = _scan(selective_scan_reference, xs, torch.float64)
    y, g = _scan(native_selective_scan, xs, torch.float32)
    assert (y - y_ref).abs().max() <= 1e-5 * (1 + y_ref.abs().max())
    for name, a, b in zip("u delta A B C D z bias".split(), g, g_ref):
        assert (a - b).abs().max() <= 2e-5 * (1 + b.abs().max()), name


def test_native_scan_with_decays_far_below_float_range(native):
    # delta * A down to about -2000: exp underflows; the kernel must give the definition's zeros, not NaN.
    xs = _scan_inputs(2, 3, 16, 50, seed=1, delta_scale=40.0)
    y_ref, g_ref = _scan(selective_scan_reference, xs, torch.float64)
    y, g = _scan(native_selective_scan, xs, torch.float32)
    assert torch.isfinite(y).all() and all(torch.isfinite(a).all() for a in g)
    assert (y - y_ref).abs().max() <= 1e-5 * (1 + y_ref.abs().max())
    for name, a, b in zip("u delta A B C D z bias".split(), g, g_ref):
        assert (a - b).abs().max() <= 2e-5 * (1 + b.abs().max()), name


def test_native_scan_is_the_same_on_any_number_of_threads(native, threads):
    xs = _scan_inputs(5, 6, 16, 40, seed=2)
    threads(1)
    y1, g1 = _scan(native_selective_scan, xs, torch.float32)
    threads(2)
    y2, g2 = _scan(native_selective_scan, xs, torch.float32)
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def _group_norm(x, groups, weight, bias, native_path: bool):
    x = x.detach().requires_grad_()
    leaves = [x] + [p for p in (weight, bias) if p is not None]
    if native_path:
        y = ops.group_norm(x.contiguous(memory_format=torch.channels_last), groups, weight, bias, 1e-5)
    else:
        y = torch.nn.functional.group_norm(x, groups, weight, bias, 1e-5)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)
    grads = torch.autograd.grad((y * weights).sum(), leaves)
    return y.detach().double(), [g.double() for g in grads]


@pytest.mark.parametrize("shape", [
    (8, 8, 64, 64),    # a channel count with its own code path
    (1, 8, 256, 256),  # one image: its 65,536 pixels are split across threads
    (3, 12, 7, 9),     # fewer pixels than a slice, not a multiple of the lanes
    (2, 20, 33, 5),    # a channel count without its own code path
    (2, 8, 1, 1),
])
@pytest.mark.parametrize("affine", [True, False])
def test_native_group_norm_matches_pytorch(native, shape, affine):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g) * 3 + 1
    c = shape[1]
    weight = (torch.randn(c, generator=g)).requires_grad_() if affine else None
    bias = (torch.randn(c, generator=g)).requires_grad_() if affine else None
    y_ref, g_ref = _group_norm(x.double(), 4, *(None if p is None else p.detach().double().requires_grad_()
                                                for p in (weight, bias)), native_path=False)
    y, grads = _group_norm(x, 4, weight, bias, native_path=True)
    # The yardstick is float32 itself: PyTorch's own float32 GroupNorm's distance from the float64
    # definition (large for ill-conditioned groups, e.g. two nearly equal values), or 1e-5 of the size.
    y32, g32 = _group_norm(x, 4, weight, bias, native_path=False)

    def allowed(ref, torch32):
        return max(1e-5 * (1 + float(ref.abs().max())), 4 * float((torch32 - ref).abs().max()))

    assert (y - y_ref).abs().max() <= allowed(y_ref, y32)
    for name, a, b, c in zip(["x", "weight", "bias"], grads, g_ref, g32):
        assert (a - b).abs().max() <= allowed(b, c), name


def test_native_group_norm_is_the_same_on_any_number_of_threads(native, threads):
    x = torch.randn(3, 16, 90, 70)
    w, b = torch.randn(16, requires_grad=True), torch.randn(16, requires_grad=True)
    threads(1)
    y1, g1 = _group_norm(x, 4, w, b, native_path=True)
    threads(2)
    y2, g2 = _group_norm(x, 4, w, b, native_path=True)
    assert torch.equal(y1, y2) and all(torch.equal(a, c) for a, c in zip(g1, g2))


def _norm_pool_gelu(x, weight, bias, native_path: bool):
    x = x.detach().requires_grad_()
    leaves = [x] + [p for p in (weight, bias) if p is not None]
    if native_path:
        y = ops.group_norm_pool_gelu(x.contiguous(memory_format=torch.channels_last), 4, weight, bias, 1e-5)
    else:
        y = F.gelu(F.max_pool2d(F.group_norm(x, 4, weight, bias, 1e-5), 2))
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)
    grads = torch.autograd.grad((y * weights).sum(), leaves)
    return y.detach().double(), [g.double() for g in grads]


@pytest.mark.parametrize("shape", [(8, 8, 64, 64), (1, 12, 6, 4), (3, 20, 10, 8), (2, 16, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_norm_pool_gelu_matches_the_three_ops(native, shape, affine):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g) * 2 + 0.5
    params = [torch.randn(shape[1], generator=g).requires_grad_() if affine else None for _ in range(2)]
    as64 = [None if p is None else p.detach().double().requires_grad_() for p in params]
    y_ref, g_ref = _norm_pool_gelu(x.double(), *as64, native_path=False)
    y, grads = _norm_pool_gelu(x, *params, native_path=True)
    y32, g32 = _norm_pool_gelu(x, *params, native_path=False)

    def allowed(ref, torch32):
        return max(1e-5 * (1 + float(ref.abs().max())), 4 * float((torch32 - ref).abs().max()))

    assert y.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    assert (y - y_ref).abs().max() <= allowed(y_ref, y32)
    for name, a, b, c in zip(["x", "weight", "bias"], grads, g_ref, g32):
        assert (a - b).abs().max() <= allowed(b, c), name


def test_fused_max_pool_gives_a_tie_to_the_first_maximum_as_pytorch_does(native):
    # Each 2x2 window holds its value twice (top row equal): the gradient must reach the same pixel.
    top = torch.randn(2, 8, 4, 4)
    x = torch.cat([top, top], dim=3).view(2, 8, 4, 2, 4).permute(0, 1, 2, 4, 3).reshape(2, 8, 4, 8)
    x = torch.cat([x, x - 5.0], dim=2)  # bottom rows lower: the top two compete
    y_ref, (dx_ref,) = _norm_pool_gelu(x, None, None, native_path=False)
    y, (dx,) = _norm_pool_gelu(x, None, None, native_path=True)
    assert torch.allclose(y, y_ref, atol=1e-5)
    # a gradient sent to the other pixel of a tie would be off there by the pooled gradient's size
    assert torch.allclose(dx, dx_ref, atol=1e-5)
    tie_broken_the_other_way = _norm_pool_gelu(x.flip(3), None, None, native_path=True)[1][0].flip(3)
    assert not torch.allclose(tie_broken_the_other_way, dx_ref, atol=1e-5)  # the check can fail


def test_fused_path_without_gradients_and_its_fallbacks(native):
    norm = torch.nn.GroupNorm(4, 8)
    norm.__class__ = ChannelsLastGroupNorm
    x = torch.randn(2, 8, 10, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = norm.pool_gelu(x)
        assert torch.allclose(fused, F.gelu(F.max_pool2d(F.group_norm(x, 4, norm.weight, norm.bias), 2)), atol=1e-5)
    assert norm.pool_gelu(torch.randn(2, 8, 10, 7).contiguous(memory_format=torch.channels_last)) is None  # odd
    assert norm.pool_gelu(torch.randn(2, 8, 10, 6)) is None  # NCHW


def test_fast_engine_swaps_group_norms_of_channels_last_models_only(native):
    import study.models  # noqa: F401  registers the models
    from study.models.registry import build_model

    plain = build_model("ultralbm", {})
    fast = prepare_model(build_model("ultralbm", {}), "fast")
    assert all(type(m) is not ChannelsLastGroupNorm for m in plain.modules())
    assert sum(type(m) is ChannelsLastGroupNorm for m in fast.modules()) == 10
    assert fast.state_dict().keys() == plain.state_dict().keys()
    baseline = prepare_model(build_model("malunet", {}), "fast")  # NCHW model: left alone
    assert not any(type(m) is ChannelsLastGroupNorm for m in baseline.modules())
    # An NCHW input still takes PyTorch's GroupNorm, bit for bit.
    norm = next(m for m in fast.modules() if type(m) is ChannelsLastGroupNorm)
    x = torch.randn(2, norm.num_channels, 5, 5)
    assert torch.equal(norm(x), torch.nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias,
                                                               norm.eps))


def test_without_the_kernels_everything_runs_on_pytorch_ops(monkeypatch):
    monkeypatch.setattr(kernels, "_enabled", False)
    x = torch.randn(2, 8, 16)
    assert mamba_mod.scan_function(x) is selective_scan
    assert "turned off" in kernels.status()
    assert "native" not in mamba_mod.available_backends()
    monkeypatch.setattr(mamba_mod, "_backend", "native")
    with pytest.raises(RuntimeError, match="needs float32 CPU tensors and the C kernels.*turned off"):
        mamba_mod.scan_function(x)
    monkeypatch.setattr(mamba_mod, "_backend", "auto")
    layer = mamba_mod.Mamba(8)
    assert layer(torch.randn(2, 10, 8)).shape == (2, 10, 8)


def test_torch_backend_keeps_the_pytorch_scan(native, monkeypatch):
    assert "native" in mamba_mod.available_backends()
    x = torch.randn(2, 8, 16)
    assert mamba_mod.scan_function(x) is native_selective_scan
    monkeypatch.setattr(mamba_mod, "_backend", "torch")
    assert mamba_mod.scan_function(x) is selective_scan
    assert mamba_mod.scan_function(x.double()) is selective_scan


def test_no_compiler_is_reported_and_the_model_still_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("STUDY_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "_state", {})
    assert kernels.library() is None
    assert "no C compiler" in kernels.status() and "no-such-cc" in kernels.status()
    layer = mamba_mod.Mamba(8)
    assert torch.isfinite(layer(torch.randn(1, 6, 8))).all()


@pytest.mark.slow
def test_a_cached_library_others_could_write_is_refused(native, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_KERNEL_CACHE", str(tmp_path))
    _, path = build.build_and_load()  # a real build into the private folder
    assert path.parent == tmp_path and stat.S_IMODE(os.stat(path).st_mode) & 0o022 == 0
    os.chmod(path, 0o666)
    with pytest.raises(build.BuildFailed, match="writable by others; refusing to load"):
        build.build_and_load()
    os.chmod(path, 0o755)
    assert build.build_and_load()[1] == path
    os.chmod(tmp_path, 0o777)  # a folder others can write to: the file could be swapped under us
    with pytest.raises(build.BuildFailed, match=f"{tmp_path}: not owned by this user, or writable by others"):
        build.build_and_load()


def test_inputs_the_kernels_cannot_take_go_to_pytorch_or_are_refused(native):
    # Empty maps: PyTorch's GroupNorm, never a pointer to nothing.
    norm = torch.nn.GroupNorm(4, 8)
    norm.__class__ = ChannelsLastGroupNorm
    empty = torch.randn(2, 8, 2, 0).contiguous(memory_format=torch.channels_last)
    assert norm(empty).shape == empty.shape and norm.pool_gelu(empty) is None
    # Not float32 (autocast, a double model): the PyTorch scan.
    xs = [x.to(torch.bfloat16) for x in _scan_inputs(2, 3, 16, 8)]
    u, delta, A, B, C, D, z, bias = xs
    got = native_selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    assert torch.equal(got, selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True))
    # Handed straight to the autograd function, a wrong dtype or shape is refused before any C runs.
    f = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="expected a contiguous torch.float32 CPU tensor"):
        ops.NativeScan.apply(f.double(), f.double(), torch.randn(3, 4), torch.randn(2, 8, 4), torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="do not fit"):
        ops.NativeScan.apply(f, f, torch.randn(3, 4), torch.randn(2, 8, 5), torch.randn(2, 8, 5))


def test_a_second_derivative_is_refused_not_wrong(native):
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ops.group_norm(x, 4, None, None, 1e-5)
    (g,) = torch.autograd.grad((y * y.detach()).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(g.sum(), x)


@pytest.mark.slow
def test_a_cached_library_that_does_not_load_is_built_again(native, monkeypatch, tmp_path):
    import multiprocessing

    # Built by another process (a process that has loaded a library gets that one back from dlopen).
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    first = context.Process(target=_build_in_worker, args=(str(tmp_path), os.environ.get("CC", "cc"), out))
    first.start()
    first.join(120)
    path = Path(out.get(timeout=10))
    path.write_bytes(b"not a shared library")  # torn, truncated, or overwritten
    monkeypatch.setenv("STUDY_KERNEL_CACHE", str(tmp_path))
    lib, again = build.build_and_load()
    assert again == path and lib.scan_forward is not None
    assert [p.name for p in tmp_path.glob("*.unverified-*")] == [f"{path.name}.unverified-{os.getpid()}"]
    assert build.verified(path) == (True, "")


def _plant(path: Path, content: bytes) -> None:
    """What a node crash or a labmate leaves under the cached name (a new file: never the mapped one)."""
    planted = path.with_name("planted")
    planted.write_bytes(content)
    planted.chmod(0o755)
    os.replace(planted, path)


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A kernel cache holding one good build (library and digest), made by another process."""
    import subprocess
    import sys

    cache = tmp_path_factory.mktemp("kernel-cache")
    env = {**os.environ, "STUDY_KERNEL_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", "from study import kernels; print(kernels.status())"], env=env,
                          capture_output=True, text=True, timeout=300)
    if "native CPU kernels" not in done.stdout:
        _missing(f"the C kernels do not build here: {done.stdout} {done.stderr[-500:]}")
    return cache


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "elf-garbage", "foreign"])
def test_a_planted_library_is_set_aside_and_rebuilt_never_loaded(built_cache, tmp_path, kind):
    """A truncated library killed every process with SIGBUS inside dlopen; ELF magic with random bytes
    silently fell back; a valid foreign library gave a raw AttributeError. Each is now caught by its digest
    before dlopen, set aside, rebuilt and said once; `study env` runs through."""
    import shutil
    import subprocess
    import sys

    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache, ignore=shutil.ignore_patterns(".build.lock"))
    cache.chmod(0o700)
    (path,) = cache.glob("study-kernels-*.so")
    good = path.read_bytes()
    if kind == "truncated":
        content = good[: len(good) // 3]
    elif kind == "elf-garbage":
        content = b"\x7fELF" + os.urandom(len(good) - 4)
    else:
        source = tmp_path / "foreign.c"
        source.write_text("int foreign(void) { return 1; }\n")
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-o", str(tmp_path / "foreign.so"), str(source)],
                       check=True, timeout=60)
        content = (tmp_path / "foreign.so").read_bytes()
    _plant(path, content)
    assert not build.verified(path)[0]
    env = {**os.environ, "STUDY_KERNEL_CACHE": str(cache)}
    runs = [subprocess.run([sys.executable, "-c", command], env=env, capture_output=True, text=True, timeout=300)
            for command in ("from study import kernels; print(kernels.status())",
                            "import sys; from study.cli import main; sys.exit(main(['env']))")]
    for done in runs:
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert "native CPU kernels" in done.stdout, done.stdout[-2000:]
    assert "set aside" in runs[0].stderr and "set aside" not in runs[1].stderr  # repaired once, said once
    assert build.verified(path) == (True, "")
    aside = list(cache.glob("*.unverified-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content  # kept for a look, never loaded


def _fake_cc(tmp_path, body: str) -> str:
    script = tmp_path / "cc"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_hung_compiler_is_given_up_on_quickly(monkeypatch, tmp_path):
    log, children = tmp_path / "calls", tmp_path / "children"
    cc = _fake_cc(tmp_path, f'echo "$@" >> {log}\nif [ "$1" = --version ]; then echo fake 1.0; exit 0; fi\n'
                            f'sleep 60 &\necho $! >> {children}\nwait')
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("STUDY_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "COMPILE_TIMEOUT_S", 1)
    with pytest.raises(build.BuildFailed, match="did not finish in 1 s"):
        build.build_and_load()
    compiles = [line for line in log.read_text().splitlines() if "--version" not in line]
    assert len(compiles) == 1  # the other variants are not tried with a hung compiler
    (child,) = [int(pid) for pid in children.read_text().split()]
    assert not _alive(child)  # the compiler's whole process group was killed, its children too


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _build_in_worker(cache: str, cc: str, out):
    os.environ["STUDY_KERNEL_CACHE"], os.environ["CC"] = cache, cc
    _, path = build.build_and_load()
    out.put(str(path))


@pytest.mark.slow
def test_parallel_workers_with_an_empty_cache_build_once(tmp_path):
    import multiprocessing
    import shutil

    log = tmp_path / "calls"
    real = shutil.which(os.environ.get("CC", "cc"))
    if real is None:
        pytest.skip("no C compiler")  # the native fixture decides whether that is allowed
    cc = _fake_cc(tmp_path, f'[ "$1" = --version ] || echo build >> {log}\nexec {real} "$@"')
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_build_in_worker, args=(str(tmp_path / "cache"), cc, out)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    paths = {out.get(timeout=10) for _ in workers}
    assert len(paths) == 1 and log.read_text().count("build") == 1
