"""Evaluation metrics for 2D/3D human pose, each with its protocol stated exactly.

Units: 3D errors in millimetres (whatever unit the inputs use; the book uses mm), 2D errors in
pixels. Ratios (PCK, AUC, PCP, AP, recall) are returned in percent (0-100), as the papers' tables
print them.

Common arguments of the per-pose metrics:

- ``pred``, ``gt``: ``(..., J, D)`` (D = 3 for 3D poses); leading dims broadcast.
- ``mask``: optional ``(..., J)`` bool (broadcastable), True where the ground-truth joint is valid.
  Masked joints are excluded from the error *and* from any alignment. A ``(J,)`` mask selects a
  joint subset for all samples (e.g. the 14 joints of a protocol).
- ``reduction``: ``"mean"`` (a 0-dim tensor: mean over samples of the per-sample error; samples
  without a valid joint are skipped), ``"sum"``, ``"none"`` (the per-sample values ``(...,)``;
  NaN for samples without a valid joint) or ``"per_joint"`` (``(J,)``: each joint's error averaged
  over the valid samples).

NaN policy (non-finite inputs: NaN or +-inf), the same for every metric:

- A masked joint (``mask`` False; ``gt_valid`` / ``gt_joint_valid`` False) takes no part,
  whatever it holds: NaN is how missing ground truth may be stored.
- Per-joint metrics (:func:`mpjpe`, :func:`n_mpjpe`, :func:`pa_mpjpe`, :func:`pck3d`,
  :func:`auc3d`, :func:`epipolar_error`): a valid joint with a non-finite coordinate in either
  input has a NaN error (PCK: a NaN, not a miss), so its sample is NaN (``"none"``), its joint is
  NaN (``"per_joint"``) and ``"mean"`` / ``"sum"`` are NaN: NaN is propagated, never raised,
  never counted as 0 or as a miss. The metrics that fit a per-sample transform (N-MPJPE's
  scale, PA-MPJPE's alignment) and a non-finite root joint make every joint of that sample NaN.
  A non-finite ``F`` makes every point of its sample NaN. To leave such samples out, mask them
  (``mask=torch.isfinite(pred).all(-1)``) or reduce with ``"none"`` and ``nanmean``.
- Multi-person metrics (:func:`pcp`, :func:`multiperson_ap`): a predicted person with a
  non-finite coordinate is a failed prediction: it is never matched (PCP: its actor's parts
  are incorrect unless another prediction matches; AP: a false positive) and never keeps a
  finite prediction from matching. A valid ground-truth joint must be finite: a non-finite one
  raises ``ValueError`` naming ``gt`` (mark it invalid instead).
- :func:`retrieval_pa_mpjpe_at_k` ranks by embeddings: non-finite embeddings or poses raise
  ``ValueError`` naming the argument.

Bad arguments (wrong type, dtype or shape, mismatched sizes, a root index out of range) raise
``TypeError`` / ``ValueError`` naming the argument.

Everything is batched (no Python loops over joints, points or poses); the multi-person matching
is vectorised too. Differentiable where it makes sense (MPJPE, N-MPJPE, PA-MPJPE can serve as
losses).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch

from .validation import (
    broadcast_batch,
    check_choice,
    check_index,
    check_same_shape,
    check_shape,
    check_tensor,
)

__all__ = [
    "PCP_PART_GROUPS",
    "PCP_PART_NAMES",
    "auc3d",
    "epipolar_error",
    "mpjpe",
    "multiperson_ap",
    "n_mpjpe",
    "pa_mpjpe",
    "pck3d",
    "pcp",
    "retrieval_pa_mpjpe_at_k",
]

_REDUCTIONS = ("mean", "sum", "none", "per_joint")


# --------------------------------------------------------------------------------------------
# internals
# --------------------------------------------------------------------------------------------
def _check_poses(
    pred: Any, gt: Any, names: tuple[str, str] = ("pred", "gt"), broadcast: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    for x, name in zip((pred, gt), names):
        check_tensor(x, name, floating=True)
        check_shape(x, name, "(..., J, D)")
    check_same_shape(pred, gt, names, last=2)
    if broadcast:
        broadcast_batch({names[0]: pred.shape[:-2], names[1]: gt.shape[:-2]})
    gt = gt.to(device=pred.device)
    dtype = torch.promote_types(pred.dtype, gt.dtype)
    return pred.to(dtype), gt.to(dtype)


def _weights(
    mask: Any, batch_shape: torch.Size, num_joints: int, like: torch.Tensor
) -> torch.Tensor:
    """Joint weights (..., J) as floats (1 valid, 0 masked)."""
    if mask is None:
        return torch.ones((*batch_shape, num_joints), dtype=like.dtype, device=like.device)
    check_tensor(mask, "mask", dtype=torch.bool)
    check_shape(mask, "mask", "(..., J)", sizes={"J": num_joints})
    batch = broadcast_batch({"mask": mask.shape[:-1], "poses": batch_shape})
    return mask.to(device=like.device, dtype=like.dtype).expand(*batch, num_joints)


def _root_of(x: torch.Tensor, root: int | Sequence[int], num_joints: int) -> torch.Tensor:
    try:
        if isinstance(root, (str, bytes)):
            raise TypeError
        idx = [root] if isinstance(root, numbers.Integral) else list(root)
    except TypeError:
        raise TypeError(
            f"root must be an int or a non-empty sequence of ints, got {root!r}") from None
    if not idx:
        raise TypeError(f"root must be an int or a non-empty sequence of ints, got {root!r}")
    idx = [check_index(i, "root (a joint index)", num_joints) for i in idx]
    return x[..., idx, :].mean(dim=-2, keepdim=True)


def _reduce_joint_errors(err: torch.Tensor, w: torch.Tensor, reduction: str) -> torch.Tensor:
    """err, w: (..., J) -> reduced as documented in the module docstring."""
    check_choice(reduction, "reduction", _REDUCTIONS)
    err, w = torch.broadcast_tensors(err, w)
    err = torch.where(w > 0, err, torch.zeros((), dtype=err.dtype, device=err.device))
    if reduction == "per_joint":
        num = (err * w).reshape(-1, err.shape[-1]).sum(0)
        den = w.reshape(-1, w.shape[-1]).sum(0)
        return num / den
    wsum = w.sum(-1)
    per_sample = (err * w).sum(-1) / wsum  # NaN where no valid joint
    if reduction == "none":
        return per_sample
    valid = wsum > 0
    vals = per_sample[valid]
    if reduction == "sum":
        return vals.sum()
    if vals.numel() == 0:
        return torch.full((), float("nan"), dtype=err.dtype, device=err.device)
    return vals.mean()


def _joint_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a - b, dim=-1)


def _finite_points(x: torch.Tensor) -> torch.Tensor:
    """(..., J, D) -> (..., J) bool: every coordinate of the point is finite."""
    return torch.isfinite(x).all(-1)


def _nan_where_not_finite(err: torch.Tensor, *points: torch.Tensor) -> torch.Tensor:
    """``err`` (..., J) with NaN where a point of any of ``points`` (..., J, D) is not finite
    (the NaN policy of the module docstring: an infinite input is a NaN error too)."""
    ok = _finite_points(points[0])
    for x in points[1:]:
        ok = ok & _finite_points(x)
    return torch.where(ok, err, torch.full((), float("nan"), dtype=err.dtype, device=err.device))


def _pose_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-joint distance (..., J), NaN where either compared point is not finite."""
    return _nan_where_not_finite(_joint_distance(pred, gt), pred, gt)


