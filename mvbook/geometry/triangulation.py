"""Batched, confidence-weighted, differentiable triangulation.

- :func:`triangulate`: the direct linear transform (DLT) of Hartley & Zisserman (sec. 12.2)
  with per-view confidences multiplying the rows of the design matrix ``A`` (Iskakov et al.
  2019, eq. 4), batched over any leading shape and over points, differentiable.
- :func:`triangulate_ransac`: hypotheses from view subsets evaluated as one batch, inliers by
  reprojection error, re-triangulation with the inliers.
- :func:`refine_reprojection`: batched Levenberg-Marquardt on the reprojection error.
- :func:`reprojection_error`: pixel distances between projected 3D points and 2D points.

Shapes: ``points2d (..., C, N, 2)`` pixels (undistorted: the image of ``P``), ``P (..., C, 3, 4)``
(``P = K [R | t]``, mm to pixels), ``weights (..., C, N)``; leading dims broadcast. No Python
loop runs over points or views (very large point sets are processed in vectorized blocks of
16,384 points so the working set stays in cache).

How the DLT is solved. For view ``c`` with rows ``p1, p2, p3`` of ``P_c`` and point ``(u, v)``
the two rows ``w_c (u p3 - p1)`` and ``w_c (v p3 - p2)`` enter ``A (2C x 4)``; the homogeneous
point is the right singular vector of ``A`` for its smallest singular value, i.e. the
eigenvector of ``B = A^T A`` for its smallest eigenvalue. ``B`` is accumulated in float64
(whatever the input dtype) so float32 inputs lose nothing to the squaring (``B`` of all
points is one matrix product: four per-point coefficients ``w^2 (u^2 + v^2, -u, -v, 1)``
times four per-view 4x4 matrices built from ``P``), and its smallest
eigenvector is found by a vectorized inverse iteration (4x4 Cholesky written out
element-wise, so 100,000 points cost a few tensor operations rather than 100,000 LAPACK
calls); the rare points whose iteration has not converged are finished by
``torch.linalg.eigh``. The gradient is the analytic derivative of that eigenvector
(``dv = -(B - lambda I)^+ dB v``), the same as differentiating the SVD's singular vector.

Hartley normalization (``normalize=True``). An affine change of image coordinates
``x' = T_c x`` (``P' = T_c P``) with isotropic scale ``a_c`` only multiplies the rows of view
``c`` by ``a_c``: the translation part cancels. So the 2D normalization reduces to scaling
each ``P_c`` so that ``||p3[:3]|| = 1`` and its focal length ``sqrt(|det M|)`` is 1
(image coordinates measured in focal lengths, views of different resolution weigh alike).
In 3D, ``X = c + s X'`` with ``c`` the mean camera centre and ``s`` the RMS distance of the
centres from it, so that the unknowns are of order one. Both leave exact data's solution
unchanged and improve the conditioning (and accuracy under noise) of the linear system.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from ..validation import (
    as_float_tensor,
    broadcast_batch,
    check_choice,
    check_finite,
    check_positive,
    check_shape,
    common_float_dtype,
)

__all__ = [
    "triangulate",
    "triangulate_ransac",
    "refine_reprojection",
    "reprojection_error",
    "usable_views",
]

_DEGENERATE_CHOICES = ("nan", "raise")
_CHUNK = 16384  # points per block in triangulate


# ---------------------------------------------------------------------------------------
# input handling
def _prepare(
    points2d: Any, P: Any, weights: Any | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate and broadcast ``points2d (..., C, N, 2)``, ``P (..., C, 3, 4)``, ``weights``."""
    device = None
    for v in (points2d, P, weights):
        if isinstance(v, torch.Tensor):
            device = v.device
            break
    pts = as_float_tensor(points2d, "points2d", device=device)
    Pm = as_float_tensor(P, "P", device=device)
    check_shape(pts, "points2d", "(..., C, N, 2)")
    check_shape(Pm, "P", "(..., C, 3, 4)")
    if Pm.device != pts.device:
        raise ValueError(f"P is on {Pm.device} but points2d is on {pts.device}")
    C = pts.shape[-3]
    if Pm.shape[-3] != C:
        raise ValueError(
            f"P has {Pm.shape[-3]} views (shape {tuple(Pm.shape)}) but points2d has {C} "
            f"(shape {tuple(pts.shape)}); the view dim is -3 in both")
    check_finite(Pm, "P")
    w = None
    if weights is not None:
        w = as_float_tensor(weights, "weights", device=pts.device)
        try:
            torch.broadcast_shapes(w.shape, pts.shape[:-1])
        except RuntimeError as exc:
            raise ValueError(
                f"weights must broadcast to points2d.shape[:-1] = (..., C, N) = "
                f"{tuple(pts.shape[:-1])}, got {tuple(w.shape)}") from exc
        if w.dim() >= 2 and w.shape[-2] not in (1, C):
            raise ValueError(f"weights must have shape (..., C, N) with C = {C}, got {tuple(w.shape)}")
        if bool((w < 0).any()) or bool(torch.isnan(w).any()):
            raise ValueError("weights must be >= 0 (and not NaN); use 0 to ignore a view")
    dtype = common_float_dtype(pts, Pm, w)
    broadcast_batch({"points2d": tuple(pts.shape[:-3]), "P": tuple(Pm.shape[:-3]),
                     **({} if w is None or w.dim() < 3 else {"weights": tuple(w.shape[:-2])})})
    return pts.to(dtype), Pm.to(dtype), None if w is None else w.to(dtype)


