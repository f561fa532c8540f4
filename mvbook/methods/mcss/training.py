"""Training of MCSS: :func:`fit` trains one head (MCSS, the L_pose-only baseline, or the
metric loss alone) on encoded frames; :func:`main` runs the chapter's main comparison.

Joint training follows sec. 4: every step takes one metric mini-batch of ``batch_metric``
anchor-positive pairs and one pose mini-batch of ``batch_pose`` labelled images, the paper's
3:1 ratio of batch sizes (66 : 22); Adam (betas 0.9, 0.99) at 1e-3, here with a short linear
warm-up and a cosine decay (:func:`mvbook.schedules.warmup_cosine`) instead of the paper's
step decay. Launch the full profile with::

    torchrun --standalone --nproc_per_node=N -m mvbook.train \
        mvbook.methods.mcss:main --profile full --data PATH
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mvbook.schedules import warmup_cosine
from mvbook.train import TrainConfig, TrainHistory, distributed_info, train
from mvbook.validation import check_choice

from .config import MODES, SUPERVISION, Config, Settings, settings
from .data import FrameSet, JointBatches, labelled_frames, prepare
from .evaluation import evaluate
from .losses import make_loss
from .model import MCSSHead, MCSSNet

__all__ = ["fit", "new_head", "initial_net", "main"]


def initial_net(plan: Settings, config: Config | None = None) -> MCSSNet:
    """The zoo ``trunk`` (frozen) with a fresh head (seed torch first)."""
    from mvbook.zoo import load

    return MCSSNet(load("trunk", plan.zoo_profile), config or plan.config)


def new_head(net: MCSSNet, config: Config | None = None) -> MCSSHead:
    """A fresh head for ``net``'s trunk features (seed torch first): :meth:`MCSSNet.new_head`."""
    return net.new_head(config)


def fit(head: MCSSHead, mode: str, train_set: FrameSet, labelled: torch.Tensor | None,
        steps: int, *, batch_metric: int = 66, batch_pose: int = 22, min_gap: int = 1,
        pose_views: Sequence[int] | None = None, lr: float = 1e-3, warmup: int = 0,
        device: str | torch.device = "auto", seed: int = 0,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
        progress: bool = True, log_every: int = 10) -> TrainHistory:
    """Train ``head`` in ``mode`` (:data:`~.config.MODES`) with :func:`mvbook.train.train`.

    The pose targets are ``train_set.targets(head.config.representation)``; the head's
    per-joint normalisation is set from the labelled frames' targets first. ``labelled``:
    indices of the 3D-labelled frames (:func:`~.data.labelled_frames`; unused in ``"metric"``
    mode); ``pose_views``: the views whose labelled images the pose loss reads (None: all).
    Returns the history (keys ``loss``, ``l_cnstr``, ``l_pose``, ``d_pos``, ``d_neg``,
    ``valid``).
    """
    check_choice(mode, "mode", MODES)
    cfg = head.config
    targets = train_set.targets(cfg.representation, cfg.root_joint, cfg.left_hip)
    use_pose = mode != "metric"
    if use_pose:
        if labelled is None or len(labelled) == 0:
            raise ValueError(f"mode {mode!r} needs labelled frames")
        head.set_normalization(targets[labelled])
    data = JointBatches(train_set, targets, labelled if use_pose else None,
                        batch_metric=batch_metric if mode != "baseline" else 0,
                        batch_pose=batch_pose, min_gap=min_gap, pose_views=pose_views,
                        seed=seed)
    config = TrainConfig(steps=steps, lr=lr, device=device, seed=seed,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, log_every=log_every, desc=f"train {mode}")
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup))
    return train(head, make_loss(mode, cfg), data, config, optimizer, scheduler)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None, **_: Any) -> int:
    """Train MCSS and the L_pose-only baseline at every supervision level of the profile and
    print their test N-MPJPE (canonical poses, all views)."""
    plan = settings(profile)
    info = distributed_info()
    torch.manual_seed(seed)
    net = initial_net(plan)
    sets = prepare(data, plan, net, profile=profile, seed=seed, progress=info.is_main)
    n = plan.steps if steps is None else steps
    for level in plan.supervision:
        subjects, fraction = SUPERVISION[level]
        lab = labelled_frames(sets.train, subjects, fraction, seed=0)
        for mode in ("mcss", "baseline"):
            torch.manual_seed(seed)
            head = new_head(net)
            ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / f"{level}-{mode}"
            t0 = time.perf_counter()
            fit(head, mode, sets.train, lab, n, batch_metric=plan.batch_metric,
                batch_pose=plan.batch_pose, min_gap=plan.min_gap, lr=plan.lr,
                warmup=plan.warmup, device=device, seed=seed, checkpoint_dir=ckpt,
                checkpoint_every=max(n // 10, 1), progress=info.is_main)
            if info.is_main:
                m = evaluate(head.cpu(), sets.test)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in m.items())
                print(f"{level} ({len(lab)} labelled frames) {mode}: {shown} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
