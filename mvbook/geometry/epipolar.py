"""Epipolar geometry: fundamental matrices, epipolar lines and distances (batched).

Convention: ``F`` maps points of image ``a`` to lines of image ``b``:
``x_b^T F x_a = 0`` for corresponding (undistorted) pixels ``x = (u, v, 1)``, the order of
``kornia.geometry.epipolar`` and OpenCV. Fundamental matrices returned here have unit
Frobenius norm; every distance below is invariant to the scale of ``F``.

Broadcasting: ``F (B..., 3, 3)`` and points ``(..., N, 2)``; ``...`` broadcasts against ``B``.
Distances are in pixels (``squared=True``: pixels squared). NaN policy: a NaN in a point, a
line or ``F`` gives a NaN distance for the points it touches (never 0, which would read as a
perfect match); infinite inputs give NaN or ``inf``, never a finite distance.
"""

from __future__ import annotations

from typing import Any

import torch

from ..validation import as_float_tensor, broadcast_batch, check_shape
from .camera import Camera
from .triangulation import _camera_centres_h

__all__ = [
    "fundamental_from_projections",
    "fundamental_from_cameras",
    "epipolar_lines",
    "point_line_distance",
    "epipolar_distance",
    "symmetric_epipolar_distance",
    "sampson_distance",
]


def _homogeneous(uv: torch.Tensor) -> torch.Tensor:
    return torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)


