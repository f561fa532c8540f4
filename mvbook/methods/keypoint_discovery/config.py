"""Configuration of unsupervised 3D keypoint discovery (Honari et al.) and its profile table.

:class:`Config` holds the network sizes and the weights of eq. 15; :data:`TERMS` names the loss
terms and :data:`LOSSES` the rows of the paper's Tab. 4; :data:`MASK_TARGETS` the targets of
Tab. 6; :func:`settings` is the one table of what each profile (``smoke``, ``quick``, ``full``)
prepares and trains, read by the notebook and by :func:`~.training.main`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mvbook.runtime import by_profile
from mvbook.studio.scenes import TEST_SUBJECTS, TRAIN_SUBJECTS
from mvbook.validation import check_choice, check_positive

__all__ = ["TERMS", "LOSSES", "MASK_TARGETS", "Config", "Settings", "settings", "loss_terms"]

#: The four terms of eq. 15: image reconstruction (eq. 10), mask reconstruction from the
#: keypoints (eq. 11), coverage (eqs. 12-13) and bounding-box centering (eq. 14).
TERMS = ("reconst", "mask", "coverage", "centering")
#: The rows of the paper's Tab. 4: each adds one term of eq. 15.
LOSSES = ("reconst", "reconst+mask", "reconst+mask+coverage", "reconst+mask+coverage+centering")
#: The target of the mask loss (Tab. 6): the model's own mask M_p (the paper's method), the true
#: mask (the paper then drops L_reconst), or |image - background| normalised to [0, 1].
MASK_TARGETS = ("own", "true", "image_minus_background")


def loss_terms(name: str) -> frozenset[str]:
    """The terms of a loss name such as ``"reconst+mask"`` (checked against :data:`TERMS`)."""
    terms = [t.strip() for t in str(name).split("+")]
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise ValueError(f"loss must be terms of {TERMS} joined by '+', e.g. 'reconst+mask', "
                         f"got {name!r}")
    return frozenset(terms)


@dataclass
class Config:
    """The networks' sizes and the losses' weights.

    - ``num_keypoints``: N, the discovered keypoints (32 on Human3.6M in the paper);
    - ``patch_size``: side of the patch p the detector's box is resampled to (128 in the paper);
    - ``detector_stride``: the detector sees the frame down-sampled by this factor (4);
    - ``box_range``: (smallest, largest) box side as a fraction of the frame side; the detector's
      sigmoid outputs are mapped to it (the paper does not say how S's outputs are bounded);
    - ``latent_dim``: length of the encoder's feature Xi; ``width``: the encoder's first
      channel count; ``decoder_channels``: channels of the decoders' first map (256 in Tab. S1);
      ``decoder_convs``: 3x3 convolutions per up-sampling block (3 in Tab. S1); ``dropout``;
    - ``heatmap_sigma``: standard deviation of the Gaussian maps of eqs. 9 and 12 as a fraction
      of the patch side (the paper's sigma = 0.02);
    - ``beta``, ``gamma``, ``delta``, ``eta``: the weights of eq. 15 and of the perceptual term
      of eq. 10 (supplementary S.1.3: 2, 0.5 on Human3.6M, 0.01, 1.0);
    - ``mask_target``: :data:`MASK_TARGETS`.
    """

    num_keypoints: int = 32
    patch_size: int = 128
    detector_stride: int = 4
    box_range: tuple[float, float] = (0.25, 1.0)
    latent_dim: int = 729
    width: int = 32
    decoder_channels: int = 256
    decoder_convs: int = 3
    dropout: float = 0.1
    heatmap_sigma: float = 0.02
    beta: float = 2.0
    gamma: float = 0.5
    delta: float = 0.01
    eta: float = 1.0
    mask_target: str = "own"

    def __post_init__(self) -> None:
        for name in ("num_keypoints", "patch_size", "detector_stride", "latent_dim", "width",
                     "decoder_channels", "decoder_convs"):
            check_positive(getattr(self, name), name, integer=True)
        if self.patch_size % 8:
            raise ValueError(f"patch_size must be a multiple of 8 (three 2x up-samplings), "
                             f"got {self.patch_size}")
        if self.decoder_channels % 8:
            raise ValueError(f"decoder_channels must be a multiple of 8, got "
                             f"{self.decoder_channels}")
        lo, hi = (float(v) for v in self.box_range)
        if not 0 < lo < hi:
            raise ValueError(f"box_range must be (smallest, largest) fractions with "
                             f"0 < smallest < largest, got {self.box_range}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_positive(self.heatmap_sigma, "heatmap_sigma")
        for name in ("beta", "gamma", "delta", "eta"):
            check_positive(getattr(self, name), name, strict=False)
        check_choice(self.mask_target, "mask_target", MASK_TARGETS)


@dataclass
class Settings:
    """What one profile prepares and trains.

    ``config``; ``frame_size``: the width the frames are resized to (None: as stored);
    ``train_frames`` / ``test_frames``: frames kept (evenly over the split; None: all);
    ``background_frames``: frames whose per-pixel median is the background;
    ``reconstruction``: where the runs' image path starts (:mod:`~.pretrained`): ``"shipped"``
    (the stored stage) or ``"train"`` (trained in the run for ``reconstruction_steps`` steps with
    ``reconstruction_warmup`` warm-up steps; 0: every run starts from scratch); ``batch``:
    frames (each seen by every view) per step; ``steps``, ``lr`` (encoder, keypoint head, mask
    decoder) and ``lr_slow`` (detector and image decoder, the paper's 2e-5 against 1e-4),
    ``warmup`` of Adam with :func:`mvbook.schedules.warmup_cosine`; ``claim_loss``: the loss
    trained against ``"reconst"`` with every seed; ``losses``: the Tab. 4 rows trained (the
    quick profile leaves out ``+coverage`` to stay within its minutes); ``view_counts``:
    Tab. 5; ``keypoint_counts``: the keypoint-count ablation; ``mask_targets``: Tab. 6;
    ``pose_hidden``, ``pose_steps``, ``pose_lr``, ``pose_dropout``: the 2-hidden-layer MLP of
    sec. 3.5 (2048 units, 50% dropout in the paper); ``lift_hidden``, ``lift_steps``: the
    single-view lifting network of Tab. S2 (1024 units); ``zoo_profile``: size of the ``trunk``;
    ``subjects``: train and test subjects.
    """

    config: Config
    frame_size: int | None
    train_frames: int | None
    test_frames: int | None
    background_frames: int
    reconstruction: str
    reconstruction_steps: int
    reconstruction_warmup: int
    reconstruction_batch: int
    batch: int
    steps: int
    lr: float
    lr_slow: float
    warmup: int
    claim_loss: str
    losses: tuple[str, ...]
    view_counts: tuple[int, ...]
    keypoint_counts: tuple[int, ...]
    mask_targets: tuple[str, ...]
    pose_hidden: int
    pose_steps: int
    pose_lr: float
    pose_dropout: float
    lift_hidden: int
    lift_steps: int
    zoo_profile: str = "quick"
    subjects: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"train": TRAIN_SUBJECTS, "test": TEST_SUBJECTS})


def settings(profile: str) -> Settings:
    """The chapter's profile table (``smoke``: seconds; ``quick``: minutes on a 2-core CPU with
    small networks on 64 px patches; ``full``: the paper's sizes and schedule, GPU scale)."""
    config = by_profile(
        profile,
        smoke=Config(num_keypoints=8, patch_size=16, detector_stride=2, latent_dim=16, width=4,
                     decoder_channels=8, decoder_convs=1, dropout=0.0, heatmap_sigma=0.08),
        quick=Config(num_keypoints=32, patch_size=32, detector_stride=2, latent_dim=128,
                     width=16, decoder_channels=64, decoder_convs=1, dropout=0.0,
                     heatmap_sigma=0.04),
        full=Config(),
    )
    return Settings(
        config=config,
        frame_size=by_profile(profile, smoke=None, quick=64, full=None),
        train_frames=by_profile(profile, smoke=8, quick=None, full=None),
        test_frames=by_profile(profile, smoke=4, quick=None, full=None),
        background_frames=by_profile(profile, smoke=8, quick=300, full=2000),
        reconstruction=by_profile(profile, smoke="train", quick="shipped", full="train"),
        reconstruction_steps=by_profile(profile, smoke=2, quick=4000, full=0),
        reconstruction_warmup=by_profile(profile, smoke=0, quick=50, full=0),
        reconstruction_batch=by_profile(profile, smoke=2, quick=8, full=32),
        batch=by_profile(profile, smoke=2, quick=4, full=32),
        steps=by_profile(profile, smoke=3, quick=150, full=200_000),
        lr=by_profile(profile, smoke=1e-3, quick=2e-3, full=1e-4),
        lr_slow=by_profile(profile, smoke=2e-4, quick=4e-4, full=2e-5),
        warmup=by_profile(profile, smoke=0, quick=20, full=1000),
        claim_loss=LOSSES[-1],
        losses=by_profile(profile, smoke=LOSSES, quick=(LOSSES[0], LOSSES[1], LOSSES[3]),
                          full=LOSSES),
        view_counts=by_profile(profile, smoke=(2, 3, 4), quick=(2, 4), full=(2, 3, 4)),
        keypoint_counts=by_profile(profile, smoke=(4, 8), quick=(16, 32), full=(16, 32)),
        mask_targets=MASK_TARGETS,
        pose_hidden=by_profile(profile, smoke=16, quick=256, full=2048),
        pose_steps=by_profile(profile, smoke=5, quick=500, full=200_000),
        pose_lr=1e-3,
        pose_dropout=by_profile(profile, smoke=0.0, quick=0.2, full=0.5),
        lift_hidden=by_profile(profile, smoke=16, quick=256, full=1024),
        lift_steps=by_profile(profile, smoke=5, quick=500, full=200_000),
        zoo_profile=by_profile(profile, smoke="quick", quick="quick", full="full"),
    )
