"""Edge inputs of the geometry core: NaN in epipolar distances, extreme weights and coordinates
in the DLT (against a float64 SVD of the weighted rows), non-finite cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from geometry_helpers import h36m_like_rig

from mvbook.geometry import Camera, triangulate
from mvbook.geometry.epipolar import (
    epipolar_distance,
    fundamental_from_cameras,
    point_line_distance,
    sampson_distance,
    symmetric_epipolar_distance,
)

F64 = torch.float64
NAN = float("nan")


def svd_reference(P: np.ndarray, uv: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One numpy float64 SVD of the weighted DLT rows per point: ``P (C, 3, 4)``,
    ``uv (C, N, 2)``, ``w (C, N)`` -> ``(N, 3)``."""
    rows = np.concatenate([uv[..., 0:1, None] * P[:, None, 2:3] - P[:, None, 0:1],
                           uv[..., 1:2, None] * P[:, None, 2:3] - P[:, None, 1:2]], axis=-2)
    A = (w[..., None, None] * rows).transpose(1, 0, 2, 3).reshape(uv.shape[1], -1, 4)
    _, _, vh = np.linalg.svd(A)
    X = vh[:, -1]
    return X[:, :3] / X[:, 3:]


def _scene(n: int = 40, offset: float = 0.0, noise: float = 0.0, seed: int = 0):
    """Points near a Human3.6M-like rig, moved with the rig by ``offset`` mm (the rig's world
    frame shifted), their exact or noisy projections."""
    g = torch.Generator().manual_seed(seed)
    P = h36m_like_rig().P.clone()
    X = torch.randn(n, 3, generator=g, dtype=F64) * 300 + torch.tensor([0, 0, 900.0], dtype=F64)
    shift = torch.full((3,), offset, dtype=F64)
    P[..., 3] = P[..., 3] - (P[..., :3] @ shift)
    X = X + shift
    x = torch.einsum("cij,nj->cni", P, torch.cat([X, torch.ones(n, 1, dtype=F64)], -1))
    uv = x[..., :2] / x[..., 2:]
    if noise:
        uv = uv + noise * torch.randn(uv.shape, generator=g, dtype=F64)
    return P, X, uv


# -- epipolar distances: NaN in, NaN out ---------------------------------------------------


@pytest.mark.parametrize("fn", [epipolar_distance, symmetric_epipolar_distance, sampson_distance])
def test_epipolar_distances_propagate_nan(fn):
    cams = h36m_like_rig()
    F = fundamental_from_cameras(cams[0], cams[1])
    a = torch.tensor([[500.0, 400.0], [NAN, 300.0], [480.0, 510.0]], dtype=F64)
    b = torch.tensor([[520.0, 410.0], [500.0, 500.0], [NAN, NAN]], dtype=F64)
    d = fn(a, b, F)
    assert torch.isfinite(d[0]) and torch.isnan(d[1]) and torch.isnan(d[2])
    assert torch.isnan(fn(a[:1], b[:1], F * NAN)).all()
    assert not (fn(a[:1], b[:1], F * float("inf")) == 0).any()


def test_point_line_distance_nan_line_is_nan():
    uv = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=F64)
    lines = torch.tensor([[NAN, 1.0, 1.0], [0.0, 0.0, NAN]], dtype=F64)
    assert torch.isnan(point_line_distance(uv, lines)).all()


def test_epipolar_nan_keeps_finite_gradients_elsewhere():
    cams = h36m_like_rig()
    F = fundamental_from_cameras(cams[0], cams[1])
    a = torch.tensor([[500.0, 400.0], [NAN, 300.0]], dtype=F64, requires_grad=True)
    b = torch.tensor([[520.0, 410.0], [500.0, 500.0]], dtype=F64)
    d = sampson_distance(a, b, F)
    d[0].backward()
    assert torch.isfinite(a.grad[0]).all()


# -- camera ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["K", "R", "t", "dist"])
def test_camera_rejects_non_finite(arg):
    good = {"K": torch.tensor([[1000.0, 0, 500], [0, 1000, 500], [0, 0, 1]]),
            "R": torch.eye(3), "t": torch.tensor([0.0, 0, 3000]), "dist": torch.zeros(5)}
    Camera(**good)
    for bad in (NAN, float("inf")):
        kw = dict(good)
        kw[arg] = kw[arg].clone()
        kw[arg].view(-1)[1] = bad
        with pytest.raises(ValueError, match=f"{arg} must be finite"):
            Camera(**kw)


