"""Tests of mvbook.geometry.procrustes (Kabsch / Umeyama alignment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mvbook.geometry import procrustes, procrustes_align

F64 = torch.float64
SETTINGS = settings(max_examples=50, deadline=None)


def random_rotation(seed: int) -> torch.Tensor:
    return torch.tensor(Rotation.random(random_state=seed).as_matrix(), dtype=F64)


def cloud(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64) * 300 + 100


@SETTINGS
@given(seed=st.integers(0, 10_000), s=st.floats(0.2, 5.0), n=st.integers(3, 30))
def test_recovers_similarity_transform(seed, s, n):
    X = cloud(n, seed)
    R0 = random_rotation(seed)
    t0 = torch.tensor([50.0, -20.0, 1000.0], dtype=F64)
    Y = s * X @ R0.T + t0
    R, s_hat, t = procrustes(X, Y, scale=True)
    torch.testing.assert_close(R, R0, atol=1e-7, rtol=0)
    assert float(s_hat) == pytest.approx(s, rel=1e-9)
    torch.testing.assert_close(t, t0, atol=1e-6, rtol=0)
    torch.testing.assert_close(procrustes_align(X, Y), Y, atol=1e-6, rtol=0)
    # rigid fit of a rigidly moved cloud
    R, s1, t = procrustes(X, X @ R0.T + t0)
    assert float(s1) == 1.0
    torch.testing.assert_close(R, R0, atol=1e-7, rtol=0)


def test_reflection_is_not_returned():
    X = cloud(20, 1)
    mirrored = X * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    R, _, _ = procrustes(X, mirrored, scale=True)
    assert float(torch.linalg.det(R)) == pytest.approx(1.0)
    # the best proper rotation is worse than the (excluded) reflection but still optimal
    aligned = procrustes_align(X, mirrored)
    err = (aligned - mirrored).norm(dim=-1).mean()
    for seed in range(20):
        Rr = random_rotation(seed)
        Xr = X @ Rr.T
        Xr = Xr - Xr.mean(0) + mirrored.mean(0)
        assert (Xr - mirrored).norm(dim=-1).square().sum() >= (aligned - mirrored).norm(
            dim=-1).square().sum() - 1e-6
    assert err > 0


def test_matches_scipy_orthogonal_procrustes_and_umeyama():
    from scipy.linalg import orthogonal_procrustes

    X = cloud(15, 2)
    g = torch.Generator().manual_seed(3)
    Y = 1.3 * X @ random_rotation(3).T + 5 + 10 * torch.randn(15, 3, generator=g, dtype=F64)
    R, s, t = procrustes(X, Y, scale=True)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Rs, _ = orthogonal_procrustes(Xc.numpy(), Yc.numpy())  # Xc @ Rs ~ Yc
    np.testing.assert_allclose(R.numpy(), Rs.T, atol=1e-9)
    s_ref = np.trace(Yc.numpy().T @ Xc.numpy() @ Rs.T.T) / (Xc.numpy() ** 2).sum()
    assert float(s) == pytest.approx(s_ref, rel=1e-9)


def test_weights_and_zero_weight_points():
    X = cloud(12, 4)
    R0 = random_rotation(4)
    Y = X @ R0.T + 7.0
    Y_bad = Y.clone()
    Y_bad[:3] += 500.0  # outliers with zero weight
    w = torch.ones(12, dtype=F64)
    w[:3] = 0
    R, s, t = procrustes(X, Y_bad, weights=w)
    torch.testing.assert_close(R, R0, atol=1e-7, rtol=0)
    torch.testing.assert_close(t, torch.full((3,), 7.0, dtype=F64), atol=1e-6, rtol=0)
    # weights equal to dropping the points
    R2, s2, t2 = procrustes(X[3:], Y_bad[3:], scale=True)
    R3, s3, t3 = procrustes(X, Y_bad, scale=True, weights=w)
    torch.testing.assert_close(R2, R3)
    torch.testing.assert_close(s2, s3)
    torch.testing.assert_close(t2, t3)
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        procrustes(X, Y, weights=-w)
    with pytest.raises(ValueError, match="positive sum"):
        procrustes(X, Y, weights=torch.zeros(12))
    with pytest.raises(ValueError, match="weights must broadcast"):
        procrustes(X, Y, weights=torch.ones(5))


def test_batched_and_broadcast():
    Xs = torch.stack([cloud(17, s) for s in range(6)]).reshape(2, 3, 17, 3)
    Rs = torch.stack([random_rotation(s) for s in range(6)]).reshape(2, 3, 3, 3)
    Ys = 2.0 * Xs @ Rs.transpose(-1, -2) + 1.0
    R, s, t = procrustes(Xs, Ys, scale=True)
    assert R.shape == (2, 3, 3, 3) and s.shape == (2, 3) and t.shape == (2, 3, 3)
    torch.testing.assert_close(R, Rs, atol=1e-7, rtol=0)
    torch.testing.assert_close(s, torch.full((2, 3), 2.0, dtype=F64))
    # one target, many sources
    aligned = procrustes_align(Xs, Ys[0, 0])
    assert aligned.shape == (2, 3, 17, 3)
    assert procrustes_align(Xs, Ys, scale=False).shape == (2, 3, 17, 3)


def test_gradcheck_and_float32():
    X = cloud(6, 5)
    g = torch.Generator().manual_seed(5)
    Y = (X @ random_rotation(5).T + torch.randn(6, 3, generator=g, dtype=F64)).requires_grad_(True)
    Xg = X.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: procrustes_align(a, b, scale=True), (Xg, Y))
    assert torch.autograd.gradcheck(lambda a, b: procrustes(a, b)[0], (Xg, Y))
    R32, s32, t32 = procrustes(X.float(), Y.detach().float(), scale=True)
    assert R32.dtype == torch.float32
    R64, _, _ = procrustes(X, Y.detach(), scale=True)
    assert (R32.double() - R64).abs().max() < 1e-4


def test_validation_errors():
    X = cloud(5, 0)
    with pytest.raises(ValueError, match="X must have shape"):
        procrustes(X[:, :2], X)
    with pytest.raises(ValueError, match="Y must have shape"):
        procrustes(X, X[:, :2])
    with pytest.raises(ValueError, match="same number of points"):
        procrustes(X, X[:4])
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        procrustes(X.expand(2, 5, 3), X.expand(3, 5, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    X = cloud(10, 1)
    Y = X @ random_rotation(1).T
    R, s, t = procrustes(X.cuda(), Y.cuda(), scale=True)
    torch.testing.assert_close(R.cpu(), random_rotation(1), atol=1e-7, rtol=0)
