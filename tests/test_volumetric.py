"""Tests of mvbook.volumetric: grids, unprojection (against a slow per-voxel loop), aggregation."""

from __future__ import annotations

import math

import pytest
import torch

import mvbook.volumetric as vol
from mvbook.volumetric import aggregate, make_grid, project_grid, unproject

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def look_at_P(eye, target=(0.0, 0.0, 0.0), f=60.0, W=32, H=24) -> torch.Tensor:
    """P = K [R | t] of a camera at ``eye`` looking at ``target`` (world z up)."""
    eye = torch.tensor(eye, dtype=torch.float64)
    z = torch.tensor(target, dtype=torch.float64) - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    t = -R @ eye
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    return K @ torch.cat([R, t[:, None]], dim=1)


def bilinear_zero(fmap: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample of fmap (K, h, w) at map pixel (x, y), zero outside (slow reference)."""
    K, h, w = fmap.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(K, dtype=fmap.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < w and 0 <= yi < h:
                out += wgt * fmap[:, yi, xi]
    return out


def slow_unproject(features, P, grid, image_size):
    """Per batch element, per view, per voxel: project, map to the feature map, sample."""
    B, C, K, h, w = features.shape
    D, H, Wv = grid.shape[1:4]
    Wimg, Himg = image_size
    out = torch.zeros(B, C, K, D, H, Wv, dtype=features.dtype)
    for b in range(B):
        for c in range(C):
            for d in range(D):
                for i in range(H):
                    for j in range(Wv):
                        X = torch.cat([grid[b, d, i, j], torch.ones(1, dtype=grid.dtype)])
                        p = P[b, c] @ X
                        if p[2] <= 0:
                            continue
                        u, v = (p[0] / p[2]).item(), (p[1] / p[2]).item()
                        if not (-0.5 <= u <= Wimg - 0.5 and -0.5 <= v <= Himg - 0.5):
                            continue  # outside the image: zero (and not valid)
                        # image pixel -> feature-map pixel (same extent, pixel-centre convention)
                        fx = (u + 0.5) * w / Wimg - 0.5
                        fy = (v + 0.5) * h / Himg - 0.5
                        out[b, c, :, d, i, j] = bilinear_zero(features[b, c], fx, fy)
    return out


@pytest.fixture
def scene():
    g = torch.Generator().manual_seed(0)
    eyes = [(3000.0, 0.0, 500.0), (0.0, 3000.0, 1500.0), (-2500.0, -2000.0, 800.0)]
    P = torch.stack([look_at_P(e) for e in eyes]).float()
    P = torch.stack([P, P.roll(1, 0)])  # (B=2, C=3, 3, 4)
    features = torch.randn(2, 3, 2, 6, 8, generator=g)  # maps at 1/4 of the 32x24 image
    center = torch.tensor([[0.0, 0.0, 0.0], [100.0, -50.0, 30.0]])
    grid = make_grid(center, 2000.0, 4, yaw=torch.tensor([0.3, -1.1]))
    return features, P, grid


def test_unproject_matches_slow_reference(scene):
    features, P, grid = scene
    fast, valid = unproject(features, P, grid, (32, 24))
    slow = slow_unproject(features, P, grid, (32, 24))
    assert fast.shape == (2, 3, 2, 4, 4, 4)
    assert valid.shape == (2, 3, 4, 4, 4)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    assert valid.any()


def test_unproject_is_one_grid_sample_call(scene, monkeypatch):
    features, P, grid = scene
    calls = []
    real = vol.F.grid_sample

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(vol.F, "grid_sample", counting)
    unproject(features, P, grid, (32, 24))
    assert len(calls) == 1


def test_unproject_behind_camera_is_zero_and_invalid():
    P = look_at_P((3000.0, 0.0, 0.0))[None, None].float()  # (1, 1, 3, 4)
    # a grid centred behind the camera (x = 6000 looking towards -x)
    grid = make_grid(torch.tensor([[6000.0, 0.0, 0.0]]), 500.0, 2)
    volumes, valid = unproject(torch.ones(1, 1, 1, 6, 8), P, grid, (32, 24))
    assert not valid.any()
    assert volumes.abs().max() == 0


def test_unproject_gradients_flow(scene):
    features, P, grid = scene
    features = features.clone().requires_grad_(True)
    volumes, _ = unproject(features, P, grid, (32, 24))
    volumes.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_make_grid_geometry():
    c = torch.tensor([10.0, 20.0, 30.0])
    g = make_grid(c, 1000.0, 4)
    assert g.shape == (4, 4, 4, 3)
    torch.testing.assert_close(g.mean(dim=(0, 1, 2)), c)
    # index [d, h, w] -> local (x_w, y_h, z_d), spacing L / R
    torch.testing.assert_close(g[0, 0, 1] - g[0, 0, 0], torch.tensor([250.0, 0.0, 0.0]))
    torch.testing.assert_close(g[0, 1, 0] - g[0, 0, 0], torch.tensor([0.0, 250.0, 0.0]))
    torch.testing.assert_close(g[1, 0, 0] - g[0, 0, 0], torch.tensor([0.0, 0.0, 250.0]))
    torch.testing.assert_close(g[0, 0, 0], c + torch.tensor([-375.0, -375.0, -375.0]))
    # a yaw of 90 degrees turns local x into world y and keeps z vertical
    r = make_grid(c[None], 1000.0, 4, yaw=torch.tensor([math.pi / 2]))[0]
    torch.testing.assert_close(r[0, 0, 1] - r[0, 0, 0], torch.tensor([0.0, 250.0, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(r[1, 0, 0] - r[0, 0, 0], torch.tensor([0.0, 0.0, 250.0]))
    torch.testing.assert_close(r.mean(dim=(0, 1, 2)), c)


def test_project_grid_nan_behind():
    P = look_at_P((3000.0, 0.0, 0.0))[None].float()
    grid = make_grid(torch.tensor([6000.0, 0.0, 0.0]), 100.0, 2)
    uv, depth = project_grid(grid, P)
    assert uv.shape == (1, 2, 2, 2, 2) and torch.isnan(uv).all() and (depth < 0).all()


def test_aggregate_hand_cases():
    # two views, one channel, one voxel (shape (C=2, K=1, 1, 1, 1))
    a, b = 1.0, 5.0
    v = torch.tensor([a, b]).reshape(2, 1, 1, 1, 1)
    # eq. 8: sum
    assert aggregate(v, "sum").item() == pytest.approx(6.0)
    # eq. 9: (1 * 1 + 3 * 5) / (1 + 3) = 4
    assert aggregate(v, "conf", torch.tensor([1.0, 3.0])).item() == pytest.approx(4.0)
    # per-channel confidences (C, K) give the same here
    assert aggregate(v, "conf", torch.tensor([[1.0], [3.0]])).item() == pytest.approx(4.0)
    # eqs. 10-11: weights e^0 / (e^0 + e^ln3) = 1/4 and 3/4 for values 0 and ln 3
    w = torch.tensor([0.0, math.log(3.0)]).reshape(2, 1, 1, 1, 1)
    assert aggregate(w, "softmax").item() == pytest.approx(0.75 * math.log(3.0))
    # softmax of equal values is their mean; of very different values, close to the max
    assert aggregate(torch.full((3, 1, 1, 1, 1), 2.0), "softmax").item() == pytest.approx(2.0)
    big = torch.tensor([0.0, 50.0]).reshape(2, 1, 1, 1, 1)
    assert aggregate(big, "softmax").item() == pytest.approx(50.0)


def test_aggregate_batched_and_masked():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, 3, 4, 2, 2, 2, generator=g)
    assert aggregate(v, "sum").shape == (2, 4, 2, 2, 2)
    torch.testing.assert_close(aggregate(v, "sum"), v.sum(1))
    d = torch.rand(2, 3, generator=g) + 0.1
    ref = (d[:, :, None, None, None, None] * v).sum(1) / d.sum(1)[:, None, None, None, None]
    torch.testing.assert_close(aggregate(v, "conf", d), ref)
    # the masked softmax ignores invalid views: with only view 0 valid the result is view 0
    valid = torch.zeros(2, 3, 2, 2, 2, dtype=torch.bool)
    valid[:, 0] = True
    torch.testing.assert_close(aggregate(v, "softmax", valid=valid), v[:, 0])
    torch.testing.assert_close(aggregate(v, "conf", d, valid=valid), v[:, 0])


def test_validation_errors():
    with pytest.raises(ValueError, match="mode"):
        aggregate(torch.zeros(2, 1, 1, 1, 1), "max")
    with pytest.raises(ValueError, match="confidences"):
        aggregate(torch.zeros(2, 1, 1, 1, 1), "conf")
    with pytest.raises(ValueError, match="P must"):
        unproject(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 3, 3, 4), torch.zeros(1, 2, 2, 2, 3), (4, 4))
    with pytest.raises(ValueError, match="resolution"):
        make_grid(torch.zeros(3), 100.0, 0)
    with pytest.raises(ValueError, match="center"):
        make_grid(torch.zeros(2), 100.0, 2)


def _crop_rig_192():
    """A Human3.6M-like 192 px crop camera 4.5 m from the subject, the grid of a 2.5 m cube."""
    P = look_at_P((4500.0, 300.0, 1200.0), target=(0.0, 0.0, 900.0), f=300.0, W=192, H=192)
    grid = make_grid(torch.tensor([30.0, -20.0, 900.0]), 2500.0, 16)
    return P.float(), grid


@pytest.mark.parametrize("feature_dtype", [torch.float32, torch.bfloat16])
def test_unproject_samples_in_float32_under_bf16_autocast(feature_dtype):
    # a map whose value is the map column: the volume holds the sampled u of every voxel
    P, grid = _crop_rig_192()
    ramp = torch.arange(192, dtype=torch.float32).expand(1, 1, 1, 192, 192)
    want, want_valid = unproject(ramp, P[None, None], grid[None], (192, 192))
    uv, _ = project_grid(grid.double(), P.double()[None])
    # voxels whose bilinear footprint lies inside the map (at the border it blends with zeros)
    inside = want_valid[0, 0] & ((uv[0] >= 0) & (uv[0] <= 191)).all(-1)
    assert inside.float().mean() > 0.5  # the check reads most of the cube
    torch.testing.assert_close(want[0, 0, 0][inside].double(), uv[0, ..., 0][inside],
                               atol=1e-2, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, valid = unproject(ramp.to(feature_dtype), P[None, None], grid[None], (192, 192))
    assert got.dtype == feature_dtype
    assert torch.equal(valid, want_valid)
    # float32 maps: the sampled position equals float32 projection; bfloat16 maps: only the
    # stored value is rounded (half a unit of bf16 at values up to 191 is 0.5), not the position
    tol = 1e-3 if feature_dtype == torch.float32 else 0.5
    err = (got.float() - want)[0, 0, 0][inside].abs().max()
    assert err <= tol, f"sampled u off by {float(err):.3f} px under autocast"
