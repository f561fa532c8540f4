"""Training of learnable triangulation: :func:`fit` for one stage, :func:`main` for the chapter.

The chapter trains in three stages (:data:`~.config.STAGES`): the 2D backbone is pretrained on
single views with heatmap targets; the algebraic and the volumetric models then start from
copies of it. With ``config.freeze_backbone`` (the CPU profiles) the backbone's outputs are
cached once and only the heads train.

Run the chapter's experiment outside the notebook, on CPU or on GPUs under ``torchrun``::

    python -m mvbook.train mvbook.methods.learnable_triangulation:main --profile quick
    torchrun --standalone --nproc_per_node=4 -m mvbook.train \\
        mvbook.methods.learnable_triangulation:main --profile full --data /data/h36m-mvbook
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvbook.runtime import resolve_device
from mvbook.schedules import warmup_cosine
from mvbook.train import TrainConfig, TrainHistory, distributed_info, make_loader, train
from mvbook.validation import check_choice

from .config import STAGES, Settings, initial_backbone, settings
from .data import CropSet, cache_backbone, frame_stride, prepare, test_source, with_roots
from .evaluation import (
    algebraic_predictor,
    choose_alpha,
    errors_table,
    naive_predictor,
    predict,
    predict_many,
    volumetric_predictor,
)
from .losses import make_loss
from .model import AlgebraicTriangulationNet, VolumetricTriangulationNet

__all__ = ["fit", "main"]

_DESC = {"pretrain": "backbone", "algebraic": "algebraic",
         "volumetric": "volumetric ({cfg.aggregation})"}


def fit(
    model: nn.Module,
    stage: str,
    data: CropSet,
    plan: Settings,
    *,
    steps: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
) -> TrainHistory:
    """Train ``model`` for one ``stage`` with the profile's steps, batch and learning rate
    (AdamW; ``plan.schedule`` ``"cosine"``: the rate decayed along a cosine to 1% at the last
    step, ``"constant"``: fixed; a trainable backbone uses ``plan.backbone_lr[stage]`` if set).

    Args:
        model: a :class:`mvbook.nn.SimpleBaseline` for ``"pretrain"``, an
            :class:`~.model.AlgebraicTriangulationNet` or a :class:`~.model.VolumetricTriangulationNet`.
        stage: ``"pretrain"``, ``"algebraic"`` or ``"volumetric"``.
        data: the training :class:`~.data.CropSet` (with cached backbone outputs for the heads of a
            frozen backbone, :func:`~.data.cache_backbone`).
        plan: the profile's :class:`~.config.Settings` (:func:`~.config.settings`).
        steps: overrides ``plan.steps[stage]``.

    Returns:
        the :class:`mvbook.train.TrainHistory` (losses and logged errors per step).
    """
    check_choice(stage, "stage", STAGES)
    cfg = plan.config if stage == "pretrain" else model.config
    n = plan.steps[stage] if steps is None else steps
    loss = make_loss(stage, cfg, generator=torch.Generator().manual_seed(seed))
    train_config = TrainConfig(
        steps=n, lr=plan.lr[stage], weight_decay=plan.weight_decay if stage == "pretrain" else 0.0,
        device=device, seed=seed, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
        progress=progress, desc=_DESC[stage].format(cfg=cfg),
        log_every=max(1, n // 30))
    model.to(resolve_device(device))  # the optimizer is built on the parameters where they train
    backbone_lr = plan.backbone_lr.get(stage) if stage != "pretrain" else None
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if backbone_lr is None:
        groups = [{"params": [p for _, p in named]}]
    else:
        groups = [{"params": [p for k, p in named if k.startswith("backbone.")], "lr": backbone_lr},
                  {"params": [p for k, p in named if not k.startswith("backbone.")]}]
        groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=train_config.lr, weight_decay=train_config.weight_decay)
    check_choice(plan.schedule, "plan.schedule", ("cosine", "constant"))
    factor = warmup_cosine(n) if plan.schedule == "cosine" else (lambda step: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return train(model, loss, make_loader(data, plan.batch[stage], seed=seed), train_config,
                 optimizer=optimizer, scheduler=scheduler)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None,
         pretrained: str = "pose2d", backbone_weights: str | None = None,
         backbone_layout: str = "learnable-triangulation", **_: Any) -> int:
    """Train the chapter's models and print their test MPJPE (root-relative, mm).

    Starts from the zoo's ``pose2d``, from a published 2D checkpoint (``backbone_weights``, a
    path; ``backbone_layout`` its joint order) or, with ``pretrained="none"``, pretrains the backbone;
    evaluates the naive baseline, trains the algebraic model and the
    volumetric model (softmax aggregation, cube around the algebraic pelvis at test time).
    ``steps`` overrides every stage's step count (a short run).
    """
    from mvbook.studio import open_data

    plan = settings(profile, data, pretrained, backbone_weights, backbone_layout)
    cfg = plan.config
    info = distributed_info()
    datasets = {split: open_data(data, profile=profile, split=split, seed=seed)
                for split in ("train", "test")}
    sets = {split: prepare(ds, cfg, stride=frame_stride(len(ds), plan.max_frames[split]),
                           progress=info.is_main)
            for split, ds in datasets.items()}

    def ckpt(stage: str) -> Path | None:
        return None if checkpoint_dir is None else Path(checkpoint_dir) / stage

    torch.manual_seed(seed)
    backbone = initial_backbone(plan)
    t0 = time.perf_counter()
    if plan.steps["pretrain"]:
        fit(backbone, "pretrain", sets["train"], plan, steps=steps, device=device, seed=seed,
            checkpoint_dir=ckpt("pretrain"))
    backbone = backbone.cpu()
    train_feed, test_feed = sets["train"], sets["test"]
    if cfg.freeze_backbone:
        train_feed = cache_backbone(backbone, train_feed, device=device)
        test_feed = cache_backbone(backbone, test_feed, device=device)
    if cfg.freeze_backbone and plan.pretrained != "none":
        cfg = dataclasses.replace(cfg, alpha=choose_alpha(train_feed)[0])
    alg = AlgebraicTriangulationNet(copy.deepcopy(backbone), cfg)
    fit(alg, "algebraic", train_feed, plan, steps=steps, device=device, seed=seed,
        checkpoint_dir=ckpt("algebraic"))
    if cfg.train_root == "predicted":  # the cube around the algebraic model's pelvis
        train_feed = with_roots(train_feed, predict(algebraic_predictor(alg), train_feed, device=device,
                                                    models=[alg])["pred"][:, cfg.root_joint])
    vol = VolumetricTriangulationNet(copy.deepcopy(backbone), cfg)
    fit(vol, "volumetric", train_feed, plan, steps=steps, device=device, seed=seed,
        checkpoint_dir=ckpt("volumetric"))
    if info.is_main:
        alg, vol, backbone = alg.cpu(), vol.cpu(), backbone.cpu()
        predictors = {
            "naive": (naive_predictor(backbone), [backbone]),
            "algebraic": (algebraic_predictor(alg), [alg]),
            f"volumetric ({cfg.aggregation})": (
                volumetric_predictor(vol, root=algebraic_predictor(alg)), [vol, alg]),
        }
        # every test frame (plan.max_test_frames), cropped chunk by chunk when not all in memory
        source = test_source(datasets["test"], test_feed, plan, backbone=backbone)
        results = predict_many(predictors, source)
        for name, result in results.items():
            _, _, rel = errors_table({name: result}, source.actions, root_joint=cfg.root_joint)
            _, _, ab = errors_table({name: result}, source.actions, root_joint=None)
            print(f"{name}: MPJPE {rel[0, -1]:.1f} mm, absolute {ab[0, -1]:.1f} mm "
                  f"({len(source)} test frames)", flush=True)
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
