"""Tests of mvbook.geometry.epipolar, cross-checked with kornia and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from geometry_helpers import F64, SETTINGS, h36m_like_rig, noisy_projections, random_points
from hypothesis import given
from hypothesis import strategies as st
from kornia.geometry import epipolar as KE

from mvbook.geometry import (
    epipolar_distance,
    epipolar_lines,
    fundamental_from_cameras,
    fundamental_from_projections,
    point_line_distance,
    sampson_distance,
    symmetric_epipolar_distance,
)


def rel_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-6) -> None:
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rel, atol=0)


# ------------------------------------------------------------------------------ fundamental
def test_fundamental_matches_kornia_and_is_normalized():
    cams = h36m_like_rig()
    Fk = KE.fundamental_from_projections(cams.P[:, None].expand(4, 4, 3, 4).reshape(-1, 3, 4),
                                         cams.P[None].expand(4, 4, 3, 4).reshape(-1, 3, 4))
    Fk = Fk.reshape(4, 4, 3, 3)
    F = fundamental_from_cameras(cams[:, None], cams[None, :])  # all pairs (4, 4)
    assert F.shape == (4, 4, 3, 3)
    for a in range(4):
        for b in range(4):
            if a == b:
                assert (F[a, b] == 0).all()  # coincident centres
                continue
            ref = Fk[a, b] / Fk[a, b].norm()
            np.testing.assert_allclose(F[a, b].numpy(), ref.numpy(), rtol=1e-6, atol=1e-12)
            assert float(F[a, b].norm()) == pytest.approx(1.0)
            assert abs(float(torch.linalg.det(F[a, b]))) < 1e-12  # rank 2
    torch.testing.assert_close(fundamental_from_projections(cams.P[0], cams.P[1]), F[0, 1])


def test_fundamental_matches_essential_construction_and_opencv():
    cams = h36m_like_rig()
    a, b = cams[0], cams[2]
    R_rel = b.R @ a.R.T
    t_rel = b.t - R_rel @ a.t
    tx = torch.tensor([[0, -t_rel[2], t_rel[1]], [t_rel[2], 0, -t_rel[0]], [-t_rel[1], t_rel[0], 0]],
                      dtype=F64)
    F_ref = torch.linalg.inv(b.K).T @ tx @ R_rel @ torch.linalg.inv(a.K)
    F_ref = F_ref / F_ref.norm()
    F = fundamental_from_cameras(a, b)
    sign = torch.sign((F * F_ref).sum())
    np.testing.assert_allclose(F.numpy(), (sign * F_ref).numpy(), rtol=1e-6, atol=1e-12)
    # OpenCV's 8-point estimate from exact correspondences agrees up to scale
    X = random_points(60, 1)
    ua, ub = a.project(X), b.project(X)
    Fcv, _ = cv2.findFundamentalMat(ua.numpy(), ub.numpy(), cv2.FM_8POINT)
    Fcv = torch.tensor(Fcv / np.linalg.norm(Fcv))
    Fcv = Fcv * torch.sign((Fcv * F).sum())
    torch.testing.assert_close(Fcv, F, atol=1e-6, rtol=0)


@SETTINGS
@given(seed=st.integers(0, 10_000), a=st.integers(0, 3), b=st.integers(0, 3))
def test_true_correspondences_have_zero_epipolar_error(seed, a, b):
    if a == b:
        return
    cams = h36m_like_rig()
    X = random_points(20, seed)
    ua, ub = cams[a].project(X), cams[b].project(X)
    F = fundamental_from_cameras(cams[a], cams[b])
    assert epipolar_distance(ua, ub, F).max() < 1e-6
    assert sampson_distance(ua, ub, F, squared=False).max() < 1e-6
    assert symmetric_epipolar_distance(ua, ub, F, squared=False).max() < 1e-6
    # the epipolar line of ua passes through ub, and lines are normalized
    lines = epipolar_lines(F, ua)
    torch.testing.assert_close(lines[..., :2].norm(dim=-1), torch.ones(20, dtype=F64))
    assert point_line_distance(ub, lines).max() < 1e-6


# ------------------------------------------------------------------------------ distances
def noisy_pairs(seed: int = 0):
    cams = h36m_like_rig()
    g = torch.Generator().manual_seed(seed)
    X = random_points(100, seed)
    ua = noisy_projections(cams[0], X, 3.0, g)
    ub = noisy_projections(cams[1], X, 3.0, g)
    return ua, ub, fundamental_from_cameras(cams[0], cams[1])


@pytest.mark.parametrize("squared", [True, False])
def test_distances_match_kornia(squared):
    ua, ub, F = noisy_pairs()
    rel_close(sampson_distance(ua, ub, F, squared=squared),
              KE.sampson_epipolar_distance(ua[None], ub[None], F[None], squared=squared)[0])
    rel_close(symmetric_epipolar_distance(ua, ub, F, squared=squared),
              KE.symmetrical_epipolar_distance(ua[None], ub[None], F[None], squared=squared)[0])
    # invariant to the scale of F
    rel_close(sampson_distance(ua, ub, -1e6 * F, squared=squared),
              sampson_distance(ua, ub, F, squared=squared), rel=1e-9)


def test_point_line_distance_definitions():
    ua, ub, F = noisy_pairs(1)
    # Yu et al. eq. 1 written out
    xa = torch.cat([ua, torch.ones(100, 1, dtype=F64)], -1)
    xb = torch.cat([ub, torch.ones(100, 1, dtype=F64)], -1)
    Fx = xa @ F.T
    ref = (xb * Fx).sum(-1).abs() / Fx[:, :2].norm(dim=-1)
    rel_close(epipolar_distance(ua, ub, F), ref, rel=1e-9)
    rel_close(point_line_distance(ub, Fx), ref, rel=1e-9)  # unnormalized lines work too
    # symmetric = sum of the two squared one-sided distances
    rel_close(symmetric_epipolar_distance(ua, ub, F),
              epipolar_distance(ua, ub, F) ** 2 + epipolar_distance(ub, ua, F.T) ** 2, rel=1e-9)
    # a horizontal line v = 3: distance |v - 3|
    line = torch.tensor([[0.0, 2.0, -6.0]], dtype=F64)
    torch.testing.assert_close(point_line_distance(torch.tensor([[5.0, 7.0]], dtype=F64), line),
                               torch.tensor([4.0], dtype=F64))
    # degenerate line a = b = 0 is infinitely far
    assert torch.isinf(point_line_distance(torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0, 1]])))


def test_batched_broadcasting_and_gradients():
    cams = h36m_like_rig()
    X = random_points(10, 2)
    uv = cams.project(X)  # (4, 10, 2)
    F = fundamental_from_cameras(cams[:, None], cams[None, :])  # (4, 4, 3, 3)
    d = sampson_distance(uv[:, None], uv[None, :], F)  # (4, 4, 10)
    assert d.shape == (4, 4, 10) and d.max() < 1e-10
    lines = epipolar_lines(F[0, 1], uv[0])
    assert lines.shape == (10, 3)
    ua = uv[0].clone().requires_grad_(True)
    sampson_distance(ua, uv[1], F[0, 1], squared=False).sum().backward()
    assert torch.isfinite(ua.grad).all()  # zero-distance matches give zero, not NaN, gradients
    ua2 = (uv[0] + 1.0).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda u: symmetric_epipolar_distance(u, uv[1], F[0, 1], squared=False), (ua2,))
    Pa = cams.P[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda P: sampson_distance(ua2, uv[1], fundamental_from_projections(P, cams.P[1])), (Pa,))


def test_validation_errors():
    ua, ub, F = noisy_pairs()
    with pytest.raises(ValueError, match="F must have shape"):
        sampson_distance(ua, ub, F[:2])
    with pytest.raises(ValueError, match="uv_b must have shape"):
        sampson_distance(ua, ub[:, :1], F)
    with pytest.raises(ValueError, match="do not broadcast"):
        sampson_distance(ua, ub[:7], F)
    with pytest.raises(ValueError, match="P_a must have shape"):
        fundamental_from_projections(torch.zeros(3, 3), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="cam_a must be a Camera"):
        fundamental_from_cameras(torch.zeros(3, 4), h36m_like_rig())
    with pytest.raises(ValueError, match="lines must have shape"):
        point_line_distance(ua, ub)


def test_float32():
    ua, ub, F = noisy_pairs()
    d32 = sampson_distance(ua.float(), ub.float(), F.float())
    assert d32.dtype == torch.float32
    P = h36m_like_rig().P
    F32 = fundamental_from_projections(P[0].float(), P[1].float())
    assert F32.dtype == torch.float32
    assert (F32.double() - F).abs().max() < 1e-5
    torch.testing.assert_close(d32.double(), sampson_distance(ua, ub, F), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    ua, ub, F = noisy_pairs()
    d = symmetric_epipolar_distance(ua.cuda(), ub.cuda(), F.cuda())
    torch.testing.assert_close(d.cpu(), symmetric_epipolar_distance(ua, ub, F))
    P = h36m_like_rig().P
    Fc = fundamental_from_projections(P[0].cuda(), P[1].cuda())
    torch.testing.assert_close(Fc.cpu(), F)
