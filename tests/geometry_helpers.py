"""Camera rigs, point clouds and noisy observations shared by the geometry tests (mm, z up)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from hypothesis import settings

from mvbook.geometry import Camera

F64 = torch.float64
SETTINGS = settings(max_examples=50, deadline=None)
TARGET = (0.0, 0.0, 900.0)  # the rigs look at a point at hip height

# Four cameras around the origin with Human3.6M-like placement and intrinsics.
H36M_EYES = ((3500.0, 300.0, 1500.0), (-200.0, 3600.0, 1700.0), (-3400.0, -100.0, 1400.0),
             (100.0, -3500.0, 1600.0))  # fmt: skip
H36M_FOCALS = ((1145.0, 1143.0), (1149.7, 1147.6), (1149.1, 1148.8), (1145.5, 1144.8))
H36M_PRINCIPALS = ((512.5, 515.4), (508.8, 508.0), (519.8, 501.4), (514.0, 501.9))
H36M_IMAGE_SIZE = (1000, 1002)
H36M_DIST_SCALES = (1.0, 0.8, 1.1, 0.9)  # per camera, applied to the shared coefficients


def h36m_like_rig(
    dist: torch.Tensor | None = None, principal: bool = False, dtype: torch.dtype = F64
) -> Camera:
    """Four cameras around the origin, Human3.6M-like, batch shape ``(4,)``.

    ``dist`` ``(5,)``: distortion coefficients, scaled per camera by :data:`H36M_DIST_SCALES`
    (None: no distortion). ``principal``: use :data:`H36M_PRINCIPALS` instead of the image
    centre.
    """
    d = None
    if dist is not None:
        d = dist.to(F64).expand(4, 5) * torch.tensor(H36M_DIST_SCALES, dtype=F64)[:, None]
    cams = Camera.look_at(
        torch.tensor(H36M_EYES, dtype=F64),
        torch.tensor(TARGET, dtype=F64),
        focal=torch.tensor(H36M_FOCALS, dtype=F64),
        image_size=H36M_IMAGE_SIZE,
        principal=torch.tensor(H36M_PRINCIPALS, dtype=F64) if principal else None,
        dist=d,
    )
    return cams.to(dtype)


@lru_cache(maxsize=None)
def circle_rig(n_views: int = 4, radius: float = 3500.0, dtype: torch.dtype = F64) -> Camera:
    """``n_views`` cameras evenly spaced on a circle of ``radius`` mm, heights 1400-1600 mm,
    focal lengths 1150 + 10 c px, 1000x1000 images, no distortion."""
    ang = torch.arange(n_views, dtype=F64) * (2 * torch.pi / n_views) + 0.3
    eye = torch.stack([radius * torch.cos(ang), radius * torch.sin(ang),
                       1500 + 100 * torch.sin(3 * ang)], dim=-1)  # fmt: skip
    focal = 1150.0 + 10 * torch.arange(n_views, dtype=F64)
    cams = Camera.look_at(eye, torch.tensor(TARGET, dtype=F64), focal=focal,
                          image_size=(1000, 1000))  # fmt: skip
    return cams.to(dtype)


def random_points(n: int, seed: int = 0, spread: float | Sequence[float] = 400.0) -> torch.Tensor:
    """``(n, 3)`` float64 mm: Gaussian points around :data:`TARGET` with standard deviation
    ``spread`` (one value, or one per axis)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.as_tensor(spread, dtype=F64)
    return torch.randn(n, 3, generator=g, dtype=F64) * scale + torch.tensor(TARGET, dtype=F64)


def noisy_projections(
    cams: Camera, X: torch.Tensor, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """``cams.project(X)`` plus Gaussian pixel noise of standard deviation ``sigma`` drawn from
    ``generator``."""
    uv = cams.project(X)
    return uv + sigma * torch.randn(uv.shape, generator=generator, dtype=uv.dtype)
