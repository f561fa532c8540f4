"""Weakly supervised monocular 3D pose from multiview consistency (Iqbal et al. 2020).

The network sees one image and predicts a **2.5D pose** (Iqbal et al. 2018): for each joint
``j`` a 2D heatmap ``H_j`` and a latent depth map ``D_j``. The 2D location is the soft-argmax
of ``H_j`` and the scale-normalised, root-relative depth is the depth map read out under the
same spatial softmax, ``zr_j = sum_r softmax(beta H_j)(r) D_j(r)``. Depths are normalised by a
fixed reference bone (default thorax-pelvis, "neck-pelvis"), whose length is 1.

Given the camera intrinsics ``K``, the absolute scale-normalised 3D pose follows in closed
form: with ``p_j = K^-1 (u_j, v_j, 1)`` and ``X_j = (Z_root + zr_j) p_j``, the root depth is the
larger root of the quadratic ``a Z^2 + b Z + c = 0`` that makes the reference bone
``(n, m)`` of length 1 (:func:`root_depth_from_25d`).

Training needs no 3D labels:

- a 2D loss on an independent collection of 2D-labelled images (:func:`heatmap_loss`),
- a multiview consistency loss on unlabelled synchronised views: the 3D poses predicted from
  any two views must agree after the rigid transform that best aligns them (Procrustes,
  differentiable; no extrinsic calibration needed) (:func:`multiview_consistency_loss`),
- a limb-length prior on the scale-normalised pose: bone lengths close to mean ratios and
  left/right symmetric (:func:`limb_length_loss`),
- a distance prior keeping joints at least a few bone lengths in front of the camera
  (:func:`distance_prior_loss`; this book's addition against a degenerate solution).

The same module trains the two reference points of the chapter: a 2D-only model (its depth
maps never receive a signal) and a fully supervised model (2D + scale-normalised depth labels).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mvbook.geometry import procrustes
from mvbook.heatmaps import render_gaussian_2d, soft_argmax_2d
from mvbook.nn.backbones import BackboneConfig, SimpleBaseline
from mvbook.skeletons import H36M_17, Skeleton

__all__ = [
    "Weak25DConfig",
    "Weak25DNet",
    "REFERENCE_BONE",
    "scale_normalize",
    "pose_to_25d",
    "root_depth_from_25d",
    "root_depth_from_skeleton",
    "reconstruct_from_25d",
    "crop_views",
    "crop_intrinsics",
    "heatmap_loss",
    "multiview_consistency_loss",
    "limb_length_loss",
    "distance_prior_loss",
    "bone_lengths",
    "bone_ratio_prior",
    "depth_loss",
    "ImageSet",
    "MultiviewSet",
    "prepare_images",
    "prepare_multiview",
    "WeakBatches",
    "make_loss",
    "fit",
    "predict",
    "evaluate",
    "main",
]

#: (n, m) joints of the reference bone of H36M_17: thorax (8) - pelvis (0), length 1 after
#: scale normalisation ("neck-pelvis").
REFERENCE_BONE = (8, 0)
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class Weak25DConfig:
    """Hyper-parameters of the 2.5D network and its losses.

    - ``crop_size``: side of the square person crop fed to the network (px).
    - ``backbone``: size of the :class:`~mvbook.nn.backbones.SimpleBaseline` (its output has
      ``2 J`` channels: ``J`` heatmaps then ``J`` depth maps).
    - ``beta``: inverse temperature of the spatial softmax (1: the network learns the logits).
    - ``reference_bone``, ``root``: scale normalisation bone ``(n, m)`` and root joint.
    - ``sigma``: std (heatmap px) of the Gaussian target of the heatmap term.
    - ``w_coord``, ``w_heatmap``: weights of the L1 soft-argmax term (coordinates divided by
      the heatmap size) and of the cross-entropy heatmap term of the 2D loss.
    - ``w_mc``, ``w_bone``, ``w_sym``: weights of the multiview consistency, bone-ratio and
      symmetry terms (weak supervision). ``w_depth``: weight of the depth term (full supervision).
    - ``mc_delta``: the consistency distance is a smooth L1 (Huber) with this threshold, in
      scale-normalised units (0: plain L1).
    - ``align_grad``: gradients flow through the Procrustes alignment of the consistency loss.
    - ``w_front``, ``z_min``: weight of the distance prior :func:`distance_prior_loss` and the
      smallest plausible joint depth in reference-bone units (3 bones: about 1.5 m).
    - ``color_jitter``: strength of the colour augmentation of training crops (0: none).
    - ``root_grad``: gradients of the consistency and limb terms flow through the root depth
      ``Z_root`` of the reconstruction (False: it is a constant in the backward pass).
    - ``mc_2d_grad``: gradients of the consistency and limb terms reach the predicted 2D joints
      of the multiview frames (False: those terms train the depth maps only; the 2D comes from
      the labelled images).
    - ``mc_root``: root depth of the poses compared by the consistency term: ``"reference"``
      (the 2.5D reconstruction, :func:`root_depth_from_25d`), ``"reference_flat"`` (the same
      with zero relative depths: from the 2D reference bone alone), ``"skeleton"`` /
      ``"skeleton_flat"`` (:func:`root_depth_from_skeleton`, all bones, with / without the
      relative depths).
    """

    crop_size: int = 64
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        width=16, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2, deconv_channels=32))
    beta: float = 1.0
    reference_bone: tuple[int, int] = REFERENCE_BONE
    root: int = 0
    sigma: float = 1.0
    w_coord: float = 1.0
    w_heatmap: float = 1.0
    w_mc: float = 1.0
    w_bone: float = 1.0
    w_sym: float = 1.0
    w_depth: float = 1.0
    mc_delta: float = 0.1
    align_grad: bool = False
    w_front: float = 1.0
    z_min: float = 3.0
    color_jitter: float = 0.0
    root_grad: bool = True
    mc_2d_grad: bool = True
    mc_root: str = "reference"

    @property
    def heatmap_size(self) -> int:
        return self.crop_size // self.backbone.output_stride


# --------------------------------------------------------------------------------------------
# the 2.5D representation and its closed-form reconstruction
# --------------------------------------------------------------------------------------------


def _check_last(x: Any, name: str, size: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., J, {size}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    return x


def _check_K(K: Any, name: str = "K") -> torch.Tensor:
    if not isinstance(K, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(K).__name__}")
    if K.ndim < 2 or K.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(K.shape)}")
    return K


def _check_bone(bone: Sequence[int], num_joints: int) -> tuple[int, int]:
    n, m = (int(b) for b in bone)
    if not (0 <= n < num_joints and 0 <= m < num_joints) or n == m:
        raise ValueError(f"reference_bone must be two distinct joint indices < {num_joints}, "
                         f"got {tuple(bone)}")
    return n, m


def scale_normalize(joints: torch.Tensor, reference_bone: Sequence[int] = REFERENCE_BONE,
                    eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide a pose by the length of its reference bone.

    Args:
        joints: ``(..., J, 3)`` (any units, e.g. mm in camera coordinates).
        reference_bone: ``(n, m)`` joint indices.

    Returns:
        ``(joints / s, s)`` with ``s = |X_n - X_m|`` of shape ``(...)``.
    """
    joints = _check_last(joints, "joints", 3)
    n, m = _check_bone(reference_bone, joints.shape[-2])
    s = (joints[..., n, :] - joints[..., m, :]).norm(dim=-1)
    if bool((s <= eps).any()):
        raise ValueError("joints has a reference bone of zero length; cannot normalise scale")
    return joints / s[..., None, None], s


