"""Full-size smoke: chapters 10 and 11's full-profile models, at full size, take one training
step on CPU.

The full profile runs on GPUs; these tests check without one that its configuration builds, that
one forward/backward/update step of each stage runs with batch 1 on studio frames (cropped at the
full profile's crop size), and print the step times and the peak memory (``bench/RESULTS.md``
records them). With a published ResNet-152 checkpoint chapter 10's backbone is larger.
Chapter 11's step runs in a fresh process (``python tests/test_full_size.py weak25d``), so its
peak memory is its own.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import resource
import subprocess
import sys
import time

import pytest
import torch

from mvbook.methods import learnable_triangulation as lt
from mvbook.methods import weak25d as W
from mvbook.nn.backbones import SimpleBaseline, resnet18_like
from mvbook.nn.v2v import V2VNet
from mvbook.studio import open_data


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _own_peak_rss_gib() -> float:
    """Peak resident memory of this process's own image (VmHWM, reset by exec; ru_maxrss is
    not: after fork + exec it can report the parent's peak)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return _peak_rss_gib()


@pytest.fixture(scope="module")
def full_plan():
    plan = lt.settings("full")
    # the zoo's full pose2d weights live in the cache of a GPU machine: same network, fresh weights
    return dataclasses.replace(plan, pretrained="none", steps=dict(pretrain=1, algebraic=1, volumetric=1))


def test_full_profile_is_the_papers_volumetric_configuration(full_plan):
    cfg = full_plan.config
    assert (cfg.volume_resolution, cfg.volume_size, cfg.volume_channels) == (64, 2500.0, 32)
    assert (cfg.v2v_layout, cfg.v2v_width, cfg.v2v_levels, cfg.v2v_front_kernel) == ("authors", 32, 5, 7)
    assert cfg.train_root == "predicted" and not cfg.freeze_backbone
    assert full_plan.lr["algebraic"] == 1e-5 and full_plan.lr["volumetric"] == 1e-3
    assert full_plan.backbone_lr == {"volumetric": 1e-4} and full_plan.schedule == "constant"
    v2v = V2VNet(cfg.volume_channels, 17, cfg.v2v_width, cfg.v2v_levels, front_kernel=7, layout="authors")
    assert sum(p.numel() for p in v2v.parameters()) > 10_000_000  # the authors' V2V, not a reduced one