def _check_uv(uv: Any, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    uv = as_float_tensor(uv, name, dtype=None if like is None else like.dtype,
                         device=None if like is None else like.device)
    check_shape(uv, name, "(..., N, 2)")
    return uv


def _check_F(F: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    F = as_float_tensor(F, "F", device=None if like is None else like.device)
    check_shape(F, "F", "(..., 3, 3)")
    return F


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` with a zero (not NaN) gradient at ``x = 0``; NaN stays NaN."""
    pos = x > 0
    out = torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))
    return torch.where(torch.isnan(x), x, out)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``inf`` where ``den == 0`` (``num`` > 0) and finite gradients elsewhere.

    NaN in ``num`` or ``den`` gives NaN (never a distance of 0, which would read as a match).
    """
    ok = den > 0
    out = num / torch.where(ok, den, torch.ones_like(den))
    out = torch.where(ok, out, torch.where(num > 0, torch.full_like(out, float("inf")),
                                           torch.zeros_like(out)))
    nan = torch.isnan(num) | torch.isnan(den)
    return torch.where(nan, torch.full_like(out, float("nan")), out)


def fundamental_from_projections(P_a: Any, P_b: Any) -> torch.Tensor:
    """Fundamental matrix of two projection matrices (Hartley & Zisserman eq. 17.3).

    ``F[i, j] = det([P_a without row j ; P_b without row i])`` with the cyclic row order of
    HZ, the same construction as ``kornia.geometry.epipolar.fundamental_from_projections``,
    then scaled to unit Frobenius norm (coincident camera centres give ``F = 0``).

    Args:
        P_a, P_b: ``(..., 3, 4)`` projection matrices (broadcast).

    Returns:
        ``(..., 3, 3)`` with ``x_b^T F x_a = 0``.
    """
    Pa = as_float_tensor(P_a, "P_a")
    Pb = as_float_tensor(P_b, "P_b", device=Pa.device)
    check_shape(Pa, "P_a", "(..., 3, 4)")
    check_shape(Pb, "P_b", "(..., 3, 4)")
    batch = broadcast_batch({"P_a": tuple(Pa.shape[:-2]), "P_b": tuple(Pb.shape[:-2])})
    dtype = torch.promote_types(Pa.dtype, Pb.dtype)
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    Pa = Pa.to(work).expand(*batch, 3, 4)
    Pb = Pb.to(work).expand(*batch, 3, 4)
    # Move the world origin to the midpoint of the camera centres (a translation has
    # determinant 1, so F is unchanged) to keep the determinants well conditioned, and
    # detect coincident centres, for which F = 0.
    ca, cb = _camera_centres_h(Pa), _camera_centres_h(Pb)
    finite = (ca[..., 3].abs() > 0) & (cb[..., 3].abs() > 0)
    one = torch.ones_like(ca[..., 3])
    Ca = ca[..., :3] / torch.where(finite, ca[..., 3], one)[..., None]
    Cb = cb[..., :3] / torch.where(finite, cb[..., 3], one)[..., None]
    mid = torch.where(finite[..., None], 0.5 * (Ca + Cb), torch.zeros_like(Ca))
    coincident = finite & ((Ca - Cb).norm(dim=-1) <= 1e-9 * (Ca.norm(dim=-1) + Cb.norm(dim=-1)))
    Pa = torch.cat([Pa[..., :3], Pa[..., 3:] + Pa[..., :3] @ mid[..., :, None]], dim=-1)
    Pb = torch.cat([Pb[..., :3], Pb[..., 3:] + Pb[..., :3] @ mid[..., :, None]], dim=-1)
    # rows kept when removing row k, in cyclic order: (1, 2), (2, 0), (0, 1)
    keep = torch.tensor([[1, 2], [2, 0], [0, 1]], device=Pa.device)
    Xs = Pa[..., keep, :]  # (..., 3, 2, 4): X_1, X_2, X_3
    Ys = Pb[..., keep, :]
    # M[i, j] = vstack(X_j, Y_i): (..., 3, 3, 4, 4)
    M = torch.cat([
        Xs[..., None, :, :, :].expand(*batch, 3, 3, 2, 4),
        Ys[..., :, None, :, :].expand(*batch, 3, 3, 2, 4),
    ], dim=-2)
    F = torch.linalg.det(M)
    F = torch.where(coincident[..., None, None], torch.zeros_like(F), F)
    # scale: divide by the largest entry first (entries can be ~1e15 in pixel/mm units)
    amax = F.abs().amax(dim=(-2, -1), keepdim=True)
    F = F / torch.where(amax > 0, amax, torch.ones_like(amax))
    norm = F.square().sum(dim=(-2, -1), keepdim=True).sqrt()
    F = F / torch.where(norm > 0, norm, torch.ones_like(norm))
    return F.to(dtype)


def fundamental_from_cameras(cam_a: Camera, cam_b: Camera) -> torch.Tensor:
    """Fundamental matrix from two :class:`Camera` (batch shapes broadcast), ``(..., 3, 3)``.

    It relates *undistorted* pixels (``Camera.undistort_points``); unit Frobenius norm.
    """
    if not isinstance(cam_a, Camera):
        raise TypeError(f"cam_a must be a Camera, got {type(cam_a).__name__}")
    if not isinstance(cam_b, Camera):
        raise TypeError(f"cam_b must be a Camera, got {type(cam_b).__name__}")
    return fundamental_from_projections(cam_a.P, cam_b.P)


def epipolar_lines(F: Any, uv_a: Any) -> torch.Tensor:
    """Epipolar lines in image ``b`` of points of image ``a``.

    Args:
        F: ``(B..., 3, 3)``; uv_a: ``(..., N, 2)`` pixels in image ``a``.

    Returns:
        ``(..., N, 3)`` lines ``(a, b, c)`` with ``a u + b v + c = 0`` and ``a^2 + b^2 = 1``, so
        ``l . (u, v, 1)`` is a signed distance in pixels (lines of a zero ``F`` stay zero).
    """
    uv_a = _check_uv(uv_a, "uv_a")
    F = _check_F(F, uv_a).to(uv_a.dtype)
    broadcast_batch({"uv_a": tuple(uv_a.shape[:-2]), "F": tuple(F.shape[:-2])})
    lines = _homogeneous(uv_a) @ F.transpose(-1, -2)
    n2 = lines[..., 0].square() + lines[..., 1].square()
    n = _safe_sqrt(n2)
    return lines / torch.where(n > 0, n, torch.ones_like(n))[..., None]


def point_line_distance(uv: Any, lines: Any) -> torch.Tensor:
    """Distance in pixels from points ``(..., N, 2)`` to lines ``(..., N, 3)`` (Yu et al. eq. 1).

    ``|a u + b v + c| / sqrt(a^2 + b^2)``; lines need not be normalized; a line with
    ``a = b = 0`` is at distance ``inf`` (``0`` if also ``c = 0``).
    """
    uv = _check_uv(uv, "uv")
    lines = as_float_tensor(lines, "lines", dtype=uv.dtype, device=uv.device)
    check_shape(lines, "lines", "(..., 3) = (a, b, c)")
    try:
        torch.broadcast_shapes(uv.shape[:-1], lines.shape[:-1])
    except RuntimeError as exc:
        raise ValueError(f"uv {tuple(uv.shape)} and lines {tuple(lines.shape)} do not broadcast "
                         "(expected (..., N, 2) and (..., N, 3))") from exc
    num = (lines[..., :2] * uv).sum(-1) + lines[..., 2]
    den = _safe_sqrt(lines[..., 0].square() + lines[..., 1].square())
    return _safe_div(num.abs(), den)


def epipolar_distance(uv_a: Any, uv_b: Any, F: Any) -> torch.Tensor:
    """Distance (pixels) of ``uv_b`` to the epipolar line of ``uv_a`` (Yu et al. 2021, eq. 1).

    ``|x_b^T F x_a| / sqrt((F x_a)_1^2 + (F x_a)_2^2)``, shape ``(..., N)``.
    """
    uv_a = _check_uv(uv_a, "uv_a")
    uv_b = _check_uv(uv_b, "uv_b", uv_a)
    F = _check_F(F, uv_a).to(uv_a.dtype)
    lines = _homogeneous(uv_a) @ F.transpose(-1, -2)
    return point_line_distance(uv_b, lines)


def _epipolar_terms(uv_a: Any, uv_b: Any, F: Any
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    uv_a = _check_uv(uv_a, "uv_a")
    uv_b = _check_uv(uv_b, "uv_b", uv_a)
    F = _check_F(F, uv_a).to(uv_a.dtype)
    try:
        torch.broadcast_shapes(uv_a.shape, uv_b.shape)
    except RuntimeError as exc:
        raise ValueError(f"uv_a {tuple(uv_a.shape)} and uv_b {tuple(uv_b.shape)} do not "
                         "broadcast (expected matching (..., N, 2))") from exc
    broadcast_batch({"uv_a": tuple(uv_a.shape[:-2]), "uv_b": tuple(uv_b.shape[:-2]),
                     "F": tuple(F.shape[:-2])})
    xa = _homogeneous(uv_a)
    xb = _homogeneous(uv_b)
    Fxa = xa @ F.transpose(-1, -2)  # lines in b
    Ftxb = xb @ F  # lines in a
    alg = (xb * Fxa).sum(-1)
    return alg, Fxa, Ftxb


def symmetric_epipolar_distance(uv_a: Any, uv_b: Any, F: Any, squared: bool = True
                                ) -> torch.Tensor:
    """Symmetric epipolar distance (Hartley & Zisserman eq. 11.10), shape ``(..., N)``.

    ``d(x_b, F x_a)^2 + d(x_a, F^T x_b)^2`` in pixels squared; ``squared=False`` returns its
    square root (``0`` with zero gradient for exact matches). Same as
    ``kornia.geometry.epipolar.symmetrical_epipolar_distance``. A zero epipolar line gives
    ``inf``.
    """
    alg, Fxa, Ftxb = _epipolar_terms(uv_a, uv_b, F)
    a2 = alg.square()
    d = _safe_div(a2, Fxa[..., 0].square() + Fxa[..., 1].square()) + _safe_div(
        a2, Ftxb[..., 0].square() + Ftxb[..., 1].square())
    return d if squared else _safe_sqrt(d)


def sampson_distance(uv_a: Any, uv_b: Any, F: Any, squared: bool = True) -> torch.Tensor:
    """Sampson distance (first-order geometric error, HZ eq. 11.9), shape ``(..., N)``.

    ``(x_b^T F x_a)^2 / ((F x_a)_1^2 + (F x_a)_2^2 + (F^T x_b)_1^2 + (F^T x_b)_2^2)`` in pixels
    squared; ``squared=False`` returns its square root. Same as
    ``kornia.geometry.epipolar.sampson_epipolar_distance``.
    """
    alg, Fxa, Ftxb = _epipolar_terms(uv_a, uv_b, F)
    den = Fxa[..., 0].square() + Fxa[..., 1].square() + Ftxb[..., 0].square() + Ftxb[..., 1].square()
    d = _safe_div(alg.square(), den)
    return d if squared else _safe_sqrt(d)
