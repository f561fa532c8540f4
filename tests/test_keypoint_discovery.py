"""Unsupervised 3D keypoint discovery (chapter 30): the spatial transformer and its inverse,
the patch camera of eq. 6, the composite of eq. 2, the separable Gaussians of eqs. 9 and 12,
the gradients through grid_sample and the triangulation, the losses and a short training."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

import mvbook.methods.keypoint_discovery as kd
from mvbook.crops import crop_images, paste_crops
from mvbook.geometry import Camera, triangulate
from mvbook.heatmaps import gaussian_factors_2d, render_gaussian_2d


@pytest.fixture(scope="module")
def smoke():
    plan = kd.settings("smoke")
    splits = kd.prepare("studio", plan, profile="smoke", progress=False)
    return plan, splits


def _camera(seed: int = 0) -> Camera:
    g = torch.Generator().manual_seed(seed)
    eye = torch.tensor([2500.0, -1800.0, 1600.0]) + torch.randn(3, generator=g) * 100
    return Camera.look_at(eye, torch.tensor([0.0, 0.0, 900.0]), focal=(90.0, 95.0),
                          image_size=(64, 64), principal=(31.3, 33.1))


# ------------------------------------------------------------------- spatial transformer
def test_paste_then_crop_round_trips_a_patch_at_unit_scale():
    g = torch.Generator().manual_seed(0)
    patch = torch.rand(2, 3, 16, 16, generator=g)
    boxes = torch.tensor([[5.0, 7.0, 21.0, 23.0], [30.0, 2.0, 46.0, 18.0]])  # 16 px, integer
    frame = paste_crops(patch, boxes, (48, 40))
    assert frame.shape == (2, 3, 40, 48)
    back = crop_images(frame, boxes, 16, supersample=1)
    torch.testing.assert_close(back, patch, atol=1e-5, rtol=0)
    # outside the box the frame is zero
    assert float(frame[0, :, 30:, :].abs().max()) == 0.0


def test_paste_and_crop_are_inverse_at_any_scale_on_smooth_content():
    # a smooth ramp survives two bilinear resamplings almost exactly away from the borders
    S = 24
    v, u = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32),
                          indexing="ij")
    patch = torch.stack([u / S, v / S, (u + v) / (2 * S)])[None]
    box = torch.tensor([[10.3, 6.7, 47.9, 51.2]])  # non-square, sub-pixel
    back = crop_images(paste_crops(patch, box, (64, 64)), box, S, supersample=1)
    torch.testing.assert_close(back[..., 2:-2, 2:-2], patch[..., 2:-2, 2:-2], atol=2e-3, rtol=0)


def test_paste_crops_equals_opencv_warp_affine():
    g = torch.Generator().manual_seed(1)
    S, W, H = 20, 50, 40
    patch = torch.rand(1, 3, S, S, generator=g)
    x0, y0, x1, y1 = 7.4, 5.2, 38.1, 33.9
    frame = paste_crops(patch, torch.tensor([[x0, y0, x1, y1]]), (W, H))[0]
    # frame px u reads crop px u' = (u - x0 + 1/2) S / w - 1/2 (OpenCV also has centres at ints)
    sx, sy = S / (x1 - x0), S / (y1 - y0)
    M = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]])
    ref = cv2.warpAffine(patch[0].permute(1, 2, 0).numpy(), M, (W, H),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    np.testing.assert_allclose(frame.permute(1, 2, 0).numpy(), ref, atol=2e-2)


def test_paste_crops_rejects_bad_input():
    with pytest.raises(ValueError, match="boxes must have x1 > x0"):
        paste_crops(torch.rand(1, 1, 4, 4), torch.tensor([[5.0, 0, 5.0, 4]]), (8, 8))
    with pytest.raises(ValueError, match="crops"):
        paste_crops(torch.rand(1, 1, 4, 5), torch.tensor([[0.0, 0, 4, 4]]), (8, 8))
    with pytest.raises(ValueError, match="image_size"):
        paste_crops(torch.rand(1, 1, 4, 4), torch.tensor([[0.0, 0, 4, 4]]), (8,))


# ------------------------------------------------------------------------------ eq. 6
def test_patch_camera_of_eq6_equals_camera_crop_and_sees_the_crop():
    cam = _camera(3)
    box = torch.tensor([12.5, 9.0, 44.0, 52.5])
    S = 32
    # eq. 6 with pixel centres at integers: s = S / w, b the box's top-left pixel edge
    s = torch.tensor([S / (box[2] - box[0]), S / (box[3] - box[1])])
    K = cam.K
    Kp = torch.tensor([[s[0] * K[0, 0], 0, s[0] * (K[0, 2] - box[0] + 0.5) - 0.5],
                       [0, s[1] * K[1, 1], s[1] * (K[1, 2] - box[1] + 0.5) - 0.5],
                       [0, 0, 1]])
    torch.testing.assert_close(cam.crop(box, (S, S)).K, Kp)
    # a bright dot projected by the frame camera lands, in the crop, where K_p projects it
    X = torch.tensor([[40.0, -30.0, 1000.0]])
    uv = cam.project(X)[0]
    frame = render_gaussian_2d(uv[None], (64, 64), 1.5)[0].expand(1, 3, 64, 64)
    crop = crop_images(frame, box[None], S, supersample=1)[0, 0]
    peak = torch.stack(torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij"), -1)
    w = crop / crop.sum()
    centre = torch.stack([(w * peak[..., 1]).sum(), (w * peak[..., 0]).sum()])
    torch.testing.assert_close(centre, cam.crop(box, (S, S)).project(X)[0].float(), atol=0.05,
                               rtol=0)


def test_detection_to_boxes():
    det = torch.tensor([[0.5, 0.25, 0.0, 1.0]])
    boxes = kd.boxes_from_detection(det, (64, 32), (0.25, 1.0))
    # centre (31.5, 7.5), sides (16, 32)
    torch.testing.assert_close(boxes, torch.tensor([[23.5, -8.5, 39.5, 23.5]]))


# ------------------------------------------------------------------------------ eq. 2
def _tiny_config(**kw) -> kd.Config:
    base = dict(num_keypoints=5, patch_size=16, detector_stride=2, latent_dim=8, width=4,
                decoder_channels=8, decoder_convs=1, dropout=0.0, heatmap_sigma=0.08)
    base.update(kw)
    return kd.Config(**base)


def _tiny_batch(B=2, C=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    cams = [Camera.look_at(torch.tensor([3000.0 * np.cos(a), 3000.0 * np.sin(a), 1500.0]),
                           torch.tensor([0.0, 0.0, 900.0]), focal=40.0, image_size=(size, size))
            for a in np.linspace(0, 2.5, C)]
    cam = Camera.stack(cams)
    images = torch.randint(0, 256, (B, C, 3, size, size), generator=g, dtype=torch.uint8)
    background = torch.rand(C, 3, size, size, generator=g)
    return {"images": images, "K": cam.K.float().expand(B, C, 3, 3),
            "R": cam.R.float().expand(B, C, 3, 3), "t": cam.t.float().expand(B, C, 3),
            "background": background}


def _force_mask(model: kd.KeypointDiscovery, logit: float) -> None:
    """Make the image decoder output mask logits ``logit`` everywhere."""
    out = model.decoder.out
    with torch.no_grad():
        out.weight[3].zero_()
        out.bias[3] = logit


def test_composite_is_the_image_where_the_mask_is_one_and_the_background_where_zero():
    torch.manual_seed(0)
    model = kd.KeypointDiscovery(_tiny_config()).eval()
    b = _tiny_batch()
    images, background = kd.batch_images(b)
    _force_mask(model, -60.0)
    out = model(images, b["K"], b["R"], b["t"], background, keypoints=False)
    torch.testing.assert_close(out["reconstruction"], background.expand_as(images))
    _force_mask(model, 60.0)
    out = model(images, b["K"], b["R"], b["t"], background, keypoints=False)
    rgb = paste_crops(out["rgb"].flatten(0, 1), out["boxes"].flatten(0, 1), (32, 32))
    m = out["frame_mask"].flatten(0, 1).expand_as(rgb)
    recon = out["reconstruction"].flatten(0, 1)
    inside, outside = m > 1 - 1e-6, m < 1e-6
    assert inside.float().mean() > 0.2 and outside.float().mean() > 0.05
    torch.testing.assert_close(recon[inside], rgb[inside], atol=1e-5, rtol=0)
    bg = background.expand_as(images).flatten(0, 1)
    torch.testing.assert_close(recon[outside], bg[outside], atol=1e-5, rtol=0)


def test_forward_shapes_and_the_keypoint_chain_equals_the_library():
    torch.manual_seed(1)
    cfg = _tiny_config()
    model = kd.KeypointDiscovery(cfg).eval()
    b = _tiny_batch(B=2, C=3)
    images, background = kd.batch_images(b)
    out = model(images, b["K"], b["R"], b["t"], background)
    B, C, N, S = 2, 3, cfg.num_keypoints, cfg.patch_size
    assert out["keypoints2d"].shape == (B, C, N, 2)
    assert out["keypoints3d"].shape == (B, N, 3)
    assert out["keypoint_mask"].shape == (B, C, 1, S, S)
    # the chain by hand: eq. 6 cameras, DLT, re-projection, drawn Gaussians through phi
    cams = Camera(b["K"], b["R"], b["t"]).crop(out["boxes"], (S, S))
    X = triangulate(out["keypoints2d"], cams.P)
    torch.testing.assert_close(out["keypoints3d"], X)
    torch.testing.assert_close(out["reprojected"], cams.project(X[:, None]).float(), atol=1e-3,
                               rtol=1e-4)
    maps = render_gaussian_2d(out["reprojected"], (S, S), model.sigma_px)
    torch.testing.assert_close(out["keypoint_mask"].flatten(0, 1),
                               model.mask_decoder(maps.flatten(0, 1)), atol=1e-5, rtol=0)


def test_mask_decoder_from_points_equals_drawing_the_maps():
    torch.manual_seed(2)
    phi = kd.MaskDecoder(7)
    pts = torch.rand(4, 7, 2) * 24 - 4
    pts[0, 3] = float("nan")  # a missing keypoint draws nothing
    maps = render_gaussian_2d(pts, (20, 20), 1.7)
    torch.testing.assert_close(phi.from_points(pts, 20, 1.7), phi(maps), atol=1e-6, rtol=0)


def test_gaussian_factors_multiply_to_the_rendered_maps():
    pts = torch.tensor([[[3.2, 4.7], [float("inf"), 1.0], [-2.0, 10.5]]])
    gx, gy = gaussian_factors_2d(pts, (12, 9), torch.tensor([1.0, 2.0, 0.7]))
    torch.testing.assert_close(gy[..., :, None] * gx[..., None, :],
                               render_gaussian_2d(pts, (12, 9), torch.tensor([1.0, 2.0, 0.7])))
    assert float(gx[0, 1].abs().sum()) == 0.0


# ----------------------------------------------------------------------------- gradients
def test_gradients_reach_the_detector_through_grid_sample():
    torch.manual_seed(3)
    model = kd.KeypointDiscovery(_tiny_config())
    b = _tiny_batch()
    images, background = kd.batch_images(b)
    out = model(images, b["K"], b["R"], b["t"], background, keypoints=False)
    (out["reconstruction"] - images).pow(2).mean().backward()
    g = model.detector.out.weight.grad
    assert g is not None and float(g[:, :].abs().sum()) > 0


def test_gradients_reach_the_detector_through_the_triangulation():
    torch.manual_seed(4)
    model = kd.KeypointDiscovery(_tiny_config())
    b = _tiny_batch()
    images, _ = kd.batch_images(b)
    boxes = model.detect(images.flatten(0, 1)).view(2, 3, 4)
    latent = torch.randn(2, 3, model.config.latent_dim)  # no path from the boxes to the latent
    out = model.discover(latent, boxes, b["K"], b["R"], b["t"])
    target = torch.rand_like(out["keypoint_mask"])
    kd.mask_loss(out["keypoint_mask"], target).backward()
    # the only path from the detector to the loss: boxes -> K_p (eq. 6) -> DLT -> re-projection
    assert float(model.detector.out.bias.grad.abs().sum()) > 0


# -------------------------------------------------------------------------------- losses
def test_coverage_is_zero_inside_the_mask_and_equals_the_drawn_maps():
    pts = torch.tensor([[[8.0, 8.0], [10.0, 7.5]]])
    mask = torch.ones(1, 1, 16, 16)
    assert float(kd.coverage_loss(pts, mask, 1.0)) < 1e-6
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    inner = torch.tensor([[[7.5, 7.5], [8.0, 7.0]]])
    assert float(kd.coverage_loss(inner, mask, 0.5)) < 1e-6  # 7 sigma inside a hard-edged mask
    # half of the mass of a keypoint on the mask's edge is outside
    edge = torch.tensor([[[11.5, 8.0]]])
    torch.testing.assert_close(kd.coverage_loss(edge, mask, 1.0), torch.tensor(0.5), atol=1e-3,
                               rtol=0)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(3, 5, 2, generator=g) * 16
    soft = torch.rand(3, 1, 16, 16, generator=g)
    maps = render_gaussian_2d(pts, (16, 16), 1.3, normalize=True)
    ref = (1 - (maps * soft).sum((-2, -1))).abs().mean()
    torch.testing.assert_close(kd.coverage_loss(pts, soft, 1.3), ref)


def test_centering_is_zero_when_the_box_centre_is_the_keypoints_mean():
    kp = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    assert float(kd.centering_loss(torch.tensor([[20.0, 30.0]]), kp, (64, 64))) == 0.0
    # 8 px off along u in a 64 px frame: 8 / 32 half-sides
    torch.testing.assert_close(kd.centering_loss(torch.tensor([[28.0, 30.0]]), kp, (64, 64)),
                               torch.tensor(0.25))


def test_mask_targets():
    torch.manual_seed(5)
    model = kd.KeypointDiscovery(_tiny_config()).eval()
    b = _tiny_batch()
    images, background = kd.batch_images(b)
    out = model(images, b["K"], b["R"], b["t"], background)
    own = kd.mask_target("own", out)
    assert not own.requires_grad and torch.equal(own, out["mask"].detach())
    true = torch.zeros(2, 3, 32, 32, dtype=torch.bool)
    assert float(kd.mask_target("true", out, true_masks=true).detach().abs().max()) == 0.0
    diff = kd.mask_target("image_minus_background", out, images, background)
    diff = diff.detach()
    assert diff.shape == out["mask"].shape and 0 <= float(diff.min()) <= float(diff.max()) <= 1
    same = kd.mask_target("image_minus_background", out, background.expand_as(images),
                          background)
    assert float(same.max()) == 0.0
    with pytest.raises(ValueError, match="true_masks"):
        kd.mask_target("true", out)
    with pytest.raises(ValueError, match="kind"):
        kd.mask_target("mine", out)


def test_reconstruction_loss_is_zero_for_a_perfect_reconstruction():
    from mvbook.zoo import load

    trunk = load("trunk", "quick")
    x = torch.rand(2, 3, 32, 32)
    total, colour, perceptual = kd.reconstruction_loss(x, x.clone(), trunk, 2.0)
    assert float(total) == 0.0
    y = (x + 0.1).clamp(0, 1)
    total, colour, perceptual = kd.reconstruction_loss(x, y, trunk, 2.0)
    torch.testing.assert_close(colour, (x - y).pow(2).mean())
    feats = trunk.stage_features(kd.losses.normalize_images(x * 255))[:3]
    feats_y = trunk.stage_features(kd.losses.normalize_images(y * 255))[:3]
    ref = sum((a - b).pow(2).mean() for a, b in zip(feats, feats_y, strict=True))
    torch.testing.assert_close(perceptual, ref)
    torch.testing.assert_close(total, colour + 2.0 * perceptual)


def test_loss_names_and_config_checks():
    assert kd.loss_terms("reconst+mask") == {"reconst", "mask"}
    with pytest.raises(ValueError, match="loss must be terms"):
        kd.loss_terms("reconst+masks")
    with pytest.raises(ValueError, match="mask_target"):
        kd.Config(mask_target="mine")
    with pytest.raises(ValueError, match="patch_size"):
        kd.Config(patch_size=20)
    with pytest.raises(ValueError, match="box_range"):
        kd.Config(box_range=(0.5, 0.4))
    with pytest.raises(ValueError, match="perceptual trunk"):
        kd.make_loss("reconst", kd.Config(), None)


# ---------------------------------------------------------------------------------- data
def test_median_background_removes_the_person(smoke):
    _, splits = smoke
    ds_bg = splits.train.background
    from mvbook.studio import open_data

    stored = open_data("studio", profile="smoke", split="train", keys=["background"],
                       progress=False)[0]["background"].float() / 255
    # the studio's backgrounds are static (no lighting or camera change): the median of the
    # frames is the stored background up to sensor noise, except where the person stands still
    err = (ds_bg - stored).abs().amax(1)
    assert float((err > 0.05).float().mean()) < 0.02
    with pytest.raises(ValueError, match="uint8"):
        kd.median_background(torch.rand(2, 1, 3, 4, 4))


def test_resize_frames_keeps_the_projection():
    cam = _camera(5)
    X = torch.tensor([[30.0, 60.0, 100.0], [-50.0, 10.0, -20.0]])
    uv = cam.project(X)
    images = torch.zeros(1, 1, 3, 64, 64, dtype=torch.uint8)
    _, K, _ = kd.resize_frames(images, cam.K[None, None].float(), None, 32)
    small = Camera(K[0, 0], cam.R, cam.t)
    torch.testing.assert_close(small.project(X).float(), ((uv + 0.5) / 2 - 0.5).float(),
                               atol=1e-4, rtol=0)


def test_frame_sets_and_batches(smoke):
    plan, splits = smoke
    tr = splits.train
    assert tr.images.dtype == torch.uint8 and tr.images.ndim == 5
    assert tr.masks is not None and tr.masks.dtype == torch.bool
    two = tr.select_views([0, 2])
    assert two.views == 2 and two.background.shape[0] == 2
    with pytest.raises(ValueError, match="views"):
        tr.select_views([7])
    batch = next(iter(kd.FrameBatches(tr, 3, seed=1)))
    assert batch["images"].shape[0] == 3 and batch["masks"].shape[:2] == (3, tr.views)


# ---------------------------------------------------------------------------- evaluation
def test_fit_linear_equals_numpy_least_squares():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g)
    y = (x @ torch.randn(4, 6, generator=g) + 3.0).view(50, 2, 3)
    f = kd.fit_linear(x, y, ridge=0.0)
    A = np.c_[x.numpy(), np.ones(50)]
    W, *_ = np.linalg.lstsq(A, y.flatten(1).numpy(), rcond=None)
    q = torch.randn(7, 4, generator=g)
    np.testing.assert_allclose(f(q).flatten(1).numpy(), np.c_[q.numpy(), np.ones(7)] @ W,
                               atol=1e-4)


def test_pose_inputs_are_translation_free():
    X = torch.randn(3, 5, 3)
    p = {"keypoints3d": X, "latent": torch.randn(3, 2, 4)}
    torch.testing.assert_close(kd.pose_inputs("keypoints", p),
                               kd.pose_inputs("keypoints", {"keypoints3d": X + 100.0}))
    assert kd.pose_inputs("latent", p).shape == (3, 8)
    with pytest.raises(ValueError, match="features"):
        kd.pose_inputs("pixels", p)


def test_perfect_keypoints_predict_the_pose():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    poses = [torch.randn(n, 17, 3, generator=g) * 300 + torch.randn(n, 1, 3, generator=g) * 1000
             for n in (200, 40)]
    train, test = (SimpleNamespace(joints3d=p) for p in poses)
    # the joints themselves as "discovered keypoints": a linear map recovers the pose exactly
    pred = tuple({"keypoints3d": p} for p in poses)
    m = kd.evaluate(None, train, test, kd.settings("smoke"), "keypoints", "linear",
                    predicted=pred)
    assert m["mpjpe"] < 1.0 and m["pa_mpjpe"] < 1.0
    # and noise-free features that do not carry the pose cannot
    noise = tuple({"keypoints3d": torch.randn(len(p), 4, 3, generator=g)} for p in poses)
    m = kd.evaluate(None, train, test, kd.settings("smoke"), "keypoints", "linear",
                    predicted=noise)
    assert m["mpjpe"] > 100.0


# ------------------------------------------------------------------------------ training
def test_a_short_training_lowers_the_unsupervised_loss(smoke):
    plan, splits = smoke
    trunk = kd.trunk(plan)
    model = kd.new_model(plan.config, 0)
    hist = kd.fit(model, plan.claim_loss, splits.train, 40, perceptual=trunk, batch=4, lr=3e-3,
                  lr_slow=3e-3, device="cpu", progress=False, log_every=10)
    _, loss = hist.series("loss")
    assert loss[-1] < loss[0]
    for key in ("L_reconst", "L_mask", "L_coverage", "L_centering"):
        assert key in hist.keys()
    # a model continued from it keeps the image path and draws a new keypoint head
    again = kd.continue_from(model, dataclasses.replace(model.config, num_keypoints=3), seed=1)
    assert torch.equal(again.encoder.out.weight, model.encoder.out.weight)
    assert again.keypoint_head.out.out_channels == 3


# ------------------------------------------------------------------ the stored stage
def test_the_shipped_reconstruction_stage_matches_its_recipe():
    from mvbook.methods.keypoint_discovery import pretrained

    plan = kd.settings("quick")
    model, card = pretrained.load_reconstruction(plan, "quick")
    # a test that fails when the recipe changes without the weights being retrained
    assert card["recipe"] == pretrained.recipe_digest(plan, "quick")
    assert card["steps"] == plan.reconstruction_steps
    assert 0.2 < card["held_out"]["mask IoU"] <= 1.0
    # the image path is the stored one, the keypoint path a fresh draw
    other, _ = pretrained.load_reconstruction(plan, "quick", seed=5)
    assert torch.equal(model.encoder.out.weight, other.encoder.out.weight)
    assert not torch.equal(model.keypoint_head.out.weight, other.keypoint_head.out.weight)


def test_a_changed_or_corrupted_stage_is_refused(tmp_path):
    import shutil

    from mvbook.methods.keypoint_discovery import pretrained
    from mvbook.zoo.store import ZooError

    plan = kd.settings("quick")
    src = pretrained.weights_folder("quick")
    for name in ("reconstruction.pt", "reconstruction.json"):
        shutil.copy(src / name, tmp_path / name)
    changed = dataclasses.replace(plan, reconstruction_steps=plan.reconstruction_steps + 1)
    with pytest.raises(ZooError, match="recipe changed.*keypoint_discovery.pretrained"):
        pretrained.load_reconstruction(changed, "quick", folder=tmp_path)
    data = bytearray((tmp_path / "reconstruction.pt").read_bytes())
    data[-20] ^= 0xFF
    (tmp_path / "reconstruction.pt").write_bytes(bytes(data))
    with pytest.raises(ZooError, match="corrupted"):
        pretrained.load_reconstruction(plan, "quick", folder=tmp_path)
    with pytest.raises(ZooError, match="no card"):
        pretrained.load_reconstruction(plan, "quick", folder=tmp_path / "missing")


def test_the_rebuild_command_trains_and_stores_a_stage(tmp_path):
    from mvbook.methods.keypoint_discovery import pretrained

    assert pretrained.main(["--profile", "smoke", "--out", str(tmp_path), "--device", "cpu"]) == 0
    plan = kd.settings("smoke")
    model, card = pretrained.load_reconstruction(plan, "smoke", folder=tmp_path)
    assert card["steps"] == plan.reconstruction_steps and "mask IoU" in card["held_out"]
    with pytest.raises(SystemExit):  # never replaces existing weights without --overwrite
        pretrained.main(["--profile", "smoke", "--out", str(tmp_path)])


def test_keypoint_diagnostics_against_a_loop():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(3)
    masks = torch.zeros(2, 2, 10, 12, dtype=torch.bool)
    masks[:, :, 2:8, 3:6] = True
    x = torch.rand(2, 2, 5, 2, generator=g) * torch.tensor([14.0, 12.0]) - 1
    frames = SimpleNamespace(masks=masks)
    d = kd.keypoint_diagnostics({"reprojected_frame": x}, frames)
    on = [bool(0 <= round(float(u)) < 12 and 0 <= round(float(v)) < 10
               and masks[f, c, round(float(v)), round(float(u))])
          for f in range(2) for c in range(2) for u, v in x[f, c]]
    assert d["on person %"] == pytest.approx(100 * np.mean(on))
    ys, xs = np.nonzero(masks[0, 0].numpy())
    person = np.hypot(xs - xs.mean(), ys - ys.mean()).mean()
    assert d["person px"] == pytest.approx(person, rel=1e-5)
    spread = np.mean([np.linalg.norm(x[f, c].numpy() - x[f, c].numpy().mean(0), axis=1).mean()
                      for f in range(2) for c in range(2)])
    assert d["spread px"] == pytest.approx(spread, rel=1e-5)


def test_mean_pose_metrics_is_the_error_of_the_training_mean():
    from types import SimpleNamespace

    tr = SimpleNamespace(joints3d=torch.tensor([[[0.0, 0, 0], [10, 0, 0]], [[0, 0, 0], [30, 0, 0]]]))
    te = SimpleNamespace(joints3d=torch.tensor([[[5.0, 5, 5], [25, 5, 5]]]))
    # mean root-relative pose: joint 1 at +20 mm; the test frame has it at +20 too: error 0
    assert kd.mean_pose_metrics(tr, te)["mpjpe"] == pytest.approx(0.0, abs=1e-6)


def test_main_runs_the_claims_pair_in_the_smoke_profile(capsys):
    assert kd.main(profile="smoke", device="cpu") == 0
    out = capsys.readouterr().out
    assert "reconst (latent): mpjpe" in out and "+centering (keypoints): mpjpe" in out
