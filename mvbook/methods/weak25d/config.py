"""Configuration of the weakly supervised 2.5D method and its profile table.

:class:`Config` holds the network's and losses' hyper-parameters; :func:`settings` is the one
table of what each profile (``smoke``, ``quick``, ``full``) trains (frames, steps, batches,
learning rates), read by the notebook and by :func:`~.training.main`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mvbook.nn.backbones import BackboneConfig, resnet18_like
from mvbook.runtime import by_profile
from mvbook.validation import check_choice, check_positive

__all__ = ["REFERENCE_BONE", "MODES", "MC_ROOTS", "PRETRAINED", "SUBJECTS", "Config", "Settings",
           "settings"]

#: (n, m) joints of the reference bone of H36M_17: thorax (8) - pelvis (0), length 1 after
#: scale normalisation ("neck-pelvis").
REFERENCE_BONE = (8, 0)
#: The training modes: the 2D-only baseline, weak supervision, full supervision.
MODES = ("2d", "weak", "full")
#: Root depths the consistency term may compare poses at (see :class:`Config`).
MC_ROOTS = ("reference", "reference_flat", "skeleton", "skeleton_flat")
#: Where the 2D part may start from: the zoo's 2D detector, or ``"none"`` (trained in the chapter).
PRETRAINED = ("pose2d", "none")
#: The chapter's split of the Human3.6M protocol subjects.
SUBJECTS = {"2d": ["S1", "S5"], "multiview": ["S6", "S7", "S8"], "test": ["S9", "S11"]}


@dataclass
class Config:
    """Hyper-parameters of the 2.5D network and its losses.

    - ``crop_size``: side of the square person crop fed to the network (px).
    - ``backbone``: size of the :class:`~mvbook.nn.backbones.SimpleBaseline` (its output has
      ``2 J`` channels: ``J`` heatmaps then ``J`` depth maps).
    - ``beta``: inverse temperature of the spatial softmax (1: the network learns the logits;
      on a pretrained detector's heatmaps, whose values lie in [0, 1], the chapter measures it).
    - ``crop_scale``: the crop side is ``crop_scale`` x the longer side of the person box.
    - ``reference_bone``, ``root_joint``: scale normalisation bone ``(n, m)`` and root joint.
    - ``heatmap_sigma``: std (heatmap px) of the Gaussian target of the heatmap term.
    - ``w_coord``, ``w_heatmap``: weights of the L1 soft-argmax term (coordinates divided by
      the heatmap size) and of the cross-entropy heatmap term of the 2D loss.
    - ``w_mc``, ``w_bone``, ``w_sym``: weights of the multiview consistency, bone-ratio and
      symmetry terms (weak supervision). ``w_depth``: weight of the depth term (full supervision).
    - ``mc_delta``: the consistency distance is a smooth L1 (Huber) with this threshold, in
      scale-normalised units (0: plain L1).
    - ``align_grad``: gradients flow through the Procrustes alignment of the consistency loss.
    - ``w_front``, ``z_min``: weight of the distance prior :func:`distance_prior_loss` and the
      smallest plausible joint depth in reference-bone units (3 bones: about 1.5 m).
    - ``color_jitter``: strength of the colour augmentation of training crops (0: none).
    - ``root_grad``: gradients of the consistency and limb terms flow through the root depth
      ``Z_root`` of the reconstruction (False: it is a constant in the backward pass).
    - ``mc_2d_grad``: gradients of the consistency, limb and distance terms reach the predicted
      2D joints of the multiview frames (False: those terms train the depth maps only; the 2D
      comes from the labelled images).
    - ``depth_channels``: channels of the depth head on a pretrained detector
      (:class:`~.model.ZooWeak25D`).
    - ``mc_root``: root depth of the poses compared by the consistency term: ``"reference"``
      (the 2.5D reconstruction, :func:`root_depth_from_25d`), ``"reference_flat"`` (the same
      with zero relative depths: from the 2D reference bone alone), ``"skeleton"`` /
      ``"skeleton_flat"`` (:func:`root_depth_from_skeleton`, all bones, with / without the
      relative depths).
    """

    crop_size: int = 64
    crop_scale: float = 1.25
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        width=16, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2, deconv_channels=32))
    beta: float = 1.0
    reference_bone: tuple[int, int] = REFERENCE_BONE
    root_joint: int = 0
    heatmap_sigma: float = 1.0
    w_coord: float = 1.0
    w_heatmap: float = 1.0
    w_mc: float = 1.0
    w_bone: float = 1.0
    w_sym: float = 1.0
    w_depth: float = 1.0
    mc_delta: float = 0.1
    align_grad: bool = False
    w_front: float = 1.0
    z_min: float = 3.0
    color_jitter: float = 0.0
    root_grad: bool = True
    mc_2d_grad: bool = True
    mc_root: str = "reference"
    depth_channels: int = 64

    def __post_init__(self) -> None:
        check_choice(self.mc_root, "mc_root", MC_ROOTS)
        check_positive(self.crop_scale, "crop_scale")

    @property
    def heatmap_size(self) -> int:
        return self.crop_size // self.backbone.output_stride



@dataclass
class Settings:
    """What one profile trains: ``config``; frames used per set (None: all) ``frames``
    (keys ``"2d"``, ``"multiview"``, ``"test"``); ``steps``, ``lr`` per training mode
    (:data:`MODES`; the weak and full models continue from the 2D-only one); ``batch_2d``
    labelled images and ``batch_mv`` multiview frames per step; ``fit_iters`` of the chapter's
    per-frame depth fit (section 3); ``pretrained``: the zoo model the 2D part is (``"pose2d"``,
    then the ``"2d"`` stage trains nothing and the other stages train the depth head on its
    frozen features) or ``"none"`` (every stage trains the whole network), and ``zoo_profile``
    the size of that zoo model."""

    config: Config
    frames: dict[str, int | None]
    steps: dict[str, int]
    lr: dict[str, float]
    batch_2d: int
    batch_mv: int
    fit_iters: int = 400
    pretrained: str = "none"
    zoo_profile: str = "quick"


def settings(profile: str, pretrained: str = "pose2d", dry_run: bool = False) -> Settings:
    """The profile table of the chapter (``smoke``: seconds; ``quick``: minutes on a CPU;
    ``full``: GPU scale).

    ``pretrained="pose2d"`` (the default; the paper starts from a network trained on an
    independent 2D-labelled collection) takes the crop size, crop scale and backbone from the
    zoo's ``pose2d`` recipe (its shipped ``quick`` weights in the smoke and quick profiles, the
    cache's ``full`` weights in the full profile), keeps that detector frozen and trains a depth
    head on its features. ``pretrained="none"`` trains a small network from scratch: the 2D
    stage on the labelled images, then the weak and full stages end to end, with colour jitter
    0.5 and consistency and limb terms that train the depth maps only (``root_grad=False``,
    ``mc_2d_grad=False``; the notebook's last section motivates them).

    ``dry_run=True`` keeps the profile's networks and crop sizes but uses 2 frames per set, one
    step per training stage (a stage with no steps keeps none), batches of at most 2 labelled
    images and 2 multiview frames, and one iteration of the per-frame depth fit: the whole path
    of a profile (e.g. ``full``, which needs a GPU for real) checked end to end in a minute on a
    CPU (``tests/test_full_size.py`` runs the full-size networks with batch 1).
    """
    plan = _settings(profile, pretrained)
    if dry_run:
        plan.frames = {k: 2 for k in plan.frames}
        plan.steps = {k: min(v, 1) for k, v in plan.steps.items()}
        plan.batch_2d = min(plan.batch_2d, 2)
        plan.batch_mv = min(plan.batch_mv, 2)
        plan.fit_iters = 1
    return plan


def _settings(profile: str, pretrained: str) -> Settings:
    check_choice(pretrained, "pretrained", PRETRAINED)
    zoo_profile = by_profile(profile, smoke="quick", quick="quick", full="full")
    common = dict(color_jitter=0.5, root_grad=False, mc_2d_grad=False)
    n = by_profile(profile, smoke=4, quick=None, full=None)
    frames = {"2d": n, "multiview": n, "test": n}
    batch_2d = by_profile(profile, smoke=4, quick=16, full=64)
    fit_iters = by_profile(profile, smoke=20, quick=400, full=1000)
    if pretrained != "none":
        from mvbook.zoo import recipe

        rec = recipe(pretrained, zoo_profile)
        config = Config(crop_size=rec.crop_size, crop_scale=rec.crop_scale, backbone=rec.backbone,
                        beta=20.0, heatmap_sigma=rec.heatmap_sigma, **common)
        steps = by_profile(profile, smoke=2, quick=500, full=10000)
        return Settings(
            config=config, frames=frames,
            steps={"2d": 0, "weak": steps, "full": steps},
            lr={"2d": 0.0, "weak": 3e-3, "full": 3e-3},
            batch_2d=batch_2d, batch_mv=by_profile(profile, smoke=2, quick=16, full=32),
            fit_iters=fit_iters, pretrained=pretrained, zoo_profile=zoo_profile)
    config = by_profile(
        profile,
        smoke=Config(crop_size=32, **common),
        quick=Config(crop_size=32, **common),
        full=Config(crop_size=128, backbone=resnet18_like(), **common),
    )
    steps_2d, steps = by_profile(profile, smoke=(3, 2), quick=(1500, 600), full=(40000, 20000))
    lr_2d, lr = by_profile(profile, smoke=(5e-3, 3e-3), quick=(5e-3, 3e-3), full=(1e-3, 5e-4))
    return Settings(
        config=config,
        frames=frames,
        steps={"2d": steps_2d, "weak": steps, "full": steps},
        lr={"2d": lr_2d, "weak": lr, "full": lr},
        batch_2d=batch_2d,
        batch_mv=by_profile(profile, smoke=1, quick=4, full=16),
        fit_iters=fit_iters,
        pretrained=pretrained,
        zoo_profile=zoo_profile,
    )
