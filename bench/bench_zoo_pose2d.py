"""Training-step throughput of the zoo's ``pose2d`` recipe on the CPU (images per second).

One step = a batch of the recipe's 128 px uint8 crops augmented (warps, colour, noise), through
the network, heatmap MSE, backward and AdamW step, exactly as ``mvbook zoo train pose2d`` runs
it. Printed in one run: the full step, the same step without augmentation, forward only, and
the ratios between them, at 1 and 2 threads.

Usage: ``.venv/bin/python bench/bench_zoo_pose2d.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from mvbook.crops import normalize_images
from mvbook.zoo import pose2d, recipe


def _batch(rec, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    S = rec.crop_size
    return {"images": torch.randint(0, 256, (n, 3, S, S), dtype=torch.uint8, generator=g),
            "joints2d": torch.rand(n, 17, 2, generator=g) * (S - 1),
            "visibility": torch.ones(n, 17, dtype=torch.bool)}


def measure(threads: int, steps: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    rec = recipe("pose2d", "quick")
    g = torch.Generator().manual_seed(0)
    model = pose2d.build_model(rec)
    opt = torch.optim.AdamW(model.parameters(), lr=rec.lr)
    batch = _batch(rec, rec.batch, g)
    loss_fn = pose2d.make_loss(rec)

    def step(fn, b) -> None:
        loss, _ = fn(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return rec.batch * steps / (time.perf_counter() - t0)

    out = {"train step": timed(lambda: step(loss_fn, batch))}

    def step_without_augmentation() -> None:
        x = normalize_images(batch["images"])
        heat = model(x).heatmaps
        loss = heat.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out["step without augmentation"] = timed(step_without_augmentation)
    model.eval()
    with torch.no_grad():
        out["forward only"] = timed(lambda: model(normalize_images(batch["images"])))
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"pose2d (quick recipe) on {platform.machine()}, torch {torch.__version__}, "
          f"batch {recipe('pose2d').batch} crops of {recipe('pose2d').crop_size} px")
    for threads in (1, 2):
        r = measure(threads, args.steps)
        full = r["train step"]
        print(f"{threads} thread(s): train step {full:.1f} img/s; without augmentation "
              f"{r['step without augmentation']:.1f} img/s (augmentation costs "
              f"{100 * (1 - full / r['step without augmentation']):.0f}% of the step); forward only "
              f"{r['forward only']:.1f} img/s ({r['forward only'] / full:.1f}x the train step)")


if __name__ == "__main__":
    main()