def _check_degenerate_option(on_degenerate: str) -> None:
    check_choice(on_degenerate, "on_degenerate", _DEGENERATE_CHOICES)


def usable_views(points2d: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Which views can be used per point: weight ``> 0`` and finite 2D point, ``(..., C, N)`` bool."""
    usable = torch.isfinite(points2d).all(dim=-1)
    if weights is not None:
        usable = usable & (weights > 0)
    return usable


# ---------------------------------------------------------------------------------------
# normalization
def _camera_centres_h(P: torch.Tensor) -> torch.Tensor:
    """Homogeneous camera centres (right null vectors of ``P``) by 3x3 cofactors, ``(..., 4)``."""
    cols = [P[..., :, i] for i in range(4)]

    def det3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (a * torch.linalg.cross(b, c)).sum(-1)

    return torch.stack([
        det3(cols[1], cols[2], cols[3]),
        -det3(cols[0], cols[2], cols[3]),
        det3(cols[0], cols[1], cols[3]),
        -det3(cols[0], cols[1], cols[2]),
    ], dim=-1)


def _normalize_projections(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hartley-normalize ``P (..., C, 3, 4)``.

    Returns ``(P'', c, s)`` with ``P'' = (P_c / (||m3|| f_c)) H`` where ``H = [[s I, c], [0, 1]]``
    so a solution ``X'`` of ``P''`` maps to ``X = c + s X'``; ``c (..., 3)``, ``s (..., 1)``.
    """
    m3 = P[..., 2, :3].norm(dim=-1).clamp_min(torch.finfo(P.dtype).tiny)
    Pn = P / m3[..., None, None]
    f = torch.linalg.det(Pn[..., :3]).abs().sqrt().clamp_min(torch.finfo(P.dtype).tiny)
    Pn = Pn / f[..., None, None]
    ch = _camera_centres_h(Pn)
    w = ch[..., 3:]
    finite_c = w.abs() > 1e-12 * ch[..., :3].abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)
    centres = torch.where(finite_c, ch[..., :3] / torch.where(finite_c, w, torch.ones_like(w)),
                          torch.zeros_like(ch[..., :3]))
    n_fin = finite_c.to(P.dtype).sum(dim=-2).clamp_min(1)
    c = (centres * finite_c).sum(dim=-2) / n_fin
    d2 = ((centres - c[..., None, :]).square().sum(-1, keepdim=True) * finite_c).sum(-2) / n_fin
    s = d2.sqrt()
    s = torch.where(s > 0, s, torch.ones_like(s))
    # P'' = Pn @ H with H = [[s I, c], [0, 1]]
    Pnn = torch.cat([Pn[..., :3] * s[..., None, :, None],
                     (Pn[..., :3] @ c[..., None, :, None]) + Pn[..., 3:]], dim=-1)
    return Pnn, c, s


# ---------------------------------------------------------------------------------------
# smallest eigenvector of batched symmetric PSD 4x4 matrices, stored packed and entries-first:
# ``Bp (..., 10, N)`` holds the lower triangle (row-major: 00, 10, 11, 20, 21, 22, 30, 31, 32,
# 33) of point ``n`` in column ``n``, so every element-wise operation below runs over
# contiguous memory and only the 10 distinct entries are computed.
_TRIL = [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2), (3, 3)]
_PACK = {ij: k for k, ij in enumerate(_TRIL)}
_TRIL_FLAT = [4 * i + j for i, j in _TRIL]  # packed entry -> index in a flattened 4x4
_UNPACK = [_PACK[(max(i, j), min(i, j))] for i in range(4) for j in range(4)]  # 4x4 -> packed
_DIAG = [_PACK[(i, i)] for i in range(4)]


