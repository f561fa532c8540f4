from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mvbook.heatmaps import (
    argmax_2d,
    argmax_3d,
    pixel_coordinates,
    render_gaussian_2d,
    render_gaussian_3d,
    soft_argmax_2d,
    soft_argmax_3d,
)


def _grid(
    d: int, h: int, w: int, spacing: float = 10.0, origin=(0.0, 0.0, 0.0), dtype=torch.float64
):
    z, y, x = torch.meshgrid(
        torch.arange(d, dtype=dtype),
        torch.arange(h, dtype=dtype),
        torch.arange(w, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([x, y, z], dim=-1) * spacing + torch.tensor(origin, dtype=dtype)


# ------------------------------------------------------------------------------ rendering 2D
def test_render_2d_matches_loop_reference():
    torch.manual_seed(0)
    pts = torch.rand(2, 3, 2, dtype=torch.float64) * torch.tensor([11.0, 7.0])
    sig = torch.tensor([1.0, 1.5, 2.5], dtype=torch.float64)
    out = render_gaussian_2d(pts, (11, 7), sig)
    assert out.shape == (2, 3, 7, 11)
    ref = torch.zeros_like(out)
    for b in range(2):
        for j in range(3):
            for v in range(7):
                for u in range(11):
                    d2 = (u - pts[b, j, 0]) ** 2 + (v - pts[b, j, 1]) ** 2
                    ref[b, j, v, u] = math.exp(-float(d2) / (2 * float(sig[j]) ** 2))
    torch.testing.assert_close(out, ref)


def test_render_2d_peak_at_pixel_centre_and_normalize():
    pts = torch.tensor([[3.0, 5.0]])
    out = render_gaussian_2d(pts, (8, 9), 1.0)
    assert out[0, 5, 3] == 1.0
    assert out[0].argmax() == 5 * 8 + 3
    norm = render_gaussian_2d(pts, (8, 9), 1.0, normalize=True)
    torch.testing.assert_close(norm.sum(dim=(-2, -1)), torch.ones(1))
    torch.testing.assert_close(norm, out / out.sum())


def test_render_2d_nonfinite_points_give_zero_maps():
    pts = torch.tensor([[float("nan"), 2.0], [1.0, 1.0], [float("inf"), 0.0]], requires_grad=True)
    out = render_gaussian_2d(pts, (5, 4), 1.0, normalize=True)
    assert torch.all(out[0] == 0) and torch.all(out[2] == 0) and out[1].sum() > 0.99
    out.sum().backward()
    assert torch.isfinite(pts.grad).all()


def test_render_2d_gradcheck():
    pts = torch.tensor([[[2.3, 3.7], [5.1, 1.2]]], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([1.3, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, s: render_gaussian_2d(p, (7, 6), s), (pts, sigma))
    assert torch.autograd.gradcheck(
        lambda p: render_gaussian_2d(p, (7, 6), 1.5, normalize=True), (pts,)
    )


def test_render_2d_validation():
    with pytest.raises(ValueError, match="points"):
        render_gaussian_2d(torch.zeros(3, 3), (4, 4), 1.0)
    with pytest.raises(TypeError, match="points"):
        render_gaussian_2d(torch.zeros(3, 2, dtype=torch.int64), (4, 4), 1.0)
    with pytest.raises(ValueError, match="image_size"):
        render_gaussian_2d(torch.zeros(3, 2), (4, 0), 1.0)
    with pytest.raises(ValueError, match="image_size"):
        render_gaussian_2d(torch.zeros(3, 2), (4, 4, 4), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        render_gaussian_2d(torch.zeros(3, 2), (4, 4), 0.0)
    with pytest.raises(ValueError, match="sigma"):
        render_gaussian_2d(torch.zeros(3, 2), (4, 4), torch.ones(4))
    with pytest.raises(TypeError, match="points"):
        render_gaussian_2d([[0.0, 0.0]], (4, 4), 1.0)


def test_pixel_coordinates():
    u, v = pixel_coordinates((3, 2))
    assert u.tolist() == [0, 1, 2] and v.tolist() == [0, 1]


# ------------------------------------------------------------------------------ soft-argmax 2D
def test_soft_argmax_2d_matches_loop_reference():
    torch.manual_seed(1)
    h = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    out = soft_argmax_2d(h, beta=2.5)
    for b in range(2):
        for j in range(3):
            e = torch.exp(2.5 * h[b, j])
            p = e / e.sum()
            x = sum(float(p[v, u]) * u for v in range(5) for u in range(6))
            y = sum(float(p[v, u]) * v for v in range(5) for u in range(6))
            assert out[b, j, 0].item() == pytest.approx(x, abs=1e-12)
            assert out[b, j, 1].item() == pytest.approx(y, abs=1e-12)
    # normalize=False: centre of mass of non-negative weights
    w = h.abs()
    com = soft_argmax_2d(w, normalize=False)
    u, v = pixel_coordinates((6, 5), dtype=torch.float64)
    ref_u = (w * u).sum((-2, -1)) / w.sum((-2, -1))
    ref_v = (w * v[:, None]).sum((-2, -1)) / w.sum((-2, -1))
    torch.testing.assert_close(com, torch.stack([ref_u, ref_v], -1))


def test_soft_argmax_2d_large_beta_is_argmax_and_stable():
    h = torch.zeros(1, 1, 4, 5)
    h[0, 0, 2, 3] = 1.0
    out = soft_argmax_2d(h, beta=1e4)  # would overflow without a stable softmax
    torch.testing.assert_close(out, torch.tensor([[[3.0, 2.0]]]))
    coords, vals = argmax_2d(h)
    torch.testing.assert_close(coords, torch.tensor([[[3.0, 2.0]]]))
    torch.testing.assert_close(vals, torch.tensor([[1.0]]))


def test_soft_argmax_2d_tensor_beta_per_joint():
    torch.manual_seed(2)
    h = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    beta = torch.tensor([0.5, 1.0, 7.0], dtype=torch.float64)
    out = soft_argmax_2d(h, beta=beta)
    for j in range(3):
        torch.testing.assert_close(
            out[:, j], soft_argmax_2d(h[:, j : j + 1], beta=float(beta[j]))[:, 0]
        )


@pytest.mark.parametrize("sigma,beta", [(4.0, 50.0), (5.0, 100.0)])
def test_soft_argmax_2d_subpixel_on_rendered_gaussians(sigma, beta):
    gen = torch.Generator().manual_seed(3)
    pts = 16 + torch.rand(64, 2, generator=gen, dtype=torch.float64) * 32  # away from the border
    heat = render_gaussian_2d(pts, (64, 64), sigma)
    err = (soft_argmax_2d(heat, beta=beta) - pts).abs().max()
    assert err < 0.05
    # centre of mass of the rendered blob (normalize=False) is also unbiased
    err_com = (soft_argmax_2d(heat, normalize=False) - pts).abs().max()
    assert err_com < 0.05


@settings(max_examples=20, deadline=None)
@given(
    x=st.floats(12.0, 36.0),
    y=st.floats(12.0, 28.0),
    sigma=st.floats(2.0, 4.0),
)
def test_soft_argmax_2d_roundtrip_hypothesis(x, y, sigma):
    pts = torch.tensor([[x, y]], dtype=torch.float64)
    heat = render_gaussian_2d(pts, (48, 40), sigma, normalize=True)
    assert (soft_argmax_2d(heat, normalize=False) - pts).abs().max() < 0.05
    # softmax of the log of a Gaussian is the normalised Gaussian itself
    logh = torch.log(render_gaussian_2d(pts, (48, 40), sigma))
    assert (soft_argmax_2d(logh, beta=1.0) - pts).abs().max() < 0.05


def test_soft_argmax_2d_gradcheck():
    torch.manual_seed(4)
    h = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_argmax_2d(x, beta=3.0), (h,))
    w = (torch.rand(1, 2, 3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: soft_argmax_2d(x, normalize=False), (w,))


def test_render_then_soft_argmax_gradient_flows_to_points():
    pts = torch.tensor([[20.3, 17.6]], dtype=torch.float64, requires_grad=True)
    out = soft_argmax_2d(render_gaussian_2d(pts, (40, 40), 4.0), beta=50.0)
    out.sum().backward()
    # d(readout)/d(point) is close to the identity
    torch.testing.assert_close(pts.grad, torch.ones_like(pts), atol=0.05, rtol=0)


def test_soft_argmax_2d_validation():
    with pytest.raises(ValueError, match="heatmaps"):
        soft_argmax_2d(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="heatmaps"):
        soft_argmax_2d(torch.zeros(1, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="beta"):
        soft_argmax_2d(torch.zeros(1, 4, 4), beta="x")
    with pytest.raises(ValueError, match="heatmaps"):
        argmax_2d(torch.zeros(4, 4))


def test_argmax_2d_matches_loop():
    torch.manual_seed(5)
    h = torch.randn(3, 2, 5, 7)
    coords, vals = argmax_2d(h)
    for b in range(3):
        for j in range(2):
            m = h[b, j]
            best = max(((m[v, u].item(), u, v) for v in range(5) for u in range(7)))
            assert vals[b, j].item() == best[0]
            assert coords[b, j].tolist() == [best[1], best[2]]


# ------------------------------------------------------------------------------ 3D
def test_render_3d_matches_loop_and_broadcasts_grid():
    grid = _grid(3, 4, 5)
    pts = torch.tensor([[[12.0, 7.0, 3.0], [40.0, 30.0, 20.0]]], dtype=torch.float64)
    vol = render_gaussian_3d(pts, grid, 8.0)
    assert vol.shape == (1, 2, 3, 4, 5)
    for j in range(2):
        for d in range(3):
            for h in range(4):
                for w in range(5):
                    d2 = float(((grid[d, h, w] - pts[0, j]) ** 2).sum())
                    assert vol[0, j, d, h, w].item() == pytest.approx(
                        math.exp(-d2 / 128.0), rel=1e-12
                    )
    norm = render_gaussian_3d(pts, grid, 8.0, normalize=True)
    torch.testing.assert_close(norm.sum((-3, -2, -1)), torch.ones(1, 2, dtype=torch.float64))
    nan_pts = pts.clone()
    nan_pts[0, 1, 0] = float("nan")
    assert torch.all(render_gaussian_3d(nan_pts, grid, 8.0)[0, 1] == 0)


def test_render_3d_gradcheck():
    grid = _grid(2, 3, 3)
    pts = torch.tensor([[11.0, 9.0, 4.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: render_gaussian_3d(p, grid, 10.0), (pts,))


def test_soft_argmax_3d_matches_loop_reference_and_roundtrip():
    torch.manual_seed(6)
    grid = _grid(3, 4, 5, origin=(-20.0, 5.0, 100.0))
    v = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    out = soft_argmax_3d(v, grid, beta=1.7)
    for b in range(2):
        for j in range(2):
            e = torch.exp(1.7 * v[b, j])
            p = e / e.sum()
            ref = sum(
                p[d, h, w] * grid[d, h, w] for d in range(3) for h in range(4) for w in range(5)
            )
            torch.testing.assert_close(out[b, j], ref)
    # round trip on a rendered Gaussian (normalize=False: centre of mass)
    big = _grid(16, 16, 16, spacing=10.0)
    pts = torch.tensor([[71.3, 64.9, 80.2], [55.5, 90.1, 60.0]], dtype=torch.float64)
    vol = render_gaussian_3d(pts, big, 12.0)
    assert (soft_argmax_3d(vol, big, normalize=False) - pts).abs().max() < 0.05
    assert (soft_argmax_3d(torch.log(vol), big, beta=1.0) - pts).abs().max() < 0.05
    # hard argmax on the grid
    coords, vals = argmax_3d(vol, big)
    torch.testing.assert_close(
        coords, torch.tensor([[70.0, 60.0, 80.0], [60.0, 90.0, 60.0]], dtype=torch.float64)
    )
    assert vals.shape == (2,)


def test_soft_argmax_3d_gradcheck():
    torch.manual_seed(7)
    grid = _grid(2, 3, 2)
    v = torch.randn(1, 2, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_argmax_3d(x, grid, beta=2.0), (v,))


def test_batched_grid_per_sample():
    # one grid per sample (e.g. a cuboid centred on each person)
    grids = torch.stack([_grid(4, 4, 4), _grid(4, 4, 4, origin=(500.0, 0.0, 0.0))])
    pts = torch.tensor([[[15.0, 15.0, 15.0]], [[515.0, 15.0, 15.0]]], dtype=torch.float64)
    vol = render_gaussian_3d(pts, grids, 5.0)
    assert vol.shape == (2, 1, 4, 4, 4)
    out = soft_argmax_3d(vol, grids, normalize=False)
    torch.testing.assert_close(out, pts, atol=1e-6, rtol=0)
    coords, _ = argmax_3d(vol, grids)
    assert coords.shape == (2, 1, 3)


def test_3d_validation():
    grid = _grid(2, 2, 2)
    with pytest.raises(ValueError, match="grid"):
        soft_argmax_3d(torch.zeros(1, 2, 2, 3), grid)
    with pytest.raises(ValueError, match="volumes"):
        soft_argmax_3d(torch.zeros(2, 2, 2, dtype=torch.float64), grid)
    with pytest.raises(ValueError, match="points"):
        render_gaussian_3d(torch.zeros(2, 2, dtype=torch.float64), grid, 1.0)
    with pytest.raises(ValueError, match="grid"):
        render_gaussian_3d(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 2, 3), 1.0)
    with pytest.raises(ValueError, match="grid"):
        argmax_3d(torch.zeros(1, 2, 2, 3), grid)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pts = torch.tensor([[10.2, 7.7]])
    heat = render_gaussian_2d(pts, (32, 24), 3.0)
    heat_cuda = render_gaussian_2d(pts.to("cuda"), (32, 24), 3.0)
    torch.testing.assert_close(heat_cuda.cpu(), heat)
    torch.testing.assert_close(
        soft_argmax_2d(heat_cuda, beta=50.0).cpu(), soft_argmax_2d(heat, beta=50.0)
    )


def test_refine_argmax_recovers_sub_pixel_gaussian_centres():
    from mvbook.heatmaps import refine_argmax_2d

    g = torch.Generator().manual_seed(0)
    pts = torch.rand(500, 3, 2, generator=g, dtype=torch.float64) * 26 + 3
    heat = render_gaussian_2d(pts, (32, 32), 1.5) * 0.8
    uv, peak = refine_argmax_2d(heat)
    torch.testing.assert_close(uv, pts, atol=1e-6, rtol=0)
    hard, _ = argmax_2d(heat)
    assert float((hard - pts).abs().max()) > 0.4  # the hard argmax alone is off by up to 1/2 px
    assert torch.allclose(peak, heat.flatten(-2).amax(-1))


def test_refine_argmax_keeps_border_and_flat_peaks_on_their_pixel():
    from mvbook.heatmaps import refine_argmax_2d

    heat = torch.zeros(2, 8, 8)
    heat[0, 0, 5] = 1.0  # at the top border: no step in v, no neighbours in u either
    heat[1] = 0.5  # flat: the first pixel, no step
    uv, _ = refine_argmax_2d(heat)
    torch.testing.assert_close(uv, torch.tensor([[5.0, 0.0], [0.0, 0.0]]))


def test_soft_argmax_errors_match_a_per_map_loop_and_pick_the_right_temperature():
    from mvbook.heatmaps import soft_argmax_errors

    g = torch.Generator().manual_seed(0)
    n, j, h = 5, 3, 16
    truth = 3 + 10 * torch.rand(n, j, 2, generator=g, dtype=torch.float64)
    vv, uu = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(h, dtype=torch.float64),
                            indexing="ij")
    # MSE-like heatmaps: Gaussian peaks of height 1 (sigma 1.5 px) on a little noise
    d2 = (uu - truth[..., 0, None, None]) ** 2 + (vv - truth[..., 1, None, None]) ** 2
    heat = torch.exp(-d2 / (2 * 1.5**2)) + 0.02 * torch.rand(n, j, h, h, generator=g, dtype=torch.float64)
    vis = torch.ones(n, j, dtype=torch.bool)
    vis[0, 1] = False
    betas = (1.0, 20.0, 1000.0)
    got = soft_argmax_errors(heat, truth, vis, betas, chunk=2)
    for beta in betas:  # slow reference: one map at a time
        errs = []
        for a in range(n):
            for b in range(j):
                if not vis[a, b]:
                    continue
                w = torch.softmax(beta * heat[a, b].flatten(), 0).view(h, h)
                est = torch.stack([(w * uu).sum(), (w * vv).sum()])
                errs.append(float((est - truth[a, b]).norm()))
        assert got[beta] == pytest.approx(sum(errs) / len(errs), rel=1e-4)
    # beta 1 is pulled to the map centre, beta 1000 snaps to pixel centres: 20 is best
    assert min(got, key=got.get) == 20.0
    with pytest.raises(ValueError, match="joints2d"):
        soft_argmax_errors(heat, truth[:, :2], vis, betas)
    with pytest.raises(ValueError, match="visib"):
        soft_argmax_errors(heat, truth, torch.zeros(n, j, dtype=torch.bool), betas)