def _check_3d(x: torch.Tensor, name: str) -> None:
    if x.shape[-1] != 3:
        raise ValueError(f"{name} must hold 3D poses, shape (..., J, 3), got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------
# MPJPE family
# --------------------------------------------------------------------------------------------
def mpjpe(
    pred: torch.Tensor,
    gt: torch.Tensor,
    root: int | Sequence[int] | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean per-joint position error (mm): mean Euclidean distance between joints.

    Protocol: no alignment. ``root=None`` gives the *absolute* MPJPE (world frame, as in the
    multiview papers: Iskakov et al., VoxelPose). With ``root`` (an index, or a list whose mean
    is the root, e.g. both hips) both poses are first translated so that their roots coincide:
    the *root-relative* MPJPE (Human3.6M protocol 1 uses ``root=0``, the pelvis of ``h36m17``).
    The root joints are used even when masked. Error per sample = mean over the valid joints of
    ``||pred_j - gt_j||``; see the module docstring for ``mask`` and ``reduction``.
    """
    pred, gt = _check_poses(pred, gt)
    if root is not None:
        pred = pred - _root_of(pred, root, pred.shape[-2])
        gt = gt - _root_of(gt, root, gt.shape[-2])
    err = _pose_error(pred, gt)
    return _reduce_joint_errors(err, _weights(mask, err.shape[:-1], err.shape[-1], err), reduction)


def n_mpjpe(
    pred: torch.Tensor,
    gt: torch.Tensor,
    root: int | Sequence[int] = 0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Scale-normalised MPJPE, N-MPJPE (Rhodin et al. 2018), in mm.

    Protocol: both poses are made root-relative (``root``, default 0 = pelvis of ``h36m17``);
    the prediction is scaled by the per-sample least-squares optimal factor
    ``s* = sum_j <p_j, g_j> / sum_j <p_j, p_j>`` over the valid joints (no rotation, no
    translation beyond the root); then the root-relative MPJPE of ``s* p`` against ``g``.

    ``root`` is required: a scale is about a point, and for absolute positions it would be
    about the world origin, so the error would change with where the origin is. ``root=None``
    raises ``ValueError``; to scale about the centroid of the valid and masked joints alike,
    pass ``root=list(range(J))``. A sample whose prediction is all zeros (after centring) gets
    the scale 0 (its error is the norm of ``g``).
    """
    if root is None:
        raise ValueError(
            "n_mpjpe needs root (a joint index, or joint indices whose mean is the root): the "
            "optimal scale is taken about the root, and about the world origin it would depend "
            "on where the origin is; pass root=0 (the pelvis of h36m17) or root=list(range(J)) "
            "(the centroid)")
    pred, gt = _check_poses(pred, gt)
    pred = pred - _root_of(pred, root, pred.shape[-2])
    gt = gt - _root_of(gt, root, gt.shape[-2])
    pred, gt = torch.broadcast_tensors(pred, gt)
    w = _weights(mask, pred.shape[:-2], pred.shape[-2], pred)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    pred = torch.where(w[..., None] > 0, pred, zero)
    gt = torch.where(w[..., None] > 0, gt, zero)
    num = (w * (pred * gt).sum(-1)).sum(-1)
    den = (w * (pred * pred).sum(-1)).sum(-1)
    scale = num / den.clamp_min(torch.finfo(pred.dtype).tiny)
    err = _pose_error(scale[..., None, None] * pred, gt)
    return _reduce_joint_errors(err, w, reduction)


def _masked_similarity_align(
    X: torch.Tensor, Y: torch.Tensor, w: torch.Tensor, scale: bool = True
) -> torch.Tensor:
    """``X`` aligned to ``Y`` by weighted Procrustes (``mvbook.geometry.procrustes_align``).

    Masked points (weight 0, possibly NaN) are zeroed so they take no part; samples without any
    valid point get unit weights (their error is reported as NaN by the caller anyway). A
    sample with a non-finite valid point is aligned as zeros and returned all NaN (the NaN
    policy of the module docstring), so the SVD never sees a non-finite matrix.
    """
    from mvbook.geometry.procrustes import procrustes_align

    X, Y = torch.broadcast_tensors(X, Y)
    w = w.expand(X.shape[:-1])
    valid = w > 0
    bad = (valid & ~(_finite_points(X) & _finite_points(Y))).any(-1)  # (...,)
    keep = (valid & ~bad[..., None])[..., None]
    zero = torch.zeros((), dtype=X.dtype, device=X.device)
    X = torch.where(keep, X, zero)
    Y = torch.where(keep, Y, zero)
    w = torch.where((w.sum(-1, keepdim=True) > 0), w, torch.ones_like(w))
    aligned = procrustes_align(X, Y, scale=scale, weights=w)
    return torch.where(bad[..., None, None], torch.full((), float("nan"), dtype=X.dtype,
                                                        device=X.device), aligned)


def pa_mpjpe(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    scale: bool = True,
) -> torch.Tensor:
    """Procrustes-aligned MPJPE, PA-MPJPE (Human3.6M protocol 2), in mm.

    Protocol: per sample, the prediction is aligned to the ground truth by the similarity
    transform (rotation with det +1, uniform scale, translation) that minimises the squared
    error over the valid joints (``scale=False``: rigid only; Umeyama's solution via
    :func:`mvbook.geometry.procrustes`); then the MPJPE of the aligned prediction over the valid
    joints. No root joint is needed (the translation is fitted). 3D poses only. A sample with
    a non-finite valid joint is NaN (module docstring), never a ``LinAlgError``. A sample with at most
    2 valid joints is matched exactly by some similarity: its error is 0 up to rounding and
    says nothing about the pose.
    """
    pred, gt = _check_poses(pred, gt)
    _check_3d(pred, "pred")
    pred, gt = torch.broadcast_tensors(pred, gt)
    w = _weights(mask, pred.shape[:-2], pred.shape[-2], pred)
    aligned = _masked_similarity_align(pred, gt, w, scale=scale)
    return _reduce_joint_errors(_joint_distance(aligned, gt), w, reduction)


# --------------------------------------------------------------------------------------------
# PCK / AUC
# --------------------------------------------------------------------------------------------
def _pck_from_errors(
    err: torch.Tensor, w: torch.Tensor, thresholds: torch.Tensor, reduction: str
) -> torch.Tensor:
    check_choice(reduction, "reduction", ("mean", "none", "per_joint"))
    hits = (err[..., None] < thresholds).to(err.dtype)  # (..., J, T)
    hits = torch.where(torch.isnan(err)[..., None], float("nan"), hits)  # NaN, not a miss
    err_w = w[..., None].expand_as(hits)
    hits = torch.where(err_w > 0, hits, torch.zeros((), dtype=hits.dtype, device=hits.device))
    if reduction == "per_joint":
        num = (hits * err_w).reshape(-1, *hits.shape[-2:]).sum(0)
        den = err_w.reshape(-1, *hits.shape[-2:]).sum(0)
        return 100.0 * num / den  # (J, T)
    if reduction == "none":
        return 100.0 * (hits * err_w).sum(-2) / err_w.sum(-2)  # (..., T)
    # "mean": over all valid joints of all samples (joint-weighted, as the 3DHP scripts)
    return (
        100.0
        * (hits * err_w).reshape(-1, hits.shape[-1]).sum(0)
        / err_w.reshape(-1, hits.shape[-1]).sum(0)
    )


def pck3d(
    pred: torch.Tensor,
    gt: torch.Tensor,
    threshold: float = 150.0,
    root: int | Sequence[int] | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """3D PCK (MPI-INF-3DHP): percentage of joints with error ``< threshold`` (default 150 mm).

    Protocol: with ``root`` the poses are made root-relative first (the MPI-INF-3DHP protocol
    uses the pelvis, ``root=0`` in ``h36m17``, and a 14-joint subset: pass it as ``mask``);
    ``root=None`` compares absolute positions. No alignment. ``reduction="mean"`` counts every
    valid joint of every sample equally (a 0-dim tensor, percent); ``"none"`` gives the
    per-sample percentage ``(...,)``; ``"per_joint"`` gives ``(J,)``.
    """
    pred, gt = _check_poses(pred, gt)
    if root is not None:
        pred = pred - _root_of(pred, root, pred.shape[-2])
        gt = gt - _root_of(gt, root, gt.shape[-2])
    err = _pose_error(pred, gt)
    w = _weights(mask, err.shape[:-1], err.shape[-1], err)
    t = torch.tensor([float(threshold)], dtype=err.dtype, device=err.device)
    return _pck_from_errors(err, w, t, reduction)[..., 0]


def auc3d(
    pred: torch.Tensor,
    gt: torch.Tensor,
    thresholds: Sequence[float] | torch.Tensor | None = None,
    root: int | Sequence[int] | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Area under the 3D PCK curve (MPI-INF-3DHP), in percent.

    Protocol: the mean of :func:`pck3d` over ``thresholds`` (default 31 thresholds
    ``0, 5, ..., 150`` mm, as in the MPI-INF-3DHP evaluation), with the same ``root``/``mask``
    handling and reductions as :func:`pck3d`.
    """
    pred, gt = _check_poses(pred, gt)
    if thresholds is None:
        t = torch.arange(31, dtype=pred.dtype, device=pred.device) * 5.0  # exact 0, 5, ..., 150
    else:
        t = torch.as_tensor(thresholds, dtype=pred.dtype, device=pred.device).reshape(-1)
        if t.numel() == 0:
            raise ValueError("thresholds must not be empty")
    if root is not None:
        pred = pred - _root_of(pred, root, pred.shape[-2])
        gt = gt - _root_of(gt, root, gt.shape[-2])
    err = _pose_error(pred, gt)
    w = _weights(mask, err.shape[:-1], err.shape[-1], err)
    return _pck_from_errors(err, w, t, reduction).mean(-1)


# --------------------------------------------------------------------------------------------
# PCP (Shelf / Campus)
# --------------------------------------------------------------------------------------------
#: The 10 body parts of the Shelf/Campus PCP, in the order of VoxelPose's evaluation
#: (joint pairs in ``shelf14`` order; the torso is mid-hip -> bottom_head).
PCP_PART_NAMES = (
    "r_lower_leg", "r_upper_leg", "l_upper_leg", "l_lower_leg", "r_lower_arm", "r_upper_arm",
    "l_upper_arm", "l_lower_arm", "head", "torso",
)  # fmt: skip
_PCP_LIMBS = ((0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11), (12, 13))
#: Part groups reported in the papers' tables -> indices into :data:`PCP_PART_NAMES`.
PCP_PART_GROUPS = {
    "head": (8,),
    "torso": (9,),
    "upper_arms": (5, 6),
    "lower_arms": (4, 7),
    "upper_legs": (1, 2),
    "lower_legs": (0, 3),
}


def _check_finite_gt(gt: torch.Tensor, valid: torch.Tensor, flags: str) -> None:
    """A valid ground-truth joint must be finite (the module's NaN policy)."""
    bad = valid & ~_finite_points(gt)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"gt has non-finite coordinates in {int(bad.sum())} valid joints (the "
                         f"first at index {where}); mark missing persons or joints invalid "
                         f"with {flags} instead")


def _valid_mask(valid: Any, name: str, dims: dict[str, int], device: torch.device) -> torch.Tensor:
    """A bool mask of exactly the shape ``dims`` (ordered ``{dimension name: size}``)."""
    if valid is None:
        return torch.ones(tuple(dims.values()), dtype=torch.bool, device=device)
    check_tensor(valid, name, dtype=torch.bool)
    check_shape(valid, name, f"({', '.join(dims)})", sizes=dims)
    return valid.to(device)


def pcp(
    pred: torch.Tensor,
    gt: torch.Tensor,
    pred_valid: torch.Tensor | None = None,
    gt_valid: torch.Tensor | None = None,
    alpha: float = 0.5,
    recall_threshold: float = 500.0,
) -> dict[str, Any]:
    """Percentage of Correct Parts on Shelf/Campus (the protocol of Belagiannis et al. as
    implemented in VoxelPose's evaluation), in percent.

    Protocol, per frame and per ground-truth actor present in it:

    1. Matching: the valid prediction with the smallest MPJPE (mean joint distance over all 14
       joints, mm) to the actor; a prediction may be matched to several actors (no one-to-one
       constraint). The actor counts as recalled when that MPJPE is ``< recall_threshold``.
    2. Each of the 10 parts (:data:`PCP_PART_NAMES`: the 9 limbs r/l lower/upper legs and arms and
       the head ``bottom_head -> top_head`` of ``shelf14``, plus the torso from the mid-hip
       (mean of the hips) to ``bottom_head``) is correct iff the mean of its two endpoint errors
       is ``<= alpha * ||gt part length||`` (``alpha = 0.5``).
    3. A frame in which there is no valid prediction counts all parts of every present actor
       as incorrect.

    Per-actor PCP = correct parts / (10 * frames in which the actor is present). The reported
    ``"pcp"`` is the mean of the per-actor PCP over the actors present at least once; to follow
    the papers on Shelf (average over actors 1-3 of 4) pass ``gt[:, :3]``, ``gt_valid[:, :3]``.

    Args:
        pred: ``(F, Np, 14, 3)`` predicted poses in ``shelf14`` order (mm), padded over persons.
        gt: ``(F, Ng, 14, 3)`` ground truth (mm).
        pred_valid: ``(F, Np)`` bool, real predictions (default all).
        gt_valid: ``(F, Ng)`` bool, actor present in the frame (default all).
        alpha: part threshold as a fraction of the part length.
        recall_threshold: MPJPE (mm) below which an actor counts as recalled.

    Returns:
        dict with ``"pcp"`` (float, %), ``"pcp_per_actor"`` ``(Ng,)`` (%, NaN if never present),
        ``"parts"`` ``{group: (Ng,)}`` per-actor PCP of each part group (%),
        ``"part_correct"`` ``(F, Ng, 10)`` bool, ``"recall@500"`` (float, %, name kept for the
        default threshold), ``"matched"`` ``(F, Ng)`` index of the matched prediction (-1 if none).
    """
    pred, gt = _check_poses(pred, gt, broadcast=False)
    dims = check_shape(pred, "pred", "(F, Np, 14, 3) in shelf14 order")
    dims |= check_shape(gt, "gt", "(F, Ng, 14, 3) in shelf14 order", sizes=dims)
    n_frames, n_pred, n_gt = dims["F"], dims["Np"], dims["Ng"]
    pv = _valid_mask(pred_valid, "pred_valid", {"F": n_frames, "Np": n_pred}, pred.device)
    gv = _valid_mask(gt_valid, "gt_valid", {"F": n_frames, "Ng": n_gt}, pred.device)
    _check_finite_gt(gt, gv[..., None].expand(gt.shape[:-1]), "gt_valid")
    pv = pv & _finite_points(pred).all(-1)  # a non-finite prediction is a failed one
    # (F, Ng, Np) MPJPE over all joints
    dist = _joint_distance(gt[:, :, None], pred[:, None]).mean(-1)
    dist = dist.masked_fill(~pv[:, None, :], float("inf"))
    if n_pred > 0:
        best, idx = dist.min(dim=-1)
    else:
        best = torch.full((n_frames, n_gt), float("inf"), dtype=pred.dtype, device=pred.device)
        idx = torch.zeros((n_frames, n_gt), dtype=torch.long, device=pred.device)
    has_match = torch.isfinite(best)
    matched_pred = (
        torch.gather(pred, 1, idx[..., None, None].expand(n_frames, n_gt, 14, 3))
        if n_pred > 0
        else torch.zeros_like(gt)
    )

    def _with_torso(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, Ng, 14, 3) -> part start and end points, each (F, Ng, 10, 3)."""
        a = torch.tensor([p[0] for p in _PCP_LIMBS], device=x.device)
        b = torch.tensor([p[1] for p in _PCP_LIMBS], device=x.device)
        hip = (x[..., 2, :] + x[..., 3, :]) / 2
        start = torch.cat([x[..., a, :], hip[..., None, :]], dim=-2)
        end = torch.cat([x[..., b, :], x[..., 12:13, :]], dim=-2)
        return start, end

    ps, pe = _with_torso(matched_pred)
    gs, ge = _with_torso(gt)
    err = (_joint_distance(ps, gs) + _joint_distance(pe, ge)) / 2.0
    length = _joint_distance(gs, ge)
    correct = (err <= alpha * length) & has_match[..., None] & gv[..., None]  # (F, Ng, 10)

    present = gv.sum(0).to(pred.dtype)  # frames per actor
    per_actor = 100.0 * correct.sum((0, 2)).to(pred.dtype) / (10.0 * present)
    parts = {}
    for group, ids in PCP_PART_GROUPS.items():
        c = correct[..., list(ids)].sum((0, 2)).to(pred.dtype)
        parts[group] = 100.0 * c / (len(ids) * present)
    seen = present > 0
    recalled = (best < recall_threshold) & gv
    total = int(gv.sum())
    return {
        "pcp": float(per_actor[seen].mean()) if bool(seen.any()) else float("nan"),
        "pcp_per_actor": per_actor,
        "parts": parts,
        "part_correct": correct,
        "recall@500": 100.0 * int(recalled.sum()) / total if total else float("nan"),
        "matched": torch.where(has_match & gv, idx, torch.full_like(idx, -1)),
    }


# --------------------------------------------------------------------------------------------
# Multi-person AP (VoxelPose)
# --------------------------------------------------------------------------------------------
def multiperson_ap(
    pred: torch.Tensor,
    gt: torch.Tensor,
    scores: torch.Tensor,
    pred_valid: torch.Tensor | None = None,
    gt_valid: torch.Tensor | None = None,
    gt_joint_valid: torch.Tensor | None = None,
    thresholds: Sequence[float] = (25.0, 50.0, 75.0, 100.0, 125.0, 150.0),
    recall_threshold: float = 500.0,
) -> dict[str, Any]:
    """Multi-person 3D pose AP, recall and MPJPE: the VoxelPose protocol (used by SelfPose3d).

    Protocol (as VoxelPose's Panoptic evaluation):

    1. Frames without any valid ground-truth person are skipped entirely (their predictions are
       neither true nor false positives).
    2. Every valid prediction is assigned the ground-truth person of its frame with the smallest
       MPJPE (mean over that person's valid joints, ``gt_joint_valid``; mm). Several predictions
       may be assigned the same person at this stage.
    3. All assigned predictions of the whole set are sorted by descending score (stable: ties
       keep frame-major, then person order). Walking down the list, a prediction is a true
       positive at threshold ``t`` iff its MPJPE is ``< t`` and its person has not already been
       claimed by an earlier true positive; otherwise it is a false positive.
    4. ``precision_k = TP_k / k``, ``recall_k = TP_k / #GT``; precision is made monotone
       (running maximum from the end) and AP = ``sum_k (recall_k - recall_{k-1}) precision_k``
       (VoxelPose's integration, without its 1e-5 denominators).
    5. ``Recall@t`` = final recall at ``t``; ``Recall@500`` = fraction of GT persons with some
       prediction assigned at MPJPE ``< recall_threshold``; ``MPJPE`` = mean MPJPE of the true
       positives at ``recall_threshold`` (``inf`` if none, as in VoxelPose).

    Args:
        pred: ``(F, Np, J, 3)`` predicted poses (mm), padded over persons.
        gt: ``(F, Ng, J, 3)`` ground-truth poses (mm), padded.
        scores: ``(F, Np)`` detection confidences.
        pred_valid: ``(F, Np)`` bool (VoxelPose keeps proposals with ``pose[0, 3] >= 0``).
        gt_valid: ``(F, Ng)`` bool.
        gt_joint_valid: ``(F, Ng, J)`` bool, joints used in the MPJPE (default all).
        thresholds: MPJPE thresholds (mm) for AP and recall.
        recall_threshold: threshold (mm) of ``Recall@500`` and of the matched MPJPE.

    Returns:
        dict with ``"AP@t"`` and ``"Recall@t"`` for each threshold (percent, keys use ``int(t)``
        when integral), ``"Recall@500"`` (percent), ``"MPJPE"`` (mm), ``"num_gt"``, ``"num_pred"``.
    """
    pred, gt = _check_poses(pred, gt, broadcast=False)
    dims = check_shape(pred, "pred", "(F, Np, J, D)")
    dims |= check_shape(gt, "gt", "(F, Ng, J, D)", sizes=dims)
    n_frames, n_pred, n_gt, n_joints = dims["F"], dims["Np"], dims["Ng"], dims["J"]
    check_tensor(scores, "scores")
    check_shape(scores, "scores", "(F, Np)", sizes=dims)
    pv = _valid_mask(pred_valid, "pred_valid", {"F": n_frames, "Np": n_pred}, pred.device)
    gv = _valid_mask(gt_valid, "gt_valid", {"F": n_frames, "Ng": n_gt}, pred.device)
    jv = _valid_mask(
        gt_joint_valid, "gt_joint_valid", {"F": n_frames, "Ng": n_gt, "J": n_joints}, pred.device
    )

    _check_finite_gt(gt, gv[..., None] & jv, "gt_valid / gt_joint_valid")
    w = jv.to(pred.dtype)[:, None]  # (F, 1, Ng, J)
    d = _joint_distance(pred[:, :, None], gt[:, None])  # (F, Np, Ng, J)
    d = torch.where(w > 0, d, torch.zeros((), dtype=d.dtype, device=d.device))
    err = (d * w).sum(-1) / w.sum(-1)  # (F, Np, Ng), NaN for GT without valid joints
    # a prediction with a non-finite coordinate matches nobody: a false positive
    finite_pred = _finite_points(pred).all(-1)[..., None]  # (F, Np, 1)
    err = torch.where(finite_pred, err, torch.full_like(err, float("inf")))
    usable_gt = gv & jv.any(-1)
    err = torch.where(usable_gt[:, None, :], err, torch.full_like(err, float("inf")))
    frame_has_gt = usable_gt.any(-1)  # (F,)
    total_gt = int(usable_gt.sum())
    if n_gt > 0:
        best, arg = err.min(dim=-1)  # (F, Np)
    else:
        best = torch.full((n_frames, n_pred), float("inf"), dtype=pred.dtype, device=pred.device)
        arg = torch.zeros((n_frames, n_pred), dtype=torch.long, device=pred.device)
    keep = pv & frame_has_gt[:, None]
    gt_id = (torch.arange(n_frames, device=pred.device)[:, None] * n_gt + arg)[keep]
    mp = best[keep]
    sc = scores.to(pred.device)[keep]
    order = torch.sort(sc, descending=True, stable=True).indices
    gt_id, mp = gt_id[order], mp[order]
    n = mp.numel()
    rank = torch.arange(n, device=pred.device)

    def _tp(threshold: float) -> torch.Tensor:
        cand = mp < threshold
        first = torch.full((max(n_frames * n_gt, 1),), n, dtype=torch.long, device=pred.device)
        first = first.scatter_reduce(0, gt_id[cand], rank[cand], reduce="amin")
        return cand & (first[gt_id] == rank)

    out: dict[str, Any] = {}
    for t in thresholds:
        key = int(t) if float(t).is_integer() else float(t)
        if total_gt == 0:
            out[f"AP@{key}"] = float("nan")
            out[f"Recall@{key}"] = float("nan")
            continue
        tp = _tp(float(t)).to(torch.float64)
        tp_c = torch.cumsum(tp, 0)
        recall = tp_c / total_gt
        precision = tp_c / (rank.to(torch.float64) + 1.0)
        precision = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
        dr = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64, device=recall.device))
        out[f"AP@{key}"] = 100.0 * float((dr * precision).sum())
        out[f"Recall@{key}"] = 100.0 * float(tp_c[-1]) / total_gt if n else 0.0
    if total_gt == 0:
        out["Recall@500"] = float("nan")
        out["MPJPE"] = float("inf")
    else:
        tp500 = _tp(float(recall_threshold))
        out["Recall@500"] = 100.0 * int(tp500.sum()) / total_gt
        out["MPJPE"] = float(mp[tp500].mean()) if bool(tp500.any()) else float("inf")
    out["num_gt"] = total_gt
    out["num_pred"] = n
    return out


# --------------------------------------------------------------------------------------------
# Epipolar error
# --------------------------------------------------------------------------------------------
def epipolar_error(
    uv_a: torch.Tensor,
    uv_b: torch.Tensor,
    F: torch.Tensor,
    mask: torch.Tensor | None = None,
    symmetric: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Epipolar error in pixels: distance of ``uv_b`` to the epipolar line of ``uv_a``.

    Protocol: with ``x = (u, v, 1)``, the line in image b is ``l = F x_a`` and the error of a
    correspondence is the point-line distance ``|l . x_b| / sqrt(l_1^2 + l_2^2)`` (``F`` maps
    points of image a to lines of image b, ``x_b^T F x_a = 0``). ``symmetric=True`` averages it
    with the distance of ``x_a`` to ``F^T x_b``. Per-sample error = mean over the valid points.

    Args:
        uv_a, uv_b: ``(..., N, 2)`` corresponding pixels.
        F: ``(..., 3, 3)`` fundamental matrix, leading dims broadcast.
        mask: ``(..., N)`` bool valid correspondences.
        reduction: as for the pose metrics (``"none"`` -> per sample ``(...,)``,
            ``"per_joint"`` -> per point index ``(N,)``).
    """
    uv_a, uv_b = _check_poses(uv_a, uv_b, ("uv_a", "uv_b"))
    check_shape(uv_a, "uv_a", "(..., N, 2)")
    check_shape(F, "F", "(..., 3, 3)")
    F = F.to(dtype=uv_a.dtype, device=uv_a.device)
    ones = torch.ones((), dtype=uv_a.dtype, device=uv_a.device)
    xa = torch.cat([uv_a, ones.expand(*uv_a.shape[:-1], 1)], -1)
    xb = torch.cat([uv_b, ones.expand(*uv_b.shape[:-1], 1)], -1)
    eps = torch.finfo(uv_a.dtype).tiny

    def _dist(lines: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        num = (lines * pts).sum(-1).abs()
        return num / torch.linalg.vector_norm(lines[..., :2], dim=-1).clamp_min(eps)

    lines_b = xa @ F.transpose(-1, -2)  # (..., N, 3) rows F x_a
    err = _dist(lines_b, xb)
    if symmetric:
        lines_a = xb @ F  # rows F^T x_b
        err = 0.5 * (err + _dist(lines_a, xa))
    err = _nan_where_not_finite(err, uv_a, uv_b)
    finite_F = torch.isfinite(F).flatten(-2).all(-1)[..., None]  # (..., 1)
    err = torch.where(finite_F, err, torch.full((), float("nan"), dtype=err.dtype,
                                                device=err.device))
    return _reduce_joint_errors(err, _weights(mask, err.shape[:-1], err.shape[-1], err), reduction)


# --------------------------------------------------------------------------------------------
# Cross-view retrieval (MCSS)
# --------------------------------------------------------------------------------------------
def _pairwise_pa_mpjpe(q: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q (Q, J, 3) reference, g (Q, K, J, 3) candidates -> (Q, K) PA-MPJPE of g aligned to q."""
    ref = q[:, None].expand_as(g)
    w = None if mask is None else mask.to(g.dtype).expand(g.shape[:-1])
    w_full = torch.ones(g.shape[:-1], dtype=g.dtype, device=g.device) if w is None else w
    aligned = _masked_similarity_align(g, ref, w_full)
    err = _joint_distance(aligned, ref)
    return (err * w_full).sum(-1) / w_full.sum(-1)


def retrieval_pa_mpjpe_at_k(
    query_embeddings: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    query_poses: torch.Tensor,
    gallery_poses: torch.Tensor,
    k: int | Sequence[int] = (1, 5, 10, 20),
    query_views: torch.Tensor | None = None,
    gallery_views: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    oracle: bool = False,
    chunk_size: int = 256,
) -> dict[int, float] | float:
    """Cross-view pose retrieval, Mean-PA-MPJPE@K (MCSS, Mitra et al. 2020, sec. 6.1), in mm.

    Protocol: for each query, the gallery is restricted to items from *other* views
    (``gallery_views != query_views`` when both are given) and to ``allowed[q, g]`` (e.g. other
    subjects for the "cross-subject" variant, or other frames); the K gallery items nearest to the
    query in Euclidean embedding distance are retrieved (``oracle=True`` ranks by the PA-MPJPE
    of the poses themselves instead: the Oracle the paper reports relative values against). Each
    retrieved pose is similarity-aligned (Procrustes with scale) to the query's pose and its
    PA-MPJPE computed over the valid joints; Mean-PA-MPJPE@K averages over the K retrieved items
    and over the queries.

    Args:
        query_embeddings: ``(Q, E)``; gallery_embeddings: ``(G, E)``.
        query_poses: ``(Q, J, 3)`` mm; gallery_poses: ``(G, J, 3)`` mm (ground-truth poses of the
            images, any frame; the metric is rotation and scale invariant).
        k: one K or several.
        query_views, gallery_views: ``(Q,)``, ``(G,)`` integer view (camera) ids.
        allowed: ``(Q, G)`` bool, extra restriction of the gallery per query.
        mask: ``(J,)`` bool joint subset.
        oracle: rank by pose PA-MPJPE instead of embedding distance.
        chunk_size: queries processed at a time (memory grows with ``chunk_size * G``).

    Returns:
        ``{K: Mean-PA-MPJPE@K}`` for a sequence ``k``, a float for an int ``k``.

    Raises:
        ValueError: when some query has fewer than max(K) admissible gallery items.
    """
    for x, name in (
        (query_embeddings, "query_embeddings"),
        (gallery_embeddings, "gallery_embeddings"),
        (query_poses, "query_poses"),
        (gallery_poses, "gallery_poses"),
    ):
        check_tensor(x, name, floating=True)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} has non-finite values: the ranking and the alignment "
                             "need finite embeddings and poses")
    # one embedding and one pose per item; the same embedding size E and pose shape (J, D)
    dims = check_shape(query_embeddings, "query_embeddings", "(Q, E)")
    dims |= check_shape(gallery_embeddings, "gallery_embeddings", "(G, E)", sizes=dims)
    dims |= check_shape(query_poses, "query_poses", "(Q, J, 3)", sizes=dims)
    check_shape(gallery_poses, "gallery_poses", "(G, J, 3)", sizes=dims)
    n_q, n_g = dims["Q"], dims["G"]
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(not isinstance(v, int) or v < 1 for v in ks):
        raise ValueError(f"k must be a positive int or a sequence of them, got {k!r}")
    kmax = max(ks)
    device = query_embeddings.device
    adm = torch.ones((n_q, n_g), dtype=torch.bool, device=device)
    if (query_views is None) != (gallery_views is None):
        raise ValueError("give both query_views and gallery_views, or neither")
    if query_views is not None:
        check_shape(query_views, "query_views", "(Q,)", sizes=dims)
        check_shape(gallery_views, "gallery_views", "(G,)", sizes=dims)
        adm &= query_views.to(device)[:, None] != gallery_views.to(device)[None, :]
    if allowed is not None:
        check_tensor(allowed, "allowed", dtype=torch.bool)
        check_shape(allowed, "allowed", "(Q, G)", sizes=dims)
        adm &= allowed.to(device)
    short = adm.sum(1) < kmax
    if bool(short.any()):
        raise ValueError(
            f"{int(short.sum())} queries have fewer than k={kmax} admissible gallery items"
        )
    if mask is not None:
        check_tensor(mask, "mask", dtype=torch.bool)
        check_shape(mask, "mask", "(J,)", sizes=dims)
    qp = query_poses.to(device)
    gp = gallery_poses.to(device=device, dtype=qp.dtype)
    ge = gallery_embeddings.to(device=device, dtype=query_embeddings.dtype)
    sums = torch.zeros(kmax, dtype=torch.float64, device=device)
    for start in range(0, n_q, chunk_size):
        sl = slice(start, min(start + chunk_size, n_q))
        if oracle:
            n_c = sl.stop - sl.start
            rank_by = _pairwise_pa_mpjpe(qp[sl], gp[None].expand(n_c, *gp.shape), mask)
        else:
            rank_by = torch.cdist(query_embeddings[sl], ge)
        rank_by = rank_by.masked_fill(~adm[sl], float("inf"))
        idx = torch.topk(rank_by, kmax, dim=1, largest=False).indices  # sorted nearest first
        err = _pairwise_pa_mpjpe(qp[sl], gp[idx], mask)  # (q, kmax)
        sums += torch.cumsum(err.to(torch.float64), dim=1).sum(0)
    means = {kk: float(sums[kk - 1] / (kk * n_q)) for kk in ks}
    return means[ks[0]] if isinstance(k, int) else means
