from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import orthogonal_procrustes
from scipy.optimize import minimize_scalar
from scipy.spatial.transform import Rotation

from mvbook.metrics import (
    PCP_PART_GROUPS,
    PCP_PART_NAMES,
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


def _rand_pose(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, 3, generator=g, dtype=torch.float64) * 300.0


def _random_rotation(seed: int) -> np.ndarray:
    return Rotation.random(random_state=seed).as_matrix()


# ------------------------------------------------------------------------------ MPJPE
def test_mpjpe_matches_loop_reference_with_mask_and_root():
    pred, gt = _rand_pose(4, 17, seed=1), _rand_pose(4, 17, seed=2)
    mask = torch.rand(4, 17, generator=torch.Generator().manual_seed(3)) > 0.3
    per = mpjpe(pred, gt, mask=mask, reduction="none")
    rel = mpjpe(pred, gt, root=0, mask=mask, reduction="none")
    hips = mpjpe(pred, gt, root=[1, 4], reduction="none")
    for b in range(4):
        errs, rerrs, herrs = [], [], []
        for j in range(17):
            herrs.append(
                np.linalg.norm(
                    (
                        pred[b, j]
                        - (pred[b, 1] + pred[b, 4]) / 2
                        - gt[b, j]
                        + (gt[b, 1] + gt[b, 4]) / 2
                    ).numpy()
                )
            )
            if mask[b, j]:
                errs.append(np.linalg.norm((pred[b, j] - gt[b, j]).numpy()))
                rerrs.append(
                    np.linalg.norm((pred[b, j] - pred[b, 0] - gt[b, j] + gt[b, 0]).numpy())
                )
        assert per[b].item() == pytest.approx(np.mean(errs))
        assert rel[b].item() == pytest.approx(np.mean(rerrs))
        assert hips[b].item() == pytest.approx(np.mean(herrs))
    assert mpjpe(pred, gt, mask=mask).item() == pytest.approx(per.mean().item())
    assert mpjpe(pred, gt, mask=mask, reduction="sum").item() == pytest.approx(per.sum().item())
    pj = mpjpe(pred, gt, mask=mask, reduction="per_joint")
    d = torch.linalg.norm(pred - gt, dim=-1)
    for j in range(17):
        sel = mask[:, j]
        if sel.any():
            assert pj[j].item() == pytest.approx(d[sel, j].mean().item())


def test_mpjpe_hand_example_and_empty_mask():
    gt = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 10.0]]])
    assert mpjpe(pred, gt).item() == pytest.approx(7.5)
    mask = torch.tensor([[True, False]])
    assert mpjpe(pred, gt, mask=mask).item() == pytest.approx(5.0)
    none = mpjpe(pred, gt, mask=torch.tensor([[False, False]]), reduction="none")
    assert torch.isnan(none).all()
    # masked NaN joints do not poison the result
    gt_nan = gt.clone()
    gt_nan[0, 1] = float("nan")
    assert mpjpe(pred, gt_nan, mask=mask).item() == pytest.approx(5.0)
    # broadcast of leading dims and (J,) joint-subset masks
    assert mpjpe(
        pred.expand(3, 2, 3), gt[0], mask=torch.tensor([True, False])
    ).item() == pytest.approx(5.0)


