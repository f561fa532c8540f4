"""Losses of the weakly supervised 2.5D method (Iqbal et al. 2020), and :func:`make_loss`.

- the 2D loss on 2D-labelled images (:func:`heatmap_loss`),
- the multiview consistency up to a rigid transform on unlabelled synchronised views
  (:func:`multiview_consistency_loss`; Procrustes, no extrinsics),
- the limb-length prior: bone lengths near mean ratios, left/right symmetric
  (:func:`limb_length_loss`, :func:`bone_ratio_prior`),
- a distance prior keeping joints in front of the camera (:func:`distance_prior_loss`; the
  book's addition against a degenerate solution),
- the depth term of the fully supervised reference model (:func:`depth_loss`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mvbook.geometry import procrustes
from mvbook.heatmaps import render_gaussian_2d
from mvbook.skeletons import H36M_17, Skeleton
from mvbook.validation import check_choice, check_same_shape, check_shape

from .config import MC_ROOTS, MODES, REFERENCE_BONE, Config
from .data import color_jitter
from .pose25d import (
    normalized_rays,
    reconstruct_from_25d,
    root_depth_from_25d,
    root_depth_from_skeleton,
    scale_normalize,
)

__all__ = [
    "heatmap_loss",
    "rigid_align",
    "multiview_consistency_loss",
    "bone_lengths",
    "bone_ratio_prior",
    "limb_length_loss",
    "distance_prior_loss",
    "depth_loss",
    "multiview_terms",
    "make_loss",
    "make_depth_loss",
]


def heatmap_loss(out: Mapping[str, torch.Tensor], joints2d: torch.Tensor, visibility: torch.Tensor,
                 sigma: float = 1.0, w_coord: float = 1.0, w_heatmap: float = 1.0
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """2D loss on labelled images: L1 of soft-argmax coordinates + heatmap cross-entropy.

    ``L = w_coord mean|uv - uv_gt| / h + w_heatmap mean_j CE(G(uv_gt, sigma), softmax(H_j))``
    with ``G`` a normalised Gaussian target; joints with ``visibility`` False do not count.

    Args:
        out: the network output (``joints2d (N, J, 2)``, ``log_prob (N, J, h, w)``).
        joints2d: ``(N, J, 2)`` true heatmap pixels; visibility: ``(N, J)`` bool.
    """
    uv = out["joints2d"]
    log_prob = out["log_prob"]
    h, w = log_prob.shape[-2:]
    check_same_shape(joints2d, uv, ("joints2d", "out['joints2d']"))
    uv_gt = joints2d
    mask = visibility.to(uv.dtype)
    denom = mask.sum().clamp_min(1.0)
    coord = ((uv - uv_gt).abs().sum(-1) / max(h, w) * mask).sum() / denom
    target = render_gaussian_2d(uv_gt.clamp(0, max(h, w) - 1), (w, h), sigma, normalize=True)
    target = target / target.flatten(-2).sum(-1).clamp_min(1e-12)[..., None, None]
    ce = (-(target * log_prob).flatten(-2).sum(-1) * mask).sum() / denom
    loss = w_coord * coord + w_heatmap * ce
    return loss, {"l2d_coord": coord.detach(), "l2d_ce": ce.detach()}


def rigid_align(X: torch.Tensor, Y: torch.Tensor, grad: bool = True) -> torch.Tensor:
    """``X`` aligned to ``Y`` by the best rotation and translation (Procrustes, no scale).

    ``X, Y (..., J, 3)``. The SVD runs in float64 (the 3x3 problems are tiny; double precision
    keeps its gradient finite for nearly planar poses). With ``grad=False`` the transform
    ``(R, t)`` is treated as a constant (stop-gradient) and gradients reach ``X`` only through
    ``R X + t``. Uses :func:`mvbook.geometry.procrustes`.
    """
    Xd, Yd = X.double(), Y.double()
    if grad:
        R, _, t = procrustes(Xd, Yd, scale=False)
    else:
        R, _, t = procrustes(Xd.detach(), Yd.detach(), scale=False)
    return (Xd @ R.transpose(-1, -2) + t[..., None, :]).to(X.dtype)


def multiview_consistency_loss(poses: torch.Tensor, delta: float = 0.1, root_joint: int = 0,
                               align_grad: bool = False) -> torch.Tensor:
    """Multiview consistency up to a rigid transform (Iqbal et al. 2020).

    For every ordered pair of views ``(c, c')`` the root-centred pose predicted from view ``c'``
    is rigidly aligned (rotation + translation from Procrustes) to the pose predicted from view
    ``c``, and their distance is averaged::

        L_MC = mean_{c != c'} mean_j rho(R_{c'c} X_{c',j} + t_{c'c} - X_{c,j})

    with ``rho`` the smooth L1 with threshold ``delta`` (``delta = 0``: L1), summed over x, y, z.
    No extrinsics are used. Zero iff the views' poses are rigid copies of each other.
    ``align_grad``: let gradients flow through the Procrustes solution ``(R, t)`` (True) or
    treat it as a constant (False; for a squared distance both give the same gradient, by the
    envelope theorem, since ``(R, t)`` minimises the squared distance).

    Args:
        poses: ``(..., C, J, 3)`` scale-normalised 3D poses in each view's camera frame, C >= 2.

    Returns:
        scalar loss.
    """
    C = check_shape(poses, "poses", "(..., C, J, 3)")["C"]
    if C < 2:
        raise ValueError(f"poses must have shape (..., C, J, 3) with C >= 2, got {tuple(poses.shape)}")
    centred = poses - poses[..., root_joint : root_joint + 1, :]
    src = centred[..., None, :, :, :].expand(*centred.shape[:-3], C, C, *centred.shape[-2:])
    dst = centred[..., :, None, :, :].expand_as(src)
    off = ~torch.eye(C, dtype=torch.bool, device=poses.device)
    src, dst = src[..., off, :, :], dst[..., off, :, :]  # (..., C (C - 1), J, 3)
    aligned = rigid_align(src, dst, grad=align_grad)
    diff = aligned - dst
    if delta > 0:
        dist = F.smooth_l1_loss(diff, torch.zeros_like(diff), beta=delta, reduction="none")
    else:
        dist = diff.abs()
    return dist.sum(-1).mean()


def bone_lengths(poses: torch.Tensor, skeleton: Skeleton = H36M_17) -> torch.Tensor:
    """``(..., B)`` lengths of the skeleton's bones of poses ``(..., J, 3)``."""
    check_shape(poses, "poses", "(..., J, 3)")
    idx = torch.tensor(skeleton.bones, device=poses.device)
    return (poses[..., idx[:, 0], :] - poses[..., idx[:, 1], :]).norm(dim=-1)


