"""Person crops: boxes, crop cameras, resampling and normalisation (mvbook.crops)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mvbook import crops
from mvbook.geometry import Camera
from mvbook.studio import render as Rn
from mvbook.studio.appearance import RoomStyle
from mvbook.studio.rigs import make_rig
from mvbook.studio.scenes import plan_sequences, pose_sequence, profile_config


@pytest.fixture(scope="module")
def studio_frame(one_torch_thread):
    """One rendered frame of the smoke studio: its cameras, 3D joints and rendered output."""
    cfg = profile_config("smoke", "single", 0, image_size=(96, 96), actions=("walk",),
                         frames=(1, 1))
    rig = make_rig(cfg.rig, cfg.image_size, cfg.distortion)
    style = RoomStyle.sample(torch.Generator().manual_seed(0), rig.room.outdoor)
    renderer = Rn.Renderer(rig.cameras, rig.room, style)
    plan = plan_sequences(cfg)[0]
    prims, joints, looks = pose_sequence(plan)
    lights = plan.lighting.vector().expand(joints.shape[0], -1)
    out = renderer.render(prims.float(), looks, lights, joints.float())
    return renderer.cameras, joints[0, 0].float(), out


def test_crop_of_a_rendered_frame_lands_joints_on_the_crop_camera(studio_frame):
    cameras, joints, out = studio_frame
    uv = out.joints2d[0, :, 0].double()  # (C, J, 2): the renderer's projection of the joints
    box = crops.square_boxes(out.bbox[0, :, 0].double(), 1.25)  # (C, 4)
    cam = Camera(cameras.K.double(), cameras.R.double(), cameras.t.double())
    crop_cam = crops.crop_camera(cam, box, 48)
    projected = crop_cam.project(joints.double()[None].expand(len(box), -1, -1))
    torch.testing.assert_close(projected, crops.crop_points(uv, box, 48), atol=1e-4, rtol=0)
    # and the crop camera is Camera.crop, K' = A K
    torch.testing.assert_close(crop_cam.K, cam.crop(box, (48, 48)).K)
    assert crop_cam.image_size.tolist() == [[48, 48]] * len(box)


def test_crop_samples_where_the_crop_camera_says():
    # an image whose value is its own u (and v) coordinate: each crop pixel must hold the image
    # coordinate that the inverse of crop_points assigns to its centre
    H, W = 60, 80
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                          indexing="ij")
    img = torch.stack([u, v, u + v])[None]
    box = torch.tensor([[20.3, 11.7, 50.3, 41.7]])  # 30 px box, interior of the image
    S = 12
    out = crops.crop_images(img, box, S, supersample=1)[0]
    i = torch.arange(S, dtype=torch.float32)
    # crop pixel centre i -> image coordinate: invert u' = (u - x0 + 1/2) S / w - 1/2
    u_src = (i + 0.5) * 30.0 / S + box[0, 0] - 0.5
    v_src = (i + 0.5) * 30.0 / S + box[0, 1] - 0.5
    torch.testing.assert_close(out[0], u_src[None].expand(S, S), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], v_src[:, None].expand(S, S), atol=1e-4, rtol=0)
    # supersampling averages a linear image to the same values
    torch.testing.assert_close(crops.crop_images(img, box, S, supersample=3)[0], out, atol=1e-4,
                               rtol=0)
    # the crop points of the same coordinates are the crop pixel indices
    pts = torch.stack([u_src, v_src], -1)[None]
    torch.testing.assert_close(crops.crop_points(pts, box, S)[0], torch.stack([i, i], -1),
                               atol=1e-5, rtol=0)


def test_crop_images_equals_opencv_warp_affine():
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(1, 3, 50, 70, generator=g) * 255).round()
    box = torch.tensor([[10.25, 5.5, 42.25, 37.5]])  # 32 px -> 24 px
    S = 24
    ours = crops.crop_images(img, box, S, supersample=1)[0].permute(1, 2, 0).numpy()
    s = S / 32.0
    # the same map as crop_points, as a 2x3 affine from image to crop pixels
    A = np.array([[s, 0, (0.5 - 10.25) * s - 0.5], [0, s, (0.5 - 5.5) * s - 0.5]])
    src = img[0].permute(1, 2, 0).numpy().astype(np.float32)
    ref = cv2.warpAffine(src, A, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    # OpenCV quantises bilinear weights to 1/32: compare to that precision
    np.testing.assert_allclose(ours, ref, atol=255 / 32)
    assert np.abs(ours - ref).mean() < 1.0


def test_uint8_crops_are_rounded_and_float_crops_keep_their_dtype():
    img = torch.full((2, 3, 20, 20), 100, dtype=torch.uint8)
    box = torch.tensor([[2.0, 2.0, 18.0, 18.0], [0.0, 0.0, 20.0, 20.0]])
    out = crops.crop_images(img, box, 8)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 8, 8)
    assert int(out[0, :, 2:6, 2:6].min()) == 100
    out64 = crops.crop_images(img.double(), box, 8)
    assert out64.dtype == torch.float64


def test_square_boxes_are_square_centred_and_scaled():
    bbox = torch.tensor([[10.0, 20.0, 30.0, 60.0], [5.0, 5.0, 6.0, 6.0]])
    sq = crops.square_boxes(bbox, 1.5)
    side = sq[:, 2:] - sq[:, :2]
    torch.testing.assert_close(side[:, 0], side[:, 1])
    torch.testing.assert_close(side[:, 0], torch.tensor([60.0, 12.0]))  # 1.5 x 40; 1.5 x 8 (min)
    torch.testing.assert_close((sq[:, :2] + sq[:, 2:]) / 2, (bbox[:, :2] + bbox[:, 2:]) / 2)


def test_normalize_images_uses_the_named_statistics():
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[0, :, 0, 0] = 255
    y = crops.normalize_images(x)
    mean = torch.tensor(crops.IMAGE_MEAN)
    std = torch.tensor(crops.IMAGE_STD)
    torch.testing.assert_close(y[0, :, 1, 1], -mean / std)
    torch.testing.assert_close(y[0, :, 0, 0], (1 - mean) / std)


def test_heatmap_and_crop_pixels_round_trip_like_a_resize():
    uv = torch.tensor([[0.0, 0.0], [15.0, 7.5]])
    h = crops.crop_to_heatmap(uv, 16, 64)
    torch.testing.assert_close(crops.heatmap_to_crop(h, 16, 64), uv)
    cam = Camera(torch.eye(3), torch.eye(3), torch.zeros(3), image_size=(64, 64))
    K = cam.resize((16, 16)).K
    hom = torch.cat([uv, torch.ones(2, 1)], -1)
    torch.testing.assert_close((hom @ K.T)[:, :2], h)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: crops.square_boxes(torch.zeros(3, 5)), "bbox must have shape (..., 4)"),
        (lambda: crops.square_boxes(torch.zeros(3, 4), scale=0), "scale must be positive"),
        (lambda: crops.crop_images(torch.zeros(2, 3, 8, 8), torch.zeros(3, 4), 4),
         "boxes must have shape (2, 4)"),
        (lambda: crops.crop_images(torch.zeros(3, 8, 8), torch.zeros(3, 4), 4),
         "images must have shape (N, 3, H, W)"),
        (lambda: crops.crop_images(torch.zeros(1, 3, 8, 8), torch.ones(1, 4), 0),
         "size must be a positive int"),
        (lambda: crops.crop_points(torch.zeros(4, 3), torch.zeros(4), 8),
         "uv must have shape (..., N, 2)"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        call()


def test_crop_camera_needs_a_camera():
    with pytest.raises(TypeError, match="camera must be a mvbook.geometry.Camera"):
        crops.crop_camera(torch.eye(3), torch.zeros(4), 8)


def test_warp_crops_matches_scipy_affine_transform():
    from scipy import ndimage

    g = torch.Generator().manual_seed(0)
    S = 24
    images = torch.rand(3, 3, S, S, generator=g) * 255
    angle = torch.tensor([0.4, -0.9, 0.0])
    scale = torch.tensor([1.3, 0.8, 1.0])
    shift = torch.tensor([[2.0, -1.5], [0.0, 3.0], [0.5, 0.5]])
    out, _ = crops.warp_crops(images, None, angle, scale, shift)
    c = (S - 1) / 2
    for n in range(3):
        # output (v', u') samples the input at A^-1 (p' - c - t) + c, written in (row, col)
        a, s = float(angle[n]), float(scale[n])
        A = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # (u, v) order
        inv = np.linalg.inv(A)
        swap = np.array([[0, 1], [1, 0]])
        M = swap @ inv @ swap  # (row, col) order
        t = shift[n].numpy()[::-1]
        offset = np.array([c, c]) - M @ (np.array([c, c]) + t)
        rows, cols = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
        src = np.einsum("ij,jhw->ihw", M, np.stack([rows, cols])) + offset[:, None, None]
        inside = ((src >= 0) & (src <= S - 1)).all(0)  # scipy and grid_sample agree there
        assert inside.mean() > 0.4
        for ch in range(3):
            ref = ndimage.affine_transform(images[n, ch].double().numpy(), M, offset, order=1,
                                           mode="constant", cval=0.0)
            np.testing.assert_allclose(out[n, ch].numpy()[inside], ref[inside], atol=1e-3)


def test_warp_crops_moves_points_like_the_pixels_and_checks_arguments():
    S = 32
    img = torch.zeros(1, 3, S, S)
    img[0, :, 5, 20] = 255.0
    p = torch.tensor([[[20.0, 5.0]]])
    out, q = crops.warp_crops(img, p, torch.tensor([0.3]), torch.tensor([1.2]),
                              torch.tensor([[2.0, -3.0]]))
    w = out[0, 0]
    vv, uu = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    centroid = torch.stack([(w * uu).sum(), (w * vv).sum()]) / w.sum()
    torch.testing.assert_close(q[0, 0], centroid, atol=0.1, rtol=0)
    identity, same = crops.warp_crops(img, p, torch.zeros(1), torch.ones(1), torch.zeros(1, 2))
    torch.testing.assert_close(identity, img, atol=1e-4, rtol=0)
    torch.testing.assert_close(same, p)
    with pytest.raises(ValueError, match="scale must be positive"):
        crops.warp_crops(img, p, torch.zeros(1), torch.zeros(1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="angle"):
        crops.warp_crops(img, p, torch.zeros(2), torch.ones(1), torch.zeros(1, 2))


def test_random_warps_stay_in_their_ranges():
    angle, scale, shift = crops.random_warps(2000, 30.0, (0.75, 1.3), 0.1, 100,
                                             torch.Generator().manual_seed(0))
    assert float(angle.abs().max()) <= np.radians(30) + 1e-6
    assert 0.75 - 1e-6 <= float(scale.min()) and float(scale.max()) <= 1.3 + 1e-6
    assert float(shift.abs().max()) <= 10.0 + 1e-6
    assert float(angle.abs().max()) > np.radians(25)  # the range is used, not just its middle


def test_occlude_fills_the_square_of_the_chosen_crops_only():
    from mvbook.crops import occlude

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 4, 3, 20, 20), generator=g, dtype=torch.uint8)
    which = torch.rand(5, 4, generator=g) < 0.5
    got = occlude(images, which, extent=(0.25, 0.75), value=7)
    want = images.clone()
    for i in range(5):  # the slow reference: one crop at a time
        for c in range(4):
            if which[i, c]:
                want[i, c, :, 5:15, 5:15] = 7
    assert torch.equal(got, want) and which.any() and not which.all()
    assert not torch.equal(images, got)  # a copy: the input keeps its pixels
    with pytest.raises(ValueError, match="which must be a bool tensor of shape"):
        occlude(images, which[:, :2])
    with pytest.raises(ValueError, match="extent"):
        occlude(images, which, extent=(0.8, 0.2))


def test_crops_of_distorted_images_are_pinhole_images_of_the_crop_camera():
    # an image whose two channels hold each pixel's own (u, v): a crop sampled at a point returns
    # the distorted image position it looked at
    cam = make_rig("h36m", image_size=(320, 240), distortion=True, dtype=torch.float64).cameras[:2]
    assert cam.dist is not None and cam.dist.abs().max() > 0.01
    W, H = 320, 240
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    coords = torch.stack([uu, vv, torch.zeros_like(uu)])[None].expand(2, 3, H, W)
    # 3D points of a person-sized volume in the capture area
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([800.0, 800.0, 1700.0]) \
        + torch.tensor([0.0, 0.0, 900.0])
    uv_d = cam.project(X[None].expand(2, -1, -1))  # (2, N, 2) with distortion: where the image shows X
    box_d = torch.cat([uv_d.amin(1) - 10, uv_d.amax(1) + 10], -1).float()  # person boxes, distorted px
    box_u = crops.undistort_boxes(box_d, cam)
    uv_u = cam.project(X[None].expand(2, -1, -1), distort=False)  # the same points, pinhole pixels
    assert ((uv_u >= box_u[:, None, :2].double() - 0.5) & (uv_u <= box_u[:, None, 2:].double() - 0.5)).all()
    assert not torch.allclose(box_u, box_d, atol=1.0)  # the distortion moves the box
    box = crops.square_boxes(box_u, 1.0)
    S = 64
    out = crops.crop_images(coords, box, S, supersample=1, camera=cam)
    pinhole = crops.crop_camera(Camera(cam.K, cam.R, cam.t), box.double(), S)
    uv_c = pinhole.project(X[None].expand(2, -1, -1))  # crop px of the undistorted crop camera
    inside = ((uv_c > 2) & (uv_c < S - 3)).all(-1)
    assert inside.float().mean() > 0.3
    # sample the crops (nearly linear content: bilinear interpolation is exact up to distortion curvature)
    grid = (2 * uv_c + 1) / S - 1
    got = torch.nn.functional.grid_sample(out[:, :2].double(), grid[:, None], align_corners=False)[:, :, 0]
    err = (got.permute(0, 2, 1) - uv_d).norm(dim=-1)[inside]
    assert float(err.max()) < 0.05, f"crop sampled {float(err.max()):.3f} px away from the distorted projection"
    # without the camera the same crop is off by the distortion (several px at the edges)
    plain = crops.crop_images(coords, box, S, supersample=1)
    got_p = torch.nn.functional.grid_sample(plain[:, :2].double(), grid[:, None], align_corners=False)[:, :, 0]
    assert float((got_p.permute(0, 2, 1) - uv_d).norm(dim=-1)[inside].max()) > 1.0


@pytest.mark.parametrize("distortion", [False, True])
def test_crop_person_labels_are_projections_of_its_pinhole_cameras(distortion):
    cam = make_rig("h36m", image_size=(320, 240), distortion=distortion, dtype=torch.float64).cameras
    g = torch.Generator().manual_seed(1)
    X = (torch.rand(17, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([600.0, 600.0, 1700.0]) \
        + torch.tensor([0.0, 0.0, 900.0])
    uv_d = cam.project(X[None].expand(len(cam), -1, -1))  # the image's (distorted) 2D labels
    bbox = torch.cat([uv_d.amin(1) - 5, uv_d.amax(1) + 5], -1)
    images = torch.zeros(len(cam), 3, 240, 320, dtype=torch.uint8)
    cut = crops.crop_person(images, cam, bbox, uv_d, 64, 1.2)
    assert cut.camera.dist is None and cut.images.shape == (len(cam), 3, 64, 64)
    torch.testing.assert_close(cut.camera.project(X[None].expand(len(cam), -1, -1)), cut.joints2d,
                               atol=1e-6, rtol=0)
