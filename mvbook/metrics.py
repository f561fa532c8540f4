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

Dense keypoints (Yu et al. 2021, sec. 4.4): :func:`rcp_curve` / :func:`rcp_auc` (ratio of correct
points over geodesic thresholds, AUC10 and AUC30), :func:`geodesic_point_similarity` (GPS per
instance, kappa 255 mm), :func:`rci` / :func:`mrci` / :func:`mgps`, :func:`mpvpe` and
:func:`masked_vertex_similarity` (MVS, mMVS) on vertices reconstructed by
:func:`triangulate_surface_vertices`. They take geodesic errors or vertex positions as plain
tensors (the studio's body surface and its geodesics are in :mod:`mvbook.studio.surface`) and,
unlike the percentages above, return fractions in [0, 1], as the paper's tables print them.

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
    check_positive,
    check_same_shape,
    check_shape,
    check_tensor,
)

__all__ = [
    "GPS_KAPPA_MM",
    "PCP_PART_GROUPS",
    "PCP_PART_NAMES",
    "RCI_THRESHOLDS",
    "auc3d",
    "epipolar_error",
    "geodesic_point_similarity",
    "masked_vertex_similarity",
    "mgps",
    "mpjpe",
    "mpvpe",
    "mrci",
    "multiperson_ap",
    "n_mpjpe",
    "nearest_surface_points",
    "pa_mpjpe",
    "pck3d",
    "pcp",
    "rci",
    "rcp_auc",
    "rcp_curve",
    "retrieval_pa_mpjpe_at_k",
    "root_ap",
    "triangulate_surface_vertices",
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


def root_ap(
    pred: torch.Tensor,
    gt: torch.Tensor,
    scores: torch.Tensor,
    pred_valid: torch.Tensor | None = None,
    gt_valid: torch.Tensor | None = None,
    thresholds: Sequence[float] = (50.0, 100.0, 150.0, 200.0, 300.0),
    recall_threshold: float = 500.0,
) -> dict[str, Any]:
    """AP, recall and mean error of 3D root proposals (a root net's person localisation).

    The protocol of :func:`multiperson_ap` with one joint per person: each valid proposal is
    assigned the ground-truth root of its frame nearest to it (Euclidean distance, mm), the
    proposals of the whole set are sorted by descending score, and a proposal is a true positive
    at threshold ``t`` iff its distance is ``< t`` and its person is not yet claimed.

    Args:
        pred: ``(F, Np, 3)`` proposed roots (mm); gt: ``(F, Ng, 3)`` true roots (mm);
        scores: ``(F, Np)``; pred_valid: ``(F, Np)``, gt_valid: ``(F, Ng)`` bool.
        thresholds: distances (mm) of AP and recall; recall_threshold: of ``"Recall@500"``
            and of the mean error.

    Returns:
        dict with ``"AP@t"``, ``"Recall@t"`` (percent), ``"Recall@500"`` (percent),
        ``"error"`` (mm, the mean distance of the true positives at ``recall_threshold``),
        ``"num_gt"``, ``"num_pred"``.
    """
    check_tensor(pred, "pred", floating=True)
    check_tensor(gt, "gt", floating=True)
    dims = check_shape(pred, "pred", "(F, Np, 3)")
    check_shape(gt, "gt", "(F, Ng, 3)", sizes=dims)
    out = multiperson_ap(pred[:, :, None], gt[:, :, None], scores, pred_valid, gt_valid,
                         thresholds=thresholds, recall_threshold=recall_threshold)
    out["error"] = out.pop("MPJPE")
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


# --------------------------------------------------------------------------------------------
# Dense keypoints (Yu et al. 2021, sec. 4.4): RCP/AUC, GPS/RCI, MPVPE, MVS
# --------------------------------------------------------------------------------------------
#: GPS thresholds of the ratio of correct instances (DensePose's 0.5:0.05:0.95).
RCI_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: DensePose's GPS normalisation kappa = 0.255 m, in mm (the book's unit).
GPS_KAPPA_MM = 255.0


