"""Tests of the weakly supervised 2.5D method (mvbook.methods.weak25d)."""

from __future__ import annotations

import math

import pytest
import torch

from mvbook.crops import crop_camera, crop_points
from mvbook.geometry import Camera
from mvbook.methods import weak25d as W
from mvbook.skeletons import H36M_17


def random_rotation(n: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    det = torch.linalg.det(q)
    q[det < 0, :, 0] *= -1
    return q


def human_poses(n: int, seed: int = 0) -> torch.Tensor:
    """Plausible-ish poses (mm, camera frame, ~4 m in front): a stick figure plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([
        [0, 0, 0], [-130, 0, 0], [-130, 450, 0], [-130, 880, 0], [130, 0, 0], [130, 450, 0],
        [130, 880, 0], [0, -230, 0], [0, -480, 0], [0, -560, 40], [0, -680, 0], [170, -450, 0],
        [170, -180, 0], [170, 70, 0], [-170, -450, 0], [-170, -180, 0], [-170, 70, 0],
    ], dtype=torch.float64)
    R = random_rotation(n, g)
    R = torch.linalg.matrix_power(R, 1)  # any orientation about the pelvis
    # keep people mostly upright: rotate only about the camera's vertical (y) axis
    ang = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    Ry = torch.zeros(n, 3, 3, dtype=torch.float64)
    Ry[:, 0, 0] = Ry[:, 2, 2] = torch.cos(ang)
    Ry[:, 0, 2] = torch.sin(ang)
    Ry[:, 2, 0] = -torch.sin(ang)
    Ry[:, 1, 1] = 1
    del R
    pose = base + 40 * torch.randn(n, 17, 3, generator=g, dtype=torch.float64)
    pose = torch.einsum("nij,nkj->nki", Ry, pose)
    shift = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * 1000 - 500,
                         torch.rand(n, generator=g, dtype=torch.float64) * 400 - 200,
                         3000 + torch.rand(n, generator=g, dtype=torch.float64) * 3000], -1)
    return pose + shift[:, None]


K = torch.tensor([[1100.0, 0.0, 500.0], [0.0, 1050.0, 480.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_25d_reconstruction_is_exact():
    X = human_poses(64)
    Ks = K.expand(64, 3, 3)
    uv, zr = W.pose_to_25d(X, Ks)
    normed, s = W.scale_normalize(X)
    assert torch.allclose((normed[:, 8] - normed[:, 0]).norm(dim=-1), torch.ones(64, dtype=X.dtype))
    Y = W.reconstruct_from_25d(uv, zr, Ks)
    assert torch.allclose(Y, normed, atol=1e-9)
    Ymm = W.reconstruct_from_25d(uv, zr, Ks, bone_length=s)
    assert torch.allclose(Ymm, X, atol=1e-6)
    z_root = W.root_depth_from_25d(uv, zr, Ks, bone_length=s)
    assert torch.allclose(z_root, X[:, 0, 2], atol=1e-6)
    # other reference bones work too, and it is differentiable
    uv2, zr2 = W.pose_to_25d(X, Ks, reference_bone=(10, 0))
    uv2.requires_grad_(True)
    Y2 = W.reconstruct_from_25d(uv2, zr2, Ks, reference_bone=(10, 0))
    Y2.sum().backward()
    assert torch.isfinite(uv2.grad).all()


def test_reconstruction_validates_inputs():
    with pytest.raises(ValueError, match="zr"):
        W.reconstruct_from_25d(torch.zeros(17, 2), torch.zeros(16), K.float())
    with pytest.raises(ValueError, match="K"):
        W.reconstruct_from_25d(torch.zeros(17, 2), torch.zeros(17), torch.eye(2))
    with pytest.raises(ValueError, match="reference_bone"):
        W.root_depth_from_25d(torch.zeros(17, 2), torch.zeros(17), K.float(), reference_bone=(3, 3))
    with pytest.raises(ValueError, match="behind"):
        W.pose_to_25d(-human_poses(2), K)


def test_crop_intrinsics_match_cropped_points():
    # the 2.5D pose of the crop camera's view is the crop of the image's 2.5D pose
    X = human_poses(8)
    uv, zr = W.pose_to_25d(X, K.expand(8, 3, 3))
    box = torch.tensor([300.0, 200.0, 700.0, 600.0], dtype=torch.float64).expand(8, 4)
    cam = Camera(K.expand(8, 3, 3), torch.eye(3, dtype=torch.float64), torch.zeros(3))
    uv_c, zr_c = W.pose_to_25d(X, crop_camera(cam, box, 64).K)
    torch.testing.assert_close(uv_c, crop_points(uv, box, 64), atol=1e-9, rtol=0)
    torch.testing.assert_close(zr_c, zr)


def test_consistency_zero_for_rigid_copies_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    X = human_poses(5).float() / 500.0  # scale-normalised-ish units
    R = random_rotation(5 * 4, g).float().view(5, 4, 3, 3)
    t = torch.randn(5, 4, 1, 3, generator=g)
    views = torch.einsum("bcij,bkj->bcki", R, X) + t  # (B, C, J, 3) rigid copies
    zero = W.multiview_consistency_loss(views, delta=0.0)
    assert zero.item() < 1e-4
    noisy = views.clone()
    noisy[:, 1, 3] += 0.3  # one view's knee moves
    assert W.multiview_consistency_loss(noisy, delta=0.0).item() > 1e-2
    mirrored = views.clone()
    mirrored[:, 2, :, 2] *= -1  # a depth flip is not a rotation
    assert W.multiview_consistency_loss(mirrored, delta=0.0).item() > 1e-2
    # gradients reach the poses through the alignment
    p = noisy.clone().requires_grad_(True)
    W.multiview_consistency_loss(p).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="C >= 2"):
        W.multiview_consistency_loss(views[:, :1])


def test_limb_length_prior():
    X = human_poses(32)
    normed, _ = W.scale_normalize(X)
    prior = W.bone_ratio_prior(X)
    assert prior.shape == (len(H36M_17.bones),)
    loss, logs = W.limb_length_loss(normed.float(), prior.float())
    bent = normed.clone()
    bent[:, 3] = bent[:, 2] + 2.0 * (bent[:, 3] - bent[:, 2])  # a right shin twice as long
    loss_bent, _ = W.limb_length_loss(bent.float(), prior.float())
    assert loss_bent > loss + 0.05 and set(logs) == {"l_bone", "l_sym"}


def test_network_shapes_and_2d_loss():
    cfg = W.Config(crop_size=32)
    net = W.Weak25DNet(17, cfg)
    out = net(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    h = cfg.heatmap_size
    assert out["joints2d"].shape == (3, 17, 2) and out["zr"].shape == (3, 17)
    assert out["log_prob"].shape == (3, 17, h, h)
    assert torch.allclose(out["log_prob"].exp().flatten(-2).sum(-1), torch.ones(3, 17), atol=1e-5)
    loss, logs = W.heatmap_loss(out, out["joints2d"].detach(), torch.ones(3, 17, dtype=torch.bool))
    assert loss.item() > 0 and logs["l2d_coord"].item() < 1e-6


def synthetic_sets(n: int = 32, views: int = 4, size: int = 32):
    """Images that encode the joints as bright dots (a learnable toy)."""
    cfg = W.Config(crop_size=size)
    h = cfg.heatmap_size
    X = human_poses(n).float()
    Kh = torch.tensor([[h * 1.2, 0.0, (h - 1) / 2], [0.0, h * 1.2, (h - 1) / 2], [0.0, 0.0, 1.0]])
    Kh = Kh * torch.tensor([[1.0], [1.0], [1.0]])
    uv, zr = W.pose_to_25d(X, Kh.expand(n, 3, 3))
    uv = uv.clamp(0, h - 1)
    img = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    pix = ((uv + 0.5) * size / h - 0.5).round().long().clamp(0, size - 1)
    img[torch.arange(n)[:, None], 0, pix[..., 1], pix[..., 0]] = 255
    imgs = W.ImageSet(img, uv, torch.ones(n, 17, dtype=torch.bool), Kh.expand(n, 3, 3), X, zr,
                      torch.ones(n), ["S1"] * n)
    mv = W.MultiviewSet(img[:, None].expand(n, views, 3, size, size).contiguous(),
                        Kh.expand(n, views, 3, 3), uv[:, None].expand(n, views, 17, 2),
                        torch.ones(n, views, 17, dtype=torch.bool), zr[:, None].expand(n, views, 17),
                        X[:, None].expand(n, views, 17, 3))
    return cfg, imgs, mv


@pytest.mark.parametrize("mode", ["weak", "full"])
def test_short_training_lowers_the_loss(mode):
    cfg, imgs, mv = synthetic_sets(n=8)
    torch.manual_seed(0)
    net = W.Weak25DNet(17, cfg)
    prior = W.bone_ratio_prior(imgs.joints_cam)
    hist = W.fit(net, mode, imgs, mv, steps=16, batch_2d=8, batch_mv=2, lr=3e-3, prior=prior,
                 device="cpu", progress=False, log_every=4)
    _, loss = hist.series("loss")
    assert loss[-1] < loss[0]
    assert all(math.isfinite(r["loss"]) for r in hist.records)
    if mode == "weak":
        assert "l_mc" in hist.keys() and "l_bone" in hist.keys()
    metrics = W.evaluate(net, imgs)
    assert {"MPJPE", "N-MPJPE", "PA-MPJPE"} <= set(metrics)
    assert all(math.isfinite(metrics[k]) for k in ("MPJPE", "N-MPJPE", "PA-MPJPE"))


def test_root_depth_is_zero_and_distance_prior():
    cfg = W.Config(crop_size=32)
    net = W.Weak25DNet(17, cfg)
    out = net(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert torch.equal(out["zr"][:, cfg.root_joint], torch.zeros(2))
    X = human_poses(4)
    uv, zr = W.pose_to_25d(X, K.expand(4, 3, 3))
    # real people are ~10 reference bones away: the prior is inactive
    assert W.distance_prior_loss(uv, zr, K.expand(4, 3, 3)).item() == 0.0
    # the degenerate collapse onto the optical axis (bones along the ray) is penalised
    collapsed = zr.clone()
    collapsed[:, 8] = -0.99  # the thorax almost straight in front of the pelvis along the ray
    assert W.distance_prior_loss(uv, collapsed, K.expand(4, 3, 3)).item() > 0.0


def test_align_grad_options_agree_on_value():
    g = torch.Generator().manual_seed(0)
    P = torch.randn(2, 3, 17, 3, generator=g, dtype=torch.float64, requires_grad=True)
    a = W.multiview_consistency_loss(P, align_grad=True)
    b = W.multiview_consistency_loss(P, align_grad=False)
    assert torch.allclose(a, b)
    ga, = torch.autograd.grad(a, P)
    gb, = torch.autograd.grad(b, P)
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
    assert torch.autograd.gradcheck(lambda p: W.multiview_consistency_loss(p, align_grad=True),
                                    (P.detach()[:1].clone().requires_grad_(True),))


def test_color_jitter_keeps_shape_and_is_seeded():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    a = W.color_jitter(x, 0.3)
    torch.manual_seed(0)
    b = W.color_jitter(x, 0.3)
    assert a.shape == (4, 3, 8, 8) and a.dtype == torch.float32 and torch.equal(a, b)


def test_root_grad_stop_gradient_keeps_value():
    X = human_poses(6)
    Ks = K.expand(6, 3, 3)
    uv, zr = W.pose_to_25d(X, Ks)
    zr = zr.clone().requires_grad_(True)
    a = W.reconstruct_from_25d(uv, zr, Ks)
    b = W.reconstruct_from_25d(uv, zr, Ks, root_grad=False)
    assert torch.allclose(a, b)
    # with the root depth constant, the root joint depends on no other joint's depth
    gb, = torch.autograd.grad(b[:, 0].sum(), zr)
    assert gb[:, 1:].abs().max() == 0
    ga, = torch.autograd.grad(a[:, 0].sum(), zr)
    assert ga[:, 1:].abs().max() > 0


def test_root_depth_from_skeleton_recovers_true_depth():
    X = human_poses(16)
    Ks = K.expand(16, 3, 3)
    uv, zr = W.pose_to_25d(X, Ks)
    normed, s = W.scale_normalize(X)
    lengths = W.bone_lengths(normed)
    # per-pose prior = the pose's own bone lengths: the exact root depth is recovered
    z = torch.stack([W.root_depth_from_skeleton(uv[i], zr[i], Ks[i], lengths[i]) for i in range(16)])
    assert torch.allclose(z, X[:, 0, 2] / s, rtol=1e-6)
    with pytest.raises(ValueError, match="bone_prior"):
        W.root_depth_from_skeleton(uv, zr, Ks, lengths[0, :3])


@pytest.mark.parametrize("mc_2d_grad", [True, False])
def test_weak_loss_stop_gradient_at_2d(mc_2d_grad):
    cfg, imgs, mv = synthetic_sets(n=4)
    cfg.mc_2d_grad = mc_2d_grad
    cfg.w_front = 0.0  # the distance prior reads the 2D directly
    prior = W.bone_ratio_prior(imgs.joints_cam)
    batch = next(iter(W.WeakBatches(imgs, mv, 2, 2)))
    n = 2 + 2 * mv.images.shape[1]
    h = cfg.heatmap_size
    uv = (imgs.joints2d[:1].expand(n, 17, 2) + 0.3 * torch.randn(n, 17, 2)).requires_grad_(True)
    zr = (0.1 * torch.randn(n, 17)).requires_grad_(True)
    log_prob = torch.log_softmax(torch.randn(n, 17, h * h), -1).view(n, 17, h, h)

    class Stub(torch.nn.Module):
        def forward(self, images):
            return {"joints2d": uv, "zr": zr, "log_prob": log_prob}

    loss, _ = W.make_loss("weak", cfg, prior)(Stub(), batch)
    loss.backward()
    assert zr.grad[2:].abs().sum() > 0  # the depths of the multiview frames always learn
    # the 2D of the multiview frames learns from the consistency terms only if not stopped
    assert (uv.grad[2:].abs().sum() > 0) == mc_2d_grad


# ---- the 2.5D model on a frozen pretrained detector (ZooWeak25D) ---------------------------

def small_detector(seed: int = 0):
    """A random detector of the zoo's shape (stride-4 stem, 4 stages, 3 deconvolutions)."""
    from mvbook.nn.backbones import BackboneConfig, SimpleBaseline

    torch.manual_seed(seed)
    cfg = BackboneConfig(width=8, blocks=(1, 1, 1, 1), stem_stride=4, deconv_layers=3,
                         deconv_channels=8)
    det = SimpleBaseline(17, cfg)
    torch.nn.init.normal_(det.final.weight, std=0.5)  # peaky, non-trivial heatmaps
    return det.eval(), W.Config(crop_size=64, backbone=cfg, beta=5.0, depth_channels=8)


def test_zoo_model_block_readout_equals_full_resolution_readout():
    det, cfg = small_detector()
    torch.manual_seed(1)
    model = W.ZooWeak25D(det, cfg)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    enc = model.encode(images, batch_size=2)
    assert enc.joints2d.shape == (3, 17, 2) and enc.encoding.shape == (3, 64, 2, 2)
    assert enc.log_prob.shape == (3, 17, 4, 4)  # depth maps at twice the encoder's resolution
    # an untrained head predicts flat poses: the 2D-only baseline
    assert torch.equal(model.depth(enc), torch.zeros(3, 17))
    torch.nn.init.normal_(model.head.maps[-1].weight)
    model.eval()
    with torch.no_grad():
        zr = model.depth(enc)
        # independent reference: softmax at full heatmap resolution, depth maps repeated 4x4
        heat = det(normalize(images)).heatmaps
        D = model.head.maps(enc.encoding)
        D_full = D.repeat_interleave(4, -1).repeat_interleave(4, -2)
        prob = torch.softmax(cfg.beta * heat.flatten(-2), -1)
        z = (prob * D_full.flatten(-2)).sum(-1)
    assert torch.allclose(zr, z - z[:, :1], atol=1e-5)
    # the 2D joints are the detector's refined peaks
    from mvbook.heatmaps import refine_argmax_2d
    assert torch.allclose(enc.joints2d, refine_argmax_2d(heat)[0])
    out = model(images)
    assert torch.allclose(out["zr"], zr, atol=1e-5) and torch.allclose(out["joints2d"], enc.joints2d, atol=1e-4)


def normalize(images):
    from mvbook.crops import normalize_images
    return normalize_images(images)


def zoo_sets(n: int = 6, views: int = 4):
    """A random detector and synthetic multiview/test sets at its crop size."""
    det, cfg = small_detector()
    h = cfg.heatmap_size
    X = human_poses(n).float()
    Kh = torch.tensor([[h * 1.2, 0.0, (h - 1) / 2], [0.0, h * 1.2, (h - 1) / 2], [0.0, 0.0, 1.0]])
    uv, zr = W.pose_to_25d(X, Kh.expand(n, 3, 3))
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (n, views, 3, 64, 64), generator=g, dtype=torch.uint8)
    mv = W.MultiviewSet(img, Kh.expand(n, views, 3, 3), uv[:, None].expand(n, views, 17, 2),
                        torch.ones(n, views, 17, dtype=torch.bool), zr[:, None].expand(n, views, 17),
                        X[:, None].expand(n, views, 17, 3))
    test = W.ImageSet(img[:, 0], uv, torch.ones(n, 17, dtype=torch.bool), Kh.expand(n, 3, 3), X, zr,
                      torch.full((n,), 250.0), ["S9"] * n, image_scale=torch.full((n,), 2.0))
    return det, cfg, mv, test


