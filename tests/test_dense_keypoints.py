"""Chapter 40's method (mvbook.methods.dense_keypoints): fields, pixels, losses, batches,
evaluation protocol and a short training, against slow references written here."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mvbook import dense
from mvbook.geometry import epipolar_distance, fundamental_from_projections
from mvbook.methods import dense_keypoints as D
from mvbook.studio.body import rest_surface_points
from mvbook.zoo.dense import split_outputs, uv_at


@pytest.fixture(scope="module")
def smoke():
    torch.manual_seed(0)
    plan = D.settings("smoke")
    net = D.initial_net(plan)
    splits = D.prepare("studio", plan, net, profile="smoke", progress=False)
    return plan, net, splits


def test_canonical_points_are_the_rest_surface_and_carry_gradients():
    g = torch.Generator().manual_seed(0)
    part = torch.randint(1, 17, (200,), generator=g)
    uv = torch.rand(200, 2, generator=g, dtype=torch.float64, requires_grad=True)
    got = D.canonical_points(part, uv)
    ref = rest_surface_points(part, uv[:, 0].detach(), uv[:, 1].detach())
    assert torch.allclose(got, ref, atol=1e-9)
    got.sum().backward()
    assert uv.grad is not None and bool(uv.grad.abs().sum() > 0)
    # the seam U = 0 = 1 closes: the same point from both sides
    seam = D.canonical_points(torch.tensor([5, 5]), torch.tensor([[0.0, 0.5], [1.0, 0.5]]))
    assert float((seam[0] - seam[1]).norm()) < 1e-3


def test_foreground_pixels_against_a_loop():
    g = torch.Generator().manual_seed(1)
    part = torch.randint(0, 4, (3, 5, 6), generator=g)
    part[2] = 0  # an empty map
    uv = torch.rand(3, 2, 5, 6, generator=g)
    px = D.foreground_pixels(part, uv)
    K = px["valid"].shape[1]
    assert K == int((part > 0).sum((1, 2)).max())
    for n in range(3):
        ref = [(x, y) for y in range(5) for x in range(6) if part[n, y, x] > 0]
        assert int(px["valid"][n].sum()) == len(ref)
        for k, (x, y) in enumerate(ref):
            assert px["xy"][n, k].tolist() == [x, y]
            assert int(px["part"][n, k]) == int(part[n, y, x])
            assert torch.equal(px["uv"][n, k], uv[n, :, y, x])
        assert not px["valid"][n, len(ref):].any()


def test_field_pixels_coordinates():
    part = torch.tensor([[[0, 3], [7, 3]]])
    uv = torch.rand(1, 2, 2, 2, dtype=torch.float64)
    s = D.field_pixels(part, uv, "surface")
    u = D.field_pixels(part, uv, "uv")
    assert s["groups"] is None and torch.equal(u["groups"], u["part"])
    assert torch.allclose(s["coord"], D.canonical_points(s["part"], s["uv"]))
    assert torch.equal(u["coord"], u["uv"])
    with pytest.raises(ValueError, match="coordinate"):
        D.field_pixels(part, uv, "xyz")


def _tiny_views(F_=2, C=3, h=6, seed=0):
    """A ViewSet of random fields and random cameras (only what the protocol reads)."""
    g = torch.Generator().manual_seed(seed)
    fields = torch.zeros(F_, C, 3, h, h)
    fields[:, :, 0] = torch.randint(0, 4, (F_, C, h, h), generator=g).float()
    fields[:, :, 1:] = torch.rand(F_, C, 2, h, h, generator=g)
    P = torch.randn(F_, C, 3, 4, generator=g)
    P[..., 2, 3] += 10.0
    z = torch.zeros(F_, C, 1)
    views = D.ViewSet(encoding=z, phi0=fields, colours=z, iuv=fields, P=P,
                      px_scale=1 + torch.rand(F_, C, generator=g), subject=["S"] * F_,
                      sequence=["s"] * F_, frame=torch.arange(F_), images=z)
    return fields, views


def test_epipolar_nn_error_against_a_loop():
    fields, views = _tiny_views()
    tol = 150.0
    err, seen = D.epipolar_nn_error(fields, views, tol, chunk=4)
    pairs = D.view_pairs(views.views)
    h = fields.shape[-1]
    for f in range(len(fields)):
        for p, (a, b) in enumerate(pairs.tolist()):
            Fm = fundamental_from_projections(views.P[f, a].double(), views.P[f, b].double())
            fg_b = [(x, y) for y in range(h) for x in range(h) if fields[f, b, 0, y, x] > 0]
            pts_b = [rest_surface_points(fields[f, b, 0, y, x].long()[None], fields[f, b, 1, y, x][None],
                                         fields[f, b, 2, y, x][None])[0] for x, y in fg_b]
            errs, n_fg = [], 0
            for y in range(h):
                for x in range(h):
                    if fields[f, a, 0, y, x] <= 0:
                        continue
                    n_fg += 1
                    q = rest_surface_points(fields[f, a, 0, y, x].long()[None], fields[f, a, 1, y, x][None],
                                            fields[f, a, 2, y, x][None])[0]
                    d = [float((q - r).norm()) for r in pts_b]
                    j = min(range(len(d)), key=d.__getitem__)
                    if d[j] < tol:
                        xb = torch.tensor(fg_b[j], dtype=torch.float64)
                        e = epipolar_distance(torch.tensor([[x, y]], dtype=torch.float64), xb[None], Fm)[0]
                        errs.append(float(e) * float(views.px_scale[f, b]))
            assert float(seen[f, p]) == pytest.approx(len(errs) / max(n_fg, 1))
            if errs:
                assert float(err[f, p]) == pytest.approx(sum(errs) / len(errs), rel=1e-4)
            else:
                assert math.isnan(float(err[f, p]))


def test_epipolar_nn_error_of_the_truth_is_small_and_below_phi0(smoke):
    plan, _, splits = smoke
    e_true, seen = D.epipolar_nn_error(splits.test.iuv, splits.test)
    e_phi0, _ = D.epipolar_nn_error(splits.test.phi0, splits.test)
    assert float(seen.mean()) > 0.1
    assert float(e_true.nanmean()) < float(e_phi0.nanmean())
    assert float(e_true.nanmean()) < 3.0  # the sampling floor at 32 px maps (image px)


def test_evaluate_the_truth_is_perfect(smoke):
    plan, _, splits = smoke
    m = D.evaluate(None, splits.test, plan, fields=splits.test.iuv)
    assert m["AUC10"] == pytest.approx(1.0) and m["mGPS"] == pytest.approx(1.0)
    assert m["part accuracy"] == pytest.approx(100.0) and m["mMVS"] > 0.95
    bad = D.evaluate(None, splits.test, plan, fields=torch.zeros_like(splits.test.iuv))
    assert bad["AUC10"] == 0.0 and bad["part accuracy"] == 0.0


def test_densenet_is_phi0_with_a_frozen_encoder(smoke):
    plan, net, splits = smoke
    from mvbook.crops import normalize_images
    from mvbook.zoo import load

    base = load("dense0", plan.zoo_profile)
    imgs = splits.test.images[0]
    with torch.no_grad():
        ref = base(normalize_images(imgs)).heatmaps
        got = net(net.encode(imgs))
    assert torch.allclose(got, ref, atol=1e-5)
    assert all(not p.requires_grad for p in [*net.stem.parameters(), *net.encoder.parameters()])
    assert all(p.requires_grad for p in net.head.parameters())
    net.train()
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.allclose(splits.test.phi0[0], D.DenseNet.field(got))


def test_distillation_is_zero_on_phi0s_uv_and_labelled_loss_is_the_zoo_loss():
    g = torch.Generator().manual_seed(2)
    maps = torch.randn(2, 49, 4, 4, generator=g)
    field = D.DenseNet.field(maps)
    logits, uv = split_outputs(maps)
    ce = torch.nn.functional.cross_entropy(logits, field[:, 0].long())
    assert float(D.distillation_loss(maps, field)) == pytest.approx(float(ce), rel=1e-6)
    moved = field.clone()
    moved[:, 1:] += 0.1 * (field[:, :1] > 0)
    assert float(D.distillation_loss(maps, moved)) > float(ce)
    iuv = field.clone()
    from mvbook.zoo.dense import dense_loss
    assert float(D.labelled_loss(maps, iuv)) == pytest.approx(float(dense_loss(maps, iuv)[0]))
    assert torch.equal(uv_at(uv, field[:, 0].long()), field[:, 1:])


def _pair_batch(seed=3, B=2, h=8):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(2, B, 3, 4, generator=g, dtype=torch.float64)
    P[..., 2, 3] += 10
    return {"maps_a": torch.randn(B, 49, h, h, generator=g, requires_grad=True),
            "maps_b": torch.randn(B, 49, h, h, generator=g, requires_grad=True),
            "P_a": P[0], "P_b": P[1], "colours_a": torch.rand(B, 3, h, h, generator=g),
            "colours_b": torch.rand(B, 3, h, h, generator=g)}


@pytest.mark.parametrize("coordinate", ["surface", "uv"])
def test_epipolar_and_photometric_losses_equal_the_materialised_operator(coordinate):
    b = _pair_batch()
    cfg = D.Config(coordinate=coordinate, sigma=30.0 if coordinate == "surface" else 0.1,
                   eps=40.0 if coordinate == "surface" else 0.1, block=7)
    got_m = D.epipolar_loss(b["maps_a"], b["maps_b"], b["P_a"], b["P_b"], cfg)
    got_t = D.photometric_loss(b["maps_a"], b["maps_b"], b["colours_a"], b["colours_b"], cfg)
    pa, pb = D.pair_pixels(b["maps_a"], b["maps_b"], coordinate)
    Fm = fundamental_from_projections(b["P_a"], b["P_b"]).float()
    kw = dict(sigma=cfg.sigma, eps=cfg.eps, groups_a=pa["groups"], groups_b=pb["groups"],
              valid_a=pa["valid"], valid_b=pb["valid"])
    ref_m = dense.dense_error_materialized(pa["coord"], pb["coord"], x_a=pa["xy"], x_b=pb["xy"], F=Fm, **kw)
    col = lambda c, px: torch.stack([c[n, :, px["xy"][n, :, 1].long(), px["xy"][n, :, 0].long()].T  # noqa: E731
                                     for n in range(len(c))])
    ref_t = dense.dense_error_materialized(pa["coord"], pb["coord"], c_a=col(b["colours_a"], pa),
                                           c_b=col(b["colours_b"], pb), **kw)
    assert float(got_m.detach()) == pytest.approx(float(ref_m.detach().mean()), rel=1e-4)
    assert float(got_t.detach()) == pytest.approx(float(ref_t.detach().mean()), rel=1e-4)
    got_m.backward()
    assert b["maps_a"].grad is not None and bool(b["maps_a"].grad.abs().sum() > 0)


def test_loss_names_and_make_loss(smoke):
    plan, net, splits = smoke
    assert D.loss_terms("L+R+M") == {"L", "R", "M"}
    for bad in ("", "L+X", "L++M", "l+m"):
        with pytest.raises(ValueError, match="loss"):
            D.loss_terms(bad)
    batch = next(iter(D.PairBatches(splits.train, splits.labelled, 2, 2)))
    loss, logs = D.make_loss("L+R+M+T", plan.config)(net, batch)
    assert set(logs) == {"L_L", "L_R", "L_M", "L_T"} and loss.requires_grad
    no_labels = {k: v for k, v in batch.items() if not k.endswith("_l")}
    with pytest.raises(ValueError, match="labelled"):
        D.make_loss("L+M", plan.config)(net, no_labels)
    _, logs = D.make_loss("R+M", plan.config)(net, no_labels)
    assert set(logs) == {"L_R", "L_M"}


def test_pair_batches(smoke):
    _, _, splits = smoke
    it = D.PairBatches(splits.train, splits.labelled, 16, 3, pair_views=[0, 2], seed=5, epoch=3)
    batches = list(it)
    assert len(batches) == 3 and batches[0]["enc_l"].shape[0] == 3
    views = splits.train
    for b in batches:
        for key in ("a", "b"):
            # every encoding comes from cameras 0 or 2 of some frame
            enc = b[f"enc_{key}"]
            hits = [(enc[i][None, None] == views.encoding[:, [0, 2]]).flatten(2).all(-1).any()
                    for i in range(len(enc))]
            assert all(hits)
        assert not torch.equal(b["P_a"], b["P_b"])
        assert not (b["P_a"] == b["P_b"]).flatten(1).all(1).any()  # a != b in every pair
    again = list(D.PairBatches(splits.train, splits.labelled, 16, 3, pair_views=[0, 2], seed=5, epoch=3))
    assert all(torch.equal(x["enc_a"], y["enc_a"]) for x, y in zip(batches, again))
    for bad in ([0], [0, 0], [0, 9]):
        with pytest.raises(ValueError, match="pair_views"):
            D.PairBatches(splits.train, splits.labelled, 2, 2, pair_views=bad)
    with pytest.raises(ValueError, match="labelled"):
        D.PairBatches(splits.train, None, 2, 2)


def test_select_views(smoke):
    _, _, splits = smoke
    sub = splits.test.select_views([1, 3])
    assert sub.views == 2 and torch.equal(sub.P[:, 1], splits.test.P[:, 3])
    assert sub.vertices is splits.test.vertices and len(sub) == len(splits.test)


@pytest.mark.parametrize("field,value", [("sigma", 0.0), ("eps", -1.0), ("normalize", "rows"),
                                         ("coordinate", "xyz"), ("w_epipolar", -1.0),
                                         ("block", 0), ("output_size", 1.5)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        D.Config(**{field: value})


def test_a_short_training_lowers_the_epipolar_loss(smoke):
    plan, _, splits = smoke
    torch.manual_seed(0)
    net = D.initial_net(plan)
    cfg = dataclasses.replace(plan.config, w_epipolar=1.0)
    hist = D.fit(net, "L+R+M", splits, 40, config=cfg, batch_pairs=4, batch_labelled=4, lr=3e-3,
                 device="cpu", progress=False, log_every=1)
    _, v = hist.series("L_M")
    v = torch.as_tensor(v)
    assert float(v[-8:].mean()) < float(v[:8].mean())