def test_mpjpe_validation():
    with pytest.raises(ValueError, match="pred and gt"):
        mpjpe(torch.zeros(2, 17, 3), torch.zeros(2, 16, 3))
    with pytest.raises(TypeError, match="pred"):
        mpjpe(np.zeros((2, 3)), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        mpjpe(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")
    with pytest.raises(ValueError, match="root"):
        mpjpe(torch.zeros(2, 3), torch.zeros(2, 3), root=5)
    with pytest.raises(TypeError, match="mask"):
        mpjpe(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.ones(2))
    with pytest.raises(ValueError, match="mask"):
        mpjpe(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.ones(3, dtype=torch.bool))


def test_mpjpe_is_differentiable():
    pred = _rand_pose(2, 5, seed=4).requires_grad_()
    gt = _rand_pose(2, 5, seed=5)
    assert torch.autograd.gradcheck(lambda p: mpjpe(p, gt, root=0), (pred,))
    assert torch.autograd.gradcheck(lambda p: pa_mpjpe(p, gt), (pred,))


# ------------------------------------------------------------------------------ N-MPJPE
def test_n_mpjpe_matches_scalar_optimisation():
    gt = _rand_pose(3, 17, seed=6)
    pred = 0.8 * gt + _rand_pose(3, 17, seed=7) * 0.05
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, 5:9] = False
    out = n_mpjpe(pred, gt, mask=mask, reduction="none")
    for b in range(3):
        m = mask[b].numpy()
        p = (pred[b] - pred[b, 0]).numpy()[m]
        g = (gt[b] - gt[b, 0]).numpy()[m]
        res = minimize_scalar(
            lambda s, p=p, g=g: float(((s * p - g) ** 2).sum()), bounds=(0.1, 10), method="bounded"
        )
        ref = np.linalg.norm(res.x * p - g, axis=-1).mean()
        assert out[b].item() == pytest.approx(ref, rel=1e-5)
    # a pure scaling of the root-relative pose has zero N-MPJPE
    scaled = gt[:, :1] + 1.7 * (gt - gt[:, :1])
    assert n_mpjpe(scaled, gt).item() == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------ PA-MPJPE
def _pa_reference_scipy(pred: np.ndarray, gt: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted similarity alignment with scipy's proper-rotation solver (Rotation.align_vectors)."""
    if w is None:
        w = np.ones(len(pred))
    mu_p = (w[:, None] * pred).sum(0) / w.sum()
    mu_g = (w[:, None] * gt).sum(0) / w.sum()
    pc, gc = pred - mu_p, gt - mu_g
    rot, _ = Rotation.align_vectors(gc, pc, weights=w)  # rot.apply(pc) ~ gc
    rp = rot.apply(pc)
    s = (w * (rp * gc).sum(1)).sum() / (w * (pc * pc).sum(1)).sum()
    aligned = s * rp + mu_g
    err = np.linalg.norm(aligned - gt, axis=1)
    return float((w * err).sum() / w.sum())


def test_pa_mpjpe_matches_scipy_orthogonal_procrustes():
    for seed in range(5):
        gt = _rand_pose(17, seed=10 + seed).numpy()
        R = _random_rotation(seed)
        pred = (
            1.3 * gt @ R.T
            + np.array([100.0, -50.0, 20.0])
            + np.random.default_rng(seed).normal(0, 20, gt.shape)
        )
        # scipy.linalg.orthogonal_procrustes on centred poses
        pc, gc = pred - pred.mean(0), gt - gt.mean(0)
        Rr, sv = orthogonal_procrustes(pc, gc)  # pc @ Rr ~ gc
        assert np.linalg.det(Rr) > 0
        s = sv / (pc**2).sum()
        ref = np.linalg.norm(s * pc @ Rr + gt.mean(0) - gt, axis=1).mean()
        out = pa_mpjpe(torch.from_numpy(pred), torch.from_numpy(gt)).item()
        assert out == pytest.approx(ref, rel=1e-8)
        assert out == pytest.approx(_pa_reference_scipy(pred, gt), rel=1e-6)


def test_pa_mpjpe_weighted_and_batched_against_scipy():
    gt = _rand_pose(4, 12, seed=20)
    pred = _rand_pose(4, 12, seed=21) * 0.3 + gt
    mask = torch.rand(4, 12, generator=torch.Generator().manual_seed(0)) > 0.25
    out = pa_mpjpe(pred, gt, mask=mask, reduction="none")
    for b in range(4):
        m = mask[b].numpy()
        ref = _pa_reference_scipy(pred[b].numpy()[m], gt[b].numpy()[m])
        assert out[b].item() == pytest.approx(ref, rel=1e-6)


def test_pa_mpjpe_uses_proper_rotations_only():
    gt = _rand_pose(10, seed=30).numpy()
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    out = pa_mpjpe(torch.from_numpy(mirrored), torch.from_numpy(gt)).item()
    assert out == pytest.approx(_pa_reference_scipy(mirrored, gt), rel=1e-6)
    assert out > 1.0  # a reflection cannot be undone by a rotation


def test_pa_mpjpe_zero_for_similar_poses_and_rigid_option():
    X = _rand_pose(3, 9, seed=31)
    R = torch.from_numpy(np.stack([_random_rotation(i) for i in range(3)]))
    Y = 0.5 * X @ R.transpose(-1, -2) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert pa_mpjpe(X, Y).item() == pytest.approx(0.0, abs=1e-9)
    assert pa_mpjpe(X, Y, scale=False).item() > 1.0
    assert pa_mpjpe(X, X @ R.transpose(-1, -2), scale=False).item() == pytest.approx(0.0, abs=1e-9)
    # a sample without valid joints is NaN and skipped in the mean; masked NaNs are ignored
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0] = False
    Xn = X.clone()
    Xn[0] = float("nan")
    Xn[1, 2] = float("nan")
    mask[1, 2] = False
    per = pa_mpjpe(Xn, Y, mask=mask, reduction="none")
    assert torch.isnan(per[0]) and per[1:].abs().max() < 1e-9


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.2, 5.0),
    shift=st.lists(st.floats(-1000, 1000), min_size=3, max_size=3),
)
def test_pa_mpjpe_invariant_to_similarity_of_prediction(seed, scale, shift):
    gt = _rand_pose(17, seed=seed)
    pred = gt + _rand_pose(17, seed=seed + 1) * 0.1
    R = torch.from_numpy(_random_rotation(seed))
    moved = scale * pred @ R.T + torch.tensor(shift, dtype=torch.float64)
    assert pa_mpjpe(moved, gt).item() == pytest.approx(
        pa_mpjpe(pred, gt).item(), rel=1e-6, abs=1e-6
    )


