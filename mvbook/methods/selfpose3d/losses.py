"""SelfPose3d's losses (eqs. 2-11) and the supervised baseline's, and :func:`make_loss`.

Self-supervised (``config.supervision == "self"``):

- eq. 2, :func:`root_synthetic_loss`: L2 between the root net's volumes of synthetic multiview
  root heatmaps and 3D Gaussians at the synthetic roots;
- eq. 3, :func:`root_consistency_loss`: L2 between the root volume of the unaugmented views
  ``G^0`` (the baseline, not differentiated) and those of two affine-augmented copies;
- eq. 4 / eq. 7, :func:`heatmap_loss`: the 3D poses of augmentation A, projected through
  augmentation B's cameras and rendered (:func:`render_poses`), against B's pseudo heatmaps
  (and vice versa), optionally weighted by attention maps ``A`` (eq. 7);
- eq. 8, :func:`attention_regulariser`: ``mean (A - 1)^2``;
- eq. 5 / eqs. 9-10, :func:`joint_loss`: per view, Hungarian matching
  (:func:`match_views`, ``scipy.optimize.linear_sum_assignment`` on the mean absolute joint
  error) of projected and pseudo 2D poses, L1 over the matched joints, averaged over the views,
  or over all views but the worst one (hard attention);
- eq. 11: ``l_H + lambda l_J + sigma l_attn`` (``lambda = 0.01``, ``sigma = 0.1``), with
  ``lambda`` rescaled by :func:`joint_loss_scale` on heatmaps of another size than the paper's.

"L2" is the mean squared difference over all voxels or pixels, "L1" the mean absolute difference
over the matched joints; both in heatmap units (2D joints in heatmap px).

Supervised (``"3d"``, VoxelPose's protocol): the 2D network on ground-truth 2D heatmaps, the
root net on 3D Gaussians at the true roots (:func:`root_targets`), the pose net by L1 to the
true pose of the nearest true root within ``match_radius`` of each proposal.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from mvbook.heatmaps import render_gaussian_2d
from mvbook.train import to_device
from mvbook.validation import check_choice, check_shape

from .augment import (
    apply_affine,
    augment_projections,
    image_to_heatmap,
    project,
    random_affines,
    warp_images,
)
from .config import STAGES, Config
from .space import render_root_heatmaps, root_targets, synthetic_roots

__all__ = [
    "attention_regulariser",
    "brute_force_match",
    "heatmap_loss",
    "hungarian_match",
    "joint_loss",
    "joint_loss_scale",
    "make_loss",
    "match_views",
    "render_poses",
    "root_consistency_loss",
    "root_synthetic_loss",
    "roots_of",
]


#: The paper's heatmaps (VoxelPose on Panoptic: 960 x 512 images, stride 4) and their sigma.
PAPER_HEATMAP = (240, 128)
PAPER_SIGMA = 2.0


def joint_loss_scale(heatmap_size: Sequence[int], sigma: float) -> float:
    """The factor on ``lambda`` (eq. 11) that keeps the paper's balance between eq. 7 and the L1
    joint loss on heatmaps of ``heatmap_size = (w, h)`` and ``sigma`` px.

    Eq. 7 is a mean over the ``h w`` pixels of squared differences of Gaussians; for a joint
    misplaced by more than a few ``sigma`` (a joint taken from a neighbour, the error the joint
    loss is there to correct) the two Gaussians no longer overlap and it is
    ``2 pi sigma^2 / (h w)``. The L1 loss is in heatmap px, so for the same error in the image it
    scales as ``w``. Keeping ``lambda l_J / l_H`` as on the paper's 240 x 128 maps with
    ``sigma = 2`` gives ``(sigma^2 / (h w)) / (2^2 / (240 * 128)) * (240 / w)``: 1 on the
    paper's maps, 66.7 on the quick studio's 48 x 27 maps with ``sigma = 1.5``. (For errors
    well below ``sigma`` eq. 7 is ``~ pi d^2 / (2 h w)`` with ``d`` in heatmap px, and the same
    balance would scale ``lambda`` by ``128 / h`` instead.)
    """
    w, h = (float(v) for v in heatmap_size)
    if w <= 0 or h <= 0 or sigma <= 0:
        raise ValueError(f"heatmap_size and sigma must be positive, got {heatmap_size!r}, {sigma!r}")
    pw, ph = PAPER_HEATMAP
    return (sigma**2 / (w * h)) / (PAPER_SIGMA**2 / (pw * ph)) * (pw / w)


# --------------------------------------------------------------------------------- helpers
def roots_of(joints: torch.Tensor, valid: torch.Tensor, root_joints: Sequence[int]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The root (mean of ``root_joints``) of joints ``(..., J, D)`` with validity ``(..., J)``:
    ``(..., D)`` and ``(...)`` (valid when all its joints are)."""
    idx = list(root_joints)
    return joints[..., idx, :].mean(-2), valid[..., idx].all(-1)


