"""Voxel grids, unprojection of 2D maps into volumes and aggregation over views.

Iskakov et al. 2019, "Learnable Triangulation of Human Pose", eqs. 7-11:

- :func:`make_grid`: an ``L x L x L`` mm cube of ``R^3`` voxel centres around a root point, with
  the vertical axis (world z, our convention; the paper's "Y-axis perpendicular to the ground")
  kept vertical and a random or fixed rotation ("yaw") about it.
- :func:`unproject`: eq. 7, ``V^view_{c,k} = M_{c,k}{P_c V^coords}``: every voxel centre is
  projected with every camera and the 2D maps are sampled bilinearly -- all views of all batch
  elements in ONE ``grid_sample`` call.
- :func:`aggregate`: eq. 8 (``"sum"``), eq. 9 (``"conf"``, confidence-weighted sum) and
  eqs. 10-11 (``"softmax"`` over views per voxel and channel).

Conventions: millimetres, world z up, ``P = K [R | t]`` mapping to pixel ``(u, v)`` with
``(0, 0)`` the centre of the top-left pixel of an image of size ``(W, H)``. The maps being
sampled may have any resolution as long as they cover that same image (a heatmap of a crop
covers the crop), so ``image_size`` is the size of the image ``P`` refers to, not of the map.
Lens distortion is not modelled here (as in the paper): pass undistorted projections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .validation import check_choice, check_positive, check_shape, check_tensor

__all__ = [
    "AGGREGATIONS",
    "aggregate",
    "make_grid",
    "project_grid",
    "random_yaw",
    "unproject",
]

AGGREGATIONS = ("sum", "conf", "softmax")


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _pattern(batch: Sequence[int], *dims: str) -> str:
    """A shape pattern with a concrete batch: ``_pattern((2,), "C", "3") == "(2, C, 3)"``."""
    return f"({', '.join([*(str(b) for b in batch), *dims])})"


def make_grid(
    center: torch.Tensor,
    size: float,
    resolution: int,
    yaw: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """World coordinates of the voxel centres of a cube around ``center``.

    Args:
        center: ``(..., 3)`` mm, the cube's centre (the paper uses the pelvis).
        size: side ``L`` of the cube in mm.
        resolution: voxels per side ``R``.
        yaw: ``(...,)`` rotation in radians about the world z axis (None = 0). The paper uses a
            random orientation of the horizontal axes during training.

    Returns:
        ``(..., R, R, R, 3)`` mm; index ``[d, h, w]`` is the voxel at local offsets
        ``(x_w, y_h, z_d)`` with ``x_i = (i + 0.5) * L / R - L / 2``, rotated by ``yaw`` and
        shifted by ``center``.
    """
    check_tensor(center, "center")
    check_shape(center, "center", "(..., 3)")
    resolution = int(check_positive(resolution, "resolution", integer=True))
    check_positive(size, "size")
    lin = (torch.arange(resolution, dtype=center.dtype, device=center.device) + 0.5) * (
        float(size) / resolution
    ) - float(size) / 2
    zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
    local = torch.stack([xx, yy, zz], dim=-1)  # (R, R, R, 3)
    batch = center.shape[:-1]
    if yaw is not None:
        yaw_t = _as_tensor(yaw, center).expand(batch) if not isinstance(yaw, torch.Tensor) else yaw
        if yaw_t.shape != batch:
            raise ValueError(f"yaw must have shape {tuple(batch)}, got {tuple(yaw_t.shape)}")
        c, s = torch.cos(yaw_t), torch.sin(yaw_t)
        x = c[..., None, None, None] * xx - s[..., None, None, None] * yy
        y = s[..., None, None, None] * xx + c[..., None, None, None] * yy
        z = zz.expand(x.shape)
        local = torch.stack([x, y, z], dim=-1)
    return local + center[..., None, None, None, :]


def random_yaw(
    batch_shape: Sequence[int] | int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Uniform random rotation angles in ``[0, 2 pi)`` of shape ``batch_shape`` (radians)."""
    if isinstance(batch_shape, int):
        batch_shape = (batch_shape,)
    u = torch.rand(tuple(batch_shape), generator=generator)
    return (u * 2 * math.pi).to(device) if device is not None else u * 2 * math.pi