def _check_errors(geodesic_err: Any, valid: Any, name: str = "geodesic_err") -> tuple[
        torch.Tensor, torch.Tensor]:
    """Validate per-point errors (..., N) >= 0 (inf allowed, NaN propagated) and a bool mask
    broadcastable to them; return both broadcast, the mask as float weights."""
    check_tensor(geodesic_err, name, floating=True)
    if geodesic_err.ndim < 1:
        raise ValueError(f"{name} must have shape (..., N), got {tuple(geodesic_err.shape)}")
    if bool((geodesic_err < 0).any()):
        raise ValueError(f"{name} must hold distances >= 0 (inf for a miss)")
    if valid is None:
        w = torch.ones_like(geodesic_err)
    else:
        check_tensor(valid, "valid", dtype=torch.bool)
        try:
            shape = torch.broadcast_shapes(valid.shape, geodesic_err.shape)
        except RuntimeError:
            shape = None
        if shape != geodesic_err.shape:
            raise ValueError(f"valid must broadcast to {name}'s shape {tuple(geodesic_err.shape)}, "
                             f"got {tuple(valid.shape)}")
        w = valid.to(device=geodesic_err.device, dtype=geodesic_err.dtype).expand_as(geodesic_err)
    return geodesic_err, w


def _thresholds(thresholds: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(thresholds, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be a non-empty sequence of finite values >= 0, "
                         f"got {thresholds!r}")
    return t


def rcp_curve(geodesic_err: torch.Tensor, thresholds: Sequence[float] | torch.Tensor,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """Ratio of correct points (RCP, Yu et al. 2021 sec. 4.4) at each geodesic threshold.

    Protocol: the points are the *ground-truth foreground pixels* (of all images, pooled); the
    error of a pixel is the geodesic distance (mm) on the body surface between its predicted
    and its true surface point, ``inf`` where the prediction is background (a miss; predicted
    foreground at ground-truth background pixels is not counted). A pixel is correct at
    threshold ``t`` when its error is ``<= t``. The paper reports the area under this curve
    (:func:`rcp_auc`) up to 10 and 30 cm.

    Args:
        geodesic_err: ``(..., N)`` float errors in mm (``inf`` = miss).
        thresholds: ``(T,)`` thresholds in mm.
        valid: optional bool mask broadcastable to ``geodesic_err``: the ground-truth foreground
            pixels (all entries when None).
    Returns:
        ``(T,)`` fractions in [0, 1] over all valid pixels; NaN when there is none, or when a
        valid error is NaN (propagated, never counted as a miss).
    """
    err, w = _check_errors(geodesic_err, valid)
    t = _thresholds(thresholds, "thresholds", err)
    e = err.reshape(-1)[w.reshape(-1) > 0]
    hits = (e[:, None] <= t).to(err.dtype)
    hits = torch.where(torch.isnan(e)[:, None], float("nan"), hits)
    return hits.sum(0) / e.numel() if e.numel() else torch.full_like(t, float("nan"))


def rcp_auc(geodesic_err: torch.Tensor, max_threshold: float = 100.0,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised area under the RCP curve over thresholds ``[0, max_threshold]`` mm (0-dim).

    AUC10 is ``max_threshold=100`` (10 cm), AUC30 ``300``. Computed *exactly* from the errors,
    not on a grid: ``(1/T) int_0^T RCP(t) dt = mean_i max(0, 1 - e_i / T)`` over the valid
    pixels (a miss, ``e = inf``, contributes 0). Same points and NaN policy as
    :func:`rcp_curve`; a value in [0, 1] (1 only for a perfect prediction).
    """
    err, w = _check_errors(geodesic_err, valid)
    if not (isinstance(max_threshold, (int, float)) and 0 < float(max_threshold) < float("inf")):
        raise ValueError(f"max_threshold must be a positive number of mm, got {max_threshold!r}")
    e = err.reshape(-1)[w.reshape(-1) > 0]
    if e.numel() == 0:
        return torch.full((), float("nan"), dtype=err.dtype, device=err.device)
    return (1.0 - e / float(max_threshold)).clamp_min(0.0).mean()


def geodesic_point_similarity(geodesic_err: torch.Tensor, valid: torch.Tensor | None = None,
                              kappa: float = GPS_KAPPA_MM) -> torch.Tensor:
    """Geodesic point similarity (GPS, Guler et al. 2018) per instance, as Yu et al. 2021 use it.

    Protocol: ``GPS = 1/|P| sum_{p in P} exp(-g_p^2 / (2 kappa^2))`` over the instance's
    ground-truth foreground pixels ``P`` (``valid``), ``g_p`` the geodesic error in mm (``inf``,
    a pixel predicted as background, gives 0). DensePose fixes ``kappa = 0.255`` with geodesic
    distances in metres on SMPL (a point at about 30 cm scores 0.5); the book works in mm, so
    the default is ``kappa = 255`` mm. (DensePose's later evaluation code normalises per part
    instead; the paper's fixed kappa is used here.) An instance is one person in one image.

    Args:
        geodesic_err: ``(..., N)`` float errors in mm, one row per instance.
        valid: bool mask broadcastable to it (the instance's ground-truth pixels).
        kappa: mm, > 0.
    Returns:
        ``(...,)`` GPS in [0, 1]; NaN for an instance without a valid pixel or with a NaN error.
    """
    err, w = _check_errors(geodesic_err, valid)
    check_positive(kappa, "kappa")
    s = torch.exp(-(err * err) / (2.0 * float(kappa) ** 2))
    s = torch.where(w > 0, s, torch.zeros((), dtype=s.dtype, device=s.device))
    return s.sum(-1) / w.sum(-1)


def _check_gps(gps: Any) -> torch.Tensor:
    check_tensor(gps, "gps", floating=True)
    g = gps.reshape(-1)
    g = g[~torch.isnan(g)]
    if bool(((g < 0) | (g > 1)).any()):
        raise ValueError("gps must hold similarities in [0, 1] (NaN for no instance)")
    return g


def rci(gps: torch.Tensor, thresholds: Sequence[float] | torch.Tensor | None = None
        ) -> torch.Tensor:
    """Ratio of correct instances (RCI) at each GPS threshold: ``(T,)`` in [0, 1].

    Protocol: an instance is correct at threshold ``t`` when its :func:`geodesic_point_similarity`
    is ``>= t`` (as COCO matches at a threshold); thresholds default to
    :data:`RCI_THRESHOLDS` (0.5:0.05:0.95). Instances whose GPS is NaN (no ground-truth pixel)
    are left out; NaN when none is left.
    """
    g = _check_gps(gps)
    t = _thresholds(RCI_THRESHOLDS if thresholds is None else thresholds, "thresholds", gps)
    if g.numel() == 0:
        return torch.full_like(t, float("nan"))
    return (g[:, None] >= t).to(gps.dtype).mean(0)


def mrci(gps: torch.Tensor, thresholds: Sequence[float] | torch.Tensor | None = None
         ) -> torch.Tensor:
    """Mean ratio of correct instances (mRCI): the mean of :func:`rci` over its thresholds (0-dim,
    in [0, 1])."""
    return rci(gps, thresholds).mean()


def mgps(gps: torch.Tensor) -> torch.Tensor:
    """Mean GPS over all instances (mGPS), leaving out NaN (instances without ground truth)."""
    g = _check_gps(gps)
    return g.mean() if g.numel() else torch.full((), float("nan"), dtype=gps.dtype)


def mpvpe(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor,
          valid: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Mean per-vertex position error (MPVPE, Yu et al. 2021 sec. 4.4), mm.

    Protocol: the Euclidean distance between each triangulated vertex and its ground-truth
    position, averaged over the ``valid`` vertices (those triangulated *and* visible in the
    ground truth, e.g. ``pred_valid & gt_valid`` of :func:`triangulate_surface_vertices`);
    no alignment. Reductions as for :func:`mpjpe` (``"mean"``: the mean over instances of each
    instance's mean, instances without a valid vertex skipped; ``"none"``: per instance, NaN
    without a valid vertex; ``"per_joint"``: per vertex). NaN policy of the module: a valid
    vertex with a non-finite coordinate gives NaN.

    Args:
        pred_vertices, gt_vertices: ``(..., V, 3)`` mm. valid: ``(..., V)`` bool.
    """
    pred, gt = _check_poses(pred_vertices, gt_vertices, ("pred_vertices", "gt_vertices"))
    _check_3d(pred, "pred_vertices")
    err = _pose_error(pred, gt)
    if valid is None:
        w = torch.ones_like(err)
    else:
        check_tensor(valid, "valid", dtype=torch.bool)
        check_shape(valid, "valid", "(..., V)", sizes={"V": err.shape[-1]})
        batch = broadcast_batch({"valid": valid.shape[:-1], "vertices": err.shape[:-1]})
        w = valid.to(device=err.device, dtype=err.dtype).expand(*batch, err.shape[-1])
    return _reduce_joint_errors(err, w, reduction)


def masked_vertex_similarity(
    pred_vertices: torch.Tensor,
    gt_vertices: torch.Tensor,
    pred_valid: torch.Tensor,
    gt_valid: torch.Tensor,
    kappa: float = GPS_KAPPA_MM,
    reduction: str = "none",
) -> torch.Tensor:
    """Masked vertex similarity (MVS, Yu et al. 2021 sec. 4.4) per instance; mMVS its mean.

    Protocol: with ``G`` the ground-truth visible vertices (``gt_valid``, visible in at least
    two views) and ``T`` the triangulated ones (``pred_valid``),
    ``VS = 1/|G| sum_{v in G} exp(-d_v^2 / (2 kappa^2))`` where ``d_v`` is the distance (mm)
    between the triangulated and the true vertex, ``inf`` (a term of 0) when ``v`` is not
    triangulated; ``IoU = |T & G| / |T | G|``; ``MVS = sqrt(VS * IoU)``. The paper prints the
    exponent as ``exp(-(-d^2) / (2 kappa^2))``, a sign typo (it would grow without bound);
    ``exp(-d^2 / (2 kappa^2))`` is implemented. The paper does not give kappa; the default is
    GPS's 255 mm.

    Args:
        pred_vertices, gt_vertices: ``(..., V, 3)`` mm. pred_valid, gt_valid: ``(..., V)`` bool.
        kappa: mm, > 0. reduction: ``"none"`` (``(...,)`` per instance, NaN when ``G`` is
            empty) or ``"mean"`` (mMVS, the mean over instances with a non-empty ``G``).
    """
    pred, gt = _check_poses(pred_vertices, gt_vertices, ("pred_vertices", "gt_vertices"))
    _check_3d(pred, "pred_vertices")
    check_positive(kappa, "kappa")
    check_choice(reduction, "reduction", ("none", "mean"))
    V = pred.shape[-2]
    masks = []
    for m, name in ((pred_valid, "pred_valid"), (gt_valid, "gt_valid")):
        check_tensor(m, name, dtype=torch.bool)
        check_shape(m, name, "(..., V)", sizes={"V": V})
        masks.append(m.to(pred.device))
    batch = broadcast_batch({"vertices": pred.shape[:-2], "pred_valid": masks[0].shape[:-1],
                             "gt_valid": masks[1].shape[:-1]})
    tv, gv = (m.expand(*batch, V) for m in masks)
    d = _pose_error(pred, gt).expand(*batch, V)
    s = torch.where(tv, torch.exp(-(d * d) / (2.0 * float(kappa) ** 2)),
                    torch.zeros((), dtype=d.dtype, device=d.device))
    s = torch.where(gv, s, torch.zeros((), dtype=d.dtype, device=d.device))
    n_gt = gv.sum(-1).to(d.dtype)
    vs = s.sum(-1) / n_gt
    iou = (tv & gv).sum(-1).to(d.dtype) / (tv | gv).sum(-1).to(d.dtype)
    mvs = torch.sqrt(vs * iou)
    if reduction == "none":
        return mvs
    keep = n_gt > 0
    if not bool(keep.any()):
        return torch.full((), float("nan"), dtype=d.dtype, device=d.device)
    return mvs[keep].mean()


def nearest_surface_points(
    queries: torch.Tensor,
    points: torch.Tensor,
    points_valid: torch.Tensor | None = None,
    query_labels: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
    chunk_size: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query point, the nearest valid point of each set (with the same label).

    Args:
        queries: ``(Q, D)`` e.g. mesh vertices in canonical body coordinates.
        points: ``(..., N, D)`` point sets, e.g. the canonical coordinates of each pixel's
            predicted surface point in each image.
        points_valid: ``(..., N)`` bool (e.g. foreground pixels); default all.
        query_labels, point_labels: optional ``(Q,)`` and ``(..., N)`` integer labels (e.g. the
            body part): a query only matches points of its label.
        chunk_size: query-point pairs computed at once (memory is linear in the sizes).
    Returns:
        ``(index, distance)``, both ``(..., Q)``: the index into ``N`` (-1 where no valid point
        has the label) and the Euclidean distance (``inf`` there).
    """
    check_tensor(queries, "queries", floating=True)
    check_tensor(points, "points", floating=True)
    dims = check_shape(queries, "queries", "(Q, D)")
    check_shape(points, "points", "(..., N, D)", sizes=dims)
    Q, N, D = queries.shape[0], points.shape[-2], points.shape[-1]
    batch = points.shape[:-2]
    dev = points.device
    pts = points.reshape(-1, N, D)
    R = pts.shape[0]
    valid = torch.ones(R, N, dtype=torch.bool, device=dev)
    if points_valid is not None:
        check_tensor(points_valid, "points_valid", dtype=torch.bool)
        check_shape(points_valid, "points_valid", "(..., N)", sizes={"N": N})
        valid = points_valid.to(dev).expand(*batch, N).reshape(R, N)
    valid = valid & torch.isfinite(pts).all(-1)
    if (query_labels is None) != (point_labels is None):
        raise ValueError("give both query_labels and point_labels, or neither")
    if query_labels is None:
        ql = torch.zeros(Q, dtype=torch.long, device=dev)
        pl = torch.zeros(R, N, dtype=torch.long, device=dev)
    else:
        check_shape(query_labels, "query_labels", "(Q,)", sizes={"Q": Q})
        check_shape(point_labels, "point_labels", "(..., N)", sizes={"N": N})
        if query_labels.is_floating_point() or point_labels.is_floating_point():
            raise TypeError("query_labels and point_labels must be integer tensors")
        ql = query_labels.to(dev).long()
        pl = point_labels.to(dev).long().expand(*batch, N).reshape(R, N)
    check_positive(chunk_size, "chunk_size")
    q_all = queries.to(device=dev, dtype=pts.dtype)
    index = torch.full((R, Q), -1, dtype=torch.long, device=dev)
    dist = torch.full((R, Q), float("inf"), dtype=pts.dtype, device=dev)
    labels = torch.unique(ql)
    L = labels.numel()
    # one stable sort per set groups its valid points by label (rank 0..L-1; L = unused)
    rank = torch.searchsorted(labels, pl.contiguous()).clamp_max(L - 1)
    key = torch.where(valid & (labels[rank] == pl), rank, L)
    order = torch.argsort(key, dim=1, stable=True)
    counts = torch.zeros(R, L + 1, dtype=torch.long, device=dev)
    counts.scatter_add_(1, key, torch.ones_like(key))
    starts = counts.cumsum(1) - counts
    for j, label in enumerate(labels.tolist()):  # a few labels (body parts); all else batched
        qsel = torch.nonzero(ql == label)[:, 0]
        M = int(counts[:, j].max()) if R else 0
        if M == 0:
            continue
        ar = torch.arange(M, device=dev)
        pos = (starts[:, j, None] + ar).clamp_max(N - 1)
        cand_idx = order.gather(1, pos)  # (R, M) indices into N
        cand = pts.gather(1, cand_idx[..., None].expand(-1, -1, D))
        pad = ar[None] >= counts[:, j, None]
        q = q_all[qsel]
        step = max(1, int(chunk_size) // max(1, q.shape[0] * M))
        for s in range(0, R, step):
            e = min(R, s + step)
            d = torch.cdist(q.expand(e - s, -1, -1), cand[s:e],
                            compute_mode="donot_use_mm_for_euclid_dist")  # (r, q, M)
            d = d.masked_fill(pad[s:e, None, :], float("inf"))
            dmin, arg = d.min(-1)
            idx = torch.where(torch.isfinite(dmin), cand_idx[s:e].gather(1, arg), -1)
            index[s:e, qsel] = idx
            dist[s:e, qsel] = dmin
    return index.reshape(*batch, Q), dist.reshape(*batch, Q)


def triangulate_surface_vertices(
    vertex_coords: torch.Tensor,
    pixel_coords: torch.Tensor,
    pixel_xy: torch.Tensor,
    P: torch.Tensor,
    tolerance: float,
    pixel_valid: torch.Tensor | None = None,
    vertex_labels: torch.Tensor | None = None,
    pixel_labels: torch.Tensor | None = None,
    min_views: int = 2,
    chunk_size: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense triangulation of mesh vertices from dense keypoints (the reconstruction protocol of
    Yu et al. 2021's MPVPE and MVS).

    Protocol: for every mesh vertex and view, the foreground pixel whose (predicted) surface
    point is nearest to the vertex, in canonical body coordinates and on the same part
    (:func:`nearest_surface_points`), is the vertex's observation in that view if that distance
    is ``<= tolerance``; a vertex observed in ``min_views`` views or more (the paper's "visible
    from both views" with two views) is triangulated from the pixel centres of all its
    observations by the DLT (:func:`mvbook.geometry.triangulate`). The same search on the
    ground-truth dense keypoints gives the ground-truth visible vertices. Pixel centres limit the
    accuracy: even a perfect prediction places each observation up to about half a pixel
    footprint from the vertex, so its MPVPE is a fraction of the pixel size on the body
    (measured on the studio at 128 px, 22 mm per pixel: 13 mm, about 0.6 pixel footprints).

    Args:
        vertex_coords: ``(V, D)`` canonical coordinates of the vertices (mm, any D).
        pixel_coords: ``(..., C, N, D)`` canonical coordinates of each pixel's surface point
            (non-finite = background).
        pixel_xy: ``(..., C, N, 2)`` (broadcastable, e.g. ``(N, 2)``) undistorted pixel
            coordinates of those pixels.
        P: ``(..., C, 3, 4)`` projection matrices (mm to pixels).
        tolerance: largest accepted canonical distance (mm) between a vertex and its pixel.
        pixel_valid: ``(..., C, N)`` bool foreground pixels (default: finite coordinates).
        vertex_labels, pixel_labels: ``(V,)`` and ``(..., C, N)`` integer parts (optional).
        min_views: views needed to triangulate (>= 2).
        chunk_size: see :func:`nearest_surface_points`.
    Returns:
        ``(points (..., V, 3) mm, NaN where not triangulated; valid (..., V) bool, triangulated;
        observed (..., C, V) bool, the views that observe each vertex)``.
    """
    from .geometry import triangulate

    check_tensor(pixel_coords, "pixel_coords", floating=True)
    check_shape(pixel_coords, "pixel_coords", "(..., C, N, D)")
    check_tensor(pixel_xy, "pixel_xy", floating=True)
    check_shape(pixel_xy, "pixel_xy", "(..., N, 2)", sizes={"N": pixel_coords.shape[-2]})
    check_shape(P, "P", "(..., C, 3, 4)", sizes={"C": pixel_coords.shape[-3]})
    if not (isinstance(tolerance, (int, float)) and float(tolerance) >= 0):
        raise ValueError(f"tolerance must be a number of mm >= 0, got {tolerance!r}")
    if not isinstance(min_views, int) or min_views < 2:
        raise ValueError(f"min_views must be an int >= 2, got {min_views!r}")
    index, dist = nearest_surface_points(vertex_coords, pixel_coords, pixel_valid, vertex_labels,
                                         pixel_labels, chunk_size)  # (..., C, V)
    observed = (index >= 0) & (dist <= float(tolerance))
    xy = pixel_xy.to(device=index.device)
    xy = xy.expand(*index.shape[:-1], xy.shape[-2], 2)
    uv = xy.gather(-2, index.clamp_min(0)[..., None].expand(*index.shape, 2))
    uv = torch.where(observed[..., None], uv, torch.full((), float("nan"), dtype=uv.dtype,
                                                         device=uv.device))
    valid = observed.sum(-2) >= min_views
    X = triangulate(uv, P.to(device=uv.device, dtype=uv.dtype), on_degenerate="nan")
    X = torch.where(valid[..., None], X, torch.full((), float("nan"), dtype=X.dtype,
                                                    device=X.device))
    return X, valid, observed
