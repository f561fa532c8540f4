"""Tests of MCSS (mvbook.methods.mcss): the metric loss, the canonical pose, training and the
retrieval metric."""

from __future__ import annotations

import math

import pytest
import torch

from mvbook.methods import mcss as M
from mvbook.metrics import retrieval_pa_mpjpe_at_k
from mvbook.train import TrainConfig, train


def reference_hardnet(a: torch.Tensor, p: torch.Tensor, alpha: float, beta: float) -> float:
    """Eqs. 1-2 written with loops: the obviously correct reading."""
    m = len(a)
    total = 0.0
    for i in range(m):
        d_ii = float((a[i] - p[i]).norm())
        cands = []
        for j in range(m):
            if j != i:
                d_ij = float((a[i] - p[j]).norm())  # row: anchor i against positive j
                if d_ij > beta:
                    cands.append(d_ij)
                d_ji = float((a[j] - p[i]).norm())  # column: anchor j against positive i
                if d_ji > beta:
                    cands.append(d_ji)
        hinge = max(0.0, alpha - min(cands)) if cands else 0.0
        total += d_ii + hinge
    return total / m


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("seed", range(5))
def test_hardnet_loss_equals_reference_loop(seed):
    g = torch.Generator().manual_seed(seed)
    m, E = 9, 6
    a = unit(torch.randn(m, E, generator=g, dtype=torch.float64))
    p = unit(a + 0.4 * torch.randn(m, E, generator=g, dtype=torch.float64))
    for alpha, beta in ((0.6, 0.3), (1.5, 0.9), (0.6, 0.0)):
        loss, logs = M.hardnet_loss(a, p, alpha, beta)
        assert float(loss) == pytest.approx(reference_hardnet(a, p, alpha, beta), abs=1e-6)


def test_hardnet_loss_with_ties_and_no_valid_negative():
    # ties: duplicated anchors and positives give equal distances in several places
    g = torch.Generator().manual_seed(7)
    base = unit(torch.randn(3, 4, generator=g, dtype=torch.float64))
    a = torch.cat([base, base[:1]])
    p = torch.cat([unit(base + 0.1), unit(base[:1] + 0.1)])
    for beta in (0.0, 0.3):
        loss, _ = M.hardnet_loss(a, p, 0.6, beta)
        assert float(loss) == pytest.approx(reference_hardnet(a, p, 0.6, beta), abs=1e-6)
    # no valid negative for anyone: every off-diagonal distance is below beta
    a = unit(torch.ones(4, 3, dtype=torch.float64) + 0.01 * torch.randn(4, 3, generator=g, dtype=torch.float64))
    p = a.clone()
    loss, logs = M.hardnet_loss(a, p, 0.6, 0.3)
    D, valid = M.hardest_negatives(M.distance_matrix(a, p), 0.3)
    assert not bool(valid.any()) and bool(torch.isinf(D).all())
    assert float(loss) == pytest.approx(reference_hardnet(a, p, 0.6, 0.3), abs=1e-5)
    assert float(loss) < 1e-4 and float(logs["valid"]) == 0.0
    # one anchor (the bisector c) without a valid negative among anchors with one
    e1, e2 = torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64)
    a = torch.stack([e1, e2, unit(e1 + e2)])
    p = a.clone()
    loss, logs = M.hardnet_loss(a, p, 1.6, 1.0)
    _, valid = M.hardest_negatives(M.distance_matrix(a, p), 1.0)
    assert valid.tolist() == [True, True, False]
    assert float(loss) == pytest.approx(reference_hardnet(a, p, 1.6, 1.0), abs=1e-5)


def test_hardnet_gradient_is_finite_for_coinciding_embeddings():
    a = unit(torch.randn(5, 8, dtype=torch.float64)).requires_grad_(True)
    loss, _ = M.hardnet_loss(a, a.detach().clone(), 0.6, 0.3)
    loss.backward()
    assert torch.isfinite(a.grad).all()


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 300 * torch.randn(n, 17, 3, generator=g, dtype=torch.float64) + torch.tensor(
        [1000.0, -500.0, 900.0], dtype=torch.float64)


