"""Tests of mvbook.methods.learnable_triangulation on small synthetic rigs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mvbook.crops import crop_to_heatmap
from mvbook.data.fixtures import look_at_rig, random_people
from mvbook.data.format import complete_annotations
from mvbook.methods import learnable_triangulation as lt
from mvbook.nn import BackboneConfig, SimpleBaseline
from mvbook.nn.backbones import BackboneOutput
from mvbook.train import TrainConfig, train
from mvbook.volumetric import make_grid

J = 17

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def make_samples(n: int = 6, C: int = 4, size=(96, 96), seed: int = 0, dist=None) -> list[dict]:
    rng = np.random.default_rng(seed)
    K, R, t, d = look_at_rig(C, size, radius=3500.0, height=1000.0, dist=dist, focal=60.0)
    out = []
    for i in range(n):
        X = random_people(rng, 1, J, spread=200.0)
        ann = complete_annotations(X, np.ones(1, bool), K, R, t, d, size)
        s = {
            "images": torch.from_numpy(rng.integers(0, 256, (C, 3, size[1], size[0]), dtype=np.uint8)),
            "K": torch.from_numpy(K).float(),
            "R": torch.from_numpy(R).float(),
            "t": torch.from_numpy(t).float(),
            "dist": torch.from_numpy(d).float(),
            "joints3d": torch.from_numpy(X).float(),
            **{k: torch.from_numpy(v) for k, v in ann.items()},
            "subject": "S9" if i % 2 else "S11",
            "action": "Walking" if i % 3 else "Sitting",
            "index": i,
        }
        out.append(s)
    return out


def small_config(**kw) -> lt.Config:
    base = dict(
        crop_size=32,
        backbone=BackboneConfig(width=8, blocks=(1, 1, 1), deconv_layers=2, deconv_channels=16),
        volume_resolution=8,
        volume_channels=4,
        v2v_width=8,
        v2v_levels=1,
        confidence_hidden=16,
        volume_size=2500.0,
    )
    base.update(kw)
    return lt.Config(**base)


@pytest.fixture(scope="module")
def crops():
    return lt.prepare(make_samples(), small_config(), progress=False)


# ---------------------------------------------------------------- losses


def test_soft_mse_loss_values():
    eps = 400.0
    gt = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[10.0, 0.0, 0.0], [30.0, 0.0, 0.0]]])
    # joint 0: 100 <= eps -> plain squared error; joint 1: 900 > eps -> 900^0.1 * eps^0.9
    expected = (100.0 + 900.0**0.1 * eps**0.9) / 6
    assert lt.soft_mse_loss(pred, gt, eps).item() == pytest.approx(expected, rel=1e-5)
    # continuous at the threshold
    a = lt.soft_mse_loss(torch.tensor([[[20.0 - 1e-3, 0, 0]]]), torch.zeros(1, 1, 3), eps)
    b = lt.soft_mse_loss(torch.tensor([[[20.0 + 1e-3, 0, 0]]]), torch.zeros(1, 1, 3), eps)
    assert a.item() == pytest.approx(b.item(), rel=1e-3)
    # the mask drops joint 1
    valid = torch.tensor([[True, False]])
    assert lt.soft_mse_loss(pred, gt, eps, valid).item() == pytest.approx(100.0 / 3)
    # small errors: plain MSE
    p = torch.randn(2, 5, 3)
    assert lt.soft_mse_loss(p, torch.zeros_like(p), 1e6).item() == pytest.approx((p**2).mean().item(), rel=1e-5)


def test_volumetric_loss_values_and_gradients():
    grid = make_grid(torch.zeros(1, 3), 400.0, 4)  # voxel side 100 mm
    gt = grid[:, 1, 2, 3][:, None]  # (1, 1, 3): exactly a voxel centre
    pred = gt + torch.tensor([10.0, -20.0, 30.0])
    volumes = torch.zeros(1, 1, 4, 4, 4, requires_grad=True)
    loss, logs = lt.volumetric_loss(pred, gt, volumes, grid, beta=0.5)
    # L1 term: mean |diff| over coordinates = 20; heatmap term: -log(1/64) for a flat volume
    assert logs["l1"].item() == pytest.approx(20.0)
    assert logs["heatmap"].item() == pytest.approx(math.log(64.0), rel=1e-5)
    assert loss.item() == pytest.approx(20.0 + 0.5 * math.log(64.0), rel=1e-5)
    loss.backward()
    g = volumes.grad[0, 0]
    # the gradient raises the ground-truth voxel and lowers the others
    assert g[1, 2, 3] < 0 and (g.flatten().argmin() == 1 * 16 + 2 * 4 + 3)


# ---------------------------------------------------------------- cropping


def test_prepare_crops_cameras_are_consistent(crops):
    t = crops.tensors
    assert t["images"].shape == (6, 4, 3, 32, 32) and t["images"].dtype == torch.uint8
    assert t["P"].shape == (6, 4, 3, 4) and t["joints2d"].shape == (6, 4, J, 2)
    # projecting the 3D joints with the crop cameras gives the cropped 2D joints
    X = t["joints3d"]
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], -1)
    p = torch.einsum("ncij,nkj->ncki", t["P"], Xh)
    torch.testing.assert_close(p[..., :2] / p[..., 2:], t["joints2d"], atol=1e-2, rtol=1e-4)
    assert crops.subjects == ["S11", "S9"] and set(crops.actions) == {"Sitting", "Walking"}


# ---------------------------------------------------------------- models


def test_algebraic_model_shapes_and_gradients(crops):
    torch.manual_seed(0)
    cfg = small_config()
    model = lt.AlgebraicTriangulationNet(SimpleBaseline(J, cfg.backbone), cfg)
    batch = crops.subset([0, 1]).all()
    out = model(batch["images"], batch["P"])
    assert out["joints3d"].shape == (2, J, 3)
    assert out["joints2d"].shape == (2, 4, J, 2)
    assert out["confidences"].shape == (2, 4, J) and (out["confidences"] > 0).all()
    assert torch.isfinite(out["joints3d"]).all()
    loss, logs = lt.make_loss("algebraic", cfg)(model, batch)
    loss.backward()
    assert model.backbone.final.weight.grad.abs().sum() > 0
    assert model.confidence.head[-1].weight.grad.abs().sum() > 0
    assert "mpjpe" in logs


def test_algebraic_weighted_dlt_matches_eq4():
    """The confidence-weighted DLT equals the SVD of (w o A) y = 0 written out by hand."""
    from mvbook.geometry import triangulate

    g = torch.Generator().manual_seed(0)
    K, R, t, _ = look_at_rig(4, (64, 64), dist=None)
    P = torch.from_numpy(K @ np.concatenate([R, t[..., None]], -1)).double()
    X = torch.tensor([[100.0, -50.0, 900.0]], dtype=torch.float64)
    uv = torch.einsum("cij,nj->cni", P, torch.cat([X, torch.ones(1, 1, dtype=torch.float64)], -1))
    uv = uv[..., :2] / uv[..., 2:] + torch.randn(4, 1, 2, generator=g, dtype=torch.float64) * 2
    w = torch.tensor([1.0, 0.2, 3.0, 0.5], dtype=torch.float64)
    rows = []
    for c in range(4):
        rows.append(w[c] * (uv[c, 0, 0] * P[c, 2] - P[c, 0]))
        rows.append(w[c] * (uv[c, 0, 1] * P[c, 2] - P[c, 1]))
    A = torch.stack(rows)
    y = torch.linalg.svd(A).Vh[-1]
    ref = y[:3] / y[3]
    got = triangulate(uv, P, weights=w[:, None], normalize=False)[0]
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-6)


@pytest.mark.parametrize("mode", ["sum", "conf", "softmax"])
def test_volumetric_model_shapes_and_gradients(crops, mode):
    torch.manual_seed(0)
    cfg = small_config(aggregation=mode)
    model = lt.VolumetricTriangulationNet(SimpleBaseline(J, cfg.backbone), cfg)
    batch = crops.subset([0, 1]).all()
    root = batch["joints3d"][:, 0]
    out = model(batch["images"], batch["P"], root, torch.tensor([0.1, 2.0]))
    R = cfg.volume_resolution
    assert out["joints3d"].shape == (2, J, 3)
    assert out["volumes"].shape == (2, J, R, R, R) and out["grid"].shape == (2, R, R, R, 3)
    # soft-argmax keeps the joints inside the cube
    assert ((out["joints3d"] - root[:, None]).abs() <= cfg.volume_size / 2).all()
    loss, logs = lt.make_loss("volumetric", cfg, generator=torch.Generator().manual_seed(0))(model, batch)
    loss.backward()
    assert model.backbone.final.weight.grad is None  # heatmap layer unused by the volumetric path
    assert model.backbone.deconv[0].weight.grad.abs().sum() > 0
    assert model.process.weight.grad.abs().sum() > 0
    assert model.v2v.output.weight.grad.abs().sum() > 0
    if mode == "conf":
        assert "confidences" in out and out["confidences"].shape == (2, 4)
        assert model.confidence.head[-1].weight.grad.abs().sum() > 0
    assert set(logs) >= {"l1", "heatmap", "mpjpe"}


def test_frozen_backbone_stays_in_eval_mode(crops):
    cfg = small_config(freeze_backbone=True)
    model = lt.AlgebraicTriangulationNet(SimpleBaseline(J, cfg.backbone), cfg)
    model.train()
    assert not model.backbone.training and model.confidence.training
    assert all(not p.requires_grad for p in model.backbone.parameters())


# ---------------------------------------------------------------- training and evaluation


def _loss_drop(model, loss_fn, batch, steps, lr):
    with torch.no_grad():
        model.eval()
        before = loss_fn(model, batch)[0].item()
    train(model, loss_fn, [batch], TrainConfig(steps=steps, lr=lr, progress=False, seed=0))
    with torch.no_grad():
        after = loss_fn(model, batch)[0].item()
    return before, after


def test_training_steps_lower_the_losses(crops):
    torch.manual_seed(0)
    cfg = small_config()
    batch = crops.subset([0, 1, 2, 3]).all()
    backbone = SimpleBaseline(J, cfg.backbone)
    before, after = _loss_drop(backbone, lt.make_loss("pretrain", cfg), batch, 15, 3e-3)
    assert after < before
    alg = lt.AlgebraicTriangulationNet(backbone, cfg)
    before, after = _loss_drop(alg, lt.make_loss("algebraic", cfg), batch, 15, 3e-3)
    assert after < before
    cfg_v = small_config(train_yaw=False)
    vol = lt.VolumetricTriangulationNet(SimpleBaseline(J, cfg.backbone), cfg_v)
    before, after = _loss_drop(vol, lt.make_loss("volumetric", cfg_v), batch, 15, 3e-3)
    assert after < before


def test_evaluate_and_tables(crops):
    torch.manual_seed(0)
    cfg = small_config()
    backbone = SimpleBaseline(J, cfg.backbone)
    alg = lt.AlgebraicTriangulationNet(backbone, cfg)
    vol = lt.VolumetricTriangulationNet(backbone, cfg)
    preds = {
        "naive": lt.naive_predictor(backbone),
        "ransac": lt.ransac_predictor(backbone, threshold=3.0),
        "algebraic": lt.algebraic_predictor(alg),
        "volumetric": lt.volumetric_predictor(vol, root=lt.algebraic_predictor(alg)),
    }
    results = {
        k: lt.predict(p, crops, batch_size=4, models=[alg, vol], views=[0, 1, 2])
        for k, p in preds.items()
    }
    for r in results.values():
        assert r["pred"].shape == (6, J, 3) and r["gt"].shape == (6, J, 3)
    names, cols, values = lt.errors_table(results, crops.actions, root_joint=0)
    assert names == list(preds) and cols[-1] == "average" and values.shape == (4, 3)
    _, _, absolute = lt.errors_table(results, crops.actions, root_joint=None)
    assert np.isfinite(values[:, -1]).all() and np.isfinite(absolute[:, -1]).all()
    # evaluate() reduces the same predictions to the tables' averages, as plain floats
    metrics = lt.evaluate(preds["naive"], crops, batch_size=4, views=[0, 1, 2])
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["MPJPE"] == pytest.approx(values[0, -1], rel=1e-6)
    assert metrics["MPJPE absolute"] == pytest.approx(absolute[0, -1], rel=1e-6)
    assert {f"MPJPE, {a}" for a in cols[:-1]} <= set(metrics)


def test_cached_backbone_gives_the_same_predictions(crops):
    torch.manual_seed(0)
    cfg = small_config(freeze_backbone=True)
    backbone = SimpleBaseline(J, cfg.backbone).eval()
    cached = lt.cache_backbone(backbone, crops, dtype=torch.float32)
    assert cached.tensors["heatmaps"].shape[:3] == (6, 4, J)
    alg = lt.AlgebraicTriangulationNet(backbone, cfg).eval()
    vol = lt.VolumetricTriangulationNet(backbone, cfg).eval()
    for p in (lt.algebraic_predictor(alg), lt.volumetric_predictor(vol), lt.naive_predictor(backbone)):
        a = lt.predict(p, crops, batch_size=3)["pred"]
        b = lt.predict(p, cached, batch_size=3, views=None)["pred"]
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-4)
    # a trainable backbone refuses cached outputs
    with pytest.raises(ValueError, match="freeze_backbone"):
        lt.AlgebraicTriangulationNet(backbone, small_config())(
            crops.tensors["images"][:1], crops.tensors["P"][:1],
            cached=BackboneOutput(*(cached.tensors[k][:1] for k in lt.CACHE_KEYS)),
        )


def _stream_predictors(backbone, cfg):
    torch.manual_seed(1)
    alg = lt.AlgebraicTriangulationNet(backbone, cfg).eval()
    vol = lt.VolumetricTriangulationNet(backbone, cfg).eval()
    return {"naive": (lt.naive_predictor(backbone), [backbone]),
            "algebraic": (lt.algebraic_predictor(alg), [alg]),
            "volumetric": (lt.volumetric_predictor(vol, root=lt.algebraic_predictor(alg)), [vol, alg])}


@pytest.mark.parametrize("frozen", [False, True])
def test_streamed_evaluation_equals_in_memory_evaluation(frozen):
    """Cropping the test set chunk by chunk (CropStream) gives the same per-frame predictions,
    subjects, actions and per-action tables as cropping it all at once (prepare)."""
    torch.manual_seed(0)
    samples = make_samples(n=7, seed=3)
    samples[5]["action"] = "Eating"  # an action first seen in a later chunk
    cfg = small_config(freeze_backbone=frozen)
    backbone = SimpleBaseline(J, cfg.backbone).eval()
    held = lt.prepare(samples, cfg, progress=False)
    if frozen:
        held = lt.cache_backbone(backbone, held)
    stream = lt.CropStream(samples, cfg, chunk_size=3, backbone=backbone if frozen else None)
    assert len(stream) == 7 and stream.num_chunks == 3
    predictors = _stream_predictors(backbone, cfg)
    a = lt.predict_many(predictors, held, batch_size=3)
    b = lt.predict_many(predictors, stream, batch_size=3)
    assert held.actions == stream.actions and held.subjects == stream.subjects
    for name in predictors:
        for k in ("gt", "subject", "action", "index"):
            torch.testing.assert_close(a[name][k], b[name][k])
        torch.testing.assert_close(a[name]["pred"], b[name]["pred"], atol=1e-3, rtol=1e-5)
    for root in (0, None):
        ta = lt.errors_table(a, held.actions, root_joint=root, all_frames=True)
        tb = lt.errors_table(b, stream.actions, root_joint=root, all_frames=True)
        assert ta[:2] == tb[:2] and ta[1][-2:] == ["average", "all frames"]
        np.testing.assert_allclose(ta[2], tb[2], rtol=1e-4)
    # the rows of given frames (e.g. the held ones within a streamed evaluation of all frames)
    sub = lt.select_frames(b["naive"], held.tensors["index"][[4, 1]])
    torch.testing.assert_close(sub["pred"], b["naive"]["pred"][[4, 1]])
    assert sub["index"].tolist() == held.tensors["index"][[4, 1]].tolist()
    assert lt.select_frames(b["naive"], [0, 99]) is None
    # predict and evaluate take a stream too
    one = lt.predict(predictors["naive"][0], stream, batch_size=3)
    torch.testing.assert_close(one["pred"], a["naive"]["pred"], atol=1e-3, rtol=1e-5)
    m_held = lt.evaluate(predictors["naive"][0], held, batch_size=3)
    m_stream = lt.evaluate(predictors["naive"][0], stream, batch_size=3)
    assert m_held.keys() == m_stream.keys()
    assert all(m_held[k] == pytest.approx(m_stream[k], rel=1e-4) for k in m_held)


def test_stream_memory_is_bounded_by_the_chunk():
    """Twice the frames, the same largest chunk: what a stream holds does not grow with the
    number of test frames (the accumulated predictions are J x 3 floats per frame)."""
    cfg = small_config(freeze_backbone=True)
    backbone = SimpleBaseline(J, cfg.backbone).eval()
    samples = make_samples(n=12, seed=4)
    seen = []

    class Counting(list):
        def __getitem__(self, i):
            seen.append(int(i))
            return super().__getitem__(i)

    peaks, sizes = [], []
    for n in (6, 12):
        stream = lt.CropStream(Counting(samples[:n]), cfg, chunk_size=3, backbone=backbone)
        seen.clear()
        chunk_frames = [len(c) for c in stream.chunks()]
        assert chunk_frames == [3] * (n // 3)
        assert seen == list(range(n))  # each frame read once, in order
        peaks.append(stream.peak_bytes)
        one = lt.prepare(samples[:3], cfg, progress=False)
        sizes.append(sum(t.numel() * t.element_size()
                         for t in lt.cache_backbone(backbone, one).tensors.values()))
        out = lt.predict(lt.naive_predictor(backbone), stream, batch_size=3)
        assert out["pred"].shape == (n, J, 3)
    assert peaks[0] == peaks[1] == sizes[0]


def test_test_source_keeps_held_frames_or_streams_the_rest():
    cfg = small_config()
    samples = make_samples(n=6, seed=5)
    plan = lt.Settings(config=cfg, steps={}, batch={}, lr={},
                       max_frames={"train": None, "test": None}, max_test_frames=None, eval_chunk=4)
    held = lt.prepare(samples, cfg, progress=False)
    assert lt.test_source(samples, held, plan) is held           # every frame is in memory
    plan.max_frames["test"] = 3                                  # 3 held, all 6 to evaluate
    held3 = lt.prepare(samples, cfg, stride=lt.frame_stride(6, 3), progress=False)
    src = lt.test_source(samples, held3, plan)
    assert isinstance(src, lt.CropStream) and len(src) == 6 and src.chunk_size == 4
    plan.max_test_frames = 3                                     # the held frames are the ones
    assert lt.test_source(samples, held3, plan) is held3
    with pytest.raises(ValueError, match="held has 6 frames"):
        lt.test_source(samples, held, plan)
    frozen = dataclasses.replace(plan, config=small_config(freeze_backbone=True), max_test_frames=0)
    with pytest.raises(ValueError, match="backbone="):
        lt.test_source(samples, held3, frozen)
    assert [lt.frame_stride(10, k) for k in (None, 0, 3, 10, 20)] == [1, 1, 4, 1, 1]


def test_errors_2d_finds_left_right_confusions(crops):
    """A detector that answers every left joint with its right partner is flagged as such."""
    data = crops.subset([0, 1])
    J_ = data.tensors["joints2d"].shape[-2]
    pairs = [(1, 4), (2, 5)]
    backbone = SimpleBaseline(J_, small_config().backbone)
    out = lt.errors_2d(backbone, data, pairs)
    assert out["error"].shape == data.tensors["visibility"].shape
    # central joints: the partner is the joint itself
    torch.testing.assert_close(out["error"][..., 0], out["partner_error"][..., 0])
    # fake heatmaps peaking at the partner's ground truth: partner errors are quantisation only
    partner = torch.arange(J_)
    for a, b in pairs:
        partner[a], partner[b] = b, a
    S = data.tensors["images"].shape[-1]
    hs = S // 2
    uv = crop_to_heatmap(data.tensors["joints2d"][:, :, partner], hs, S)
    heat = torch.zeros(*uv.shape[:-1], hs, hs)
    ij = uv.round().long().clamp(0, hs - 1)
    heat.flatten(-2).scatter_(-1, (ij[..., 1] * hs + ij[..., 0])[..., None], 1.0)
    fake = lt.CropSet({**data.tensors, "heatmaps": heat, "features": heat, "encoding": heat},
                      data.subjects, data.actions)
    out = lt.errors_2d(backbone, fake, pairs)
    inside = ((uv >= 0) & (uv <= hs - 1)).all(-1)
    assert (out["partner_error"][inside] <= 1.5).all()


def test_augment_views_flips_only_when_asked():
    g = torch.Generator().manual_seed(0)
    N, S = 64, 16
    images = torch.rand(N, 3, S, S, generator=g)
    uv = torch.rand(N, J, 2, generator=g) * (S - 1)
    vis = torch.rand(N, J, generator=g) > 0.3
    pairs = [(1, 4), (2, 5)]
    im0, uv0, vis0 = lt.augment_views(images, uv, vis, pairs, torch.Generator().manual_seed(1), flip=False)
    torch.testing.assert_close(uv0, uv)
    assert torch.equal(vis0, vis)
    assert im0.shape == images.shape and im0.isfinite().all()
    _, uv1, _ = lt.augment_views(images, uv, vis, pairs, torch.Generator().manual_seed(1), flip=True)
    flipped = (uv1[..., 0] - uv[..., 0]).abs().amax(-1) > 1e-6
    assert 0 < int(flipped.sum()) < N
    # a flipped view mirrors u and swaps the pairs
    k = int(torch.nonzero(flipped)[0])
    torch.testing.assert_close(uv1[k, 4, 0], S - 1 - uv[k, 1, 0])
    torch.testing.assert_close(uv1[k, 4, 1], uv[k, 1, 1])


def test_cropset_replace_swaps_named_tensors_and_refuses_unknown_ones(crops):
    images = torch.zeros_like(crops.tensors["images"])
    new = crops.replace(images=images)
    assert new.tensors["images"] is images and new.tensors["P"] is crops.tensors["P"]
    assert crops.tensors["images"] is not images and new.subjects == crops.subjects
    with pytest.raises(ValueError, match="no tensors named \\['imgs'\\]"):
        crops.replace(imgs=images)


def test_volumetric_training_centres_the_cube_on_the_predicted_root(crops):
    cfg = small_config(train_root="predicted", train_yaw=False)
    model = lt.VolumetricTriangulationNet(SimpleBaseline(J, cfg.backbone), cfg)
    seen = []
    model.register_forward_pre_hook(lambda mod, args: seen.append(args[2].clone()))
    loss_fn = lt.make_loss("volumetric", cfg)
    batch = crops.all() if hasattr(crops, "all") else {k: v[:2] for k, v in crops.tensors.items()}
    with pytest.raises(KeyError, match="with_roots"):
        loss_fn(model, batch)
    roots = batch["joints3d"][:, 0] + torch.tensor([100.0, -50.0, 30.0])
    fed = lt.with_roots(lt.CropSet(batch, crops.subjects, crops.actions), roots)
    loss_fn(model, fed.tensors)
    torch.testing.assert_close(seen[-1], roots)
    gt_fn = lt.make_loss("volumetric", small_config(train_yaw=False))
    gt_fn(model, fed.tensors)  # train_root="gt" ignores the stored roots
    torch.testing.assert_close(seen[-1], batch["joints3d"][:, 0])
    with pytest.raises(ValueError, match="roots"):
        lt.with_roots(fed, roots[:1])


def test_fit_gives_a_trainable_backbone_its_own_learning_rate(crops):
    cfg = small_config(freeze_backbone=False)
    plan = lt.Settings(config=cfg, steps=dict(pretrain=0, algebraic=3, volumetric=3),
                       batch=dict(pretrain=2, algebraic=2, volumetric=2),
                       lr=dict(pretrain=1e-3, algebraic=1e-2, volumetric=1e-2),
                       backbone_lr=dict(algebraic=0.0), schedule="constant")
    torch.manual_seed(0)
    model = lt.AlgebraicTriangulationNet(SimpleBaseline(J, cfg.backbone), cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lt.fit(model, "algebraic", crops, plan, device="cpu", progress=False)
    after = model.state_dict()
    moved = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any(k.startswith("confidence.") for k in moved)
    # a zero rate for the backbone: its weights stay (its batch-norm statistics still update)
    assert not [k for k in moved if k.startswith("backbone.") and "running" not in k]
    with pytest.raises(ValueError, match="schedule"):
        lt.fit(model, "algebraic", crops, dataclasses.replace(plan, schedule="linear"), device="cpu",
               progress=False)


def test_cache_backbone_only_recomputes_the_chosen_crops(crops):
    from mvbook.crops import occlude

    torch.manual_seed(0)
    backbone = SimpleBaseline(J, small_config().backbone).eval()
    feed = lt.cache_backbone(backbone, crops)
    which = torch.zeros(len(crops), crops.num_views, dtype=torch.bool)
    which[0, 1] = which[3, 0] = which[3, 2] = True
    edited = feed.replace(images=occlude(crops.tensors["images"], which))
    partial = lt.cache_backbone(backbone, edited, only=which)
    full = lt.cache_backbone(backbone, edited)  # every crop again
    for k in lt.CACHE_KEYS:
        torch.testing.assert_close(partial.tensors[k].float(), full.tensors[k].float(), atol=2e-3, rtol=1e-3)
        assert torch.equal(partial.tensors[k][~which], feed.tensors[k][~which])  # the rest is kept
        assert not torch.equal(partial.tensors[k][which], feed.tensors[k][which])
    assert torch.equal(feed.tensors["heatmaps"], lt.cache_backbone(backbone, crops).tensors["heatmaps"])
    with pytest.raises(ValueError, match="run cache_backbone"):
        lt.cache_backbone(backbone, crops, only=which)
    with pytest.raises(ValueError, match="only"):
        lt.cache_backbone(backbone, feed, only=which.float())


def test_prepare_undistorts_crops_of_distorted_cameras():
    dist = (-0.2, 0.24, -0.0015, -0.001, -0.0025)  # Human3.6M-like
    samples = make_samples(n=3, dist=dist)
    assert np.abs(samples[0]["dist"].numpy()).max() > 0.1
    data = lt.prepare(samples, small_config(crop_size=48), progress=False)
    X = data.tensors["joints3d"]  # (N, J, 3)
    P = data.tensors["P"].double()  # (N, C, 3, 4)
    Xh = torch.cat([X.double(), torch.ones_like(X[..., :1]).double()], -1)
    proj = torch.einsum("ncij,nkj->ncki", P, Xh)
    uv = proj[..., :2] / proj[..., 2:]
    # the crop labels are the pinhole projections of the crop camera (distortion removed)
    torch.testing.assert_close(data.tensors["joints2d"].double(), uv, atol=1e-3, rtol=0)
    plain = lt.prepare(make_samples(n=3), small_config(crop_size=48), progress=False)
    assert not torch.allclose(plain.tensors["images"].float(), data.tensors["images"].float())