# ------------------------------------------------------------------------------ PCK / AUC
def test_pck_and_auc_match_loop_reference():
    gt = _rand_pose(5, 17, seed=40)
    pred = gt + _rand_pose(5, 17, seed=41) * 0.4
    mask = torch.ones(17, dtype=torch.bool)
    mask[[7, 9, 10]] = False
    err = torch.linalg.norm((pred - pred[:, :1]) - (gt - gt[:, :1]), dim=-1)
    valid = [(b, j) for b in range(5) for j in range(17) if mask[j]]
    ref_pck = 100.0 * sum(float(err[b, j]) < 150 for b, j in valid) / len(valid)
    assert pck3d(pred, gt, root=0, mask=mask).item() == pytest.approx(ref_pck)
    ts = np.linspace(0, 150, 31)
    ref_auc = np.mean(
        [100.0 * sum(float(err[b, j]) < t for b, j in valid) / len(valid) for t in ts]
    )
    assert auc3d(pred, gt, root=0, mask=mask).item() == pytest.approx(ref_auc)
    per_sample = pck3d(pred, gt, root=0, mask=mask, reduction="none")
    assert per_sample.shape == (5,)
    assert per_sample[2].item() == pytest.approx(
        100.0 * np.mean([float(err[2, j]) < 150 for j in range(17) if mask[j]])
    )
    assert pck3d(pred, gt, reduction="per_joint").shape == (17,)
    assert auc3d(pred, gt, thresholds=[50.0, 100.0]).item() == pytest.approx(
        (pck3d(pred, gt, threshold=50.0).item() + pck3d(pred, gt, threshold=100.0).item()) / 2
    )


def test_pck_hand_example():
    gt = torch.zeros(1, 4, 3)
    pred = torch.tensor([[[0.0, 0, 10], [0, 0, 149.9], [0, 0, 150], [0, 0, 400]]])
    assert pck3d(pred, gt).item() == pytest.approx(50.0)
    # AUC: errors 10, 149.9, 150, 400 against thresholds 0, 5, ..., 150
    ts = np.linspace(0, 150, 31)
    ref = np.mean([25.0 * (int(10 < t) + int(149.9 < t)) for t in ts])
    assert auc3d(pred, gt).item() == pytest.approx(ref)
    with pytest.raises(ValueError, match="thresholds"):
        auc3d(pred, gt, thresholds=[])


# ------------------------------------------------------------------------------ PCP
SHELF_LIMBS = [[0, 1], [1, 2], [3, 4], [4, 5], [6, 7], [7, 8], [9, 10], [10, 11], [12, 13]]