# -- triangulation ---------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_triangulate_infinite_weight_is_degenerate(normalize):
    P, X, uv = _scene(4)
    w = torch.ones(4, 4, dtype=F64)
    w[0, 0] = float("inf")
    out = triangulate(uv, P, w, normalize=normalize)
    assert torch.isnan(out[0]).all()
    assert torch.allclose(out[1:], X[1:], atol=1e-6)
    with pytest.raises(ValueError, match="degenerate"):
        triangulate(uv, P, w, normalize=normalize, on_degenerate="raise")


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_triangulate_weight_magnitude_does_not_matter(normalize, scale):
    P, X, uv = _scene(6, noise=2.0)
    w = torch.rand(4, 6, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.1
    ref = triangulate(uv, P, w, normalize=normalize)
    out = triangulate(uv, P, w * scale, normalize=normalize)
    assert torch.allclose(out, ref, atol=1e-6), (out - ref).abs().max()


@pytest.mark.parametrize("normalize", [True, False])
def test_triangulate_overflowing_coordinates_are_degenerate(normalize):
    P, X, uv = _scene(3)
    uv = uv.clone()
    uv[0, 0] = 1e160
    out = triangulate(uv, P, normalize=normalize)
    assert torch.isnan(out[0]).all()
    assert torch.allclose(out[1:], X[1:], atol=1e-6)
    with pytest.raises(ValueError, match="degenerate"):
        triangulate(uv, P, normalize=normalize, on_degenerate="raise")


@pytest.mark.parametrize("ratio", [1e-4, 1e-6, 1e-7, 1e-8])
def test_triangulate_extreme_weight_ratio_exact_data(ratio):
    # two active views, one 1e-8 times weaker: the weak view alone fixes the depth on the
    # strong view's ray, exactly for exact data
    P, X, uv = _scene(30)
    w = torch.zeros(4, 30, dtype=F64)
    w[0], w[1] = 1.0, ratio
    for normalize in (True, False):
        out = triangulate(uv, P, w, normalize=normalize)
        err = (out - X).norm(dim=-1).max()
        assert err < 1e-3, (normalize, ratio, float(err))


@pytest.mark.parametrize("ratio", [1e-6, 1e-7, 1e-8])
def test_triangulate_extreme_weight_ratio_matches_svd(ratio):
    P, X, uv = _scene(30, noise=2.0)
    w = torch.zeros(4, 30, dtype=F64)
    w[0], w[1], w[2] = 1.0, ratio, 0.5 * ratio
    ref = svd_reference(P.numpy(), uv.numpy(), w.numpy())
    out = triangulate(uv, P, w, normalize=False).numpy()
    assert np.abs(out - ref).max() < 1e-3
    out_n = triangulate(uv, P, w, normalize=True).numpy()  # normalized rows: same within 10 mm
    assert np.linalg.norm(out_n - ref, axis=-1).max() < 10.0


@pytest.mark.parametrize("offset", [1e5, 1e6, 1e7])
def test_triangulate_large_coordinates_match_svd(offset):
    P, X, uv = _scene(30, offset=offset, noise=1.0)
    w = torch.rand(4, 30, generator=torch.Generator().manual_seed(2), dtype=F64) + 0.1
    ref = svd_reference(P.numpy(), uv.numpy(), w.numpy())
    assert np.linalg.norm(ref - X.numpy(), axis=-1).max() < 30  # the reference is sound
    for normalize in (False, True):
        out = triangulate(uv, P, w, normalize=normalize).numpy()
        assert np.linalg.norm(out - ref, axis=-1).max() < 10.0, normalize
    out = triangulate(uv, P, w, normalize=False).numpy()
    assert np.linalg.norm(out - ref, axis=-1).max() < 1.0


def test_triangulate_row_solve_is_batched_and_differentiable():
    # a batch of rigs where only some points need the row solve; gradients stay finite
    P, X, uv = _scene(8, noise=1.0)
    Pb = P.expand(3, 4, 3, 4)
    uvb = uv.expand(3, 4, 8, 2).clone().requires_grad_(True)
    w = torch.ones(3, 4, 8, dtype=F64)
    w[1, 1, 2] = 1e-8
    w[2, 0, 5] = 1e-7
    w.requires_grad_(True)
    out = triangulate(uvb, Pb, w, normalize=False)
    ref = np.stack([svd_reference(Pb[b].numpy(), uvb[b].detach().numpy(),
                                  w[b].detach().numpy()) for b in range(3)])
    assert np.abs(out.detach().numpy() - ref).max() < 1e-3
    out.sum().backward()
    assert torch.isfinite(uvb.grad).all() and torch.isfinite(w.grad).all()
