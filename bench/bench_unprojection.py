"""Unprojection throughput: mvbook.volumetric.unproject (one batched grid_sample over all views)
versus a straightforward loop over batch elements and views (one projection + grid_sample each).

    .venv/bin/python bench/bench_unprojection.py            # CPU, small and paper-like sizes
    .venv/bin/python bench/bench_unprojection.py --device cuda

Prints, for each size, the median time of each implementation and their ratio, measured in the
same run (so the ratio is meaningful even on a busy machine).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F

from mvbook.runtime import resolve_device
from mvbook.volumetric import make_grid, unproject


def loop_unproject(features, P, grid, image_size):
    """Reference: per batch element and per view, project the grid and sample (no batching)."""
    B, C, K, h, w = features.shape
    D, H, W = grid.shape[1:4]
    Wimg, Himg = image_size
    out = features.new_zeros(B, C, K, D, H, W)
    for b in range(B):
        pts = grid[b].reshape(-1, 3)
        hom = torch.cat([pts, torch.ones_like(pts[:, :1])], dim=1)
        for c in range(C):
            p = hom @ P[b, c].T
            uv = p[:, :2] / p[:, 2:3]
            xn = (2 * uv[:, 0] + 1) / Wimg - 1
            yn = (2 * uv[:, 1] + 1) / Himg - 1
            ok = (p[:, 2] > 0) & (xn.abs() <= 1) & (yn.abs() <= 1)
            g = torch.stack([xn, yn], dim=-1).where(ok[:, None], torch.full_like(uv, -2.0))
            s = F.grid_sample(features[b, c][None], g[None, None], align_corners=False)
            out[b, c] = s.reshape(K, D, H, W)
    return out


def cameras(C: int, device, S: int) -> torch.Tensor:
    Ps = []
    for i in range(C):
        a = torch.tensor(2 * torch.pi * i / C)
        eye = torch.stack([4000 * torch.cos(a), 4000 * torch.sin(a), torch.tensor(1000.0)])
        z = -eye / eye.norm()
        x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0]))
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        R = torch.stack([x, y, z])
        K = torch.tensor([[S * 1.5, 0, (S - 1) / 2], [0, S * 1.5, (S - 1) / 2], [0, 0, 1]])
        Ps.append(K @ torch.cat([R, (-R @ eye)[:, None]], 1))
    return torch.stack(Ps).to(device)


def _once(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def timeit_pair(fa, fb, repeats: int, device) -> tuple[float, float]:
    """Median times of two functions, measured alternately (so load changes hit both alike)."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_once(fa, device))
        tb.append(_once(fb, device))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    sizes = [  # (B, C, K, map side, image side S, R)
        (8, 4, 16, 32, 64, 16),
        (4, 4, 16, 48, 96, 24),
        (2, 4, 32, 64, 256, 32),
    ]
    if device.type == "cuda":
        sizes.append((2, 4, 32, 96, 384, 64))  # the paper's 64^3 cube
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'B':>3} {'C':>2} {'K':>3} {'map':>4} {'R':>3} | {'batched ms':>10} {'loop ms':>9} "
          f"{'loop/batched':>12} | {'Mvox/s batched':>14}")
    for B, C, K, m, S, R in sizes:
        feats = torch.randn(B, C, K, m, m, device=device)
        P = cameras(C, device, S)[None].expand(B, C, 3, 4).contiguous()
        grid = make_grid(torch.zeros(B, 3, device=device), 2500.0, R)
        with torch.no_grad():
            fast, _ = unproject(feats, P, grid, (S, S))
            slow = loop_unproject(feats, P, grid, (S, S))
            assert torch.allclose(fast, slow, atol=1e-4), "implementations disagree"
            for _ in range(2):  # warm-up
                unproject(feats, P, grid, (S, S))
                loop_unproject(feats, P, grid, (S, S))
            call = (feats, P, grid, (S, S))
            tb, tl = timeit_pair(functools.partial(unproject, *call),
                                 functools.partial(loop_unproject, *call), args.repeats, device)
        mvox = B * C * R**3 / tb / 1e6
        print(f"{B:>3} {C:>2} {K:>3} {m:>4} {R:>3} | {tb * 1e3:>10.2f} {tl * 1e3:>9.2f} "
              f"{tl / tb:>12.2f} | {mvox:>14.1f}")


if __name__ == "__main__":
    main()
