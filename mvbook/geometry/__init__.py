"""Multiview geometry: cameras, projection, epipolar geometry, triangulation, Procrustes.

Conventions (DESIGN.md): world units mm, world z up; ``x_cam = R @ X + t``,
``P = K [R | t]``; pixel ``(u, v)`` with ``(0, 0)`` the centre of the top-left pixel,
``u`` right, ``v`` down; image sizes ``(width, height)``. All functions are batched over
leading dims, differentiable, and run on CPU or CUDA in float32 or float64.
"""

from __future__ import annotations

from .camera import Camera
from .epipolar import (
    epipolar_distance,
    epipolar_lines,
    fundamental_from_cameras,
    fundamental_from_projections,
    point_line_distance,
    sampson_distance,
    symmetric_epipolar_distance,
)
from .procrustes import procrustes, procrustes_align
from .projection import (
    distort_normalized,
    distortion_jacobian,
    normalized_to_pixel,
    pixel_to_normalized,
    project_points,
    undistort_normalized,
    undistort_points,
)
from .triangulation import (
    refine_reprojection,
    reprojection_error,
    triangulate,
    triangulate_ransac,
    usable_views,
)

__all__ = [
    "Camera",
    "distort_normalized",
    "distortion_jacobian",
    "epipolar_distance",
    "epipolar_lines",
    "fundamental_from_cameras",
    "fundamental_from_projections",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "point_line_distance",
    "procrustes",
    "procrustes_align",
    "project_points",
    "refine_reprojection",
    "reprojection_error",
    "sampson_distance",
    "symmetric_epipolar_distance",
    "triangulate",
    "triangulate_ransac",
    "undistort_normalized",
    "undistort_points",
    "usable_views",
]
