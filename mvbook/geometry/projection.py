"""Pinhole projection with radial-tangential lens distortion, batched and differentiable.

Conventions (DESIGN.md): world units mm, ``x_cam = R @ X + t``, ``P = K [R | t]``; pixels
``(u, v)`` with ``(0, 0)`` the centre of the top-left pixel, ``u`` to the right, ``v`` down.

Broadcasting rule used by every function here: camera parameters carry batch dims ``B``
(``K (B..., 3, 3)``, ``R (B..., 3, 3)``, ``t (B..., 3)``, ``dist (B..., 5)``) and points carry
``(..., N, d)``; the points' leading dims ``...`` broadcast against ``B``. So projecting
``J`` joints into ``C`` views is ``project_points(X[..., None, :, :], K, R, t)`` with
``K (C, 3, 3)`` giving ``(..., C, J, 2)``.

Distortion model: the OpenCV / Human3.6M radial-tangential model with coefficients
``dist = (k1, k2, p1, p2, k3)`` acting on normalized coordinates ``(x, y) = (X_c/Z_c, Y_c/Z_c)``::

    r2 = x^2 + y^2,  radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

(Human3.6M's metadata stores ``k = (k1, k2, k3)`` and ``p = (p1, p2)`` separately; its own
reference code applies the tangential term with a different factor convention, which
changes projections by well under a pixel. Reorder to ``(k1, k2, p1, p2, k3)`` when converting.)

Points with depth ``Z_c <= 0`` (on or behind the camera plane) are reported: their pixel
coordinates are NaN and their depth is available from :func:`project_points` with
``return_depth=True``. They are never silently projected through the camera. Gradients
stay finite for the valid points (the invalid ones are masked before any division).
"""

from __future__ import annotations

import torch

from ..validation import as_float_tensor, broadcast_batch, check_positive, check_shape

__all__ = [
    "distort_normalized",
    "undistort_normalized",
    "distortion_jacobian",
    "pixel_to_normalized",
    "normalized_to_pixel",
    "project_points",
    "undistort_points",
]


def _check_dist(dist: torch.Tensor | None, name: str = "dist") -> torch.Tensor | None:
    if dist is None:
        return None
    dist = as_float_tensor(dist, name)
    check_shape(dist, name, "(..., 5) = (k1, k2, p1, p2, k3)")
    return dist


def _check_points(x: torch.Tensor, name: str, d: int) -> torch.Tensor:
    x = as_float_tensor(x, name)
    check_shape(x, name, f"(..., N, {d})")
    return x


