"""The multi-person metrics against the VoxelPose protocol (chapter 50): AP@25..150, recall,
MPJPE of matched poses, Shelf/Campus PCP, and the root net's root AP, on hand-built cases
(false positives, duplicates, missing people) and against slow reference loops written from
the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvbook import metrics

LIMBS = [[0, 1], [1, 2], [3, 4], [4, 5], [6, 7], [7, 8], [9, 10], [10, 11], [12, 13]]


# ------------------------------------------------------------------ reference (slow loops)
def voxelpose_ap_reference(pred, gt, scores, pred_valid, gt_valid, thresholds, recall_at=500.0):
    """VoxelPose's Panoptic evaluation, one prediction and one person at a time: each
    prediction takes its lowest-MPJPE ground truth; sorted by score; greedy true positives;
    interpolated precision (with VoxelPose's 1e-5 denominators removed)."""
    eval_list, total_gt = [], 0
    for f in range(len(gt)):
        people = [g for g in range(gt.shape[1]) if gt_valid[f, g]]
        if not people:
            continue
        for p in range(pred.shape[1]):
            if not pred_valid[f, p]:
                continue
            errs = [np.mean(np.linalg.norm(pred[f, p] - gt[f, g], axis=-1)) for g in people]
            k = int(np.argmin(errs))
            eval_list.append({"mpjpe": errs[k], "score": scores[f, p],
                              "gt_id": total_gt + k})
        total_gt += len(people)
    eval_list.sort(key=lambda e: e["score"], reverse=True)  # stable, as Python's sort

    def greedy(threshold):
        tp, seen = [], []
        for e in eval_list:
            ok = e["mpjpe"] < threshold and e["gt_id"] not in seen
            tp.append(ok)
            if ok:
                seen.append(e["gt_id"])
        return np.array(tp, float)

    out = {}
    for t in thresholds:
        tp = greedy(t)
        ctp = np.cumsum(tp)
        recall = ctp / total_gt
        precision = ctp / np.arange(1, len(tp) + 1)
        for n in range(len(precision) - 2, -1, -1):
            precision[n] = max(precision[n], precision[n + 1])
        precision = np.concatenate(([0], precision, [0]))
        recall = np.concatenate(([0], recall, [1]))
        idx = np.where(recall[1:] != recall[:-1])[0]
        out[f"AP@{int(t)}"] = 100 * np.sum((recall[idx + 1] - recall[idx]) * precision[idx + 1])
    tp = greedy(recall_at)
    ids = {e["gt_id"] for e, ok in zip(eval_list, tp) if ok}
    out["Recall@500"] = 100 * len(ids) / total_gt
    mp = [e["mpjpe"] for e, ok in zip(eval_list, tp) if ok]
    out["MPJPE"] = float(np.mean(mp)) if mp else np.inf
    return out


def voxelpose_pcp_reference(pred, gt, pred_valid, gt_valid, alpha=0.5, actors=3):
    """VoxelPose's Shelf/Campus PCP loop: per frame and actor the lowest-MPJPE prediction,
    10 parts (9 limbs + torso from the mid-hip), averaged over actors 1..3 (0 if absent)."""
    n_actors = gt.shape[1]
    correct = np.zeros(n_actors)
    total = np.zeros(n_actors)
    for f in range(len(gt)):
        preds = pred[f][pred_valid[f]]
        for a in range(n_actors):
            if not gt_valid[f, a]:
                continue
            g = gt[f, a]
            total[a] += 10
            if len(preds) == 0:
                continue
            k = int(np.argmin(np.mean(np.linalg.norm(g[None] - preds, axis=-1), axis=-1)))
            p = preds[k]
            for s, e in LIMBS:
                err = (np.linalg.norm(p[s] - g[s]) + np.linalg.norm(p[e] - g[e])) / 2
                correct[a] += err <= alpha * np.linalg.norm(g[s] - g[e])
            ph, gh = (p[2] + p[3]) / 2, (g[2] + g[3]) / 2
            err = (np.linalg.norm(ph - gh) + np.linalg.norm(p[12] - g[12])) / 2
            correct[a] += err <= alpha * np.linalg.norm(gh - g[12])
    per_actor = np.where(total > 0, 100 * correct / np.maximum(total, 1), 0.0)
    return per_actor, per_actor[:actors].sum() / actors


def person(offset, J=4):
    """A 'person' of J joints in a line, shifted by offset (mm, x)."""
    X = np.zeros((J, 3))
    X[:, 2] = np.arange(J) * 300.0
    X[:, 0] = offset
    return X


# ------------------------------------------------------------------------ AP, hand cases
def test_ap_false_positive_duplicate_and_missing_by_hand():
    A, B = person(0.0), person(2000.0)
    gt = np.stack([A, B])[None]  # one frame, two people
    pred = np.stack([
        A + [10.0, 0, 0],        # score 0.9: A, 10 mm -> TP
        A + [0, 20.0, 0],        # score 0.8: A again, 20 mm -> duplicate: FP
        B + [0, 0, 30.0],        # score 0.7: B, 30 mm -> TP at 50 mm, FP at 25 mm
        person(5000.0),          # score 0.6: nobody (nearest B, 3 m) -> FP everywhere
    ])[None]
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    out = metrics.multiperson_ap(torch.tensor(pred), torch.tensor(gt), torch.tensor(scores))
    # threshold 25: TP FP FP FP -> recall .5 at precision 1: AP 50
    assert out["AP@25"] == pytest.approx(50.0)
    # threshold 50: TP FP TP FP -> precision (1, .5, .667, .5), interpolated (1, .667, .667, .5)
    assert out["AP@50"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))
    assert out["Recall@25"] == pytest.approx(50.0) and out["Recall@50"] == pytest.approx(100.0)
    assert out["Recall@500"] == pytest.approx(100.0)
    assert out["MPJPE"] == pytest.approx(20.0)  # the matched poses: 10 and 30 mm
    assert out["num_gt"] == 2 and out["num_pred"] == 4