@pytest.mark.parametrize("mode", ["weak", "full"])
def test_fit_depth_trains_the_head_only(mode):
    det, cfg, mv, test = zoo_sets()
    before = {k: v.clone() for k, v in det.state_dict().items()}
    torch.manual_seed(0)
    model = W.ZooWeak25D(det, cfg)
    enc = model.encode(mv.images.flatten(0, 1))
    prior = W.bone_ratio_prior(mv.joints_cam[:, 0])
    hist = W.fit_depth(model, mode, enc, mv, steps=12, batch_mv=3, lr=1e-2, prior=prior,
                       device="cpu", progress=False, log_every=1)
    _, loss = hist.series("loss")
    assert all(math.isfinite(v) for v in loss) and loss[-1] < loss[0]
    assert ("l_mc" in hist.keys()) == (mode == "weak") and ("l_depth" in hist.keys()) == (mode == "full")
    after = det.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen, batch norm too
    assert not model.detector.training
    assert any(p.abs().sum() > 0 for p in model.head.maps[-1].parameters())
    # the encoded test crops give the same predictions as the crops themselves
    enc_test = model.encode(test.images)
    a = W.evaluate(model, test, encoded=enc_test)
    b = W.evaluate(model, test)
    assert a == pytest.approx(b, rel=1e-5)
    err = (enc_test.joints2d - test.joints2d).norm(dim=-1).mean()
    assert a["2D error (image px)"] == pytest.approx(2.0 * float(err), rel=1e-5)
    with pytest.raises(TypeError, match="ZooWeak25D"):
        W.predict(W.Weak25DNet(17, W.Config(crop_size=32)), enc_test, test.K)