def _pcp_reference(pred, gt, pred_valid, gt_valid, alpha=0.5):
    """Transcription of the Shelf/Campus evaluation loop (per frame, per actor)."""
    n_actor = gt.shape[1]
    correct = np.zeros(n_actor)
    total = np.zeros(n_actor)
    bone = np.zeros((n_actor, 10))
    match, total_gt = 0, 0
    for f in range(gt.shape[0]):
        preds = pred[f][pred_valid[f]]
        for a in range(n_actor):
            if not gt_valid[f, a]:
                continue
            g = gt[f, a]
            total_gt += 1
            if len(preds) == 0:
                total[a] += 10
                continue
            mpjpes = np.mean(np.sqrt(np.sum((g[None] - preds) ** 2, axis=-1)), axis=-1)
            n = np.argmin(mpjpes)
            match += mpjpes[n] < 500
            for j, k in enumerate(SHELF_LIMBS):
                total[a] += 1
                es = np.linalg.norm(preds[n, k[0]] - g[k[0]])
                ee = np.linalg.norm(preds[n, k[1]] - g[k[1]])
                if (es + ee) / 2.0 <= alpha * np.linalg.norm(g[k[0]] - g[k[1]]):
                    correct[a] += 1
                    bone[a, j] += 1
            ph = (preds[n, 2] + preds[n, 3]) / 2
            gh = (g[2] + g[3]) / 2
            total[a] += 1
            if (
                np.linalg.norm(ph - gh) + np.linalg.norm(preds[n, 12] - g[12])
            ) / 2 <= alpha * np.linalg.norm(gh - g[12]):
                correct[a] += 1
                bone[a, 9] += 1
    actor = correct / total
    return 100 * actor, 100 * match / total_gt, bone, total


def test_pcp_matches_loop_reference():
    rng = np.random.default_rng(0)
    F, Na, Np = 6, 3, 4
    gt = rng.normal(0, 300, (F, Na, 14, 3))
    pred = np.concatenate(
        [gt + rng.normal(0, 60, gt.shape), rng.normal(0, 300, (F, 1, 14, 3))], axis=1
    )
    pred = pred[:, rng.permutation(Np)]
    pred_valid = rng.random((F, Np)) > 0.2
    pred_valid[2] = False  # a frame without predictions
    gt_valid = rng.random((F, Na)) > 0.15
    out = pcp(
        torch.from_numpy(pred),
        torch.from_numpy(gt),
        torch.from_numpy(pred_valid),
        torch.from_numpy(gt_valid),
    )
    ref_actor, ref_recall, bone, total = _pcp_reference(pred, gt, pred_valid, gt_valid)
    np.testing.assert_allclose(out["pcp_per_actor"].numpy(), ref_actor)
    assert out["pcp"] == pytest.approx(ref_actor.mean())
    assert out["recall@500"] == pytest.approx(ref_recall)
    for group, ids in PCP_PART_GROUPS.items():
        np.testing.assert_allclose(
            out["parts"][group].numpy(), 100 * bone[:, list(ids)].sum(-1) / (total / 10 * len(ids))
        )
    assert out["part_correct"].shape == (F, Na, 10) and len(PCP_PART_NAMES) == 10
    assert (out["matched"][2] == -1).all()


def test_pcp_hand_example():
    # a straight "stick person": perfect prediction except the right lower leg
    gt = torch.zeros(1, 1, 14, 3)
    gt[0, 0, :, 2] = torch.tensor(
        [0, 400, 800, 800, 400, 0, 900, 1100, 1400, 1400, 1100, 900, 1500, 1700.0]
    )
    gt[0, 0, [3, 4, 5, 9, 10, 11], 0] = 200.0
    pred = gt.clone()
    pred[0, 0, 0, 0] += 500.0  # r_ankle off by 500 mm: lower leg error (500 + 0) / 2 > 0.5 * 400
    out = pcp(pred, gt)
    assert out["pcp"] == pytest.approx(90.0)
    assert out["parts"]["lower_legs"].item() == pytest.approx(50.0)
    assert out["parts"]["torso"].item() == pytest.approx(100.0)
    pred[0, 0, 0, 0] = 399.0  # (399 + 0) / 2 = 199.5 <= 200: correct
    assert pcp(pred, gt)["pcp"] == pytest.approx(100.0)


def test_pcp_validation():
    with pytest.raises(ValueError, match="14"):
        pcp(torch.zeros(2, 1, 17, 3), torch.zeros(2, 1, 17, 3))
    with pytest.raises(ValueError, match="gt_valid"):
        pcp(
            torch.zeros(2, 1, 14, 3),
            torch.zeros(2, 1, 14, 3),
            gt_valid=torch.ones(2, 2, dtype=torch.bool),
        )


