"""The capture space, synthetic roots and 3D proposals of SelfPose3d's root net (sec. 3.3).

- :func:`space_grid`: VoxelPose's space cube: a box of ``size`` mm (x, y, z) around ``center``
  cut into ``shape`` voxels (the paper: 8 x 8 x 2 m in 80 x 80 x 20 voxels on Panoptic).
- :func:`view_average`: eq. 1, ``P_unproj``: every voxel centre is projected into every view
  (through the augmentation when the cameras are ``T P``), the 2D maps are sampled bilinearly
  (:func:`mvbook.volumetric.unproject`) and averaged over the views that see the voxel, clamped
  to ``[0, 1]`` (VoxelPose's aggregation).
- :func:`synthetic_roots`, :func:`render_root_heatmaps`, :func:`root_targets`: the synthetic
  root set ``D_root`` of eq. 2: random 3D roots, their projections rendered as 2D Gaussians
  with noise in every view, and 3D Gaussian target volumes ``G^syn*``.
- :func:`nms_3d`: proposals from a root volume: a voxel is a peak when it equals the maximum of
  its 3 x 3 x 3 neighbourhood; the ``k`` highest peaks above ``threshold`` are kept.

Units: mm in 3D, heatmap px in 2D. Volumes are indexed ``[z, y, x]`` (``(D, H, W)``), as
:func:`mvbook.volumetric.make_grid`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mvbook.heatmaps import render_gaussian_2d, render_gaussian_3d
from mvbook.validation import check_positive, check_shape, check_tensor
from mvbook.volumetric import unproject

from .augment import image_to_heatmap, project

__all__ = [
    "nms_3d",
    "render_root_heatmaps",
    "root_targets",
    "space_grid",
    "synthetic_roots",
    "view_average",
]


def space_grid(center: Sequence[float] | torch.Tensor, size: Sequence[float],
               shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel centres ``(Z, Y, X, 3)`` mm of a box of ``size = (Lx, Ly, Lz)`` mm around
    ``center`` with ``shape = (X, Y, Z)`` voxels; index ``[k, j, i]`` holds
    ``center + ((i + 0.5) Lx / X - Lx / 2, (j + 0.5) Ly / Y - Ly / 2, (k + 0.5) Lz / Z - Lz / 2)``.
    """
    if len(size) != 3 or len(shape) != 3:
        raise ValueError(f"size and shape must hold 3 values (x, y, z), got {size!r}, {shape!r}")
    for v, name in ((size, "size"), (shape, "shape")):
        for x in v:
            check_positive(x, name, integer=name == "shape")
    c = torch.as_tensor(center, dtype=dtype).reshape(3)
    axes = [(torch.arange(int(n), dtype=dtype) + 0.5) * (float(L) / int(n)) - float(L) / 2
            for L, n in zip(size, shape)]
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return torch.stack([xx, yy, zz], -1) + c


def view_average(maps: torch.Tensor, P: torch.Tensor, grid: torch.Tensor,
                 image_size: Sequence[int]) -> torch.Tensor:
    """Unproject 2D maps into volumes and average them over the views that see each voxel.

    Args:
        maps: ``(B..., C, K, h, w)`` maps covering images of ``image_size = (W, H)``.
        P: ``(B..., C, 3, 4)`` projection matrices into those images.
        grid: ``(B..., D, H, W, 3)`` mm (leading dims may be 1 and broadcast).
        image_size: ``(W, H)`` px.

    Returns:
        ``(B..., K, D, H, W)`` in ``[0, 1]`` (0 where no view sees the voxel).
    """
    check_shape(maps, "maps", "(..., C, K, h, w)")
    batch = maps.shape[:-4]
    grid = grid.expand(*batch, *grid.shape[-4:])
    vols, valid = unproject(maps, P, grid, tuple(int(v) for v in image_size))
    seen = valid.sum(-4).unsqueeze(-4).to(vols.dtype)  # (B..., 1, D, H, W)
    return (vols.sum(-5) / seen.clamp_min(1.0)).clamp(0.0, 1.0)


