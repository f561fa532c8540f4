from __future__ import annotations

import pytest
import torch

from mvbook.skeletons import (
    H36M_17,
    PANOPTIC_15,
    PANOPTIC_19,
    SHELF_14,
    SKELETONS,
    Skeleton,
    conversion_table,
    convert_joints,
    convert_mask,
    flip_joints,
    get_skeleton,
    mapping_matrix,
)

H36M_ORDER = [
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
    "neck_nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
]  # fmt: skip
PANOPTIC_ORDER = [
    "neck", "nose", "body_center", "l_shoulder", "l_elbow", "l_wrist", "l_hip", "l_knee", "l_ankle",
    "r_shoulder", "r_elbow", "r_wrist", "r_hip", "r_knee", "r_ankle",
]  # fmt: skip
SHELF_ORDER = [
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow", "r_shoulder",
    "l_shoulder", "l_elbow", "l_wrist", "bottom_head", "top_head",
]  # fmt: skip


def test_joint_orders_and_roots():
    assert (
        list(H36M_17.joint_names) == H36M_ORDER and H36M_17.name == "h36m17" and H36M_17.root == 0
    )
    assert list(PANOPTIC_15.joint_names) == PANOPTIC_ORDER and PANOPTIC_15.root == 2
    assert list(PANOPTIC_19.joint_names) == PANOPTIC_ORDER + ["l_eye", "l_ear", "r_eye", "r_ear"]
    assert list(SHELF_14.joint_names) == SHELF_ORDER
    assert get_skeleton("h36m17") is H36M_17 and get_skeleton("Shelf14") is SHELF_14
    assert get_skeleton(PANOPTIC_19) is PANOPTIC_19
    assert set(SKELETONS) == {"h36m17", "panoptic15", "panoptic19", "shelf14"}
    with pytest.raises(ValueError, match="unknown skeleton"):
        get_skeleton("coco")
    with pytest.raises(TypeError):
        get_skeleton(3)


@pytest.mark.parametrize("skel", list(SKELETONS.values()), ids=list(SKELETONS))
def test_bones_form_a_tree_from_root(skel: Skeleton):
    n = skel.num_joints
    assert len(skel.bones) == n - 1
    children = {c for _, c in skel.bones}
    assert skel.root not in children and len(children) == n - 1
    # every joint reachable from the root
    reach, frontier = {skel.root}, [skel.root]
    while frontier:
        p = frontier.pop()
        for a, b in skel.bones:
            if a == p and b not in reach:
                reach.add(b)
                frontier.append(b)
    assert reach == set(range(n))
    parents = skel.parents
    assert parents[skel.root] == -1 and all(parents[c] == p for p, c in skel.bones)


@pytest.mark.parametrize("skel", list(SKELETONS.values()), ids=list(SKELETONS))
def test_flip_pairs_are_left_right(skel: Skeleton):
    for a, b in skel.flip_pairs:
        na, nb = skel.joint_names[a], skel.joint_names[b]
        assert {na[:2], nb[:2]} == {"l_", "r_"} and na[2:] == nb[2:]
    perm = skel.flip_permutation
    assert sorted(perm) == list(range(skel.num_joints))
    assert all(perm[perm[i]] == i for i in range(skel.num_joints))
    # bones map to bones under the flip
    bones = {frozenset(b) for b in skel.bones}
    assert {frozenset((perm[a], perm[b])) for a, b in skel.bones} == bones
    sides = skel.sides
    for j, name in enumerate(skel.joint_names):
        expected = (
            "left" if name.startswith("l_") else "right" if name.startswith("r_") else "center"
        )
        assert sides[j] == expected


def test_flip_joints():
    x = torch.randn(2, 17, 3)
    y = flip_joints(x, "h36m17")
    torch.testing.assert_close(y[:, 1], x[:, 4])
    torch.testing.assert_close(y[:, 0], x[:, 0])
    torch.testing.assert_close(flip_joints(y, "h36m17"), x)
    m = flip_joints(x, H36M_17, axis=0)
    torch.testing.assert_close(m[:, 16, 0], -x[:, 13, 0])
    uv = torch.tensor([[[0.0, 5.0]] * 14])
    f = flip_joints(uv, "shelf14", image_width=100)
    assert f[0, 0, 0].item() == 99.0 and f[0, 0, 1].item() == 5.0
    with pytest.raises(ValueError, match="joints"):
        flip_joints(torch.zeros(3, 16, 3), "h36m17")
    with pytest.raises(ValueError):
        flip_joints(x, "h36m17", image_width=10, axis=0)


def _named(joints: torch.Tensor, skel: Skeleton) -> dict[str, torch.Tensor]:
    return {n: joints[..., i, :] for i, n in enumerate(skel.joint_names)}


def test_convert_h36m_to_shelf_and_panoptic_by_hand():
    torch.manual_seed(0)
    x = torch.randn(4, 17, 3, dtype=torch.float64) * 100
    h = _named(x, H36M_17)
    s = convert_joints(x, "h36m17", "shelf14")
    assert s.shape == (4, 14, 3)
    for i, name in enumerate(SHELF_ORDER[:12]):
        torch.testing.assert_close(s[:, i], h[name])
    torch.testing.assert_close(s[:, 12], (h["thorax"] + h["neck_nose"]) / 2)
    torch.testing.assert_close(s[:, 13], h["head"])
    p = convert_joints(x, "h36m17", "panoptic19")
    torch.testing.assert_close(p[:, 0], h["thorax"])
    torch.testing.assert_close(p[:, 1], h["neck_nose"])
    torch.testing.assert_close(p[:, 2], h["pelvis"])
    assert torch.isnan(p[:, 15:]).all() and not torch.isnan(p[:, :15]).any()


