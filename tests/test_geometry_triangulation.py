"""Tests of mvbook.geometry.triangulation (DLT, RANSAC, refinement), cross-checked with OpenCV."""

from __future__ import annotations

import cv2
import pytest
import torch
from geometry_helpers import F64, SETTINGS, circle_rig, noisy_projections, random_points
from hypothesis import given
from hypothesis import strategies as st

from mvbook.geometry import (
    Camera,
    refine_reprojection,
    reprojection_error,
    triangulate,
    triangulate_ransac,
    usable_views,
)

SPREAD = (300.0, 300.0, 500.0)  # mm, of the random points around the rig's target


def points(n: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3)`` mm: body-sized random points inside the rig."""
    return random_points(n, seed, SPREAD)


def assert_rel_close(a, b, rel: float = 1e-6) -> None:
    """Per-point relative agreement ``||a - b|| <= rel ||b||`` (points in mm)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    err = (a - b).norm(dim=-1) / b.norm(dim=-1)
    assert err.max() <= rel, f"max relative difference {float(err.max()):.3g} > {rel}"


def svd_reference(uv: torch.Tensor, P: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-point DLT as in common open-source code (Iskakov et al.'s algebraic triangulation)."""
    out = []
    for n in range(uv.shape[1]):
        A = uv[:, n, :, None] * P[:, 2:3, :] - P[:, :2, :]  # (C, 2, 4)
        A = (A * w[:, n, None, None]).reshape(-1, 4)
        _, _, Vh = torch.linalg.svd(A)
        Xh = Vh[-1]
        out.append(Xh[:3] / Xh[3])
    return torch.stack(out)


# ------------------------------------------------------------------------------ accuracy
@SETTINGS
@given(seed=st.integers(0, 10_000), n_views=st.integers(2, 6), normalize=st.booleans())
def test_exact_round_trip(seed, n_views, normalize):
    cams = circle_rig(n_views)
    X = points(7, seed)
    uv = cams.project(X)
    Xr = triangulate(uv, cams.P, normalize=normalize)
    assert Xr.shape == (7, 3)
    torch.testing.assert_close(Xr, X, atol=1e-6, rtol=0)
    assert reprojection_error(Xr, uv, cams.P).max() < 1e-6


def test_matches_opencv_two_views():
    cams = circle_rig(4)
    X = points(200)
    g = torch.Generator().manual_seed(1)
    uv = noisy_projections(cams, X, 3.0, g)
    for a, b in [(0, 1), (1, 3), (2, 0)]:
        ref = cv2.triangulatePoints(cams.P[a].numpy(), cams.P[b].numpy(), uv[a].numpy().T,
                                    uv[b].numpy().T)
        ref = (ref[:3] / ref[3]).T
        mine = triangulate(uv[[a, b]], cams.P[[a, b]], normalize=False)
        assert_rel_close(mine, ref)
        # exact data: the normalized DLT agrees too
        ex = cams.project(X)[[a, b]]
        ref = cv2.triangulatePoints(cams.P[a].numpy(), cams.P[b].numpy(), ex[0].numpy().T,
                                    ex[1].numpy().T)
        assert_rel_close(triangulate(ex, cams.P[[a, b]]), (ref[:3] / ref[3]).T)


def test_weighted_matches_per_point_svd_reference():
    cams = circle_rig(5)
    X = points(40, 3)
    g = torch.Generator().manual_seed(2)
    uv = noisy_projections(cams, X, 4.0, g)
    w = torch.rand(5, 40, generator=g, dtype=F64) + 0.05
    ref = svd_reference(uv, cams.P, w)
    assert_rel_close(triangulate(uv, cams.P, w, normalize=False), ref)


def test_normalization_improves_float32_accuracy():
    cams = circle_rig(4)
    X = points(2000, 4)
    uv = cams.project(X).float()
    P = cams.P.float()
    err = (triangulate(uv, P).double() - X).norm(dim=-1)
    assert triangulate(uv, P).dtype == torch.float32
    assert err.max() < 0.05  # mm, float32 pixels are exact to ~1e-4 px
    g = torch.Generator().manual_seed(0)
    noisy = uv + 2.0 * torch.randn(uv.shape, generator=g)
    X32 = triangulate(noisy, P)
    X64 = triangulate(noisy.double(), cams.P)
    assert (X32.double() - X64).norm(dim=-1).max() < 0.05


def test_views_of_different_resolution_weigh_alike_with_normalization():
    """Hartley normalization removes the pixel-unit scale of each view."""
    cams = circle_rig(3)
    X = points(50, 6)
    g = torch.Generator().manual_seed(3)
    uv = noisy_projections(cams, X, 2.0, g)
    small = cams.resize(torch.tensor([[250, 250], [1000, 1000], [1000, 1000]]))
    uv_small = torch.cat([(uv[:1] + 0.5) * 0.25 - 0.5, uv[1:]])
    # the same measurements in other pixel units: the normalized DLT is nearly unchanged
    a = triangulate(uv, cams.P)
    b = triangulate(uv_small, small.P)
    assert (a - b).norm(dim=-1).max() < 1.0


# ------------------------------------------------------------------------------ weights
def test_zero_weight_views_are_ignored_even_with_nan_points():
    cams = circle_rig(4)
    X = points(30, 5)
    g = torch.Generator().manual_seed(4)
    uv = noisy_projections(cams, X, 2.0, g)
    w = torch.rand(4, 30, generator=g, dtype=F64) + 0.1
    w0 = w.clone()
    w0[2] = 0
    uv_bad = uv.clone()
    uv_bad[2, :10] = float("nan")
    # whatever the ignored view holds, the result is the same
    ref = triangulate(uv, cams.P, w0)
    torch.testing.assert_close(triangulate(uv_bad, cams.P, w0), ref)
    # NaN points count as missing views whatever their weight
    uv_nan = uv.clone()
    uv_nan[2] = float("nan")
    torch.testing.assert_close(triangulate(uv_nan, cams.P, w), ref)
    # without normalization it equals dropping the view; with it (which depends on all the
    # cameras, not on the weights) nearly so
    dropped = [0, 1, 3]
    assert_rel_close(triangulate(uv_bad, cams.P, w0, normalize=False),
                     triangulate(uv[dropped], cams.P[dropped], w[dropped], normalize=False))
    assert (ref - triangulate(uv[dropped], cams.P[dropped], w[dropped])).norm(dim=-1).max() < 0.5
    # a common scale of the weights does not matter
    torch.testing.assert_close(triangulate(uv, cams.P, 7.5 * w), triangulate(uv, cams.P, w))
    # (C, 1) weights broadcast over points
    wc = torch.tensor([[1.0], [0.5], [2.0], [1.0]], dtype=F64)
    torch.testing.assert_close(triangulate(uv, cams.P, wc),
                               triangulate(uv, cams.P, wc.expand(4, 30)))
    assert usable_views(uv_bad, w0).sum() == 90


def test_weights_pull_towards_confident_views():
    cams = circle_rig(4)
    X = points(20, 7)
    uv = cams.project(X)
    uv[3] += 40.0  # one view far off
    w = torch.ones(4, 20, dtype=F64)
    err_plain = (triangulate(uv, cams.P, w) - X).norm(dim=-1).mean()
    w[3] = 1e-3
    err_weighted = (triangulate(uv, cams.P, w) - X).norm(dim=-1).mean()
    assert err_weighted < 0.05 * err_plain


# ------------------------------------------------------------------------------ degenerate input
def test_fewer_than_two_views_nan_or_raise():
    cams = circle_rig(3)
    X = points(6)
    uv = cams.project(X)
    w = torch.ones(3, 6, dtype=F64)
    w[1:, 0] = 0  # point 0: one view
    w[:, 1] = 0  # point 1: no view
    uv[1:, 2] = float("nan")  # point 2: one finite view
    Xr = triangulate(uv, cams.P, w)
    assert torch.isnan(Xr[:3]).all()
    torch.testing.assert_close(Xr[3:], X[3:])
    with pytest.raises(ValueError, match="3 of 6 points have fewer than two usable views"):
        triangulate(uv, cams.P, w, on_degenerate="raise")
    with pytest.raises(ValueError, match="on_degenerate"):
        triangulate(uv, cams.P, on_degenerate="zero")
    # one view only
    assert torch.isnan(triangulate(uv[:1], cams.P[:1])).all()


def test_degenerate_points_do_not_poison_gradients():
    cams = circle_rig(3)
    X = points(5)
    uv = cams.project(X).requires_grad_(True)
    w = torch.ones(3, 5, dtype=F64)
    w[1:, 0] = 0
    w.requires_grad_(True)
    P = cams.P.clone().requires_grad_(True)
    Xr = triangulate(uv, P, w)
    Xr[1:].sum().backward()
    for t in (uv.grad, w.grad, P.grad):
        assert torch.isfinite(t).all()
    assert (uv.grad[:, 0] == 0).all()


@SETTINGS
@given(seed=st.integers(0, 10_000), n_views=st.integers(1, 5))
def test_random_masks_no_silent_nan(seed, n_views):
    cams = circle_rig(max(n_views, 2))[:n_views]
    g = torch.Generator().manual_seed(seed)
    X = points(12, seed)
    uv = noisy_projections(cams, X, 1.0, g)
    w = (torch.rand(n_views, 12, generator=g, dtype=F64) > 0.5).to(F64) * \
        torch.rand(n_views, 12, generator=g, dtype=F64)
    Xr = triangulate(uv, cams.P, w)
    enough = (w > 0).sum(0) >= 2
    assert torch.isfinite(Xr[enough]).all()
    assert torch.isnan(Xr[~enough]).all()
    if enough.any():
        assert (Xr[enough] - X[enough]).norm(dim=-1).max() < 200  # 1 px noise, >= 2 views
    if (~enough).any():
        with pytest.raises(ValueError):
            triangulate(uv, cams.P, w, on_degenerate="raise")


def test_validation_errors_name_arguments():
    cams = circle_rig(3)
    uv = cams.project(points(4))
    with pytest.raises(ValueError, match="points2d must have shape"):
        triangulate(uv[..., :1], cams.P)
    with pytest.raises(ValueError, match="P must have shape"):
        triangulate(uv, cams.P[..., :3])
    with pytest.raises(ValueError, match="P has 2 views"):
        triangulate(uv, cams.P[:2])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        triangulate(uv, cams.P, -torch.ones(3, 4))
    with pytest.raises(ValueError, match="weights must broadcast"):
        triangulate(uv, cams.P, torch.ones(3, 5))
    P = cams.P.clone()
    P[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="P must be finite"):
        triangulate(uv, P)
    with pytest.raises(TypeError, match="points2d"):
        triangulate("abc", cams.P)


# ------------------------------------------------------------------------------ batching, grads
def test_batched_shapes_and_broadcasting():
    cams = circle_rig(4)
    X = torch.stack([points(17, s) for s in range(3)])  # (B, J, 3)
    uv = cams.project(X[:, None])  # (B, C, J, 2)
    Xr = triangulate(uv, cams.P)  # shared P
    assert Xr.shape == (3, 17, 3)
    torch.testing.assert_close(Xr, X)
    Pb = cams.P.expand(3, 4, 3, 4)
    torch.testing.assert_close(triangulate(uv, Pb, torch.ones(3, 4, 17, dtype=F64)), X)
    # extra leading dims
    assert triangulate(uv[None].expand(2, 3, 4, 17, 2), cams.P).shape == (2, 3, 17, 3)


def test_gradcheck_dlt():
    cams = circle_rig(4)
    g = torch.Generator().manual_seed(0)
    uv = noisy_projections(cams, points(2), 1.0, g).requires_grad_(True)
    P = cams.P.clone().requires_grad_(True)
    w = (torch.rand(4, 2, generator=g, dtype=F64) + 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: triangulate(a, b, c), (uv, P, w))


def test_gradcheck_dlt_unnormalized_well_scaled():
    # unit-scale cameras so finite differences of the unnormalized system are accurate
    cams = Camera.look_at(torch.tensor([[3.0, 0, 1], [0, 3, 1.2], [-3, 0.5, 1]], dtype=F64),
                          torch.tensor([0.0, 0, 0.5], dtype=F64), focal=1.0, image_size=(1, 1))
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 3, generator=g, dtype=F64) * 0.3
    uv = noisy_projections(cams, X, 0.01, g).requires_grad_(True)
    w = (torch.rand(3, 3, generator=g, dtype=F64) + 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c: triangulate(a, cams.P, c, normalize=False), (uv, w))


def test_gradient_matches_svd_reference_autograd():
    cams = circle_rig(4)
    g = torch.Generator().manual_seed(5)
    uv = noisy_projections(cams, points(5, 2), 2.0, g)
    w = torch.rand(4, 5, generator=g, dtype=F64) + 0.1
    uv1 = uv.clone().requires_grad_(True)
    uv2 = uv.clone().requires_grad_(True)
    triangulate(uv1, cams.P, w, normalize=False).sum().backward()
    svd_reference(uv2, cams.P, w).sum().backward()
    torch.testing.assert_close(uv1.grad, uv2.grad, rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------------------ RANSAC
def test_ransac_recovers_point_with_one_outlier_view():
    cams = circle_rig(4)
    X = points(50, 8)
    g = torch.Generator().manual_seed(6)
    uv = noisy_projections(cams, X, 0.5, g)
    bad_view = torch.randint(0, 4, (50,), generator=g)
    uv[bad_view, torch.arange(50)] += torch.tensor([120.0, -80.0], dtype=F64)
    X_plain = triangulate(uv, cams.P)
    X_r, inliers = triangulate_ransac(uv, cams.P, threshold=5.0)
    assert inliers.shape == (4, 50) and inliers.dtype == torch.bool
    expected = torch.ones(4, 50, dtype=torch.bool)
    expected[bad_view, torch.arange(50)] = False
    assert torch.equal(inliers, expected)
    assert (X_r - X).norm(dim=-1).max() < 5.0
    assert (X_plain - X).norm(dim=-1).mean() > 20.0
    # the result equals the DLT of the inliers
    torch.testing.assert_close(X_r, triangulate(uv, cams.P, inliers.to(F64)))


def test_ransac_random_subsets_batched_and_degenerate():
    cams = circle_rig(8)
    X = torch.stack([points(10, s) for s in range(2)])  # (2, 10, 3)
    uv = cams.project(X[:, None])  # (2, 8, 10, 2)
    uv[:, 3] += 200.0
    gen = torch.Generator().manual_seed(0)
    X_r, inl = triangulate_ransac(uv, cams.P, threshold=2.0, sample_size=3, max_hypotheses=10,
                                  generator=gen)
    assert X_r.shape == (2, 10, 3) and inl.shape == (2, 8, 10)
    torch.testing.assert_close(X_r, X, atol=1e-6, rtol=0)
    assert not inl[:, 3].any() and inl[:, [0, 1, 2, 4, 5, 6, 7]].all()
    # no two views agree: degenerate -> NaN or raise
    uv2 = cams.project(X[0])[:2].clone()
    uv2[1] += 500.0
    X2, inl2 = triangulate_ransac(uv2, cams.P[:2], threshold=1.0)
    assert torch.isnan(X2).all() and not inl2.any()
    with pytest.raises(ValueError):
        triangulate_ransac(uv2, cams.P[:2], threshold=1.0, on_degenerate="raise")
    with pytest.raises(ValueError, match="threshold"):
        triangulate_ransac(uv2, cams.P[:2], threshold=-1.0)
    with pytest.raises(ValueError, match="sample_size"):
        triangulate_ransac(uv2, cams.P[:2], sample_size=3)


def test_ransac_is_differentiable():
    cams = circle_rig(4)
    uv = cams.project(points(6)).requires_grad_(True)
    X, _ = triangulate_ransac(uv, cams.P, threshold=3.0)
    X.sum().backward()
    assert torch.isfinite(uv.grad).all() and uv.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ refinement
def test_refine_reprojection_lowers_error_and_keeps_exact_points():
    cams = circle_rig(4)
    X = points(100, 9)
    g = torch.Generator().manual_seed(7)
    uv_exact = cams.project(X)
    torch.testing.assert_close(refine_reprojection(X, uv_exact, cams.P), X)
    uv = uv_exact + 3.0 * torch.randn(4, 100, 2, generator=g, dtype=F64)
    X0 = triangulate(uv, cams.P)
    X1 = refine_reprojection(X0, uv, cams.P, iterations=10)
    e0 = reprojection_error(X0, uv, cams.P).square().sum(0)
    e1 = reprojection_error(X1, uv, cams.P).square().sum(0)
    assert (e1 <= e0 + 1e-9).all() and e1.mean() < e0.mean()
    # optimality: the gradient of the reprojection cost vanishes
    Xg = X1.clone().requires_grad_(True)
    reprojection_error(Xg, uv, cams.P).square().sum().backward()
    assert Xg.grad.abs().max() < 1e-4
    # starting from a poor guess converges to the same minimum
    X2 = refine_reprojection(X0 + 30.0, uv, cams.P, iterations=30)
    torch.testing.assert_close(X2, X1, atol=1e-4, rtol=0)


def test_refine_reprojection_weights_nan_and_validation():
    cams = circle_rig(3)
    X = points(4)
    uv = cams.project(X)
    uv[2] += 30.0
    w = torch.tensor([[1.0], [1.0], [0.0]], dtype=F64)
    X1 = refine_reprojection(X + 5.0, uv, cams.P, weights=w)
    torch.testing.assert_close(X1, X, atol=1e-6, rtol=0)
    X0 = X.clone()
    X0[1] = float("nan")
    out = refine_reprojection(X0, uv, cams.P)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2, 3]]).all()
    with pytest.raises(ValueError, match="X0 must have shape"):
        refine_reprojection(X[:2], uv, cams.P)
    with pytest.raises(ValueError, match="iterations"):
        refine_reprojection(X, uv, cams.P, iterations=-1)


