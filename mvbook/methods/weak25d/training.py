"""Training of the 2.5D models: :func:`fit` and :func:`fit_depth` for one mode, :func:`main`
for the chapter.

The chapter trains three models with one schedule: the 2D-only baseline, then from it the
weakly supervised model (2D labels + unlabelled multiview) and the fully supervised reference
(2D + 3D labels). On the zoo's 2D detector (:class:`~.model.ZooWeak25D`) the 2D-only baseline is
the detector with an untrained (flat) depth head and :func:`fit_depth` trains the head alone on
encoded multiview frames; from scratch (:class:`~.model.Weak25DNet`) :func:`fit` trains the
whole network in each mode. Launch the full profile on GPUs with::

    torchrun --standalone --nproc_per_node=N -m mvbook.train \
        mvbook.methods.weak25d:main --profile full --data PATH
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from mvbook.runtime import resolve_device
from mvbook.train import TrainConfig, TrainHistory, distributed_info, train
from mvbook.validation import check_choice

from .config import MODES, Config, Settings, settings
from .data import EncodedBatches, ImageSet, MultiviewSet, WeakBatches, prepare
from .evaluation import evaluate
from .losses import bone_ratio_prior, make_depth_loss, make_loss
from .model import Encoded, Weak25DNet, ZooWeak25D

__all__ = ["fit", "fit_depth", "initial_model", "main"]


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


def fit_depth(model: ZooWeak25D, mode: str, encoded: Encoded, multiview: MultiviewSet,
              steps: int, batch_mv: int = 16, lr: float = 3e-3,
              prior: torch.Tensor | None = None, device: str | torch.device = "auto",
              seed: int = 0, checkpoint_dir: str | Path | None = None,
              checkpoint_every: int = 0, progress: bool = True, log_every: int = 10
              ) -> TrainHistory:
    """Train the depth head of ``model`` in ``mode`` (``"weak"`` or ``"full"``) on the encoded
    multiview frames (``encoded``: ``model.encode(multiview.images.flatten(0, 1))``); Adam with
    a one-cycle schedule through :func:`mvbook.train.train`. Returns the history."""
    check_choice(mode, "mode", ("weak", "full"))
    data = EncodedBatches(encoded, multiview, batch_mv, seed)
    config = TrainConfig(steps=steps, lr=lr, grad_clip=5.0, device=device, seed=seed,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, log_every=log_every, desc=f"train {mode} depth head")
    optimizer = torch.optim.Adam(model.head.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15) if steps > 1 else None
    return train(model.head, make_depth_loss(mode, model.config, prior), data, config, optimizer,
                 scheduler)


def initial_model(plan: Settings, config: Config | None = None) -> Weak25DNet | ZooWeak25D:
    """A fresh model of the plan (seed torch first): the zoo detector ``plan.pretrained`` with
    a flat depth head, or a :class:`Weak25DNet` from scratch (``"none"``). ``config`` replaces
    ``plan.config`` (e.g. with a measured ``beta``)."""
    config = config or plan.config
    if plan.pretrained == "none":
        return Weak25DNet(17, config)
    from mvbook.zoo import load

    return ZooWeak25D(load(plan.pretrained, plan.zoo_profile), config)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None,
         pretrained: str = "pose2d", **_: Any) -> int:
    """Train the chapter's three models and print their test metrics.

    The chapter's split: 2D labels on S1, S5; unlabelled multiview frames of S6, S7, S8; test
    on S9, S11. Runs the 2D-only model, then the weakly and the fully supervised models from it.
    Launch the full profile on GPUs with ``torchrun --standalone --nproc_per_node=N -m
    mvbook.train mvbook.methods.weak25d:main --profile full --data PATH``. With
    ``pretrained="pose2d"`` the 2D part is the zoo's frozen detector and only depth heads train.
    """
    plan = settings(profile, pretrained=pretrained)
    info = distributed_info()
    sets = prepare(data, plan, profile=profile, seed=seed, progress=info.is_main)
    prior = bone_ratio_prior(sets.multiview.joints_cam[:, 0])
    if plan.pretrained != "none":
        return _main_zoo(plan, sets, prior, device, seed, checkpoint_dir, steps, info.is_main)
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


def _main_zoo(plan: Settings, sets: Any, prior: torch.Tensor, device: str, seed: int,
              checkpoint_dir: str | None, steps: int | None, is_main: bool) -> int:
    """:func:`main` on the zoo's detector: encode once, train a depth head per mode."""
    torch.manual_seed(seed)
    base = initial_model(plan).to(resolve_device(device))
    assert isinstance(base, ZooWeak25D)
    encoded = base.encode(sets.multiview.images.flatten(0, 1))
    encoded_test = base.encode(sets.test.images)
    for mode in MODES:
        torch.manual_seed(seed)
        model = base.with_new_head()
        t0 = time.perf_counter()
        if mode != "2d":
            ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / mode
            n = plan.steps[mode] if steps is None else steps
            fit_depth(model, mode, encoded, sets.multiview, n, plan.batch_mv, plan.lr[mode],
                      prior=prior, device=device, seed=seed, checkpoint_dir=ckpt,
                      checkpoint_every=max(n // 10, 1))
        if is_main:
            metrics = evaluate(model, sets.test, encoded=encoded_test)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())
            print(f"{mode}: {shown} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