def test_canonical_pose_is_invariant_to_yaw_and_translation():
    X = random_poses(32)
    can, R = M.to_canonical(X)
    u = can[:, M.LEFT_HIP]
    assert torch.allclose(can[:, M.ROOT_JOINT], torch.zeros_like(can[:, 0]))
    assert torch.allclose(u[:, 1], torch.zeros_like(u[:, 1]), atol=1e-9)   # in the x-z plane
    assert bool((u[:, 0] > 0).all())                                         # along +x
    g = torch.Generator().manual_seed(1)
    yaw = (torch.rand(32, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    shift = 1000 * torch.randn(32, 1, 3, generator=g, dtype=torch.float64)
    Y = X @ M.rotation_z(yaw).transpose(-1, -2) + shift
    can_y, _ = M.to_canonical(Y)
    assert torch.allclose(can_y, can, atol=1e-8)
    # a tilt (not about the vertical) changes it
    tilt = torch.tensor([[1.0, 0, 0], [0, math.cos(0.3), -math.sin(0.3)], [0, math.sin(0.3), math.cos(0.3)]],
                        dtype=torch.float64)
    assert not torch.allclose(M.to_canonical(X @ tilt.T)[0], can, atol=1e-3)


def test_canonical_inverse_is_exact():
    X = random_poses(16, seed=3)
    can, R = M.to_canonical(X)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=X.dtype).expand(16, 3, 3))
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=X.dtype))
    assert torch.allclose(M.from_canonical(can, R), M.root_relative(X), atol=1e-9)
    # the vertical is untouched
    assert torch.allclose(can[..., 2], M.root_relative(X)[..., 2])


def test_canonical_angle_degenerate_vertical_bone():
    X = random_poses(1)
    X[:, M.LEFT_HIP] = X[:, M.ROOT_JOINT] + torch.tensor([0.0, 0.0, 100.0], dtype=X.dtype)
    assert float(M.canonical_angle(X)) == 0.0


def fake_frames(F: int = 40, C: int = 4, D: int = 24, seed: int = 0) -> M.FrameSet:
    """Frames whose features are a fixed random function of the pose plus a view-dependent
    nuisance: what a trunk gives, in miniature."""
    g = torch.Generator().manual_seed(seed)
    joints = random_poses(F, seed).float()
    can = M.to_canonical(joints)[0].flatten(1) / 300
    W_pose = torch.randn(can.shape[1], D, generator=g) / 7
    W_view = torch.randn(C, D, generator=g)
    feats = (can @ W_pose)[:, None] + 0.5 * W_view[None] + 0.05 * torch.randn(F, C, D, generator=g)
    subj = [f"S{1 + i % 2}" for i in range(F)]
    seq = [f"{s}_seq{i // 10}" for i, s in enumerate(subj)]
    return M.FrameSet(feats, joints, subj, seq, torch.arange(F) % 10,
                      torch.zeros(0, C, 3, 8, 8, dtype=torch.uint8))


def test_joint_batches_draw_one_subject_and_two_views():
    fr = fake_frames()
    lab = M.labelled_frames(fr, ["S1"], 0.5)
    assert len(lab) == 10 and all(fr.subject[i] == "S1" for i in lab)
    batches = M.JointBatches(fr, fr.targets(), lab, batch_metric=8, batch_pose=5, min_gap=2, seed=0)
    subj, _ = fr.ids("subject")
    for batch in batches:
        assert batch["anchor"].shape == (8, 24) and batch["pose_features"].shape == (5, 24)
        # the anchor rows are views of frames of one subject; anchor and positive views differ
        rows = [int(torch.nonzero((fr.features == batch["anchor"][k]).all(-1)).flatten()[0])
                for k in range(8)]
        assert len({int(subj[r]) for r in rows}) == 1
        assert not torch.equal(batch["anchor"], batch["positive"])
        break
    f = batches.metric_frames()
    same_seq = {}
    for i in f.tolist():
        same_seq.setdefault(fr.sequence[i], []).append(int(fr.order[i]))
    for orders in same_seq.values():
        orders.sort()
        assert all(b - a >= 2 for a, b in zip(orders, orders[1:]))