def test_reprojection_error_behind_camera_is_nan():
    cams = circle_rig(2)
    X = points(3)
    uv = cams.project(X)
    err = reprojection_error(X, uv, cams.P)
    assert err.shape == (2, 3) and err.max() < 1e-9
    behind = cams.center[0] - 1000 * cams.R[0, 2]
    err = reprojection_error(behind[None], uv[:, :1], cams.P)
    assert torch.isnan(err[0, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cams = circle_rig(4)
    X = points(1000)
    uv = cams.project(X) + torch.randn(4, 1000, 2, dtype=F64)
    w = torch.rand(4, 1000, dtype=F64)
    for dt in (torch.float32, F64):
        a = triangulate(uv.to(dt).cuda(), cams.P.to(dt).cuda(), w.to(dt).cuda())
        b = triangulate(uv.to(dt), cams.P.to(dt), w.to(dt))
        assert a.device.type == "cuda" and a.dtype == dt
        torch.testing.assert_close(a.cpu(), b, atol=1e-3, rtol=1e-5)
    Xr, inl = triangulate_ransac(uv.cuda(), cams.P.cuda(), threshold=5.0)
    assert Xr.device.type == "cuda"
    uvg = uv[:, :3].cuda().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: triangulate(a, cams.P.cuda()), (uvg,))


def test_blocked_evaluation_matches(monkeypatch):
    """Large point sets are processed in blocks; the result and gradients are unchanged."""
    import mvbook.geometry.triangulation as tri

    cams = circle_rig(4)
    g = torch.Generator().manual_seed(8)
    uv = noisy_projections(cams, points(50, 1), 1.0, g)
    w = torch.rand(4, 50, generator=g, dtype=F64)
    w[1:, 3] = 0
    uv1 = uv.clone().requires_grad_(True)
    X1 = triangulate(uv1, cams.P, w)
    X1.nan_to_num().sum().backward()
    monkeypatch.setattr(tri, "_CHUNK", 7)
    uv2 = uv.clone().requires_grad_(True)
    X2 = triangulate(uv2, cams.P, w)
    X2.nan_to_num().sum().backward()
    torch.testing.assert_close(X2, X1, equal_nan=True)
    torch.testing.assert_close(uv2.grad, uv1.grad)
    blocked_broadcast_w = triangulate(uv, cams.P, w[:, :1])  # (C, 1) weights, blocked
    monkeypatch.undo()
    torch.testing.assert_close(blocked_broadcast_w, triangulate(uv, cams.P, w[:, :1]))
