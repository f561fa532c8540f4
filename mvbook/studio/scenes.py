"""Scenes of the studio: subjects, sequences and splits (single-person and multi-person).

Single-person scenes follow the Human3.6M protocol: subjects S1, S5, S6, S7, S8 train and S9, S11
test; every subject performs every action (a mocap clip) in one or more sequences, each cut from
the clip at a random start, with a random heading, position in the capture volume and optional
mirroring, filmed by the Human3.6M-like 4-camera rig. Multi-person scenes put 1 to 5 people
(random identities) in the Panoptic-like dome.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace

import torch

from mvbook.runtime import by_profile, check_profile
from mvbook.studio import motion
from mvbook.studio.appearance import Lighting, RoomStyle, SubjectLook
from mvbook.studio.body import BodyModel, BodyShape, Primitives, build_body, pose_body

TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS: tuple[str, ...] = ("S9", "S11")
SCENES = ("single", "multi")
STORABLE = ("masks", "depth", "iuv")


@dataclass(frozen=True)
class StudioConfig:
    """Everything that defines a studio dataset (its hash keys the cache).

    scene: ``"single"`` or ``"multi"``; rig: see :data:`mvbook.studio.rigs.RIGS`;
    image_size: (width, height) px; fps: frame rate of the sequences (all clips are resampled
    to it); frames: frames per sequence (train, test); sequences: sequences per subject and
    action (train, test) for single scenes, number of scenes (train, test) for multi scenes;
    actions: clip names; supersample: rays per pixel side; noise: sensor noise sigma (0..255);
    light_variation: 0 (fixed light) .. 1; mirror: probability of mirroring a sequence;
    distortion: lens distortion on the cameras; store: optional arrays to store
    (``masks``, ``depth``, ``iuv``); persons: (min, max) people per multi scene.
    """

    scene: str = "single"
    rig: str = "h36m"
    image_size: tuple[int, int] = (128, 128)
    fps: float = 10.0
    frames: tuple[int, int] = (20, 10)
    sequences: tuple[int, int] = (1, 1)
    actions: tuple[str, ...] = motion.MAIN_CLIPS
    train_subjects: tuple[str, ...] = TRAIN_SUBJECTS
    test_subjects: tuple[str, ...] = TEST_SUBJECTS
    supersample: int = 1
    noise: float = 0.0
    light_variation: float = 1.0
    mirror: float = 0.5
    distortion: bool = False
    store: tuple[str, ...] = ("masks", "iuv")
    persons: tuple[int, int] = (1, 5)
    seed: int = 0
    version: int = 5  # bump when rendering changes (invalidates caches)

    def __post_init__(self) -> None:
        from mvbook.studio.rigs import RIGS

        if self.scene not in SCENES:
            raise ValueError(f"scene must be one of {SCENES}, got {self.scene!r}")
        if self.rig not in RIGS:
            raise ValueError(f"rig must be one of {RIGS}, got {self.rig!r}")
        size = self.image_size
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, int) and 8 <= v <= 4096 for v in size)):
            raise ValueError(f"image_size must be (width, height) ints in [8, 4096], got {size!r}")
        if not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 120):
            raise ValueError(f"fps must be a number in (0, 120], got {self.fps!r}")
        for name in ("frames", "sequences"):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or len(v) != 2
                    or not all(isinstance(x, int) and x >= 0 for x in v) or v[0] + v[1] == 0):
                raise ValueError(f"{name} must be (train, test) non-negative ints, got {v!r}")
        if min(self.frames) < 1:
            raise ValueError(f"frames must be >= 1 per sequence, got {self.frames!r}")
        bad = [a for a in self.actions if a not in motion.CLIPS]
        if not self.actions or bad:
            raise ValueError(f"actions must be clip names from {sorted(motion.CLIPS)}, bad: {bad}")
        if not isinstance(self.supersample, int) or not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample must be an int in 1..8, got {self.supersample!r}")
        if not (isinstance(self.noise, (int, float)) and 0 <= self.noise <= 64):
            raise ValueError(f"noise must be a sensor noise sigma in [0, 64], got {self.noise!r}")
        if not (isinstance(self.light_variation, (int, float)) and 0 <= self.light_variation <= 1):
            raise ValueError(f"light_variation must be in [0, 1], got {self.light_variation!r}")
        if not (isinstance(self.mirror, (int, float)) and 0 <= self.mirror <= 1):
            raise ValueError(f"mirror must be a probability in [0, 1], got {self.mirror!r}")
        bad = [k for k in self.store if k not in STORABLE]
        if bad:
            raise ValueError(f"store must name arrays among {STORABLE}, got {bad}")
        lo, hi = self.persons
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 8):
            raise ValueError(f"persons must be (min, max) with 1 <= min <= max <= 8, got {self.persons!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.scene == "single" and not (self.train_subjects or self.test_subjects):
            raise ValueError("single scenes need train_subjects or test_subjects")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def digest(self) -> str:
        """A short hash of the configuration (the cache key)."""
        import json

        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def num_persons(self) -> int:
        return 1 if self.scene == "single" else self.persons[1]


def profile_config(profile: str = "quick", scene: str = "single", seed: int = 0,
                   **overrides) -> StudioConfig:
    """The studio configuration of a profile (``smoke``, ``quick``, ``full``) and scene.

    smoke: 48 px, 3 actions, 2 frames per sequence (both splits), builds in seconds.
    quick (single): 128x128, 4 views, 15 actions x 5 train subjects x 20 frames = 1500 train and
    15 x 2 x 10 = 300 test frames at 10 fps. quick (multi): 192x108, 5 views, 40 + 12 scenes x
    10 frames. full: 256 px single (8 sequences of 40 frames per subject and action... see code).
    Keyword ``overrides`` replace any :class:`StudioConfig` field.
    """
    check_profile(profile)
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if scene == "single":
        base = dict(
            scene="single", rig="h36m",
            image_size=by_profile(profile, smoke=(48, 48), quick=(128, 128), full=(256, 256)),
            fps=by_profile(profile, smoke=5.0, quick=10.0, full=10.0),
            frames=by_profile(profile, smoke=(2, 2), quick=(20, 10), full=(40, 40)),
            sequences=by_profile(profile, smoke=(1, 1), quick=(1, 1), full=(3, 1)),
            actions=by_profile(profile, smoke=("walk", "kick", "dance_a"), quick=motion.MAIN_CLIPS,
                               full=motion.MAIN_CLIPS),
            supersample=by_profile(profile, smoke=1, quick=1, full=2),
            store=by_profile(profile, smoke=("masks", "depth", "iuv"), quick=("masks", "iuv"),
                             full=("masks",)),
        )
    else:
        base = dict(
            scene="multi", rig="panoptic",
            image_size=by_profile(profile, smoke=(64, 36), quick=(192, 108), full=(384, 216)),
            fps=by_profile(profile, smoke=5.0, quick=5.0, full=10.0),
            frames=by_profile(profile, smoke=(2, 2), quick=(10, 10), full=(30, 30)),
            sequences=by_profile(profile, smoke=(3, 2), quick=(40, 12), full=(150, 30)),
            actions=motion.MAIN_CLIPS,
            supersample=by_profile(profile, smoke=1, quick=1, full=2),
            store=by_profile(profile, smoke=("masks", "depth", "iuv"), quick=("masks", "iuv"),
                             full=("masks",)),
        )
    base.update(overrides)
    base["seed"] = seed if "seed" not in overrides else overrides["seed"]
    for key in ("image_size", "frames", "sequences", "actions", "train_subjects",
                "test_subjects", "store", "persons"):
        if key in base and isinstance(base[key], list):
            base[key] = tuple(base[key])
    unknown = set(base) - set(StudioConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown studio configuration keys {sorted(unknown)}")
    return StudioConfig(**base)


# --------------------------------------------------------------------------------- identities
def seeded_generator(*keys: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``keys`` (e.g. ``("room", seed, "h36m")``).

    The same keys always give the same stream, different keys independent ones: this is how the
    studio draws every subject, sequence, scene and room from one configuration seed.
    """
    text = "/".join(str(k) for k in keys)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 62) - 1)
    return torch.Generator().manual_seed(seed)