def synthetic_roots(batch: int, max_people: int, center: Sequence[float], extent: Sequence[float],
                    z_range: Sequence[float], generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3D roots: ``1..max_people`` per sample, uniform in the horizontal rectangle
    ``center[:2] +- extent / 2`` (mm) and in height ``z_range`` (mm).

    Returns:
        ``roots (batch, max_people, 3)`` mm and ``valid (batch, max_people)`` bool.
    """
    check_positive(batch, "batch", integer=True)
    check_positive(max_people, "max_people", integer=True)
    n = torch.randint(1, max_people + 1, (batch,), generator=generator)
    valid = torch.arange(max_people)[None, :] < n[:, None]
    u = torch.rand(batch, max_people, 3, generator=generator)
    lo = torch.tensor([center[0] - extent[0] / 2, center[1] - extent[1] / 2, z_range[0]])
    hi = torch.tensor([center[0] + extent[0] / 2, center[1] + extent[1] / 2, z_range[1]])
    return lo + u * (hi - lo), valid


def render_root_heatmaps(roots: torch.Tensor, valid: torch.Tensor, P: torch.Tensor,
                         image_size: Sequence[int], heatmap_size: Sequence[int], sigma: float,
                         jitter: float = 0.0, min_peak: float = 1.0, drop: float = 0.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The multiview root heatmaps ``H^syn_root`` of synthetic roots (eq. 2's inputs).

    Every root is projected into every view and rendered as a 2D Gaussian of ``sigma`` heatmap
    px; the maps of several roots are combined by their maximum. Noise, so that the root net
    meets maps like a 2D network's: each projection moves by ``N(0, jitter^2)`` heatmap px, its
    peak is ``U(min_peak, 1)``, and it is dropped (an occluded root) with probability ``drop``.

    Args:
        roots: ``(B, M, 3)`` mm; valid: ``(B, M)`` bool; P: ``(B, C, 3, 4)`` (image px).

    Returns:
        ``(B, C, 1, h, w)`` heatmaps.
    """
    check_shape(roots, "roots", "(B, M, 3)")
    dims = check_shape(valid, "valid", "(B, M)")
    check_shape(P, "P", "(B, C, 3, 4)", sizes=dims)
    uv = image_to_heatmap(project(P, roots), image_size, heatmap_size)  # (B, C, M, 2)
    B, C, M = uv.shape[:3]
    if jitter > 0:
        uv = uv + jitter * torch.randn(uv.shape, generator=generator).to(uv)
    peak = torch.ones(B, C, M)
    if min_peak < 1.0:
        peak = min_peak + (1 - min_peak) * torch.rand(B, C, M, generator=generator)
    keep = valid[:, None, :].expand(B, C, M).clone()
    if drop > 0:
        keep &= torch.rand(B, C, M, generator=generator) >= drop
    heat = render_gaussian_2d(uv, tuple(int(v) for v in heatmap_size), sigma)  # (B, C, M, h, w)
    heat = heat * (peak * keep).to(heat)[..., None, None]
    return heat.amax(2, keepdim=True) if M else heat.sum(2, keepdim=True)


def root_targets(roots: torch.Tensor, valid: torch.Tensor, grid: torch.Tensor,
                 sigma: float) -> torch.Tensor:
    """Target root volumes ``G*`` ``(B, D, H, W)``: the maximum over the valid roots
    ``(B, M, 3)`` mm of 3D Gaussians of ``sigma`` mm (VoxelPose's targets) on ``grid``."""
    check_shape(roots, "roots", "(B, M, 3)")
    check_shape(valid, "valid", "(B, M)")
    vol = render_gaussian_3d(roots, grid, sigma) * valid.to(roots.dtype)[..., None, None, None]
    if roots.shape[1] == 0:
        return vol.sum(1)
    return vol.amax(1)


def nms_3d(volume: torch.Tensor, grid: torch.Tensor, k: int, threshold: float
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Root proposals from root volumes (3D non-maximum suppression).

    A voxel is a peak when it equals the maximum of its 3 x 3 x 3 neighbourhood (a max-pool);
    the ``k`` largest peaks are kept and those above ``threshold`` are valid.

    Args:
        volume: ``(B, D, H, W)``; grid: ``(D, H, W, 3)`` mm (or ``(B, D, H, W, 3)``).

    Returns:
        ``roots (B, k, 3)`` mm (voxel centres), ``scores (B, k)`` (the peak values, descending)
        and ``valid (B, k)`` bool.
    """
    check_tensor(volume, "volume", floating=True)
    dims = check_shape(volume, "volume", "(B, D, H, W)")
    check_shape(grid, "grid", "(..., D, H, W, 3)", sizes=dims)
    B = volume.shape[0]
    n = volume[0].numel()
    k = min(int(check_positive(k, "k", integer=True)), n)
    pooled = F.max_pool3d(volume[:, None], 3, stride=1, padding=1)[:, 0]
    peaks = torch.where(volume == pooled, volume, torch.full_like(volume, -torch.inf))
    scores, index = peaks.reshape(B, n).topk(k, dim=-1)
    g = grid.reshape(*grid.shape[:-4], n, 3).expand(B, n, 3)
    roots = torch.gather(g, 1, index[..., None].expand(B, k, 3))
    valid = scores > threshold
    return roots, torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores)), valid