def test_ap_missing_person_and_frame_without_people():
    A, B = person(0.0), person(2000.0)
    gt = np.stack([np.stack([A, B]), np.stack([A, B])])  # two frames
    gt_valid = np.array([[True, True], [False, False]])  # frame 1 has nobody
    pred = np.stack([np.stack([A, B + 5000.0]), np.stack([A, B])])
    scores = np.array([[0.5, 0.4], [0.99, 0.98]])  # frame 1's predictions must not count
    out = metrics.multiperson_ap(torch.tensor(pred), torch.tensor(gt), torch.tensor(scores),
                                 gt_valid=torch.tensor(gt_valid))
    # only frame 0: A found (TP), B missed (its prediction is 5 m away: FP)
    assert out["num_gt"] == 2 and out["num_pred"] == 2
    assert out["AP@25"] == pytest.approx(50.0)
    assert out["Recall@500"] == pytest.approx(50.0)
    assert out["MPJPE"] == pytest.approx(0.0)


def test_ap_lower_scored_true_positive_after_a_false_positive():
    A = person(0.0)
    gt = A[None, None]
    pred = np.stack([A + [0, 0, 400.0], A + [5.0, 0, 0]])[None]  # FP (400 mm) ranked first
    out = metrics.multiperson_ap(torch.tensor(pred), torch.tensor(gt),
                                 torch.tensor([[0.9, 0.1]]))
    assert out["AP@25"] == pytest.approx(50.0)  # recall 1 reached at precision 1/2
    # at 500 mm the 400 mm pose claims the person first: the MPJPE of the matched pose is 400
    assert out["MPJPE"] == pytest.approx(400.0)


@pytest.mark.parametrize("seed", range(8))
def test_ap_matches_voxelpose_reference_loops(seed):
    rng = np.random.default_rng(seed)
    F, Np, Ng, J = 5, 4, 3, 6
    gt = rng.normal(0, 1000, (F, Ng, 1, 3)) + rng.normal(0, 200, (F, Ng, J, 3))
    pick = rng.integers(0, Ng, (F, Np))
    pred = gt[np.arange(F)[:, None], pick] + rng.normal(0, 1, (F, Np, 1, 1)) * \
        rng.choice([10.0, 40.0, 120.0, 800.0], (F, Np, 1, 1)) * rng.normal(0, 1, (F, Np, J, 3))
    scores = rng.uniform(0, 1, (F, Np))
    pv = rng.uniform(0, 1, (F, Np)) > 0.2
    gv = rng.uniform(0, 1, (F, Ng)) > 0.25
    thresholds = (25.0, 50.0, 75.0, 100.0, 125.0, 150.0)
    out = metrics.multiperson_ap(torch.tensor(pred), torch.tensor(gt), torch.tensor(scores),
                                 torch.tensor(pv), torch.tensor(gv), thresholds=thresholds)
    ref = voxelpose_ap_reference(pred, gt, scores, pv, gv, thresholds)
    for k, v in ref.items():
        assert out[k] == pytest.approx(v, abs=1e-9), k