def bone_ratio_prior(joints3d: torch.Tensor, skeleton: Skeleton = H36M_17,
                     reference_bone: Sequence[int] = REFERENCE_BONE) -> torch.Tensor:
    """Mean scale-normalised bone lengths ``(B,)`` of a motion-capture collection ``(N, J, 3)``
    (left/right bones averaged so that the prior itself is symmetric)."""
    normed, _ = scale_normalize(joints3d.reshape(-1, *joints3d.shape[-2:]), reference_bone)
    mean = bone_lengths(normed, skeleton).mean(0)
    pairs = _symmetric_bone_pairs(skeleton)
    if pairs:
        left = torch.tensor([p[0] for p in pairs])
        right = torch.tensor([p[1] for p in pairs])
        avg = 0.5 * (mean[left] + mean[right])
        mean = mean.clone()
        mean[left] = avg
        mean[right] = avg
    return mean


def _symmetric_bone_pairs(skeleton: Skeleton) -> list[tuple[int, int]]:
    """Pairs of bone indices that mirror each other under the skeleton's left/right flip."""
    perm = skeleton.flip_permutation
    index = {b: i for i, b in enumerate(skeleton.bones)}
    pairs = []
    for i, (a, b) in enumerate(skeleton.bones):
        j = index.get((perm[a], perm[b]))
        if j is not None and j > i:
            pairs.append((i, j))
    return pairs


