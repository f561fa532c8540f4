"""Tests of the streaming dense epipolar / photometric operator (Yu et al. 2021, eqs. 1-8, 14, 17).

Three implementations are compared: the streaming operator (``mvbook.dense``), the materialised
eq. 17 (``dense_error_materialized``) and an independent slow reference written below with Python
loops over pixel pairs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from mvbook.dense import (
    DEFAULT_BLOCK,
    dense_epipolar_error,
    dense_error_materialized,
    dense_photometric_error,
    expected_pair_cost,
    visibility,
)
from mvbook.geometry import Camera, epipolar_distance, fundamental_from_cameras

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- slow reference
def loop_reference(u_a, u_b, *, sigma, eps, normalize, x_a=None, x_b=None, F=None, c_a=None,
                   c_b=None, g_a=None, g_b=None, per_pixel=False):
    """One pair, valid pixels only, written pair by pair from the paper's equations."""
    N, M = u_a.shape[0], u_b.shape[0]
    g_a = [0] * N if g_a is None else [int(v) for v in g_a]
    g_b = [0] * M if g_b is None else [int(v) for v in g_b]
    zero = u_a.sum() * 0 + u_b.sum() * 0

    def cost(i, j):
        if F is not None:  # eq. 1
            xa = torch.cat([x_a[i], torch.ones(1, dtype=x_a.dtype)])
            xb = torch.cat([x_b[j], torch.ones(1, dtype=x_b.dtype)])
            line = F @ xa
            return torch.abs(xb @ line) / torch.sqrt(line[0] ** 2 + line[1] ** 2)
        return ((c_a[i] - c_b[j]) ** 2).sum()  # eq. 14's pair cost

    def kernel(i, j):
        return torch.exp(-((u_a[i] - u_b[j]) ** 2).sum() / (2 * sigma**2))

    K = [[kernel(i, j) if g_a[i] == g_b[j] else None for j in range(M)] for i in range(N)]
    D = [[cost(i, j) for j in range(M)] for i in range(N)]
    Mrow = [[None] * M for _ in range(N)]
    for i in range(N):  # eq. 4, rows
        den = sum((K[i][j] for j in range(M) if K[i][j] is not None), zero)
        for j in range(M):
            Mrow[i][j] = K[i][j] / den if K[i][j] is not None else zero
    Mcol = [[None] * M for _ in range(N)]
    for j in range(M):  # the symmetric form's columns
        den = sum((K[i][j] for i in range(N) if K[i][j] is not None), zero)
        for i in range(N):
            Mcol[i][j] = K[i][j] / den if K[i][j] is not None else zero
    M2 = Mrow if normalize == "paper" else Mcol
    E_a = [sum((Mrow[i][j] * D[i][j] for j in range(M)), zero) for i in range(N)]  # eq. 6
    E_b = [sum((M2[i][j] * D[i][j] for i in range(N)), zero) for j in range(M)]
    if per_pixel:
        return torch.stack(E_a) if N else zero.new_zeros(0), torch.stack(E_b) if M else zero
    with torch.no_grad():  # eq. 8
        close = [[g_a[i] == g_b[j] and float(torch.linalg.norm(u_a[i] - u_b[j])) < eps
                  for j in range(M)] for i in range(N)]
    v_a = [any(close[i][j] for j in range(M)) for i in range(N)]
    v_b = [any(close[i][j] for i in range(N)) for j in range(M)]
    t1 = sum((E_a[i] for i in range(N) if v_a[i]), zero) / max(sum(v_a), 1)
    t2 = sum((E_b[j] for j in range(M) if v_b[j]), zero) / max(sum(v_b), 1)
    return t1 + t2


def loop_visibility(u_a, u_b, eps, g_a, g_b):
    v_a = [any(int(g_a[i]) == int(g_b[j]) and float(torch.linalg.norm(u_a[i] - u_b[j])) < eps
               for j in range(len(u_b))) for i in range(len(u_a))]
    v_b = [any(int(g_a[i]) == int(g_b[j]) and float(torch.linalg.norm(u_a[i] - u_b[j])) < eps
               for i in range(len(u_a))) for j in range(len(u_b))]
    return torch.tensor(v_a), torch.tensor(v_b)