def room_style(seed: int = 0, rig: str = "h36m", outdoor: bool = False) -> RoomStyle:
    """The room look (walls, floor, facades) the studio gives rig ``rig`` for ``seed``.

    The same style :func:`mvbook.studio.build_studio` renders that rig's backgrounds with; pass
    ``outdoor=rig_spec.room.outdoor`` (``True`` for the Campus-like rig).
    """
    return RoomStyle.sample(seeded_generator("room", seed, rig), outdoor)


@dataclass(frozen=True)
class Subject:
    """A studio subject: name, body proportions and look."""

    name: str
    shape: BodyShape
    look: SubjectLook

    @staticmethod
    def make(name: str, seed: int = 0) -> Subject:
        """The subject ``name`` (deterministic for a name and seed)."""
        g = seeded_generator("subject", name, seed)
        return Subject(name, BodyShape.sample(g), SubjectLook.sample(g))


@dataclass(frozen=True)
class PersonTrack:
    """One person in a sequence: identity and motion parameters."""

    subject: Subject
    motion: motion.MotionParams


@dataclass(frozen=True)
class SequencePlan:
    """A sequence to render: its people, lighting, split and names."""

    name: str
    split: str
    action: str
    subject: str
    people: tuple[PersonTrack, ...]
    lighting: Lighting
    index: int
    num_frames: int
    extra: dict = field(default_factory=dict)


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))


