"""Training-step throughput of the chapter-10/11 model sizes through ``mvbook.train.train``.

Prints images per second (one image = one view crop through the backbone, forward + backward +
optimizer step) on the CPU, and on CUDA when present, and appends the CPU lines to
bench/RESULTS.md. Usage: ``.venv/bin/python bench/bench_train_step.py [--steps N] [--no-append]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from mvbook.crops import crop_camera, normalize_images
from mvbook.data.fixtures import look_at_rig
from mvbook.geometry import Camera
from mvbook.methods import learnable_triangulation as lt
from mvbook.methods import weak25d as W
from mvbook.nn.backbones import BackboneConfig, SimpleBaseline, resnet18_like
from mvbook.train import TrainConfig, train

RESULTS = Path(__file__).with_name("RESULTS.md")
J = 17


def _images(n: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def case_backbone(size: int, cfg: BackboneConfig, batch: int):
    """Chapter 10 style: a SimpleBaseline trained with a heatmap MSE loss (per-view crops)."""
    model = SimpleBaseline(J, cfg)
    h = size // cfg.output_stride
    data = [{"images": _images(batch, size), "target": torch.rand(batch, J, h, h)}]

    def loss_fn(m, b):
        x = normalize_images(b["images"])
        return F.mse_loss(m(x).heatmaps.float(), b["target"]), {}

    return model, loss_fn, data, batch


def _crop_set(n: int, views: int, size: int) -> lt.CropSet:
    """``n`` random frames of a 4-camera rig, cropped around a person standing at the origin."""
    K, R, t, _ = look_at_rig(views, (256, 256), radius=4500.0, height=1500.0, dist=None)
    camera = Camera(K, R, t)
    root = torch.tensor([0.0, 0.0, 950.0])
    centre = camera.project(root[None].expand(views, 1, 3).double())[:, 0]
    boxes = torch.cat([centre - 70.0, centre + 70.0], -1)
    P_crop = crop_camera(camera, boxes, size).P.float()
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(n, J, 3, generator=g) * 300 + root
    uvw = torch.einsum("cij,nkj->ncki", P_crop, torch.cat([joints, torch.ones(n, J, 1)], -1))
    tensors = {
        "images": _images(n * views, size).view(n, views, 3, size, size),
        "P": P_crop.expand(n, -1, -1, -1).contiguous(),
        "joints2d": uvw[..., :2] / uvw[..., 2:],
        "visibility": torch.ones(n, views, J, dtype=torch.bool),
        "joints3d": joints,
        "subject": torch.zeros(n, dtype=torch.long),
        "action": torch.zeros(n, dtype=torch.long),
        "index": torch.arange(n),
    }
    return lt.CropSet(tensors, ["S1"], ["walk"])


def case_learnable(kind: str, cfg: lt.Config, batch: int, views: int = 4):
    """Chapter 10: the algebraic or volumetric model, on cached backbone outputs when frozen."""
    backbone = SimpleBaseline(J, cfg.backbone)
    data = _crop_set(4 * batch, views, cfg.crop_size)
    if cfg.freeze_backbone:
        data = lt.cache_backbone(backbone, data)
    feed = [{k: v[:batch] for k, v in data.tensors.items()}]
    if kind == "algebraic":
        model = lt.AlgebraicTriangulationNet(backbone, cfg)
    else:
        model = lt.VolumetricTriangulationNet(backbone, cfg)
    loss_fn = lt.make_loss(kind, cfg, generator=torch.Generator().manual_seed(0))
    return model, loss_fn, feed, batch * views


def case_weak(mode: str, cfg: W.Config, batch_2d: int, batch_mv: int, views: int = 4):
    """Chapter 11: the 2.5D network with the 2D-only / weak / full loss."""
    model = W.Weak25DNet(J, cfg)
    S, h = cfg.crop_size, cfg.heatmap_size
    n = 4 * batch_2d
    K = torch.tensor([[h * 1.5, 0.0, h / 2 - 0.5], [0.0, h * 1.5, h / 2 - 0.5], [0, 0, 1]])
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(n, J, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 5.0])
    joints[:, 8] = joints[:, 0] + torch.tensor([0.0, -1.0, 0.0])
    uv, zr = W.pose_to_25d(joints, K.expand(n, 3, 3))
    img = W.ImageSet(_images(n, S), uv, torch.ones(n, J, dtype=torch.bool), K.expand(n, 3, 3),
                     joints, zr, torch.ones(n), ["S1"] * n)
    mv = W.MultiviewSet(_images(n, S)[:, None].expand(n, views, 3, S, S).contiguous(),
                        K.expand(n, views, 3, 3), uv[:, None].expand(n, views, J, 2),
                        torch.ones(n, views, J, dtype=torch.bool), zr[:, None].expand(n, views, J),
                        joints[:, None].expand(n, views, J, 3))
    data = W.WeakBatches(img, mv if mode != "2d" else None, batch_2d, batch_mv)
    prior = W.bone_ratio_prior(joints)
    per_step = batch_2d + (batch_mv * views if mode != "2d" else 0)
    return model, W.make_loss(mode, cfg, prior), data, per_step


def measure(name: str, case, device: str, steps: int, amp: str = "auto") -> str:
    model, loss_fn, data, per_step = case
    warm = TrainConfig(steps=2, device=device, progress=False, amp=amp, log_every=1)
    train(model, loss_fn, data, warm)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    hist = train(model, loss_fn, data, TrainConfig(steps=steps, device=device, progress=False,
                                                   amp=amp, log_every=steps, seed=1))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    rate = steps * per_step / dt
    line = (f"| {name} | {hist.device} | {hist.amp} | {per_step} | {steps} | "
            f"{dt / steps * 1e3:.0f} | {rate:.1f} |")
    print(line, flush=True)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    lt_quick = lt.settings("quick").config  # the chapter-10 quick profile
    small = lt_quick.backbone
    big = resnet18_like()
    quick = W.settings("quick").config  # the chapter-11 quick profile
    crop64 = dataclasses.replace(quick, crop_size=64)
    full = dataclasses.replace(quick, crop_size=128, backbone=big)
    cases = [
        ("ch10 backbone quick (64 px, width 16), 8 frames x 4 views",
         lambda: case_backbone(64, small, 32)),
        ("ch10 algebraic quick (frozen, cached), 8 frames x 4 views",
         lambda: case_learnable("algebraic", lt_quick, 8)),
        ("ch10 volumetric quick (frozen, cached, 16^3), 4 frames x 4 views",
         lambda: case_learnable("volumetric", lt_quick, 4)),
        ("ch11 2.5D 2d-only quick (32 px), 16 img", lambda: case_weak("2d", quick, 16, 4)),
        ("ch11 2.5D weak quick (32 px), 16 img + 4x4 views", lambda: case_weak("weak", quick, 16, 4)),
        ("ch11 2.5D full quick (32 px), 16 img + 4x4 views", lambda: case_weak("full", quick, 16, 4)),
        ("ch11 2.5D weak (64 px, width 16), 16 img + 4x4 views",
         lambda: case_weak("weak", crop64, 16, 4)),
        ("ch11 2.5D weak full-size (128 px, width 64), 16 img + 4x4 views",
         lambda: case_weak("weak", full, 16, 4)),
    ]
    header = ("| case | device | amp | images/step | steps | ms/step | images/s |\n"
              "|---|---|---|---|---|---|---|")
    print(header)
    cpu_lines = []
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for name, make in cases:
        torch.manual_seed(0)
        cpu_lines.append(measure(name, make(), "cpu", args.steps))
    if torch.cuda.is_available():
        for name, make in cases:
            torch.manual_seed(0)
            measure(name, make(), "cuda", max(args.steps, 20))
    if not args.no_append:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with RESULTS.open("a") as fh:
            fh.write(f"\n## bench_train_step.py ({stamp}, {platform.processor() or platform.machine()}, "
                     f"torch {torch.__version__}, {torch.get_num_threads()} threads)\n\n")
            fh.write(header + "\n" + "\n".join(cpu_lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