def _split_dist(dist: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Coefficients ``(k1, k2, p1, p2, k3)`` as tensors shaped ``(B..., 1)`` to meet ``(..., N)``."""
    dist = dist.to(dtype=ref.dtype, device=ref.device)
    return tuple(dist[..., i : i + 1] for i in range(5))


def distort_normalized(xn: torch.Tensor, dist: torch.Tensor | None) -> torch.Tensor:
    """Apply radial-tangential distortion to normalized image coordinates.

    Args:
        xn: ``(..., N, 2)`` undistorted normalized coordinates ``(X_c/Z_c, Y_c/Z_c)`` (unitless).
        dist: ``(B..., 5)`` coefficients ``(k1, k2, p1, p2, k3)`` or ``None`` (no distortion);
            ``B`` broadcasts against the points' leading dims ``...``.

    Returns:
        ``(..., N, 2)`` distorted normalized coordinates.
    """
    xn = _check_points(xn, "xn", 2)
    dist = _check_dist(dist)
    if dist is None:
        return xn
    broadcast_batch({"xn": tuple(xn.shape[:-2]), "dist": tuple(dist.shape[:-1])})
    k1, k2, p1, p2, k3 = _split_dist(dist, xn)
    x, y = xn[..., 0], xn[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def distortion_jacobian(xn: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Jacobian ``d x_d / d x_n`` of :func:`distort_normalized`, shape ``(..., N, 2, 2)``."""
    xn = _check_points(xn, "xn", 2)
    dist = _check_dist(dist)
    if dist is None:
        raise ValueError("dist must be a (..., 5) tensor, got None")
    k1, k2, p1, p2, k3 = _split_dist(dist, xn)
    x, y = xn[..., 0], xn[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    drad = k1 + r2 * (2 * k2 + 3 * k3 * r2)
    j00 = radial + 2 * x * x * drad + 2 * p1 * y + 6 * p2 * x
    j01 = 2 * x * y * drad + 2 * p1 * x + 2 * p2 * y
    j11 = radial + 2 * y * y * drad + 6 * p1 * y + 2 * p2 * x
    row0 = torch.stack([j00, j01], dim=-1)
    row1 = torch.stack([j01, j11], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def undistort_normalized(
    xd: torch.Tensor, dist: torch.Tensor | None, iterations: int = 20, newton_steps: int = 3
) -> torch.Tensor:
    """Invert :func:`distort_normalized` iteratively (differentiable, batched).

    Runs ``iterations`` fixed-point steps (OpenCV's ``undistortPoints`` scheme)
    ``x <- (x_d - tangential(x)) / radial(x)``, then ``newton_steps`` Newton steps with the
    analytic 2x2 Jacobian, each accepted only where it lowers the residual. Converges to
    machine precision for distortions of real lenses inside the image.

    Args:
        xd: ``(..., N, 2)`` distorted normalized coordinates.
        dist: ``(B..., 5)`` coefficients or ``None`` (returns ``xd`` unchanged).
        iterations: fixed-point iterations (``>= 0``).
        newton_steps: Newton refinement steps (``>= 0``).

    Returns:
        ``(..., N, 2)`` undistorted normalized coordinates.
    """
    xd = _check_points(xd, "xd", 2)
    dist = _check_dist(dist)
    check_positive(iterations, "iterations", integer=True, strict=False)
    check_positive(newton_steps, "newton_steps", integer=True, strict=False)
    if dist is None:
        return xd
    broadcast_batch({"xd": tuple(xd.shape[:-2]), "dist": tuple(dist.shape[:-1])})
    k1, k2, p1, p2, k3 = _split_dist(dist, xd)
    x0, y0 = xd[..., 0], xd[..., 1]
    x, y = x0, y0
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x, y = (x0 - dx) / radial, (y0 - dy) / radial
    xn = torch.stack([x, y], dim=-1)
    for _ in range(newton_steps):
        res = distort_normalized(xn, dist) - xd
        jac = distortion_jacobian(xn, dist)
        det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
        ok_det = det.abs() > 1e-12
        det_safe = torch.where(ok_det, det, torch.ones_like(det))
        step_x = (jac[..., 1, 1] * res[..., 0] - jac[..., 0, 1] * res[..., 1]) / det_safe
        step_y = (-jac[..., 1, 0] * res[..., 0] + jac[..., 0, 0] * res[..., 1]) / det_safe
        cand = xn - torch.stack([step_x, step_y], dim=-1)
        new_res = distort_normalized(cand, dist) - xd
        better = ok_det & (new_res.square().sum(-1) < res.square().sum(-1))
        xn = torch.where(better[..., None], cand, xn)
    return xn


def pixel_to_normalized(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels ``(..., N, 2)`` to normalized coordinates ``K^-1 [u, v, 1]`` (no distortion)."""
    uv = _check_points(uv, "uv", 2)
    K = as_float_tensor(K, "K", dtype=uv.dtype)
    check_shape(K, "K", "(..., 3, 3)")
    broadcast_batch({"uv": tuple(uv.shape[:-2]), "K": tuple(K.shape[:-2])})
    K_inv = torch.linalg.inv(K)
    uvh = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    xh = uvh @ K_inv.transpose(-1, -2)
    return xh[..., :2] / xh[..., 2:]


def normalized_to_pixel(xn: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Normalized coordinates ``(..., N, 2)`` to pixels ``K [x, y, 1]`` (no distortion)."""
    xn = _check_points(xn, "xn", 2)
    K = as_float_tensor(K, "K", dtype=xn.dtype)
    check_shape(K, "K", "(..., 3, 3)")
    broadcast_batch({"xn": tuple(xn.shape[:-2]), "K": tuple(K.shape[:-2])})
    xh = torch.cat([xn, torch.ones_like(xn[..., :1])], dim=-1)
    uvw = xh @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:]


def project_points(
    X: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    dist: torch.Tensor | None = None,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Project world points (mm) to pixels, with optional lens distortion.

    Args:
        X: ``(..., N, 3)`` world points in mm.
        K: ``(B..., 3, 3)`` intrinsics (pixels); ``R``: ``(B..., 3, 3)`` world-to-camera
            rotation; ``t``: ``(B..., 3)`` translation in mm (``x_cam = R X + t``).
        dist: ``(B..., 5)`` distortion ``(k1, k2, p1, p2, k3)`` or ``None``.
        return_depth: also return the camera-frame depth ``Z_c``.

    Returns:
        ``uv`` of shape ``broadcast(..., B) + (N, 2)`` in pixels; points with depth ``<= 0``
        (or NaN input) give NaN. With ``return_depth=True``, ``(uv, depth)`` where ``depth``
        has shape ``(..., N)`` in mm (negative behind the camera).
    """
    X = _check_points(X, "X", 3)
    K = as_float_tensor(K, "K", dtype=X.dtype)
    R = as_float_tensor(R, "R", dtype=X.dtype)
    t = as_float_tensor(t, "t", dtype=X.dtype)
    check_shape(K, "K", "(..., 3, 3)")
    check_shape(R, "R", "(..., 3, 3)")
    check_shape(t, "t", "(..., 3)")
    dist = _check_dist(dist)
    shapes = {"X": tuple(X.shape[:-2]), "K": tuple(K.shape[:-2]), "R": tuple(R.shape[:-2]),
              "t": tuple(t.shape[:-1])}
    if dist is not None:
        shapes["dist"] = tuple(dist.shape[:-1])
    broadcast_batch(shapes)
    Xc = X @ R.transpose(-1, -2) + t[..., None, :]
    return _camera_to_pixel(Xc, K, dist, return_depth)


def _camera_to_pixel(
    Xc: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None, return_depth: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    z = Xc[..., 2]
    valid = z > 0
    z_safe = torch.where(valid, z, torch.ones_like(z))
    xn = Xc[..., :2] / z_safe[..., None]
    xn = torch.where(valid[..., None], xn, torch.zeros_like(xn))
    if dist is not None:
        xn = distort_normalized(xn, dist.to(Xc.dtype))
    xh = torch.cat([xn, torch.ones_like(xn[..., :1])], dim=-1)
    uvw = xh @ K.to(Xc.dtype).transpose(-1, -2)
    uv = uvw[..., :2] / uvw[..., 2:]
    uv = torch.where(valid[..., None], uv, torch.full_like(uv, float("nan")))
    if return_depth:
        return uv, z
    return uv


def undistort_points(
    uv: torch.Tensor,
    K: torch.Tensor,
    dist: torch.Tensor | None,
    iterations: int = 20,
    normalized: bool = False,
) -> torch.Tensor:
    """Remove lens distortion from pixel coordinates (iterative, differentiable).

    Args:
        uv: ``(..., N, 2)`` distorted pixel coordinates as seen in the image.
        K: ``(B..., 3, 3)`` intrinsics; ``dist``: ``(B..., 5)`` or ``None``.
        iterations: fixed-point iterations before Newton polishing (see
            :func:`undistort_normalized`).
        normalized: return normalized coordinates ``(x, y)`` instead of pixels.

    Returns:
        ``(..., N, 2)`` undistorted pixels (the ideal pinhole image with the same ``K``, so
        they can be triangulated with ``P = K [R | t]``), or normalized coordinates.
        Equivalent to ``cv2.undistortPoints(uv, K, dist, P=K)`` (``P=None`` for normalized).
    """
    uv = _check_points(uv, "uv", 2)
    K = as_float_tensor(K, "K", dtype=uv.dtype)
    check_shape(K, "K", "(..., 3, 3)")
    dist = _check_dist(dist)
    xd = pixel_to_normalized(uv, K)
    xn = undistort_normalized(xd, dist, iterations=iterations)
    if normalized:
        return xn
    return normalized_to_pixel(xn, K)