def _place(clip: str, num_frames: int, fps: float, root_scale: float, radius: float,
           g: torch.Generator, mirror_p: float, others: list[torch.Tensor] | None = None,
           min_gap: float = 750.0, tries: int = 40, bend: float = 0.6,
           rho: tuple[float, float] = (0.35, 0.6)) -> tuple[motion.MotionParams, torch.Tensor] | None:
    """Random motion parameters that keep the root path inside ``radius`` (and away from others)."""
    c = motion.load_clip(clip)

    def centred_path(params: motion.MotionParams) -> tuple[torch.Tensor, float]:
        pos, _ = motion.sequence_pose(params)  # centred on params.position = (0, 0)
        path = torch.stack([pos[:, 0], -pos[:, 2]], -1)  # world (x, y)
        span = path.amax(0) - path.amin(0)
        return path, float(span.norm() / 2)

    for _ in range(max(1, tries // 8)):
        start = _uniform(g, 0.0, c.duration)
        heading = _uniform(g, -math.pi, math.pi)
        mirror = _uniform(g) < mirror_p
        params = motion.MotionParams(clip, num_frames, fps, start, heading, (0.0, 0.0), mirror,
                                     0.0, root_scale)
        path, extent = centred_path(params)
        if extent > bend * radius:
            # bend the path into an arc so that the person stays in the volume
            length = float(torch.diff(path, dim=0).norm(dim=-1).sum())
            dur = max(num_frames / fps, 1e-3)
            arc = _uniform(g, *rho) * radius
            turn = (length / dur) / arc * (1 if _uniform(g) < 0.5 else -1)
            params = replace(params, turn_rate=turn)
            path, extent = centred_path(params)
        room = max(0.0, radius - extent)
        for _ in range(8):  # positions for this motion
            r = room * math.sqrt(_uniform(g))
            a = _uniform(g, -math.pi, math.pi)
            xy = (r * math.cos(a), r * math.sin(a))
            placed = path + torch.tensor(xy, dtype=path.dtype)
            if others and min(float((placed - o).norm(dim=-1).min()) for o in others) < min_gap:
                continue
            return replace(params, position=xy), placed
    return None


def plan_sequences(config: StudioConfig) -> list[SequencePlan]:
    """All sequences of a configuration, in dataset order (train first, then test)."""
    from mvbook.studio.rigs import make_rig

    radius = make_rig(config.rig, config.image_size).capture_radius
    plans: list[SequencePlan] = []
    if config.scene == "single":
        for split, subjects, n_seq, n_frames in (
            ("train", config.train_subjects, config.sequences[0], config.frames[0]),
            ("test", config.test_subjects, config.sequences[1], config.frames[1]),
        ):
            for subj_name in subjects:
                subject = Subject.make(subj_name, config.seed)
                scale = subject.shape.height * (subject.shape.thigh + subject.shape.shin) / 2
                for action in config.actions:
                    for rep in range(n_seq):
                        g = seeded_generator("seq", config.seed, subj_name, action, rep)
                        placed = _place(action, n_frames, config.fps, scale, radius, g,
                                        config.mirror)
                        assert placed is not None
                        light = Lighting.sample(g, config.light_variation)
                        name = f"{subj_name}_{action}_{rep}"
                        plans.append(SequencePlan(
                            name, split, action, subj_name,
                            (PersonTrack(subject, placed[0]),), light, len(plans), n_frames))
        return plans
    for split, n_scenes, n_frames in (("train", config.sequences[0], config.frames[0]),
                                      ("test", config.sequences[1], config.frames[1])):
        for i in range(n_scenes):
            g = seeded_generator("scene", config.seed, split, i)
            lo, hi = config.persons
            n = lo + int(torch.randint(0, hi - lo + 1, (), generator=g))
            people: list[PersonTrack] = []
            paths: list[torch.Tensor] = []
            for p in range(n):
                subject = Subject.make(f"{split}{i:04d}p{p}", config.seed)
                scale = subject.shape.height * (subject.shape.thigh + subject.shape.shin) / 2
                clip = config.actions[int(torch.randint(0, len(config.actions), (), generator=g))]
                placed = _place(clip, n_frames, config.fps, scale, radius, g, config.mirror,
                                paths, bend=0.3, rho=(0.2, 0.35))
                if placed is None:
                    continue  # no room left for this person
                people.append(PersonTrack(subject, placed[0]))
                paths.append(placed[1])
            light = Lighting.sample(g, config.light_variation)
            actions = "+".join(pt.motion.clip for pt in people)
            plans.append(SequencePlan(f"{split}_scene{i:04d}", split, actions[:64], "",
                                      tuple(people), light, len(plans), n_frames))
    return plans


# -------------------------------------------------------------------------------- posing
def _ground_offset(body: BodyModel, clip: str, root_scale: float) -> float:
    """Height (mm) to add so that the clip's lowest body point over all its frames is z = 0."""
    c = motion.load_clip(clip)
    pos = c.root_pos * root_scale
    rot, p = motion.forward_kinematics(pos, c.quats, body.offsets)
    rot, p = motion.to_world(rot, p)
    prims, _ = pose_body(body, rot, p)
    return -float(prims.lowest_z().min())


def pose_sequence(plan: SequencePlan) -> tuple[Primitives, torch.Tensor, torch.Tensor]:
    """Primitives (F, K_total), joints (F, P, 17, 3) mm and looks (P, LOOK_DIM) of a sequence."""
    prims_list: list[Primitives] = []
    joints_list: list[torch.Tensor] = []
    looks = []
    for p, track in enumerate(plan.people):
        body = build_body(track.subject.shape)
        pos, quats = motion.sequence_pose(track.motion)
        rot, lp = motion.forward_kinematics(pos, quats, body.offsets)
        rot, lp = motion.to_world(rot, lp)
        prims, joints = pose_body(body, rot, lp, person=p)
        dz = _ground_offset(body, track.motion.clip, track.motion.root_scale)
        prims.center = prims.center + torch.tensor([0.0, 0.0, dz], dtype=prims.center.dtype)
        joints = joints + torch.tensor([0.0, 0.0, dz], dtype=joints.dtype)
        prims_list.append(prims)
        joints_list.append(joints)
        looks.append(track.subject.look.vector())
    return Primitives.cat(prims_list), torch.stack(joints_list, 1), torch.stack(looks)