# ----------------------------------------------------------------------------- data
def random_batch(B=2, N=6, M=7, seed=0, groups=3, dtype=F64, padding=True):
    g = torch.Generator().manual_seed(seed)
    d = {
        "x_a": torch.rand(B, N, 2, generator=g, dtype=dtype) * 200,
        "x_b": torch.rand(B, M, 2, generator=g, dtype=dtype) * 200,
        "F": torch.randn(B, 3, 3, generator=g, dtype=dtype),
        "u_a": torch.rand(B, N, 2, generator=g, dtype=dtype),
        "u_b": torch.rand(B, M, 2, generator=g, dtype=dtype),
        "c_a": torch.rand(B, N, 3, generator=g, dtype=dtype),
        "c_b": torch.rand(B, M, 3, generator=g, dtype=dtype),
        "groups_a": torch.randint(0, groups, (B, N), generator=g),
        "groups_b": torch.randint(0, groups, (B, M), generator=g),
    }
    d["groups_a"][:, 0] = groups  # a group absent from view b
    if padding:
        d["valid_a"] = torch.ones(B, N, dtype=torch.bool)
        d["valid_b"] = torch.ones(B, M, dtype=torch.bool)
        d["valid_a"][0, -2:] = False
        d["valid_b"][-1, -1] = False
    return d


KW = {"sigma": 0.3, "eps": 0.45}


def call_stream(kind, d, u_a, u_b, c_a=None, c_b=None, **kw):
    common = {k: d.get(k) for k in ("groups_a", "groups_b", "valid_a", "valid_b")}
    if kind == "epipolar":
        return dense_epipolar_error(d["x_a"], u_a, d["x_b"], u_b, d["F"], **common, **kw)
    return dense_photometric_error(c_a, u_a, c_b, u_b, **common, **kw)


def cost_kw(kind, d, c_a=None, c_b=None):
    if kind == "epipolar":
        return {"x_a": d["x_a"], "x_b": d["x_b"], "F": d["F"]}
    return {"c_a": c_a, "c_b": c_b}


def loop_batch(kind, d, u_a, u_b, c_a, c_b, normalize, per_pixel=False, **kw):
    """The loop reference for every pair of a batch, on its valid pixels."""
    out = []
    for b in range(u_a.shape[0]):
        va = d["valid_a"][b] if "valid_a" in d else torch.ones(u_a.shape[1], dtype=torch.bool)
        vb = d["valid_b"][b] if "valid_b" in d else torch.ones(u_b.shape[1], dtype=torch.bool)
        extra = ({"x_a": d["x_a"][b][va], "x_b": d["x_b"][b][vb], "F": d["F"][b]}
                 if kind == "epipolar" else {"c_a": c_a[b][va], "c_b": c_b[b][vb]})
        ga = d["groups_a"][b][va] if "groups_a" in d else None
        gb = d["groups_b"][b][vb] if "groups_b" in d else None
        out.append(loop_reference(u_a[b][va], u_b[b][vb], normalize=normalize, g_a=ga, g_b=gb,
                                  per_pixel=per_pixel, **extra, **kw))
    return out


def leaves(d, kind):
    ua = d["u_a"].clone().requires_grad_()
    ub = d["u_b"].clone().requires_grad_()
    if kind == "photometric":
        return [ua, ub, d["c_a"].clone().requires_grad_(), d["c_b"].clone().requires_grad_()]
    return [ua, ub]


def assert_close(a, b, rtol=1e-8, atol=1e-10, what=""):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("kind", ["epipolar", "photometric"])
@pytest.mark.parametrize("normalize", ["paper", "symmetric"])
def test_streaming_equals_materialized_equals_loop(kind, normalize):
    d = random_batch()
    M = d["u_b"].shape[1]
    # the loop reference: values and gradients
    ref_leaves = leaves(d, kind)
    ref = torch.stack(loop_batch(kind, d, *ref_leaves[:2], *(ref_leaves[2:] or [None, None]),
                                 normalize, **KW))
    ref_grads = torch.autograd.grad(ref.sum(), ref_leaves)
    assert ref.min() > 0
    # materialised eq. 17
    mat_leaves = leaves(d, kind)
    mat = dense_error_materialized(
        *mat_leaves[:2], **cost_kw(kind, d, *mat_leaves[2:]), normalize=normalize,
        **{k: d[k] for k in ("groups_a", "groups_b", "valid_a", "valid_b")}, **KW)
    assert_close(mat, ref, what="materialized value")
    for g, r in zip(torch.autograd.grad(mat.sum(), mat_leaves), ref_grads):
        assert_close(g, r, what="materialized gradient")
    # streaming, several block sizes
    for block in (1, 3, M - 1, M + 5):
        lv = leaves(d, kind)
        err = call_stream(kind, d, *lv, normalize=normalize, block=block, **KW)
        assert err.shape == (2,) and err.dtype == F64
        assert_close(err, ref, what=f"streaming value, block {block}")
        for g, r in zip(torch.autograd.grad(err.sum(), lv), ref_grads):
            assert_close(g, r, what=f"streaming gradient, block {block}")