# ------------------------------------------------------------------------------ multi-person AP
def _voxelpose_reference(pred, gt, scores, pred_valid, gt_valid, thresholds):
    """The VoxelPose evaluation loops (eval list, greedy AP), eps-free."""
    eval_list, total_gt = [], 0
    for f in range(gt.shape[0]):
        g = gt[f][gt_valid[f]]
        if len(g) == 0:
            continue
        ids = np.nonzero(gt_valid[f])[0]
        for p in range(pred.shape[1]):
            if not pred_valid[f, p]:
                continue
            mpjpes = [np.mean(np.sqrt(np.sum((pred[f, p] - gg) ** 2, axis=-1))) for gg in g]
            eval_list.append(
                {
                    "mpjpe": float(np.min(mpjpes)),
                    "score": float(scores[f, p]),
                    "gt_id": f * gt.shape[1] + int(ids[np.argmin(mpjpes)]),
                }
            )
        total_gt += len(g)
    eval_list.sort(key=lambda k: k["score"], reverse=True)
    out = {}
    for t in thresholds:
        tp, fp, det = np.zeros(len(eval_list)), np.zeros(len(eval_list)), []
        for i, item in enumerate(eval_list):
            if item["mpjpe"] < t and item["gt_id"] not in det:
                tp[i] = 1
                det.append(item["gt_id"])
            else:
                fp[i] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / total_gt
        prec = tp / (tp + fp)
        for n in range(len(eval_list) - 2, -1, -1):
            prec[n] = max(prec[n], prec[n + 1])
        prec = np.concatenate(([0], prec, [0]))
        recall = np.concatenate(([0], recall, [1]))
        index = np.where(recall[1:] != recall[:-1])[0]
        out[t] = (
            100 * np.sum((recall[index + 1] - recall[index]) * prec[index + 1]),
            100 * recall[-2],
        )
    det, mp = [], []
    for item in eval_list:
        if item["mpjpe"] < 500 and item["gt_id"] not in det:
            mp.append(item["mpjpe"])
            det.append(item["gt_id"])
    rec500 = 100 * len({e["gt_id"] for e in eval_list if e["mpjpe"] < 500}) / total_gt
    return out, rec500, float(np.mean(mp)) if mp else math.inf


def test_multiperson_ap_hand_example():
    gt = torch.zeros(1, 2, 1, 3)
    gt[0, 1, 0, 0] = 1000.0
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, 0, 0, 0] = 20.0  # GT0 at 20 mm, best score
    pred[0, 1, 0, 0] = -30.0  # GT0 again at 30 mm
    pred[0, 2, 0, 0] = 1060.0  # GT1 at 60 mm
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    out = multiperson_ap(pred, gt, scores)
    assert out["AP@25"] == pytest.approx(50.0) and out["Recall@25"] == pytest.approx(50.0)
    assert out["AP@50"] == pytest.approx(50.0)
    # at 75 mm: TP, FP (duplicate), TP -> precision envelope (1, 2/3, 2/3), recall (.5, .5, 1)
    assert out["AP@75"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))
    assert out["Recall@75"] == pytest.approx(100.0)
    assert out["Recall@500"] == pytest.approx(100.0)
    assert out["MPJPE"] == pytest.approx(40.0)
    assert out["num_gt"] == 2 and out["num_pred"] == 3
    # reversing the scores makes the duplicate the first claimant at 75 mm
    out2 = multiperson_ap(pred, gt, torch.tensor([[0.8, 0.9, 0.7]]))
    assert out2["AP@25"] == pytest.approx(100 * 0.5 * 0.5)