# ------------------------------------------------------------------------------- root AP
def test_root_ap_by_hand_and_equals_one_joint_ap():
    gt = torch.tensor([[[0.0, 0.0, 900.0], [1500.0, 0.0, 900.0], [0.0, 0.0, 0.0]]])
    gv = torch.tensor([[True, True, False]])
    pred = torch.tensor([[[40.0, 30.0, 900.0],     # 50 mm from root 0
                          [0.0, 0.0, 1000.0],      # 100 mm from root 0: a duplicate
                          [1500.0, 160.0, 780.0],  # 200 mm from root 1
                          [5000.0, 0.0, 900.0]]])  # nobody
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    out = metrics.root_ap(pred, gt, scores, gt_valid=gv)
    assert out["AP@50"] == 0.0  # 50 mm is not < 50 mm
    assert out["Recall@100"] == pytest.approx(50.0)
    # 200 mm is not < 200: at 300 the proposals go TP, FP, TP, FP: AP = .5 + .5 * 2/3
    assert out["Recall@200"] == pytest.approx(50.0)
    assert out["AP@300"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert out["Recall@500"] == pytest.approx(100.0)
    assert out["error"] == pytest.approx((50.0 + 200.0) / 2)
    ref = metrics.multiperson_ap(pred[:, :, None], gt[:, :, None], scores, gt_valid=gv,
                                 thresholds=(50.0, 100.0, 150.0, 200.0, 300.0))
    for k in ("AP@50", "AP@100", "AP@150", "AP@200", "AP@300", "Recall@500"):
        assert out[k] == ref[k]
    with pytest.raises(ValueError, match="pred"):
        metrics.root_ap(pred[..., :2], gt, scores)


# ------------------------------------------------------------------------------------ PCP
def shelf_person(offset):
    """A plausible shelf14 body at x = offset (mm)."""
    X = np.array([
        [-150, 0, 0], [-150, 0, 450], [-150, 0, 900],      # r ankle, knee, hip
        [150, 0, 900], [150, 0, 450], [150, 0, 0],          # l hip, knee, ankle
        [-450, 0, 1000], [-400, 0, 1200], [-200, 0, 1450],  # r wrist, elbow, shoulder
        [200, 0, 1450], [400, 0, 1200], [450, 0, 1000],     # l shoulder, elbow, wrist
        [0, 0, 1550], [0, 0, 1750],                         # bottom head, top head
    ], float)
    X[:, 0] += offset
    return X


def test_pcp_hand_case_false_positive_duplicate_missing_actor():
    A, B = shelf_person(0.0), shelf_person(2000.0)
    gt = np.stack([A, B, np.zeros((14, 3))])[None]  # actor 3 absent
    gv = np.array([[True, True, False]])
    bad_head = A.copy()
    bad_head[13] += [0, 0, 500.0]  # the head part wrong only
    pred = np.stack([bad_head, bad_head + [1.0, 0, 0], shelf_person(-3000.0)])[None]  # dup + FP
    pv = np.ones((1, 3), bool)
    out = metrics.pcp(torch.tensor(pred), torch.tensor(gt), torch.tensor(pv), torch.tensor(gv))
    # actor 1: 9 of 10 parts; actor 2: its nearest prediction is A's pose, 2 m away: 0 parts
    torch.testing.assert_close(out["pcp_per_actor"][:2], torch.tensor([90.0, 0.0],
                                                                       dtype=torch.float64))
    assert torch.isnan(out["pcp_per_actor"][2])
    assert out["pcp"] == pytest.approx(45.0)  # mean over the actors present
    per_actor, avg3 = voxelpose_pcp_reference(pred, gt, pv, gv)
    np.testing.assert_allclose(per_actor, [90.0, 0.0, 0.0])
    assert avg3 == pytest.approx(30.0)  # VoxelPose: actors 1-3, the absent one counts 0
    # a false positive never lowers PCP; a duplicate never raises it
    clean = metrics.pcp(torch.tensor(pred[:, :1]), torch.tensor(gt), gt_valid=torch.tensor(gv))
    torch.testing.assert_close(clean["pcp_per_actor"][:2], out["pcp_per_actor"][:2])


@pytest.mark.parametrize("seed", range(6))
def test_pcp_matches_voxelpose_reference_loops(seed):
    rng = np.random.default_rng(seed)
    F, Np, Ng = 6, 4, 3
    gt = np.stack([np.stack([shelf_person(x) for x in rng.uniform(-3000, 3000, Ng)])
                   for _ in range(F)])
    pick = rng.integers(0, Ng, (F, Np))
    pred = gt[np.arange(F)[:, None], pick] + rng.normal(0, 1, (F, Np, 1, 1)) * \
        rng.choice([20.0, 80.0, 200.0], (F, Np, 1, 1)) * rng.normal(0, 1, (F, Np, 14, 3))
    pv = rng.uniform(0, 1, (F, Np)) > 0.2
    gv = np.ones((F, Ng), bool)
    gv[:, 1] = rng.uniform(0, 1, F) > 0.3
    out = metrics.pcp(torch.tensor(pred), torch.tensor(gt), torch.tensor(pv), torch.tensor(gv))
    per_actor, _ = voxelpose_pcp_reference(pred, gt, pv, gv)
    np.testing.assert_allclose(out["pcp_per_actor"].numpy(), per_actor, atol=1e-9)
