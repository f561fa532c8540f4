"""Benchmark: throughput of the studio's ray-caster (frames x views x pixels per second).

Renders sequences of the single-person scene (Human3.6M-like rig, 4 views) and of the
multi-person scene (Panoptic-like rig, 5 views) at a few image sizes on CPU (and CUDA when
available) and prints, per setting, the best wall time of ``--repeats`` renders and the
throughput in Mpixel/s (frames x views x width x height per second, all outputs: RGB, instance
mask, depth, IUV, 2D joints, visibility, boxes). It also times a whole ``smoke`` build.
The CPU runs use ``--threads`` threads (default 1, the build's default; a busy shared machine
is fastest with one); the load average is printed because timings on a shared machine vary.
Usage: ``python bench/bench_render.py [--frames F] [--repeats R] [--threads T] [--sizes 64 128]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from mvbook.studio import build_studio
from mvbook.studio.appearance import RoomStyle
from mvbook.studio.render import Renderer
from mvbook.studio.rigs import make_rig
from mvbook.studio.scenes import plan_sequences, pose_sequence, profile_config, seeded_generator


def bench_scene(scene: str, size: tuple[int, int], frames: int, repeats: int,
                device: torch.device, supersample: int = 1) -> dict:
    cfg = profile_config("quick", scene, 0, image_size=size, frames=(frames, 1),
                         sequences=(3, 0) if scene == "multi" else (1, 0),
                         actions=("walk", "dance_a", "kick") if scene == "multi" else ("walk",),
                         persons=(3, 3), supersample=supersample)
    rig = make_rig(cfg.rig, size)
    renderer = Renderer(rig.cameras, rig.room, RoomStyle.sample(seeded_generator("room", 0)),
                        supersample, device)
    plan = plan_sequences(cfg)[0]
    prims, joints, looks = pose_sequence(plan)
    lights = plan.lighting.vector().expand(joints.shape[0], -1)
    args = (prims.float(), looks, lights, joints.float())
    renderer.render(*args)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        renderer.render(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    views = renderer.num_views
    pixels = joints.shape[0] * views * size[0] * size[1]
    return {"scene": scene, "device": str(device), "size": f"{size[0]}x{size[1]}",
            "frames": joints.shape[0], "views": views, "persons": joints.shape[1],
            "ss": supersample, "seconds": best, "mpix_s": pixels / best / 1e6,
            "views_s": joints.shape[0] * views / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"studio ray-caster benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU thread(s), load average {os.getloadavg()[0]:.1f}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for s in args.sizes:
            rows.append(bench_scene("single", (s, s), args.frames, args.repeats, device))
        rows.append(bench_scene("single", (128, 128), args.frames, args.repeats, device, 2))
        for s in args.sizes:
            w = int(round(s * 1.5 / 16)) * 16
            rows.append(bench_scene("multi", (w, w * 9 // 16), args.frames, args.repeats, device))
    print(f"{'scene':7s} {'device':6s} {'image':>8s} {'ss':>2s} {'F x C x P':>10s} {'seconds':>8s} "
          f"{'Mpixel/s':>9s} {'views/s':>8s}")
    for r in rows:
        fcp = f"{r['frames']}x{r['views']}x{r['persons']}"
        print(f"{r['scene']:7s} {r['device']:6s} {r['size']:>8s} {r['ss']:2d} {fcp:>10s} "
              f"{r['seconds']:8.3f} {r['mpix_s']:9.2f} {r['views_s']:8.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_studio("smoke", "single", 0, tmp, progress=False, threads=args.threads)
        print(f"smoke build (single, 42 frames x 4 views, 48x48, written to disk): "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