def test_one_full_size_step_per_stage_on_cpu(full_plan, capsys):
    torch.manual_seed(0)
    cfg = full_plan.config
    ds = open_data("studio", profile="smoke", split="train", seed=0)
    frames = lt.prepare(ds, cfg, stride=max(1, len(ds) // 2), progress=False).subset([0, 1])
    backbone = lt.initial_backbone(dataclasses.replace(full_plan, pretrained="none"))
    plan = dataclasses.replace(full_plan, batch=dict(pretrain=1, algebraic=1, volumetric=1))
    report = []
    t = time.perf_counter()
    alg = lt.AlgebraicTriangulationNet(copy.deepcopy(backbone), cfg)
    h = lt.fit(alg, "algebraic", frames, plan, device="cpu", progress=False)
    report.append(("algebraic", time.perf_counter() - t, h))
    pelvis = lt.predict(lt.algebraic_predictor(alg), frames, models=[alg])["pred"][:, cfg.root_joint]
    t = time.perf_counter()
    vol = lt.VolumetricTriangulationNet(copy.deepcopy(backbone), cfg)
    h = lt.fit(vol, "volumetric", lt.with_roots(frames, pelvis), plan, device="cpu", progress=False)
    report.append(("volumetric", time.perf_counter() - t, h))
    for stage, _, hist in report:
        assert torch.isfinite(torch.tensor(hist.series("loss")[1])).all(), stage
    with capsys.disabled():
        print("\nfull-size smoke (chapter 10, CPU, batch 1 x 4 views, crop "
              f"{cfg.crop_size} px, volume {cfg.volume_resolution}^3): "
              + ", ".join(f"{s} step {sec:.1f} s" for s, sec, _ in report)
              + f"; peak memory of the test process {_peak_rss_gib():.1f} GiB")


# -- chapter 11 -----------------------------------------------------------------------------------


def test_chapter_11_full_profile_configuration():
    zoo, scratch = W.settings("full"), W.settings("full", pretrained="none")
    # on the zoo: the full pose2d detector (ResNet-18-shaped, 256 px crops, 64 x 64 heatmaps), frozen
    assert (zoo.pretrained, zoo.zoo_profile, zoo.config.crop_size, zoo.config.heatmap_size) == (
        "pose2d", "full", 256, 64)
    assert zoo.steps == {"2d": 0, "weak": 10000, "full": 10000} and zoo.batch_mv == 32
    # from scratch: a ResNet-18-shaped 2.5D network on 128 px crops
    assert scratch.config.backbone == resnet18_like() and scratch.config.crop_size == 128
    assert scratch.steps == {"2d": 40000, "weak": 20000, "full": 20000}
    assert (scratch.batch_2d, scratch.batch_mv) == (64, 16)
    # the dry run keeps the networks and shrinks the data and the schedule
    for pre, plan in (("pose2d", zoo), ("none", scratch)):
        dry = W.settings("full", pretrained=pre, dry_run=True)
        assert dry.config == plan.config and set(dry.frames.values()) == {2}
        assert dry.steps == {k: min(v, 1) for k, v in plan.steps.items()}
        assert dry.batch_2d <= 2 and dry.batch_mv <= 2 and dry.fit_iters == 1


def _weak25d_full_size_steps() -> dict:
    """One step per training stage of chapter 11's full-profile models at full size, CPU, batch 1;
    the seconds of each step, the final losses and the process's peak memory (GiB)."""
    torch.manual_seed(0)
    ds = open_data("studio", profile="smoke", split="train", seed=0, progress=False)
    out: dict = {"steps": {}, "loss": {}}

    def timed(name, fn, *args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        out["steps"][name] = time.perf_counter() - t
        return result

    # 1. the zoo path: the full pose2d detector (fresh weights: the zoo's full weights live in the
    #    cache of a GPU machine), frozen, and a depth head; one multiview frame of 4 views
    plan = W.settings("full")
    cfg = plan.config
    mv = W.prepare_multiview(ds, cfg, max_frames=1, progress=False)
    prior = W.bone_ratio_prior(mv.joints_cam[:, 0])
    model = W.ZooWeak25D(SimpleBaseline(17, cfg.backbone), cfg)
    enc = timed("zoo encode (4 crops, forward)", model.encode, mv.images.flatten(0, 1))
    for mode in ("weak", "full"):
        hist = timed(f"zoo depth head, {mode}", W.fit_depth, model, mode, enc, mv, 1, batch_mv=1,
                     lr=plan.lr[mode], prior=prior, device="cpu", progress=False)
        out["loss"][f"zoo {mode}"] = hist.series("loss")[1][-1]
    # 2. from scratch: the ResNet-18-shaped 2.5D network, 1 labelled image + 1 frame of 4 views
    plan = W.settings("full", pretrained="none")
    cfg = plan.config
    images = W.prepare_images(ds, cfg, max_frames=1, progress=False)
    mv = W.prepare_multiview(ds, cfg, max_frames=1, progress=False)
    for mode in ("2d", "weak", "full"):
        net = W.Weak25DNet(17, cfg)
        hist = timed(f"from scratch, {mode}", W.fit, net, mode, images, mv, 1, batch_2d=1,
                     batch_mv=1, lr=plan.lr[mode], prior=prior, device="cpu", progress=False)
        out["loss"][f"scratch {mode}"] = hist.series("loss")[1][-1]
    out["parameters"] = {"zoo detector": sum(p.numel() for p in model.detector.parameters()),
                         "zoo depth head": sum(p.numel() for p in model.head.parameters()),
                         "from scratch": sum(p.numel() for p in net.parameters())}
    out["peak_gib"] = _own_peak_rss_gib()
    return out


def test_chapter_11_one_full_size_step_per_stage_on_cpu(capsys):
    run = subprocess.run([sys.executable, __file__, "weak25d"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(torch.isfinite(torch.tensor(v)) for v in out["loss"].values()), out["loss"]
    assert out["parameters"]["zoo detector"] > 10_000_000  # ResNet-18-shaped, not a reduced one
    with capsys.disabled():
        print("\nfull-size smoke (chapter 11, CPU, batch 1): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in out["steps"].items())
              + f"; peak memory of the process {out['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    if sys.argv[1:] != ["weak25d"]:
        raise SystemExit("usage: python tests/test_full_size.py weak25d")
    print(json.dumps(_weak25d_full_size_steps()))