def test_encoded_batches_take_all_views_of_a_frame_and_check_their_input():
    det, cfg, mv, _ = zoo_sets(n=5)
    model = W.ZooWeak25D(det, cfg)
    enc = model.encode(mv.images.flatten(0, 1))
    batches = W.EncodedBatches(enc, mv, batch_mv=2, seed=3)
    assert len(batches) == 2
    batch = next(iter(batches))
    assert batch["encoding"].shape == (8, 64, 2, 2) and batch["joints2d_pred"].shape == (2, 4, 17, 2)
    # the four crops of a batch frame are the four views of one multiview frame
    rows = [int(torch.nonzero((enc.joints2d == batch["joints2d_pred"][0, c]).all(-1).all(-1))[0])
            for c in range(4)]
    assert rows == [rows[0] + c for c in range(4)] and rows[0] % 4 == 0
    f = rows[0] // 4
    assert torch.equal(batch["K_mv"][0], mv.K[f]) and torch.equal(batch["zr_mv"][0], mv.zr[f])
    again = next(iter(W.EncodedBatches(enc, mv, batch_mv=2, seed=3)))
    assert torch.equal(again["encoding"], batch["encoding"])  # seeded
    with pytest.raises(ValueError, match="encoded"):
        W.EncodedBatches(enc[:7], mv, batch_mv=2)
    with pytest.raises(ValueError, match="batch_mv"):
        W.EncodedBatches(enc, mv, batch_mv=6)


