"""Training of SelfPose3d: :func:`fit` for one stage, :func:`train_pipeline` for the chain of
stages (sec. 3.6), :func:`main` for the chapter's experiment.

The stages (:data:`~.config.STAGES`): ``"backbone"`` (the 2D network on the 2D labels),
``"root"`` (eqs. 2-3; 3D targets for the supervised baseline), ``"pose"`` (eq. 7 + eq. 8, or
eq. 4; the supervised baseline's L1 to 3D poses) and ``"finetune"`` (eq. 11, adding the joint
loss). In the pose stages the root net is fixed and its proposals on the unaugmented views are
computed once (:func:`~.data.with_proposals`). With ``config.freeze_backbone`` (the CPU
profiles) the 2D network is fixed after its stage and its heatmaps of each training frame and
of ``plan.augmentations`` augmented copies are computed once (:func:`~.data.cache_heatmaps`).

Run the chapter's experiment outside the notebook::

    python -m mvbook.train mvbook.methods.selfpose3d:main --profile quick
    python -m mvbook.train mvbook.methods.selfpose3d:main --profile full --data ~/data/panoptic
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvbook.runtime import resolve_device
from mvbook.schedules import warmup_cosine
from mvbook.train import TrainConfig, TrainHistory, make_loader, train
from mvbook.validation import check_choice

from .config import ABLATIONS, STAGES, Config, Settings, for_skeleton, settings
from .data import SceneSet, cache_heatmaps, prepare, with_proposals
from .evaluation import evaluate
from .losses import make_loss
from .model import SelfPose3dNet, space_center_from_cameras

__all__ = ["ablation", "build_model", "fit", "main", "train_pipeline", "with_config"]

#: The trainable parts of each stage (the 2D network joins the later stages unless frozen).
_PARTS = {"backbone": ("backbone",), "root": ("root_net",), "pose": ("pose_net", "attention"),
          "finetune": ("pose_net", "attention")}


def build_model(config: Config, data: SceneSet, pretrained: str = "none",
                zoo_profile: str = "quick") -> SelfPose3dNet:
    """A new :class:`~.model.SelfPose3dNet` for the views of ``data``; the space box is centred
    above the point nearest to the cameras' optical axes when ``config.space_center`` is None
    (no 3D labels needed), at VoxelPose's height ``space_size[2] / 2 - 200`` mm.

    ``pretrained="pose2d"``: the 2D network starts from the zoo's ``pose2d`` of ``zoo_profile``
    (``config.backbone`` must be its recipe's); the extra root heatmap starts as the mean of the
    root joints' heatmaps."""
    check_choice(pretrained, "pretrained", ("pose2d", "none"))
    centre = config.space_center
    if centre is None:
        centre = space_center_from_cameras(data.tensors["P"][0].float(),
                                           config.space_size[2] / 2 - 200.0)
    model = SelfPose3dNet(config, data.image_size, centre)
    if pretrained == "pose2d":
        from mvbook.zoo import load

        state = load("pose2d", zoo_profile).state_dict()
        if state["final.weight"].shape[0] != config.num_joints:
            raise ValueError(f"the zoo's pose2d has {state['final.weight'].shape[0]} joints, "
                             f"config.num_joints is {config.num_joints}: use pretrained='none'")
        idx = list(config.root_joints)
        for key in ("final.weight", "final.bias"):
            state[key] = torch.cat([state[key], state[key][idx].mean(0, keepdim=True)])
        try:
            model.backbone.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError("config.backbone differs from the zoo's pose2d network; take it "
                             f"from settings(..., pretrained='pose2d'): {err}") from None
    return model


def with_config(model: SelfPose3dNet, config: Config, keep: Sequence[str] = (
        "backbone", "root_net")) -> SelfPose3dNet:
    """A new model with ``config`` (an ablation) whose ``keep`` parts are copies of
    ``model``'s (by default the trained 2D and root networks; the pose and attention networks
    start afresh)."""
    new = SelfPose3dNet(config, model.image_size, model.space_center)
    for name in keep:
        getattr(new, name).load_state_dict(copy.deepcopy(getattr(model, name).state_dict()))
    return new


def _set_trainable(model: SelfPose3dNet, stage: str) -> list[str]:
    parts = list(_PARTS[stage])
    if stage != "backbone" and not model.config.freeze_backbone:
        parts.append("backbone")
    for name, module in model.named_children():
        for p in module.parameters():
            p.requires_grad_(name in parts)
    return parts


class _Stage(nn.Module):
    """Wraps the model so that ``train()`` leaves its fixed parts in eval mode (batch-norm
    statistics of a frozen network stay as they are)."""

    def __init__(self, model: SelfPose3dNet, parts: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.parts = tuple(parts)

    def train(self, mode: bool = True):  # noqa: D102
        super().train(mode)
        for name, module in self.model.named_children():
            module.train(mode and name in self.parts)
        return self


def fit(model: SelfPose3dNet, stage: str, data: SceneSet, plan: Settings, *,
        steps: int | None = None, device: str | torch.device = "auto", seed: int = 0,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
        progress: bool = True) -> TrainHistory:
    """Train ``model``'s parts of one ``stage`` with the profile's steps, batch and learning
    rate (Adam; cosine decay to 1% at the last step).

    Args:
        model: a :class:`~.model.SelfPose3dNet` (its ``config`` selects the losses).
        stage: one of :data:`~.config.STAGES`.
        data: the training :class:`~.data.SceneSet` (with ``proposals`` for the pose stages).
        plan: the profile's :class:`~.config.Settings`; ``steps`` overrides its step count.

    Returns:
        the :class:`mvbook.train.TrainHistory`.
    """
    check_choice(stage, "stage", STAGES)
    n = plan.steps[stage] if steps is None else steps
    parts = _set_trainable(model, stage)
    wrapped = _Stage(model, parts)
    loss = make_loss(stage, model.config, generator=torch.Generator().manual_seed(seed))
    config = TrainConfig(steps=n, lr=plan.lr[stage], device=device, seed=seed,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, desc=f"{stage} ({model.config.supervision})",
                         log_every=max(1, n // 30), grad_clip=10.0)
    wrapped.to(resolve_device(device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(max(n, 1)))
    return train(wrapped, lambda m, b: loss(m.model, b),
                 make_loader(data, plan.batch[stage], seed=seed), config, optimizer=optimizer,
                 scheduler=scheduler)


def train_pipeline(plan: Settings, data: SceneSet, *, model: SelfPose3dNet | None = None,
                   stages: Sequence[str] = STAGES, steps: int | None = None,
                   device: str | torch.device = "auto", seed: int = 0, progress: bool = True,
                   checkpoint_dir: str | Path | None = None
                   ) -> tuple[SelfPose3dNet, SceneSet, dict[str, TrainHistory]]:
    """The chain of ``stages`` on ``data``: returns the model, the training set as the pose
    stages saw it (with its heatmap bank and proposals) and each stage's history.

    Start from ``model`` (e.g. :func:`with_config` of a trained one, for an ablation of the pose
    stages) or from a new one (:func:`build_model`). The supervised baseline
    (``config.supervision == "3d"``) continues its L1 training in the ``"finetune"`` stage (the
    same number of pose-net steps as SelfPose3d); the L2-only ablation skips it and trains its
    ``"pose"`` stage for the steps of both. Stages with 0 steps are skipped. ``steps`` overrides
    every stage's count.
    """
    torch.manual_seed(seed)
    model = model if model is not None else build_model(plan.config, data, plan.pretrained,
                                                        plan.zoo_profile)
    cfg = model.config
    histories: dict[str, TrainHistory] = {}

    def ckpt(stage: str) -> Path | None:
        return None if checkpoint_dir is None else Path(checkpoint_dir) / stage

    feed = data
    # the heatmap bank of a frozen 2D network: the supervised baseline and the runs without
    # augmentations need only the unaugmented views
    # (plan.augmentations == 0 with augmentations on: the frozen network runs every step)
    augment = cfg.affine and cfg.supervision == "self"
    copies = plan.augmentations if augment else 0
    bank = cfg.heatmap_source == "poses" or (cfg.freeze_backbone and (copies > 0 or not augment))
    counts = {k: (plan.steps[k] if steps is None else int(steps)) for k in STAGES}
    if cfg.supervision == "self" and cfg.l1_weight == 0:
        # the L2-only ablation (Tab. 5) has no joint-loss stage: its pose stage takes the
        # pose net's steps of both stages
        counts["pose"] += counts["finetune"] * ("finetune" in stages)
        counts["finetune"] = 0
    for stage in stages:
        if counts[stage] == 0:
            continue  # a stage this profile skips (e.g. the quick profile's L2-only warm-up)
        if stage == "backbone" and cfg.heatmap_source == "poses":
            continue  # the heatmaps are rendered from the detections: no 2D network to train
        if stage != "backbone" and bank and "heat" not in feed.tensors:
            feed = cache_heatmaps(model, feed, copies, seed=seed, device=device,
                                  progress=progress)
        if stage in ("pose", "finetune") and "proposals" not in feed.tensors:
            feed = with_proposals(model, feed, device=device)
        histories[stage] = fit(model, stage, feed, plan, steps=counts[stage], device=device, seed=seed,
                               checkpoint_dir=ckpt(stage), progress=progress)
        model.cpu()
    return model, feed, histories


def ablation(name: str, model: SelfPose3dNet, feed: SceneSet, plan: Settings, *,
             labels: SceneSet | None = None, steps: int | None = None,
             device: str | torch.device = "auto", seed: int = 0, progress: bool = True
             ) -> tuple[SelfPose3dNet, SceneSet, dict[str, TrainHistory]]:
    """The pose stages of ablation ``name`` (:data:`~.config.ABLATIONS`) on top of a trained
    SelfPose3d: its 2D and root networks, heatmap bank and proposals (``model`` and ``feed`` as
    :func:`train_pipeline` returned them) are kept; a new pose net (and attention net) trains
    with the ablation's switches. The label ablations (``"gt2d"``, ``"noise2d"``) take their
    labels from ``labels``, a :class:`~.data.SceneSet` of the same frames prepared with that
    ``pseudo`` (the root net learns from the views' heatmaps and synthetic roots only, so it is
    shared). The supervised baseline trains its own root net: use :func:`train_pipeline`."""
    check_choice(name, "name", tuple(ABLATIONS))
    changes = ABLATIONS[name]
    if changes.get("supervision") == "3d":
        raise ValueError("name: the supervised baseline trains its own root net; run "
                         "train_pipeline(plan.replace(**ABLATIONS['supervised']), ...)")
    if "pseudo" in changes and changes["pseudo"] != plan.pseudo:
        if labels is None:
            raise ValueError(f"labels: the {name!r} ablation needs a set prepared with "
                             f"pseudo={changes['pseudo']!r}")
        if not torch.equal(labels.tensors["index"], feed.tensors["index"]):
            raise ValueError("labels must hold the same frames as feed (same dataset and "
                             "max_frames)")
        feed = feed.replace(pseudo2d=labels.tensors["pseudo2d"],
                            pseudo_valid=labels.tensors["pseudo_valid"])
    abl = plan.replace(**changes)
    return train_pipeline(abl, feed, model=with_config(model, abl.config),
                          stages=("pose", "finetune"), steps=steps, device=device, seed=seed,
                          progress=progress)


def main(profile: str = "quick", data: str = "studio", device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, steps: int | None = None,
         variants: Sequence[str] = ("supervised", "selfpose3d"), **_: Any) -> int:
    """Train the supervised baseline and SelfPose3d (and any of :data:`~.config.ABLATIONS`
    named in ``variants``) and print their test metrics (AP@25..150, Recall@500, MPJPE; root
    AP; PCP on ``shelf14`` data). ``steps`` overrides every stage's step count."""
    from mvbook.studio import open_data

    base = settings(profile, data)
    sets = {}
    for split in ("train", "test"):
        ds = open_data(data, profile=profile, split=split, scene="multi", seed=seed, **base.studio)
        sets[split] = ds
    base = for_skeleton(base, sets["train"].skeleton, len(sets["train"].joint_names))
    cache: dict[str, SceneSet] = {}
    t0 = time.perf_counter()
    for name in variants:
        check_choice(name, "variants", tuple(ABLATIONS))
        plan = base.replace(**ABLATIONS[name])
        if plan.pseudo not in cache:
            cache[plan.pseudo] = prepare(sets["train"], plan.config, plan.pseudo,
                                         max_frames=plan.max_frames["train"],
                                         zoo_profile=plan.zoo_profile, seed=seed)
        if "test" not in cache:
            cache["test"] = prepare(sets["test"], plan.config, "gt",
                                    max_frames=plan.max_frames["test"], seed=seed)
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / name
        model, _, _ = train_pipeline(plan, cache[plan.pseudo], steps=steps, device=device,
                                     seed=seed, checkpoint_dir=ckpt)
        res = evaluate(model, cache["test"])
        shown = ", ".join(f"{k} {v:.1f}" for k, v in res.items()
                          if k in ("AP@25", "AP@50", "AP@100", "Recall@500", "MPJPE",
                                   "root AP@100", "PCP"))
        print(f"{name}: {shown} ({len(cache['test'])} test frames)", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0

