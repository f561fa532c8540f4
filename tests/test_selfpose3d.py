"""Tests of chapter 50 (SelfPose3d): geometry of the augmentations and of the space, synthetic
roots, matching, the losses, and short trainings, each against an independent reference."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
import torch

from mvbook.data.fixtures import look_at_rig
from mvbook.heatmaps import refine_argmax_2d, render_gaussian_2d
from mvbook.methods import selfpose3d as sp
from mvbook.volumetric import unproject

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGE = (96, 64)  # (W, H)


def rig(num_views: int = 4, image_size=IMAGE) -> torch.Tensor:
    """``P (C, 3, 4)`` of pinhole cameras on a circle looking at (0, 0, 900)."""
    K, R, t, _ = look_at_rig(num_views, image_size, radius=4500.0, focal=0.8 * image_size[0])
    P = np.einsum("cij,cjk->cik", K, np.concatenate([R, t[..., None]], -1))
    return torch.tensor(P, dtype=torch.float32)


def small_config(**kw) -> sp.Config:
    base = dict(space_size=(3000.0, 3000.0, 2000.0), space_shape=(16, 16, 8), root_levels=1,
                root_width=4, cuboid_resolution=8, pose_levels=1, pose_width=4, max_people=4,
                backbone=sp.Config().attention_backbone, heatmap_sigma=1.5, num_joints=5)
    base.update(kw)
    return sp.Config(**base)


# ----------------------------------------------------------------------- augmentations
def test_affine_matrix_formula_and_inverse():
    r, s = torch.tensor([0.3, -0.7]), torch.tensor([1.2, 0.8])
    T = sp.affine_matrices(r, s, IMAGE)
    c = torch.tensor([(IMAGE[0] - 1) / 2, (IMAGE[1] - 1) / 2])
    u = torch.tensor([[10.0, 5.0], [50.0, 40.0]])
    for i in range(2):
        rot = torch.tensor([[math.cos(r[i]), -math.sin(r[i])], [math.sin(r[i]), math.cos(r[i])]])
        expected = (s[i] * (rot @ (u - c).T)).T + c
        torch.testing.assert_close(sp.apply_affine(T[i], u), expected)
    assert torch.allclose(sp.affine_matrices(torch.zeros(()), torch.ones(()), IMAGE), torch.eye(3))


def test_random_affines_ranges_are_the_papers():
    T = sp.random_affines(4000, IMAGE, generator=torch.Generator().manual_seed(0))
    scale = torch.linalg.det(T[:, :2, :2]).sqrt()
    angle = torch.rad2deg(torch.atan2(T[:, 1, 0], T[:, 0, 0]))
    assert 0.65 <= float(scale.min()) < 0.67 and 1.33 < float(scale.max()) <= 1.35
    assert -45 <= float(angle.min()) < -44 and 44 < float(angle.max()) <= 45


def test_warp_images_matches_opencv_and_moves_peaks():
    g = torch.Generator().manual_seed(1)
    T = sp.random_affines(3, IMAGE, generator=g)
    img = torch.rand(3, 3, IMAGE[1], IMAGE[0], generator=g)
    out = sp.warp_images(img, T)
    for i in range(3):
        ref = cv2.warpAffine(img[i].permute(1, 2, 0).numpy(), T[i, :2].numpy(), IMAGE,
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        inner = (slice(4, -4), slice(4, -4))  # OpenCV's border handling differs by one pixel
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy()[inner], ref[inner], atol=2e-3)
    # a Gaussian at p becomes a Gaussian at T p
    p = torch.tensor([[40.3, 30.6]])
    blob = render_gaussian_2d(p, IMAGE, 3.0)  # (1, H, W)
    warped = sp.warp_images(blob.expand(3, -1, -1)[None], T[:1])[0, :1]
    peak, _ = refine_argmax_2d(warped)
    torch.testing.assert_close(peak, sp.apply_affine(T[0], p), atol=0.15, rtol=0)


def test_projection_under_augmentation_equals_transformed_projection():
    P = rig()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(3, 5, 3, generator=g) * 300 + torch.tensor([0.0, 0.0, 900.0])
    TA, TB = sp.random_affines((2, 4), IMAGE, generator=g)
    # the 3D pose from augmentation A projected with B's transform ...
    yB = sp.project(sp.augment_projections(TB, P), X.reshape(15, 3))  # (C, 15, 2)
    # ... equals B's transform applied to the plain projection (a slow reference per point)
    for c in range(4):
        for n, x in enumerate(X.reshape(15, 3)):
            h = P[c] @ torch.cat([x, torch.ones(1)])
            uv = h[:2] / h[2]
            expected = TB[c, :2, :2] @ uv + TB[c, :2, 2]
            torch.testing.assert_close(yB[c, n], expected, atol=1e-3, rtol=1e-5)
    # and composing A then B^-1... A: an augmentation and its inverse give the plain projection
    back = sp.apply_affine(torch.linalg.inv(TA), sp.project(sp.augment_projections(TA, P), X[0]))
    torch.testing.assert_close(back, sp.project(P, X[0]), atol=1e-3, rtol=1e-5)


def test_heatmap_pixel_maps_are_inverse_and_centred():
    uv = torch.tensor([[-0.5, -0.5], [95.5, 63.5], [10.0, 20.0]])
    h = sp.image_to_heatmap(uv, IMAGE, (24, 16))
    torch.testing.assert_close(h[:2], torch.tensor([[-0.5, -0.5], [23.5, 15.5]]))
    torch.testing.assert_close(sp.heatmap_to_image(h, IMAGE, (24, 16)), uv)


# ------------------------------------------------------------------------------- space
def test_space_grid_against_loop():
    grid = sp.space_grid((100.0, -50.0, 800.0), (4000.0, 2000.0, 1000.0), (4, 2, 5))
    assert grid.shape == (5, 2, 4, 3)
    for k, j, i in itertools.product(range(5), range(2), range(4)):
        expected = [100 + (i + 0.5) * 1000 - 2000, -50 + (j + 0.5) * 1000 - 1000,
                    800 + (k + 0.5) * 200 - 500]
        assert grid[k, j, i].tolist() == pytest.approx(expected)


def test_synthetic_roots_project_to_rendered_peaks():
    P = rig()
    g = torch.Generator().manual_seed(3)
    roots, valid = sp.synthetic_roots(6, 1, (0.0, 0.0), (2000.0, 2000.0), (600.0, 1100.0), g)
    assert valid.all() and (roots[..., 2] >= 600).all() and (roots[..., 2] <= 1100).all()
    assert (roots[..., :2].abs() <= 1000).all()
    heat = sp.render_root_heatmaps(roots, valid, P.expand(6, -1, -1, -1), IMAGE, (48, 32), 1.5)
    peak, _ = refine_argmax_2d(heat[:, :, 0])  # (6, C, 2) heatmap px
    for b, c in itertools.product(range(6), range(4)):  # a slow projection per root and view
        h = P[c] @ torch.cat([roots[b, 0], torch.ones(1)])
        uv = (h[:2] / h[2] + 0.5) * 0.5 - 0.5
        if (uv > 1).all() and (uv < torch.tensor([46.0, 30.0])).all():
            torch.testing.assert_close(peak[b, c], uv, atol=0.05, rtol=0)


def test_synthetic_roots_counts_and_noise():
    g = torch.Generator().manual_seed(4)
    roots, valid = sp.synthetic_roots(500, 4, (0.0, 0.0), (1000.0, 1000.0), (0.0, 1.0), g)
    counts = valid.sum(-1)
    assert set(counts.tolist()) == {1, 2, 3, 4}
    assert (valid == (torch.arange(4) < counts[:, None])).all()
    P = rig().expand(2, -1, -1, -1)
    r, v = roots[:2], valid[:2]
    clean = sp.render_root_heatmaps(r, v, P, IMAGE, (48, 32), 1.5)
    noisy = sp.render_root_heatmaps(r, v, P, IMAGE, (48, 32), 1.5, jitter=1.0, min_peak=0.5,
                                    drop=0.3, generator=g)
    assert clean.amax() <= 1 and noisy.amax() <= 1 and not torch.allclose(clean, noisy)


def test_root_targets_and_nms_against_loop():
    grid = sp.space_grid((0.0, 0.0, 800.0), (3000.0, 3000.0, 2000.0), (12, 12, 8))
    roots = torch.tensor([[[-1000.0, 500.0, 700.0], [800.0, -600.0, 1000.0], [0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    G = sp.root_targets(roots, valid, grid, 200.0)
    # reference: max over the two valid Gaussians, voxel by voxel
    d1 = ((grid - roots[0, 0]) ** 2).sum(-1)
    d2 = ((grid - roots[0, 1]) ** 2).sum(-1)
    torch.testing.assert_close(G[0], torch.maximum(torch.exp(-d1 / 8e4), torch.exp(-d2 / 8e4)))
    G = G + 0.01 * torch.rand(G.shape, generator=torch.Generator().manual_seed(0))
    found, scores, ok = sp.nms_3d(G, grid, k=5, threshold=0.3)
    # reference: every voxel that is the maximum of its 3x3x3 neighbourhood, by loops
    peaks = []
    D, H, W = G.shape[1:]
    for z, y, x in itertools.product(range(D), range(H), range(W)):
        nb = G[0, max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
        if G[0, z, y, x] >= nb.max():
            peaks.append((float(G[0, z, y, x]), grid[z, y, x]))
    peaks.sort(key=lambda p: -p[0])
    for i in range(5):
        assert float(scores[0, i]) == pytest.approx(peaks[i][0])
        torch.testing.assert_close(found[0, i], peaks[i][1])
    assert ok[0].tolist() == [s > 0.3 for s, _ in peaks[:5]]
    assert int(ok.sum()) == 2
    for r in roots[0, :2]:
        assert (found[0, :2] - r).norm(dim=-1).min() < 200


def test_view_average_equals_mean_of_unprojected_views():
    P = rig(3)[None]
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(1, 3, 2, 16, 24, generator=g)
    grid = sp.space_grid((0.0, 0.0, 900.0), (30000.0, 30000.0, 1000.0), (8, 8, 2))[None]
    out = sp.view_average(maps, P, grid, IMAGE)
    vols, valid = unproject(maps, P, grid, IMAGE)
    n = valid.sum(1)  # (1, D, H, W)
    ref = torch.zeros(1, 2, *grid.shape[1:4])
    for c in range(3):
        ref += vols[:, c]
    ref = torch.where(n[:, None] > 0, ref / n[:, None].clamp_min(1), torch.zeros_like(ref))
    torch.testing.assert_close(out, ref.clamp(0, 1))
    assert bool((n == 0).any()) and bool((n == 3).any())


def test_root_volume_of_true_heatmaps_finds_the_roots():
    """Unprojecting true root heatmaps and 3D NMS locate the roots of a scene (no training):
    the input the root net learns from carries the answer."""
    cfg = small_config()
    P = rig(5)
    model = sp.SelfPose3dNet(cfg, IMAGE, (0.0, 0.0, 900.0))
    roots = torch.tensor([[[-700.0, 400.0, 900.0], [600.0, -500.0, 850.0], [100, 900, 950]]])
    heat = sp.render_root_heatmaps(roots, torch.ones(1, 3, dtype=torch.bool), P[None],
                                   IMAGE, model.heatmap_size, 1.5)
    F_root = sp.view_average(heat, P[None], model.grid, IMAGE)[:, 0]
    found, scores, ok = sp.nms_3d(F_root, model.grid, k=3, threshold=0.5)
    assert ok.all()
    voxel = max(cfg.space_voxel)
    for r in roots[0]:
        assert float((found[0] - r).norm(dim=-1).min()) < voxel


# ----------------------------------------------------------------------------- matching
def test_hungarian_equals_brute_force():
    rng = np.random.default_rng(0)
    for P, Q in itertools.product(range(1, 5), range(1, 5)):
        for _ in range(5):
            cost = rng.uniform(0, 10, (P, Q))
            m = sp.hungarian_match(cost)
            ref, ref_cost = sp.brute_force_match(cost)
            total = sum(cost[i, j] for i, j in enumerate(m) if j >= 0)
            assert total == pytest.approx(ref_cost)
            assert (m >= 0).sum() == min(P, Q)
            if len(set(np.round(cost.ravel(), 12))) == cost.size:
                assert (m == ref).all()


def test_brute_force_match_by_hand():
    cost = np.array([[1.0, 2.0], [2.0, 10.0], [0.5, 9.0]])
    m, c = sp.brute_force_match(cost)
    assert m.tolist() == [1, -1, 0] and c == pytest.approx(2.5)


def test_match_views_against_brute_force_loop():
    g = torch.Generator().manual_seed(6)
    B, C, P, Q, J = 2, 3, 3, 4, 5
    pred = torch.rand(B, C, P, J, 2, generator=g) * 20
    target = torch.rand(B, C, Q, J, 2, generator=g) * 20
    tvalid = torch.rand(B, C, Q, J, generator=g) > 0.2
    tvalid[0, 0, 3] = False  # an undetected person
    pvalid = torch.tensor([[True, True, False], [True, True, True]])
    matched, mask = sp.match_views(pred, pvalid, target, tvalid)
    for b, c in itertools.product(range(B), range(C)):
        rows = [p for p in range(P) if pvalid[b, p]]
        cols = [q for q in range(Q) if tvalid[b, c, q].any()]
        cost = np.zeros((len(rows), len(cols)))
        for i, p in enumerate(rows):
            for k, q in enumerate(cols):
                w = tvalid[b, c, q]
                cost[i, k] = float((pred[b, c, p] - target[b, c, q]).abs().mean(-1)[w].mean())
        ref, _ = sp.brute_force_match(cost)
        for i, p in enumerate(rows):
            q = cols[ref[i]]
            assert mask[b, c, p].tolist() == tvalid[b, c, q].tolist()
            torch.testing.assert_close(matched[b, c, p][mask[b, c, p]],
                                       target[b, c, q][tvalid[b, c, q]])
        for p in range(P):
            if not pvalid[b, p]:
                assert not mask[b, c, p].any()


def test_joint_loss_hard_attention_drops_the_worst_view():
    g = torch.Generator().manual_seed(7)
    B, C, P, J = 2, 4, 2, 3
    pred = torch.rand(B, C, P, J, 2, generator=g) * 10
    matched = torch.rand(B, C, P, J, 2, generator=g) * 10
    mask = torch.rand(B, C, P, J, generator=g) > 0.3
    mask[1, 2] = False  # a view without any match
    for hard in (False, True):
        per_frame = []
        for b in range(B):
            views = []
            for c in range(C):
                m = mask[b, c]
                if m.any():
                    views.append(float((pred[b, c] - matched[b, c]).abs().mean(-1)[m].mean()))
            if hard:
                views.remove(max(views))
            per_frame.append(sum(views) / len(views))
        got = sp.joint_loss(pred, matched, mask, hard_attention=hard)
        assert float(got) == pytest.approx(sum(per_frame) / B, rel=1e-5)


# ------------------------------------------------------------------------------- losses
def test_rendered_heatmaps_are_differentiable_in_3d():
    P = rig(2)
    X = torch.tensor([[[0.0, 0.0, 900.0], [100.0, 50.0, 1200.0]]], requires_grad=True)
    y = sp.project(P, X.reshape(2, 3)).reshape(2, 1, 2, 2)  # (C, P, J, 2)
    H = sp.render_poses(y, torch.ones(2, 1, 2, dtype=torch.bool), IMAGE, (48, 32), 1.5)
    target = sp.render_poses(y.detach() + 1.0, torch.ones(2, 1, 2, dtype=torch.bool), IMAGE,
                             (48, 32), 1.5)
    loss = sp.heatmap_loss(H, target)
    loss.backward()
    assert torch.isfinite(X.grad).all() and X.grad.abs().sum() > 0
    # the maximum over persons, and invalid persons render nothing
    two = torch.stack([y[:, 0], y[:, 0] + 5], 1)
    both = sp.render_poses(two, torch.tensor([[[True, True], [False, False]]] * 2), IMAGE,
                           (48, 32), 1.5)
    torch.testing.assert_close(both, sp.render_poses(y, torch.ones(2, 1, 2, dtype=torch.bool),
                                                     IMAGE, (48, 32), 1.5).detach())


def test_attention_losses_by_hand():
    H = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    Hs = torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    A = torch.tensor([[0.5, 1.0], [2.0, 0.0]])
    assert float(sp.heatmap_loss(H, Hs)) == pytest.approx((1 + 1) / 4)
    assert float(sp.heatmap_loss(H, Hs, A)) == pytest.approx((0.5 * 1 + 0 * 1) / 4)
    assert float(sp.attention_regulariser(A)) == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    G0 = torch.ones(1, 2, 2, 2, requires_grad=True)
    loss = sp.root_consistency_loss(G0, torch.zeros(1, 2, 2, 2), 2 * torch.ones(1, 2, 2, 2))
    assert float(loss) == pytest.approx(2.0)
    assert not loss.requires_grad  # the baseline G^0 is a target


def test_config_and_settings_validation():
    with pytest.raises(ValueError, match="supervision"):
        sp.Config(supervision="weak")
    with pytest.raises(ValueError, match="cuboid_resolution"):
        sp.Config(cuboid_resolution=10, pose_levels=2)
    with pytest.raises(ValueError, match="root_joints"):
        sp.Config(root_joints=(17,))
    for profile in ("smoke", "quick", "full"):
        plan = sp.settings(profile)
        assert set(plan.steps) == set(sp.STAGES)
    assert sp.settings("full").config.cuboid_resolution == 64
    assert sp.settings("full", data="/data/panoptic").config.space_shape == (80, 80, 20)
    plan = sp.settings("quick").replace(**sp.ABLATIONS["no_cross_view"])
    assert plan.config.cross_view is False and plan.config.affine is True
    assert sp.settings("quick").replace(**sp.ABLATIONS["supervised"]).pseudo == "gt"
    with pytest.raises(ValueError, match="unknown settings"):
        sp.settings("quick").replace(bogus=1)
    shelf = sp.for_skeleton(sp.settings("full", data="/data/shelf"), "shelf14", 14)
    assert shelf.config.root_joints == (2, 3) and shelf.config.num_joints == 14
    assert shelf.pretrained == "none"  # the zoo's pose2d has h36m17 joints
    assert sp.for_skeleton(sp.settings("quick"), "h36m17", 17).pretrained == "pose2d"
    assert sp.settings("full", data="/data/campus").config.space_size == (12000.0, 12000.0, 2000.0)
    with pytest.raises(ValueError, match="root joints"):
        sp.for_skeleton(sp.settings("quick"), "test5", 5)


def test_space_center_from_cameras():
    P = rig(5)
    c = sp.space_center_from_cameras(P, 800.0)
    assert c[0] == pytest.approx(0.0, abs=1.0) and c[1] == pytest.approx(0.0, abs=1.0)
    assert c[2] == 800.0


# ---------------------------------------------------------------------------- pseudo data
def test_read_pseudo_round_trip_and_errors(tmp_path):
    uv = np.random.default_rng(0).uniform(0, 50, (3, 2, 4, 5, 2)).astype(np.float32)
    scores = np.random.default_rng(1).uniform(0, 1, (3, 2, 4, 5))
    f = tmp_path / "pseudo.npz"
    np.savez(f, index=np.array([7, 3, 9]), joints2d=uv, scores=scores)
    got, ok = sp.read_pseudo(f, [9, 7], num_views=2, num_joints=5, threshold=0.5)
    np.testing.assert_array_equal(got.numpy(), uv[[2, 0]])
    np.testing.assert_array_equal(ok.numpy(), scores[[2, 0]] >= 0.5)
    with pytest.raises(ValueError, match="no poses for samples"):
        sp.read_pseudo(f, [1], num_views=2, num_joints=5)
    with pytest.raises(ValueError, match="joints2d"):
        sp.read_pseudo(f, [9], num_views=3, num_joints=5)
    with pytest.raises(FileNotFoundError, match="pseudo"):
        sp.read_pseudo(tmp_path / "none.npz", [9], num_views=2, num_joints=5)


# ------------------------------------------------------------------------------ training
def _scene_set(n: int = 6, views: int = 4, people: int = 2, seed: int = 0) -> sp.SceneSet:
    """Frames of people with 5 joints (joint 0 the root) seen by the test rig; their 2D labels
    are the true projections; images are noise (the tests below train from cached heatmaps
    rendered from the labels, i.e. a perfect 2D network)."""
    g = torch.Generator().manual_seed(seed)
    P = rig(views)
    centre = (torch.rand(n, people, 1, 3, generator=g) - 0.5) * torch.tensor([1800.0, 1800.0, 0])
    body = torch.tensor([[0, 0, 900.0], [0, 0, 1500], [150, 0, 1300], [-150, 0, 1300],
                         [0, 0, 300]])
    X = centre + body + 30 * torch.randn(n, people, 5, 3, generator=g)
    uv = sp.project(P.expand(n, -1, -1, -1), X.reshape(n, people * 5, 3)).reshape(
        n, views, people, 5, 2)
    return sp.SceneSet({
        "images": torch.randint(0, 255, (n, views, 3, IMAGE[1], IMAGE[0]), generator=g,
                                dtype=torch.uint8),
        "P": P.expand(n, -1, -1, -1).clone(), "pseudo2d": uv,
        "pseudo_valid": torch.ones(n, views, people, 5, dtype=torch.bool),
        "joints3d": X, "joint_valid": torch.ones(n, people, 5, dtype=torch.bool),
        "person_valid": torch.ones(n, people, dtype=torch.bool),
    }, IMAGE, "custom")


def _perfect_bank(model, data: sp.SceneSet, augmentations: int, seed: int = 0) -> sp.SceneSet:
    """A heatmap bank of a perfect 2D network: the labels rendered in each augmented view."""
    g = torch.Generator().manual_seed(seed)
    N, C = data.tensors["P"].shape[:2]
    T = sp.random_affines((N, augmentations), IMAGE, generator=g)
    T = torch.cat([torch.eye(3).expand(N, 1, 3, 3), T], 1)[:, :, None].expand(-1, -1, C, 3, 3)
    uv = sp.apply_affine(T[:, :, :, None], data.tensors["pseudo2d"][:, None])
    valid = data.tensors["pseudo_valid"][:, None].expand(-1, augmentations + 1, -1, -1, -1)
    root, rv = sp.roots_of(uv, valid, model.config.root_joints)
    uv = torch.cat([uv, root[..., None, :]], -2)
    valid = torch.cat([valid, rv[..., None]], -1)
    heat = sp.render_poses(uv, valid, IMAGE, model.heatmap_size, model.config.heatmap_sigma)
    return data.replace(heat=heat.half(), T=T.contiguous())


def _plan(cfg: sp.Config, steps: int) -> sp.Settings:
    return sp.Settings(config=cfg, steps={s: steps for s in sp.STAGES},
                       batch={s: 2 for s in sp.STAGES},
                       lr={"backbone": 1e-3, "root": 3e-3, "pose": 3e-3, "finetune": 1e-3},
                       augmentations=3, pretrained="none")


def _losses(history) -> np.ndarray:
    return history.series("loss")[1]


def test_short_root_training_lowers_the_loss_and_finds_roots():
    cfg = small_config()
    data = _scene_set(n=8)
    torch.manual_seed(0)
    model = sp.SelfPose3dNet(cfg, IMAGE, (0.0, 0.0, 900.0))
    feed = _perfect_bank(model, data, 3)
    hist = sp.fit(model, "root", feed, _plan(cfg, 150), device="cpu", progress=False)
    loss = _losses(hist)
    assert loss[-5:].mean() < 0.5 * loss[:3].mean()
    feed = sp.with_proposals(model, feed)
    found, ok = feed.tensors["proposals"], feed.tensors["proposal_valid"]
    roots = data.tensors["joints3d"][:, :, 0]
    d = (found[:, :, None] - roots[:, None]).norm(dim=-1)  # (N, K, G)
    nearest = torch.where(ok[..., None], d, torch.full_like(d, 1e9)).amin(1)  # per true root
    assert float((nearest < 300).float().mean()) >= 0.75, nearest


@pytest.mark.parametrize("supervision", ["self", "3d"])
def test_short_pose_training_lowers_the_loss(supervision):
    cfg = small_config(supervision=supervision, soft_attention=supervision == "self")
    data = _scene_set(n=4)
    torch.manual_seed(0)
    model = sp.SelfPose3dNet(cfg, IMAGE, (0.0, 0.0, 900.0))
    feed = _perfect_bank(model, data, 3)
    roots = data.tensors["joints3d"][:, :, 0]
    K = cfg.max_people
    props = torch.zeros(4, K, 3)
    props[:, :2] = roots + 50.0
    valid = torch.zeros(4, K, dtype=torch.bool)
    valid[:, :2] = True
    feed = feed.replace(proposals=props, proposal_valid=valid)
    stages = ("pose", "finetune") if supervision == "self" else ("pose",)
    for stage in stages:
        hist = sp.fit(model, stage, feed, _plan(cfg, 40), device="cpu", progress=False)
        loss = _losses(hist)
        assert loss[-4:].mean() < loss[:3].mean(), (stage, loss)
    res = sp.evaluate(model, feed, pcp=False)
    assert set(res) >= {"AP@25", "AP@150", "Recall@500", "MPJPE", "root AP@100", "proposals"}


def test_pipeline_end_to_end_on_noise_images():
    """Every stage runs with the 2D network trained and cached in the loop (tiny sizes)."""
    cfg = small_config()
    data = _scene_set(n=4)
    torch.manual_seed(0)
    plan = _plan(cfg, 2)
    model, feed, hist = sp.train_pipeline(plan, data, device="cpu", progress=False)
    assert set(hist) == set(sp.STAGES)
    assert "heat" in feed.tensors and "proposals" in feed.tensors
    assert feed.tensors["heat"].shape[:3] == (4, 4, 4)
    out = sp.predict(model, data)
    assert out["poses"].shape == (4, cfg.max_people, 5, 3)
    # an ablation continues from the trained 2D and root networks
    abl = sp.with_config(model, plan.replace(**sp.ABLATIONS["no_attention"]).config)
    assert abl.attention is None
    torch.testing.assert_close(abl.root_net.state_dict()["output.weight"],
                               model.root_net.state_dict()["output.weight"])


def test_prepare_reads_a_converted_dataset_with_every_label_source(tmp_path):
    """The real-data path: a folder of the common format (as converted Panoptic, Shelf, Campus)
    with ground-truth, noisy and external pseudo 2D labels."""
    from mvbook.data.fixtures import synthetic_samples
    from mvbook.data.format import MultiviewDataset, write_dataset

    samples = list(synthetic_samples(4, 3, 2, 5, (64, 48), optional=("joints3d_valid",)))
    root = write_dataset(tmp_path / "ds", samples, skeleton="test5", dataset="synthetic",
                         camera_names=["a", "b", "c"], splits={"train": ["S1", "S9"]})
    ds = MultiviewDataset(root)
    cfg = small_config()
    gt = sp.prepare(ds, cfg, "gt", progress=False)
    assert gt.image_size == (64, 48) and len(gt) == 4
    s = ds[1]
    P = s["K"] @ torch.cat([s["R"], s["t"][:, :, None]], -1)
    torch.testing.assert_close(gt.tensors["P"][1], P)
    uv, vis = s["joints2d"], gt.tensors["pseudo_valid"][1]
    torch.testing.assert_close(gt.tensors["pseudo2d"][1][vis], uv[vis])
    assert not vis[:, ~s["person_valid"]].any()  # padded persons carry no label
    noisy = sp.prepare(ds, cfg, "noise", noise_px=3.0, occluded_px=3.0, progress=False)
    d = (noisy.tensors["pseudo2d"] - gt.tensors["pseudo2d"])[gt.tensors["pseudo_valid"]]
    assert 2.0 < float(d.std()) < 4.0
    # external pseudo poses, indexed by the dataset's sample index, in reverse order
    f = tmp_path / "pseudo.npz"
    np.savez(f, index=np.arange(4)[::-1].copy(),
             joints2d=gt.tensors["pseudo2d"].numpy()[::-1] + 1.0,
             valid=gt.tensors["pseudo_valid"].numpy()[::-1])
    ext = sp.prepare(ds, cfg, str(f), progress=False)
    torch.testing.assert_close(ext.tensors["pseudo2d"], gt.tensors["pseudo2d"] + 1.0)
    with pytest.raises(ValueError, match="pseudo"):
        sp.prepare(ds, cfg, "detector", progress=False)
    with pytest.raises(ValueError, match="num_joints"):
        sp.prepare(ds, small_config(num_joints=17), "gt", progress=False)


def test_residual_networks_start_from_the_view_averaged_volumes():
    from mvbook.heatmaps import soft_argmax_3d
    from mvbook.volumetric import make_grid

    cfg = small_config(residual=True)
    P = rig(3)[None]
    model = sp.SelfPose3dNet(cfg, IMAGE, (0.0, 0.0, 900.0)).eval()
    g = torch.Generator().manual_seed(8)
    heat = torch.rand(1, 3, 6, *model.heatmap_size[::-1], generator=g)
    with torch.no_grad():
        G = model.root_volume(heat[:, :, 5:], P)
        torch.testing.assert_close(G, sp.view_average(heat[:, :, 5:], P, model.grid, IMAGE)[:, 0])
        root = torch.tensor([[100.0, -200.0, 900.0]])
        Y = model.pose(heat[:, :, :5], P, root)
        grid = make_grid(root, cfg.cuboid_size, cfg.cuboid_resolution)
        vol = sp.view_average(heat[:, :, :5], P, grid, IMAGE)
        torch.testing.assert_close(Y, soft_argmax_3d(vol * cfg.pose_beta, grid))


def test_input_heatmaps_rendered_from_detections():
    """heatmap_source="poses": each view's heatmaps are Gaussians at its detections seen through
    the augmentation, scaled by their scores, the root at the mean of the root joints."""
    cfg = small_config(heatmap_source="poses", root_joints=(1, 2))
    model = sp.SelfPose3dNet(cfg, IMAGE, (0.0, 0.0, 900.0))
    g = torch.Generator().manual_seed(9)
    uv = torch.rand(2, 3, 2, 5, 2, generator=g) * torch.tensor([90.0, 60.0])
    score = torch.rand(2, 3, 2, 5, generator=g)
    score[0, 1, 1] = 0.0  # a person not detected in one view
    T = sp.random_affines((2, 2), IMAGE, generator=g)[:, :, None].expand(2, 2, 3, 3, 3)
    heat = sp.render_input_heatmaps(model, uv, score, T)
    w, h = model.heatmap_size
    assert heat.shape == (2, 2, 3, 6, h, w)
    for n, a, c in itertools.product(range(2), range(2), range(3)):
        ref = torch.zeros(6, h, w)
        for q in range(2):
            pts = sp.image_to_heatmap(sp.apply_affine(T[n, a, c], uv[n, c, q]), IMAGE, (w, h))
            root = pts[[1, 2]].mean(0, keepdim=True)
            s = torch.cat([score[n, c, q], score[n, c, q, [1, 2]].min()[None]])
            maps = render_gaussian_2d(torch.cat([pts, root]), (w, h), cfg.heatmap_sigma)
            ref = torch.maximum(ref, maps * s[:, None, None])
        torch.testing.assert_close(heat[n, a, c], ref, atol=1e-5, rtol=1e-5)


def test_pipeline_with_heatmaps_from_detections():
    cfg = small_config(heatmap_source="poses", residual=True, v2v_norm="group")
    data = _scene_set(n=4)
    data = data.replace(input2d=data.tensors["pseudo2d"] + 0.5,
                        input_score=torch.full(data.tensors["pseudo_valid"].shape, 0.9))
    torch.manual_seed(0)
    model, feed, hist = sp.train_pipeline(_plan(cfg, 2), data, device="cpu", progress=False)
    assert "backbone" not in hist and {"root", "pose", "finetune"} <= set(hist)
    assert feed.tensors["heat"].shape[1] == 4  # the unaugmented views and 3 copies
    res = sp.evaluate(model, data)  # the test set's heatmaps are rendered on the fly
    assert 0 <= res["Recall@500"] <= 100 and "PCP" not in res
    with pytest.raises(ValueError, match="skeleton"):
        sp.evaluate(model, data, pcp=True)  # PCP needs a skeleton convertible to shelf14


def test_evaluate_wiring_on_perfect_and_shifted_predictions():
    """evaluate() on given predictions: perfect poses give AP 100, MPJPE 0, root AP 100, PCP 100
    (h36m17 converted to shelf14, actors 1-3, an absent actor counting 0); a false positive
    with a lower score leaves AP unchanged."""
    g = torch.Generator().manual_seed(10)
    N, G, J = 3, 2, 17
    gt = torch.randn(N, G, J, 3, generator=g) * 300 + torch.tensor([0.0, 0.0, 900.0])
    data = sp.SceneSet({"images": torch.zeros(N, 1, 3, 4, 4, dtype=torch.uint8),
                        "joints3d": gt, "joint_valid": torch.ones(N, G, J, dtype=torch.bool),
                        "person_valid": torch.ones(N, G, dtype=torch.bool)}, (4, 4), "h36m17")
    model = sp.SelfPose3dNet(sp.Config(), (64, 64), (0.0, 0.0, 800.0))
    K = 4
    poses = torch.full((N, K, J, 3), float("nan"))
    poses[:, :G] = gt
    poses[:, G] = gt[:, 0] + 2000.0  # a false positive
    valid = torch.zeros(N, K, dtype=torch.bool)
    valid[:, :G + 1] = True
    scores = torch.tensor([0.9, 0.8, 0.1, 0.0]).expand(N, K)
    pred = {"poses": poses, "roots": poses[:, :, 0], "scores": scores, "valid": valid}
    res = sp.evaluate(model, data, prediction=pred, pcp=True)
    assert res["AP@25"] == pytest.approx(100.0) and res["MPJPE"] == pytest.approx(0.0)
    assert res["root AP@50"] == pytest.approx(100.0)
    assert res["proposals"] == pytest.approx(3.0)
    assert res["PCP actor 1"] == pytest.approx(100.0) and res["PCP actor 2"] == pytest.approx(100.0)
    assert res["PCP"] == pytest.approx(200.0 / 3)  # actor 3 absent: 0, as VoxelPose
    shifted = dict(pred, poses=poses + torch.tensor([0.0, 0.0, 60.0]))
    res = sp.evaluate(model, data, prediction=shifted, pcp=False)
    assert res["AP@50"] == 0.0 and res["AP@75"] == pytest.approx(100.0)
    assert res["MPJPE"] == pytest.approx(60.0, rel=1e-4)


def test_ablation_reuses_the_2d_and_root_networks_and_swaps_labels():
    cfg = small_config(heatmap_source="poses", residual=True, v2v_norm="group")
    data = _scene_set(n=4)
    data = data.replace(input2d=data.tensors["pseudo2d"] + 0.5,
                        input_score=torch.full(data.tensors["pseudo_valid"].shape, 0.9),
                        index=torch.arange(4))
    plan = _plan(cfg, 2)
    torch.manual_seed(0)
    model, feed, _ = sp.train_pipeline(plan, data, device="cpu", progress=False)
    gt = data.replace(pseudo2d=data.tensors["pseudo2d"] - 3.0)
    abl, abl_feed, hist = sp.ablation("gt2d", model, feed, plan, labels=gt, device="cpu",
                                      progress=False)
    assert set(hist) == {"pose", "finetune"}
    torch.testing.assert_close(abl_feed.tensors["pseudo2d"], gt.tensors["pseudo2d"])
    assert abl_feed.tensors["heat"] is feed.tensors["heat"]  # the bank is shared
    torch.testing.assert_close(abl.root_net.state_dict()["output.weight"],
                               model.root_net.state_dict()["output.weight"])
    abl, _, hist = sp.ablation("l2_only", model, feed, plan, device="cpu", progress=False)
    assert set(hist) == {"pose"} and abl.config.l1_weight == 0
    assert hist["pose"].steps_done == plan.steps["pose"] + plan.steps["finetune"]
    skip = plan.replace(steps=dict(plan.steps, pose=0))  # a stage with 0 steps is skipped
    _, _, hist = sp.ablation("gt2d", model, feed, skip, labels=gt, device="cpu", progress=False)
    assert set(hist) == {"finetune"} and hist["finetune"].steps_done == plan.steps["finetune"]
    with pytest.raises(ValueError, match="labels"):
        sp.ablation("gt2d", model, feed, plan)
    with pytest.raises(ValueError, match="supervised"):
        sp.ablation("supervised", model, feed, plan)


def test_pipeline_end_to_end_with_a_trainable_2d_network():
    """The full profile's path: the 2D network trains in every stage and the augmented views
    are warped and run through it online (no heatmap bank)."""
    cfg = small_config(freeze_backbone=False)
    data = _scene_set(n=4)
    torch.manual_seed(0)
    before = sp.SelfPose3dNet(cfg, IMAGE, (0.0, 0.0, 900.0)).backbone.state_dict()
    torch.manual_seed(0)
    model, feed, hist = sp.train_pipeline(_plan(cfg, 2), data, device="cpu", progress=False)
    assert set(hist) == set(sp.STAGES) and "heat" not in feed.tensors
    after = model.backbone.state_dict()
    assert not torch.equal(before["final.weight"], after["final.weight"])
    out = sp.predict(model, data)
    assert out["poses"].shape[:2] == (4, cfg.max_people)


def test_joint_loss_scale_keeps_the_papers_balance_for_a_misplaced_joint():
    """lambda * scale * L1 / L_H, measured with the library's rendering for a joint misplaced by
    the same fraction of the image, is the same on the paper's 240 x 128 maps (sigma 2) as on
    smaller maps; the scale is 1 on the paper's maps."""
    assert sp.joint_loss_scale((240, 128), 2.0) == pytest.approx(1.0)
    assert sp.joint_loss_scale((48, 27), 1.5) == pytest.approx(66.67, rel=1e-3)
    with pytest.raises(ValueError, match="heatmap_size"):
        sp.joint_loss_scale((0, 27), 1.5)

    def ratio(image, heatmap, sigma):
        W, H = image
        true = torch.tensor([[[0.3 * W, 0.5 * H]]])          # (P=1, J=1, 2) image px
        off = true + torch.tensor([0.35 * W, 0.0])            # far beyond sigma in every case
        ok = torch.ones(1, 1, dtype=torch.bool)
        l_h = sp.heatmap_loss(sp.render_poses(off, ok, image, heatmap, sigma),
                              sp.render_poses(true, ok, image, heatmap, sigma))
        d = sp.image_to_heatmap(off, image, heatmap) - sp.image_to_heatmap(true, image, heatmap)
        l_1 = d.abs().mean()                                  # the L1 of eqs. 5 and 10, heatmap px
        return float(sp.joint_loss_scale(heatmap, sigma) * l_1 / l_h)

    paper = ratio((960, 512), (240, 128), 2.0)
    for image, heatmap, sigma in (((192, 108), (48, 27), 1.5), ((384, 216), (96, 54), 2.0),
                                  ((256, 256), (64, 64), 1.0)):
        assert ratio(image, heatmap, sigma) == pytest.approx(paper, rel=0.03)
