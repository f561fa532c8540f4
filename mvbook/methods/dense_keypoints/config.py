"""Configuration of semi-supervised dense keypoints (Yu et al. 2021) and its profile table.

:class:`Config` holds the losses' hyper-parameters; :data:`LOSSES` names the loss combinations
of the paper's Tab. 1; :func:`settings` is the one table of what each profile (``smoke``,
``quick``, ``full``) prepares and trains, read by the notebook and by :func:`~.training.main`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mvbook.dense import DEFAULT_BLOCK
from mvbook.runtime import by_profile
from mvbook.studio.scenes import TEST_SUBJECTS, TRAIN_SUBJECTS
from mvbook.validation import check_choice, check_positive

__all__ = ["TERMS", "LOSSES", "NORMALIZE", "COORDINATES", "Config", "Settings", "settings", "loss_terms"]

#: The four terms of eq. 9: labelled L_L (eq. 10), multiview geometric L_M (eq. 11),
#: distillation L_R (eq. 13) and multiview photometric L_T (eq. 15).
TERMS = ("L", "M", "R", "T")
#: The rows of the paper's Tab. 1 (ablation block): the name of a run is its loss terms.
LOSSES = ("L", "L+M", "L+T", "L+M+T", "L+R", "L+R+M", "L+R+T", "L+R+M+T")
#: How the second term of eq. 17 normalises the matchability (:mod:`mvbook.dense`).
NORMALIZE = ("paper", "symmetric")
#: The canonical coordinate the matchability compares: ``"surface"``, the rest-pose 3D point of
#: (part, UV) on the body (mm; parts and UV in one coordinate), or ``"uv"``, the UV within the
#: predicted part (pixels of different parts never match).
COORDINATES = ("surface", "uv")


def loss_terms(name: str) -> frozenset[str]:
    """The terms of a loss name such as ``"L+R+M"`` (checked against :data:`TERMS`)."""
    terms = [t.strip() for t in str(name).split("+")]
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise ValueError(f"loss must be terms of {TERMS} joined by '+', e.g. 'L+R+M', got {name!r}")
    return frozenset(terms)


@dataclass
class Config:
    """Hyper-parameters of the losses (eqs. 4, 8, 9).

    - ``coordinate``: the canonical coordinate of the matchability (:data:`COORDINATES`);
    - ``sigma``: the matchability's standard deviation (eq. 4), in the coordinate's unit (mm
      for ``"surface"``, UV for ``"uv"``);
    - ``eps``: the correspondence tolerance of the visibility (eq. 8), same unit;
    - ``normalize``: ``"paper"`` (eq. 17 as written: one M, rows normalised over the second
      view) or ``"symmetric"`` (the second term normalises over the first view);
    - ``w_labelled``, ``w_epipolar``, ``w_distill``, ``w_photometric``: lambda_L, lambda_M,
      lambda_R, lambda_T of eq. 9.

    The paper states none of these values. The defaults were chosen on a validation split of
    the training subjects (S8 held out of S1-S7, the quick profile, 150 steps): among sigma in
    15..100 mm, lambda_M in 0.05..2, the UV coordinate and the symmetric normalisation, the
    largest reduction of the epipolar error that kept AUC10 at ``phi_0``'s level. ``w_epipolar`` multiplies an
      error in pixels of the network's output map (``output_size`` px per crop side);
      ``w_photometric`` a squared colour difference in [0, 1] units;
    - ``crop_size``, ``crop_scale``, ``output_size``: the person crops (those of the zoo
      ``dense0`` recipe) and the side of the network's output map;
    - ``block``: view-b pixels per block of the streaming operator.
    """

    coordinate: str = "surface"
    sigma: float = 100.0
    eps: float = 60.0
    normalize: str = "paper"
    w_labelled: float = 1.0
    w_epipolar: float = 0.5
    w_distill: float = 1.0
    w_photometric: float = 1.0
    crop_size: int = 128
    crop_scale: float = 1.2
    output_size: int = 32
    block: int = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        check_positive(self.sigma, "sigma")
        check_positive(self.eps, "eps")
        check_choice(self.normalize, "normalize", NORMALIZE)
        check_choice(self.coordinate, "coordinate", COORDINATES)
        check_positive(self.crop_scale, "crop_scale")
        for name in ("w_labelled", "w_epipolar", "w_distill", "w_photometric"):
            check_positive(getattr(self, name), name, strict=False)
        for name in ("crop_size", "output_size", "block"):
            check_positive(getattr(self, name), name, integer=True)


@dataclass
class Settings:
    """What one profile prepares and trains.

    ``config``; ``train_frames`` / ``test_frames``: frames of the target domain kept (evenly
    over the split; None: all); ``labelled_frames``: frames per subject and action of the
    labelled source domain (the ``dense0`` domain); ``batch_pairs``: unlabelled view pairs and
    ``batch_labelled`` labelled crops per step; ``steps``, ``lr``, ``warmup`` of Adam with
    :func:`mvbook.schedules.warmup_cosine`; ``losses``: the Tab. 1 rows trained;
    ``claim_losses``: the rows trained with every seed; ``zoo_profile``: size of ``dense0``;
    ``subjects``: train and test subjects.
    """

    config: Config
    train_frames: int | None
    test_frames: int | None
    labelled_frames: int
    batch_pairs: int
    batch_labelled: int
    steps: int
    lr: float
    warmup: int
    losses: tuple[str, ...]
    claim_losses: tuple[str, ...]
    zoo_profile: str = "quick"
    subjects: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"train": TRAIN_SUBJECTS, "test": TEST_SUBJECTS})


def settings(profile: str) -> Settings:
    """The chapter's profile table (``smoke``: seconds; ``quick``: minutes on a 2-core CPU, the
    encoder of ``dense0`` frozen and its maps computed once; ``full``: GPU scale)."""
    from mvbook.zoo import recipe
    from mvbook.zoo.dense import output_size

    zoo_profile = by_profile(profile, smoke="quick", quick="quick", full="full")
    rec = recipe("dense0", zoo_profile)
    config = Config(crop_size=rec.crop_size, crop_scale=rec.crop_scale,
                    output_size=output_size(rec))
    return Settings(
        config=config,
        train_frames=by_profile(profile, smoke=8, quick=600, full=None),
        test_frames=by_profile(profile, smoke=4, quick=150, full=None),
        labelled_frames=by_profile(profile, smoke=1, quick=2, full=10),
        batch_pairs=by_profile(profile, smoke=2, quick=8, full=16),
        batch_labelled=by_profile(profile, smoke=2, quick=16, full=32),
        steps=by_profile(profile, smoke=3, quick=150, full=20000),
        lr=by_profile(profile, smoke=1e-3, quick=1e-3, full=1e-4),
        warmup=by_profile(profile, smoke=0, quick=10, full=500),
        losses=LOSSES,
        claim_losses=("L+M", "L+R+M"),
        zoo_profile=zoo_profile,
    )
