"""The metrics' NaN policy (mvbook.metrics module docstring) and their argument errors, against
slow obvious references (numpy loops, scipy's orthogonal Procrustes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from mvbook.metrics import (
    auc3d,
    epipolar_error,
    mpjpe,
    multiperson_ap,
    n_mpjpe,
    pa_mpjpe,
    pck3d,
    pcp,
    retrieval_pa_mpjpe_at_k,
)

NAN, INF = float("nan"), float("inf")
B, J = 5, 17


def _poses(seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randn(B, J, 3, generator=g, dtype=torch.float64) * 300.0
    pred = 1.2 * gt + torch.randn(B, J, 3, generator=g, dtype=torch.float64) * 30.0 + 50.0
    return pred, gt


def _pa_loop(pred: np.ndarray, gt: np.ndarray) -> float:
    """PA-MPJPE of one pose by scipy.linalg.orthogonal_procrustes (proper rotation checked)."""
    pc, gc = pred - pred.mean(0), gt - gt.mean(0)
    R, sv = orthogonal_procrustes(pc, gc)
    assert np.linalg.det(R) > 0
    s = sv / (pc**2).sum()
    return float(np.linalg.norm(s * pc @ R + gt.mean(0) - gt, axis=1).mean())


def _with(x, index, value):
    x = x.clone()
    x[index] = value
    return x


@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("which", ["pred", "gt"])
def test_pa_mpjpe_of_a_non_finite_pose_is_nan_not_linalg_error(which, value):
    pred, gt = _poses()
    bad = (1, 4, 2)
    if which == "pred":
        pred = _with(pred, bad, value)
    else:
        gt = _with(gt, bad, value)
    for dtype in (torch.float64, torch.float32):
        per = pa_mpjpe(pred.to(dtype), gt.to(dtype), reduction="none")
        assert torch.isnan(per[1]) and torch.isfinite(per[[0, 2, 3, 4]]).all()
        for b in (0, 2, 3, 4):
            ref = _pa_loop(pred[b].numpy(), gt[b].numpy())
            assert per[b].item() == pytest.approx(ref, rel=1e-4 if dtype == torch.float32 else 1e-8)
        assert torch.isnan(pa_mpjpe(pred.to(dtype), gt.to(dtype)))
        assert torch.isnan(pa_mpjpe(pred.to(dtype), gt.to(dtype), reduction="per_joint")).all()
    # masked, the same joint takes no part
    mask = torch.ones(B, J, dtype=torch.bool)
    mask[1, 4] = False
    keep = torch.arange(J) != 4
    assert pa_mpjpe(pred, gt, mask=mask, reduction="none")[1].item() == pytest.approx(
        _pa_loop(pred[1, keep].numpy(), gt[1, keep].numpy()), rel=1e-8)


def test_pa_mpjpe_gradients_stay_finite_beside_a_nan_pose():
    pred, gt = _poses()
    pred = pred.clone().requires_grad_()
    per = pa_mpjpe(torch.where(torch.arange(B)[:, None, None] == 2, NAN, pred), gt,
                   reduction="none")
    per[torch.isfinite(per)].sum().backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[2] == 0).all()
    assert (pred.grad[[0, 1, 3, 4]].abs().sum((1, 2)) > 0).all()


def _mpjpe_loop(pred, gt, mask, root=None):
    out = np.full(len(pred), np.nan)
    for b in range(len(pred)):
        p, g = pred[b], gt[b]
        if root is not None:
            with np.errstate(invalid="ignore"):
                p, g = p - p[root], g - g[root]
        errs = [np.linalg.norm(p[j] - g[j]) for j in range(J) if mask[b, j]]
        # the policy: a valid non-finite joint is NaN (inf - inf and inf alike)
        errs = [e if np.isfinite(p[j]).all() and np.isfinite(g[j]).all() else np.nan
                for e, j in zip(errs, [j for j in range(J) if mask[b, j]])]
        if errs:
            out[b] = np.mean(errs)
    return out


@pytest.mark.parametrize("value", [NAN, INF])
@pytest.mark.parametrize("root", [None, 0])
def test_mpjpe_propagates_a_non_finite_joint(value, root):
    pred, gt = _poses(1)
    pred = _with(pred, (1, 4, 0), value)
    gt = _with(gt, (3, 0, 1), value)  # the root joint of sample 3
    mask = torch.ones(B, J, dtype=torch.bool)
    mask[2, 5:] = False
    pred = _with(pred, (2, 9), NAN)  # masked: takes no part
    out = mpjpe(pred, gt, root=root, mask=mask, reduction="none")
    ref = _mpjpe_loop(pred.numpy(), gt.numpy(), mask.numpy(), root)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10)  # NaN where the loop has NaN
    assert torch.isnan(out[1]) and torch.isnan(out[3]) and torch.isfinite(out[[0, 2, 4]]).all()
    assert torch.isnan(mpjpe(pred, gt, root=root, mask=mask))
    per_joint = mpjpe(pred, gt, root=root, mask=mask, reduction="per_joint")
    assert torch.isnan(per_joint[4]) and torch.isnan(per_joint[0])
    if root is None:  # only the joints that hold a non-finite value
        assert torch.isfinite(per_joint[[j for j in range(J) if j not in (0, 4)]]).all()


def test_n_mpjpe_root_is_required_and_a_nan_pose_is_nan():
    pred, gt = _poses(2)
    with pytest.raises(ValueError, match=r"n_mpjpe needs root.*root=0.*list\(range\(J\)\)"):
        n_mpjpe(pred, gt, root=None)
    centroid = n_mpjpe(pred, gt, root=list(range(J)), reduction="none")
    for b in range(B):  # scaling about the centroid, by a numpy loop
        p, g = pred[b].numpy() - pred[b].numpy().mean(0), gt[b].numpy() - gt[b].numpy().mean(0)
        s = (p * g).sum() / (p * p).sum()
        assert centroid[b].item() == pytest.approx(np.linalg.norm(s * p - g, axis=1).mean())
    out = n_mpjpe(_with(pred, (0, 7, 1), NAN), gt, reduction="none")
    assert torch.isnan(out[0]) and torch.isfinite(out[1:]).all()
    for root in ("pelvis", 1.5, [], [0, 99]):
        with pytest.raises((TypeError, ValueError), match="root"):
            n_mpjpe(pred, gt, root=root)


def test_pck_and_auc_count_a_nan_as_nan_not_as_a_miss():
    pred, gt = _poses(3)
    pred = _with(pred, (2, 3, 1), NAN)
    mask = torch.ones(J, dtype=torch.bool)
    mask[5] = False
    pred = _with(pred, (4, 5), NAN)  # masked
    per = pck3d(pred, gt, threshold=400.0, mask=mask, reduction="none")
    err = torch.linalg.vector_norm(pred - gt, dim=-1)
    for b in (0, 1, 3, 4):
        ref = 100.0 * np.mean([float(err[b, j]) < 400.0 for j in range(J) if mask[j]])
        assert per[b].item() == pytest.approx(ref)
    assert torch.isnan(per[2])
    assert torch.isnan(pck3d(pred, gt, mask=mask))
    assert torch.isnan(auc3d(pred, gt, mask=mask, reduction="none")[2])
    pj = pck3d(pred, gt, mask=mask, reduction="per_joint")
    assert torch.isnan(pj[3]) and torch.isfinite(pj[[j for j in range(J) if j not in (3, 5)]]).all()
    assert torch.isnan(pj[5])  # masked in every sample: no valid sample, as documented


def test_epipolar_error_of_non_finite_points_or_F_is_nan():
    g = torch.Generator().manual_seed(4)
    uv_a = torch.rand(3, 6, 2, generator=g, dtype=torch.float64) * 100
    uv_b = torch.rand(3, 6, 2, generator=g, dtype=torch.float64) * 100
    F = torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    F = _with(F, (2, 0, 0), INF)
    out = epipolar_error(_with(uv_a, (0, 1, 0), INF), uv_b, F, reduction="per_joint")
    assert torch.isnan(out).all()  # sample 2's F is not finite: every point
    per = epipolar_error(_with(uv_a, (0, 1, 0), INF), uv_b, F, reduction="none")
    assert torch.isnan(per[0]) and torch.isfinite(per[1]) and torch.isnan(per[2])


def _people(seed=5):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randn(4, 2, 14, 3, generator=g, dtype=torch.float64) * 200.0
    gt[:, 1] += 2000.0
    pred = torch.cat([gt + torch.randn(gt.shape, generator=g, dtype=torch.float64) * 10,
                      torch.full((4, 1, 14, 3), NAN, dtype=torch.float64)], 1)
    return pred, gt


def test_pcp_and_ap_treat_a_nan_prediction_as_failed_and_refuse_a_nan_ground_truth():
    pred, gt = _people()
    finite = pred[:, :2]
    ref = pcp(finite, gt)
    out = pcp(pred, gt)  # a NaN person beside the finite ones keeps nobody from matching
    assert out["pcp"] == ref["pcp"] > 90 and torch.equal(out["matched"], ref["matched"])
    lone = pcp(pred[:, 2:], gt)  # nothing but NaN predictions: no match, PCP 0
    assert lone["pcp"] == 0.0 and (lone["matched"] == -1).all()
    scores = torch.tensor([[0.9, 0.8, 0.99]] * 4, dtype=torch.float64)
    ap = multiperson_ap(pred, gt, scores)
    ref_ap = multiperson_ap(finite, gt, scores[:, :2])
    assert ap["Recall@25"] == ref_ap["Recall@25"] == 100.0
    assert ap["num_pred"] == 12 and ap["AP@25"] < ref_ap["AP@25"]  # NaN ones: false positives
    bad_gt = _with(gt, (1, 0, 3, 2), NAN)
    with pytest.raises(ValueError, match="gt has non-finite.*gt_valid"):
        pcp(pred, bad_gt)
    with pytest.raises(ValueError, match="gt has non-finite.*gt_joint_valid"):
        multiperson_ap(pred, bad_gt, scores)
    valid = torch.ones(4, 2, dtype=torch.bool)
    valid[1, 0] = False  # marked missing: fine
    assert pcp(pred, bad_gt, gt_valid=valid)["pcp"] > 90
    jv = torch.ones(4, 2, 14, dtype=torch.bool)
    jv[1, 0, 3] = False
    assert multiperson_ap(pred, bad_gt, scores, gt_joint_valid=jv)["Recall@25"] == 100.0


def test_retrieval_refuses_non_finite_inputs_naming_them():
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(6, 4, generator=g)
    poses = torch.randn(6, J, 3, generator=g)
    with pytest.raises(ValueError, match="gallery_embeddings has non-finite"):
        retrieval_pa_mpjpe_at_k(emb, _with(emb, (0, 0), NAN), poses, poses, k=1)
    with pytest.raises(ValueError, match="query_poses has non-finite"):
        retrieval_pa_mpjpe_at_k(emb, emb, _with(poses, (0, 0, 0), INF), poses, k=1)
    with pytest.raises(ValueError, match=r"gallery_poses must have shape \(G, J, 3\)"):
        retrieval_pa_mpjpe_at_k(emb, emb, poses, poses[..., :2], k=1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p, g: mpjpe(p, g[:, :16]), "pred and gt must have the same last 2 dimensions"),
        (lambda p, g: pa_mpjpe(p[..., :2], g[..., :2]), r"pred must hold 3D poses"),
        (lambda p, g: mpjpe(p, g, mask=torch.ones(16, dtype=torch.bool)), "mask must have shape"),
        (lambda p, g: mpjpe(p, g, mask=torch.ones(J)), "mask"),
        (lambda p, g: n_mpjpe(p[0, 0], g[0, 0]), r"pred must have shape \(\.\.\., J, D\)"),
        (lambda p, g: pck3d(p.long(), g), "pred must be a floating-point tensor"),
        (lambda p, g: auc3d(p, g, thresholds=[]), "thresholds must not be empty"),
        (lambda p, g: mpjpe(p, g, root=J), r"root \(a joint index\)"),
        (lambda p, g: mpjpe(p, g, root="pelvis"), "root must be an int or a non-empty sequence"),
        (lambda p, g: mpjpe(p[:2], g[:3]), "pred|gt"),
        (lambda p, g: mpjpe(p, g, reduction="median"), "reduction"),
    ],
)
def test_bad_arguments_are_named(call, match):
    pred, gt = _poses()
    with pytest.raises((TypeError, ValueError), match=match):
        call(pred, gt)
