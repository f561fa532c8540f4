"""Numpy camera helpers for writing and checking datasets in the common format.

Converters and the studio derive the 2D annotations of a sample from its 3D joints with
:func:`complete_annotations` (``joints2d``, ``visibility``, ``bbox``); :func:`resize_intrinsics`
keeps ``K`` consistent when views are resized to the dataset's one image size, and
:func:`mvbook.data.verify.verify_dataset` reprojects stored joints with
:func:`project_points_np`. They work on numpy float64 arrays (no torch, no autograd): the
differentiable counterparts for models are in :mod:`mvbook.geometry`.

Conventions (DESIGN.md): millimetres, ``x_cam = R @ X + t``; pixel ``(u, v)`` with ``(0, 0)``
the centre of the top-left pixel; image sizes ``(width, height)``; distortion
``(k1, k2, p1, p2, k3)`` of the OpenCV model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def project_points_np(
    X: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, dist: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points with the OpenCV model (numpy, float64).

    Args:
        X: ``(..., N, 3)`` world points, mm.
        K, R: ``(..., 3, 3)``; t: ``(..., 3)`` mm; dist: ``(..., 5)`` (k1, k2, p1, p2, k3) or None.
            Leading dims broadcast against those of ``X``.

    Returns:
        ``(uv (..., N, 2) px, depth (..., N) mm)``; points with depth <= 0 get NaN ``uv``.
    """
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    Xc = np.einsum("...ij,...nj->...ni", R, X) + t[..., None, :]
    z = Xc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = Xc[..., 0] / z
        y = Xc[..., 1] / z
    if dist is not None:
        d = np.asarray(dist, dtype=np.float64)
        k1, k2, p1, p2, k3 = (d[..., i : i + 1] for i in range(5))
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x, y = xd, yd
    u = K[..., 0, 0, None] * x + K[..., 0, 1, None] * y + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * y + K[..., 1, 2, None]
    uv = np.stack([u, v], axis=-1)
    uv[~(z > 0)] = np.nan
    return uv, z


def resize_intrinsics(
    K: np.ndarray, old_size: Sequence[int], new_size: Sequence[int]
) -> np.ndarray:
    """``K`` of an image resized from ``old_size`` to ``new_size`` (both ``(W, H)``).

    With pixel centres at integer coordinates, a scale ``s`` maps ``u -> (u + 0.5) s - 0.5``.
    """
    K = np.array(K, dtype=np.float64, copy=True)
    sx = new_size[0] / old_size[0]
    sy = new_size[1] / old_size[1]
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    K[..., 0, 2] += 0.5 * sx - 0.5
    K[..., 1, 2] += 0.5 * sy - 0.5
    return K


def bbox_from_joints2d(
    joints2d: np.ndarray,
    mask: np.ndarray,
    image_size: Sequence[int] | None = None,
    margin: float = 0.15,
) -> np.ndarray:
    """Boxes ``(..., 4)`` (x0, y0, x1, y1) px around the masked joints, enlarged by ``margin``.

    Args:
        joints2d: ``(..., J, 2)`` px. mask: ``(..., J)`` bool (joints to use).
        image_size: ``(W, H)`` to clip to, or None. Boxes with no masked joint are zeros.
    """
    j = np.asarray(joints2d, dtype=np.float64)
    m = np.asarray(mask, dtype=bool) & np.isfinite(j).all(-1)
    big = np.where(m[..., None], j, np.inf)
    small = np.where(m[..., None], j, -np.inf)
    lo = big.min(-2)
    hi = small.max(-2)
    any_ = m.any(-1)
    size = np.where(any_[..., None], hi - lo, 0.0)
    lo = lo - margin * size
    hi = hi + margin * size
    box = np.concatenate([lo, hi], -1)
    if image_size is not None:
        W, H = image_size
        box[..., 0::2] = box[..., 0::2].clip(-0.5, W - 0.5)
        box[..., 1::2] = box[..., 1::2].clip(-0.5, H - 0.5)
    box[~any_] = 0.0
    return box.astype(np.float32)


def complete_annotations(
    joints3d: np.ndarray,
    person_valid: np.ndarray,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    dist: np.ndarray,
    image_size: Sequence[int],
    joints3d_valid: np.ndarray | None = None,
    margin: float = 0.15,
) -> dict[str, np.ndarray]:
    """Derive ``joints2d``, ``visibility`` and ``bbox`` of one sample from its 3D joints.

    Args:
        joints3d: ``(P, J, 3)`` mm; person_valid: ``(P,)``; K, R: ``(C, 3, 3)``; t: ``(C, 3)``;
            dist: ``(C, 5)``; image_size ``(W, H)``; joints3d_valid ``(P, J)`` or None (all valid).

    Returns:
        dict with ``joints2d (C, P, J, 2)`` float32 (zeros for padded persons and joints behind
        a camera), ``visibility (C, P, J)`` (valid, in front, inside the image) and
        ``bbox (C, P, 4)``.
    """
    joints3d = np.asarray(joints3d, dtype=np.float64)
    pv = np.asarray(person_valid, dtype=bool)
    P, J, _ = joints3d.shape
    jv = np.ones((P, J), bool) if joints3d_valid is None else np.asarray(joints3d_valid, bool)
    jv = jv & pv[:, None]
    X = joints3d.reshape(1, P * J, 3)
    uv, z = project_points_np(X, K, R, t, dist)  # (C, P*J, 2)
    C = uv.shape[0]
    uv = uv.reshape(C, P, J, 2)
    z = z.reshape(C, P, J)
    W, H = image_size
    inside = (
        (z > 0)
        & (uv[..., 0] >= -0.5)
        & (uv[..., 0] <= W - 0.5)
        & (uv[..., 1] >= -0.5)
        & (uv[..., 1] <= H - 0.5)
    )
    vis = inside & jv[None]
    keep = (z > 0) & pv[None, :, None]
    joints2d = np.where(keep[..., None], np.nan_to_num(uv), 0.0).astype(np.float32)
    bbox = bbox_from_joints2d(uv, vis, image_size, margin)
    return {"joints2d": joints2d, "visibility": vis, "bbox": bbox}


__all__ = [
    "bbox_from_joints2d",
    "complete_annotations",
    "project_points_np",
    "resize_intrinsics",
]
