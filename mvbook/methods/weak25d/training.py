"""Training of the 2.5D models: :func:`fit` for one mode, :func:`main` for the chapter.

The chapter trains three models with one schedule: the 2D-only baseline, then from it the
weakly supervised model (2D labels + unlabelled multiview) and the fully supervised reference
(2D + 3D labels). Launch the full profile on GPUs with::

    torchrun --standalone --nproc_per_node=N -m mvbook.train \
        mvbook.methods.weak25d:main --profile full --data PATH
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from mvbook.train import TrainConfig, TrainHistory, distributed_info, train
from mvbook.validation import check_choice

from .config import MODES, settings
from .data import ImageSet, MultiviewSet, WeakBatches, prepare
from .evaluation import evaluate
from .losses import bone_ratio_prior, make_loss
from .model import Weak25DNet

__all__ = ["fit", "main"]


def fit(model: Weak25DNet, mode: str, images2d: ImageSet, multiview: MultiviewSet | None,
        steps: int, batch_2d: int = 16, batch_mv: int = 4, lr: float = 1e-3,
        prior: torch.Tensor | None = None, device: str | torch.device = "auto", seed: int = 0,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
        progress: bool = True, log_every: int = 10) -> TrainHistory:
    """Train ``model`` in ``mode`` with :func:`mvbook.train.train`; returns the history."""
    check_choice(mode, "mode", MODES)
    if mode != "2d" and multiview is None:
        raise ValueError(f"mode {mode!r} needs the multiview set")
    data = WeakBatches(images2d, multiview if mode != "2d" else None, batch_2d, batch_mv, seed)
    config = TrainConfig(steps=steps, lr=lr, grad_clip=5.0, device=device, seed=seed,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, log_every=log_every, desc=f"train {mode}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15) if steps > 1 else None
    return train(model, make_loss(mode, model.config, prior), data, config, optimizer, scheduler)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None, **_: Any) -> int:
    """Train the chapter's three models and print their test metrics.

    The chapter's split: 2D labels on S1, S5; unlabelled multiview frames of S6, S7, S8; test
    on S9, S11. Runs the 2D-only model, then the weakly and the fully supervised models from it.
    Launch the full profile on GPUs with ``torchrun --standalone --nproc_per_node=N -m
    mvbook.train mvbook.methods.weak25d:main --profile full --data PATH``.
    """
    plan = settings(profile)
    info = distributed_info()
    sets = prepare(data, plan, profile=profile, seed=seed, progress=info.is_main)
    prior = bone_ratio_prior(sets.multiview.joints_cam[:, 0])
    base: Weak25DNet | None = None
    for mode in MODES:
        torch.manual_seed(seed)
        model = Weak25DNet(17, plan.config)
        if base is not None:
            model.load_state_dict(base.state_dict())
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / mode
        n = plan.steps[mode] if steps is None else steps
        t0 = time.perf_counter()
        fit(model, mode, sets.images2d, sets.multiview, n, plan.batch_2d, plan.batch_mv,
            lr=plan.lr[mode], prior=prior, device=device, seed=seed,
            checkpoint_dir=ckpt, checkpoint_every=max(n // 10, 1))
        model = model.cpu()
        if mode == "2d":
            base = copy.deepcopy(model)
        if info.is_main:
            metrics = evaluate(model, sets.test)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())
            print(f"{mode}: {shown} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