@pytest.mark.parametrize("kind", ["epipolar", "photometric"])
@pytest.mark.parametrize("normalize", ["paper", "symmetric"])
def test_per_pixel_expectations_equal_loop(kind, normalize):
    d = random_batch(seed=1)
    g = torch.Generator().manual_seed(5)
    w_a = torch.randn(2, 6, generator=g, dtype=F64)
    w_b = torch.randn(2, 7, generator=g, dtype=F64)
    lv = leaves(d, kind)
    per = loop_batch(kind, d, *lv[:2], *(lv[2:] or [None, None]), normalize, per_pixel=True,
                     sigma=KW["sigma"], eps=None)
    loss = sum((w_a[b][d["valid_a"][b]] * ea).sum() + (w_b[b][d["valid_b"][b]] * eb).sum()
               for b, (ea, eb) in enumerate(per))
    ref_grads = torch.autograd.grad(loss, lv)
    for block in (1, 4, 100):
        lv2 = leaves(d, kind)
        E_a, E_b = expected_pair_cost(
            *lv2[:2], sigma=KW["sigma"], **cost_kw(kind, d, *lv2[2:]), normalize=normalize,
            block=block, **{k: d[k] for k in ("groups_a", "groups_b", "valid_a", "valid_b")})
        assert E_a.shape == (2, 6) and E_b.shape == (2, 7)
        for b, (ea, eb) in enumerate(per):
            assert_close(E_a[b][d["valid_a"][b]], ea, what="E_a")
            assert_close(E_b[b][d["valid_b"][b]], eb, what="E_b")
            assert (E_a[b][~d["valid_a"][b]] == 0).all() and (E_b[b][~d["valid_b"][b]] == 0).all()
        # the absent group's pixel has an all-zero row
        assert (E_a[:, 0] == 0).all()
        grads = torch.autograd.grad((w_a * E_a).sum() + (w_b * E_b).sum(), lv2)
        for gg, r in zip(grads, ref_grads):
            assert_close(gg, r, what=f"per-pixel gradient, block {block}")
        # one output only (the other gradient is None inside the operator)
        lv3 = leaves(d, kind)
        E_a3, _ = expected_pair_cost(
            *lv3[:2], sigma=KW["sigma"], **cost_kw(kind, d, *lv3[2:]), normalize=normalize,
            block=block, **{k: d[k] for k in ("groups_a", "groups_b", "valid_a", "valid_b")})
        assert all(torch.isfinite(t).all() for t in torch.autograd.grad(E_a3.sum(), lv3))


def test_visibility_equals_loop():
    d = random_batch(B=2, N=9, M=11, seed=3, padding=False)
    v_a, v_b = visibility(d["u_a"], d["u_b"], eps=0.2, groups_a=d["groups_a"],
                          groups_b=d["groups_b"], block=4)
    for b in range(2):
        ra, rb = loop_visibility(d["u_a"][b], d["u_b"][b], 0.2, d["groups_a"][b], d["groups_b"][b])
        assert torch.equal(v_a[b], ra) and torch.equal(v_b[b], rb)
    assert v_a.any() and not v_a.all()
    # strict: a distance equal to eps is not visible; padding never is
    u_a = torch.tensor([[0.0, 0.0], [0.5, 0.5]], dtype=F64)
    u_b = torch.tensor([[0.25, 0.0], [0.5, 0.5]], dtype=F64)
    v_a, v_b = visibility(u_a, u_b, eps=0.25)
    assert v_a.tolist() == [False, True] and v_b.tolist() == [False, True]
    v_a, v_b = visibility(u_a, u_b, eps=0.25, valid_b=torch.tensor([True, False]))
    assert v_a.tolist() == [False, False] and v_b.tolist() == [False, False]