def render_poses(joints2d: torch.Tensor, valid: torch.Tensor, image_size: Sequence[int],
                 heatmap_size: Sequence[int], sigma: float,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-person heatmaps: 2D poses ``(..., P, J, 2)`` image px, ``valid (..., P, J)`` ->
    ``(..., J, h, w)``, the maximum over persons of differentiable Gaussians (sec. 3.4), each
    scaled by ``weights (..., P, J)`` when given."""
    check_shape(joints2d, "joints2d", "(..., P, J, 2)")
    uv = image_to_heatmap(joints2d, image_size, heatmap_size)
    heat = render_gaussian_2d(uv, tuple(int(v) for v in heatmap_size), sigma)
    w = valid.to(heat.dtype) if weights is None else valid.to(heat.dtype) * weights.to(heat)
    heat = heat * w[..., None, None]
    if heat.shape[-4] == 0:
        return heat.sum(-4)
    return heat.amax(-4)


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor,
                 attention: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 (``attention`` None): ``mean (H - H*)^2``; eq. 7: ``mean A (H - H*)^2``."""
    sq = (pred - target) ** 2
    return (sq if attention is None else attention * sq).mean()


def attention_regulariser(attention: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``L2(A, 1) = mean (A - 1)^2``."""
    return ((attention - 1) ** 2).mean()


def root_consistency_loss(G0: torch.Tensor, G1: torch.Tensor, G2: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``L2(G^0, G^1) + L2(G^0, G^2)`` with ``G^0`` the (not differentiated) baseline."""
    G0 = G0.detach()
    return ((G1 - G0) ** 2).mean() + ((G2 - G0) ** 2).mean()


def hungarian_match(cost: np.ndarray) -> np.ndarray:
    """The optimal assignment of rows to columns of ``cost (P, Q)``: ``(P,)`` column of each
    row, -1 for unmatched rows (when ``P > Q``)."""
    rows, cols = linear_sum_assignment(cost)
    out = np.full(cost.shape[0], -1, dtype=np.int64)
    out[rows] = cols
    return out


def brute_force_match(cost: np.ndarray) -> tuple[np.ndarray, float]:
    """The assignment of :func:`hungarian_match` by trying every one (small problems only):
    ``(match (P,), total cost)``."""
    P, Q = cost.shape
    best, best_cost = None, np.inf
    if P <= Q:
        for perm in itertools.permutations(range(Q), P):
            c = cost[np.arange(P), list(perm)].sum()
            if c < best_cost:
                best, best_cost = np.array(perm, dtype=np.int64), c
    else:
        for perm in itertools.permutations(range(P), Q):
            c = cost[list(perm), np.arange(Q)].sum()
            if c < best_cost:
                best_cost = c
                best = np.full(P, -1, dtype=np.int64)
                best[list(perm)] = np.arange(Q)
    return best, float(best_cost)


def match_views(pred: torch.Tensor, pred_valid: torch.Tensor, target: torch.Tensor,
                target_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view, the Hungarian assignment (eq. 5) of predicted to pseudo 2D poses.

    The cost of a pair is the mean absolute coordinate error over the target's valid joints.
    The costs of all views come from one batched computation; each view's small assignment is
    then solved by ``scipy.optimize.linear_sum_assignment``.

    Args:
        pred: ``(B, C, P, J, 2)``; pred_valid: ``(B, P)`` bool (valid proposals);
        target: ``(B, C, Q, J, 2)``; target_valid: ``(B, C, Q, J)`` bool.

    Returns:
        ``matched (B, C, P, J, 2)`` the target of each prediction (zeros when unmatched) and
        ``mask (B, C, P, J)`` bool, the matched and valid joints.
    """
    dims = check_shape(pred, "pred", "(B, C, P, J, 2)")
    check_shape(target, "target", "(B, C, Q, J, 2)", sizes=dims)
    B, C, P, J = pred.shape[:4]
    Q = target.shape[2]
    tv = target_valid.to(pred.dtype)  # (B, C, Q, J)
    with torch.no_grad():
        err = (pred[:, :, :, None] - target[:, :, None]).abs().mean(-1)  # (B, C, P, Q, J)
        n = tv.sum(-1)[:, :, None]  # (B, C, 1, Q)
        cost = (err * tv[:, :, None]).sum(-1) / n.clamp_min(1)
        usable = pred_valid[:, None, :, None] & (n > 0)
        cost = torch.where(usable, cost, torch.full_like(cost, 1e9)).cpu().numpy()
        usable = usable.cpu().numpy()
    index = np.full((B, C, P), -1, dtype=np.int64)
    for b, c in itertools.product(range(B), range(C)):
        if P and Q:
            m = hungarian_match(cost[b, c])
            ok = m >= 0
            ok[ok] &= usable[b, c, np.flatnonzero(ok), m[ok]]
            index[b, c] = np.where(ok, m, -1)
    idx = torch.as_tensor(index, device=pred.device)
    safe = idx.clamp_min(0)
    matched = torch.gather(target, 2, safe[..., None, None].expand(B, C, P, J, 2))
    mask = torch.gather(target_valid, 2, safe[..., None].expand(B, C, P, J)) & (idx >= 0)[..., None]
    return torch.where(mask[..., None], matched, torch.zeros_like(matched)), mask


def joint_loss(pred: torch.Tensor, matched: torch.Tensor, mask: torch.Tensor,
               hard_attention: bool) -> torch.Tensor:
    """Eq. 5 (``hard_attention`` False) or eqs. 9-10: the L1 error of each view (mean over its
    matched joints and coordinates), averaged over the views of each frame that have a match,
    leaving out the view with the largest error with hard attention (when two or more views
    have a match); then averaged over the frames.

    Args:
        pred, matched: ``(B, C, P, J, 2)``; mask: ``(B, C, P, J)`` bool.
    """
    w = mask.to(pred.dtype)
    per_view = ((pred - matched).abs().mean(-1) * w).sum((-2, -1)) / w.sum((-2, -1)).clamp_min(1)
    has = w.sum((-2, -1)) > 0  # (B, C)
    keep = has.clone()
    if hard_attention:
        worst = torch.where(has, per_view.detach(), torch.full_like(per_view, -1.0)).argmax(-1)
        drop = torch.zeros_like(has).scatter(1, worst[:, None], True) & (has.sum(-1) >= 2)[:, None]
        keep = has & ~drop
    k = keep.to(pred.dtype)
    per_frame = (per_view * k).sum(-1) / k.sum(-1).clamp_min(1)
    frames = keep.any(-1)
    if not bool(frames.any()):
        return pred.sum() * 0
    return per_frame[frames].mean()


def root_synthetic_loss(model: Any, P: torch.Tensor, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """Eq. 2 on a batch of synthetic roots seen by the cameras ``P (B, C, 3, 4)``."""
    cfg = model.config
    B = P.shape[0]
    c = model.space_center
    extent = (cfg.space_size[0] * cfg.syn_extent, cfg.space_size[1] * cfg.syn_extent)
    roots, valid = synthetic_roots(B, cfg.syn_people, c, extent, cfg.syn_z_range, generator)
    roots, valid = roots.to(P.device), valid.to(P.device)
    heat = render_root_heatmaps(roots, valid, P, model.image_size, model.heatmap_size,
                                cfg.heatmap_sigma, cfg.syn_jitter, cfg.syn_min_peak, cfg.syn_drop,
                                generator)
    G = model.root_volume(heat, P)
    return ((G - root_targets(roots, valid, model.grid, cfg.root_sigma)) ** 2).mean()


# ------------------------------------------------------------------------------- the views
def _identity(B: int, C: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(B, C, 3, 3)


def _heatmaps(model: Any, images: torch.Tensor) -> torch.Tensor:
    with torch.set_grad_enabled(torch.is_grad_enabled() and not model.config.freeze_backbone):
        return model.heatmaps(images).float()


def _views(model: Any, batch: dict, generator: torch.Generator | None, need_plain: bool
           ) -> dict[str, torch.Tensor | None]:
    """The unaugmented views' heatmaps and two augmented copies (A, B): their heatmaps
    ``(B, C, J + 1, h, w)`` and transforms ``(B, C, 3, 3)``, from the heatmap bank
    (``batch["heat"]``, augmentations drawn when the bank was made) or computed online."""
    cfg = model.config
    P = batch["P"]
    B, C = P.shape[:2]
    if "heat" in batch:
        heat, T = batch["heat"], batch["T"]
        n = heat.shape[1] - 1
        if cfg.affine and n >= 2:
            a = torch.randint(1, n + 1, (), generator=generator).item()
            b = torch.randint(1, n, (), generator=generator).item()
            b = b + (b >= a)
        elif cfg.affine and n == 1:
            a, b = 1, 1
        else:
            a = b = 0
        return {"T0": T[:, 0].float(), "H0": heat[:, 0].float(), "TA": T[:, a].float(),
                "HA": heat[:, a].float(), "TB": T[:, b].float(), "HB": heat[:, b].float()}
    images = batch["images"]
    if cfg.affine:
        TA = random_affines(B, model.image_size, cfg.rotation_deg, cfg.scale, generator)
        TB = random_affines(B, model.image_size, cfg.rotation_deg, cfg.scale, generator)
        TA, TB = (T.to(P.device)[:, None].expand(B, C, 3, 3) for T in (TA, TB))
        HA = _heatmaps(model, warp_images(images, TA))
        HB = _heatmaps(model, warp_images(images, TB))
    else:
        TA = TB = _identity(B, C, P.device)
        HA = HB = None
    H0 = _heatmaps(model, images) if need_plain or HA is None else None
    if HA is None:
        HA = HB = H0
    return {"T0": _identity(B, C, P.device), "H0": H0, "TA": TA, "HA": HA, "TB": TB, "HB": HB}


def _connected_zero(module: torch.nn.Module) -> torch.Tensor:
    """A zero that depends on ``module``'s parameters (a batch without any proposal still has a
    loss to back-propagate)."""
    return sum(p.sum() for p in module.parameters()) * 0.0


def _proposals(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    if "proposals" not in batch:
        raise ValueError("the pose stages need proposals in the training set: "
                         "run the root net first (data.with_proposals)")
    return batch["proposals"].float(), batch["proposal_valid"].bool()


def _poses(model: Any, heat: torch.Tensor, P: torch.Tensor, props: torch.Tensor,
           valid: torch.Tensor) -> torch.Tensor:
    """``(B, K, J, 3)`` poses of the valid proposals (zeros elsewhere)."""
    J = model.config.num_joints
    B, K = valid.shape
    b, k = valid.nonzero(as_tuple=True)
    out = props.new_zeros(B, K, J, 3)
    if len(b):
        Y = model.pose(heat[b, :, :J], P[b], props[b, k])
        out = out.index_put((b, k), Y.to(out.dtype))
    return out


# ------------------------------------------------------------------------------ make_loss
def make_loss(stage: str, config: Config, generator: torch.Generator | None = None):
    """``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`.

    ``stage`` (:data:`~.config.STAGES`): ``"backbone"`` (the 2D network, heatmap MSE against
    the set's 2D labels: pseudo, or true for the supervised baseline), ``"root"`` (eqs. 2-3,
    or 3D Gaussian targets with ``supervision="3d"``), ``"pose"`` (eq. 4 / eq. 7 + eq. 8; L1 to
    true 3D poses with ``"3d"``), ``"finetune"`` (eq. 11: eq. 7 + lambda eqs. 9-10 + sigma
    eq. 8, or the switches of ``config``; with ``"3d"`` the same L1 as ``"pose"``). ``model`` is a :class:`~.model.SelfPose3dNet` built
    with ``config``; the batch a collated :class:`~.data.SceneSet` item.
    """
    check_choice(stage, "stage", STAGES)
    cfg = config

    def backbone_loss(model, batch):
        batch = to_device(batch, model.grid.device)
        images, uv, valid = batch["images"], batch["pseudo2d"].float(), batch["pseudo_valid"]
        B, C = images.shape[:2]
        if cfg.affine:
            T = random_affines(B, model.image_size, cfg.rotation_deg, cfg.scale, generator)
            T = T.to(images.device)[:, None].expand(B, C, 3, 3)
            images = warp_images(images, T)
            uv = apply_affine(T[:, :, None], uv)
        root, rvalid = roots_of(uv, valid, cfg.root_joints)
        uv = torch.cat([uv, root[..., None, :]], -2)
        valid = torch.cat([valid, rvalid[..., None]], -1)
        target = render_poses(uv, valid, model.image_size, model.heatmap_size,
                              cfg.heatmap_sigma)
        heat = model.heatmaps(images).float()
        loss = heatmap_loss(heat, target)
        return loss, {}

    def root_loss(model, batch):
        batch = to_device(batch, model.grid.device)
        P = batch["P"].float()
        J = cfg.num_joints
        if cfg.supervision == "3d":
            v = _views(model, batch, generator, need_plain=True)
            G = model.root_volume(v["H0"][:, :, J:J + 1], P)
            roots, rvalid = roots_of(batch["joints3d"].float(), batch["joint_valid"],
                                     cfg.root_joints)
            rvalid = rvalid & batch["person_valid"]
            loss = ((G - root_targets(roots, rvalid, model.grid, cfg.root_sigma)) ** 2).mean()
            return loss, {}
        syn = root_synthetic_loss(model, P, generator)
        logs = {"syn": syn.detach()}
        loss = syn
        if cfg.root_consistency:
            v = _views(model, batch, generator, need_plain=True)
            with torch.no_grad():  # the baseline of eq. 3 is a target
                G0 = model.root_volume(v["H0"][:, :, J:J + 1], P)
            G1 = model.root_volume(v["HA"][:, :, J:J + 1], augment_projections(v["TA"], P))
            G2 = model.root_volume(v["HB"][:, :, J:J + 1], augment_projections(v["TB"], P))
            cons = root_consistency_loss(G0, G1, G2)
            loss = loss + cons
            logs["consistency"] = cons.detach()
        return loss, logs

    def pose_supervised(model, batch):
        batch = to_device(batch, model.grid.device)
        P = batch["P"].float()
        props, pvalid = _proposals(batch)
        gt, gvalid, pv = batch["joints3d"].float(), batch["joint_valid"], batch["person_valid"]
        roots, rvalid = roots_of(gt, gvalid, cfg.root_joints)
        d = (props[:, :, None] - roots[:, None]).norm(dim=-1)  # (B, K, G)
        d = torch.where((rvalid & pv)[:, None], d, torch.full_like(d, float("inf")))
        best, idx = d.min(-1) if d.shape[-1] else (torch.full_like(d[..., 0], float("inf")),
                                                    torch.zeros_like(d[..., 0], dtype=torch.long))
        use = pvalid & (best < cfg.match_radius)
        v = _views(model, batch, generator, need_plain=True)
        Y = _poses(model, v["H0"], P, props, use)
        B, K = use.shape
        target = torch.gather(gt, 1, idx[..., None, None].expand(B, K, *gt.shape[2:]))
        jv = torch.gather(gvalid, 1, idx[..., None].expand(B, K, gvalid.shape[-1])) & use[..., None]
        w = jv.to(Y.dtype)
        loss = ((Y - target).abs().mean(-1) * w).sum() / w.sum().clamp_min(1) + \
            _connected_zero(model.pose_net)
        with torch.no_grad():
            mpjpe = ((Y - target).norm(dim=-1) * w).sum() / w.sum().clamp_min(1)
        return loss, {"mpjpe": mpjpe}

    def pose_self(model, batch, with_l1: bool):
        batch = to_device(batch, model.grid.device)
        P = batch["P"].float()
        props, pvalid = _proposals(batch)
        v = _views(model, batch, generator, need_plain=False)
        B, C = P.shape[:2]
        J = cfg.num_joints
        sigma = cfg.render_sigma or cfg.heatmap_sigma
        PA, PB = augment_projections(v["TA"], P), augment_projections(v["TB"], P)
        YA = _poses(model, v["HA"], PA, props, pvalid)
        YB = _poses(model, v["HB"], PB, props, pvalid)
        K = props.shape[1]
        pseudo, pseudo_valid = batch["pseudo2d"].float(), batch["pseudo_valid"]
        loss_h = loss_j = loss_a = torch.zeros((), device=P.device)
        for Y, T, other in ((YA, v["TB"], v["TA"]), (YB, v["TA"], v["TB"])):
            # cross-affine view: the poses of one augmentation in the other's image space
            Tv = T if cfg.cross_view else other
            y = project(augment_projections(Tv, P), Y.reshape(B, K * J, 3)).reshape(B, C, K, J, 2)
            ystar = apply_affine(Tv[:, :, None], pseudo)  # (B, C, Q, J, 2)
            pmask = pvalid[:, None, :, None].expand(B, C, K, J)
            H = render_poses(y, pmask, model.image_size, model.heatmap_size, sigma)
            Hstar = render_poses(ystar, pseudo_valid, model.image_size, model.heatmap_size, sigma)
            attn = None
            if cfg.soft_attention and model.attention is not None:
                from mvbook.crops import normalize_images

                imgs = normalize_images(warp_images(batch["images"], Tv)).flatten(0, 1)
                if cfg.attention_scale != 1.0:
                    imgs = torch.nn.functional.interpolate(
                        imgs, scale_factor=cfg.attention_scale, mode="bilinear",
                        align_corners=False, antialias=True)
                attn = model.attention(imgs, model.heatmap_size).unflatten(0, (B, C))
                loss_a = loss_a + attention_regulariser(attn)
            loss_h = loss_h + heatmap_loss(H, Hstar, attn)
            if with_l1 and cfg.l1_weight > 0:
                yh = image_to_heatmap(y, model.image_size, model.heatmap_size)
                sh = image_to_heatmap(ystar, model.image_size, model.heatmap_size)
                matched, mask = match_views(yh, pvalid, sh, pseudo_valid)
                loss_j = loss_j + joint_loss(yh, matched, mask, cfg.hard_attention)
        lam = cfg.l1_weight * joint_loss_scale(model.heatmap_size, sigma)
        loss = loss_h + lam * loss_j * with_l1 + cfg.attention_weight * loss_a + \
            _connected_zero(model.pose_net)
        logs = {"heat": loss_h.detach()}
        if with_l1 and cfg.l1_weight > 0:
            logs["l1"] = loss_j.detach()
        if model.attention is not None and cfg.soft_attention:
            logs["attn"] = loss_a.detach()
        return loss, logs

    if stage == "backbone":
        return backbone_loss
    if stage == "root":
        return root_loss
    if cfg.supervision == "3d":
        return pose_supervised
    return lambda model, batch: pose_self(model, batch, with_l1=stage == "finetune")
