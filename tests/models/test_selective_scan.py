"""The project's scan (one loop over time, or chunks) equals the plain sequential scan, in outputs and gradients."""

import pytest
import torch

from study.models.selective_scan import linear_scan, selective_scan, selective_scan_reference


def _inputs(batch, d, n, length, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    u = r(batch, d, length)
    delta = r(batch, d, length, scale=0.5)
    A = (-torch.rand(d, n, generator=g, dtype=dtype) * 4 - 0.1).requires_grad_()
    B, C = r(batch, n, length), r(batch, n, length)
    D, z, bias = r(d), r(batch, d, length), r(d)
    return [u, delta, A, B, C, D, z, bias]


def _run(fn, xs, **kw):
    u, delta, A, B, C, D, z, bias = xs
    y = fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, **kw)
    grads = torch.autograd.grad(y.square().sum(), xs, materialize_grads=True)
    return y, grads


@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 33, 100, 257])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_blocked_scan_matches_sequential(length, dtype, tol):
    xs = _inputs(2, 3, 16, length, dtype)
    y_fast, g_fast = _run(selective_scan, xs)
    y_ref, g_ref = _run(selective_scan_reference, xs)
    scale = 1 + y_ref.abs().max()
    assert (y_fast - y_ref).abs().max() <= tol * scale
    for name, a, b in zip("u delta A B C D z bias".split(), g_fast, g_ref):
        assert (a - b).abs().max() <= tol * (1 + b.abs().max()), name


@pytest.mark.parametrize("block", [2, 4, 16])
def test_block_size_does_not_change_the_result(block):
    xs = _inputs(1, 2, 4, 77, torch.float64, seed=3)
    y_ref, g_ref = _run(selective_scan_reference, xs)
    y, g = _run(selective_scan, xs, block=block)
    assert torch.allclose(y, y_ref, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(g, g_ref))


@pytest.mark.parametrize("batch,d,length", [(1, 2, 1500), (64, 16, 40)])
def test_default_paths_match_sequential(batch, d, length):
    # (1, 2, 1500): past DIRECT_MAX, chunked by default; (64, 16, 40): one loop over time.
    xs = _inputs(batch, d, 16, length, torch.float64, seed=5)
    y_ref, g_ref = _run(selective_scan_reference, xs)
    y, g = _run(selective_scan, xs)
    assert torch.allclose(y, y_ref, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-8) for a, b in zip(g, g_ref))


def test_linear_scan_is_the_recurrence():
    a = torch.rand(3, 50, dtype=torch.float64)
    b = torch.randn(3, 50, dtype=torch.float64)
    h, expected = torch.zeros(3, dtype=torch.float64), []
    for t in range(50):
        h = a[:, t] * h + b[:, t]
        expected.append(h)
    assert torch.allclose(linear_scan(a, b, block=4), torch.stack(expected, -1))


def test_long_decays_stay_finite():
    # Strong decays over a long sequence: products underflow to 0, never inf/nan.
    xs = _inputs(1, 2, 16, 2048, torch.float32)
    with torch.no_grad():
        xs[1].mul_(0).add_(5.0)  # delta = softplus(5 + bias): large steps
    y, grads = _run(selective_scan, xs)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
