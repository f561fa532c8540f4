r"""Dense epipolar and photometric errors between two dense keypoint fields (Yu et al. 2021).

The paper (sec. 3.1-3.3) compares two views of a person through their *dense keypoint fields*:
each foreground pixel carries a surface coordinate ``u`` (UV on the canonical body surface) and a
body part (a *group*). No exact correspondence is known, so every pixel of one view is matched
softly to every pixel of the other.

Notation. View ``a`` has ``N`` foreground pixels ``x_i`` (pixels), surface coordinates ``u_i`` and
groups ``g_i``; view ``b`` has ``N'`` pixels ``x'_j``, ``u'_j``, ``g'_j``. ``F`` maps view-``a``
points to view-``b`` lines, ``x'~^T F x~ = 0`` (the convention of :mod:`mvbook.geometry.epipolar`).

- eq. 1, the pair cost: ``d_ij = |x'~_j^T F x~_i| / sqrt((F x~_i)_1^2 + (F x~_i)_2^2)``, the
  distance in pixels of ``x'_j`` to the epipolar line of ``x_i``. Computed here as
  ``|l_i . x'~_j|`` with the lines ``l_i = F x~_i`` normalised once per view ``a``
  (:func:`mvbook.geometry.epipolar_lines`).
- eq. 4, matchability, each row normalised over view ``b`` among the pixels of the same group:

      s_ij = -||u_i - u'_j||^2 / (2 sigma^2),
      M_ij = exp(s_ij) / sum_{k: g'_k = g_i} exp(s_ik)   if g'_j = g_i,   else 0.

  A row with no pixel of its group in view ``b`` is all zero. ``sigma -> 0`` approaches the
  nearest-neighbour match of eq. 2.
- eq. 6, the expected error of a pixel: ``E(x_i) = sum_j M_ij d_ij``.
- eq. 8, visibility: ``v_i = 1`` if some ``j`` with ``g'_j = g_i`` has ``||u_i - u'_j|| < eps``
  (strict; evaluated as ``||u_i - u'_j||^2 < eps^2``), else 0; ``v'_j`` likewise against view ``a``.
- eq. 7 / 17, the dense epipolar error of the pair, with ``V = sum_i v_i``, ``V' = sum_j v'_j``:

      E(I, I') = (1/V) sum_i v_i sum_j M_ij d_ij  +  (1/V') sum_j v'_j sum_i M_ij d_ij.

  This is ``normalize="paper"`` (the default): eq. 17 writes the second term with the same
  matrix ``M``, transposed, so ``sum_i M_ij d_ij`` is a column sum of a row-normalised matrix (a
  pixel of ``b`` that many rows prefer counts more; one that no row prefers counts little). A term
  whose ``V`` (or ``V'``) is 0 contributes 0. Consequence: for exactly consistent fields seen
  only partly by view ``b``, the pixels of ``a`` without a match still put their mass on some
  visible ``x'_j``, so the paper form stays above 0 where the symmetric form is 0.

  ``normalize="symmetric"`` replaces the second term's ``M`` by ``M'``, normalised over view
  ``a`` (for each ``j`` a softmax of ``s_ij`` over the ``i`` with ``g_i = g'_j``), so that the
  second term is, like the first, an average of expectations ``E(x'_j) = sum_i M'_ij d_ij``:
  the reading of eq. 7 in which both views are treated alike. The pair cost is the same matrix
  ``d_ij`` in both forms (eq. 17's ``E``).
- eq. 14, the dense photometric error: the same with the pair cost ``||c_i - c'_j||^2`` of the
  pixels' colours instead of ``d_ij``.

Gradients flow to ``u``, ``u'`` (through ``M``) and to the colours ``c``, ``c'`` (photometric
cost). Pixel positions, ``F``, groups and validity masks are constants: an ``x_a``, ``x_b`` or
``F`` that requires grad (with grad mode on) raises ``ValueError`` rather than silently receiving
no gradient; detach it. Visibility is an indicator and carries no gradient.

Computation. The ``N x N'`` matrices are never formed. The operator streams over blocks of
``block`` view-``b`` pixels, with all of view ``a`` in each block (memory
``O(B (N + N') + B N block)``), and keeps a numerically stable running log-sum-exp (online
softmax) per row of ``M``. The symmetric form's column normalisers are complete within a block;
for the paper form, the second term ``sum_j w'_j sum_i M_ij d_ij = sum_i G_i`` with
``G_i = sum_j M_ij w'_j d_ij`` is accumulated with the rows, so each form costs one pass forward.
Kernel values below ``exp(-87)`` (float32) or ``exp(-700)`` (float64) times the maximum or the
sum of their row (column) are raised to that bound (the exact zeros of other groups stay zero):
this changes no result beyond rounding and keeps torch's exp on its fast path.
The backward pass (a custom :class:`torch.autograd.Function`, first order: no double backward)
recomputes the blocks in one more pass from the saved row (and column) normalisers; no per-block
graph is kept. With
``s_ij = -||u_i - u'_j||^2 / (2 sigma^2)``, weights ``w_i = v_i / V``, ``w'_j = v'_j / V'`` and
``p`` the row softmax (``= M``), ``q`` the column softmax (``= M'``):

    dT1/ds_ij           = w_i p_ij (d_ij - E_i),                  E_i = sum_j p_ij d_ij
    dT2/ds_ij (paper)   = p_ij (w'_j d_ij - G_i),                 G_i = sum_j p_ij w'_j d_ij
    dT2/ds_ij (symm.)   = w'_j q_ij (d_ij - E'_j),                E'_j = sum_i q_ij d_ij
    dT/dd_ij            = w_i p_ij + w'_j p_ij   (paper)   or   w_i p_ij + w'_j q_ij   (symm.)

and ``ds_ij/du_i = -(u_i - u'_j) / sigma^2 = -ds_ij/du'_j``,
``d||c_i - c'_j||^2/dc_i = 2 (c_i - c'_j)``. :func:`expected_pair_cost` returns the per-pixel
sums (``E_i`` and the second term's ``sum_i M_ij d_ij``) with the same operator under arbitrary
upstream gradients (its paper form needs a second pass forward and backward, for ``G``).

:func:`dense_error_materialized` is eq. 17 written literally with the full matrices, for small
examples and as a reference.

Shapes: ``u_a (*, N, D)``, ``u_b (*, N', D)`` (``D = 2`` for UV), ``x_a (*, N, 2)``,
``x_b (*, N', 2)``, ``F (*, 3, 3)``, colours ``(*, N, C)``, groups ``(*, N)`` integers >= 0,
valid ``(*, N)`` bool (``False`` marks padding; a padded pixel's values are ignored, NaN
included). The batch dims ``*`` broadcast; a pair per batch element. Errors are ``(*,)``, in
pixels (epipolar) or colour units squared (photometric). float32 and float64 on any device
(other floating dtypes are computed in float32 and returned in their dtype). NaN or infinite
values in a valid pixel give NaN; a view-``a`` pixel whose epipolar line is undefined
(``F x~ = (0, 0, c)``, ``c != 0``) has an infinite distance to every pixel, hence a NaN or
infinite error, as in :func:`mvbook.geometry.point_line_distance`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .geometry.epipolar import epipolar_distance, epipolar_lines
from .validation import (
    as_float_tensor,
    broadcast_batch,
    check_choice,
    check_positive,
    check_shape,
    check_tensor,
    common_float_dtype,
)

__all__ = [
    "DEFAULT_BLOCK",
    "dense_epipolar_error",
    "dense_photometric_error",
    "dense_error_materialized",
    "expected_pair_cost",
    "visibility",
]

#: View-``b`` pixels per block of the streaming operator, chosen on a CPU with
#: ``bench/bench_dense_epipolar.py`` (on a GPU, larger blocks amortise the kernel launches).
DEFAULT_BLOCK = 128

_NORMALIZE = ("paper", "symmetric")


# ----------------------------------------------------------------------------- input handling
class _Pairs:
    """The constant part of a batch of view pairs, flattened to one batch dim ``B``.

    ``ga``/``gb``: ``(B, N)``/``(B, N')`` group codes with padding mapped to -1 (view a) and -2
    (view b), so one comparison gives "same group and both valid"; ``None`` when there are neither
    groups nor masks. ``lines (B, N, 3)`` normalised epipolar lines and ``xb_t (B, 3, N')``
    homogeneous view-b pixels for the epipolar cost; ``None`` for the photometric cost.
    """

    def __init__(self, *, ga, gb, lines, xb_t, sigma, eps, block):
        self.ga, self.gb = ga, gb
        self.lines, self.xb_t = lines, xb_t
        self.k = 1.0 / (2.0 * float(sigma) ** 2)
        self.eps2 = None if eps is None else float(eps) ** 2
        self.block = int(block)


def _check_scalar(value: Any, name: str) -> float:
    check_positive(value, name)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a positive number, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def _check_constant(value: Any, name: str) -> None:
    if isinstance(value, torch.Tensor) and value.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name} requires grad, but the dense error treats pixel positions and F "
                         f"as constants (no gradient flows to them); pass {name}.detach()")


def _check_groups(g: Any, name: str, n: int, device: torch.device) -> torch.Tensor | None:
    if g is None:
        return None
    check_tensor(g, name)
    if g.dtype == torch.bool or g.is_floating_point() or g.is_complex():
        raise TypeError(f"{name} must be an integer tensor of body-part indices, got {g.dtype}")
    check_shape(g, name, "(..., N)", {"N": n})
    g = g.to(device=device, dtype=torch.int64)
    if g.numel() and bool((g < 0).any()):
        raise ValueError(f"{name} must hold non-negative part indices, got {int(g.min())}")
    return g


def _check_valid(m: Any, name: str, n: int, device: torch.device) -> torch.Tensor | None:
    if m is None:
        return None
    check_tensor(m, name, dtype=torch.bool)
    check_shape(m, name, "(..., N)", {"N": n})
    return m.to(device)


def _prepare(u_a, u_b, *, sigma, eps, x_a=None, x_b=None, F=None, c_a=None, c_b=None,
             groups_a=None, groups_b=None, valid_a=None, valid_b=None, normalize="paper",
             block=DEFAULT_BLOCK, cost=True):
    """Validate, broadcast and flatten; return the differentiable inputs and the constants."""
    sigma = _check_scalar(sigma, "sigma") if sigma is not None else None
    eps = _check_scalar(eps, "eps") if eps is not None else None
    check_choice(normalize, "normalize", _NORMALIZE)
    check_positive(block, "block", integer=True)
    for name, value in (("x_a", x_a), ("x_b", x_b), ("F", F)):
        _check_constant(value, name)
    epi = x_a is not None or x_b is not None or F is not None
    photo = c_a is not None or c_b is not None
    if cost:
        if epi == photo:
            raise ValueError("give either the epipolar cost (x_a, x_b, F) or the photometric "
                             "cost (c_a, c_b), not both and not neither")
        missing = [n for n, v in (("x_a", x_a), ("x_b", x_b), ("F", F)) if epi and v is None]
        missing += [n for n, v in (("c_a", c_a), ("c_b", c_b)) if photo and v is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing: the "
                             f"{'epipolar' if epi else 'photometric'} cost needs "
                             f"{'x_a, x_b and F' if epi else 'c_a and c_b'}")
    ua = as_float_tensor(u_a, "u_a")
    ub = as_float_tensor(u_b, "u_b", device=ua.device)
    dev = ua.device
    sz = check_shape(ua, "u_a", "(..., N, D)")
    sz.update(check_shape(ub, "u_b", "(..., M, D)", {"D": sz["D"]}))
    N, M = sz["N"], sz["M"]
    tens = {"u_a": ua, "u_b": ub}
    if epi and cost:
        tens["x_a"] = as_float_tensor(x_a, "x_a", device=dev)
        tens["x_b"] = as_float_tensor(x_b, "x_b", device=dev)
        tens["F"] = as_float_tensor(F, "F", device=dev)
        check_shape(tens["x_a"], "x_a", "(..., N, 2)", {"N": N})
        check_shape(tens["x_b"], "x_b", "(..., M, 2)", {"M": M})
        check_shape(tens["F"], "F", "(..., 3, 3)")
    if photo and cost:
        tens["c_a"] = as_float_tensor(c_a, "c_a", device=dev)
        tens["c_b"] = as_float_tensor(c_b, "c_b", device=dev)
        szc = check_shape(tens["c_a"], "c_a", "(..., N, C)", {"N": N})
        check_shape(tens["c_b"], "c_b", "(..., M, C)", {"M": M, "C": szc["C"]})
    ga = _check_groups(groups_a, "groups_a", N, dev)
    gb = _check_groups(groups_b, "groups_b", M, dev)
    if (ga is None) != (gb is None):
        raise ValueError("groups_a and groups_b must be given together (or neither)")
    va = _check_valid(valid_a, "valid_a", N, dev)
    vb = _check_valid(valid_b, "valid_b", M, dev)
    shapes = {k: tuple(v.shape[:-2]) for k, v in tens.items()}
    shapes.update({k: tuple(v.shape[:-1]) for k, v in
                   (("groups_a", ga), ("groups_b", gb), ("valid_a", va), ("valid_b", vb))
                   if v is not None})
    batch = broadcast_batch(shapes)
    dtype = common_float_dtype(*tens.values())
    work = torch.float64 if dtype == torch.float64 else torch.float32
    B = math.prod(batch)

    def flat(t, n_tail):
        if t is None:
            return None
        t = t.expand(*batch, *t.shape[t.dim() - n_tail:])
        return t.reshape(B, *t.shape[len(batch):])

    out = {k: flat(v.to(work), 2) for k, v in tens.items()}
    ga, gb, va, vb = flat(ga, 1), flat(gb, 1), flat(va, 1), flat(vb, 1)
    # padding: ignore its values (zeros), and code it out of every group
    if va is not None:
        for k in ("u_a", "x_a", "c_a"):
            if k in out:
                out[k] = torch.where(va[..., None], out[k], torch.zeros((), dtype=work, device=dev))
    if vb is not None:
        for k in ("u_b", "x_b", "c_b"):
            if k in out:
                out[k] = torch.where(vb[..., None], out[k], torch.zeros((), dtype=work, device=dev))
    if ga is not None or va is not None or vb is not None:
        ga = ga if ga is not None else torch.zeros(B, N, dtype=torch.int64, device=dev)
        gb = gb if gb is not None else torch.zeros(B, M, dtype=torch.int64, device=dev)
        if va is not None:
            ga = torch.where(va, ga, -1)
        if vb is not None:
            gb = torch.where(vb, gb, -2)
    lines = xb_t = None
    if epi and cost:
        with torch.no_grad():
            lines = epipolar_lines(out["F"], out["x_a"])
            # an undefined line (0, 0, c != 0) is at infinite distance, as in point_line_distance
            undefined = (lines[..., 0] == 0) & (lines[..., 1] == 0) & (lines[..., 2] != 0)
            lines[..., 2] = torch.where(undefined, math.inf, lines[..., 2])
            xb = out["x_b"]
            xb_t = torch.cat([xb, torch.ones_like(xb[..., :1])], dim=-1).transpose(1, 2)
    pairs = _Pairs(ga=ga, gb=gb, lines=lines, xb_t=xb_t.contiguous() if xb_t is not None else None,
                   sigma=sigma if sigma is not None else 1.0, eps=eps, block=block)
    info = {"batch": batch, "dtype": dtype, "work": work, "N": N, "M": M, "va": va, "vb": vb}
    return out, pairs, info


# ----------------------------------------------------------------------------- block kernels
def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for ``a (B, N, D)``, ``b (B, n, D)`` -> ``(B, N, n)``, by differences
    (exact to rounding, unlike the expanded ``|a|^2 + |b|^2 - 2 a.b``)."""
    out = None
    for k in range(a.shape[-1]):  # a loop over coordinates (2 for UV, 3 for RGB)
        diff = a[:, :, None, k] - b[:, None, :, k]
        diff.square_()
        out = diff if out is None else out.add_(diff)
    if out is None:
        out = a.new_zeros(a.shape[0], a.shape[1], b.shape[1])
    return out


def _block(P: _Pairs, ua, ub, ca, cb, j0: int, j1: int, need_cost: bool = True):
    """Squared UV distances, the mask of pairs that cannot match (other group or padding; None
    when every pair can) and the pair cost of one block."""
    d2 = _sqdist(ua, ub[:, j0:j1])
    off = None if P.ga is None else P.ga[:, :, None] != P.gb[:, None, j0:j1]
    cost = None
    if need_cost:
        if P.lines is not None:
            cost = torch.bmm(P.lines, P.xb_t[:, :, j0:j1]).abs_()
        else:
            cost = _sqdist(ca, cb[:, j0:j1])
    return d2, off, cost


def _scores_(P: _Pairs, d2: torch.Tensor, off: torch.Tensor | None, fill: bool) -> torch.Tensor:
    """``s = -d2 / (2 sigma^2)`` (``-inf`` where ``off`` if ``fill``); overwrites ``d2``."""
    s = d2.mul_(-P.k)
    if fill and off is not None:
        s.masked_fill_(off, -math.inf)
    return s


# Below these arguments torch's CPU exp leaves its vectorised path (denormal or zero results,
# -inf) and runs some 30 times slower; exp(-87) ~ 1.6e-38 and exp(-700) ~ 1e-304 are normal
# numbers, negligible beside the largest term (1 after the shift by the maximum or normaliser).
_EXP_LOW = {torch.float32: -87.0, torch.float64: -700.0}


def _exp_(x: torch.Tensor, off: torch.Tensor | None) -> torch.Tensor:
    """In place ``exp(max(x, low))``, exactly 0 where ``off`` (the pairs that cannot match)."""
    x.clamp_(min=_EXP_LOW.get(x.dtype, -87.0)).exp_()
    if off is not None:
        x.masked_fill_(off, 0.0)
    return x


def _finite_or_zero(z: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(z), z, torch.zeros_like(z))


def _blocks(M: int, block: int):
    return ((j0, min(j0 + block, M)) for j0 in range(0, M, block))


def _visibility_pass(P: _Pairs, ua, ub):
    B, N, M = ua.shape[0], ua.shape[1], ub.shape[1]
    vis_a = torch.zeros(B, N, dtype=torch.bool, device=ua.device)
    vis_b = torch.zeros(B, M, dtype=torch.bool, device=ua.device)
    for j0, j1 in _blocks(M, P.block):
        d2, off, _ = _block(P, ua, ub, None, None, j0, j1, need_cost=False)
        close = d2 < P.eps2
        if off is not None:
            close.masked_fill_(off, False)
        vis_a |= close.any(2)
        vis_b[:, j0:j1] = close.any(1)
    return vis_a, vis_b


def _forward_pass(P: _Pairs, ua, ub, ca, cb, *, vis: bool, paper_g: bool, sym: bool):
    """One streaming pass over view-b blocks.

    Returns ``Z`` (row log-normalisers, ``-inf`` for empty rows), ``E_a`` (``sum_j p_ij d_ij``),
    visibility (if ``vis``), ``G`` (``sum_j p_ij v'_j d_ij``, if ``paper_g``; needs ``vis``) and,
    if ``sym``, the column log-normalisers ``Zb`` and ``E_b = sum_i q_ij d_ij``.
    """
    B, N, M = ua.shape[0], ua.shape[1], ub.shape[1]
    f = ua.new_zeros
    m = ua.new_full((B, N), -math.inf)
    ell, acc_e = f(B, N), f(B, N)
    acc_g = f(B, N) if paper_g else None
    vis_a = torch.zeros(B, N, dtype=torch.bool, device=ua.device) if vis else None
    vis_b = torch.zeros(B, M, dtype=torch.bool, device=ua.device) if vis else None
    Zb = ua.new_full((B, M), -math.inf) if sym else None
    E_b = f(B, M) if sym else None
    for j0, j1 in _blocks(M, P.block):
        d2, off, cost = _block(P, ua, ub, ca, cb, j0, j1)
        if vis:
            close = d2 < P.eps2
            if off is not None:
                close.masked_fill_(off, False)
            vis_a |= close.any(2)
            vis_b[:, j0:j1] = close.any(1)
            del close
        s = _scores_(P, d2, off, fill=True)
        if sym:  # columns are complete within a block
            cm = s.amax(1) if N else s.new_full((B, j1 - j0), -math.inf)
            q = _exp_(torch.sub(s, _finite_or_zero(cm)[:, None, :]), off)
            qs = q.sum(1)
            pos_b = qs > 0
            qs = torch.where(pos_b, qs, torch.ones_like(qs))
            Zb[:, j0:j1] = torch.where(pos_b, cm + torch.log(qs), torch.full_like(cm, -math.inf))
            E_b[:, j0:j1] = q.mul_(cost).sum(1) / qs
            del q
        m_new = torch.maximum(m, s.amax(2))
        m_safe = _finite_or_zero(m_new)
        scale = torch.exp(m - m_safe)
        e = _exp_(s.sub_(m_safe[:, :, None]), off)
        ell = ell.mul_(scale).add_(e.sum(2))
        ed = e.mul_(cost)
        acc_e = acc_e.mul_(scale).add_(ed.sum(2))
        if paper_g:
            wb = vis_b[:, j0:j1].to(ed.dtype)
            acc_g = acc_g.mul_(scale).add_(torch.bmm(ed, wb[:, :, None])[..., 0])
        m = m_new
        del d2, s, e, ed, cost, off
    pos = ell > 0
    ell_safe = torch.where(pos, ell, torch.ones_like(ell))
    Z = torch.where(pos, m + torch.log(ell_safe), torch.full_like(m, -math.inf))
    E_a = acc_e / ell_safe
    G = acc_g / ell_safe if paper_g else None
    return {"Z": Z, "E_a": E_a, "G": G, "vis_a": vis_a, "vis_b": vis_b, "Zb": Zb, "E_b": E_b}


def _column_pass_paper(P: _Pairs, ua, ub, ca, cb, Z, beta=None):
    """Paper form, row normalisers known: ``E_b = sum_i p_ij d_ij`` (``beta=None``) or
    ``G_i = sum_j p_ij beta_j d_ij``."""
    B, N, M = ua.shape[0], ua.shape[1], ub.shape[1]
    Zs = _finite_or_zero(Z)[:, :, None]
    out = ua.new_zeros(B, M) if beta is None else ua.new_zeros(B, N)
    for j0, j1 in _blocks(M, P.block):
        d2, off, cost = _block(P, ua, ub, ca, cb, j0, j1)
        pd = _exp_(_scores_(P, d2, off, fill=False).sub_(Zs), off).mul_(cost)
        if beta is None:
            out[:, j0:j1] = pd.sum(1)
        else:
            out.add_(torch.bmm(pd, beta[:, j0:j1, None])[..., 0])
        del d2, off, cost, pd
    return out


def _grad_pass(P: _Pairs, ua, ub, ca, cb, *, Z, Zb, E_a, E_b, G, alpha, beta, sym: bool,
               need: tuple[bool, bool, bool, bool]):
    """Gradients of ``sum_i alpha_i E_a_i + sum_j beta_j E_b_j`` (see the module docstring)."""
    M = ub.shape[1]
    k2 = 2.0 * P.k
    gua = torch.zeros_like(ua) if need[0] else None
    gub = torch.zeros_like(ub) if need[1] else None
    gca = torch.zeros_like(ca) if need[2] else None
    gcb = torch.zeros_like(cb) if need[3] else None
    need_u = need[0] or need[1]
    need_c = need[2] or need[3]
    Zs = _finite_or_zero(Z)[:, :, None]
    a = alpha[:, :, None]
    aEG = None if sym else (alpha * E_a + G)[:, :, None]
    for j0, j1 in _blocks(M, P.block):
        bj = beta[:, None, j0:j1]
        d2, off, cost = _block(P, ua, ub, ca, cb, j0, j1)
        s = _scores_(P, d2, off, fill=False)
        gd = gs = None
        if sym:
            q = _exp_(torch.sub(s, _finite_or_zero(Zb[:, None, j0:j1])), off)
            pa = _exp_(s.sub_(Zs), off).mul_(a)  # alpha_i p_ij
            qb = q.mul_(bj)  # beta_j q_ij
            if need_c:
                gd = pa + qb  # dL/d cost
            if need_u:  # alpha_i p_ij (d_ij - E_i) + beta_j q_ij (d_ij - E'_j)
                qb.mul_(torch.sub(cost, E_b[:, None, j0:j1]))
                gs = pa.mul_(cost.sub_(E_a[:, :, None])).add_(qb)
            del pa, qb, q
        else:
            p = _exp_(s.sub_(Zs), off)
            if need_c:
                gd = torch.mul(p, bj).addcmul_(p, a)  # p_ij (alpha_i + beta_j)
            if need_u:  # p_ij ((alpha_i + beta_j) d_ij - alpha_i E_i - G_i)
                gs = torch.mul(cost, bj).addcmul_(cost, a).sub_(aEG).mul_(p)
            del p
        del d2, s, off, cost
        ubj = ub[:, j0:j1]
        if need_u:
            if need[0]:
                gua.sub_(ua * gs.sum(2)[:, :, None] - torch.bmm(gs, ubj), alpha=k2)
            if need[1]:
                gub[:, j0:j1] = (torch.bmm(gs.transpose(1, 2), ua)
                                 - ubj * gs.sum(1)[:, :, None]) * k2
            del gs
        if need_c:
            cbj = cb[:, j0:j1]
            if need[2]:
                gca.add_(ca * gd.sum(2)[:, :, None] - torch.bmm(gd, cbj), alpha=2.0)
            if need[3]:
                gcb[:, j0:j1] = (cbj * gd.sum(1)[:, :, None]
                                 - torch.bmm(gd.transpose(1, 2), ca)) * 2
            del gd
    return gua, gub, gca, gcb


# ----------------------------------------------------------------------------- autograd
class _DenseErrorFn(torch.autograd.Function):
    """The pair error (eq. 7/17 or 14), ``(B,)``; recomputes the blocks in backward."""

    @staticmethod
    def forward(ctx, ua, ub, ca, cb, P: _Pairs, sym: bool):
        st = _forward_pass(P, ua, ub, ca, cb, vis=True, paper_g=not sym, sym=sym)
        dt = ua.dtype
        V = st["vis_a"].sum(1).clamp_min(1).to(dt)[:, None]
        Vb = st["vis_b"].sum(1).clamp_min(1).to(dt)[:, None]
        wa = st["vis_a"].to(dt) / V
        wb = st["vis_b"].to(dt) / Vb
        t1 = (wa * st["E_a"]).sum(1)
        if sym:
            Gn = None
            t2 = (wb * st["E_b"]).sum(1)
        else:
            Gn = st["G"] / Vb
            t2 = Gn.sum(1)
        ctx.P, ctx.sym = P, sym
        ctx.save_for_backward(ua, ub, ca, cb, st["Z"], st["Zb"], st["E_a"], st["E_b"], Gn, wa, wb)
        return t1 + t2

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        ua, ub, ca, cb, Z, Zb, E_a, E_b, Gn, wa, wb = ctx.saved_tensors
        g = g[:, None]
        grads = _grad_pass(ctx.P, ua, ub, ca, cb, Z=Z, Zb=Zb, E_a=E_a, E_b=E_b,
                           G=None if Gn is None else g * Gn, alpha=g * wa, beta=g * wb,
                           sym=ctx.sym, need=tuple(ctx.needs_input_grad[:4]))
        return (*grads, None, None)


class _ExpectedCostFn(torch.autograd.Function):
    """Per-pixel sums ``(E_a (B, N), E_b (B, N'))`` under arbitrary upstream gradients."""

    @staticmethod
    def forward(ctx, ua, ub, ca, cb, P: _Pairs, sym: bool):
        st = _forward_pass(P, ua, ub, ca, cb, vis=False, paper_g=False, sym=sym)
        E_b = st["E_b"] if sym else _column_pass_paper(P, ua, ub, ca, cb, st["Z"])
        ctx.P, ctx.sym = P, sym
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(ua, ub, ca, cb, st["Z"], st["Zb"], st["E_a"], E_b)
        return st["E_a"], E_b

    @staticmethod
    @once_differentiable
    def backward(ctx, g_a, g_b):
        ua, ub, ca, cb, Z, Zb, E_a, E_b = ctx.saved_tensors
        need = tuple(ctx.needs_input_grad[:4])
        if (g_a is None and g_b is None) or not any(need):
            return None, None, None, None, None, None
        alpha = g_a if g_a is not None else torch.zeros_like(E_a)
        beta = g_b if g_b is not None else torch.zeros_like(E_b)
        G = None
        if not ctx.sym:
            G = (_column_pass_paper(ctx.P, ua, ub, ca, cb, Z, beta=beta) if g_b is not None
                 else torch.zeros_like(E_a))
        grads = _grad_pass(ctx.P, ua, ub, ca, cb, Z=Z, Zb=Zb, E_a=E_a, E_b=E_b, G=G,
                           alpha=alpha, beta=beta, sym=ctx.sym, need=need)
        return (*grads, None, None)


# ----------------------------------------------------------------------------- public API
def _error(out, P, info, normalize):
    loss = _DenseErrorFn.apply(out["u_a"], out["u_b"], out.get("c_a"), out.get("c_b"), P,
                               normalize == "symmetric")
    return loss.reshape(info["batch"]).to(info["dtype"])


def dense_epipolar_error(
    x_a: Any, u_a: Any, x_b: Any, u_b: Any, F: Any, *, sigma: float, eps: float,
    groups_a: torch.Tensor | None = None, groups_b: torch.Tensor | None = None,
    valid_a: torch.Tensor | None = None, valid_b: torch.Tensor | None = None,
    normalize: str = "paper", block: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """Dense epipolar error of view pairs, ``E(I, I')`` of eq. 7/17 (pixels), streamed.

    Args:
        x_a: ``(*, N, 2)`` foreground pixels of view a (constant); x_b: ``(*, N', 2)``.
        u_a: ``(*, N, D)`` surface coordinates of view a (UV, ``D = 2``); u_b: ``(*, N', D)``.
        F: ``(*, 3, 3)`` with ``x_b~^T F x_a~ = 0`` (constant).
        sigma: matchability bandwidth in UV units (eq. 4), > 0.
        eps: visibility tolerance in UV units (eq. 8, strict ``<``), > 0.
        groups_a, groups_b: ``(*, N)``, ``(*, N')`` integer body parts >= 0; pairs in different
            groups never match. ``None`` (both): one group.
        valid_a, valid_b: ``(*, N)``, ``(*, N')`` bool, ``False`` for padding. ``None``: all valid.
        normalize: ``"paper"`` (eq. 17: both terms use the row-normalised ``M``) or
            ``"symmetric"`` (the second term uses ``M'`` normalised over view a); see the module
            docstring.
        block: view-b pixels per block (memory ``O(N block)`` per pair; the result does not
            depend on it beyond rounding).

    Returns:
        ``(*,)`` errors; differentiable with respect to ``u_a`` and ``u_b``. A view with no
        visible pixel contributes 0 (a pair with an empty view gives 0, with zero gradients).
    """
    out, P, info = _prepare(u_a, u_b, sigma=sigma, eps=eps, x_a=x_a, x_b=x_b, F=F,
                            groups_a=groups_a, groups_b=groups_b, valid_a=valid_a,
                            valid_b=valid_b, normalize=normalize, block=block)
    return _error(out, P, info, normalize)


def dense_photometric_error(
    c_a: Any, u_a: Any, c_b: Any, u_b: Any, *, sigma: float, eps: float,
    groups_a: torch.Tensor | None = None, groups_b: torch.Tensor | None = None,
    valid_a: torch.Tensor | None = None, valid_b: torch.Tensor | None = None,
    normalize: str = "paper", block: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """Dense photometric error of view pairs, ``T(I, I')`` of eq. 14, streamed.

    As :func:`dense_epipolar_error` with the pair cost ``||c_i - c'_j||^2`` of the colours
    ``c_a (*, N, C)``, ``c_b (*, N', C)`` (any units; the result is in those units squared).
    Differentiable with respect to ``u_a``, ``u_b``, ``c_a`` and ``c_b``.
    """
    out, P, info = _prepare(u_a, u_b, sigma=sigma, eps=eps, c_a=c_a, c_b=c_b,
                            groups_a=groups_a, groups_b=groups_b, valid_a=valid_a,
                            valid_b=valid_b, normalize=normalize, block=block)
    return _error(out, P, info, normalize)


def expected_pair_cost(
    u_a: Any, u_b: Any, *, sigma: float, x_a: Any = None, x_b: Any = None, F: Any = None,
    c_a: Any = None, c_b: Any = None,
    groups_a: torch.Tensor | None = None, groups_b: torch.Tensor | None = None,
    valid_a: torch.Tensor | None = None, valid_b: torch.Tensor | None = None,
    normalize: str = "paper", block: int = DEFAULT_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel expected costs (eq. 6), streamed: ``(E_a (*, N), E_b (*, N'))``.

    ``E_a_i = sum_j M_ij d_ij``, the expected error of eq. 6 for every pixel of view a, and
    ``E_b_j = sum_i M_ij d_ij`` (``normalize="paper"``, the column sums of eq. 17's second term)
    or ``sum_i M'_ij d_ij`` (``"symmetric"``, the expected error of each pixel of view b). The
    cost is epipolar (give ``x_a``, ``x_b``, ``F``) or photometric (give ``c_a``, ``c_b``);
    other arguments as in :func:`dense_epipolar_error`. Visibility is not applied (see
    :func:`visibility`); rows or columns with no same-group pixel are 0, as are padded pixels.
    Differentiable with respect to ``u_a``, ``u_b`` (and the colours) under any upstream gradient.
    """
    out, P, info = _prepare(u_a, u_b, sigma=sigma, eps=None, x_a=x_a, x_b=x_b, F=F, c_a=c_a,
                            c_b=c_b, groups_a=groups_a, groups_b=groups_b, valid_a=valid_a,
                            valid_b=valid_b, normalize=normalize, block=block)
    E_a, E_b = _ExpectedCostFn.apply(out["u_a"], out["u_b"], out.get("c_a"), out.get("c_b"), P,
                                     normalize == "symmetric")
    batch, dt = info["batch"], info["dtype"]
    return (E_a.reshape(*batch, info["N"]).to(dt), E_b.reshape(*batch, info["M"]).to(dt))


def visibility(
    u_a: Any, u_b: Any, *, eps: float,
    groups_a: torch.Tensor | None = None, groups_b: torch.Tensor | None = None,
    valid_a: torch.Tensor | None = None, valid_b: torch.Tensor | None = None,
    block: int = DEFAULT_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Visibility indicators of eq. 8, streamed: ``(v_a (*, N), v_b (*, N'))`` bool.

    ``v_a_i`` is True when a valid pixel of view b in the same group has
    ``||u_a_i - u_b_j|| < eps`` (evaluated as squared distance ``< eps^2``); ``v_b`` likewise.
    Padded pixels are never visible.
    """
    with torch.no_grad():
        out, P, info = _prepare(u_a, u_b, sigma=None, eps=eps, groups_a=groups_a,
                                groups_b=groups_b, valid_a=valid_a, valid_b=valid_b, block=block,
                                cost=False)
        v_a, v_b = _visibility_pass(P, out["u_a"], out["u_b"])
    batch = info["batch"]
    return v_a.reshape(*batch, info["N"]), v_b.reshape(*batch, info["M"])


def dense_error_materialized(
    u_a: Any, u_b: Any, *, sigma: float, eps: float, x_a: Any = None, x_b: Any = None,
    F: Any = None, c_a: Any = None, c_b: Any = None,
    groups_a: torch.Tensor | None = None, groups_b: torch.Tensor | None = None,
    valid_a: torch.Tensor | None = None, valid_b: torch.Tensor | None = None,
    normalize: str = "paper", return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 17 written literally with the full ``N x N'`` matrices (memory ``O(N N')``).

    ``E(I, I') = V^T (M . E) 1 / V + V'^T (M2 . E)^T 1 / V'`` with ``M`` the matchability (eq. 4,
    rows normalised), ``E`` the pair costs (eq. 1 via :func:`mvbook.geometry.epipolar_distance`,
    or colour distances for eq. 14), ``M2 = M`` (``normalize="paper"``) or ``M'`` (columns
    normalised, ``"symmetric"``), visibility vectors of eq. 8. Plain autograd. For small examples
    and as a reference for the streaming :func:`dense_epipolar_error` /
    :func:`dense_photometric_error`, which it equals to rounding; arguments as there (give
    ``x_a, x_b, F`` or ``c_a, c_b``). ``return_parts=True`` also returns a dict of the flattened
    ``(B, ...)`` matrices ``M``, ``M2``, ``E`` and vectors ``v_a``, ``v_b``.
    """
    out, P, info = _prepare(u_a, u_b, sigma=sigma, eps=eps, x_a=x_a, x_b=x_b, F=F, c_a=c_a,
                            c_b=c_b, groups_a=groups_a, groups_b=groups_b, valid_a=valid_a,
                            valid_b=valid_b, normalize=normalize)
    ua, ub = out["u_a"], out["u_b"]
    B, N, M = ua.shape[0], info["N"], info["M"]
    d2 = (ua[:, :, None, :] - ub[:, None, :, :]).square().sum(-1)  # (B, N, N')
    same = (torch.ones(B, N, M, dtype=torch.bool, device=ua.device) if P.ga is None
            else P.ga[:, :, None] == P.gb[:, None, :])
    s = torch.where(same, -d2 / (2 * sigma**2), torch.full_like(d2, -math.inf))

    def softmax(dim: int) -> torch.Tensor:  # all-zero where a row (column) has no candidate
        mx = _finite_or_zero(s.amax(dim, keepdim=True).detach())
        e = torch.exp(s - mx)
        den = e.sum(dim, keepdim=True)
        return e / torch.where(den > 0, den, torch.ones_like(den))

    Mat = softmax(2)
    M2 = Mat if normalize == "paper" else softmax(1)
    if "x_a" in out:
        E = epipolar_distance(out["x_a"][:, :, None, :], out["x_b"][:, None, :, :],
                              out["F"][:, None])
    else:
        E = (out["c_a"][:, :, None, :] - out["c_b"][:, None, :, :]).square().sum(-1)
    close = same & (d2.detach() < eps**2)
    v_a = close.any(2).to(ua.dtype)
    v_b = close.any(1).to(ua.dtype)
    V = v_a.sum(1).clamp_min(1)
    Vb = v_b.sum(1).clamp_min(1)
    ones_b = torch.ones(B, M, 1, dtype=ua.dtype, device=ua.device)
    ones_a = torch.ones(B, N, 1, dtype=ua.dtype, device=ua.device)
    t1 = (v_a[:, None, :] @ (Mat * E) @ ones_b)[:, 0, 0] / V
    t2 = (v_b[:, None, :] @ (M2 * E).transpose(1, 2) @ ones_a)[:, 0, 0] / Vb
    err = (t1 + t2).reshape(info["batch"]).to(info["dtype"])
    if return_parts:
        return err, {"M": Mat, "M2": M2, "E": E, "v_a": v_a.bool(), "v_b": v_b.bool()}
    return err