def _cholesky_solver(Bp: torch.Tensor):  # noqa: ANN202
    """Element-wise Cholesky of ``B + 1e-13 tr(B) I``; returns a solver for 4-vectors.

    ``Bp (10, M)`` packed; the factor keeps reciprocal diagonals so the solves only multiply.
    """
    b00, b10, b11, b20, b21, b22, b30, b31, b32, b33 = Bp.unbind(0)
    shift = 1e-13 * (b00 + b11 + b22 + b33)
    tiny = 1e-300
    msub = lambda a, b, c: torch.addcmul(a, b, c, value=-1.0)  # a - b * c  # noqa: E731
    i00 = torch.rsqrt((b00 + shift).clamp_min(tiny))
    l10, l20, l30 = b10 * i00, b20 * i00, b30 * i00
    i11 = torch.rsqrt(msub(b11 + shift, l10, l10).clamp_min(tiny))
    l21 = msub(b21, l20, l10) * i11
    l31 = msub(b31, l30, l10) * i11
    i22 = torch.rsqrt(msub(msub(b22 + shift, l20, l20), l21, l21).clamp_min(tiny))
    l32 = msub(msub(b32, l30, l20), l31, l21) * i22
    i33 = torch.rsqrt(msub(msub(msub(b33 + shift, l30, l30), l31, l31), l32, l32).clamp_min(tiny))

    def solve(x: list[torch.Tensor] | None) -> list[torch.Tensor]:
        if x is None:  # x = e4: only the last forward-substitution entry is non-zero
            y3 = i33 * i33
            y2 = -(l32 * y3) * i22
            y1 = -torch.addcmul(l21 * y2, l31, y3) * i11
            y0 = -torch.addcmul(torch.addcmul(l10 * y1, l20, y2), l30, y3) * i00
            return [y0, y1, y2, y3]
        z0 = x[0] * i00
        z1 = msub(x[1], l10, z0) * i11
        z2 = msub(msub(x[2], l20, z0), l21, z1) * i22
        z3 = msub(msub(msub(x[3], l30, z0), l31, z1), l32, z2) * i33
        y3 = z3 * i33
        y2 = msub(z2, l32, y3) * i22
        y1 = msub(msub(z1, l21, y2), l31, y3) * i11
        y0 = msub(msub(msub(z0, l10, y1), l20, y2), l30, y3) * i00
        return [y0, y1, y2, y3]

    return solve


def _sumsq(x: list[torch.Tensor]) -> torch.Tensor:
    return torch.addcmul(torch.addcmul(torch.addcmul(x[0] * x[0], x[1], x[1]), x[2], x[2]),
                         x[3], x[3])