def project_grid(grid: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project voxel centres with every camera.

    Args:
        grid: ``(..., D, H, W, 3)`` mm.
        P: ``(..., C, 3, 4)`` projection matrices; leading dims broadcast with the grid's.

    Returns:
        ``uv (..., C, D, H, W, 2)`` pixels and ``depth (..., C, D, H, W)`` (the homogeneous
        third coordinate; positive in front of the camera). Points with ``depth <= 0`` get NaN uv.
    """
    check_shape(P, "P", "(..., C, 3, 4)")
    check_shape(grid, "grid", "(..., D, H, W, 3)")
    spatial = grid.shape[-4:-1]
    pts = grid.flatten(-4, -2)  # (..., N, 3)
    hom = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)  # (..., N, 4)
    proj = torch.einsum("...cij,...nj->...cni", P, hom)  # (..., C, N, 3)
    depth = proj[..., 2]
    uv = proj[..., :2] / depth[..., None]
    uv = torch.where((depth > 0)[..., None], uv, torch.full_like(uv, float("nan")))
    return uv.unflatten(-2, spatial), depth.unflatten(-1, spatial)


def unproject(
    features: torch.Tensor,
    P: torch.Tensor,
    grid: torch.Tensor,
    image_size: torch.Tensor | Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill a volume per view by bilinear sampling of 2D maps at projected voxel centres (eq. 7).

    All ``B * C`` views go through a single ``torch.nn.functional.grid_sample`` call.

    Args:
        features: ``(B..., C, K, h, w)`` maps ``M_{c,k}`` of each view; they cover the image that
            ``P`` maps to (any resolution ``h, w``).
        P: ``(B..., C, 3, 4)`` projection matrices into that image (pixels, (0,0) = centre of the
            top-left pixel).
        grid: ``(B..., D, H, W, 3)`` voxel centres in mm (see :func:`make_grid`).
        image_size: ``(W_img, H_img)`` of the image ``P`` maps to; a pair, or a tensor of shape
            ``(2,)``/``(B..., C, 2)``.

    Returns:
        ``volumes (B..., C, K, D, H, W)`` and ``valid (B..., C, D, H, W)`` bool: voxels in front of
        the camera whose projection lies inside the image. Invalid voxels are zero.
    """
    dims = check_shape(features, "features", "(..., C, K, h, w)")
    check_tensor(features, "features", floating=True)
    batch = features.shape[:-4]
    C, K, h, w = features.shape[-4:]
    check_shape(P, "P", _pattern(batch, "C", "3", "4"), sizes=dims)
    check_shape(grid, "grid", _pattern(batch, "D", "H", "W", "3"))
    D, H, W = grid.shape[-4:-1]
    # Projection and sampling run in at least float32, outside any autocast region: in bfloat16
    # a voxel centre lands up to several crop pixels off (8 mantissa bits), so low-precision
    # training would sample other places than float32 evaluation. The volumes come back in the
    # features' dtype.
    exact = torch.promote_types(torch.promote_types(P.dtype, grid.dtype), torch.float32)
    with torch.autocast(device_type=features.device.type, enabled=False):
        size = torch.as_tensor(image_size, device=features.device).to(exact)
        check_shape(size, "image_size", "(..., 2) = (W, H), or (..., C, 2) per view")
        uv, depth = project_grid(grid.to(exact), P.to(exact))  # (B..., C, D, H, W, 2)
        size = size.expand(*batch, C, 2)[..., None, None, None, :]
        # Pixel centres -> [-1, 1] with align_corners=False: x_n = (2u + 1) / W - 1.
        norm = (2 * uv + 1) / size - 1
        valid = (depth > 0) & torch.isfinite(norm).all(-1) & (norm.abs() <= 1).all(-1)
        norm = torch.where(valid[..., None], norm, torch.full_like(norm, -2.0))
        n = math.prod(batch) * C
        sample_dtype = torch.promote_types(features.dtype, torch.float32)
        sampled = F.grid_sample(
            features.reshape(n, K, h, w).to(sample_dtype),
            norm.reshape(n, 1, D * H * W, 2).to(sample_dtype),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (n, K, 1, DHW)
    volumes = sampled.reshape(*batch, C, K, D, H, W).to(features.dtype)
    return volumes, valid


def aggregate(
    volumes: torch.Tensor,
    mode: str = "softmax",
    confidences: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Aggregate per-view volumes into one (eqs. 8-11).

    Args:
        volumes: ``(..., C, K, D, H, W)`` per-view volumes ``V^view``.
        mode: ``"sum"`` -- ``sum_c V_c`` (eq. 8); ``"conf"`` -- ``sum_c d_c V_c / sum_c d_c``
            (eq. 9) with ``confidences`` ``(..., C)`` (or per channel ``(..., C, K)``) positive;
            ``"softmax"`` -- ``sum_c softmax_c(V)_c * V_c`` per voxel and channel (eqs. 10-11).
        confidences: required for ``"conf"``, ignored otherwise.
        valid: optional ``(..., C, D, H, W)`` bool from :func:`unproject`; with it, views whose
            voxel projects outside their image take no part in the softmax and get weight 0 in
            ``"conf"`` (the paper aggregates all views; pass None for the paper's exact form).

    Returns:
        ``(..., K, D, H, W)``.
    """
    check_tensor(volumes, "volumes")
    dims = check_shape(volumes, "volumes", "(..., C, K, D, H, W)")
    check_choice(mode, "mode", AGGREGATIONS)
    vmask = None
    if valid is not None:
        check_tensor(valid, "valid")
        check_shape(valid, "valid", _pattern(volumes.shape[:-5], "C", "D", "H", "W"), sizes=dims)
        vmask = valid.unsqueeze(-4)  # (..., C, 1, D, H, W)
    if mode == "sum":
        return volumes.sum(dim=-5)
    if mode == "conf":
        if confidences is None:
            raise ValueError("confidences (..., C) are required for mode='conf'")
        c_dims = volumes.shape[:-4]
        if confidences.shape == c_dims:
            d = confidences[..., None, None, None, None]
        elif confidences.shape == volumes.shape[:-3]:
            d = confidences[..., None, None, None]
        else:
            raise ValueError(
                f"confidences must have shape {tuple(c_dims)} or {tuple(volumes.shape[:-3])}, "
                f"got {tuple(confidences.shape)}"
            )
        d = d.to(volumes.dtype).expand(volumes.shape)
        if vmask is not None:
            d = d * vmask
        return (d * volumes).sum(-5) / d.sum(-5).clamp_min(1e-12)
    # softmax over views, per voxel and channel
    logits = volumes
    if vmask is not None:
        logits = volumes.masked_fill(~vmask, float("-inf"))
        all_invalid = ~vmask.any(dim=-5, keepdim=True)
        logits = logits.masked_fill(all_invalid, 0.0)
    weights = torch.softmax(logits, dim=-5)
    return (weights * volumes).sum(dim=-5)