def test_weak_loss_is_the_2d_loss_plus_the_multiview_terms():
    cfg, imgs, mv = synthetic_sets(n=4)
    cfg.color_jitter = 0.0
    prior = W.bone_ratio_prior(imgs.joints_cam)
    torch.manual_seed(0)
    net = W.Weak25DNet(17, cfg)
    batch = next(iter(W.WeakBatches(imgs, mv, 2, 2)))
    loss, logs = W.make_loss("weak", cfg, prior)(net, batch)
    with torch.no_grad():
        out = net(torch.cat([batch["images"], batch["images_mv"].flatten(0, 1)]))
    l2d, _ = W.heatmap_loss({k: v[:2] for k, v in out.items()}, batch["joints2d"], batch["visibility"],
                            cfg.heatmap_sigma)
    C = mv.images.shape[1]
    uv, zr = out["joints2d"][2:].view(2, C, 17, 2), out["zr"][2:].view(2, C, 17)
    poses = W.reconstruct_from_25d(uv, zr, batch["K_mv"], cfg.reference_bone)
    by_hand = (l2d + cfg.w_mc * W.multiview_consistency_loss(poses, cfg.mc_delta)
               + W.limb_length_loss(poses, prior)[0]
               + cfg.w_front * W.distance_prior_loss(uv, zr, batch["K_mv"], z_min=cfg.z_min))
    assert float(loss.detach()) == pytest.approx(float(by_hand), rel=1e-5)


def test_settings_take_the_zoo_recipe_and_validate_pretrained():
    from mvbook.zoo import recipe

    plan = W.settings("quick")
    rec = recipe("pose2d", "quick")
    assert plan.pretrained == "pose2d" and plan.steps["2d"] == 0
    assert (plan.config.crop_size, plan.config.crop_scale) == (rec.crop_size, rec.crop_scale)
    assert plan.config.backbone == rec.backbone
    assert W.settings("quick", pretrained="none").config.crop_size == 32
    with pytest.raises(ValueError, match="pretrained"):
        W.settings("quick", pretrained="imagenet")
