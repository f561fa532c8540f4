"""Tests of mvbook.geometry.camera and mvbook.geometry.projection (cross-checked with OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from geometry_helpers import F64, SETTINGS, h36m_like_rig, random_points
from hypothesis import given
from hypothesis import strategies as st

from mvbook.geometry import (
    Camera,
    distort_normalized,
    normalized_to_pixel,
    pixel_to_normalized,
    project_points,
    undistort_normalized,
    undistort_points,
)

DIST = torch.tensor([-0.21, 0.08, 0.0012, -0.0007, -0.02], dtype=F64)
BODY_SPREAD = (250.0, 250.0, 450.0)  # mm, of the random joints around the rig's target


def rig(dist: torch.Tensor | None = DIST, dtype: torch.dtype = F64) -> Camera:
    """Four Human3.6M-like cameras (mm) with principal points and distortion ``dist``."""
    return h36m_like_rig(dist=dist, principal=True, dtype=dtype)


def body_points(n: int = 17, seed: int = 0) -> torch.Tensor:
    """``(n, 3)`` mm: body-sized random points inside the rig."""
    return random_points(n, seed, BODY_SPREAD)


def cv2_project(cam: Camera, X: torch.Tensor) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(cam.R.numpy())
    dist = np.zeros(5) if cam.dist is None else cam.dist.numpy()
    uv, _ = cv2.projectPoints(X.numpy(), rvec, cam.t.numpy(), cam.K.numpy(), dist)
    return uv[:, 0]


# ------------------------------------------------------------------------------ construction
def test_camera_basic_properties():
    cams = rig()
    assert cams.batch_shape == (4,)
    assert len(cams) == 4
    assert cams.dtype == F64 and cams.device.type == "cpu"
    assert cams.P.shape == (4, 3, 4)
    assert cams.image_size.dtype == torch.int64
    torch.testing.assert_close(torch.linalg.det(cams.R), torch.ones(4, dtype=F64))
    torch.testing.assert_close(cams.R @ cams.R.transpose(-1, -2), torch.eye(3, dtype=F64).expand(4, 3, 3))
    # centre projects to nothing: R C + t = 0
    torch.testing.assert_close(cams.world_to_camera(cams.center[:, None])[:, 0], torch.zeros(4, 3, dtype=F64))
    torch.testing.assert_close(cams.focal[0], torch.tensor([1145.0, 1143.0], dtype=F64))
    torch.testing.assert_close(cams.principal[0], torch.tensor([512.5, 515.4], dtype=F64))
    assert "Camera(" in repr(cams)


def test_look_at_orientation():
    cam = Camera.look_at([0.0, -3000, 1000], [0.0, 0, 1000], image_size=(640, 480), focal=500.0,
                         dtype=F64)
    # the target is at the principal point = image centre
    uv = cam.project(torch.tensor([[0.0, 0, 1000]], dtype=F64))
    torch.testing.assert_close(uv, torch.tensor([[319.5, 239.5]], dtype=F64))
    # world up appears up in the image (smaller v), world +x appears right (larger u)
    up = cam.project(torch.tensor([[0.0, 0, 1500]], dtype=F64))
    right = cam.project(torch.tensor([[500.0, 0, 1000]], dtype=F64))
    assert up[0, 1] < 239.5 and right[0, 0] > 319.5
    # one focal length per camera, also for a rig of two; (fx, fy) pairs otherwise
    two = Camera.look_at(torch.tensor([[3000.0, 0, 0], [0, 3000, 0]]), [0.0, 0, 0],
                         focal=torch.tensor([1000.0, 1200.0]))
    torch.testing.assert_close(two.focal, torch.tensor([[1000.0, 1000.0], [1200.0, 1200.0]]))
    pair = Camera.look_at(torch.tensor([[3000.0, 0, 0], [0, 3000, 0]]), [0.0, 0, 0],
                          focal=torch.tensor([[1000.0, 1200.0]]))
    torch.testing.assert_close(pair.focal, torch.tensor([[1000.0, 1200.0], [1000.0, 1200.0]]))
    with pytest.raises(ValueError, match="up"):
        Camera.look_at([0.0, 0, 3000], [0.0, 0, 0])
    with pytest.raises(ValueError, match="eye and target"):
        Camera.look_at([0.0, 0, 3000], [0.0, 0, 3000])


def test_constructor_validation_names_arguments():
    K = torch.eye(3)
    with pytest.raises(ValueError, match="K must have shape"):
        Camera(torch.eye(4), torch.eye(3), torch.zeros(3))
    with pytest.raises(ValueError, match="t must have shape"):
        Camera(K, torch.eye(3), torch.zeros(4))
    with pytest.raises(ValueError, match="dist must have shape"):
        Camera(K, torch.eye(3), torch.zeros(3), dist=torch.zeros(4))
    with pytest.raises(ValueError, match="image_size must be positive"):
        Camera(K, torch.eye(3), torch.zeros(3), image_size=(0, 10))
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        Camera(torch.eye(3).expand(2, 3, 3), torch.eye(3).expand(3, 3, 3), torch.zeros(3))
    with pytest.raises(TypeError, match="K must hold real numbers"):
        Camera(torch.ones(3, 3, dtype=torch.bool), torch.eye(3), torch.zeros(3))
    with pytest.raises(ValueError, match="X must have shape"):
        rig().project(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        rig().project(torch.zeros(3, 5, 3, dtype=F64))


def test_dtype_promotion_and_to():
    cam = Camera(torch.eye(3, dtype=torch.float32), torch.eye(3, dtype=F64), [0, 0, 0])
    assert cam.dtype == F64
    c32 = rig().to(torch.float32)
    assert c32.dtype == torch.float32 and c32.dist.dtype == torch.float32
    assert c32.image_size.dtype == torch.int64
    assert rig().detach().K.requires_grad is False
    # points and camera dtypes promote
    assert rig().project(torch.zeros(1, 3, dtype=torch.float32) + 900).dtype == F64


def test_getitem_and_stack():
    cams = rig()
    assert cams[1].batch_shape == ()
    torch.testing.assert_close(cams[1].K, cams.K[1])
    assert cams[1:3].batch_shape == (2,)
    assert cams[torch.tensor([True, False, True, True])].batch_shape == (3,)
    assert cams[None].batch_shape == (1, 4)
    two = Camera.stack([cams, cams], dim=0)
    assert two.batch_shape == (2, 4)
    assert two[..., 2].batch_shape == (2,)
    torch.testing.assert_close(two[1, 2].R, cams.R[2])
    assert Camera.stack([cams, cams], dim=-1).batch_shape == (4, 2)
    mixed = Camera.stack([cams[0], Camera(cams.K[1], cams.R[1], cams.t[1], None, cams.image_size[1])])
    torch.testing.assert_close(mixed.dist[1], torch.zeros(5, dtype=F64))
    with pytest.raises(IndexError):
        cams[0][0]
    with pytest.raises(ValueError, match="one batch shape"):
        Camera.stack([cams, cams[0]])


def test_from_sample():
    cams = rig()
    sample = {"K": cams.K.float(), "R": cams.R.float(), "t": cams.t.float(),
              "dist": cams.dist.float(), "image_size": cams.image_size}
    cam = Camera.from_sample(sample)
    assert cam.batch_shape == (4,) and cam.dtype == torch.float32
    with pytest.raises(ValueError, match="missing key 'K'"):
        Camera.from_sample({"R": 1})


# ------------------------------------------------------------------------------ projection
def test_project_matches_opencv_with_distortion():
    cams = rig()
    X = body_points(50)
    uv = cams.project(X)  # (4, 50, 2)
    for c in range(4):
        ref = cv2_project(cams[c], X)
        np.testing.assert_allclose(uv[c].numpy(), ref, rtol=1e-6, atol=1e-9)
    uv_nd = cams.project(X, distort=False)
    for c in range(4):
        ref = cv2_project(Camera(cams.K[c], cams.R[c], cams.t[c]), X)
        np.testing.assert_allclose(uv_nd[c].numpy(), ref, rtol=1e-6, atol=1e-9)


def test_project_points_function_and_P_agree():
    cams = rig(dist=None)
    X = body_points(20)
    uv = project_points(X, cams.K, cams.R, cams.t)
    Xh = torch.cat([X, torch.ones(20, 1, dtype=F64)], -1)
    uvw = Xh @ cams.P.transpose(-1, -2)
    torch.testing.assert_close(uv, uvw[..., :2] / uvw[..., 2:])
    uv2, depth = project_points(X, cams.K, cams.R, cams.t, return_depth=True)
    torch.testing.assert_close(depth, cams.world_to_camera(X)[..., 2])
    with pytest.raises(ValueError, match="R must have shape"):
        project_points(X, cams.K, cams.R[..., :2], cams.t)


def test_broadcast_views_and_joints():
    cams = rig()
    X = body_points(17)[None].expand(6, 17, 3)  # (batch, J, 3)
    uv = cams.project(X[:, None])  # (6, C, J, 2)
    assert uv.shape == (6, 4, 17, 2)
    torch.testing.assert_close(uv[3, 2], cams[2].project(X[3]))
    # a batch of rigs (B, C) with points (B, 1, J, 3)
    rigs = Camera.stack([cams, cams], dim=0)
    assert rigs.project(X[:2, None]).shape == (2, 4, 17, 2)


def test_points_behind_camera_are_reported_not_projected():
    cam = rig()[0]
    X = body_points(5)
    behind = cam.center - 500 * cam.R[2]  # 500 mm behind the camera, on its axis
    Xall = torch.cat([X, behind[None]], dim=0).requires_grad_(True)
    uv, depth = cam.project_with_depth(Xall)
    assert torch.isfinite(uv[:5]).all()
    assert torch.isnan(uv[5:]).all()
    torch.testing.assert_close(depth[5], torch.tensor(-500.0, dtype=F64))
    # exactly on the camera plane (depth 0) is reported too
    simple = Camera(torch.eye(3, dtype=F64), torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64))
    assert torch.isnan(simple.project(torch.tensor([[1.0, 2.0, 0.0]], dtype=F64))).all()
    # gradients of the valid points are finite and the reported ones get zero
    uv[:5].sum().backward()
    assert torch.isfinite(Xall.grad).all()
    assert (Xall.grad[5:] == 0).all()


def test_project_gradients_gradcheck():
    cams = rig()
    X = body_points(3).requires_grad_(True)
    K = cams.K.clone().requires_grad_(True)
    dist = cams.dist.clone().requires_grad_(True)
    f = lambda X, K, d: project_points(X, K, cams.R, cams.t, d)
    assert torch.autograd.gradcheck(f, (X, K, dist))


@SETTINGS
@given(
    x=st.floats(-0.6, 0.6), y=st.floats(-0.6, 0.6),
    k1=st.floats(-0.3, 0.3), k2=st.floats(-0.1, 0.1), p1=st.floats(-0.003, 0.003),
    p2=st.floats(-0.003, 0.003), k3=st.floats(-0.02, 0.02),
)
def test_distort_undistort_round_trip(x, y, k1, k2, p1, p2, k3):
    dist = torch.tensor([k1, k2, p1, p2, k3], dtype=F64)
    xn = torch.tensor([[x, y]], dtype=F64)
    xd = distort_normalized(xn, dist)
    back = undistort_normalized(xd, dist)
    torch.testing.assert_close(back, xn, atol=1e-9, rtol=0)


def test_undistort_points_matches_opencv():
    cams = rig()
    X = body_points(40)
    uv = cams.project(X)
    for c in range(4):
        cam = cams[c]
        ref_px = cv2.undistortPoints(uv[c].numpy()[:, None], cam.K.numpy(), cam.dist.numpy(), None,
                                     cam.K.numpy(), criteria=(3, 200, 1e-15))[:, 0]
        ref_n = cv2.undistortPoints(uv[c].numpy()[:, None], cam.K.numpy(), cam.dist.numpy(),
                                    criteria=(3, 200, 1e-15))[:, 0]
        mine = undistort_points(uv[c], cam.K, cam.dist)
        np.testing.assert_allclose(mine.numpy(), ref_px, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(undistort_points(uv[c], cam.K, cam.dist, normalized=True).numpy(),
                                   ref_n, rtol=1e-6, atol=1e-9)
        # undistorted pixels are the pinhole projection
        torch.testing.assert_close(cam.undistort_points(uv[c]), cam.project(X, distort=False),
                                   atol=1e-8, rtol=0)
    assert undistort_points(uv[0], cams.K[0], None) is not None
    with pytest.raises(ValueError, match="iterations"):
        undistort_normalized(uv[0], cams.dist[0], iterations=-1)


def test_pixel_normalized_helpers():
    K = rig().K[0]
    xn = torch.tensor([[0.1, -0.2], [0.0, 0.0]], dtype=F64)
    uv = normalized_to_pixel(xn, K)
    torch.testing.assert_close(uv[1], K[:2, 2])
    torch.testing.assert_close(pixel_to_normalized(uv, K), xn)


# ------------------------------------------------------------------------------ back-projection
@SETTINGS
@given(u=st.floats(0, 999), v=st.floats(0, 1001), depth=st.floats(200, 20000),
       c=st.integers(0, 3))
def test_pixel_depth_round_trip(u, v, depth, c):
    cam = rig()[c]
    uv = torch.tensor([[u, v]], dtype=F64)
    X = cam.pixel_to_world(uv, torch.tensor([depth], dtype=F64))
    uv2, d2 = cam.project_with_depth(X)
    torch.testing.assert_close(uv2, uv, atol=1e-6, rtol=0)
    torch.testing.assert_close(d2, torch.tensor([depth], dtype=F64), atol=1e-6, rtol=1e-9)


@SETTINGS
@given(u=st.floats(0, 999), v=st.floats(0, 1001), s=st.floats(100, 10000), c=st.integers(0, 3))
def test_pixel_to_ray_round_trip(u, v, s, c):
    cam = rig()[c]
    uv = torch.tensor([[u, v]], dtype=F64)
    origin, direction = cam.pixel_to_ray(uv)
    torch.testing.assert_close(direction.norm(dim=-1), torch.ones(1, dtype=F64))
    torch.testing.assert_close(origin[0], cam.center)
    X = origin + s * direction
    torch.testing.assert_close(cam.project(X), uv, atol=1e-6, rtol=0)


def test_world_camera_round_trip_and_rays_batched():
    cams = rig()
    X = body_points(9)
    Xc = cams.world_to_camera(X)
    torch.testing.assert_close(cams.camera_to_world(Xc), X.expand(4, 9, 3))
    torch.testing.assert_close(cams.camera_to_pixel(Xc), cams.project(X))
    uv = cams.project(X)
    o, d = cams.pixel_to_ray(uv)
    assert o.shape == d.shape == (4, 9, 3)
    # X lies on its rays
    dist_to_ray = torch.linalg.cross(X - o, d).norm(dim=-1)
    assert dist_to_ray.max() < 1e-6


# ------------------------------------------------------------------------------ from_projection
def test_from_projection_recovers_camera_and_matches_opencv():
    cams = rig(dist=None)
    for scale in (1.0, -2.5, 1e-3):
        rec = Camera.from_projection(cams.P * scale, image_size=cams.image_size)
        torch.testing.assert_close(rec.K, cams.K)
        torch.testing.assert_close(rec.R, cams.R)
        torch.testing.assert_close(rec.t, cams.t)
    for c in range(4):
        K, R, C, *_ = cv2.decomposeProjectionMatrix(cams.P[c].numpy())
        np.testing.assert_allclose(K / K[2, 2], cams.K[c].numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(R, cams.R[c].numpy(), atol=1e-9)
        np.testing.assert_allclose((C[:3] / C[3])[:, 0], cams.center[c].numpy(), rtol=1e-6)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_from_projection_random(seed):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(3, 4, generator=g, dtype=F64)
    cam = Camera.from_projection(P)
    diag = torch.diagonal(cam.K)
    assert (diag > 0).all()
    assert float(torch.linalg.det(cam.R)) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(torch.tril(cam.K, -1), torch.zeros(3, 3, dtype=F64), atol=1e-12)
    ratio = cam.P / P
    torch.testing.assert_close(ratio, ratio[0, 0].expand(3, 4), rtol=1e-6, atol=1e-9)


def test_from_projection_rejects_singular():
    P = torch.zeros(3, 4)
    P[:, 3] = 1.0
    with pytest.raises(ValueError, match="non-singular"):
        Camera.from_projection(P)
    with pytest.raises(ValueError, match="P must have shape"):
        Camera.from_projection(torch.zeros(3, 3))


# ------------------------------------------------------------------------------ crop / resize
@SETTINGS
@given(x0=st.floats(-50, 400), y0=st.floats(-50, 400), w=st.floats(20, 600), h=st.floats(20, 600),
       out=st.integers(16, 300))
def test_crop_then_project_equals_project_then_crop(x0, y0, w, h, out):
    cams = rig()
    X = body_points(8)
    uv = cams.project(X)
    box = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=F64)
    cropped = cams.crop(box)
    torch.testing.assert_close(cropped.project(X), uv - box[:2])
    assert cropped.image_size[0].tolist() == [round(w), round(h)]
    # crop and resize (Honari et al. eq. 6 with pixel centres at integers)
    cr = cams.crop(box, output_size=(out, out))
    s = torch.tensor([out / w, out / h], dtype=F64)
    torch.testing.assert_close(cr.project(X), (uv - box[:2] + 0.5) * s - 0.5)
    assert cr.image_size[0].tolist() == [out, out]


def test_resize_matches_pixel_grid_scaling():
    cams = rig()
    X = body_points(8)
    uv = cams.project(X)
    small = cams.resize((250, 167))
    s = torch.tensor([250 / 1000, 167 / 1002], dtype=F64)
    torch.testing.assert_close(small.project(X), (uv + 0.5) * s - 0.5)
    # the image centre stays the centre
    c = torch.tensor([[999 / 2, 1001 / 2]], dtype=F64)
    torch.testing.assert_close((c + 0.5) * s - 0.5, torch.tensor([[249 / 2, 166 / 2]], dtype=F64))
    with pytest.raises(ValueError, match="image_size"):
        Camera(torch.eye(3), torch.eye(3), torch.zeros(3)).resize((10, 10))
    with pytest.raises(ValueError, match="box must have x1 > x0"):
        cams.crop([10, 10, 5, 20])


def test_crop_batched_boxes_and_gradients():
    cams = rig()
    boxes = torch.tensor([[0.0, 0, 500, 500], [100, 100, 400, 500], [10, 20, 30, 40],
                          [0, 0, 1000, 1002]], dtype=F64, requires_grad=True)
    cr = cams.crop(boxes, output_size=(128, 128))
    uv = cr.project(body_points(4))
    uv.sum().backward()
    assert boxes.grad is not None and torch.isfinite(boxes.grad).all()


def test_float32_projection_close_to_float64():
    X = body_points(30)
    uv64 = rig().project(X)
    uv32 = rig(dtype=torch.float32).project(X.float())
    assert uv32.dtype == torch.float32
    assert (uv32.double() - uv64).abs().max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_projection_matches_cpu():
    cams = rig()
    X = body_points(30)
    uv = cams.to("cuda").project(X.cuda())
    assert uv.device.type == "cuda"
    torch.testing.assert_close(uv.cpu(), cams.project(X))
    o, d = cams.to("cuda").pixel_to_ray(uv)
    torch.testing.assert_close(d.cpu(), cams.pixel_to_ray(uv.cpu())[1])
