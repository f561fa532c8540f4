"""MCSS metric-loss step throughput (chapter 20).

Times one training step of the metric loss L_cnstr (eqs. 1-2: the m x m distance matrix, the
in-batch hardest negatives with the beta mask, the hinge) through the embedding network G on
cached trunk features: forward + backward + Adam, and the loss alone (forward + backward of
:func:`mvbook.methods.mcss.hardnet_loss` on embeddings). Prints pairs per second on the CPU,
and on CUDA when present. Usage: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mcss.py
[--steps N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import platform

import torch
from timing import mean_seconds

from mvbook.methods import mcss as M


def bench(device: torch.device, m: int, steps: int, features: int = 768) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    cfg = M.Config()
    head = M.MCSSHead(features, cfg).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, betas=(0.9, 0.99))
    fa = torch.randn(m, features, generator=g).to(device)
    fp = (fa.cpu() + 0.3 * torch.randn(m, features, generator=g)).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = M.hardnet_loss(head.embed(fa), head.embed(fp), cfg.alpha, cfg.beta)
        loss.backward()
        opt.step()

    ea = M.EmbeddingNet(features).to(device)(fa).detach().requires_grad_(True)
    ep = M.EmbeddingNet(features).to(device)(fp).detach().requires_grad_(True)

    def loss_only():
        loss, _ = M.hardnet_loss(ea, ep, cfg.alpha, cfg.beta)
        loss.backward()

    t_step = mean_seconds(step, steps, device, warmup=3)
    t_loss = mean_seconds(loss_only, steps, device, warmup=3)
    return {"step ms": 1e3 * t_step, "step pairs/s": m / t_step,
            "loss ms": 1e3 * t_loss, "loss pairs/s": m / t_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"# bench_mcss ({platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads)")
    print("| device | pairs m | metric step (G + L_cnstr + Adam) ms | pairs/s | L_cnstr fwd+bwd ms | pairs/s |")
    print("|---|---|---|---|---|---|")
    for dev in devices:
        for m in (66, 256, 1024):
            r = bench(dev, m, args.steps if m <= 256 else max(args.steps // 4, 5))
            print(f"| {dev.type} | {m} | {r['step ms']:.2f} | {r['step pairs/s']:.0f} | "
                  f"{r['loss ms']:.3f} | {r['loss pairs/s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
