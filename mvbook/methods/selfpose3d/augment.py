"""Affine view augmentations and the cross-affine-view projection of SelfPose3d (sec. 3.4).

An augmentation ``t_{r,s}`` rotates a view by ``r`` and scales it by ``s`` about the image
centre ``c``: a pixel ``u`` of the original image lands at ``u' = s R(r) (u - c) + c`` of the
augmented image (the same size). As a 3x3 matrix ``T`` on homogeneous pixels, a camera ``P``
(3x4) seen through the augmentation is ``T P``: every 3D operation of the paper with an
augmentation (unprojection, eq. 1 with ``t_{r,s}``; projection of the bottleneck 3D poses into
the other augmentation's image space, sec. 3.4) is the plain operation with ``T P``.

Ranges: the paper samples the rotation in ``[-45, 45]`` degrees and the scale offset in
``[-0.35, 0.35]`` (``s = 1 + offset``), uniformly; the authors' code instead applies a rotation
only half of the time and draws the scale offset from ``[0.1, 0.35]`` or ``-[0.05, 0.175]``
(never near 1). We follow the paper. One draw per augmentation and frame, shared by all views of
the frame, as in the authors' code (the paper does not say).

Pixel convention (DESIGN.md): ``(0, 0)`` the centre of the top-left pixel, so ``c = ((W - 1) / 2,
(H - 1) / 2)``. Heatmaps of ``(w, h)`` pixels cover an image of ``(W, H)``: image px ``u`` is
heatmap px ``(u + 1/2) w / W - 1/2`` (:func:`image_to_heatmap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mvbook.validation import check_shape, check_tensor

__all__ = [
    "affine_matrices",
    "apply_affine",
    "augment_projections",
    "heatmap_to_image",
    "image_to_heatmap",
    "project",
    "random_affines",
    "warp_images",
]


def affine_matrices(rotation: torch.Tensor, scale: torch.Tensor,
                    image_size: Sequence[int]) -> torch.Tensor:
    """``T (..., 3, 3)``: rotation by ``rotation`` (radians; a positive angle turns +u towards +v,
    clockwise on screen) and scaling by ``scale`` about the centre of an image of
    ``image_size = (W, H)``: ``T [u, 1] = [s R (u - c) + c, 1]``."""
    rotation = check_tensor(rotation, "rotation", floating=True)
    scale = check_tensor(scale, "scale", floating=True)
    rotation, scale = torch.broadcast_tensors(rotation, scale)
    W, H = (float(v) for v in image_size)
    c = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=rotation.dtype, device=rotation.device)
    cos, sin = torch.cos(rotation) * scale, torch.sin(rotation) * scale
    A = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (..., 2, 2)
    b = c - (A @ c[:, None])[..., 0]
    T = torch.zeros(*rotation.shape, 3, 3, dtype=rotation.dtype, device=rotation.device)
    T[..., :2, :2] = A
    T[..., :2, 2] = b
    T[..., 2, 2] = 1.0
    return T


def random_affines(shape: Sequence[int] | int, image_size: Sequence[int],
                   rotation_deg: float = 45.0, scale: float = 0.35,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random augmentations ``(*shape, 3, 3)``: rotation ``U(-rotation_deg, rotation_deg)``
    degrees and scale ``1 + U(-scale, scale)`` (the paper's ranges by default)."""
    if isinstance(shape, int):
        shape = (shape,)
    r = (torch.rand(tuple(shape), generator=generator) * 2 - 1) * math.radians(rotation_deg)
    s = 1 + (torch.rand(tuple(shape), generator=generator) * 2 - 1) * scale
    return affine_matrices(r, s, image_size)


def apply_affine(T: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Points ``uv (..., N, 2)`` px through ``T (..., 3, 3)`` (leading dims broadcast)."""
    check_shape(T, "T", "(..., 3, 3)")
    check_shape(uv, "uv", "(..., N, 2)")
    return uv @ T[..., :2, :2].transpose(-1, -2) + T[..., None, :2, 2]


def augment_projections(T: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``T P``: the projection matrices ``(..., 3, 4)`` into the augmented images."""
    check_shape(T, "T", "(..., 3, 3)")
    check_shape(P, "P", "(..., 3, 4)")
    return T.to(P.dtype) @ P


def project(P: torch.Tensor, X: torch.Tensor, min_depth: float = 1.0) -> torch.Tensor:
    """Project world points with projection matrices, differentiably.

    Args:
        P: ``(B..., C, 3, 4)`` px per mm (:func:`augment_projections` for augmented views).
        X: ``(B..., N, 3)`` mm (any trailing point dims flattened into ``N``).
        min_depth: the homogeneous depth is clamped to it (points behind a camera project far
            away instead of to NaN, so a loss on them stays finite).

    Returns:
        ``(B..., C, N, 2)`` px.
    """
    check_shape(P, "P", "(..., C, 3, 4)")
    check_shape(X, "X", "(..., N, 3)")
    hom = torch.cat([X, torch.ones_like(X[..., :1])], -1)  # (B..., N, 4)
    proj = torch.einsum("...cij,...nj->...cni", P.to(X.dtype), hom)
    return proj[..., :2] / proj[..., 2:3].clamp_min(min_depth)


def image_to_heatmap(uv: torch.Tensor, image_size: Sequence[int],
                     heatmap_size: Sequence[int]) -> torch.Tensor:
    """Image px ``(..., 2)`` to heatmap px (both sizes ``(width, height)``)."""
    scale = torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]],
                         dtype=uv.dtype, device=uv.device)
    return (uv + 0.5) * scale - 0.5


def heatmap_to_image(uv: torch.Tensor, image_size: Sequence[int],
                     heatmap_size: Sequence[int]) -> torch.Tensor:
    """Heatmap px ``(..., 2)`` to image px (the inverse of :func:`image_to_heatmap`)."""
    scale = torch.tensor([image_size[0] / heatmap_size[0], image_size[1] / heatmap_size[1]],
                         dtype=uv.dtype, device=uv.device)
    return (uv + 0.5) * scale - 0.5


def warp_images(images: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The augmented images: output pixel ``u'`` samples the input at ``T^-1 u'`` (bilinear,
    zeros outside), one ``grid_sample`` call for all images.

    Args:
        images: ``(..., 3, H, W)`` uint8 or float.
        T: ``(..., 3, 3)`` augmentations (:func:`affine_matrices`), one per image.

    Returns:
        ``(..., 3, H, W)`` in the dtype of ``images`` (uint8 rounded).
    """
    check_shape(images, "images", "(..., K, H, W)")
    check_shape(T, "T", "(..., 3, 3)")
    lead = images.shape[:-3]
    if T.shape[:-2] != lead:
        raise ValueError(f"T must have shape {(*lead, 3, 3)} (one per image), got {tuple(T.shape)}")
    K, H, W = images.shape[-3:]
    n = math.prod(lead)
    Tinv = torch.linalg.inv(T.reshape(n, 3, 3).double()).float().to(images.device)
    u = torch.arange(W, dtype=torch.float32, device=images.device)
    v = torch.arange(H, dtype=torch.float32, device=images.device)
    uv = torch.stack(torch.broadcast_tensors(u[None, :], v[:, None]), -1).reshape(1, H * W, 2)
    src = apply_affine(Tinv[:, None], uv[:, None])[:, 0]  # (n, HW, 2)
    size = torch.tensor([W, H], dtype=torch.float32, device=images.device)
    grid = ((2 * src + 1) / size - 1).reshape(n, H, W, 2)
    out = F.grid_sample(images.reshape(n, K, H, W).float(), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=False).reshape(images.shape)
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)
