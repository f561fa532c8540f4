"""The studio's motion (pybullet mocap + FK) and body (primitives, surface chart)."""

from __future__ import annotations

import json

import pytest
import torch

from mvbook.studio import body as B
from mvbook.studio import motion as M


def test_clips_parse_with_44_values_per_frame():
    assert len(M.MAIN_CLIPS) == 15 and len(M.CLIPS) == 20
    for name in M.CLIPS:
        path = M.mocap_dir() / M.CLIPS[name]
        frames = json.loads(path.read_text())["Frames"]
        assert all(len(f) == 44 for f in frames)
    clip = M.load_clip("walk")
    assert clip.quats.shape == (clip.num_frames, len(M.LINK_NAMES), 4)
    with pytest.raises(ValueError, match="clip"):
        M.load_clip("moonwalk")


def test_urdf_offsets_give_a_human_sized_rest_pose():
    prims, joints = B.rest_pose_primitives()
    j = joints[0]
    names = B.H36M_JOINTS
    height = float(prims.center[0, :, 2].max() + 150)
    assert 1500 < height < 1800
    # right joints on the right (-y when facing +x), knees below hips, head above thorax
    assert j[names.index("r_hip"), 1] < 0 < j[names.index("l_hip"), 1]
    assert j[names.index("r_knee"), 2] < j[names.index("r_hip"), 2]
    assert j[names.index("head"), 2] > j[names.index("neck_nose"), 2] > j[names.index("thorax"), 2]
    assert abs(float(prims.lowest_z().min())) < 1e-6


def test_fk_keeps_bone_lengths_and_units():
    params = M.MotionParams("cartwheel", 30, 25.0, start=0.4, heading=1.0)
    pos, quats = M.sequence_pose(params)
    body = B.build_body(B.BodyShape(height=1.1))
    rot, lp = M.forward_kinematics(pos, quats, body.offsets)
    rot, lp = M.to_world(rot, lp)
    _, joints = B.pose_body(body, rot, lp)
    bones = [(0, 1), (1, 2), (2, 3), (11, 12), (12, 13), (8, 11)]
    for a, b in bones:
        length = (joints[:, a] - joints[:, b]).norm(dim=-1)
        assert float(length.std()) < 1e-6 * float(length.mean()) + 1e-6
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=rot.dtype).expand_as(rot),
                          atol=1e-9)
    thigh = float((joints[0, 1] - joints[0, 2]).norm())
    assert 400 < thigh < 520  # mm


def test_looping_clips_continue_smoothly_and_stay_in_the_volume():
    params = M.MotionParams("run", 80, 30.0, start=0.0)  # 2.7 s: several cycles of a 0.8 s clip
    pos, _ = M.sequence_pose(params)
    step = (pos[1:] - pos[:-1]).norm(dim=-1)
    assert float(step.max()) < 3 * float(step.median()) + 5
    turned = M.MotionParams("run", 80, 30.0, start=0.0, turn_rate=4.0)
    assert M.path_extent(turned) < 0.5 * M.path_extent(params)


def test_mirroring_swaps_sides():
    params = M.MotionParams("punch", 10, 10.0, start=0.5)
    pos, q = M.sequence_pose(params)
    pos_m, q_m = M.sequence_pose(M.MotionParams("punch", 10, 10.0, start=0.5, mirror=True))
    body = B.build_body()
    _, j = B.pose_body(body, *M.to_world(*M.forward_kinematics(pos, q, body.offsets)))
    _, jm = B.pose_body(body, *M.to_world(*M.forward_kinematics(pos_m, q_m, body.offsets)))
    names = B.H36M_JOINTS
    flip = [names.index(n.replace("r_", "@").replace("l_", "r_").replace("@", "l_")) for n in names]
    # mirrored = reflected about the body's sagittal plane (world y -> -y before heading, then
    # re-centred): joint distances are preserved under the left/right relabelling
    d = torch.cdist(j, j)
    dm = torch.cdist(jm[:, flip], jm[:, flip])
    assert torch.allclose(d, dm, atol=1e-6)


def test_surface_chart_roundtrip_and_rest_points():
    h = torch.tensor([0.0, 0.5, 2.0])[:, None].expand(3, 50)
    u = torch.rand(3, 50)
    v = torch.rand(3, 50) * 0.96 + 0.02
    q = B.uv_to_local(u, v, h)
    u2, v2 = B.local_to_uv(q, h)
    du = (u - u2).abs()
    assert float(torch.minimum(du, 1 - du).max()) < 1e-5
    assert float((v - v2).abs().max()) < 1e-5
    # points lie on the unit capsule
    zc = q[..., 2] - q[..., 2].clamp(min=-h, max=h)
    assert torch.allclose(q[..., 0] ** 2 + q[..., 1] ** 2 + zc**2, torch.ones(()), atol=1e-5)
    pts = B.rest_surface_points(torch.tensor([3, 12]), torch.tensor([0.0, 0.5]),
                                torch.tensor([0.99, 0.99]))
    assert pts[0, 2] > 1500 and pts[1, 2] < 120  # top of the head, lower end of the right shin
    with pytest.raises(ValueError, match="part"):
        B.rest_surface_points(torch.tensor([0]), torch.tensor([0.0]), torch.tensor([0.0]))


def test_body_shape_validation():
    with pytest.raises(ValueError, match="BodyShape.height"):
        B.BodyShape(height=3.0)
