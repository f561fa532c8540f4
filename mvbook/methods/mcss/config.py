"""Configuration of MCSS (Mitra et al. 2020) and its profile table.

:class:`Config` holds the network's and losses' hyper-parameters (the paper's values where it
gives them); :func:`settings` is the one table of what each profile (``smoke``, ``quick``,
``full``) prepares and trains, read by the notebook and by :func:`~.training.main`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mvbook.runtime import by_profile
from mvbook.studio.scenes import TEST_SUBJECTS, TRAIN_SUBJECTS
from mvbook.validation import check_choice, check_positive

__all__ = ["REPRESENTATIONS", "MODES", "SUPERVISION", "ROOT_JOINT", "LEFT_HIP", "Config",
           "Settings", "settings"]

#: Pose representations the regressor can be trained on: the paper's canonical pose (eq. 3)
#: or the global (MoCap, world) pose, both root-relative.
REPRESENTATIONS = ("canonical", "global")
#: Training modes: MCSS (metric loss on unlabelled view pairs + pose loss on the labelled
#: images), the L_pose-only baseline, and the metric loss alone (no 3D labels).
MODES = ("mcss", "baseline", "metric")
#: Root and left-hip joints of ``h36m17`` (pelvis 0, l_hip 4): the bone of eq. 3.
ROOT_JOINT = 0
LEFT_HIP = 4
#: The chapter's 3D-supervision levels: ``name -> (subjects, fraction of their frames)``;
#: the metric loss always reads all training subjects' views.
SUPERVISION = {
    "all": (TRAIN_SUBJECTS, 1.0),
    "S1": (("S1",), 1.0),
    "S1 20%": (("S1",), 0.2),
    "S1 5%": (("S1",), 0.05),
}


@dataclass
class Config:
    """Hyper-parameters of the MCSS network and losses.

    - ``crop_size``, ``crop_scale``: square person crops of ``crop_scale`` x the longer side of
      the person box resampled to ``crop_size`` px (those of the zoo ``trunk``'s recipe).
    - ``pool``: max-pool of the trunk's last map before the embedding network (the paper
      max-pools ResNet's 7 x 7 output by 2).
    - ``hidden``, ``embedding_dim``: the embedding network G, FC(D, hidden) - ReLU -
      FC(hidden, embedding_dim) - L2 normalisation (paper: 128-d).
    - ``alpha``, ``beta``: margin and negative threshold of the metric loss (eqs. 1-2;
      paper: 0.6 and 0.3).
    - ``w_metric``, ``w_pose``: weights of L_cnstr and L_pose in joint training (the paper
      adds them; it states no weights).
    - ``representation``: ``"canonical"`` (eq. 3) or ``"global"`` root-relative targets.
    - ``root_joint``, ``left_hip``: joints of the canonical rotation's bone.
    - ``finetune_stages``: how many of the trunk's last stages train with the head (0: the
      trunk is frozen and its features are computed once; the paper fine-tunes all of it).
    """

    crop_size: int = 128
    crop_scale: float = 1.2
    pool: int = 2
    hidden: int = 256
    embedding_dim: int = 128
    alpha: float = 0.6
    beta: float = 0.3
    w_metric: float = 1.0
    w_pose: float = 1.0
    representation: str = "canonical"
    root_joint: int = ROOT_JOINT
    left_hip: int = LEFT_HIP
    finetune_stages: int = 0

    def __post_init__(self) -> None:
        check_choice(self.representation, "representation", REPRESENTATIONS)
        check_positive(self.crop_scale, "crop_scale")
        check_positive(self.alpha, "alpha")
        if not isinstance(self.finetune_stages, int) or self.finetune_stages < 0:
            raise ValueError(f"finetune_stages must be an int >= 0, got {self.finetune_stages!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass
class Settings:
    """What one profile prepares and trains.

    ``config``; ``frame_stride``: temporal sub-sampling of the studio's frames (keep every
    ``frame_stride``-th frame of a sequence); ``min_gap``: frames of one sequence in one metric
    mini-batch are at least this many kept frames apart; ``max_frames``: frames per split kept
    (None: all); ``batch_metric`` anchor-positive pairs and ``batch_pose`` labelled images per
    step (paper: 3:1, 66 and 22); ``steps``, ``lr``, ``warmup`` of Adam with
    :func:`mvbook.schedules.warmup_cosine`; ``supervision``: the levels of
    :data:`SUPERVISION` the chapter trains; ``queries``: retrieval queries per measurement;
    ``zoo_profile``: size of the zoo ``trunk``; ``subjects``: train and test subjects.
    """

    config: Config
    frame_stride: int
    min_gap: int
    max_frames: int | None
    batch_metric: int
    batch_pose: int
    steps: int
    lr: float
    warmup: int
    supervision: tuple[str, ...]
    queries: int
    zoo_profile: str = "quick"
    subjects: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"train": TRAIN_SUBJECTS, "test": TEST_SUBJECTS})


def settings(profile: str) -> Settings:
    """The chapter's profile table (``smoke``: seconds; ``quick``: minutes on a 2-core CPU with
    the trunk frozen and its features computed once; ``full``: GPU scale).

    The crop geometry comes from the zoo ``trunk`` recipe of ``zoo_profile`` (its shipped
    ``quick`` weights in the smoke and quick profiles).
    """
    from mvbook.zoo import recipe

    zoo_profile = by_profile(profile, smoke="quick", quick="quick", full="full")
    rec = recipe("trunk", zoo_profile)
    # the CPU profiles freeze the trunk (features computed once); the full profile trains its
    # last stage with the head (the paper fine-tunes the whole ResNet)
    config = Config(crop_size=rec.crop_size, crop_scale=rec.crop_scale,
                    finetune_stages=by_profile(profile, smoke=0, quick=0, full=1))
    return Settings(
        config=config,
        frame_stride=1,  # the studio renders at 10 fps: the paper's training rate (every 5th at 50 fps)
        min_gap=by_profile(profile, smoke=1, quick=2, full=2),
        max_frames=None,
        batch_metric=by_profile(profile, smoke=4, quick=66, full=66),
        batch_pose=by_profile(profile, smoke=4, quick=22, full=22),
        steps=by_profile(profile, smoke=3, quick=400, full=20000),
        # the paper's 1e-3 for the full profile; the CPU profiles' few hundred steps on a frozen
        # trunk use 3e-3, chosen on a validation split (S8 held out of S1-S7), not on the test
        lr=by_profile(profile, smoke=3e-3, quick=3e-3, full=1e-3),
        warmup=by_profile(profile, smoke=0, quick=20, full=500),
        supervision=("all", "S1", "S1 20%", "S1 5%"),
        queries=by_profile(profile, smoke=8, quick=300, full=1000),
        zoo_profile=zoo_profile,
    )
