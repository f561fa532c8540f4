"""Training of unsupervised 3D keypoint discovery: :func:`fit` trains one model of the paper's
ablations; :func:`main` runs the chapter's main comparison.

The paper trains every part at once with Adam, the detector S and the image decoder D at a
smaller learning rate (2e-5 against 1e-4, supplementary S.1.3); the quick profile keeps that
ratio at larger rates and adds a short warm-up and a cosine decay
(:func:`mvbook.schedules.warmup_cosine`). Launch the full profile with::

    torchrun --standalone --nproc_per_node=N -m mvbook.train \
        mvbook.methods.keypoint_discovery:main --profile full --data PATH
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvbook.schedules import warmup_cosine
from mvbook.train import TrainConfig, TrainHistory, distributed_info, train

from .config import Config, Settings, loss_terms, settings
from .data import FrameBatches, FrameSet, prepare
from .evaluation import evaluate, summary
from .losses import make_loss
from .model import KeypointDiscovery

__all__ = ["trunk", "new_model", "continue_from", "fit", "main"]


def trunk(plan: Settings) -> nn.Module:
    """The frozen zoo ``trunk`` of ``plan.zoo_profile`` (the perceptual features of eq. 10)."""
    from mvbook.zoo import load

    return load("trunk", plan.zoo_profile).eval().requires_grad_(False)


def new_model(config: Config, seed: int = 0) -> KeypointDiscovery:
    """A freshly initialised :class:`KeypointDiscovery` (seeded)."""
    torch.manual_seed(seed)
    return KeypointDiscovery(config)


def continue_from(base: KeypointDiscovery, config: Config | None = None, seed: int = 0
                  ) -> KeypointDiscovery:
    """A new model with ``base``'s detector, encoder and image decoder (copied) and a fresh,
    seeded keypoint head and mask decoder for ``config`` (default: ``base``'s configuration;
    it may change the keypoint count or the mask target, not the image path's sizes)."""
    config = base.config if config is None else config
    model = new_model(config, seed)
    for name in ("detector", "encoder", "decoder"):
        getattr(model, name).load_state_dict(getattr(base, name).state_dict())
    return model


def fit(model: KeypointDiscovery, loss: str, frames: FrameSet, steps: int, *,
        perceptual: nn.Module | None, batch: int = 8, lr: float = 1e-3,
        lr_slow: float = 2e-4, warmup: int = 0, device: str | torch.device = "auto",
        seed: int = 0, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
        progress: bool = True, log_every: int = 10) -> TrainHistory:
    """Train ``model`` with the terms of ``loss`` (a :data:`~.config.LOSSES` row, or without
    ``"reconst"`` for the true-mask variant of Tab. 6) on ``frames`` for ``steps`` steps;
    ``perceptual`` is the frozen trunk of eq. 10. Returns the history (``loss``, ``L_reconst``,
    ``colour``, ``perceptual``, ``L_mask``, ``L_coverage``, ``L_centering`` as trained)."""
    loss_terms(loss)
    data = FrameBatches(frames, batch, seed=seed)
    cfg = TrainConfig(steps=steps, lr=lr, device=device, seed=seed,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                      progress=progress, log_every=log_every, desc=f"train {loss}")
    slow = [*model.detector.parameters(), *model.decoder.parameters()]
    slow_ids = {id(p) for p in slow}
    fast = [p for p in model.parameters() if id(p) not in slow_ids]
    optimizer = torch.optim.Adam([{"params": fast, "lr": lr}, {"params": slow, "lr": lr_slow}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup))
    return train(model, make_loss(loss, model.config, perceptual), data, cfg, optimizer,
                 scheduler)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None, **_: Any) -> int:
    """From the profile's reconstruction stage (:mod:`~.pretrained`), train the
    reconstruction-only model and the full model (eq. 15) and print how well their latent
    features and discovered keypoints predict the test subjects' 3D pose."""
    from .pretrained import reconstruction_stage

    plan = settings(profile)
    info = distributed_info()
    splits = prepare(data, plan, profile=profile, seed=seed, progress=info.is_main)
    perceptual = trunk(plan)
    stage, _ = reconstruction_stage(plan, splits, perceptual, profile=profile, device=device,
                                    progress=info.is_main)
    n = plan.steps if steps is None else steps
    for loss, features in (("reconst", "latent"), (plan.claim_loss, "keypoints")):
        model = continue_from(stage, seed=seed)
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / loss.replace("+", "_")
        t0 = time.perf_counter()
        fit(model, loss, splits.train, n, perceptual=perceptual, batch=plan.batch, lr=plan.lr,
            lr_slow=plan.lr_slow, warmup=plan.warmup, device=device, seed=seed,
            checkpoint_dir=ckpt, checkpoint_every=max(n // 10, 1), progress=info.is_main)
        if info.is_main:
            m = evaluate(model.cpu(), splits.train, splits.test, plan, features=features,
                         seed=seed)
            print(f"{loss} ({features}): {summary(m)} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return 0
