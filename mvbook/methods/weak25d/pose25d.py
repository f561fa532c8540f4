"""The 2.5D pose representation (Iqbal et al. 2018) and its closed-form 3D reconstruction.

A 2.5D pose is, per joint, the pixel ``(u_j, v_j)`` and the root-relative depth divided by the
length of a fixed reference bone, ``zr_j``. With ``p_j = K^-1 (u_j, v_j, 1)`` and
``X_j = (Z_root + zr_j) p_j``, the root depth is the larger root of the quadratic that gives
the reference bone length 1 (:func:`root_depth_from_25d`); :func:`reconstruct_from_25d`
returns the whole pose. Shapes: ``uv (..., J, 2)`` px, ``zr (..., J)``, ``K (..., 3, 3)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mvbook.skeletons import H36M_17, Skeleton
from mvbook.validation import check_index, check_shape, check_tensor

from .config import REFERENCE_BONE

__all__ = [
    "check_bone",
    "scale_normalize",
    "pose_to_25d",
    "normalized_rays",
    "root_depth_from_25d",
    "root_depth_from_skeleton",
    "reconstruct_from_25d",
]


def check_bone(bone: Sequence[int], num_joints: int) -> tuple[int, int]:
    """``(n, m)``: two distinct joint indices below ``num_joints`` (the reference bone)."""
    if len(bone) != 2:
        raise ValueError(f"reference_bone must be two joint indices, got {tuple(bone)}")
    n = check_index(bone[0], "reference_bone[0]", num_joints, negative=False)
    m = check_index(bone[1], "reference_bone[1]", num_joints, negative=False)
    if n == m:
        raise ValueError(f"reference_bone must be two distinct joints, got {tuple(bone)}")
    return n, m


def _check_25d(uv: torch.Tensor, zr: torch.Tensor, K: torch.Tensor) -> None:
    dims = check_shape(uv, "uv", "(..., J, 2)")
    check_tensor(uv, "uv", floating=True)
    check_shape(zr, "zr", "(..., J)", dims)
    check_shape(K, "K", "(..., 3, 3)")


def scale_normalize(joints: torch.Tensor, reference_bone: Sequence[int] = REFERENCE_BONE,
                    eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide a pose by the length of its reference bone.

    Args:
        joints: ``(..., J, 3)`` (any units, e.g. mm in camera coordinates).
        reference_bone: ``(n, m)`` joint indices.

    Returns:
        ``(joints / s, s)`` with ``s = |X_n - X_m|`` of shape ``(...)``.
    """
    check_shape(joints, "joints", "(..., J, 3)")
    check_tensor(joints, "joints", floating=True)
    n, m = check_bone(reference_bone, joints.shape[-2])
    s = (joints[..., n, :] - joints[..., m, :]).norm(dim=-1)
    if bool((s <= eps).any()):
        raise ValueError("joints has a reference bone of zero length; cannot normalise scale")
    return joints / s[..., None, None], s


def pose_to_25d(joints_cam: torch.Tensor, K: torch.Tensor,
                reference_bone: Sequence[int] = REFERENCE_BONE, root_joint: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2.5D pose of a 3D pose given in camera coordinates.

    Args:
        joints_cam: ``(..., J, 3)`` camera coordinates (mm), all depths > 0.
        K: ``(..., 3, 3)`` intrinsics (pixels of the image the 2D coordinates live in).

    Returns:
        ``uv (..., J, 2)`` pixels (pinhole projection, no distortion) and
        ``zr (..., J)`` the root-relative depth divided by the reference bone length.
    """
    check_shape(joints_cam, "joints_cam", "(..., J, 3)")
    check_tensor(joints_cam, "joints_cam", floating=True)
    check_shape(K, "K", "(..., 3, 3)")
    z = joints_cam[..., 2]
    if bool((z <= 0).any()):
        raise ValueError("joints_cam has joints with depth <= 0 (behind the camera)")
    xn = joints_cam[..., :2] / z[..., None]
    uv = torch.einsum("...ij,...nj->...ni", K[..., :2, :2], xn) + K[..., None, :2, 2]
    _, s = scale_normalize(joints_cam, reference_bone)
    zr = (z - z[..., root_joint, None]) / s[..., None]
    return uv, zr


def normalized_rays(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``K^-1 (u, v, 1)`` for pixels ``uv (..., J, 2)`` and intrinsics ``K (..., 3, 3)``:
    ``(..., J, 3)`` with third component 1."""
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
    _check_25d(uv, zr, K)
    n, m = check_bone(reference_bone, uv.shape[-2])
    p = normalized_rays(uv, K.to(uv.dtype))
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
    _check_25d(uv, zr, K)
    bones = torch.tensor(skeleton.bones, device=uv.device)
    if bone_prior.shape != (len(bones),):
        raise ValueError(f"bone_prior must have shape ({len(bones)},), got {tuple(bone_prior.shape)}")
    p = normalized_rays(uv, K.to(uv.dtype))
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
    p = normalized_rays(uv, K.to(uv.dtype))
    return ((z_root[..., None] + zr) * bone[..., None])[..., None] * p

