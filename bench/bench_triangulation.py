"""Benchmark: batched DLT triangulation against a per-point loop and OpenCV.

Triangulates the same N points (default 100,000) seen by 4 views with

(a) ``mvbook.geometry.triangulate`` (batched DLT, all points at once),
(b) a per-point Python loop with one ``numpy.linalg.svd`` per point, the pattern of common
    open-source code (e.g. ``triangulate_point_from_multiple_views_linear`` of the learnable
    triangulation reference implementation),
(c) ``cv2.triangulatePoints``, which takes exactly two views: it is run on the view pair
    (0, 1), and compared with mvbook on the same pair.

It checks that the results agree, then prints the timings and the speed ratios measured in
this run. All methods run on one CPU thread by default (``--threads``), as the loop does; the
load average is printed because timings on a shared machine vary.
Usage: ``python bench/bench_triangulation.py [--points N] [--repeats R] [--threads T]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from mvbook.geometry import Camera, triangulate


def per_point_loop(proj: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(b): one SVD per point. ``proj (C, 3, 4)``, ``points (C, N, 2)`` -> ``(N, 3)``."""
    n_views, n_points = points.shape[:2]
    out = np.empty((n_points, 3))
    for i in range(n_points):
        A = np.zeros((2 * n_views, 4))
        for j in range(n_views):
            A[2 * j + 0] = points[j, i, 0] * proj[j, 2, :] - proj[j, 0, :]
            A[2 * j + 1] = points[j, i, 1] * proj[j, 2, :] - proj[j, 1, :]
        _, _, vh = np.linalg.svd(A, full_matrices=False)
        Xh = vh[3, :]
        out[i] = Xh[:3] / Xh[3]
    return out


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-point distance ``||a - b||`` (mm)."""
    return float(np.linalg.norm(a - b, axis=-1).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="number of 3D points")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the fast methods")
    parser.add_argument("--noise", type=float, default=1.0, help="2D noise std in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.points < 1:
        parser.error("--points must be >= 1")
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(args.seed)
    eye = torch.tensor([[3500.0, 300, 1500], [-200, 3600, 1700], [-3400, -100, 1400],
                        [100, -3500, 1600]], dtype=torch.float64)
    cams = Camera.look_at(eye, torch.tensor([0.0, 0, 900], dtype=torch.float64),
                          focal=1145.0, image_size=(1000, 1000))
    N = args.points
    X = torch.randn(N, 3, generator=g, dtype=torch.float64) * torch.tensor([300.0, 300, 500]) + \
        torch.tensor([0.0, 0, 900])
    uv = cams.project(X) + args.noise * torch.randn(4, N, 2, generator=g, dtype=torch.float64)
    P = cams.P
    uv_np, P_np = uv.numpy(), P.numpy()

    print(f"triangulating {N:,} points seen by 4 views ({args.noise} px noise), float64, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
          f"OpenCV {cv2.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    # (a) batched DLT: the default (Hartley-normalized) and the plain algebraic system
    t_a, X_a = best_time(lambda: triangulate(uv, P), args.repeats)
    t_a_raw, X_a_raw = best_time(lambda: triangulate(uv, P, normalize=False), args.repeats)
    uv32, P32 = uv.float(), P.float()
    t_a32, X_a32 = best_time(lambda: triangulate(uv32, P32), args.repeats)
    # (b) per-point loop, timed once (it is slow)
    t0 = time.perf_counter()
    X_b = per_point_loop(P_np, uv_np)
    t_b = time.perf_counter() - t0
    # (c) OpenCV, two views (0, 1), and mvbook on the same pair
    def cv2_pair() -> np.ndarray:
        Xh = cv2.triangulatePoints(P_np[0], P_np[1], uv_np[0].T, uv_np[1].T)
        return (Xh[:3] / Xh[3]).T

    t_c, X_c = best_time(cv2_pair, args.repeats)
    t_a2, X_a2 = best_time(lambda: triangulate(uv[:2], P[:2], normalize=False), args.repeats)

    # agreement, in mm and relative to the scene size (RMS distance of the points from the origin)
    X_true = X.numpy()
    scene = float(np.sqrt((X_true**2).sum(-1).mean()))
    checks = [
        ("(a) plain DLT vs (b) loop: same algorithm", max_diff(X_a_raw.numpy(), X_b), 1e-6),
        ("(a) 2-view plain DLT vs (c) OpenCV: same algorithm", max_diff(X_a2.numpy(), X_c), 1e-6),
        ("(a) normalized DLT vs (b) loop: differ by the normalization", max_diff(X_a.numpy(), X_b),
         1e-2),
        ("(a) float32 vs float64 inputs, normalized", max_diff(X_a32.double().numpy(), X_a.numpy()),
         1e-4),
    ]
    print(f"\nagreement (largest per-point distance; relative = / scene size {scene:.0f} mm):")
    ok = True
    for name, value, tol in checks:
        good = value / scene <= tol
        ok &= good
        print(f"  {name:<62s} {value:10.2e} mm  relative {value / scene:.1e} "
              f"({'ok' if good else 'FAIL'}, <= {tol:g})")
    err = lambda Xe: float(np.linalg.norm(Xe - X_true, axis=-1).mean())  # noqa: E731
    print(f"mean 3D error vs ground truth (mm): (a) normalized {err(X_a.numpy()):.3f}, "
          f"(a) plain {err(X_a_raw.numpy()):.3f}, (b) {err(X_b):.3f}, "
          f"(c) 2 views {err(X_c):.3f}")

    print("\ntimings (best of repeats; the loop once):")
    rows = [
        ("(a) mvbook triangulate, 4 views, normalized (default)", t_a),
        ("(a) mvbook triangulate, 4 views, normalize=False", t_a_raw),
        ("(a) mvbook triangulate, 4 views, float32 inputs", t_a32),
        ("(b) per-point loop, numpy SVD, 4 views", t_b),
        ("(c) cv2.triangulatePoints, 2 views (0, 1)", t_c),
        ("(a) mvbook triangulate, 2 views (0, 1), normalize=False", t_a2),
    ]
    for name, t in rows:
        print(f"  {name:<58s} {t * 1e3:10.1f} ms  ({N / t / 1e6:7.2f} M points/s)")
    print("\nspeed ratios measured in this run:")
    print(f"  (b) loop / (a) mvbook default:      {t_b / t_a:8.1f}x  (target >= 100x)")
    print(f"  (b) loop / (a) mvbook float32:      {t_b / t_a32:8.1f}x")
    print(f"  (c) OpenCV 2-view / (a) mvbook 2-view: {t_c / t_a2:8.2f}x")
    print(f"  (c) OpenCV 2-view / (a) mvbook 4-view: {t_c / t_a:8.2f}x")
    print("\nresults agree" if ok else "\nRESULTS DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
