"""The studio's ray-caster: masks, IUV, depth, epipolar consistency, occlusion, multi-person."""

from __future__ import annotations

import math

import pytest
import torch

from mvbook.geometry import Camera
from mvbook.studio import body as B
from mvbook.studio import render as Rn
from mvbook.studio.appearance import RoomStyle
from mvbook.studio.rigs import make_rig
from mvbook.studio.scenes import plan_sequences, pose_sequence, profile_config, seeded_generator


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _render(scene: str = "single", size=(64, 64), distortion=False, n_seq=3, **kw):
    cfg = profile_config("smoke", scene, 0, image_size=size, distortion=distortion, **kw)
    rig = make_rig(cfg.rig, cfg.image_size, cfg.distortion)
    style = RoomStyle.sample(seeded_generator("room", 0), rig.room.outdoor)
    renderer = Rn.Renderer(rig.cameras, rig.room, style)
    plans = plan_sequences(cfg)
    step = max(1, len(plans) // n_seq)
    outs = []
    for plan in plans[::step][:n_seq]:
        prims, joints, looks = pose_sequence(plan)
        lights = plan.lighting.vector().expand(joints.shape[0], -1)
        out = renderer.render(prims.float(), looks, lights, joints.float())
        outs.append((plan, prims.float(), joints.float(), out))
    return renderer, outs


@pytest.fixture(scope="module")
def single():
    torch.set_num_threads(1)
    return _render("single", (64, 64), actions=("walk", "kick", "crawl"))


def _joint_pixels(out):
    uv = out.joints2d.round().long()
    H, W = out.masks.shape[-2:]
    u = uv[..., 0].clamp(0, W - 1)
    v = uv[..., 1].clamp(0, H - 1)
    return u, v


def test_visible_joints_fall_inside_their_mask(single):
    inside, total = 0, 0
    for _, _, _, out in single[1]:
        u, v = _joint_pixels(out)  # (F, C, P, J)
        F_, C, P, J = u.shape
        fi = torch.arange(F_)[:, None, None, None].expand_as(u)
        ci = torch.arange(C)[None, :, None, None].expand_as(u)
        ids = out.masks[fi, ci, v, u].long()
        pid = torch.arange(P)[None, None, :, None].expand_as(u) + 1
        vis = out.visibility
        inside += int(((ids == pid) & vis).sum())
        total += int(vis.sum())
    assert total > 100
    assert inside / total >= 0.98, f"{inside}/{total} visible joints inside their mask"


def test_iuv_part_at_joint_pixel_is_adjacent(single):
    adj = B.joint_part_adjacency()
    good, total = 0, 0
    for _, _, _, out in single[1]:
        u, v = _joint_pixels(out)
        F_, C, P, J = u.shape
        fi = torch.arange(F_)[:, None, None, None].expand_as(u)
        ci = torch.arange(C)[None, :, None, None].expand_as(u)
        part = out.iuv[fi, ci, 0, v, u].long()
        jj = torch.arange(J)[None, None, None, :].expand_as(u)
        ok = adj[jj, part]
        good += int((ok & out.visibility).sum())
        total += int(out.visibility.sum())
    assert good / total >= 0.95, f"{good}/{total} joint pixels show an adjacent part"


def test_occluded_joints_exist_and_visibility_needs_the_image(single):
    vis = torch.cat([o.visibility.reshape(-1) for *_, o in single[1]])
    inim = torch.cat([o.in_image.reshape(-1) for *_, o in single[1]])
    assert bool((vis <= inim).all())
    assert 0.02 < 1 - vis.float().mean() < 0.6  # some self-occlusion, not everything hidden


def test_depth_agrees_with_ray_geometry(single):
    renderer, outs = single
    cams = renderer.cameras
    limb_parts = [B.PART_NAMES.index(n) for n in
                  ("r_upper_arm", "r_forearm", "l_upper_arm", "l_forearm",
                   "r_thigh", "r_shin", "l_thigh", "l_shin")]
    for _, prims, _, out in outs[:2]:
        f = 0
        for c in range(renderer.num_views):
            depth = out.depth[f, c]
            ys, xs = torch.nonzero(depth > 0, as_tuple=True)
            assert len(ys) > 20
            uv = torch.stack([xs, ys], -1).float()
            X = cams[c].pixel_to_world(uv, depth[ys, xs])  # (N, 3)
            # back-projected points project back to their pixels
            assert torch.allclose(cams[c].project(X), uv, atol=1e-2)
            # ... and lie on the surface of the part the IUV names (exact SDF for round limbs)
            part = out.iuv[f, c, 0, ys, xs].long()
            for p in limb_parts:
                sel = part == p
                if not bool(sel.any()):
                    continue
                k = int(torch.nonzero(prims.part == p)[0])
                a = prims.center[f, k] - prims.rot[f, k, :, 2] * prims.h[f, k] * prims.scale[f, k, 2]
                b = prims.center[f, k] + prims.rot[f, k, :, 2] * prims.h[f, k] * prims.scale[f, k, 2]
                ab = b - a
                s = ((X[sel] - a) @ ab / (ab @ ab)).clamp(0, 1)
                dist = (X[sel] - (a + s[:, None] * ab)).norm(dim=-1)
                assert (dist - prims.scale[f, k, 0]).abs().max() < 0.5  # mm


def test_depth_of_a_sphere_is_exact():
    cam = Camera.look_at((0.0, -3000.0, 1000.0), (0.0, 0.0, 1000.0), focal=60.0,
                         image_size=(31, 31))
    prims = B.Primitives(
        center=torch.tensor([[[0.0, 0.0, 1000.0]]]), rot=torch.eye(3)[None, None],
        scale=torch.full((1, 1, 3), 200.0), h=torch.zeros(1, 1),
        part=torch.tensor([3]), person=torch.tensor([0]))
    r = Rn.Renderer(Camera.stack([cam]))
    looks = torch.zeros(1, 30)
    out = r.render(prims, looks, torch.zeros(1, 12), torch.zeros(1, 1, 17, 3))
    d = out.depth[0, 0]
    assert math.isclose(float(d[15, 15]), 2800.0, abs_tol=1e-2)
    # every hit pixel's depth: the ray meets the sphere |X - c| = 200
    ys, xs = torch.nonzero(d > 0, as_tuple=True)
    X = cam.pixel_to_world(torch.stack([xs, ys], -1).float(), d[ys, xs])
    assert ((X - torch.tensor([0.0, 0.0, 1000.0])).norm(dim=-1) - 200).abs().max() < 0.05
    # silhouette radius: f * r / sqrt(D^2 - r^2) pixels
    area = float((d > 0).sum())
    rad = 60 * 200 / math.sqrt(3000**2 - 200**2)
    assert abs(area - math.pi * rad**2) < 2 * math.pi * rad


def _fundamental(ca: Camera, cb: Camera) -> torch.Tensor:
    R = cb.R @ ca.R.T
    t = cb.t - R @ ca.t
    tx = torch.tensor([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return torch.linalg.inv(cb.K).T @ tx @ R @ torch.linalg.inv(ca.K)


def test_same_surface_point_is_epipolar_consistent():
    renderer, outs = _render("single", (160, 160), n_seq=1, actions=("walk",), frames=(1, 1))
    cams = renderer.cameras
    out = outs[0][3]
    f, a, b = 0, 0, 2
    F = _fundamental(cams[a], cams[b])
    ia, ib = out.iuv[f, a], out.iuv[f, b]
    ys, xs = torch.nonzero(ia[0] > 0, as_tuple=True)
    yb, xb = torch.nonzero(ib[0] > 0, as_tuple=True)
    pa = ia[:, ys, xs].T  # (Na, 3)
    pb = ib[:, yb, xb].T
    # the nearest chart point of view b on the same part, measured on the rest-pose body
    ra = B.rest_surface_points(pa[:, 0].long(), pa[:, 1], pa[:, 2]).float()
    rb = B.rest_surface_points(pb[:, 0].long(), pb[:, 1], pb[:, 2]).float()
    same = pa[:, None, 0] == pb[None, :, 0]
    dist = torch.where(same, torch.cdist(ra, rb), torch.tensor(float("inf")))
    dmin, j = dist.min(1)
    keep = dmin < 10.0  # mm: the same surface point is seen in both views
    assert int(keep.sum()) > 20
    xa = torch.stack([xs, ys, torch.ones_like(xs)], -1).float()[keep]
    xbm = torch.stack([xb, yb, torch.ones_like(xb)], -1).float()[j[keep]]
    lines = xa @ F.T
    lines = lines / lines[:, :2].norm(dim=-1, keepdim=True)
    d = (lines * xbm).sum(-1).abs()
    assert float(d.median()) < 1.0, f"median epipolar distance {float(d.median()):.2f} px"
    assert float((d < 1.5).float().mean()) > 0.9


def test_distorted_rig_renders_consistently():
    _, outs = _render("single", (48, 48), distortion=True, n_seq=1, actions=("walk",))
    out = outs[0][3]
    u, v = _joint_pixels(out)
    F_, C, P, J = u.shape
    fi = torch.arange(F_)[:, None, None, None].expand_as(u)
    ci = torch.arange(C)[None, :, None, None].expand_as(u)
    ids = out.masks[fi, ci, v, u].long()
    vis = out.visibility
    assert float(((ids == 1) & vis).sum()) / float(vis.sum()) >= 0.95


def test_multi_person_masks_are_disjoint_and_resolved_by_depth():
    renderer, outs = _render("multi", (64, 36), n_seq=2, persons=(3, 3))
    for _plan, prims, joints, out in outs:
        P = joints.shape[1]
        assert P >= 2
        # each person alone
        solo = []
        for p in range(P):
            sel = prims.person == p
            sp = B.Primitives(prims.center[:, sel], prims.rot[:, sel], prims.scale[:, sel],
                              prims.h[:, sel], prims.part[sel], torch.zeros_like(prims.part[sel]))
            looks = torch.zeros(1, 30)
            o = renderer.render(sp, looks, torch.zeros(joints.shape[0], 12), joints[:, p:p + 1])
            solo.append(o)
        ids = out.masks.long()
        for p in range(P):
            mine = ids == p + 1
            assert bool((solo[p].masks[mine] == 1).all())  # a person's pixels are its own
            for q in range(P):
                if q != p:
                    assert not bool((mine & (ids == q + 1)).any())
        # where two people overlap, the nearer one owns the pixel
        d = torch.stack([torch.where(s.masks > 0, s.depth, float("inf")) for s in solo])
        near = d.argmin(0) + 1
        hit = torch.isfinite(d).any(0)
        assert bool((ids[hit] == near[hit]).all())
        assert bool((ids[~hit] == 0).all())


@pytest.mark.parametrize("rig_name", ["h36m", "panoptic", "shelf", "campus"])
def test_every_rig_sees_a_person(rig_name):
    rig = make_rig(rig_name, (40, 30), distortion=True)
    style = RoomStyle.sample(seeded_generator("room", 1), rig.room.outdoor)
    renderer = Rn.Renderer(rig.cameras, rig.room, style)
    assert torch.isfinite(renderer.background).all()
    assert float(renderer.background.std()) > 0.02  # a textured room, not a flat colour
    plan = plan_sequences(profile_config("smoke", "single", 0, actions=("walk",), frames=(1, 1)))[0]
    prims, joints, looks = pose_sequence(plan)
    out = renderer.render(prims.float(), looks, torch.zeros(1, 12), joints.float())
    seen = (out.masks > 0).flatten(2).sum(-1)[0]  # pixels of the person per view
    assert int((seen > 0).sum()) >= len(rig.camera_names) - 1
    assert bool((out.bbox[0, seen > 0, 0, 2] > out.bbox[0, seen > 0, 0, 0]).all())


def test_bad_renderer_arguments_raise():
    rig = make_rig("h36m", (32, 32))
    with pytest.raises(ValueError, match="supersample"):
        Rn.Renderer(rig.cameras, supersample=0)
    with pytest.raises(ValueError, match="cameras"):
        Rn.Renderer("not a camera")
    with pytest.raises(ValueError, match="image_size"):
        make_rig("h36m", (0, 32))
    with pytest.raises(ValueError, match="rig"):
        make_rig("kinect")


def test_left_limbs_are_marked_and_right_limbs_are_not():
    # the left/right cue of the studio bodies (chapter 10): every left limb part is light, and is
    # its right partner's colour lightened, at the same chart point, for any outfit
    from mvbook.studio.appearance import SubjectLook, albedo

    g = torch.Generator().manual_seed(0)
    looks = torch.stack([SubjectLook.sample(g).vector() for _ in range(8)])
    left = [i for i, n in enumerate(B.PART_NAMES) if n.startswith("l_")]
    right = [B.PART_NAMES.index("r_" + B.PART_NAMES[i][2:]) for i in left]
    assert len(left) == 6
    n = 200
    person = torch.randint(0, len(looks), (n,), generator=g)
    u, v = torch.rand(n, generator=g), torch.rand(n, generator=g)
    for li, ri in zip(left, right):
        col_l = albedo(looks, person, torch.full((n,), li), u, v)
        col_r = albedo(looks, person, torch.full((n,), ri), u, v)
        assert (col_l > 0.65).all(), B.PART_NAMES[li]
        assert (col_r < 0.65).any(), B.PART_NAMES[ri]
        torch.testing.assert_close(col_l, 0.25 * col_r + 0.7)
