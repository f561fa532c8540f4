"""Configuration of SelfPose3d: the model and loss sizes, and the profile table.

:class:`Config` sizes the networks and the losses (and holds the ablation switches of the paper's
tables 4-6); :func:`settings` is the one table of what each profile (``smoke``, ``quick``,
``full``) trains: steps, batches, learning rates, frames kept in memory, the pseudo-2D source.
The notebook and :func:`~.training.main` both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mvbook.nn.backbones import BackboneConfig, resnet18_like
from mvbook.runtime import by_profile
from mvbook.validation import check_choice, check_positive

__all__ = ["ABLATIONS", "DEVIATIONS", "PSEUDO", "ROOT_JOINTS", "for_skeleton", "STAGES", "SUPERVISION", "Config", "Settings",
           "settings"]

#: Training stages, in order (sec. 3.6): the 2D network on (pseudo) 2D heatmaps, the root net,
#: the pose net with the heatmap loss only, then with the joint loss added ("finetune").
STAGES = ("backbone", "root", "pose", "finetune")
#: ``"self"``: SelfPose3d (pseudo 2D only); ``"3d"``: the supervised baseline (VoxelPose's
#: protocol: 2D labels for the 2D network, 3D roots and poses for the root and pose nets).
SUPERVISION = ("self", "3d")
#: Sources of the 2D labels: the zoo's ``pose2d`` run top-down on person boxes (the paper's
#: pseudo poses), the projected ground truth (Tab. 3), the ground truth with simulated detector
#: noise, or a path to a file of externally produced pseudo poses (:func:`~.data.read_pseudo`).
PSEUDO = ("pose2d", "gt", "noise")


@dataclass
class Config:
    """Everything that sizes SelfPose3d's networks and losses.

    2D (``heatmap_net_2d``): ``backbone`` (:class:`mvbook.nn.BackboneConfig`; its output stride
    sets the heatmap size), ``num_joints`` ``J``, ``root_joints`` (the root is the mean of these
    joints: the pelvis ``(0,)`` of ``h36m17``, the hips ``(2, 3)`` of ``shelf14``; the 2D network
    has ``J + 1`` heatmaps, the last one the root's), ``heatmap_sigma`` (heatmap px).

    Root net (sec. 3.3): the space box ``space_size`` mm (x, y, z) in ``space_shape`` voxels
    (x, y, z) around ``space_center`` (None: above the point nearest to all optical axes, at
    height ``space_size[2] / 2 - 200`` as VoxelPose's Panoptic cube); ``root_sigma`` mm of the
    3D Gaussian targets; ``max_people`` proposals ``K`` and their ``root_threshold``;
    synthetic roots: ``syn_people`` per sample at most, heights ``syn_z_range`` mm, within
    ``syn_extent`` (fraction of the space's horizontal size), rendered with ``syn_jitter``
    heatmap px, peaks ``U(syn_min_peak, 1)``, each view's root dropped with ``syn_drop``;
    ``root_consistency``: eq. 3 on (eq. 2 alone when False); ``root_width``/``root_levels``.

    Pose net (sec. 3.4): cuboids of ``cuboid_size`` mm in ``cuboid_resolution^3`` voxels
    (the paper 2000 mm, 64^3), V2V ``pose_width``/``pose_levels``/``v2v_norm``, soft-argmax
    with ``pose_beta`` (VoxelPose multiplies the volumes by 100).

    Self-supervision: ``affine`` (random affine augmentations; Tab. 4), ``rotation_deg`` and
    ``scale`` (their ranges, the paper's 45 degrees and 0.35), ``cross_view`` (project the 3D
    poses of augmentation A into augmentation B's images and vice versa, Tab. 4; False
    projects each into its own), ``l1_weight`` (``lambda`` of eqs. 6 and 11 on the paper's
    240 x 128 heatmaps; the loss multiplies it by :func:`~.losses.joint_loss_scale` of the
    model's heatmap size), ``soft_attention`` (eqs. 7-8) with ``attention_weight`` (``sigma`` of eq. 11), ``attention_backbone`` and
    ``attention_scale`` (the images are resized by it before ``attn_net_2d``),
    ``hard_attention`` (eqs. 9-10), ``render_sigma`` (heatmap px of the rendered heatmaps;
    None: ``heatmap_sigma``).

    ``residual``: the V2V networks predict a correction of their input volume (their last layer
    starts at zero): at the start the root volume is the view-averaged root heatmaps and each
    pose the soft-argmax of the view-averaged joint heatmaps. VoxelPose's networks are not
    residual (False, the full profile); the CPU profiles take it so that a few hundred steps
    suffice.

    ``heatmap_source``: where the views' heatmaps come from: ``"network"``, the paper's
    ``heatmap_net_2d`` on whole views, or ``"poses"``, Gaussians rendered at the top-down 2D
    detections of every view (weighted by the detector's peak values; the root at the mean of
    the root joints), as the authors' code feeds Shelf and Campus. The CPU profiles take
    ``"poses"``: on the studio's small views a whole-view network trained for minutes gives
    heatmaps too poor for 3D (measured: soft-argmax of its view-averaged cuboids 600+ mm off).

    ``supervision``: ``"self"`` or ``"3d"`` (:data:`SUPERVISION`); ``match_radius`` mm: the
    supervised pose net trains on proposals within it of a true root (VoxelPose's matching).
    ``freeze_backbone``: the 2D network is fixed after its stage (its heatmaps can be computed
    once, :func:`~.data.cache_heatmaps`); the paper trains it end to end.
    """

    num_joints: int = 17
    root_joints: tuple[int, ...] = (0,)
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        width=16, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2, deconv_channels=16))
    heatmap_sigma: float = 1.5
    space_center: tuple[float, float, float] | None = None
    space_size: tuple[float, float, float] = (4000.0, 4000.0, 2000.0)
    space_shape: tuple[int, int, int] = (32, 32, 16)
    root_sigma: float = 200.0
    max_people: int = 10
    root_threshold: float = 0.3
    syn_people: int = 5
    syn_z_range: tuple[float, float] = (300.0, 1200.0)
    syn_extent: float = 0.8
    syn_jitter: float = 0.5
    syn_min_peak: float = 0.3
    syn_drop: float = 0.2
    root_consistency: bool = True
    root_width: int = 8
    root_levels: int = 2
    cuboid_size: float = 2000.0
    cuboid_resolution: int = 16
    pose_width: int = 8
    pose_levels: int = 2
    v2v_norm: str = "batch"
    pose_beta: float = 100.0
    affine: bool = True
    rotation_deg: float = 45.0
    scale: float = 0.35
    cross_view: bool = True
    l1_weight: float = 0.01
    soft_attention: bool = True
    attention_weight: float = 0.1
    attention_backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        width=8, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2, deconv_channels=8))
    attention_scale: float = 1.0
    hard_attention: bool = True
    render_sigma: float | None = None
    residual: bool = False
    heatmap_source: str = "network"
    supervision: str = "self"
    match_radius: float = 500.0
    freeze_backbone: bool = True

    def __post_init__(self) -> None:
        check_choice(self.supervision, "supervision", SUPERVISION)
        check_choice(self.heatmap_source, "heatmap_source", ("network", "poses"))
        check_choice(self.v2v_norm, "v2v_norm", ("batch", "group"))
        for name in ("heatmap_sigma", "root_sigma", "cuboid_size", "pose_beta", "match_radius"):
            check_positive(getattr(self, name), name)
        for name in ("num_joints", "max_people", "syn_people", "cuboid_resolution"):
            check_positive(getattr(self, name), name, integer=True)
        self.root_joints = tuple(int(j) for j in self.root_joints)
        if not self.root_joints or not all(0 <= j < self.num_joints for j in self.root_joints):
            raise ValueError(f"root_joints must be joint indices < num_joints ({self.num_joints}), "
                             f"got {self.root_joints!r}")
        if self.cuboid_resolution % 2**self.pose_levels:
            raise ValueError(f"cuboid_resolution ({self.cuboid_resolution}) must be divisible "
                             f"by 2**pose_levels ({2**self.pose_levels})")
        if any(int(s) % 2**self.root_levels for s in self.space_shape):
            raise ValueError(f"space_shape {self.space_shape} must be divisible by "
                             f"2**root_levels ({2**self.root_levels})")
        if len(self.space_size) != 3 or len(self.space_shape) != 3:
            raise ValueError("space_size and space_shape must hold (x, y, z)")

    @property
    def space_voxel(self) -> tuple[float, float, float]:
        """The voxel size of the space cube, mm (x, y, z)."""
        return tuple(L / n for L, n in zip(self.space_size, self.space_shape))


@dataclass
class Settings:
    """What one profile trains: ``config``; per stage (:data:`STAGES`) ``steps``, ``batch``
    (frames per step, each with all its views) and ``lr`` (Adam, cosine decay to 1%);
    ``max_frames`` per split kept in memory (None: all); ``pseudo`` (:data:`PSEUDO` or a path);
    ``augmentations``: augmented copies of each training frame whose heatmaps are computed once
    when the 2D network is frozen or the heatmaps are rendered from detections (a step draws
    two of them; 0: augment online with a frozen network, no augmentation with detections);
    ``zoo_profile``: the size of the zoo's ``pose2d`` giving the pseudo poses;
    ``pretrained``: where the 2D network starts: ``"pose2d"``, the zoo's 2D detector (its
    weights; the root heatmap starts as the mean of the root joints' heatmaps), as the paper
    starts from a pretrained network, or ``"none"`` (random);
    ``studio``: overrides of the multi-person studio's configuration (``open_data``)."""

    config: Config
    steps: dict[str, int]
    batch: dict[str, int]
    lr: dict[str, float]
    max_frames: dict[str, int | None] = field(
        default_factory=lambda: {"train": None, "test": None})
    pseudo: str = "pose2d"
    augmentations: int = 4
    zoo_profile: str = "quick"
    pretrained: str = "pose2d"
    studio: dict = field(default_factory=dict)

    def replace(self, **changes) -> Settings:
        """A copy with ``config`` fields (``Config`` names) and ``Settings`` fields changed."""
        cfg_fields = {k: v for k, v in changes.items() if k in Config.__dataclass_fields__}
        own = {k: v for k, v in changes.items() if k not in cfg_fields}
        unknown = set(own) - set(Settings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return replace(self, config=replace(self.config, **cfg_fields), **own)


#: The root joints (the root is their mean) of each skeleton: the pelvis of ``h36m17``, the
#: body centre ("mid-hip", index 2) of Panoptic's skeletons, the hips of ``shelf14``.
ROOT_JOINTS: dict[str, tuple[int, ...]] = {
    "h36m17": (0,), "panoptic15": (2,), "panoptic19": (2,), "shelf14": (2, 3)}


def for_skeleton(plan: Settings, skeleton: str, num_joints: int) -> Settings:
    """``plan`` for data of ``skeleton`` (``num_joints`` joints): its root joints
    (:data:`ROOT_JOINTS`) and joint count. The zoo's ``pose2d`` (17 ``h36m17`` joints) can then
    start the 2D network only for ``h36m17`` data; other skeletons start it afresh."""
    if skeleton not in ROOT_JOINTS:
        raise ValueError(f"skeleton {skeleton!r} has no root joints; known: {sorted(ROOT_JOINTS)}")
    changes: dict = {"root_joints": ROOT_JOINTS[skeleton], "num_joints": int(num_joints)}
    if skeleton != "h36m17" and plan.pretrained == "pose2d":
        changes["pretrained"] = "none"
    return plan.replace(**changes)


#: Where the book departs from the paper (and where the paper and the authors' code disagree),
#: for the notebook to list.
DEVIATIONS: tuple[str, ...] = (
    "Pseudo 2D poses: the zoo's pose2d (a studio-trained 2D detector) on the dataset's person "
    "boxes of persons with at least 6 visible joints, instead of HRNet on Mask R-CNN boxes "
    "(the authors' code uses Keypoint R-CNN boxes).",
    "heatmap_net_2d starts from the zoo's pose2d weights (the paper: an ImageNet ResNet-50 "
    "trained 20 epochs on the pseudo poses) and has one extra root heatmap (the mean of the root "
    "joints); the CPU profiles fine-tune it briefly and then freeze it, computing its heatmaps of "
    "each training frame and of a few augmented copies once (the paper trains end to end).",
    "Affine augmentations follow the paper: rotation U(-45, 45) degrees and scale 1 + U(-0.35, "
    "0.35); the authors' code rotates only half of the time and draws the scale offset from "
    "[0.1, 0.35] or -[0.05, 0.175]. One draw per copy and frame, shared by the views (as the "
    "code; the paper does not say). No rand-augment or cutout.",
    "Synthetic roots: 1..5 per sample, uniform in 80% of the space's horizontal extent at "
    "heights 0.3-1.2 m; their 2D Gaussians get N(0, 0.5 px) jitter, peaks U(0.3, 1) and a 20% "
    "chance per view of being dropped (the paper says only 'with noise').",
    "Eq. 3 treats G^0 as a fixed target (no gradient), the paper's 'baseline'.",
    "The root net's proposals of the unaugmented views are computed once after its stage and "
    "the root net stays fixed in the pose stages (the paper's Tab. 4 setting).",
    "Attention maps A = 2 sigmoid(z) (positive, 1 at the start); the paper does not say how A "
    "is kept non-negative. attn_net_2d is a small SimpleBaseline, not a ResNet-18, on CPU.",
    "The L1 joint loss is in heatmap pixels; the projected poses are rendered and matched "
    "against all pseudo persons of a view (maximum over persons).",
    "The space box of the studio is 4 x 4 x 2 m (people stand within 1.5 m of the centre), "
    "32 x 32 x 16 voxels in quick, 40 x 40 x 20 (the paper's 100 mm voxel) in full; pose "
    "cuboids 2 m in 16^3 voxels in quick (the paper 64^3).",
    "CPU profiles (smoke, quick): the views' heatmaps are Gaussians rendered at the top-down "
    "detections (scaled by the detector's peak values), the path the authors' code takes for "
    "Shelf and Campus, instead of heatmap_net_2d on whole views: on the studio's 192 x 108 "
    "views a whole-view network trained for minutes gave heatmaps whose view-averaged cuboids "
    "put joints 400-700 mm off. The test frames get detections too (never ground truth); the "
    "person boxes are the dataset's.",
    "CPU profiles: residual V2V networks (the input volume plus a correction), group instead "
    "of batch normalisation (batches of 1-2 frames; synthetic and real root volumes in one "
    "stage), attn_net_2d on half-size images, a few hundred steps per stage instead of epochs, "
    "Adam with a cosine decay instead of step decays; smoke takes a root threshold of 0.1 "
    "instead of VoxelPose's 0.3 (its root net trains 2 steps).",
    "Eq. 11's lambda is the paper's 0.01 rescaled to the heatmaps' size "
    "(joint_loss_scale): for a joint misplaced by more than a few sigma (one taken from a "
    "neighbour) eq. 7, a mean over h x w pixels of Gaussians of sigma px, scales as "
    "sigma^2 / (h w), while the L1 of eqs. 5 and 10 is in heatmap px and scales as w; keeping "
    "their ratio as on the paper's 240 x 128 maps with sigma 2 multiplies lambda by 66.7 on the "
    "quick studio's 48 x 27 maps (sigma 1.5) and by 14.8 in full (96 x 54, sigma 2).",
    "Schedules: the paper trains the pose net 5 epochs with the L2 loss then 5 with L1 added at "
    "half the rate; the authors' configuration trains 8 epochs with L1 from epoch 5. The quick "
    "profile trains eq. 11 from the first step (150 steps of one frame): on the studio's crowded "
    "scenes the L2 loss alone moves joints onto a neighbour's (a neighbour's joint projects onto "
    "a pseudo joint in every view, so eq. 4 does not penalise it; only the matched L1 does), and "
    "50 L2-only steps left the poses worse than the untrained residual network.",
    "Supervised baseline: the same networks (a root net on the root heatmap only, not "
    "VoxelPose's all-joint input) trained on ground-truth 2D heatmaps, 3D root Gaussians and L1 "
    "to the true pose of proposals within 500 mm of a true root.",
)

#: The ablations of the paper's tables, as changes of :class:`Config` / :class:`Settings`
#: (``settings(...).replace(**ABLATIONS[name])``).
ABLATIONS: dict[str, dict] = {
    "selfpose3d": {},
    "gt2d": {"pseudo": "gt"},                                # Tab. 3, ground-truth 2D poses
    "noise2d": {"pseudo": "noise"},                          # simulated detector noise
    "no_affine": {"affine": False, "cross_view": False},     # Tab. 4, first row
    "no_cross_view": {"cross_view": False},                  # Tab. 4, second row
    "l2_only": {"l1_weight": 0.0},                           # Tab. 5, L2 row
    "no_attention": {"soft_attention": False, "hard_attention": False},  # Tab. 6, first row
    "supervised": {"supervision": "3d", "pseudo": "gt"},     # VoxelPose with 3D labels
}


def settings(profile: str, data: str = "studio", pseudo: str = "pose2d",
             supervision: str = "self", pretrained: str = "pose2d") -> Settings:
    """The profile table of the chapter (``smoke``: seconds; ``quick``: minutes on a 2-core CPU
    for the whole chapter; ``full``: GPU, the paper's sizes).

    The space: on the studio's Panoptic-like rig people stand within 1.5 m of the centre, so
    the paper's 8 x 8 x 2 m cube shrinks to 4 x 4 x 2 m (quick: 32 x 32 x 16 voxels of 125 mm;
    full: 40 x 40 x 20 voxels of 100 mm, the paper's voxel); on converted real data the paper's
    8 x 8 x 2 m in 80 x 80 x 20 (Campus: 12 x 12 x 2 m in 120 x 120 x 20, as VoxelPose).
    Pose cuboids are 2 m in 64^3 voxels in full (the paper), 16^3 in quick, 8^3 in smoke.

    The 2D network: with ``pretrained="pose2d"`` the zoo's ``pose2d`` network (its size and
    weights, output stride 4), fine-tuned on the whole views; with ``"none"`` a smaller network
    (output stride 2) from scratch.
    """
    check_choice(supervision, "supervision", SUPERVISION)
    check_choice(pretrained, "pretrained", ("pose2d", "none"))
    zoo_profile = by_profile(profile, smoke="quick", quick="quick", full="full")
    studio = str(data) == "studio"
    campus = "campus" in str(data).lower()
    space_size = (4000.0, 4000.0, 2000.0) if studio else (
        (12000.0, 12000.0, 2000.0) if campus else (8000.0, 8000.0, 2000.0))
    space_shape = by_profile(profile, smoke=(16, 16, 8), quick=(32, 32, 16),
                             full=(40, 40, 20)) if studio else by_profile(
        profile, smoke=(32, 32, 8), quick=(64, 64, 16),
        full=(120, 120, 20) if campus else (80, 80, 20))
    if pretrained == "pose2d":
        from mvbook.zoo import recipe

        backbone = recipe("pose2d", zoo_profile).backbone
    else:
        backbone = by_profile(
            profile,
            smoke=BackboneConfig(width=8, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2,
                                 deconv_channels=8),
            quick=BackboneConfig(width=16, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2,
                                 deconv_channels=16),
            full=resnet18_like())
    config = Config(
        backbone=backbone,
        heatmap_sigma=by_profile(profile, smoke=1.0, quick=1.5, full=2.0),
        space_size=space_size,
        space_shape=space_shape,
        root_width=by_profile(profile, smoke=4, quick=4, full=16),
        root_levels=by_profile(profile, smoke=1, quick=2, full=2),
        cuboid_resolution=by_profile(profile, smoke=8, quick=16, full=64),
        pose_width=by_profile(profile, smoke=4, quick=8, full=32),
        pose_levels=by_profile(profile, smoke=1, quick=2, full=4),
        attention_backbone=by_profile(
            profile,
            smoke=BackboneConfig(width=4, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2,
                                 deconv_channels=4),
            quick=BackboneConfig(width=8, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2,
                                 deconv_channels=8),
            full=resnet18_like()),
        max_people=by_profile(profile, smoke=5, quick=6, full=10),
        attention_scale=by_profile(profile, smoke=0.5, quick=0.5, full=1.0),
        root_threshold=by_profile(profile, smoke=0.1, quick=0.3, full=0.3),
        supervision=supervision,
        residual=by_profile(profile, smoke=True, quick=True, full=False),
        heatmap_source=by_profile(profile, smoke="poses", quick="poses", full="network"),
        v2v_norm=by_profile(profile, smoke="group", quick="group", full="batch"),
        freeze_backbone=by_profile(profile, smoke=True, quick=True, full=False),
    )
    return Settings(
        config=config,
        steps=by_profile(profile,
                         smoke=dict(backbone=2, root=2, pose=2, finetune=2),
                         quick=dict(backbone=100, root=60, pose=0, finetune=150),
                         full=dict(backbone=20000, root=5000, pose=20000, finetune=20000)),
        batch=by_profile(profile,
                         smoke=dict(backbone=2, root=2, pose=2, finetune=2),
                         quick=dict(backbone=2, root=2, pose=1, finetune=1),
                         full=dict(backbone=4, root=4, pose=1, finetune=1)),
        lr=by_profile(profile,
                      smoke=dict(backbone=1e-3, root=1e-3, pose=1e-3, finetune=5e-4),
                      quick=dict(backbone=5e-4, root=5e-3, pose=3e-3, finetune=1.5e-3),
                      full=dict(backbone=1e-4, root=1e-4, pose=1e-4, finetune=5e-5)),
        max_frames=by_profile(profile, smoke={"train": 4, "test": 2},
                              quick={"train": 150, "test": 60},
                              full={"train": None, "test": None}),
        pseudo="gt" if supervision == "3d" else pseudo,
        augmentations=by_profile(profile, smoke=2, quick=2, full=0),
        zoo_profile=zoo_profile,
        pretrained=pretrained,
    )
