"""Full-size smoke: chapter 10's full-profile models, at full size, take one training step on CPU.

The full profile runs on GPUs; this test checks without one that its configuration builds, that
one forward/backward/update step of each stage runs with batch 1 on studio frames (cropped at the
full profile's crop size), and prints the step time and the process's peak memory
(``bench/RESULTS.md`` records them). With a published ResNet-152 checkpoint the backbone is
larger (``bench/bench_full_size.py`` measures that case).
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import time

import pytest
import torch

from mvbook.methods import learnable_triangulation as lt
from mvbook.nn.v2v import V2VNet
from mvbook.studio import open_data


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


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