def pose_to_25d(joints_cam: torch.Tensor, K: torch.Tensor,
                reference_bone: Sequence[int] = REFERENCE_BONE, root: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2.5D pose of a 3D pose given in camera coordinates.

    Args:
        joints_cam: ``(..., J, 3)`` camera coordinates (mm), all depths > 0.
        K: ``(..., 3, 3)`` intrinsics (pixels of the image the 2D coordinates live in).

    Returns:
        ``uv (..., J, 2)`` pixels (pinhole projection, no distortion) and
        ``zr (..., J)`` the root-relative depth divided by the reference bone length.
    """
    joints_cam = _check_last(joints_cam, "joints_cam", 3)
    K = _check_K(K)
    z = joints_cam[..., 2]
    if bool((z <= 0).any()):
        raise ValueError("joints_cam has joints with depth <= 0 (behind the camera)")
    xn = joints_cam[..., :2] / z[..., None]
    uv = torch.einsum("...ij,...nj->...ni", K[..., :2, :2], xn) + K[..., None, :2, 2]
    _, s = scale_normalize(joints_cam, reference_bone)
    zr = (z - z[..., root, None]) / s[..., None]
    return uv, zr


def _normalized_rays(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``K^-1 (u, v, 1)``: ``(..., J, 3)`` with third component 1."""
    Kinv = torch.linalg.inv(K)
    hom = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    return torch.einsum("...ij,...nj->...ni", Kinv, hom)


def root_depth_from_25d(uv: torch.Tensor, zr: torch.Tensor, K: torch.Tensor,
                        reference_bone: Sequence[int] = REFERENCE_BONE,
                        bone_length: float | torch.Tensor = 1.0, eps: float = 1e-12
                        ) -> torch.Tensor:
    """Root depth ``Z_root`` that gives the reference bone the length ``bone_length``.

    With ``p_j = K^-1 (u_j, v_j, 1) = (x_j, y_j, 1)`` and ``X_j = (Z_root + zr_j) p_j``, the
    condition ``|X_n - X_m|^2 = C^2`` is the quadratic (Iqbal et al. 2018)::

        a = (x_n - x_m)^2 + (y_n - y_m)^2
        b = 2 (p_n - p_m) . (zr_n p_n - zr_m p_m)
        c = |zr_n p_n - zr_m p_m|^2 - C^2
        Z_root = (-b + sqrt(b^2 - 4 a c)) / (2 a)

    solved with ``C = 1`` (``zr`` is scale-normalised) and multiplied by ``bone_length``. The
    larger root is the right one whenever ``c < 0``, i.e. ``|zr_n p_n - zr_m p_m| < 1``, which
    holds for real bodies (the reference bone is not far from the image plane); then the other
    root is negative (behind the camera). A negative discriminant (the 2.5D pose admits no such
    depth) is clamped to ``eps`` so the function stays differentiable.

    Args:
        uv: ``(..., J, 2)`` pixels; zr: ``(..., J)`` scale-normalised root-relative depths;
        K: ``(..., 3, 3)``; bone_length: the reference bone's length (1: scale-normalised units;
            mm: millimetres), float or tensor broadcastable to ``(...)``.

    Returns:
        ``(...)`` root depth in the units of ``bone_length``.
    """
    uv = _check_last(uv, "uv", 2)
    K = _check_K(K)
    if zr.shape != uv.shape[:-1]:
        raise ValueError(f"zr must have shape {tuple(uv.shape[:-1])}, got {tuple(zr.shape)}")
    n, m = _check_bone(reference_bone, uv.shape[-2])
    p = _normalized_rays(uv, K.to(uv.dtype))
    pn, pm = p[..., n, :], p[..., m, :]
    zn, zm = zr[..., n, None], zr[..., m, None]
    d = pn - pm
    e = zn * pn - zm * pm
    a = (d * d).sum(-1)
    b = 2.0 * (d * e).sum(-1)
    c = (e * e).sum(-1) - 1.0
    disc = (b * b - 4.0 * a * c).clamp_min(eps)
    z_root = (-b + disc.sqrt()) / (2.0 * a.clamp_min(eps))
    return z_root * torch.as_tensor(bone_length, dtype=uv.dtype, device=uv.device)


def root_depth_from_skeleton(uv: torch.Tensor, zr: torch.Tensor, K: torch.Tensor,
                             bone_prior: torch.Tensor, skeleton: Skeleton = H36M_17,
                             iterations: int = 3, eps: float = 1e-9) -> torch.Tensor:
    """Root depth that gives the whole skeleton its prior size (all bones, not one).

    Solves ``sum_b |X_a(Z) - X_b(Z)| = sum_b mu_b`` for ``Z`` with
    ``X_j(Z) = (Z + zr_j) K^-1 (u_j, v_j, 1)`` and ``mu`` the mean scale-normalised bone lengths
    (:func:`bone_ratio_prior`): Newton's method from the weak-perspective estimate
    ``Z_0 = sum_b mu_b / sum_b |p_a - p_b|``. With noisy 2D this is far less noisy than the
    reference-bone root of :func:`root_depth_from_25d` (the length of one short bone in the
    image), whose inverse is also biased upwards by the noise.

    Args:
        uv: ``(..., J, 2)`` px; zr: ``(..., J)``; K: ``(..., 3, 3)``; bone_prior: ``(B,)``.

    Returns:
        ``(...)`` root depth in scale-normalised units.
    """
    uv = _check_last(uv, "uv", 2)
    K = _check_K(K)
    if zr.shape != uv.shape[:-1]:
        raise ValueError(f"zr must have shape {tuple(uv.shape[:-1])}, got {tuple(zr.shape)}")
    bones = torch.tensor(skeleton.bones, device=uv.device)
    if bone_prior.shape != (len(bones),):
        raise ValueError(f"bone_prior must have shape ({len(bones)},), got {tuple(bone_prior.shape)}")
    p = _normalized_rays(uv, K.to(uv.dtype))
    a, b = bones[:, 0], bones[:, 1]
    d = p[..., a, :] - p[..., b, :]
    e = zr[..., a, None] * p[..., a, :] - zr[..., b, None] * p[..., b, :]
    total = bone_prior.to(uv).sum()
    z = total / d.norm(dim=-1).sum(-1).clamp_min(eps)
    for _ in range(iterations):
        v = z[..., None, None] * d + e
        n = v.norm(dim=-1).clamp_min(eps)
        f = n.sum(-1) - total
        slope = ((v * d).sum(-1) / n).sum(-1)
        z = z - f / slope.clamp_min(eps)
    return z


def reconstruct_from_25d(uv: torch.Tensor, zr: torch.Tensor, K: torch.Tensor,
                         reference_bone: Sequence[int] = REFERENCE_BONE,
                         bone_length: float | torch.Tensor = 1.0, root_grad: bool = True
                         ) -> torch.Tensor:
    """Absolute 3D pose in camera coordinates from a 2.5D pose (differentiable, closed form).

    ``X_j = (Z_root + C zr_j) K^-1 (u_j, v_j, 1)`` with ``Z_root`` from
    :func:`root_depth_from_25d`. With ``bone_length=1`` the result is the scale-normalised
    pose; pass the true reference-bone length (mm) to get millimetres.

    Args:
        uv: ``(..., J, 2)`` pixels; zr: ``(..., J)``; K: ``(..., 3, 3)``;
        bone_length: float or tensor broadcastable to ``(...)``.

    Returns:
        ``(..., J, 3)`` camera coordinates.
    """
    bone = torch.as_tensor(bone_length, dtype=uv.dtype, device=uv.device)
    z_root = root_depth_from_25d(uv, zr, K, reference_bone, 1.0)
    if not root_grad:
        z_root = z_root.detach()
    p = _normalized_rays(uv, K.to(uv.dtype))
    return ((z_root[..., None] + zr) * bone[..., None])[..., None] * p


# --------------------------------------------------------------------------------------------
# crops and intrinsics
# --------------------------------------------------------------------------------------------


def square_boxes(bbox: torch.Tensor, margin: float = 1.25) -> torch.Tensor:
    """Square boxes ``(..., 4)`` ``(x0, y0, x1, y1)`` around ``bbox`` enlarged by ``margin``."""
    center = 0.5 * (bbox[..., :2] + bbox[..., 2:])
    side = (bbox[..., 2:] - bbox[..., :2]).amax(-1, keepdim=True) * margin
    return torch.cat([center - side / 2, center + side / 2], dim=-1)


def crop_intrinsics(K: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """Intrinsics of a square crop ``box`` resampled to ``size x size`` pixels.

    The box holds the pixels ``image[y0:y1, x0:x1]`` (slice bounds, pixel centres at integers,
    the same convention as :meth:`mvbook.geometry.Camera.crop`): crop pixel ``i`` covers
    ``[x0 - 1/2 + i w / S, x0 - 1/2 + (i + 1) w / S]``, hence
    ``u' = (u - x0 + 1/2) S / w - 1/2``: ``f' = f S / w``, ``c' = (c - x0 + 1/2) S / w - 1/2``.

    Args:
        K: ``(..., 3, 3)``; box: ``(..., 4)`` square boxes; size: ``S``.
    """
    K = _check_K(K)
    scale = size / (box[..., 2] - box[..., 0])
    out = K.clone()
    out[..., 0, :] = K[..., 0, :] * scale[..., None]
    out[..., 1, :] = K[..., 1, :] * scale[..., None]
    out[..., 0, 2] = (K[..., 0, 2] - box[..., 0] + 0.5) * scale - 0.5
    out[..., 1, 2] = (K[..., 1, 2] - box[..., 1] + 0.5) * scale - 0.5
    return out


def crop_points(uv: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """Image pixels ``(..., J, 2)`` to crop pixels (same mapping as :func:`crop_intrinsics`)."""
    scale = size / (box[..., 2] - box[..., 0])
    return (uv - box[..., None, :2] + 0.5) * scale[..., None, None] - 0.5


def crop_views(images: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """Resample square ``box`` es of ``images`` to ``size x size`` (bilinear, zero outside).

    Args:
        images: ``(N, 3, H, W)`` uint8 or float; box: ``(N, 4)`` square boxes (px).

    Returns:
        ``(N, 3, size, size)`` in the dtype of ``images`` (uint8 rounded).
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    N, _, H, W = images.shape
    if box.shape != (N, 4):
        raise ValueError(f"box must have shape ({N}, 4), got {tuple(box.shape)}")
    i = (torch.arange(size, dtype=torch.float32, device=images.device) + 0.5) / size
    box = box.float()
    w = (box[:, 2] - box[:, 0])[:, None]
    u = box[:, 0, None] + i[None] * w - 0.5  # (N, S) image pixel coordinates
    v = box[:, 1, None] + i[None] * w - 0.5
    gx = (u + 0.5) / W * 2 - 1
    gy = (v + 0.5) / H * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(N, size, size), gy[:, :, None].expand(N, size, size)],
                       dim=-1)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def heatmap_intrinsics(K_crop: torch.Tensor, crop_size: int, heatmap_size: int) -> torch.Tensor:
    """Intrinsics in heatmap pixels of a ``crop_size`` crop read out at ``heatmap_size``."""
    box = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=K_crop.dtype, device=K_crop.device)
    box = box.expand(*K_crop.shape[:-2], 4).clone()
    box[..., 0] = -0.5
    box[..., 1] = -0.5
    box[..., 2] = crop_size - 0.5
    box[..., 3] = crop_size - 0.5
    return crop_intrinsics(K_crop, box, heatmap_size)


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, S, S)`` to float ``(x / 255 - 0.5) / 0.25``."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return (x - IMAGE_MEAN) / IMAGE_STD


def color_jitter(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Random per-image, per-channel gain and offset (and a channel shuffle with probability
    1/2) applied to uint8 crops ``(N, 3, S, S)``; returns normalised float images. Uses the
    global torch random stream (seeded and checkpointed by :func:`mvbook.train.train`)."""
    x = normalize_images(images)
    n = x.shape[0]
    gain = 1.0 + strength * (2 * torch.rand(n, 3, 1, 1, device=x.device) - 1)
    bias = 2.0 * strength * (2 * torch.rand(n, 3, 1, 1, device=x.device) - 1)
    x = x * gain + bias
    perm = torch.argsort(torch.rand(n, 3, device=x.device), dim=1)
    shuffle = torch.rand(n, device=x.device) < 0.5
    idx = torch.where(shuffle[:, None], perm, torch.arange(3, device=x.device).expand(n, 3))
    return torch.gather(x, 1, idx[:, :, None, None].expand_as(x))


class Weak25DNet(nn.Module):
    """Image crop -> 2.5D pose: ``J`` heatmaps and ``J`` latent depth maps.

    ``forward(images (N, 3, S, S) uint8 or normalised float) -> dict`` with
    ``uv (N, J, 2)`` heatmap pixels (soft-argmax), ``zr (N, J)`` scale-normalised
    root-relative depth (the root's read-out is subtracted, so ``zr[:, root] = 0``),
    ``log_prob (N, J, h, w)`` the log spatial softmax and ``depth_maps``.
    """

    def __init__(self, num_joints: int = 17, config: Weak25DConfig | None = None) -> None:
        super().__init__()
        self.config = config or Weak25DConfig()
        self.num_joints = num_joints
        self.backbone = SimpleBaseline(2 * num_joints, self.config.backbone)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalize_images(images) if images.dtype == torch.uint8 else images
        maps = self.backbone(x).heatmaps
        J = self.num_joints
        logits, depth_maps = maps[:, :J], maps[:, J:]
        h, w = logits.shape[-2:]
        log_prob = torch.log_softmax(self.config.beta * logits.flatten(-2).float(), dim=-1)
        prob = log_prob.exp()
        uv = soft_argmax_2d(prob.view(-1, J, h, w), normalize=False)
        z = (prob * depth_maps.flatten(-2).float()).sum(-1)
        zr = z - z[:, self.config.root, None]  # root-relative by construction: zr_root = 0
        return {"uv": uv, "zr": zr, "log_prob": log_prob.view(-1, J, h, w),
                "depth_maps": depth_maps}


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def heatmap_loss(out: Mapping[str, torch.Tensor], uv_gt: torch.Tensor, valid: torch.Tensor,
                 sigma: float = 1.0, w_coord: float = 1.0, w_heatmap: float = 1.0
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """2D loss on labelled images: L1 of soft-argmax coordinates + heatmap cross-entropy.

    ``L = w_coord mean|uv - uv_gt| / h + w_heatmap mean_j CE(G(uv_gt, sigma), softmax(H_j))``
    with ``G`` a normalised Gaussian target; joints with ``valid`` False do not count.

    Args:
        out: the network output (``uv (N, J, 2)``, ``log_prob (N, J, h, w)``).
        uv_gt: ``(N, J, 2)`` heatmap pixels; valid: ``(N, J)`` bool.
    """
    uv = out["uv"]
    log_prob = out["log_prob"]
    h, w = log_prob.shape[-2:]
    if uv_gt.shape != uv.shape:
        raise ValueError(f"uv_gt must have shape {tuple(uv.shape)}, got {tuple(uv_gt.shape)}")
    mask = valid.to(uv.dtype)
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


def multiview_consistency_loss(poses: torch.Tensor, delta: float = 0.1, root: int = 0,
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
    poses = _check_last(poses, "poses", 3)
    if poses.ndim < 3 or poses.shape[-3] < 2:
        raise ValueError(f"poses must have shape (..., C, J, 3) with C >= 2, got {tuple(poses.shape)}")
    C = poses.shape[-3]
    centred = poses - poses[..., root : root + 1, :]
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
    poses = _check_last(poses, "poses", 3)
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


def depth_loss(zr: torch.Tensor, zr_gt: torch.Tensor, root: int = 0) -> torch.Tensor:
    """L1 on scale-normalised root-relative depths ``(N, J)`` (full supervision only)."""
    return (zr - zr_gt).abs().mean()


# --------------------------------------------------------------------------------------------
# data: crops of the common multiview format, in memory
# --------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """Independent person crops (views of frames treated as separate images).

    ``images (N, 3, S, S)`` uint8; ``uv (N, J, 2)`` heatmap px; ``valid (N, J)``;
    ``K (N, 3, 3)`` heatmap-pixel intrinsics; ``joints_cam (N, J, 3)`` mm (for evaluation and
    the fully supervised model only); ``zr (N, J)``; ``bone (N,)`` reference length (mm);
    ``subject`` list of str.
    """

    images: torch.Tensor
    uv: torch.Tensor
    valid: torch.Tensor
    K: torch.Tensor
    joints_cam: torch.Tensor
    zr: torch.Tensor
    bone: torch.Tensor
    subject: list[str]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class MultiviewSet:
    """Synchronised crops ``images (F, C, 3, S, S)`` uint8 with ``K (F, C, 3, 3)`` (heatmap px).

    The labels (``uv``, ``zr``, ``joints_cam``) are kept for the fully supervised model and
    for pictures; the weakly supervised loss never reads them.
    """

    images: torch.Tensor
    K: torch.Tensor
    uv: torch.Tensor
    valid: torch.Tensor
    zr: torch.Tensor
    joints_cam: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def _sample_crops(sample: Mapping[str, Any], config: Weak25DConfig, margin: float
                  ) -> dict[str, torch.Tensor]:
    """Crops, labels and intrinsics of person 0 in all views of one common-format sample."""
    S, h = config.crop_size, config.heatmap_size
    images = torch.as_tensor(sample["images"])
    K = torch.as_tensor(sample["K"]).double()
    R = torch.as_tensor(sample["R"]).double()
    t = torch.as_tensor(sample["t"]).double()
    X = torch.as_tensor(sample["joints3d"])[0].double()  # (J, 3) world mm
    uv_img = torch.as_tensor(sample["joints2d"])[:, 0].double()  # (C, J, 2)
    bbox = torch.as_tensor(sample["bbox"])[:, 0].double()  # (C, 4)
    box = square_boxes(bbox, margin)
    crops = crop_views(images, box.float(), S)
    K_hm = heatmap_intrinsics(crop_intrinsics(K, box, S), S, h)
    uv = crop_points(uv_img, box, h)
    valid = ((uv >= -0.5) & (uv <= h - 0.5)).all(-1)
    Xc = torch.einsum("cij,nj->cni", R, X) + t[:, None, :]
    _, zr = pose_to_25d(Xc, K_hm, config.reference_bone, config.root)
    _, bone = scale_normalize(Xc, config.reference_bone)
    return {"images": crops, "K": K_hm.float(), "uv": uv.float(), "valid": valid,
            "joints_cam": Xc.float(), "zr": zr.float(), "bone": bone.float()}


def _iterate(dataset: Any, indices: Sequence[int], progress: bool, desc: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    for i in tqdm(indices, desc=desc, disable=not progress, leave=False):
        yield dataset[int(i)]


def _pick(n_total: int, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def prepare_images(dataset: Any, config: Weak25DConfig, max_frames: int | None = None,
                   views: Sequence[int] | None = None, seed: int = 0, margin: float = 1.25,
                   progress: bool = True) -> ImageSet:
    """Crops of every selected view of up to ``max_frames`` frames of ``dataset`` as
    independent images (a 2D-labelled collection, or a monocular test set)."""
    out: dict[str, list] = {k: [] for k in ("images", "K", "uv", "valid", "joints_cam", "zr", "bone")}
    subjects: list[str] = []
    for sample in _iterate(dataset, _pick(len(dataset), max_frames, seed), progress, "crops"):
        crops = _sample_crops(sample, config, margin)
        sel = list(views) if views is not None else list(range(crops["images"].shape[0]))
        for k in out:
            out[k].append(crops[k][sel])
        subjects += [str(sample.get("subject", ""))] * len(sel)
    if not subjects:
        raise ValueError("dataset is empty: no images to prepare")
    cat = {k: torch.cat(v) for k, v in out.items()}
    return ImageSet(subject=subjects, **cat)


def prepare_multiview(dataset: Any, config: Weak25DConfig, max_frames: int | None = None,
                      seed: int = 0, margin: float = 1.25, progress: bool = True) -> MultiviewSet:
    """Synchronised crops of up to ``max_frames`` frames of ``dataset`` (all views)."""
    out: dict[str, list] = {k: [] for k in ("images", "K", "uv", "valid", "joints_cam", "zr")}
    for sample in _iterate(dataset, _pick(len(dataset), max_frames, seed), progress, "crops"):
        crops = _sample_crops(sample, config, margin)
        for k in out:
            out[k].append(crops[k])
    if not out["images"]:
        raise ValueError("dataset is empty: no frames to prepare")
    return MultiviewSet(**{k: torch.stack(v) for k, v in out.items()})


class WeakBatches:
    """Endless-per-epoch iterable of training batches for :func:`mvbook.train.train`.

    Each batch holds ``batch_2d`` labelled images (keys ``images2d``, ``uv2d``, ``valid2d``) and
    ``batch_mv`` multiview frames (keys ``images_mv (B, C, 3, S, S)``, ``K_mv`` and, for the
    fully supervised model, ``uv_mv``, ``valid_mv``, ``zr_mv``). One epoch is
    ``len(images2d) // batch_2d`` batches; the order comes from ``self.generator`` (seeded,
    ``seed + rank`` under ``torchrun``), which :func:`mvbook.train.train` saves in checkpoints.
    """

    shards_by_rank = True

    def __init__(self, images2d: ImageSet, multiview: MultiviewSet | None, batch_2d: int,
                 batch_mv: int, seed: int = 0) -> None:
        if batch_2d < 1 or len(images2d) < batch_2d:
            raise ValueError(f"batch_2d must be in [1, {len(images2d)}], got {batch_2d}")
        if multiview is not None and not 1 <= batch_mv <= len(multiview):
            raise ValueError(f"batch_mv must be in [1, {len(multiview)}], got {batch_mv}")
        self.images2d = images2d
        self.multiview = multiview
        self.batch_2d = batch_2d
        self.batch_mv = batch_mv
        # under torchrun every rank draws its own stream (seed + rank)
        from mvbook.train import distributed_info

        self.generator = torch.Generator().manual_seed(seed + distributed_info().rank)

    def __len__(self) -> int:
        return len(self.images2d) // self.batch_2d

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        perm = torch.randperm(len(self.images2d), generator=self.generator)
        for k in range(len(self)):
            i = perm[k * self.batch_2d : (k + 1) * self.batch_2d]
            batch = {"images2d": self.images2d.images[i], "uv2d": self.images2d.uv[i],
                     "valid2d": self.images2d.valid[i]}
            if self.multiview is not None:
                mv = self.multiview
                f = torch.randint(len(mv), (self.batch_mv,), generator=self.generator)
                batch.update(images_mv=mv.images[f], K_mv=mv.K[f], uv_mv=mv.uv[f],
                             valid_mv=mv.valid[f], zr_mv=mv.zr[f])
            yield batch


def make_loss(mode: str, config: Weak25DConfig, prior: torch.Tensor | None = None,
              skeleton: Skeleton = H36M_17):
    """The loss function ``loss_fn(model, batch) -> (loss, logs)`` of one training mode.

    - ``"2d"``: the 2D loss on the labelled images only (the 2D-only baseline).
    - ``"weak"``: 2D loss + multiview consistency + limb-length prior on the unlabelled
      multiview frames (no 3D labels).
    - ``"full"``: 2D loss on both image sets + L1 on the scale-normalised depths (3D labels).
    """
    if mode not in ("2d", "weak", "full"):
        raise ValueError(f"mode must be '2d', 'weak' or 'full', got {mode!r}")
    if config.mc_root not in ("reference", "reference_flat", "skeleton", "skeleton_flat"):
        raise ValueError("config.mc_root must be 'reference', 'reference_flat', 'skeleton' or "
                         f"'skeleton_flat', got {config.mc_root!r}")
    if config.mc_root.startswith("skeleton") and mode == "weak" and prior is None:
        raise ValueError(f"config.mc_root={config.mc_root!r} needs the bone-length prior")

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]):
        n2 = batch["images2d"].shape[0]
        images = batch["images2d"]
        if mode != "2d":
            mv = batch["images_mv"]
            B, C = mv.shape[:2]
            images = torch.cat([images, mv.flatten(0, 1)])
        if config.color_jitter > 0:
            images = color_jitter(images, config.color_jitter)
        out = model(images)  # one forward pass (batch norm statistics over both sets)
        out2d = {k: v[:n2] for k, v in out.items()}
        loss, logs = heatmap_loss(out2d, batch["uv2d"], batch["valid2d"], config.sigma,
                                  config.w_coord, config.w_heatmap)
        logs = {"l2d": loss.detach(), **logs}
        if mode == "2d":
            return loss, logs
        uv = out["uv"][n2:].view(B, C, -1, 2)
        zr = out["zr"][n2:].view(B, C, -1)
        if mode == "full":
            outmv = {k: v[n2:] for k, v in out.items()}
            l2, _ = heatmap_loss(outmv, batch["uv_mv"].flatten(0, 1), batch["valid_mv"].flatten(0, 1),
                                 config.sigma, config.w_coord, config.w_heatmap)
            ld = depth_loss(zr, batch["zr_mv"])
            logs.update(l2d_mv=l2.detach(), l_depth=ld.detach())
            return loss + l2 + config.w_depth * ld, logs
        uv_mc = uv if config.mc_2d_grad else uv.detach()
        if config.mc_root in ("skeleton", "skeleton_flat"):
            z_root = root_depth_from_skeleton(uv_mc, zr, batch["K_mv"], prior, skeleton,
                                              iterations=3 if config.mc_root == "skeleton" else 0)
            if not config.root_grad:
                z_root = z_root.detach()
            rays = _normalized_rays(uv_mc, batch["K_mv"].to(uv_mc.dtype))
            poses = (z_root[..., None] + zr)[..., None] * rays
        elif config.mc_root == "reference_flat":
            z_root = root_depth_from_25d(uv_mc, torch.zeros_like(zr), batch["K_mv"],
                                         config.reference_bone)
            if not config.root_grad:
                z_root = z_root.detach()
            rays = _normalized_rays(uv_mc, batch["K_mv"].to(uv_mc.dtype))
            poses = (z_root[..., None] + zr)[..., None] * rays
        else:
            poses = reconstruct_from_25d(uv_mc, zr, batch["K_mv"], config.reference_bone,
                                         root_grad=config.root_grad)
        lmc = multiview_consistency_loss(poses, config.mc_delta, config.root, config.align_grad)
        lb, blogs = limb_length_loss(poses, prior, skeleton, config.w_bone, config.w_sym)
        lf = distance_prior_loss(uv, zr, batch["K_mv"], config.reference_bone, config.z_min)
        logs.update(l_mc=lmc.detach(), **blogs, l_front=lf.detach())
        return loss + config.w_mc * lmc + lb + config.w_front * lf, logs

    return loss_fn


# --------------------------------------------------------------------------------------------
# training, prediction, evaluation
# --------------------------------------------------------------------------------------------


def fit(model: Weak25DNet, mode: str, images2d: ImageSet, multiview: MultiviewSet | None,
        steps: int, batch_2d: int = 16, batch_mv: int = 4, lr: float = 1e-3,
        prior: torch.Tensor | None = None, device: str | torch.device = "auto", seed: int = 0,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
        progress: bool = True, log_every: int = 10):
    """Train ``model`` in ``mode`` with :func:`mvbook.train.train`; returns the history."""
    from mvbook.train import TrainConfig, train

    if mode != "2d" and multiview is None:
        raise ValueError(f"mode {mode!r} needs the multiview set")
    data = WeakBatches(images2d, multiview if mode != "2d" else None, batch_2d, batch_mv, seed)
    config = TrainConfig(steps=steps, lr=lr, grad_clip=5.0, device=device, seed=seed,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, log_every=log_every, desc=f"train {mode}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15) if steps > 1 else None
    return train(model, make_loss(mode, model.config, prior), data, config, optimizer, scheduler)


@torch.no_grad()
def predict(model: Weak25DNet, images: torch.Tensor, K: torch.Tensor,
            bone_length: torch.Tensor | float = 1.0, batch_size: int = 64,
            device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Monocular predictions for crops ``images (N, 3, S, S)`` with heatmap intrinsics ``K``.

    Returns ``uv (N, J, 2)``, ``zr (N, J)`` and ``joints_cam (N, J, 3)`` (the reconstruction
    times ``bone_length``: mm when the true reference-bone length is given) on the CPU.
    """
    model.eval()
    dev = next(model.parameters()).device if device is None else torch.device(device)
    uvs, zrs = [], []
    for k in range(0, len(images), batch_size):
        out = model(images[k : k + batch_size].to(dev))
        uvs.append(out["uv"].float().cpu())
        zrs.append(out["zr"].float().cpu())
    uv, zr = torch.cat(uvs), torch.cat(zrs)
    X = reconstruct_from_25d(uv.double(), zr.double(), K.double(), model.config.reference_bone,
                             torch.as_tensor(bone_length).double())
    return {"uv": uv, "zr": zr, "joints_cam": X.float()}


def evaluate(model: Weak25DNet, test: ImageSet, batch_size: int = 64) -> dict[str, Any]:
    """Metrics of monocular predictions on ``test`` (each view an independent image).

    - ``MPJPE``, ``N-MPJPE``, ``PA-MPJPE`` (mm, all 17 joints; root-aligned at the pelvis,
      scale-fitted, Procrustes-aligned): the predicted 2.5D pose is reconstructed and brought to
      millimetres with the true length of the reference bone (the 2.5D representation defines
      the pose only up to that scale).
    - ``depth error``: mean ``|zr - zr_gt| s`` (mm), the root-relative depth alone.
    - ``MPJPE (true 2D)``: MPJPE of the reconstruction from the *true* 2D joints and the
      predicted depths (isolates what the depth maps learned from 2D precision).
    - ``2D error (px)``: mean distance to the true 2D joints in heatmap pixels.

    Also returns ``pred`` (:func:`predict`'s output).
    """
    from mvbook.metrics import mpjpe, n_mpjpe, pa_mpjpe

    pred = predict(model, test.images, test.K, test.bone, batch_size)
    gt = test.joints_cam
    X = pred["joints_cam"]
    root = model.config.root
    X_true2d = reconstruct_from_25d(test.uv.double(), pred["zr"].double(), test.K.double(),
                                    model.config.reference_bone, test.bone.double()).float()
    return {
        "MPJPE": float(mpjpe(X, gt, root=root)),
        "N-MPJPE": float(n_mpjpe(X, gt, root=root)),
        "PA-MPJPE": float(pa_mpjpe(X, gt)),
        "depth error": float(((pred["zr"] - test.zr).abs() * test.bone[:, None]).mean()),
        "MPJPE (true 2D)": float(mpjpe(X_true2d, gt, root=root)),
        "2D error (px)": float((pred["uv"] - test.uv).norm(dim=-1).mean()),
        "pred": pred,
    }


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None, **_: Any) -> int:
    """Train the chapter's three models and print their test metrics.

    The chapter's split: 2D labels on S1, S5; unlabelled multiview frames of S6, S7, S8; test
    on S9, S11. Runs the 2D-only model, then the weakly and the fully supervised models from it.
    Launch the full profile on GPUs with ``torchrun --standalone --nproc_per_node=N -m
    mvbook.train mvbook.methods.weak25d:main --profile full --data PATH``.
    """
    from mvbook.runtime import by_profile
    from mvbook.studio import open_data
    from mvbook.train import distributed_info

    common: dict[str, Any] = dict(color_jitter=0.5, root_grad=False, mc_2d_grad=False)
    cfg = by_profile(profile, smoke=Weak25DConfig(crop_size=32, **common),
                     quick=Weak25DConfig(crop_size=32, **common),
                     full=Weak25DConfig(crop_size=128, backbone=BackboneConfig(
                         width=64, blocks=(2, 2, 2, 2), stem_stride=4, deconv_layers=3,
                         deconv_channels=128), **common))
    frames = by_profile(profile, smoke=(4, 4, 4), quick=(None, None, None), full=(None, None, None))
    steps_2d, steps_w = by_profile(profile, smoke=(3, 2), quick=(1500, 600), full=(40000, 20000))
    lr_2d, lr_w = by_profile(profile, smoke=(5e-3, 3e-3), quick=(5e-3, 3e-3), full=(1e-3, 5e-4))
    if steps is not None:
        steps_2d = steps_w = steps
    batch_2d, batch_mv = by_profile(profile, smoke=(4, 1), quick=(16, 4), full=(64, 16))
    keys = ["images", "K", "R", "t", "joints3d", "joints2d", "bbox", "image_size"]
    common = dict(profile=profile, seed=seed, keys=keys)
    ds_2d = open_data(data, split="train", subjects=["S1", "S5"], **common)
    ds_mv = open_data(data, split="train", subjects=["S6", "S7", "S8"], **common)
    ds_test = open_data(data, split="test", **common)
    images2d = prepare_images(ds_2d, cfg, frames[0], seed=seed)
    multiview = prepare_multiview(ds_mv, cfg, frames[1], seed=seed + 1)
    test = prepare_images(ds_test, cfg, frames[2], seed=seed + 2)
    prior = bone_ratio_prior(multiview.joints_cam[:, 0])
    info = distributed_info()
    base: Weak25DNet | None = None
    for mode in ("2d", "weak", "full"):
        torch.manual_seed(seed)
        model = Weak25DNet(17, cfg)
        if base is not None:
            model.load_state_dict(base.state_dict())
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / mode
        n = steps_2d if mode == "2d" else steps_w
        t0 = time.perf_counter()
        fit(model, mode, images2d, multiview, n, batch_2d, batch_mv,
            lr=lr_2d if mode == "2d" else lr_w, prior=prior, device=device, seed=seed,
            checkpoint_dir=ckpt, checkpoint_every=max(n // 10, 1))
        model = model.cpu()
        if mode == "2d":
            base = copy.deepcopy(model)
        if info.is_main:
            metrics = evaluate(model, test)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items() if k != "pred")
            print(f"{mode}: {shown} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
