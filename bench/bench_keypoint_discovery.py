"""Unsupervised 3D keypoint discovery (chapter 30): training-step throughput and the separable
mask decoder.

1. One training step of the full loss (eq. 15: detector, spatial transformer, encoder, both
   decoders, the composite, the perceptual term, soft-argmax, DLT, re-projection, the mask
   decoder, coverage and centering) and of the reconstruction-only loss, at the sizes of a
   profile: forward + backward + Adam, in frames (one instant in one view) per second, on the
   CPU and on CUDA when present. Random frames and a fixed rig stand in for the studio.
2. The mask decoder phi and the coverage loss on the factors of the separable Gaussians (the
   library's form) against drawing the N maps (the paper's description), forward + backward:
   time and peak memory of the two, and their largest difference.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_keypoint_discovery.py [--profile quick]
[--steps N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from timing import mean_seconds

from mvbook.geometry import Camera
from mvbook.heatmaps import render_gaussian_2d
from mvbook.methods import keypoint_discovery as kd


def _batch(B: int, C: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    angles = np.linspace(0, 2 * np.pi, C, endpoint=False)
    eyes = torch.tensor([[3500 * np.cos(a), 3500 * np.sin(a), 1600.0] for a in angles])
    cam = Camera.look_at(eyes, torch.tensor([0.0, 0.0, 900.0]), focal=1.5 * size,
                         image_size=(size, size))
    return {"images": torch.randint(0, 256, (B, C, 3, size, size), generator=g,
                                    dtype=torch.uint8).to(device),
            "K": cam.K.float().expand(B, C, 3, 3).to(device),
            "R": cam.R.float().expand(B, C, 3, 3).to(device),
            "t": cam.t.float().expand(B, C, 3).to(device),
            "background": torch.rand(C, 3, size, size, generator=g).to(device)}


def bench_step(profile: str, device: torch.device, steps: int) -> dict[str, float]:
    plan = kd.settings(profile)
    size = plan.frame_size or {"smoke": 48, "quick": 128, "full": 256}[profile]
    trunk = kd.trunk(plan).to(device)
    out = {}
    for loss in ("reconst", plan.claim_loss):
        model = kd.new_model(plan.config, 0).to(device)
        fn = kd.make_loss(loss, plan.config, trunk)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch = _batch(plan.batch, 4, size, device)

        def step(model=model, fn=fn, opt=opt, batch=batch):
            opt.zero_grad(set_to_none=True)
            value, _ = fn(model, batch)
            value.backward()
            opt.step()

        t = mean_seconds(step, steps, device, warmup=2)
        out[loss] = (1e3 * t, plan.batch * 4 / t)
    return out


def bench_mask_decoder(M: int, N: int, S: int, steps: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(1)
    phi = kd.MaskDecoder(N)
    pts = (torch.rand(M, N, 2, generator=g) * S).requires_grad_(True)
    mask = torch.rand(M, 1, S, S, generator=g)
    sigma = 0.04 * S

    def separable():
        pts.grad = None
        (phi.from_points(pts, S, sigma).sum() + kd.coverage_loss(pts, mask, sigma)).backward()

    def drawn():
        pts.grad = None
        maps = render_gaussian_2d(pts, (S, S), sigma)
        cover = (1 - (maps / maps.sum((-2, -1), keepdim=True) * mask).sum((-2, -1))).abs().mean()
        (phi(maps).sum() + cover).backward()

    separable()
    g_sep = pts.grad.clone()
    drawn()
    diff = float((g_sep - pts.grad).abs().max())
    with torch.no_grad():
        out_diff = float((phi.from_points(pts, S, sigma)
                          - phi(render_gaussian_2d(pts, (S, S), sigma))).abs().max())
    # the drawn form holds the N maps (and autograd keeps them); the separable one 2 x 5 taps
    maps_bytes = M * N * S * S * 4
    factor_bytes = M * N * 2 * (S + 4) * 5 * 4
    return {"separable ms": 1e3 * mean_seconds(separable, steps, torch.device("cpu")),
            "drawn ms": 1e3 * mean_seconds(drawn, steps, torch.device("cpu")),
            "maps MiB": maps_bytes / 2**20, "factors MiB": factor_bytes / 2**20,
            "max diff out": out_diff, "max diff grad": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=("smoke", "quick", "full"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"# bench_keypoint_discovery ({platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, profile {args.profile})")
    print("| device | loss | step ms | frames/s (instants x views) |")
    print("|---|---|---|---|")
    for dev in devices:
        for loss, (ms, fps) in bench_step(args.profile, dev, args.steps).items():
            print(f"| {dev.type} | {loss} | {ms:.1f} | {fps:.0f} |", flush=True)
    print()
    print("| patches M | keypoints N | side S | separable ms | drawn ms | drawn/separable time | "
          "maps MiB | factors MiB | max diff mask | max diff grad |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for M, N, S in ((32, 32, 32), (32, 32, 128)):
        r = bench_mask_decoder(M, N, S, max(args.steps // 4, 3))
        print(f"| {M} | {N} | {S} | {r['separable ms']:.1f} | {r['drawn ms']:.1f} | "
              f"{r['drawn ms'] / r['separable ms']:.1f}x | {r['maps MiB']:.1f} | "
              f"{r['factors MiB']:.2f} | {r['max diff out']:.1e} | {r['max diff grad']:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
