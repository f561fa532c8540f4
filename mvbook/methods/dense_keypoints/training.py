"""Training of semi-supervised dense keypoints: :func:`fit` trains ``phi`` (from ``phi_0``)
with one loss combination of Tab. 1; :func:`main` runs the chapter's main comparison.

The paper's second stage (sec. 4.1): ``phi`` starts as ``phi_0`` and trains on unlabelled view
pairs with all losses, the labelled loss on the labelled source data, ``phi_0`` frozen for the
distillation. Every step takes ``batch_pairs`` view pairs of one instant each and
``batch_labelled`` labelled crops; Adam with a short warm-up and a cosine decay
(:func:`mvbook.schedules.warmup_cosine`). Launch the full profile with::

    torchrun --standalone --nproc_per_node=N -m mvbook.train \
        mvbook.methods.dense_keypoints:main --profile full --data PATH
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from mvbook.schedules import warmup_cosine
from mvbook.train import TrainConfig, TrainHistory, distributed_info, train

from .config import Config, Settings, loss_terms, settings
from .data import PairBatches, Splits, prepare
from .evaluation import evaluate
from .losses import make_loss
from .model import DenseNet

__all__ = ["initial_net", "fit", "main"]


def initial_net(plan: Settings) -> DenseNet:
    """``phi_0``: the zoo ``dense0`` of ``plan.zoo_profile`` as a :class:`DenseNet`."""
    from mvbook.zoo import load

    return DenseNet(load("dense0", plan.zoo_profile))


def fit(net: DenseNet, loss: str, splits: Splits, steps: int, *, config: Config,
        batch_pairs: int = 8, batch_labelled: int = 16, pair_views: list[int] | None = None,
        lr: float = 1e-3, warmup: int = 0, device: str | torch.device = "auto", seed: int = 0,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
        progress: bool = True, log_every: int = 10) -> TrainHistory:
    """Train ``net``'s head with the loss terms of ``loss`` (e.g. ``"L+R+M"``) for ``steps``
    steps on ``splits.train`` (view pairs among ``pair_views``; None: all cameras) and
    ``splits.labelled``. Returns the history (keys ``loss``, ``L_L``, ``L_R``, ``L_M``,
    ``L_T``)."""
    terms = loss_terms(loss)
    data = PairBatches(splits.train, splits.labelled, batch_pairs,
                       batch_labelled if "L" in terms else 0, pair_views=pair_views, seed=seed)
    cfg = TrainConfig(steps=steps, lr=lr, device=device, seed=seed,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                      progress=progress, log_every=log_every, desc=f"train {loss}")
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup))
    return train(net, make_loss(loss, config), data, cfg, optimizer, scheduler)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None, **_: Any) -> int:
    """Train the claim's loss combinations from ``phi_0`` and print their test metrics beside
    ``phi_0``'s."""
    plan = settings(profile)
    info = distributed_info()
    torch.manual_seed(seed)
    phi0 = initial_net(plan)
    splits = prepare(data, plan, phi0, profile=profile, seed=seed, progress=info.is_main)
    n = plan.steps if steps is None else steps
    if info.is_main:
        m = evaluate(phi0, splits.test, plan)
        print("phi_0: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()), flush=True)
    for loss in ("L+R", *plan.claim_losses):
        torch.manual_seed(seed)
        net = initial_net(plan)
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / loss.replace("+", "_")
        t0 = time.perf_counter()
        fit(net, loss, splits, n, config=plan.config, batch_pairs=plan.batch_pairs,
            batch_labelled=plan.batch_labelled, lr=plan.lr, warmup=plan.warmup, device=device,
            seed=seed, checkpoint_dir=ckpt, checkpoint_every=max(n // 10, 1),
            progress=info.is_main)
        if info.is_main:
            m = evaluate(net.cpu(), splits.test, plan)
            print(f"{loss}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