def test_multiperson_ap_matches_voxelpose_loops():
    rng = np.random.default_rng(1)
    F, Ng, Np, J = 8, 3, 5, 15
    gt = rng.normal(0, 1000, (F, Ng, J, 3))
    gt_valid = rng.random((F, Ng)) > 0.3
    gt_valid[3] = False  # a frame without people: its predictions are ignored
    src = rng.integers(0, Ng, (F, Np))
    noise = rng.choice([10.0, 30.0, 60.0, 120.0, 400.0], (F, Np))
    pred = gt[np.arange(F)[:, None], src] + rng.normal(0, 1, (F, Np, J, 3)) * noise[..., None, None]
    scores = rng.random((F, Np))
    pred_valid = rng.random((F, Np)) > 0.2
    thresholds = (25, 50, 75, 100, 125, 150)
    out = multiperson_ap(
        torch.from_numpy(pred),
        torch.from_numpy(gt),
        torch.from_numpy(scores),
        torch.from_numpy(pred_valid),
        torch.from_numpy(gt_valid),
    )
    ref, rec500, mp = _voxelpose_reference(pred, gt, scores, pred_valid, gt_valid, thresholds)
    for t in thresholds:
        assert out[f"AP@{t}"] == pytest.approx(ref[t][0], abs=1e-9)
        assert out[f"Recall@{t}"] == pytest.approx(ref[t][1], abs=1e-9)
    assert out["Recall@500"] == pytest.approx(rec500)
    assert out["MPJPE"] == pytest.approx(mp)


def test_multiperson_ap_joint_visibility_and_empty():
    gt = torch.zeros(1, 1, 2, 3)
    pred = torch.zeros(1, 1, 2, 3)
    pred[0, 0, 1, 0] = 1000.0  # far off on the invisible joint only
    vis = torch.tensor([[[True, False]]])
    assert multiperson_ap(pred, gt, torch.ones(1, 1), gt_joint_valid=vis)["AP@25"] == pytest.approx(
        100.0
    )
    assert multiperson_ap(pred, gt, torch.ones(1, 1))["AP@25"] == pytest.approx(0.0)
    empty = multiperson_ap(
        pred, gt, torch.ones(1, 1), pred_valid=torch.zeros(1, 1, dtype=torch.bool)
    )
    assert empty["AP@25"] == 0.0 and empty["Recall@500"] == 0.0 and empty["MPJPE"] == math.inf
    with pytest.raises(ValueError, match="scores"):
        multiperson_ap(pred, gt, torch.ones(2))


# ------------------------------------------------------------------------------ epipolar
def _two_views():
    K = np.array([[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]])
    Ra, ta = np.eye(3), np.array([0.0, 0, 3000])
    Rb = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    tb = np.array([-1500.0, 0, 3200])
    R = Rb @ Ra.T
    t = tb - R @ ta
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K).T @ tx @ R @ np.linalg.inv(K)
    X = np.random.default_rng(0).normal(0, 300, (20, 3))

    def proj(Rc, tc):
        x = (X @ Rc.T + tc) @ K.T
        return x[:, :2] / x[:, 2:]

    return proj(Ra, ta), proj(Rb, tb), F


def test_epipolar_error_zero_on_true_correspondences_and_loop_reference():
    uv_a, uv_b, F = _two_views()
    Ft = torch.from_numpy(F)
    err = epipolar_error(torch.from_numpy(uv_a), torch.from_numpy(uv_b), Ft, reduction="none")
    assert err.item() < 1e-6
    noisy = uv_b + np.random.default_rng(1).normal(0, 3, uv_b.shape)
    out = epipolar_error(torch.from_numpy(uv_a), torch.from_numpy(noisy), Ft, reduction="per_joint")
    sym = epipolar_error(
        torch.from_numpy(uv_a), torch.from_numpy(noisy), Ft, symmetric=True, reduction="per_joint"
    )
    for i in range(len(uv_a)):
        xa, xb = np.append(uv_a[i], 1), np.append(noisy[i], 1)
        lb, la = F @ xa, F.T @ xb
        db = abs(lb @ xb) / np.hypot(lb[0], lb[1])
        da = abs(la @ xa) / np.hypot(la[0], la[1])
        assert out[i].item() == pytest.approx(db)
        assert sym[i].item() == pytest.approx((da + db) / 2)


def test_epipolar_error_perpendicular_offset_and_mask():
    # F of a rectified pair: epipolar lines are image rows, distance = |v_b - v_a|
    F = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    uv_a = torch.tensor([[10.0, 20.0], [5.0, 7.0]], dtype=torch.float64)
    uv_b = torch.tensor([[40.0, 23.0], [1.0, 7.0 + 100]], dtype=torch.float64)
    assert epipolar_error(uv_a, uv_b, F).item() == pytest.approx(51.5)
    assert epipolar_error(uv_a, uv_b, F, mask=torch.tensor([True, False])).item() == pytest.approx(
        3.0
    )
    with pytest.raises(ValueError, match="F"):
        epipolar_error(uv_a, uv_b, torch.eye(2))


