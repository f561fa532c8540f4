"""Configuration of learnable triangulation: the model and loss sizes, and the profile table.

:class:`Config` sizes the chapter's models and losses; :func:`settings` is the one table of
what each profile (``smoke``, ``quick``, ``full``) trains: the configuration, steps, batch
sizes, learning rates and how many frames are kept in memory. The notebook and :func:`main`
both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mvbook.nn.backbones import BackboneConfig, resnet18_like
from mvbook.runtime import by_profile
from mvbook.validation import check_choice
from mvbook.volumetric import AGGREGATIONS

__all__ = ["Config", "PRETRAINED", "Settings", "STAGES", "initial_backbone", "settings"]

#: The training stages, in order: 2D backbone pretraining, then the two learnable heads.
STAGES = ("pretrain", "algebraic", "volumetric")


@dataclass
class Config:
    """Everything that sizes the chapter's models and losses.

    2D part: ``crop_size`` (square crops, px), ``crop_scale`` (crop side = scale x the longer
    side of the person box), ``backbone`` (:class:`mvbook.nn.BackboneConfig`), ``alpha`` (eq. 1
    inverse temperature, 100 in the paper), ``heatmap_sigma`` (std of the Gaussian targets of
    the backbone pretraining, heatmap px), ``confidence_hidden`` (width of ``q_phi``).

    Volumetric part: ``volume_size`` (``L`` mm; paper 2500), ``volume_resolution`` (voxels per
    side; paper 64), ``volume_channels`` (``K``; paper 32), ``aggregation`` (``"sum"``,
    ``"conf"``, ``"softmax"``), ``v2v_width``/``v2v_levels``/``v2v_norm``/``v2v_front_kernel`` (V2V size),
    ``v2v_layout`` (``"compact"`` or ``"authors"``: :class:`mvbook.nn.V2VNet`),
    ``volume_beta`` (multiplier of the 3D heatmaps inside the eq. 13 softmax; paper 1),
    ``use_valid_mask`` (drop views whose image a voxel falls outside of from the aggregation),
    ``train_yaw`` (random rotation of the cube about the vertical during training),
    ``train_root`` (where the training cube is centred: ``"gt"``, the true pelvis, or
    ``"predicted"``, the pelvis of a trained algebraic model held by the training set as a
    ``root`` tensor, :func:`~.data.with_roots`; the authors' released configurations use the
    latter, ``use_gt_pelvis: false``).

    Losses: ``soft_mse_threshold`` (``epsilon`` of eq. 15 in mm^2; the paper states
    (20 cm)^2), ``heatmap_reg`` (``beta`` of eq. 16; paper 0.01).

    Baselines: ``ransac_threshold`` (crop px).

    ``augment``: random colour changes (channel permutation, gain) and, with ``augment_flip``,
    horizontal flips (with left/right joints swapped) of the backbone pretraining images. A flip
    turns a left-side marking of the body into a right-side one: flips hide appearance cues that
    tell left from right. The studio's bodies carry such a cue (light left limbs), and the studio
    chapters turn flips off.

    ``freeze_backbone``: keep the (pretrained) backbone fixed while training the heads; the
    backbone outputs can then be cached once (:func:`~.data.cache_backbone`). The paper trains end to
    end (False); the CPU profile freezes it.
    """

    crop_size: int = 64
    crop_scale: float = 1.2
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_joints: int = 17
    root_joint: int = 0
    alpha: float = 100.0
    heatmap_sigma: float = 1.0
    confidence_hidden: int = 64
    use_confidences: bool = True
    volume_size: float = 2500.0
    volume_resolution: int = 16
    volume_channels: int = 16
    aggregation: str = "softmax"
    v2v_width: int = 16
    v2v_levels: int = 2
    v2v_norm: str = "batch"
    v2v_front_kernel: int = 7
    v2v_layout: str = "compact"
    volume_beta: float = 1.0
    use_valid_mask: bool = False
    train_yaw: bool = True
    train_root: str = "gt"
    soft_mse_threshold: float = 40000.0
    heatmap_reg: float = 0.01
    ransac_threshold: float = 4.0
    freeze_backbone: bool = False
    augment: bool = True
    augment_flip: bool = True

    def __post_init__(self) -> None:
        check_choice(self.aggregation, "aggregation", AGGREGATIONS)
        check_choice(self.v2v_layout, "v2v_layout", ("compact", "authors"))
        check_choice(self.train_root, "train_root", ("gt", "predicted"))
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be >= 8, got {self.crop_size}")
        if self.volume_resolution % 2**self.v2v_levels:
            raise ValueError(
                f"volume_resolution ({self.volume_resolution}) must be divisible by "
                f"2**v2v_levels ({2**self.v2v_levels})"
            )



@dataclass
class Settings:
    """What one profile trains: ``config``, and per stage (:data:`STAGES`) ``steps``,
    ``batch`` (frames per step, every frame with all its views) and ``lr``; ``weight_decay`` of
    the backbone pretraining; ``max_frames`` kept in memory per split (None: all);
    ``backbone_lr``: per stage, a learning rate of the backbone's parameters when they train
    (the rest use ``lr``); ``schedule``: ``"cosine"`` (warm-up, then decay to 1%) or
    ``"constant"`` (the authors' code).
    ``pretrained``: the zoo model the backbone starts from (``"pose2d"``) or ``"none"`` (then
    the ``"pretrain"`` stage trains it from scratch), and ``zoo_profile`` the size of that zoo
    model (:func:`mvbook.zoo.load`).

    ``max_test_frames``: test frames of the main evaluation (None or 0: every test frame;
    otherwise evenly spread). When the in-memory test set (``max_frames["test"]``) does not hold
    exactly those frames, they are cropped and evaluated ``eval_chunk`` frames at a time
    (:func:`~.data.test_source`, :class:`~.data.CropStream`), so memory is bounded by the chunk
    whatever the number of test frames."""

    config: Config
    steps: dict[str, int]
    batch: dict[str, int]
    lr: dict[str, float]
    weight_decay: float = 1e-2
    max_frames: dict[str, int | None] = field(
        default_factory=lambda: {"train": None, "test": None})
    pretrained: str = "none"
    zoo_profile: str = "quick"
    backbone_weights: str | None = None
    backbone_layout: str = "learnable-triangulation"
    backbone_lr: dict[str, float] = field(default_factory=dict)
    schedule: str = "cosine"
    max_test_frames: int | None = None
    eval_chunk: int = 256


#: Where the backbone may start from: a zoo model, or ``"none"`` (pretrained in the chapter).
#: A published checkpoint given as ``backbone_weights`` is recorded as ``"checkpoint"``.
PRETRAINED = ("pose2d", "none")


def settings(profile: str, data: str = "studio", pretrained: str = "pose2d",
             backbone_weights: str | None = None,
             backbone_layout: str = "learnable-triangulation", dry_run: bool = False,
             max_test_frames: int | None = None) -> Settings:
    """The profile table of the chapter (``smoke``: seconds; ``quick``: minutes on a CPU;
    ``full``: GPU scale).

    ``pretrained="pose2d"`` (the default, like the paper's COCO/MPII-pretrained backbone) takes
    the backbone, the crop size and the crop scale from the zoo's ``pose2d`` recipe (its shipped
    ``quick`` weights in the smoke and quick profiles, the cache's ``full`` weights in the full
    profile) and skips the ``"pretrain"`` stage. ``pretrained="none"`` pretrains a smaller
    backbone inside the chapter on its own training views. On the studio, horizontal flips of
    that pretraining are off (a flip turns the studio's light left limbs into right ones);
    converted real data keeps them.

    ``backbone_weights`` (a path) starts instead from a published SimpleBaselines or
    learnable-triangulation 2D checkpoint (:func:`mvbook.nn.checkpoints.load_simple_baselines`,
    joint order ``backbone_layout``), on crops of 64 / 128 / 384 px (smoke / quick / full; the
    paper's 384 in full); ``plan.pretrained`` is then ``"checkpoint"``.

    Every profile evaluates every test frame (``max_test_frames`` None or 0; a number keeps that
    many, evenly spread). The smoke and quick profiles hold them all in memory; the full profile
    holds at most 5,000 (evenly spread, for the chapter's analyses: views, occlusion, pictures)
    and streams the main evaluation over all of them in chunks of ``eval_chunk`` = 256 frames.

    ``dry_run=True`` keeps the profile's networks but trains one step per stage with batch 2 on
    2 training frames, on the smallest cube its V2V takes (``2**v2v_levels`` voxels a side: 32^3
    in full; ``tests/test_full_size.py`` runs the full 64^3), holds 1 test frame in memory and
    streams the main evaluation over every test frame, one frame a chunk: the whole path of a
    profile (e.g. ``full``, which needs a GPU for real) checked end to end in minutes on a CPU.
    """
    check_choice(pretrained, "pretrained", PRETRAINED)
    zoo_profile = by_profile(profile, smoke="quick", quick="quick", full="full")
    if backbone_weights:
        from mvbook.nn.checkpoints import JOINT_LAYOUTS, checkpoint_config

        check_choice(backbone_layout, "backbone_layout", tuple(JOINT_LAYOUTS))
        backbone = checkpoint_config(backbone_weights)
        crop_size = by_profile(profile, smoke=64, quick=128, full=384)
        crop_scale = 1.0  # the person box is squared, as the authors' crops
        pretrained = "checkpoint"
    elif pretrained == "none":
        backbone = by_profile(
            profile,
            smoke=BackboneConfig(width=8, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2,
                                 deconv_channels=8),
            quick=BackboneConfig(width=16, blocks=(1, 1, 1, 1), stem_stride=2, deconv_layers=3,
                                 deconv_channels=16),
            full=resnet18_like(),
        )
        crop_size = by_profile(profile, smoke=32, quick=64, full=192)
        crop_scale = 1.2
    else:
        from mvbook.zoo import recipe

        rec = recipe(pretrained, zoo_profile)
        backbone, crop_size, crop_scale = rec.backbone, rec.crop_size, rec.crop_scale
    config = Config(
        crop_size=crop_size,
        crop_scale=crop_scale,
        backbone=backbone,
        heatmap_sigma=by_profile(profile, smoke=1.0, quick=2.0, full=2.0),
        volume_size=by_profile(profile, smoke=2000.0, quick=2000.0, full=2500.0),
        volume_resolution=by_profile(profile, smoke=8, quick=8, full=64),
        volume_channels=by_profile(profile, smoke=4, quick=16, full=32),
        v2v_width=by_profile(profile, smoke=8, quick=16, full=32),
        v2v_levels=by_profile(profile, smoke=1, quick=2, full=5),
        v2v_front_kernel=by_profile(profile, smoke=3, quick=3, full=7),
        v2v_layout=by_profile(profile, smoke="compact", quick="compact", full="authors"),
        train_root=by_profile(profile, smoke="gt", quick="gt", full="predicted"),
        ransac_threshold=by_profile(profile, smoke=2.0, quick=4.0, full=8.0) * crop_size / 64,
        freeze_backbone=by_profile(profile, smoke=True, quick=True, full=False),
        augment_flip=str(data) != "studio",
    )
    pretrain_steps = 0 if pretrained != "none" else by_profile(profile, smoke=4, quick=3000,
                                                                full=20000)
    plan = Settings(
        config=config,
        steps=by_profile(profile,
                         smoke=dict(pretrain=pretrain_steps, algebraic=2, volumetric=2),
                         quick=dict(pretrain=pretrain_steps, algebraic=300, volumetric=300),
                         full=dict(pretrain=pretrain_steps, algebraic=10000, volumetric=10000)),
        batch=by_profile(profile,
                         smoke=dict(pretrain=2, algebraic=2, volumetric=2),
                         quick=dict(pretrain=8, algebraic=8, volumetric=4),
                         full=dict(pretrain=8, algebraic=8, volumetric=5)),
        lr=dict(pretrain=3e-3, algebraic=by_profile(profile, smoke=1e-3, quick=1e-3, full=1e-5),
                volumetric=by_profile(profile, smoke=3e-3, quick=1e-2, full=1e-3)),
        backbone_lr=by_profile(profile, smoke={}, quick={}, full=dict(volumetric=1e-4)),
        schedule=by_profile(profile, smoke="cosine", quick="cosine", full="constant"),
        max_frames=by_profile(profile, smoke=dict(train=None, test=None),
                              quick=dict(train=None, test=None),
                              full=dict(train=20000, test=5000)),
        pretrained=pretrained,
        zoo_profile=zoo_profile,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
        backbone_layout=backbone_layout,
        max_test_frames=max_test_frames or None,
        eval_chunk=256,
    )
    if dry_run:
        levels = plan.config.v2v_levels
        plan.config = replace(plan.config, volume_resolution=min(plan.config.volume_resolution, 2**levels))
        plan.steps = {k: min(v, 1) for k, v in plan.steps.items()}
        plan.batch = {k: 2 for k in plan.batch}  # two frames: batch norm at the 1^3 bottom of V2V
        plan.max_frames = {"train": 2, "test": 1}  # fewer held than evaluated: the stream runs
        plan.eval_chunk = 1
    return plan


def initial_backbone(plan: Settings):
    """The backbone the chapter starts from: a copy of the zoo model ``plan.pretrained``, the
    published checkpoint ``plan.backbone_weights`` (``"checkpoint"``), or a freshly initialised
    network of ``plan.config.backbone`` (``"none"``; seed torch first)."""
    from mvbook.nn.backbones import SimpleBaseline
    from mvbook.skeletons import H36M_17

    if plan.pretrained == "none":
        return SimpleBaseline(H36M_17.num_joints, plan.config.backbone)
    if plan.pretrained == "checkpoint":
        from mvbook.nn.checkpoints import load_simple_baselines

        assert plan.backbone_weights is not None
        return load_simple_baselines(plan.backbone_weights, plan.backbone_layout)
    from mvbook.zoo import load

    return load(plan.pretrained, plan.zoo_profile)