def test_ties_and_absent_group():
    """Duplicate surface coordinates (within and across views) and a part seen in one view."""
    g = torch.Generator().manual_seed(7)
    u_a = torch.rand(1, 6, 2, generator=g, dtype=F64)
    u_b = torch.cat([u_a[:, :3], u_a[:, :3], u_a[:, 1:2]], dim=1)  # exact ties
    u_a[:, 4] = u_a[:, 3]
    d = random_batch(B=1, N=6, M=7, seed=8, padding=False)
    d["u_a"], d["u_b"] = u_a, u_b
    d["groups_a"] = torch.tensor([[0, 0, 1, 1, 1, 2]])  # part 2 absent from view b
    d["groups_b"] = torch.tensor([[0, 0, 1, 0, 0, 1, 0]])
    for normalize in ("paper", "symmetric"):
        for kind in ("epipolar", "photometric"):
            lv = leaves(d, kind)
            ref = loop_batch(kind, d, *lv[:2], *(lv[2:] or [None, None]), normalize,
                             sigma=0.05, eps=1e-9)[0]
            ref_g = torch.autograd.grad(ref, lv)
            lv2 = leaves(d, kind)
            err = call_stream(kind, d, *lv2, normalize=normalize, sigma=0.05, eps=1e-9, block=2)
            assert_close(err[0], ref, what="ties value")
            for a, b in zip(torch.autograd.grad(err.sum(), lv2), ref_g):
                assert_close(a, b, what="ties gradient")
    E_a, _ = expected_pair_cost(d["u_a"], d["u_b"], sigma=0.05, x_a=d["x_a"], x_b=d["x_b"],
                                F=d["F"], groups_a=d["groups_a"], groups_b=d["groups_b"])
    assert E_a[0, 5] == 0
    # exact duplicates in view b share the row's mass equally
    _, parts = dense_error_materialized(d["u_a"], d["u_b"], sigma=0.05, eps=1e-9, x_a=d["x_a"],
                                        x_b=d["x_b"], F=d["F"], groups_a=d["groups_a"],
                                        groups_b=d["groups_b"], return_parts=True)
    assert_close(parts["M"][0, 0, 0], parts["M"][0, 0, 3], what="tied matchability")


@pytest.mark.parametrize("normalize", ["paper", "symmetric"])
def test_empty_foreground_gives_zero_and_zero_gradients(normalize):
    d = random_batch(B=3, seed=2)
    d["valid_b"][1] = False  # pair 1: nothing in view b
    d["valid_a"][2] = False  # pair 2: nothing in view a
    for kind in ("epipolar", "photometric"):
        lv = leaves(d, kind)
        err = call_stream(kind, d, *lv, normalize=normalize, block=3, **KW)
        assert err[0] > 0 and err[1] == 0 and err[2] == 0
        grads = torch.autograd.grad(err[1:].sum(), lv)
        for gr in grads:
            assert torch.isfinite(gr).all() and (gr == 0).all()
        mat = dense_error_materialized(*lv[:2], **cost_kw(kind, d, *lv[2:]), normalize=normalize,
                                       **{k: d[k] for k in ("groups_a", "groups_b", "valid_a",
                                                             "valid_b")}, **KW)
        assert_close(mat, err.detach(), what="empty view")
    # zero pixels at all
    u0 = torch.zeros(2, 0, 2, dtype=F64, requires_grad=True)
    ub = torch.rand(2, 5, 2, dtype=F64, requires_grad=True)
    err = dense_epipolar_error(torch.zeros(2, 0, 2, dtype=F64), u0, torch.rand(2, 5, 2, dtype=F64),
                               ub, torch.eye(3, dtype=F64), normalize=normalize, **KW)
    assert err.tolist() == [0.0, 0.0]
    (gu,) = torch.autograd.grad(err.sum(), ub)
    assert (gu == 0).all()


def test_no_visible_pixel_in_one_view_drops_that_term():
    """Visibility depends on eps; with no pair within eps both terms are 0."""
    d = random_batch(B=1, padding=False, groups=1)
    err = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=0.3,
                               eps=1e-9)
    assert err.item() == 0.0
    err = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=0.3, eps=2.0)
    E_a, E_b = expected_pair_cost(d["u_a"], d["u_b"], sigma=0.3, x_a=d["x_a"], x_b=d["x_b"],
                                  F=d["F"])
    assert_close(err, E_a.mean(-1) + E_b.mean(-1), what="all visible: plain means")