@pytest.mark.parametrize("mode", ["mcss", "baseline", "metric"])
def test_short_training_lowers_the_loss(mode):
    fr = fake_frames()
    torch.manual_seed(0)
    cfg = M.Config(hidden=32, embedding_dim=16)
    head = M.MCSSHead(fr.features.shape[-1], cfg)
    lab = M.labelled_frames(fr, ["S1", "S2"], 1.0)
    targets = fr.targets()
    head.set_normalization(targets[lab])
    data = M.JointBatches(fr, targets, None if mode == "metric" else lab,
                          batch_metric=0 if mode == "baseline" else 16, batch_pose=16, seed=0)
    loss_fn = M.make_loss(mode, cfg)
    batch = next(iter(data))
    with torch.no_grad():
        before = float(loss_fn(head, batch)[0])
    hist = M.fit(head, mode, fr, lab, 300, batch_metric=16, batch_pose=16, lr=3e-3,
                 device="cpu", progress=False)
    with torch.no_grad():
        after = float(loss_fn(head, batch)[0])
    assert after < 0.85 * before, (before, after)
    assert hist.last("loss") < hist.series("loss")[1][0]


def test_mcss_head_and_evaluate_shapes():
    fr = fake_frames()
    head = M.MCSSHead(fr.features.shape[-1], M.Config(hidden=32, embedding_dim=16))
    out = head(fr.features[:, 0])
    assert torch.allclose(out["embedding"].norm(dim=-1), torch.ones(len(fr)), atol=1e-5)
    assert out["pose"].shape == (len(fr), 17, 3)
    m = M.evaluate(head, fr)
    assert set(m) == {"MPJPE", "N-MPJPE", "PA-MPJPE"} and all(math.isfinite(v) for v in m.values())
    r = M.retrieval(torch.randn(len(fr), 4, 16), fr, ks=(1, 5), queries=12)
    assert r["relative"][1] == pytest.approx(r["ours"][1] - r["oracle"][1])
    assert all(r["oracle"][k] <= r["ours"][k] + 1e-9 for k in (1,))


def brute_force_retrieval(qe, ge, qp, gp, k, qv, gv, allowed, oracle):
    from mvbook.metrics import pa_mpjpe

    total = 0.0
    for i in range(len(qe)):
        scores = []
        for j in range(len(ge)):
            if qv[i] == gv[j] or (allowed is not None and not allowed[i, j]):
                continue
            err = float(pa_mpjpe(gp[j], qp[i]))
            key = err if oracle else float((qe[i] - ge[j]).norm())
            scores.append((key, err))
        scores.sort(key=lambda t: t[0])
        total += sum(e for _, e in scores[:k]) / k
    return total / len(qe)


@pytest.mark.parametrize("oracle", [False, True])
def test_retrieval_metric_equals_brute_force(oracle):
    g = torch.Generator().manual_seed(5)
    Q, G, E = 6, 20, 5
    qe, ge = torch.randn(Q, E, generator=g, dtype=torch.float64), torch.randn(G, E, generator=g, dtype=torch.float64)
    qp, gp = random_poses(Q, 1), random_poses(G, 2)
    qv, gv = torch.randint(3, (Q,), generator=g), torch.randint(3, (G,), generator=g)
    allowed = torch.rand(Q, G, generator=g) > 0.2
    for k in (1, 3):
        got = retrieval_pa_mpjpe_at_k(qe, ge, qp, gp, k=k, query_views=qv, gallery_views=gv,
                                      allowed=allowed, oracle=oracle)
        ref = brute_force_retrieval(qe, ge, qp, gp, k, qv, gv, allowed, oracle)
        assert got == pytest.approx(ref, rel=1e-6)