def _inverse_iteration(Bp: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Bp (10, M)`` -> unit vectors ``(4, M)`` and a bool ``(M,)`` of converged entries."""
    solve = _cholesky_solver(Bp)
    x: list[torch.Tensor] | None = None
    prev: list[torch.Tensor] | None = None
    for _ in range(max(iterations, 1)):
        y = solve(x)
        inv_norm = torch.rsqrt(_sumsq(y).clamp_min(1e-300))
        prev = x
        x = [yi * inv_norm for yi in y]
    assert x is not None
    if prev is None:
        return torch.stack(x), torch.zeros_like(x[0], dtype=torch.bool)
    # squared length of the last step (signs aligned); inverse iteration converges linearly,
    # so a last step below 1e-10 (an angle) leaves an error far below that
    dot = torch.addcmul(torch.addcmul(torch.addcmul(x[0] * prev[0], x[1], prev[1]), x[2], prev[2]),
                        x[3], prev[3])
    sign = torch.where(dot < 0, -1.0, 1.0).to(dot.dtype)
    step = [torch.addcmul(xi, sign, pi, value=-1.0) for xi, pi in zip(x, prev)]
    converged = _sumsq(step) < 1e-20
    return torch.stack(x), converged


def _smallest_eigvec_forward(Bp: torch.Tensor) -> torch.Tensor:
    """Unit eigenvectors ``(..., 4, N)`` of the smallest eigenvalue of packed ``Bp (..., 10, N)``.

    Vectorized shifted inverse iteration from ``e4`` (3 steps; a linear convergence factor of
    ``lambda_1 / lambda_2``, ~1e-5 for normalized triangulation); entries that have not
    converged get 16 more steps, then ``torch.linalg.eigh``. The sign is arbitrary.
    """
    shape = Bp.shape
    B2 = Bp.movedim(-2, 0).reshape(10, -1)
    v, ok = _inverse_iteration(B2, 3)
    if not bool(ok.all()):
        idx = (~ok).nonzero()[:, 0]
        v_sub, ok_sub = _inverse_iteration(B2[:, idx], 16)
        if not bool(ok_sub.all()):
            idx2 = (~ok_sub).nonzero()[:, 0]
            mats = B2[:, idx[idx2]].T[:, _UNPACK].reshape(-1, 4, 4)
            _, vecs = torch.linalg.eigh(mats)
            v_sub[:, idx2] = vecs[..., :, 0].T
        v[:, idx] = v_sub
    return v.reshape(4, *shape[:-2], shape[-1]).movedim(0, -2)


class _SmallestEigvec(torch.autograd.Function):
    """Smallest eigenvector of symmetric PSD ``B`` (packed entries-first), analytic gradient.

    For a simple eigenvalue ``lambda`` with unit eigenvector ``v``:
    ``dv = -(B - lambda I)^+ dB v``, so ``dL/dB = -sym((B - lambda I)^+ g v^T)``.
    """

    @staticmethod
    def forward(ctx: Any, Bp: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        v = _smallest_eigvec_forward(Bp.detach())
        ctx.save_for_backward(Bp, v)
        return v

    @staticmethod
    def backward(ctx: Any, grad_v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        Bp, v = ctx.saved_tensors
        B = Bp.movedim(-2, -1)[..., _UNPACK].unflatten(-1, (4, 4))  # (..., N, 4, 4)
        vv = v.movedim(-2, -1)  # (..., N, 4)
        g = grad_v.movedim(-2, -1)
        lam = ((B @ vv[..., :, None])[..., 0] * vv).sum(-1)
        tr = torch.diagonal(B, dim1=-2, dim2=-1).sum(-1)
        tr = torch.where(tr > 0, tr, torch.ones_like(tr))
        eye = torch.eye(4, dtype=B.dtype, device=B.device)
        M = B - lam[..., None, None] * eye + tr[..., None, None] * (vv[..., :, None] * vv[..., None, :])
        g_perp = g - vv * (vv * g).sum(-1, keepdim=True)
        y, _ = torch.linalg.solve_ex(M, g_perp[..., None])
        G = -(y * vv[..., None, :])
        # a packed off-diagonal entry stands for B_ij and B_ji: its gradient is G_ij + G_ji
        Gp = (G + G.transpose(-1, -2)).flatten(-2)[..., _TRIL_FLAT]
        Gp[..., _DIAG] = Gp[..., _DIAG] * 0.5
        return Gp.movedim(-1, -2)


def _normal_matrix(
    pts: torch.Tensor, P: torch.Tensor, w: torch.Tensor | None, usable: torch.Tensor
) -> torch.Tensor:
    """``B = A^T A`` of the weighted DLT design matrix, float64, packed ``(..., 10, N)``.

    For view ``c`` the rows ``w (u p3 - p1)`` and ``w (v p3 - p2)`` contribute
    ``w^2 [(u^2 + v^2) p3 p3^T - u (p3 p1^T + p1 p3^T) - v (p3 p2^T + p2 p3^T)
    + p1 p1^T + p2 p2^T]``: four per-point coefficients times four per-view 4x4 matrices,
    so ``B`` for all points is one matrix product over ``(view, coefficient)`` instead of
    ``N`` small ones. Unusable views (weight 0 or non-finite point) contribute nothing.
    """
    f64 = torch.float64
    all_usable = w is None and bool(usable.all())
    uv = pts if all_usable else torch.where(usable[..., None], pts, torch.zeros_like(pts))
    uv = uv.to(f64).movedim(-1, 0).contiguous()  # (2, ..., C, N)
    u, v = uv[0], uv[1]
    P = P.to(f64)
    p1, p2, p3 = P[..., 0, :], P[..., 1, :], P[..., 2, :]

    def outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a[..., :, None] * b[..., None, :]

    s31 = outer(p3, p1)
    s32 = outer(p3, p2)
    mats = torch.stack([
        outer(p3, p3),
        -(s31 + s31.transpose(-1, -2)),
        -(s32 + s32.transpose(-1, -2)),
        outer(p1, p1) + outer(p2, p2),
    ], dim=-3).flatten(-2)[..., _TRIL_FLAT]  # (..., C, 4, 10), for coefficients (r2, u, v, 1)
    if all_usable:
        # the constant coefficient is 1 for every point: add its matrices once
        coef = torch.stack([torch.addcmul(u * u, v, v), u, v], dim=-2)  # (..., C, 3, N)
        const = mats[..., 3, :].sum(-2)[..., :, None]  # (..., 10, 1)
        lin = mats[..., :3, :].flatten(-3, -2).transpose(-1, -2)  # (..., 10, 3C)
        return torch.matmul(lin, coef.flatten(-3, -2)) + const
    if w is None:
        w2 = usable.to(f64)
    else:
        w64 = torch.where(usable, w, torch.zeros_like(w)).to(f64)
        w2 = w64 * w64
    w2u = w2 * u
    w2v = w2 * v
    coef = torch.stack([torch.addcmul(w2u * u, w2v, v), w2u, w2v, w2.expand_as(w2u)], dim=-2)
    # sum over (view, coefficient): (..., 10, 4C) @ (..., 4C, N) -> (..., 10, N)
    return torch.matmul(mats.flatten(-3, -2).transpose(-1, -2), coef.flatten(-3, -2))


_DEGENERATE_B = torch.tensor([3.0, 0, 2, 0, 0, 1, 0, 0, 0, 0]) / 6  # packed diag(3, 2, 1, 0) / 6

# When the normal matrix loses the solution to rounding, the weighted rows themselves are solved
# (a float64 SVD of A, whose backward error is eps ||A|| rather than eps ||A||^2): for points
# whose weakest usable view has (w / w_max)^2 below _W2_RATIO, or whose B has diagonal entries
# more than _DIAG_RATIO apart (e.g. world coordinates of 1e6 mm and more with normalize=False).
_W2_RATIO = 1e-6
_DIAG_RATIO = 1e10


def _scale_weights(w: torch.Tensor, usable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights divided by each point's largest usable weight (the DLT is invariant to it), so
    that huge weights do not overflow ``w^2``; returns ``(w', non-finite)`` where
    ``non-finite (..., N)`` marks points with an infinite weight (their ``w'`` is 0)."""
    wz = torch.where(usable, w, torch.zeros_like(w))
    wmax = wz.amax(dim=-2, keepdim=True)
    inf = torch.isinf(wmax)
    ok = (wmax > 0) & ~inf
    w_s = torch.where(ok, wz / torch.where(ok, wmax, torch.ones_like(wmax)), torch.zeros_like(wz))
    return w_s, inf[..., 0, :]


def _needs_rows(Bp: torch.Tensor, w: torch.Tensor | None, usable: torch.Tensor) -> torch.Tensor:
    """Points ``(..., N)`` whose normal matrix ``Bp (..., 10, N)`` is too ill-conditioned."""
    d = Bp[..., _DIAG, :]
    flag = d.amax(dim=-2) > _DIAG_RATIO * d.amin(dim=-2)
    if w is not None:
        w2 = torch.where(usable, w * w, torch.full_like(w, float("inf")))
        flag = flag | (w2.amin(dim=-2) < _W2_RATIO)
    return flag


def _solve_rows(pts: torch.Tensor, P: torch.Tensor, w: torch.Tensor | None,
                usable: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """Homogeneous solutions ``(M, 4)`` of the points in ``flag (..., N)`` by a float64 SVD of
    their weighted DLT rows ``A (M, 2C, 4)`` (batched, differentiable)."""
    f64 = torch.float64
    C, N = usable.shape[-2:]
    batch = flag.shape[:-1]
    idx = flag.nonzero(as_tuple=True)
    bidx, nidx = idx[:-1], idx[-1]
    def per_point(x: torch.Tensor, tail: tuple[int, ...]) -> torch.Tensor:
        # (..., C, N, *tail) -> (M, C, *tail) for the flagged (batch, point) pairs
        x = x.expand(*batch, C, N, *tail).movedim(len(batch) + 1, len(batch))
        return x[(*bidx, nidx)]

    uv = per_point(pts.to(f64), (2,))  # (M, C, 2)
    Pf = P.to(f64).expand(*batch, C, 3, 4)
    Pf = Pf[bidx] if batch else Pf.expand(len(nidx), C, 3, 4)  # (M, C, 3, 4)
    use = per_point(usable, ())  # (M, C)
    wf = use.to(f64) if w is None else per_point(w.to(f64), ())
    wf = torch.where(use, wf, torch.zeros_like(wf))
    uv = torch.where(use[..., None], uv, torch.zeros_like(uv))
    rows = uv[..., :, None] * Pf[..., 2:3, :] - Pf[..., :2, :]  # (M, C, 2, 4)
    A = (wf[..., None, None] * rows).flatten(-3, -2)
    _, _, Vh = torch.linalg.svd(A, full_matrices=False)
    return Vh[..., -1, :]


def _solve_normal(Bp: torch.Tensor, degenerate: torch.Tensor) -> torch.Tensor:
    """Unit ``v (..., 4, N)`` minimizing ``v^T B v``; degenerate points get a stand-in ``B``."""
    tr = Bp[..., 0, :] + Bp[..., 2, :] + Bp[..., 5, :] + Bp[..., 9, :]
    bad = degenerate | ~(tr > 0)
    if bool(bad.any()):
        sub = _DEGENERATE_B.to(dtype=Bp.dtype, device=Bp.device)[:, None]
        Bp = torch.where(bad[..., None, :], sub, Bp)
    return _SmallestEigvec.apply(Bp)


def _solve_block(pts: torch.Tensor, Pn: torch.Tensor, w: torch.Tensor | None,
                 usable: torch.Tensor, degenerate: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v (..., 4, N), degenerate (..., N))`` of one block of points: points whose normal
    matrix is not finite (overflow, infinite weight) join the degenerate ones."""
    Bp = _normal_matrix(pts, Pn, w, usable)
    degenerate = degenerate | ~torch.isfinite(Bp).all(dim=-2)
    v = _solve_normal(Bp, degenerate)
    rows = _needs_rows(Bp, w, usable) & ~degenerate
    if bool(rows.any()):
        v_rows = _solve_rows(pts, Pn, w, usable, rows)
        v = v.movedim(-2, -1).index_put(rows.nonzero(as_tuple=True), v_rows).movedim(-1, -2)
    return v, degenerate


# ---------------------------------------------------------------------------------------
# public API
def triangulate(
    points2d: Any,
    P: Any,
    weights: Any | None = None,
    normalize: bool = True,
    on_degenerate: str = "nan",
) -> torch.Tensor:
    """Confidence-weighted DLT triangulation (Iskakov et al. 2019, eq. 4), batched.

    Args:
        points2d: ``(..., C, N, 2)`` undistorted pixel coordinates of ``N`` points in ``C``
            views (undistort first, e.g. :meth:`Camera.undistort_points`, if the lens distorts).
        P: ``(..., C, 3, 4)`` projection matrices ``K [R | t]`` (world mm to pixels).
        weights: ``(..., C, N)`` non-negative confidences (broadcastable; e.g. ``(..., C, 1)``)
            multiplying the two rows of each view in ``A``; ``None`` = all ones. A view is
            *usable* for a point when its weight is ``> 0`` and its 2D point is finite; the
            other views are ignored (NaN 2D points such as projections behind a camera may be
            passed with any weight). Only ratios of a point's weights matter (they are divided
            by the point's largest one), so weights of any magnitude give the same point.
        normalize: Hartley normalization (see the module docstring); recommended. It depends on
            the cameras only (all ``C`` of them, whatever the weights), so with it a zero-weight
            view changes the result of noisy data slightly compared with leaving the view out
            (exactly equal with ``normalize=False``).
        on_degenerate: what to do with *degenerate* points: fewer than two usable views, an
            infinite weight, or coordinates so large that the normal matrix overflows.
            ``"nan"`` returns NaN for those points (and zero gradient to their inputs);
            ``"raise"`` raises ``ValueError``.

    Returns:
        ``(..., N, 3)`` world points in mm, differentiable with respect to ``points2d``,
        ``P`` and ``weights``. Two cameras with the same centre give an arbitrary point on
        the common ray; rays that are all parallel give a point at infinity (non-finite).
        Accuracy: points whose normal matrix is ill-conditioned (a weight ratio below 1e-3
        between usable views, or world coordinates far from the cameras' scale with
        ``normalize=False``) are solved from the weighted rows by a float64 SVD, so the result
        agrees with the SVD of ``A`` at weight ratios down to 1e-8 and offsets of 1e7 mm.
    """
    _check_degenerate_option(on_degenerate)
    pts, Pm, w = _prepare(points2d, P, weights)
    out_dtype = pts.dtype
    usable = usable_views(pts, w)
    count = usable.sum(dim=-2)
    degenerate = count < 2
    if w is not None:
        w, inf_w = _scale_weights(w, usable)
        degenerate = degenerate | inf_w
    if on_degenerate == "raise" and bool((count < 2).any()):
        n_bad = int((count < 2).sum())
        raise ValueError(
            f"points2d: {n_bad} of {degenerate.numel()} points have fewer than two usable views "
            "(weight > 0 and a finite 2D point); pass on_degenerate='nan' to get NaN for them")
    if normalize:
        Pn, c, s = _normalize_projections(Pm.to(torch.float64))
    else:
        Pn = Pm.to(torch.float64)
    n = pts.shape[-2]
    if n <= 2 * _CHUNK:
        v, degenerate = _solve_block(pts, Pn, w, usable, degenerate)  # (..., 4, N)
    else:
        # blocks of points keep the working set in cache (each block is fully vectorized)
        blocks, degs = [], []
        for s0 in range(0, n, _CHUNK):
            sl = slice(s0, s0 + _CHUNK)
            wb = None if w is None else w[..., sl] if w.shape[-1] == n else w
            vb, db = _solve_block(pts[..., sl, :], Pn, wb, usable[..., sl], degenerate[..., sl])
            blocks.append(vb)
            degs.append(db)
        v = torch.cat(blocks, dim=-1)
        degenerate = torch.cat(degs, dim=-1)
    if on_degenerate == "raise" and bool(degenerate.any()):
        n_bad = int(degenerate.sum())
        raise ValueError(
            f"points2d/weights: {n_bad} of {degenerate.numel()} points are degenerate (an "
            "infinite weight, or coordinates so large that the DLT overflows float64); pass "
            "on_degenerate='nan' to get NaN for them")
    X = (v[..., :3, :] / v[..., 3:, :]).transpose(-1, -2)
    if normalize:
        X = torch.addcmul(c[..., None, :], s[..., None, :], X)
    if bool(degenerate.any()):
        X = torch.where(degenerate[..., None], torch.full_like(X, float("nan")), X)
    return X.to(out_dtype)


def reprojection_error(X: Any, points2d: Any, P: Any) -> torch.Tensor:
    """Pixel distance between projected ``X (..., N, 3)`` and ``points2d (..., C, N, 2)``.

    Returns ``(..., C, N)``; NaN where the point is on or behind a camera (``P`` is sign-
    normalized so ``det P[:, :3] > 0``) or the 2D point is NaN.
    """
    pts, Pm, _ = _prepare(points2d, P, None)
    X = as_float_tensor(X, "X", dtype=pts.dtype, device=pts.device)
    check_shape(X, "X", "(..., N, 3)")
    uv, depth = _project_P(X, Pm)
    err = (uv - pts).norm(dim=-1)
    return torch.where(depth > 0, err, torch.full_like(err, float("nan")))


def _project_P(X: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``X (..., N, 3)`` with ``P (..., C, 3, 4)`` -> uv ``(..., C, N, 2)``, w ``(..., C, N)``.

    ``w`` is positive in front of the camera (``P`` scaled so that ``det M > 0``); uv uses a
    safe denominator where ``w <= 0`` (callers mask those).
    """
    sign = torch.sign(torch.linalg.det(P[..., :3]))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    Ps = P * sign[..., None, None]
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)
    uvw = Xh[..., None, :, :] @ Ps.transpose(-1, -2)
    w = uvw[..., 2]
    front = w > 0
    w_safe = torch.where(front, w, torch.ones_like(w))
    return uvw[..., :2] / w_safe[..., None], w


def _view_subsets(C: int, size: int, max_hypotheses: int, generator: torch.Generator | None
                  ) -> torch.Tensor:
    """``(H, C)`` bool masks of view subsets: all ``C choose size`` or a random sample."""
    total = math.comb(C, size)
    if total <= max_hypotheses:
        combos = torch.tensor(list(itertools.combinations(range(C), size)), dtype=torch.long)
    else:
        keys = torch.rand((max_hypotheses, C), generator=generator)
        combos = keys.argsort(dim=-1)[:, :size]
    masks = torch.zeros((combos.shape[0], C), dtype=torch.bool)
    masks.scatter_(1, combos, True)
    return masks


def triangulate_ransac(
    points2d: Any,
    P: Any,
    threshold: float = 15.0,
    weights: Any | None = None,
    sample_size: int = 2,
    max_hypotheses: int = 64,
    normalize: bool = True,
    on_degenerate: str = "nan",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust triangulation: view-subset hypotheses as one batch, then inlier re-triangulation.

    Every hypothesis is the DLT of ``sample_size`` views: all ``C choose sample_size`` subsets
    when there are at most ``max_hypotheses`` of them, else ``max_hypotheses`` random subsets
    (the same subsets for all points). Each hypothesis is reprojected into every view; a view
    is an inlier when it is usable (see :func:`triangulate`), the point lies in front of the
    camera, and the reprojection error is below ``threshold`` pixels. The best hypothesis per
    point minimizes the MSAC cost ``sum_c min(err_c^2, threshold^2)`` (most inliers, then
    smallest error); the point is re-triangulated from its inliers with their weights.

    Args:
        points2d: ``(..., C, N, 2)`` undistorted pixels; ``P``: ``(..., C, 3, 4)``.
        threshold: inlier reprojection threshold in pixels (``> 0``).
        weights: ``(..., C, N)`` confidences (``None`` = ones), used in every DLT.
        sample_size: views per hypothesis (``2 <= sample_size <= C``).
        max_hypotheses: the most subsets evaluated.
        normalize, on_degenerate: as in :func:`triangulate`; points with fewer than two
            inliers are degenerate.
        generator: random generator for the subsets when they are sampled.

    Returns:
        ``(X, inliers)``: ``(..., N, 3)`` mm and bool ``(..., C, N)``. ``X`` is differentiable
        (the inlier selection is not).
    """
    _check_degenerate_option(on_degenerate)
    pts, Pm, w = _prepare(points2d, P, weights)
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise ValueError(f"threshold must be a positive number of pixels, got {threshold!r}")
    C = pts.shape[-3]
    if not isinstance(sample_size, int) or not 2 <= sample_size <= max(C, 2):
        raise ValueError(f"sample_size must be an int in [2, C={C}], got {sample_size!r}")
    check_positive(max_hypotheses, "max_hypotheses", integer=True)
    usable = usable_views(pts, w)
    if C < 2:
        X = triangulate(pts, Pm, w, normalize=normalize, on_degenerate=on_degenerate)
        return X, torch.zeros_like(usable)
    masks = _view_subsets(C, sample_size, max_hypotheses, generator).to(pts.device)
    w_full = usable.to(pts.dtype) if w is None else torch.where(usable, w, torch.zeros_like(w))
    # hypotheses: (..., H, C, N) weights; points and P broadcast over H
    w_h = w_full[..., None, :, :] * masks[:, :, None].to(pts.dtype)
    with torch.no_grad():
        X_h = triangulate(pts[..., None, :, :, :], Pm[..., None, :, :, :], w_h,
                          normalize=normalize, on_degenerate="nan")  # (..., H, N, 3)
        uv, depth = _project_P(X_h, Pm[..., None, :, :, :])  # (..., H, C, N, 2)
        err2 = (uv - pts[..., None, :, :, :]).square().sum(-1)
        ok = usable[..., None, :, :] & (depth > 0) & torch.isfinite(err2)
        thr2 = float(threshold) ** 2
        inl_h = ok & (err2 < thr2)
        cost = torch.where(ok, err2.clamp(max=thr2), torch.full_like(err2, thr2))
        cost = torch.where(usable[..., None, :, :], cost, torch.zeros_like(cost)).sum(-2)
        best = cost.argmin(dim=-2)  # (..., N)
        idx = best[..., None, None, :].expand(*inl_h.shape[:-3], 1, C, inl_h.shape[-1])
        inliers = torch.gather(inl_h, -3, idx)[..., 0, :, :]
    X = triangulate(pts, Pm, w_full * inliers.to(pts.dtype), normalize=normalize,
                    on_degenerate=on_degenerate)
    return X, inliers


def _inv3(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjugate and determinant of ``M (..., 3, 3)`` (element-wise, differentiable)."""
    c0, c1, c2 = M[..., :, 0], M[..., :, 1], M[..., :, 2]
    r0 = torch.linalg.cross(c1, c2)
    r1 = torch.linalg.cross(c2, c0)
    r2 = torch.linalg.cross(c0, c1)
    det = (c0 * r0).sum(-1)
    return torch.stack([r0, r1, r2], dim=-2), det


def refine_reprojection(
    X0: Any,
    points2d: Any,
    P: Any,
    weights: Any | None = None,
    iterations: int = 10,
    damping: float = 1e-3,
) -> torch.Tensor:
    """Refine 3D points by minimizing the weighted reprojection error (batched LM).

    Minimizes ``sum_c w_c ||pi(P_c X) - x_c||^2`` over usable views (weight ``> 0``, finite 2D
    point, in front of the camera) with Levenberg-Marquardt steps
    ``(J^T W J + mu diag(J^T W J)) dX = -J^T W r`` per point, all points at once; a step is
    kept only where it lowers the cost (``mu`` shrinks then, else grows).

    Args:
        X0: ``(..., N, 3)`` initial points in mm (e.g. from :func:`triangulate`).
        points2d: ``(..., C, N, 2)`` undistorted pixels; ``P``: ``(..., C, 3, 4)``.
        weights: ``(..., C, N)`` non-negative weights or ``None``.
        iterations: LM iterations (``>= 0``); ``damping``: initial ``mu`` (``>= 0``).

    Returns:
        ``(..., N, 3)`` refined points (mm), differentiable through the unrolled iterations.
        Points with fewer than two usable views, or a non-finite ``X0``, are returned as given.
    """
    pts, Pm, w = _prepare(points2d, P, weights)
    X = as_float_tensor(X0, "X0", dtype=pts.dtype, device=pts.device)
    check_shape(X, "X0", "(..., N, 3)", sizes={"N": pts.shape[-2]})
    check_positive(iterations, "iterations", integer=True, strict=False)
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    usable = usable_views(pts, w)
    wt = usable.to(pts.dtype) if w is None else torch.where(usable, w, torch.zeros_like(w))
    pts0 = torch.where(usable[..., None], pts, torch.zeros_like(pts))
    sign = torch.sign(torch.linalg.det(Pm[..., :3]))
    Ps = Pm * torch.where(sign == 0, torch.ones_like(sign), sign)[..., None, None]
    fin = torch.isfinite(X).all(-1)
    active = fin & (usable.sum(-2) >= 2)
    X = torch.where(active[..., None], X, torch.zeros_like(X))
    X_in = as_float_tensor(X0, "X0", dtype=pts.dtype, device=pts.device)

    def residuals(Xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        Xh = torch.cat([Xc, torch.ones_like(Xc[..., :1])], dim=-1)
        uvw = Xh[..., None, :, :] @ Ps.transpose(-1, -2)  # (..., C, N, 3)
        depth = uvw[..., 2]
        front = depth > 0
        d_safe = torch.where(front, depth, torch.ones_like(depth))
        uv = uvw[..., :2] / d_safe[..., None]
        r = torch.where(usable[..., None], uv - pts0, torch.zeros_like(uv))
        behind = (usable & ~front).any(dim=-2)
        cost = (wt * r.square().sum(-1)).sum(-2)
        cost = torch.where(behind, torch.full_like(cost, float("inf")), cost)
        return r, uv, d_safe, cost

    mu = torch.full(X.shape[:-1], float(damping), dtype=X.dtype, device=X.device)
    eye = torch.eye(3, dtype=X.dtype, device=X.device)
    for _ in range(iterations):
        r, uv, d_safe, cost = residuals(X)
        # J of (u, v) wrt X: (p_i[:3] - uv_i p3[:3]) / w, shape (..., C, N, 2, 3)
        p12 = Ps[..., None, :2, :3]
        p3 = Ps[..., None, 2:3, :3]
        J = (p12 - uv[..., :, None] * p3) / d_safe[..., None, None]
        J = J * usable[..., None, None].to(X.dtype)
        JtW = J.transpose(-1, -2) * wt[..., None, None]
        Hm = (JtW @ J).sum(dim=-4)  # (..., N, 3, 3)
        g = (JtW @ r[..., None]).sum(dim=-4)[..., 0]
        Hd = Hm + mu[..., None, None] * torch.diagonal(Hm, dim1=-2, dim2=-1)[..., None, :] * eye
        adj, det = _inv3(Hd)
        ok_det = det.abs() > 0
        step = -(adj @ g[..., None])[..., 0] / torch.where(ok_det, det, torch.ones_like(det))[..., None]
        cand = X + step
        _, _, _, new_cost = residuals(cand)
        better = active & ok_det & (new_cost < cost)
        X = torch.where(better[..., None], cand, X)
        mu = torch.where(better, mu * 0.1, mu * 10.0).clamp(1e-12, 1e12)
    return torch.where(active[..., None], X, X_in)