def limb_length_loss(poses: torch.Tensor, prior: torch.Tensor | None,
                     skeleton: Skeleton = H36M_17, w_ratio: float = 1.0, w_sym: float = 1.0
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Limb-length prior on scale-normalised poses ``(..., J, 3)``.

    ``w_ratio mean_b |l_b - mu_b| + w_sym mean_{(b, b')} |l_b - l_b'|`` with ``mu`` the mean
    ratios of :func:`bone_ratio_prior` (skipped when ``prior`` is None) and ``(b, b')`` the
    left/right bone pairs.
    """
    lengths = bone_lengths(poses, skeleton)
    logs: dict[str, torch.Tensor] = {}
    loss = lengths.new_zeros(())
    if prior is not None and w_ratio:
        ratio = (lengths - prior.to(lengths)).abs().mean()
        loss = loss + w_ratio * ratio
        logs["l_bone"] = ratio.detach()
    pairs = _symmetric_bone_pairs(skeleton)
    if pairs and w_sym:
        idx = torch.tensor(pairs, device=poses.device)
        sym = (lengths[..., idx[:, 0]] - lengths[..., idx[:, 1]]).abs().mean()
        loss = loss + w_sym * sym
        logs["l_sym"] = sym.detach()
    return loss, logs


def distance_prior_loss(uv: torch.Tensor, zr: torch.Tensor, K: torch.Tensor,
                        reference_bone: Sequence[int] = REFERENCE_BONE, z_min: float = 3.0
                        ) -> torch.Tensor:
    """Hinge prior keeping every joint at least ``z_min`` reference bones in front of the camera.

    ``mean_j relu(z_min - (Z_root + zr_j))`` in scale-normalised units. It removes the degenerate
    solution of the consistency loss in which every view collapses its pose onto its own optical
    axis (``Z_root -> 0``: the bones line up along the viewing ray, the 2D is still matched
    exactly and the 1D poses of all views are rigid copies of each other).

    Args:
        uv: ``(..., J, 2)`` px; zr: ``(..., J)``; K: ``(..., 3, 3)``.
    """
    z_root = root_depth_from_25d(uv, zr, K, reference_bone)
    return F.relu(z_min - (z_root[..., None] + zr)).mean()


def depth_loss(zr: torch.Tensor, zr_gt: torch.Tensor) -> torch.Tensor:
    """L1 on scale-normalised root-relative depths ``(..., J)`` (full supervision only)."""
    check_same_shape(zr, zr_gt, ("zr", "zr_gt"))
    return (zr - zr_gt).abs().mean()



def multiview_terms(uv: torch.Tensor, zr: torch.Tensor, K: torch.Tensor, config: Config,
                    prior: torch.Tensor | None = None, skeleton: Skeleton = H36M_17
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weak-supervision terms on unlabelled synchronised views, weighted by ``config``:
    multiview consistency + limb-length prior + distance prior, and their logs.

    ``uv (B, C, J, 2)`` heatmap px and ``zr (B, C, J)`` the predicted 2.5D poses of ``B``
    frames seen by ``C`` cameras with heatmap intrinsics ``K (B, C, 3, 3)``. The compared 3D
    poses take their root depth as ``config.mc_root`` says (:data:`~.config.MC_ROOTS`).
    """
    if config.mc_root.startswith("skeleton") and prior is None:
        raise ValueError(f"config.mc_root={config.mc_root!r} needs the bone-length prior")
    if config.mc_root in ("skeleton", "skeleton_flat"):
        z_root = root_depth_from_skeleton(uv, zr, K, prior, skeleton,
                                          iterations=3 if config.mc_root == "skeleton" else 0)
        if not config.root_grad:
            z_root = z_root.detach()
        poses = (z_root[..., None] + zr)[..., None] * normalized_rays(uv, K.to(uv.dtype))
    elif config.mc_root == "reference_flat":
        z_root = root_depth_from_25d(uv, torch.zeros_like(zr), K, config.reference_bone)
        if not config.root_grad:
            z_root = z_root.detach()
        poses = (z_root[..., None] + zr)[..., None] * normalized_rays(uv, K.to(uv.dtype))
    else:
        poses = reconstruct_from_25d(uv, zr, K, config.reference_bone, root_grad=config.root_grad)
    lmc = multiview_consistency_loss(poses, config.mc_delta, config.root_joint, config.align_grad)
    lb, blogs = limb_length_loss(poses, prior, skeleton, config.w_bone, config.w_sym)
    lf = distance_prior_loss(uv, zr, K, config.reference_bone, config.z_min)
    logs = {"l_mc": lmc.detach(), **blogs, "l_front": lf.detach()}
    return config.w_mc * lmc + lb + config.w_front * lf, logs


def make_loss(mode: str, config: Config, prior: torch.Tensor | None = None,
              skeleton: Skeleton = H36M_17):
    """The loss function ``loss_fn(model, batch) -> (loss, logs)`` of one training mode.

    - ``"2d"``: the 2D loss on the labelled images only (the 2D-only baseline).
    - ``"weak"``: 2D loss + multiview consistency + limb-length prior on the unlabelled
      multiview frames (no 3D labels).
    - ``"full"``: 2D loss on both image sets + L1 on the scale-normalised depths (3D labels).
    """
    check_choice(mode, "mode", MODES)
    check_choice(config.mc_root, "config.mc_root", MC_ROOTS)
    if config.mc_root.startswith("skeleton") and mode == "weak" and prior is None:
        raise ValueError(f"config.mc_root={config.mc_root!r} needs the bone-length prior")

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]):
        n2 = batch["images"].shape[0]
        images = batch["images"]
        if mode != "2d":
            mv = batch["images_mv"]
            B, C = mv.shape[:2]
            images = torch.cat([images, mv.flatten(0, 1)])
        if config.color_jitter > 0:
            images = color_jitter(images, config.color_jitter)
        out = model(images)  # one forward pass (batch norm statistics over both sets)
        out2d = {k: v[:n2] for k, v in out.items()}
        loss, logs = heatmap_loss(out2d, batch["joints2d"], batch["visibility"], config.heatmap_sigma,
                                  config.w_coord, config.w_heatmap)
        logs = {"l2d": loss.detach(), **logs}
        if mode == "2d":
            return loss, logs
        uv = out["joints2d"][n2:].view(B, C, -1, 2)
        zr = out["zr"][n2:].view(B, C, -1)
        if mode == "full":
            outmv = {k: v[n2:] for k, v in out.items()}
            l2, _ = heatmap_loss(outmv, batch["joints2d_mv"].flatten(0, 1),
                                 batch["visibility_mv"].flatten(0, 1), config.heatmap_sigma, config.w_coord, config.w_heatmap)
            ld = depth_loss(zr, batch["zr_mv"])
            logs.update(l2d_mv=l2.detach(), l_depth=ld.detach())
            return loss + l2 + config.w_depth * ld, logs
        uv_mc = uv if config.mc_2d_grad else uv.detach()
        lw, wlogs = multiview_terms(uv_mc, zr, batch["K_mv"], config, prior, skeleton)
        logs.update(wlogs)
        return loss + lw, logs

    return loss_fn



def make_depth_loss(mode: str, config: Config, prior: torch.Tensor | None = None,
                    skeleton: Skeleton = H36M_17):
    """The loss ``loss_fn(head, batch) -> (loss, logs)`` of the depth head of a
    :class:`~.model.ZooWeak25D` on encoded multiview frames (:class:`~.data.EncodedBatches`).

    - ``"weak"``: :func:`multiview_terms` on the frozen detector's 2D joints (no label read).
    - ``"full"``: :func:`depth_loss` against the scale-normalised depths of the frames.

    The 2D term has nothing to train (the detector is frozen), so there is no ``"2d"`` mode.
    """
    check_choice(mode, "mode", ("weak", "full"))
    if config.mc_root.startswith("skeleton") and mode == "weak" and prior is None:
        raise ValueError(f"config.mc_root={config.mc_root!r} needs the bone-length prior")

    def loss_fn(head: nn.Module, batch: Mapping[str, torch.Tensor]):
        uv = batch["joints2d_pred"]
        B, C, J = uv.shape[:3]
        zr = head(batch["encoding"], batch["log_prob"]).view(B, C, J)
        if mode == "full":
            ld = depth_loss(zr, batch["zr_mv"])
            return config.w_depth * ld, {"l_depth": ld.detach()}
        return multiview_terms(uv, zr, batch["K_mv"], config, prior, skeleton)

    return loss_fn