def test_labelled_frames_validates():
    fr = fake_frames()
    with pytest.raises(ValueError, match="fraction"):
        M.labelled_frames(fr, ["S1"], 0.0)
    with pytest.raises(ValueError, match="subjects"):
        M.labelled_frames(fr, ["S9"], 0.5)
    assert len(M.labelled_frames(fr, ["S1"], 0.01)) == 1


def test_settings_profiles():
    for profile in ("smoke", "quick", "full"):
        plan = M.settings(profile)
        assert plan.config.alpha == 0.6 and plan.config.beta == 0.3
        assert plan.config.embedding_dim == 128
    quick = M.settings("quick")
    assert quick.batch_metric == 3 * quick.batch_pose   # the paper's 3:1
    with pytest.raises(ValueError, match="representation"):
        M.Config(representation="camera")
    assert TrainConfig(steps=1).steps == 1 and callable(train)


def test_finetuned_last_stage_starts_equal_to_the_frozen_trunk():
    from mvbook import zoo

    trunk = zoo.load("trunk")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 128, 128), generator=g, dtype=torch.uint8)
    frozen = M.MCSSNet(trunk, M.Config())
    tuned = M.MCSSNet(trunk, M.Config(finetune_stages=1))
    f0, f1 = frozen.encode(images), tuned.encode(images)
    assert f0.shape == (3, M.feature_dim(trunk, M.Config()))
    assert f1.shape == (3, M.feature_dim(trunk, M.Config(finetune_stages=1))) and f1.shape[1] > f0.shape[1]
    head = tuned.new_head().eval()
    assert sum(p.numel() for p in head.stages.parameters() if p.requires_grad) > 0
    assert not any(p.requires_grad for p in tuned.trunk.parameters())
    with torch.no_grad():
        assert torch.allclose(head._features(f1), f0, atol=1e-4)
    # the head's copy trains; the trunk's stage does not move
    before = [p.clone() for p in trunk.encoder[-1].parameters()]
    head.train()
    loss = head(f1)["pose"].square().mean()
    loss.backward()
    assert all(p.grad is not None for p in head.stages.parameters() if p.requires_grad)
    assert all(torch.equal(a, b) for a, b in zip(before, trunk.encoder[-1].parameters()))
    with pytest.raises(ValueError, match="finetune_stages"):
        tuned.new_head(M.Config())


def test_encode_frames_subsamples_in_time_and_keeps_labels():
    from mvbook import zoo

    g = torch.Generator().manual_seed(0)
    samples = []
    for f in range(6):
        samples.append({
            "images": torch.randint(0, 256, (4, 3, 48, 48), generator=g, dtype=torch.uint8),
            "bbox": torch.tensor([[[10.0, 8.0, 30.0, 40.0]]]).expand(4, 1, 4),
            "joints3d": random_poses(1, f).float(),
            "frame": f, "subject": "S1", "sequence": "S1_walk_0"})
    net = M.MCSSNet(zoo.load("trunk"), M.Config())
    fs = M.encode_frames(samples, net, net.config, frame_stride=2, keep_images=1, chunk=2,
                         progress=False)
    assert len(fs) == 3 and fs.order.tolist() == [0, 1, 2]
    assert fs.features.shape == (3, 4, M.feature_dim(net.trunk, net.config))
    assert fs.images.shape == (1, 4, 3, 128, 128)
    assert torch.equal(fs.joints[1], samples[2]["joints3d"][0])
    from mvbook.crops import crop_images, square_boxes

    box = square_boxes(samples[2]["bbox"][:, 0].double(), net.config.crop_scale)
    crops = crop_images(samples[2]["images"], box, net.config.crop_size)
    assert torch.equal(fs.images[0], crop_images(samples[0]["images"], box, net.config.crop_size))
    assert torch.allclose(net.encode(crops), fs.features[1], atol=1e-5)
    with pytest.raises(ValueError, match="frame_stride"):
        M.encode_frames(samples, net, net.config, frame_stride=0)
