"""Procrustes alignment (Kabsch / Umeyama), batched, weighted, differentiable.

Finds ``R`` (a proper rotation, ``det R = +1``), ``s > 0`` and ``t`` minimizing
``sum_i w_i || s R x_i + t - y_i ||^2`` (Umeyama 1991). The reflection that an unconstrained
orthogonal fit may produce is removed by the determinant correction
``R = U diag(1, 1, det(U V^T)) V^T``. This is the alignment behind PA-MPJPE.
"""

from __future__ import annotations

from typing import Any

import torch

from ..validation import as_float_tensor, broadcast_batch, check_shape

__all__ = ["procrustes", "procrustes_align"]


def _prepare(X: Any, Y: Any, weights: Any | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X = as_float_tensor(X, "X")
    Y = as_float_tensor(Y, "Y", device=X.device)
    dtype = torch.promote_types(X.dtype, Y.dtype)
    X, Y = X.to(dtype), Y.to(dtype)
    check_shape(X, "X", "(..., N, 3)")
    check_shape(Y, "Y", "(..., N, 3)")
    if X.shape[-2] != Y.shape[-2]:
        raise ValueError(f"X and Y must have the same number of points N, got X {tuple(X.shape)} "
                         f"and Y {tuple(Y.shape)}")
    batch = broadcast_batch({"X": tuple(X.shape[:-2]), "Y": tuple(Y.shape[:-2])})
    N = X.shape[-2]
    if weights is None:
        w = torch.ones((*batch, N), dtype=dtype, device=X.device)
    else:
        w = as_float_tensor(weights, "weights", dtype=dtype, device=X.device)
        try:
            w = w.expand(*torch.broadcast_shapes(w.shape, (*batch, N)))
        except RuntimeError as exc:
            raise ValueError(f"weights must broadcast to (..., N) = {(*batch, N)}, got "
                             f"{tuple(w.shape)}") from exc
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError("weights must be finite and >= 0")
        if bool((w.sum(-1) <= 0).any()):
            raise ValueError("weights must have a positive sum for every alignment")
    return X, Y, w


def procrustes(
    X: Any, Y: Any, scale: bool = False, weights: Any | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best rigid (``scale=False``) or similarity (``scale=True``) transform with ``Y ~ s R X + t``.

    Args:
        X: ``(..., N, 3)`` source points (e.g. predicted joints, mm).
        Y: ``(..., N, 3)`` target points (e.g. ground truth, mm); batch dims broadcast with X.
        scale: also fit a global scale ``s > 0``; otherwise ``s = 1``.
        weights: optional ``(..., N)`` non-negative point weights (e.g. a visibility mask).

    Returns:
        ``(R, s, t)``: ``R (..., 3, 3)`` with ``det R = +1``, ``s (...,)``, ``t (..., 3)`` (mm).
        Differentiable (through ``torch.linalg.svd``; gradients are undefined when the
        cross-covariance has repeated singular values, e.g. fewer than three non-collinear
        points, where the rotation itself is not unique).
    """
    X, Y, w = _prepare(X, Y, weights)
    wsum = w.sum(-1, keepdim=True)
    wn = (w / wsum)[..., None]  # (..., N, 1), sums to 1
    mx = (wn * X).sum(-2)
    my = (wn * Y).sum(-2)
    Xc = X - mx[..., None, :]
    Yc = Y - my[..., None, :]
    cov = (Yc * wn).transpose(-1, -2) @ Xc  # (..., 3, 3) = sum w y x^T
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U @ Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.ones_like(S)
    D = torch.cat([D[..., :2], d[..., None]], dim=-1)
    R = (U * D[..., None, :]) @ Vh
    if scale:
        var_x = (wn * Xc.square()).sum(dim=(-2, -1))
        s = (S * D).sum(-1) / var_x.clamp_min(torch.finfo(X.dtype).tiny)
    else:
        s = torch.ones_like(S[..., 0])
    t = my - s[..., None] * (mx[..., None, :] @ R.transpose(-1, -2))[..., 0, :]
    return R, s, t


def procrustes_align(
    X: Any, Y: Any, scale: bool = True, weights: Any | None = None
) -> torch.Tensor:
    """``X`` aligned to ``Y``: ``s R x + t`` for every point, ``(..., N, 3)``.

    ``scale=True`` (similarity, the PA-MPJPE protocol) by default; see :func:`procrustes`.
    """
    R, s, t = procrustes(X, Y, scale=scale, weights=weights)
    X = as_float_tensor(X, "X", dtype=R.dtype, device=R.device)
    return s[..., None, None] * (X @ R.transpose(-1, -2)) + t[..., None, :]