def test_convert_shelf_and_panoptic_to_h36m_by_hand():
    torch.manual_seed(1)
    x = torch.randn(3, 14, 3, dtype=torch.float64)
    s = _named(x, SHELF_14)
    h = convert_joints(x, "shelf14", "h36m17")
    pelvis = (s["l_hip"] + s["r_hip"]) / 2
    thorax = (s["l_shoulder"] + s["r_shoulder"]) / 2
    torch.testing.assert_close(h[:, 0], pelvis)
    torch.testing.assert_close(h[:, 7], (pelvis + thorax) / 2)
    torch.testing.assert_close(h[:, 8], thorax)
    torch.testing.assert_close(h[:, 9], (s["bottom_head"] + s["top_head"]) / 2)
    torch.testing.assert_close(h[:, 10], s["top_head"])
    y = torch.randn(3, 19, 3, dtype=torch.float64)
    p = _named(y, PANOPTIC_19)
    h19 = convert_joints(y, "panoptic19", "h36m17")
    ears = (p["l_ear"] + p["r_ear"]) / 2
    torch.testing.assert_close(h19[:, 10], 1.5 * ears - 0.5 * p["neck"])
    h15 = convert_joints(y[:, :15], "panoptic15", "h36m17")
    torch.testing.assert_close(h15[:, 10], 1.5 * p["nose"] - 0.5 * p["neck"])
    torch.testing.assert_close(h15[:, 0], p["body_center"])


def test_mapping_matrix_rows_and_identity():
    for name, skel in SKELETONS.items():
        torch.testing.assert_close(mapping_matrix(name, name), torch.eye(skel.num_joints))
        assert all(not approx for _, _, approx in conversion_table(name, name))
    for a in SKELETONS:
        for b in SKELETONS:
            m = mapping_matrix(a, b, dtype=torch.float64)
            ok = ~torch.isnan(m).any(1)
            # affine combinations: weights sum to one, so conversions commute with translation
            torch.testing.assert_close(m[ok].sum(1), torch.ones(int(ok.sum()), dtype=torch.float64))
    # panoptic19 -> panoptic15 is an exact selection
    m = mapping_matrix("panoptic19", "panoptic15")
    torch.testing.assert_close(m, torch.eye(19)[:15])
    table = conversion_table("shelf14", "h36m17")
    assert table[0] == ("pelvis", "0.5*r_hip + 0.5*l_hip", True)
    assert table[1] == ("r_hip", "r_hip", False)
    assert conversion_table("h36m17", "panoptic19")[15] == ("l_eye", "missing", True)


def test_convert_joints_matches_loop_reference_and_nan_does_not_leak():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 17, 2)
    x[0, 1, 3] = float("nan")  # r_ankle missing
    m = mapping_matrix("h36m17", "shelf14")
    out = convert_joints(x, "h36m17", "shelf14")
    for b in range(2):
        for f in range(5):
            for j in range(14):
                used = [i for i in range(17) if m[j, i] != 0]
                if any(torch.isnan(x[b, f, i]).any() for i in used):
                    assert torch.isnan(out[b, f, j]).all()
                else:
                    ref = sum(m[j, i] * x[b, f, i] for i in used)
                    torch.testing.assert_close(out[b, f, j], ref)
    assert torch.isnan(out[0, 1]).any(-1).sum() == 1  # only r_ankle


def test_convert_mask():
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[1, 2] = False  # r_hip invalid
    out = convert_mask(mask, "shelf14", "h36m17")
    assert out[0].all()
    bad = {n for n, v in zip(H36M_ORDER, out[1].tolist()) if not v}
    assert bad == {"pelvis", "r_hip", "spine"}
    assert (
        ~convert_mask(torch.ones(17, dtype=torch.bool), "h36m17", "panoptic19")
    ).nonzero().flatten().tolist() == [15, 16, 17, 18]
    with pytest.raises(ValueError, match="mask"):
        convert_mask(torch.ones(3, dtype=torch.bool), "h36m17", "shelf14")


def test_roundtrip_conversions_keep_shared_joints():
    torch.manual_seed(3)
    x = torch.randn(6, 17, 3)
    back = convert_joints(convert_joints(x, "h36m17", "panoptic15"), "panoptic15", "h36m17")
    limbs = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 16, 0]
    torch.testing.assert_close(back[:, limbs], x[:, limbs])


def test_convert_validation():
    with pytest.raises(ValueError, match="joints"):
        convert_joints(torch.zeros(2, 15, 3), "h36m17", "shelf14")
    with pytest.raises(TypeError, match="joints"):
        convert_joints(torch.zeros(17, 3, dtype=torch.int64), "h36m17", "shelf14")
    with pytest.raises(ValueError, match="root"):
        Skeleton("bad", ("a", "b"), ((0, 1),), (), root=5)