def test_small_sigma_approaches_nearest_neighbour():
    """eq. 2: with sigma -> 0 the matchability becomes the argmin over surface coordinates."""
    g = torch.Generator().manual_seed(11)
    N, M = 30, 40
    d = random_batch(B=1, N=N, M=M, seed=12, padding=False, groups=2)
    d["groups_a"][:, 0] = 0
    d["u_a"] = torch.rand(1, N, 2, generator=g, dtype=F64)
    d["u_b"] = torch.rand(1, M, 2, generator=g, dtype=F64)
    dist = torch.cdist(d["u_a"][0], d["u_b"][0])
    same = d["groups_a"][0][:, None] == d["groups_b"][0][None, :]
    dist = torch.where(same, dist, torch.inf)
    nn_ab = dist.argmin(1)
    nn_ba = dist.argmin(0)
    D = epipolar_distance(d["x_a"][0][:, None, :], d["x_b"][0][None, :, :], d["F"][0])
    E_nn_a = D[torch.arange(N), nn_ab]
    E_nn_b = D[nn_ba, torch.arange(M)]
    gaps = []
    for sigma in (0.3, 0.1, 0.03, 1e-4):
        E_a, E_b = expected_pair_cost(d["u_a"], d["u_b"], sigma=sigma, x_a=d["x_a"],
                                      x_b=d["x_b"], F=d["F"], groups_a=d["groups_a"],
                                      groups_b=d["groups_b"], normalize="symmetric", block=7)
        gaps.append(float((E_a[0] - E_nn_a).abs().mean() + (E_b[0] - E_nn_b).abs().mean()))
    assert gaps[0] > 1.0 and gaps[-1] < 1e-9, gaps
    err = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=1e-4, eps=2.0,
                               groups_a=d["groups_a"], groups_b=d["groups_b"],
                               normalize="symmetric")
    assert_close(err[0], E_nn_a.mean() + E_nn_b.mean(), what="eq. 2 limit of eq. 7")


@pytest.mark.parametrize("normalize", ["paper", "symmetric"])
def test_gradcheck(normalize):
    d = random_batch(B=2, N=4, M=5, seed=4)
    # eps away from every pairwise distance, so that visibility cannot flip under perturbation
    dist = torch.cdist(d["u_a"], d["u_b"])
    eps = 0.3
    assert ((dist - eps).abs() > 1e-3).all()
    common = {k: d[k] for k in ("groups_a", "groups_b", "valid_a", "valid_b")}

    def epi(ua, ub):
        return dense_epipolar_error(d["x_a"], ua, d["x_b"], ub, d["F"], sigma=0.3, eps=eps,
                                    normalize=normalize, block=2, **common)

    def photo(ca, ua, cb, ub):
        return dense_photometric_error(ca, ua, cb, ub, sigma=0.3, eps=eps, normalize=normalize,
                                       block=3, **common)

    def per_pixel(ca, ua, cb, ub):
        return expected_pair_cost(ua, ub, sigma=0.3, c_a=ca, c_b=cb, normalize=normalize, block=2,
                                  **common)

    ua, ub = leaves(d, "epipolar")
    assert torch.autograd.gradcheck(epi, (ua, ub))
    ua, ub, ca, cb = leaves(d, "photometric")
    assert torch.autograd.gradcheck(photo, (ca, ua, cb, ub))
    assert torch.autograd.gradcheck(per_pixel, (ca, ua, cb, ub))


