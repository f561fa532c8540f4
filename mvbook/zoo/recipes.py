"""Recipes of the model zoo: everything that defines a pretrained studio model.

A :class:`Recipe` names the task, the studio data it trains on (full
:class:`mvbook.studio.StudioConfig` values, built by the studio), the held-out studio sample its
card's metrics are measured on, the network size, the crop and target settings, the
augmentation, the schedule and the seed. Its :meth:`Recipe.digest` keys the shipped weights:
a changed recipe no longer matches its card, and loading says so.

Each model comes in three sizes, the book's profiles: ``"quick"`` (the shipped weights,
trained on a CPU), ``"full"`` (the same recipe at GPU scale; weights in the cache) and
``"smoke"`` (seconds; for tests of the training command).

No recipe ever trains on a studio test subject (S9, S11) or a test split:
:func:`check_no_test_data` is run on every recipe by the tests and before every training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from mvbook.nn.backbones import BackboneConfig, resnet18_like
from mvbook.runtime import by_profile, check_profile
from mvbook.studio.scenes import TEST_SUBJECTS, StudioConfig, profile_config

__all__ = ["MODELS", "Recipe", "recipe", "check_no_test_data"]

#: The zoo's models, in the order ``mvbook zoo list`` shows them.
MODELS = ("pose2d", "dense0", "trunk")

_DESCRIPTIONS = {
    "pose2d": "2D human joint detector (Human3.6M-17 heatmaps, sub-pixel readout) on "
              "single- and multi-person studio crops; the stand-in for a COCO/MPII 2D pose net",
    "dense0": "dense surface coordinates (16 parts + UV per part, like DensePose) on person "
              "crops of a shifted studio domain (other looks, lights and cameras than the "
              "chapters' multiview set); the dense-keypoint chapter's phi_0",
    "trunk": "general image features: the encoder of a parts + UV network on person crops of "
             "training subjects under other looks and rooms, single- and multi-person; the "
             "stand-in for an ImageNet-pretrained ResNet (MCSS trunk, perceptual features)",
}


@dataclass(frozen=True)
class Augment:
    """Geometric and colour augmentation of training crops.

    ``rotation`` (degrees, uniform in +-), ``scale`` (log-uniform range), ``shift`` (fraction of
    the crop side, uniform in +- per axis) as in :func:`mvbook.crops.random_warps`;
    ``colour``: per-channel gains in ``[1 - colour, 1 + colour]``, a random channel order with
    probability ``permute`` and Gaussian pixel noise of ``noise`` (0..255 units).
    """

    rotation: float = 30.0
    scale: tuple[float, float] = (0.75, 1.3)
    shift: float = 0.08
    colour: float = 0.3
    permute: float = 0.5
    noise: float = 3.0


@dataclass(frozen=True)
class Recipe:
    """A complete description of one zoo model of one size.

    Attributes:
        name: the model (:data:`MODELS`); profile: the size (``smoke``, ``quick``, ``full``).
        train_data: studio configurations whose *train* splits are the training data.
        held_out: the studio configuration whose train split is the held-out sample of the
            card (train subjects under another seed: other looks, rooms and sequences).
        backbone: the network size (:class:`mvbook.nn.BackboneConfig`).
        crop_size / crop_scale: square crops of ``crop_scale`` x the longer side of each person
            box, resampled to ``crop_size`` px (:mod:`mvbook.crops`).
        heatmap_sigma: std of the Gaussian targets (heatmap px).
        min_visible: a person view is a training crop when at least this many joints are
            visible in it.
        augment: :class:`Augment`; steps, batch, lr, weight_decay, warmup: the schedule (AdamW,
            linear warm-up then cosine decay to 1% of ``lr``); seed: of everything random.
    """

    name: str
    profile: str
    train_data: tuple[StudioConfig, ...]
    held_out: StudioConfig
    backbone: BackboneConfig
    crop_size: int = 128
    crop_scale: float = 1.2
    heatmap_sigma: float = 1.5
    min_visible: int = 6
    augment: Augment = field(default_factory=Augment)
    steps: int = 8000
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    seed: int = 0

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.name]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_data"] = [c.to_dict() for c in self.train_data]
        d["held_out"] = self.held_out.to_dict()
        return json.loads(json.dumps(d))  # tuples -> lists

    def digest(self) -> str:
        """A hash of the whole recipe (what the card of trained weights records)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def data_digest(self) -> str:
        """A hash of the recipe's studio data configurations only."""
        text = json.dumps([c.to_dict() for c in self.train_data], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _backbone(profile: str) -> BackboneConfig:
    """The zoo's network size per profile (every model has the same trunk)."""
    return by_profile(
        profile,
        smoke=BackboneConfig(width=8, blocks=(1, 1, 1), stem_stride=4, deconv_layers=2,
                             deconv_channels=8),
        quick=BackboneConfig(width=24, blocks=(2, 2, 2, 2), stem_stride=4, deconv_layers=3,
                             deconv_channels=48),
        full=resnet18_like(),
    )


def _single(profile: str, seed: int, sequences: int, frames: int, **kw) -> StudioConfig:
    """A single-person studio configuration with training subjects only (no test split)."""
    return profile_config(profile, "single", seed, sequences=(sequences, 0), frames=(frames, 1),
                          test_subjects=(), store=("masks",), **kw)


def _multi(profile: str, seed: int, scenes: int, frames: int) -> StudioConfig:
    """A multi-person studio configuration, train split only (its people are train identities)."""
    return profile_config(profile, "multi", seed, sequences=(scenes, 0), frames=(frames, 1),
                          store=("masks",))


def recipe(name: str, profile: str = "quick") -> Recipe:
    """The recipe of zoo model ``name`` (:data:`MODELS`) at size ``profile``."""
    if name not in MODELS:
        raise ValueError(f"name must be one of the zoo's models {MODELS}, got {name!r}")
    check_profile(profile)
    if name == "dense0":
        return _dense0(profile)
    if name == "trunk":
        return _trunk(profile)
    # pose2d
    # Seeds: 0 is the chapters' own studio seed (their training subjects' looks and room);
    # 1 adds other looks and another room; the held-out sample uses seed 2.
    train_data = by_profile(
        profile,
        smoke=(_single("smoke", 0, 1, 2), _multi("smoke", 0, 2, 2)),
        quick=(_single("quick", 0, 3, 20), _single("quick", 1, 2, 20),
               _multi("quick", 0, 60, 10)),
        full=(_single("full", 0, 4, 40), _single("full", 1, 4, 40), _single("full", 3, 4, 40),
              _multi("full", 0, 150, 30)),
    )
    held_out = by_profile(profile, smoke=_single("smoke", 2, 1, 1),
                          quick=_single("quick", 2, 1, 3), full=_single("full", 2, 1, 10))
    backbone = _backbone(profile)
    return Recipe(
        name=name, profile=profile, train_data=train_data, held_out=held_out, backbone=backbone,
        crop_size=by_profile(profile, smoke=32, quick=128, full=256),
        heatmap_sigma=by_profile(profile, smoke=1.0, quick=1.5, full=2.0),
        steps=by_profile(profile, smoke=6, quick=8000, full=60000),
        batch=by_profile(profile, smoke=4, quick=32, full=64),
        warmup=by_profile(profile, smoke=1, quick=200, full=1000),
    )


#: The studio seeds of the dense0 domain (training, held-out): not the chapters' seed 0.
DENSE0_SEEDS = (5, 6)


def _dense_domain(profile: str, seed: int, sequences: int, frames: int) -> StudioConfig:
    """The shifted domain of ``dense0``: training subjects under another seed (other looks and
    rooms), the Panoptic-like rig (other cameras), sensor noise; IUV and masks stored."""
    return profile_config(profile, "single", seed, rig="panoptic", sequences=(sequences, 0),
                          frames=(frames, 1), test_subjects=(), noise=2.0,
                          store=("masks", "iuv"))


def _dense0(profile: str) -> Recipe:
    train_seed, held_seed = DENSE0_SEEDS
    return Recipe(
        name="dense0", profile=profile,
        train_data=by_profile(profile, smoke=(_dense_domain("smoke", train_seed, 1, 2),),
                              quick=(_dense_domain("quick", train_seed, 2, 20),),
                              full=(_dense_domain("full", train_seed, 4, 40),)),
        held_out=by_profile(profile, smoke=_dense_domain("smoke", held_seed, 1, 1),
                            quick=_dense_domain("quick", held_seed, 1, 3),
                            full=_dense_domain("full", held_seed, 1, 10)),
        backbone=_backbone(profile),
        crop_size=by_profile(profile, smoke=32, quick=128, full=256),
        steps=by_profile(profile, smoke=6, quick=5000, full=40000),
        batch=by_profile(profile, smoke=4, quick=32, full=64),
        warmup=by_profile(profile, smoke=1, quick=200, full=1000),
    )


#: The studio seeds of the trunk's training data (single-person; the multi-person scenes use
#: seed 0, whose people are training identities) and of its held-out sample.
TRUNK_SEEDS = ((1, 3), 2)


def _trunk_single(profile: str, seed: int, sequences: int, frames: int) -> StudioConfig:
    return profile_config(profile, "single", seed, sequences=(sequences, 0), frames=(frames, 1),
                          test_subjects=(), store=("masks", "iuv"))


def _trunk(profile: str) -> Recipe:
    """Parts + UV supervision (the dense task) on the chapters' camera rig but other looks and
    rooms of the training subjects, plus multi-person scenes: what the network learns are
    generic body-aware image features, read out by :meth:`SimpleBaseline.stage_features`."""
    (s1, s2), held_seed = TRUNK_SEEDS
    multi = profile_config(profile, "multi", 0, sequences=(by_profile(
        profile, smoke=1, quick=30, full=150), 0), frames=(by_profile(
            profile, smoke=2, quick=10, full=30), 1), store=("masks", "iuv"))
    return Recipe(
        name="trunk", profile=profile,
        train_data=by_profile(
            profile,
            smoke=(_trunk_single("smoke", s1, 1, 2), multi),
            quick=(_trunk_single("quick", s1, 2, 20), _trunk_single("quick", s2, 2, 20), multi),
            full=(_trunk_single("full", s1, 4, 40), _trunk_single("full", s2, 4, 40), multi)),
        held_out=by_profile(profile, smoke=_trunk_single("smoke", held_seed, 1, 1),
                            quick=_trunk_single("quick", held_seed, 1, 3),
                            full=_trunk_single("full", held_seed, 1, 10)),
        backbone=_backbone(profile),
        crop_size=by_profile(profile, smoke=32, quick=128, full=256),
        steps=by_profile(profile, smoke=6, quick=2000, full=40000),
        batch=by_profile(profile, smoke=4, quick=32, full=64),
        warmup=by_profile(profile, smoke=1, quick=100, full=1000),
        seed=1,
    )


def check_no_test_data(rec: Recipe) -> None:
    """Raise ``ValueError`` if the recipe could train or be measured on test data.

    Single-person configurations must list no test subject (S9, S11) among their training
    subjects and must have an empty test split; multi-person ones must have no test scenes
    (their train identities are disjoint from the test ones by construction).
    """
    for where, cfg in [*((f"train_data[{i}]", c) for i, c in enumerate(rec.train_data)),
                       ("held_out", rec.held_out)]:
        if cfg.scene == "single":
            bad = sorted(set(cfg.train_subjects) & set(TEST_SUBJECTS))
            if bad or cfg.test_subjects or cfg.sequences[1]:
                raise ValueError(f"recipe {rec.name}/{rec.profile} {where} uses test data "
                                 f"(test subjects {bad or list(cfg.test_subjects)}, "
                                 f"{cfg.sequences[1]} test sequences)")
        elif cfg.sequences[1]:
            raise ValueError(f"recipe {rec.name}/{rec.profile} {where} has "
                             f"{cfg.sequences[1]} test scenes")