# ------------------------------------------------------------------------------ retrieval
def _retrieval_reference(qe, ge, qp, gp, k, qv, gv, oracle=False):
    res = []
    for q in range(len(qe)):
        cands = [g for g in range(len(ge)) if gv[g] != qv[q]]
        if oracle:
            key = {g: _pa_reference_scipy(gp[g], qp[q]) for g in cands}
        else:
            key = {g: float(np.linalg.norm(qe[q] - ge[g])) for g in cands}
        best = sorted(cands, key=lambda g: key[g])[:k]
        res.append(np.mean([_pa_reference_scipy(gp[g], qp[q]) for g in best]))
    return float(np.mean(res))


def test_retrieval_matches_loop_reference():
    rng = np.random.default_rng(2)
    n_pose, views, J = 6, 3, 8
    poses = rng.normal(0, 300, (n_pose, J, 3))
    # each pose seen from 3 views: rotated copies; embedding = noisy pose code
    items_p, items_e, items_v = [], [], []
    for p in range(n_pose):
        code = rng.normal(0, 1, 4)
        for v in range(views):
            items_p.append(poses[p] @ _random_rotation(10 * p + v).T + rng.normal(0, 5, (J, 3)))
            items_e.append(code + rng.normal(0, 0.3, 4))
            items_v.append(v)
    P, E, V = np.array(items_p), np.array(items_e), np.array(items_v)
    t = torch.from_numpy
    out = retrieval_pa_mpjpe_at_k(
        t(E), t(E), t(P), t(P), k=(1, 3), query_views=t(V), gallery_views=t(V), chunk_size=5
    )
    for k in (1, 3):
        assert out[k] == pytest.approx(_retrieval_reference(E, E, P, P, k, V, V), rel=1e-6)
    orc = retrieval_pa_mpjpe_at_k(
        t(E), t(E), t(P), t(P), k=2, query_views=t(V), gallery_views=t(V), oracle=True
    )
    assert orc == pytest.approx(_retrieval_reference(E, E, P, P, 2, V, V, oracle=True), rel=1e-6)
    emb2 = retrieval_pa_mpjpe_at_k(
        t(E), t(E), t(P), t(P), k=2, query_views=t(V), gallery_views=t(V)
    )
    assert orc <= emb2 + 1e-9


def test_retrieval_exact_copies_in_other_views_give_zero_at_1():
    rng = np.random.default_rng(3)
    base = torch.from_numpy(rng.normal(0, 300, (4, 10, 3)))
    R = torch.from_numpy(Rotation.from_euler("z", 90, degrees=True).as_matrix())
    poses = torch.cat([base, 2.0 * base @ R.T])  # view 0 then view 1 (scaled, rotated copies)
    emb = torch.cat([torch.eye(4), torch.eye(4)]).double()
    views = torch.tensor([0] * 4 + [1] * 4)
    assert retrieval_pa_mpjpe_at_k(
        emb, emb, poses, poses, k=1, query_views=views, gallery_views=views
    ) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="fewer than"):
        retrieval_pa_mpjpe_at_k(emb, emb, poses, poses, k=5, query_views=views, gallery_views=views)
    allowed = torch.ones(8, 8, dtype=torch.bool)
    allowed[torch.arange(4), torch.arange(4) + 4] = False  # forbid the exact copies
    assert (
        retrieval_pa_mpjpe_at_k(
            emb, emb, poses, poses, k=1, query_views=views, gallery_views=views, allowed=allowed
        )
        > 1.0
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_cpu():
    gt = _rand_pose(3, 2, 15, seed=50)
    pred = gt + _rand_pose(3, 2, 15, seed=51) * 0.1
    scores = torch.rand(3, 2, dtype=torch.float64)
    cpu = multiperson_ap(pred, gt, scores)
    gpu = multiperson_ap(pred.to("cuda"), gt.to("cuda"), scores.to("cuda"))
    assert cpu == pytest.approx(gpu)
    for fn in (mpjpe, pa_mpjpe, n_mpjpe, pck3d, auc3d):
        assert fn(pred.to("cuda"), gt.to("cuda")).item() == pytest.approx(fn(pred, gt).item())