# ----------------------------------------------------------------------------- geometry
def two_view_scene(n_points=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    cams = Camera.look_at(torch.tensor([[3200.0, 400, 1500], [-500, 3300, 1700]], dtype=F64),
                          torch.tensor([0.0, 0, 900], dtype=F64), focal=1100.0,
                          image_size=(1000, 1000))
    # points on a body-sized ellipsoid
    dirs = torch.randn(n_points, 3, generator=g, dtype=F64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    X = dirs * torch.tensor([250.0, 180, 800], dtype=F64) + torch.tensor([0.0, 0, 900])
    # a unique surface coordinate per point: a jittered 20 x 10 grid (spacing >= 0.03)
    k = torch.arange(n_points)
    u = torch.stack([(k % 20 + 0.5) / 20, (k // 20 + 0.5) / 10], dim=-1).to(F64)
    u = u + (torch.rand(n_points, 2, generator=g, dtype=F64) - 0.5) * 0.02
    parts = k % 3
    x = cams.project(X)  # (2, n, 2)
    return cams, x, u, parts, fundamental_from_cameras(cams[0], cams[1])


def test_zero_error_for_epipolar_consistent_fields():
    cams, x, u, parts, F = two_view_scene()
    n = u.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    kw = {"sigma": 0.002, "eps": 1e-3}
    # both views see every point (view b in another order): zero in both forms
    for normalize in ("paper", "symmetric"):
        err = dense_epipolar_error(x[0], u, x[1][perm], u[perm], F, groups_a=parts,
                                   groups_b=parts[perm], normalize=normalize, **kw)
        assert err.item() < 1e-6
    # partial overlap: view a sees points 0..149, view b points 50..199
    ia, ib = torch.arange(150), perm[perm >= 50]
    err_sym = dense_epipolar_error(x[0][ia], u[ia], x[1][ib], u[ib], F, groups_a=parts[ia],
                                   groups_b=parts[ib], normalize="symmetric", **kw)
    assert err_sym.item() < 1e-6
    # the paper's form also sums the columns of rows that have no true match (documented)
    err_paper = dense_epipolar_error(x[0][ia], u[ia], x[1][ib], u[ib], F, groups_a=parts[ia],
                                     groups_b=parts[ib], normalize="paper", **kw)
    assert err_paper.item() > 1.0
    # perturbed surface coordinates in view b: clearly inconsistent
    g = torch.Generator().manual_seed(2)
    u_bad = u[perm] + 0.03 * torch.randn(n, 2, generator=g, dtype=F64)
    for normalize in ("paper", "symmetric"):
        err = dense_epipolar_error(x[0], u, x[1][perm], u_bad, F, groups_a=parts,
                                   groups_b=parts[perm], normalize=normalize, sigma=0.02, eps=0.05)
        assert err.item() > 1.0


def test_pair_cost_is_the_epipolar_distance_of_eq1():
    """With sigma tiny and u' a permutation of u, E(x_i) is d(x_i, x'_pi(i); F) of eq. 1."""
    cams, x, u, parts, F = two_view_scene(n_points=60, seed=3)
    g = torch.Generator().manual_seed(4)
    x_b = x[1] + 5.0 * torch.randn(x[1].shape, generator=g, dtype=F64)  # off the epipolar lines
    perm = torch.randperm(60, generator=g)
    E_a, E_b = expected_pair_cost(u, u[perm], sigma=1e-4, x_a=x[0], x_b=x_b[perm], F=F,
                                  normalize="symmetric")
    ref = epipolar_distance(x[0], x_b, F)
    assert ref.min() > 1e-3
    assert_close(E_a, ref, rtol=1e-9, what="eq. 1")
    assert_close(E_b, ref[perm], rtol=1e-9, what="eq. 1, second term")
    # and F's scale does not matter
    E_a2, _ = expected_pair_cost(u, u[perm], sigma=1e-4, x_a=x[0], x_b=x_b[perm], F=F * 37.0)
    assert_close(E_a2, ref, rtol=1e-9, what="scaled F")


# ----------------------------------------------------------------------------- batching, dtypes
def test_batch_with_padding_equals_per_pair_calls():
    g = torch.Generator().manual_seed(21)
    sizes = [(5, 8), (9, 3), (7, 7)]
    Nmax, Mmax = 9, 8
    B = len(sizes)
    x_a = torch.full((B, Nmax, 2), float("nan"), dtype=F64)  # padding: arbitrary, NaN included
    x_b = torch.full((B, Mmax, 2), float("nan"), dtype=F64)
    u_a = torch.full((B, Nmax, 2), float("nan"), dtype=F64)
    u_b = torch.full((B, Mmax, 2), float("nan"), dtype=F64)
    ga = torch.zeros(B, Nmax, dtype=torch.long)
    gb = torch.zeros(B, Mmax, dtype=torch.long)
    va = torch.zeros(B, Nmax, dtype=torch.bool)
    vb = torch.zeros(B, Mmax, dtype=torch.bool)
    F = torch.randn(B, 3, 3, generator=g, dtype=F64)
    pairs = []
    for b, (n, m) in enumerate(sizes):
        p = (torch.rand(n, 2, generator=g, dtype=F64) * 100,
             torch.rand(n, 2, generator=g, dtype=F64),
             torch.rand(m, 2, generator=g, dtype=F64) * 100,
             torch.rand(m, 2, generator=g, dtype=F64),
             torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (m,), generator=g))
        pairs.append(p)
        x_a[b, :n], u_a[b, :n], x_b[b, :m], u_b[b, :m], ga[b, :n], gb[b, :m] = p
        va[b, :n], vb[b, :m] = True, True
    u_a.requires_grad_()
    u_b.requires_grad_()
    for normalize in ("paper", "symmetric"):
        err = dense_epipolar_error(x_a, u_a, x_b, u_b, F, sigma=0.2, eps=0.1, groups_a=ga,
                                   groups_b=gb, valid_a=va, valid_b=vb, normalize=normalize,
                                   block=3)
        gua, gub = torch.autograd.grad(err.sum(), [u_a, u_b])
        assert torch.isfinite(err).all() and torch.isfinite(gua).all() and torch.isfinite(gub).all()
        assert (gua[~va] == 0).all() and (gub[~vb] == 0).all()
        for b, (pxa, pua, pxb, pub, pga, pgb) in enumerate(pairs):
            pua = pua.clone().requires_grad_()
            pub = pub.clone().requires_grad_()
            one = dense_epipolar_error(pxa, pua, pxb, pub, F[b], sigma=0.2, eps=0.1, groups_a=pga,
                                       groups_b=pgb, normalize=normalize)
            assert one.shape == ()
            assert_close(err[b], one, what=f"pair {b}")
            g1, g2 = torch.autograd.grad(one, [pua, pub])
            n, m = sizes[b]
            assert_close(gua[b, :n], g1, what="gradient u_a")
            assert_close(gub[b, :m], g2, what="gradient u_b")
    # leading batch dims broadcast: F shared by a (2, 3) batch of pairs
    d = random_batch(B=6, padding=False)
    shaped = {k: v.reshape(2, 3, *v.shape[1:]) for k, v in d.items() if k != "F"}
    err = dense_epipolar_error(shaped["x_a"], shaped["u_a"], shaped["x_b"], shaped["u_b"],
                               d["F"][0], sigma=0.3, eps=0.25)
    flat = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"][0].expand(6, 3, 3),
                                sigma=0.3, eps=0.25)
    assert err.shape == (2, 3)
    assert_close(err.reshape(6), flat, what="batch dims")


def test_float32_agrees_with_float64():
    d = random_batch(B=2, N=50, M=60, seed=9)
    common = {k: d[k] for k in ("groups_a", "groups_b", "valid_a", "valid_b")}
    for normalize in ("paper", "symmetric"):
        e64 = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=0.05,
                                   eps=0.05, normalize=normalize, block=16, **common)
        f = {k: d[k].float() for k in ("x_a", "u_a", "x_b", "u_b", "F")}
        e32 = dense_epipolar_error(f["x_a"], f["u_a"].requires_grad_(), f["x_b"], f["u_b"], f["F"],
                                   sigma=0.05, eps=0.05, normalize=normalize, block=16, **common)
        assert e32.dtype == torch.float32
        assert_close(e32.double(), e64, rtol=1e-4, atol=1e-4, what="float32")
        (g32,) = torch.autograd.grad(e32.sum(), [f["u_a"]])
        assert g32.dtype == torch.float32 and torch.isfinite(g32).all()


def test_wide_dynamic_range_stays_exact():
    """Tiny sigma: most kernel values underflow; the streamed result still equals the loop."""
    d = random_batch(B=1, N=8, M=9, seed=13, padding=False)
    for kind in ("epipolar", "photometric"):
        lv = leaves(d, kind)
        ref = loop_batch(kind, d, *lv[:2], *(lv[2:] or [None, None]), "paper", sigma=0.02,
                         eps=0.3)[0]
        ref_g = torch.autograd.grad(ref, lv)
        lv2 = leaves(d, kind)
        err = call_stream(kind, d, *lv2, normalize="paper", sigma=0.02, eps=0.3, block=4)
        assert_close(err[0], ref, what="small sigma")
        for a, b in zip(torch.autograd.grad(err.sum(), lv2), ref_g):
            assert_close(a, b, what="small sigma gradient")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    d = random_batch(B=2, N=300, M=400, seed=15)
    cpu = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=0.1, eps=0.05,
                               groups_a=d["groups_a"], groups_b=d["groups_b"],
                               valid_a=d["valid_a"], valid_b=d["valid_b"], block=64)
    dc = {k: v.cuda() for k, v in d.items()}
    ua = dc["u_a"].requires_grad_()
    gpu = dense_epipolar_error(dc["x_a"], ua, dc["x_b"], dc["u_b"], dc["F"], sigma=0.1, eps=0.05,
                               groups_a=dc["groups_a"], groups_b=dc["groups_b"],
                               valid_a=dc["valid_a"], valid_b=dc["valid_b"], block=64)
    assert gpu.device.type == "cuda"
    assert_close(gpu.cpu(), cpu, what="cuda")
    gpu.sum().backward()
    assert ua.grad.device.type == "cuda" and torch.isfinite(ua.grad).all()


# ----------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    torch.set_num_threads(1)
    from mvbook.dense import dense_epipolar_error
    n = int(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    def run(n):
        xa = torch.rand(1, n, 2, generator=g) * 500
        xb = torch.rand(1, n, 2, generator=g) * 500
        F = torch.randn(1, 3, 3, generator=g)
        ua = torch.rand(1, n, 2, generator=g).requires_grad_()
        ub = torch.rand(1, n, 2, generator=g).requires_grad_()
        ga = torch.randint(0, 14, (1, n), generator=g)
        gb = torch.randint(0, 14, (1, n), generator=g)
        err = dense_epipolar_error(xa, ua, xb, ub, F, sigma=0.05, eps=0.01, groups_a=ga,
                                   groups_b=gb)
        err.sum().backward()
        return bool(torch.isfinite(ua.grad).all())
    run(64)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ok = run(n)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_bytes": (peak - base) * 1024, "seconds": seconds, "ok": ok}))
""")


def test_memory_is_linear_not_quadratic():
    """Forward + backward at N = N' = 6000 (float32) in a fresh process: the growth of its peak
    resident memory (10 to 30 MB, allocator-dependent) stays under a quarter of one N x N'
    float64 matrix (288 MB); the materialised eq. 17 needs about 1.7 GB here."""
    n = 6000
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(n)], capture_output=True,
                          text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["ok"]
    assert res["extra_bytes"] < n * n * 8 / 4, (res, DEFAULT_BLOCK)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_naming_the_argument():
    d = random_batch(B=1, padding=False)
    x_a, u_a, x_b, u_b, F = d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"]

    def epi(**kw):
        args = {"x_a": x_a, "u_a": u_a, "x_b": x_b, "u_b": u_b, "F": F}
        opts = {"sigma": 0.1, "eps": 0.1}
        for k in list(kw):
            (args if k in args else opts)[k] = kw.pop(k)
        return dense_epipolar_error(args["x_a"], args["u_a"], args["x_b"], args["u_b"], args["F"],
                                    **opts)

    cases = [
        ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"), ({"eps": 0}, "eps"), ({"block": 0}, "block"),
        ({"block": 2.5}, "block"), ({"normalize": "rows"}, "normalize"),
        ({"u_a": u_a[..., :1]}, "u_b"), ({"u_b": u_b[..., :1]}, "u_b"),
        ({"x_a": x_a[:, :3]}, "x_a"), ({"x_b": x_b[..., :1]}, "x_b"), ({"F": F[..., :2]}, "F"),
        ({"groups_a": torch.zeros(1, 6, dtype=torch.long)}, "groups_a and groups_b"),
        ({"groups_a": torch.zeros(1, 5, dtype=torch.long),
          "groups_b": torch.zeros(1, 7, dtype=torch.long)}, "groups_a"),
        ({"groups_a": -torch.ones(1, 6, dtype=torch.long),
          "groups_b": torch.zeros(1, 7, dtype=torch.long)}, "groups_a"),
        ({"valid_b": torch.ones(1, 6, dtype=torch.bool)}, "valid_b"),
        ({"x_a": x_a.clone().requires_grad_()}, "x_a"), ({"F": F.clone().requires_grad_()}, "F"),
        ({"u_a": torch.rand(2, 6, 2, dtype=F64), "F": torch.rand(3, 3, 3, dtype=F64)},
         "batch shapes"),
    ]
    for kw, name in cases:
        with pytest.raises(ValueError, match=name):
            epi(**kw)
    with pytest.raises(TypeError, match="groups_a"):
        epi(groups_a=torch.zeros(1, 6), groups_b=torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="valid_a"):
        epi(valid_a=torch.ones(1, 6))
    with pytest.raises(ValueError, match="either the epipolar cost"):
        expected_pair_cost(u_a, u_b, sigma=0.1, x_a=x_a, x_b=x_b, F=F, c_a=d["c_a"], c_b=d["c_b"])
    with pytest.raises(ValueError, match="F missing"):
        dense_error_materialized(u_a, u_b, sigma=0.1, eps=0.1, x_a=x_a, x_b=x_b)
    with pytest.raises(ValueError, match="c_b"):
        dense_photometric_error(d["c_a"], u_a, d["c_b"][..., :2], u_b, sigma=0.1, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        visibility(u_a, u_b, eps=-1)
    # without grad mode, constants that require grad are fine
    with torch.no_grad():
        epi(x_a=x_a.clone().requires_grad_())


def test_defaults_and_argument_free_of_block():
    d = random_batch(B=1, N=40, M=700, seed=17, padding=False)
    assert DEFAULT_BLOCK >= 1
    a = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=0.1, eps=0.05)
    b = dense_epipolar_error(d["x_a"], d["u_a"], d["x_b"], d["u_b"], d["F"], sigma=0.1, eps=0.05,
                             block=7)
    assert_close(a, b, what="block size")
    assert math.isfinite(a.item())
