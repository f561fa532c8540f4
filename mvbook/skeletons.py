"""Skeleton definitions (joint order, bones, left-right pairs, root) and conversions between them.

Four joint sets are defined:

- ``"h36m17"`` (:data:`H36M_17`): the 17 Human3.6M joints used by most 3D pose work
  (0 pelvis, 1 r_hip, 2 r_knee, 3 r_ankle, 4 l_hip, 5 l_knee, 6 l_ankle, 7 spine, 8 thorax,
  9 neck_nose, 10 head, 11 l_shoulder, 12 l_elbow, 13 l_wrist, 14 r_shoulder, 15 r_elbow,
  16 r_wrist); root 0 (pelvis).
- ``"panoptic15"`` (:data:`PANOPTIC_15`): the CMU Panoptic toolbox body order (0 neck, 1 nose,
  2 body_center (mid-hip), 3 l_shoulder, 4 l_elbow, 5 l_wrist, 6 l_hip, 7 l_knee, 8 l_ankle,
  9 r_shoulder, 10 r_elbow, 11 r_wrist, 12 r_hip, 13 r_knee, 14 r_ankle); root 2 (body_center,
  the mid-hip root VoxelPose localises).
- ``"panoptic19"`` (:data:`PANOPTIC_19`): the above plus 15 l_eye, 16 l_ear, 17 r_eye, 18 r_ear.
- ``"shelf14"`` (:data:`SHELF_14`): the Shelf/Campus annotation order (0 r_ankle, 1 r_knee,
  2 r_hip, 3 l_hip, 4 l_knee, 5 l_ankle, 6 r_wrist, 7 r_elbow, 8 r_shoulder, 9 l_shoulder,
  10 l_elbow, 11 l_wrist, 12 bottom_head (neck), 13 top_head); root 12 (the set has no pelvis
  joint; the bone tree is rooted at the neck).

Bones are ``(parent, child)`` pairs forming a tree rooted at ``root`` (children point away from
the root). ``flip_pairs`` are the ``(left, right)`` joint pairs swapped by a mirror.

Conversions are linear maps: :func:`mapping_matrix` gives a ``(J_dst, J_src)`` matrix ``M`` so that
``joints_dst = M @ joints_src`` for every coordinate, and :func:`convert_joints` applies it as one
batched matmul. A destination joint is either a copy of the same joint in the source or a
linear combination of source joints; the rules (see :func:`conversion_table`) are:

- pelvis / body_center = mean(l_hip, r_hip);
- neck (Human3.6M ``thorax``, Panoptic ``neck``) = mean(l_shoulder, r_shoulder) when absent;
- spine = mean(pelvis, neck);
- nose (Human3.6M ``neck_nose``, Panoptic ``nose``) = mean(bottom_head, top_head);
- bottom_head (Shelf/Campus) = mean(neck, nose);
- top_head (Human3.6M ``head``, Shelf ``top_head``) = 1.5 * mean(ears) - 0.5 * neck when the ears
  are present, else 1.5 * nose - 0.5 * neck (an extrapolation, weights summing to one).

Joints that cannot be derived (eyes and ears from any set other than panoptic19) come out as NaN.
Cross-dataset joint *definitions* differ (the Human3.6M thorax is not exactly Panoptic's neck;
marker-based hips differ from keypoint hips by a few centimetres): every row that is not a copy
of an identically defined joint is flagged approximate by :func:`conversion_table`, and even the
copies should be read as "the same anatomical joint, annotated differently".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from .validation import check_index, check_shape, check_tensor

__all__ = [
    "H36M_17",
    "PANOPTIC_15",
    "PANOPTIC_19",
    "SHELF_14",
    "SKELETONS",
    "Skeleton",
    "conversion_table",
    "convert_joints",
    "convert_mask",
    "flip_joints",
    "get_skeleton",
    "mapping_matrix",
]


@dataclass(frozen=True)
class Skeleton:
    """A named joint set.

    Attributes:
        name: registry name, e.g. ``"h36m17"``.
        joint_names: joint names in order (tuple of str).
        bones: ``(parent, child)`` joint-index pairs, a tree rooted at ``root``.
        flip_pairs: ``(left, right)`` joint-index pairs swapped by a left-right mirror.
        root: index of the root joint (used for root-relative metrics).
        canonical: for each joint, the name of the anatomical joint it stands for in the
            cross-dataset vocabulary used by conversions (defaults to ``joint_names``).
    """

    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    root: int
    canonical: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "bones", tuple(tuple(b) for b in self.bones))
        object.__setattr__(self, "flip_pairs", tuple(tuple(p) for p in self.flip_pairs))
        if not self.canonical:
            object.__setattr__(self, "canonical", self.joint_names)
        if len(self.canonical) != n:
            raise ValueError(f"canonical must have {n} names, got {len(self.canonical)}")
        if len(set(self.joint_names)) != n:
            raise ValueError(f"joint_names of {self.name!r} must be unique")
        for a, b in (*self.bones, *self.flip_pairs):
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(
                    f"bad joint pair ({a}, {b}) in skeleton {self.name!r} with {n} joints"
                )
        check_index(self.root, f"root of skeleton {self.name!r}", n, negative=False)

    @property
    def num_joints(self) -> int:
        """Number of joints ``J``."""
        return len(self.joint_names)

    def index(self, joint: str) -> int:
        """Index of the joint called ``joint``."""
        try:
            return self.joint_names.index(joint)
        except ValueError as err:
            raise ValueError(
                f"skeleton {self.name!r} has no joint {joint!r}; joints: {self.joint_names}"
            ) from err

    @property
    def parents(self) -> tuple[int, ...]:
        """Parent index of every joint along the bone tree (``-1`` for the root and unattached joints)."""
        parents = [-1] * self.num_joints
        for parent, child in self.bones:
            parents[child] = parent
        return tuple(parents)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """Joint permutation ``perm`` so that ``joints[..., perm, :]`` swaps left and right."""
        perm = list(range(self.num_joints))
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return tuple(perm)

    @property
    def sides(self) -> tuple[str, ...]:
        """``"left"``, ``"right"`` or ``"center"`` for each joint (for colouring drawings)."""
        sides = ["center"] * self.num_joints
        for left, right in self.flip_pairs:
            sides[left], sides[right] = "left", "right"
        return tuple(sides)


_H36M_17_NAMES = (
    "pelvis",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "spine",
    "thorax",
    "neck_nose",
    "head",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
)
# Human3.6M calls the neck "thorax", the nose "neck_nose" and the top of the head "head".
_H36M_17_CANON = _H36M_17_NAMES[:8] + ("neck", "nose", "top_head") + _H36M_17_NAMES[11:]

H36M_17 = Skeleton(
    name="h36m17",
    joint_names=_H36M_17_NAMES,
    bones=(
        (0, 1),
        (1, 2),
        (2, 3),
        (0, 4),
        (4, 5),
        (5, 6),
        (0, 7),
        (7, 8),
        (8, 9),
        (9, 10),
        (8, 11),
        (11, 12),
        (12, 13),
        (8, 14),
        (14, 15),
        (15, 16),
    ),
    flip_pairs=((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16)),
    root=0,
    canonical=_H36M_17_CANON,
)

_PANOPTIC_15_NAMES = (
    "neck",
    "nose",
    "body_center",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
)
_PANOPTIC_15_BONES = (
    (2, 0),
    (0, 1),
    (0, 3),
    (3, 4),
    (4, 5),
    (0, 9),
    (9, 10),
    (10, 11),
    (2, 6),
    (6, 7),
    (7, 8),
    (2, 12),
    (12, 13),
    (13, 14),
)
_PANOPTIC_15_FLIP = ((3, 9), (4, 10), (5, 11), (6, 12), (7, 13), (8, 14))
_PANOPTIC_15_CANON = ("neck", "nose", "pelvis") + _PANOPTIC_15_NAMES[3:]

PANOPTIC_15 = Skeleton(
    name="panoptic15",
    joint_names=_PANOPTIC_15_NAMES,
    bones=_PANOPTIC_15_BONES,
    flip_pairs=_PANOPTIC_15_FLIP,
    root=2,
    canonical=_PANOPTIC_15_CANON,
)

PANOPTIC_19 = Skeleton(
    name="panoptic19",
    joint_names=_PANOPTIC_15_NAMES + ("l_eye", "l_ear", "r_eye", "r_ear"),
    bones=_PANOPTIC_15_BONES + ((1, 15), (15, 16), (1, 17), (17, 18)),
    flip_pairs=_PANOPTIC_15_FLIP + ((15, 17), (16, 18)),
    root=2,
    canonical=_PANOPTIC_15_CANON + ("l_eye", "l_ear", "r_eye", "r_ear"),
)

SHELF_14 = Skeleton(
    name="shelf14",
    joint_names=(
        "r_ankle",
        "r_knee",
        "r_hip",
        "l_hip",
        "l_knee",
        "l_ankle",
        "r_wrist",
        "r_elbow",
        "r_shoulder",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "bottom_head",
        "top_head",
    ),
    bones=(
        (12, 13),
        (12, 8),
        (8, 7),
        (7, 6),
        (12, 9),
        (9, 10),
        (10, 11),
        (12, 2),
        (2, 1),
        (1, 0),
        (12, 3),
        (3, 4),
        (4, 5),
    ),
    flip_pairs=((3, 2), (4, 1), (5, 0), (9, 8), (10, 7), (11, 6)),
    root=12,
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (H36M_17, PANOPTIC_15, PANOPTIC_19, SHELF_14)}

# Rules for canonical joints absent from a source: alternatives tried in order, each a
# {canonical joint: weight} linear combination (weights sum to one).
_DERIVATIONS: dict[str, tuple[dict[str, float], ...]] = {
    "pelvis": ({"l_hip": 0.5, "r_hip": 0.5},),
    "neck": ({"l_shoulder": 0.5, "r_shoulder": 0.5},),
    "spine": ({"pelvis": 0.5, "neck": 0.5},),
    "nose": ({"bottom_head": 0.5, "top_head": 0.5},),
    "bottom_head": ({"neck": 0.5, "nose": 0.5},),
    "top_head": (
        {"l_ear": 0.75, "r_ear": 0.75, "neck": -0.5},
        {"nose": 1.5, "neck": -0.5},
    ),
}


def get_skeleton(name: str | Skeleton) -> Skeleton:
    """The :class:`Skeleton` called ``name`` (``"h36m17"``, ``"panoptic15"``, ``"panoptic19"``,
    ``"shelf14"``); a :class:`Skeleton` is returned unchanged."""
    if isinstance(name, Skeleton):
        return name
    if not isinstance(name, str):
        raise TypeError(f"skeleton must be a name or a Skeleton, got {type(name).__name__}")
    key = name.lower()
    if key not in SKELETONS:
        raise ValueError(f"unknown skeleton {name!r}; known: {sorted(SKELETONS)}")
    return SKELETONS[key]


def _resolve(
    canon: str, available: dict[str, int], visiting: frozenset[str]
) -> dict[int, float] | None:
    """Express canonical joint ``canon`` as {source index: weight}, or None if impossible."""
    if canon in available:
        return {available[canon]: 1.0}
    if canon in visiting:
        return None
    for rule in _DERIVATIONS.get(canon, ()):
        combo: dict[int, float] = {}
        for term, weight in rule.items():
            sub = _resolve(term, available, visiting | {canon})
            if sub is None:
                break
            for idx, w in sub.items():
                combo[idx] = combo.get(idx, 0.0) + weight * w
        else:
            return {i: w for i, w in combo.items() if w != 0.0}
    return None


@functools.lru_cache(maxsize=64)
def _mapping_rows(src: Skeleton, dst: Skeleton) -> tuple:
    """Per destination joint: (((source index, weight), ...) or None, approximate)."""
    available = {c: i for i, c in enumerate(src.canonical)}
    rows = []
    for j, canon in enumerate(dst.canonical):
        combo = _resolve(canon, available, frozenset())
        if combo is None:
            rows.append((None, True))
            continue
        exact = len(combo) == 1 and src.joint_names[next(iter(combo))] == dst.joint_names[j]
        rows.append((tuple(sorted(combo.items())), not exact))
    return tuple(rows)


def _rows(src: str | Skeleton, dst: str | Skeleton) -> tuple[Skeleton, Skeleton, tuple]:
    src_s, dst_s = get_skeleton(src), get_skeleton(dst)
    return src_s, dst_s, _mapping_rows(src_s, dst_s)


def mapping_matrix(
    src: str | Skeleton,
    dst: str | Skeleton,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``(J_dst, J_src)`` matrix ``M`` with ``joints_dst = M @ joints_src``.

    Rows of joints that cannot be derived from ``src`` are all NaN. See the module docstring for
    the derivation rules and :func:`conversion_table` for a readable listing.
    """
    src_s, dst_s, rows = _rows(src, dst)
    m = torch.zeros(dst_s.num_joints, src_s.num_joints, dtype=dtype, device=device)
    for j, (combo, _) in enumerate(rows):
        if combo is None:
            m[j] = float("nan")
        else:
            for i, w in combo:
                m[j, i] = w
    return m


def conversion_table(src: str | Skeleton, dst: str | Skeleton) -> list[tuple[str, str, bool]]:
    """Describe each destination joint: ``(dst joint, formula over source joints, approximate)``.

    ``approximate`` is False only for copies of an identically named joint; the formula is
    ``"missing"`` for joints that come out as NaN.
    """
    src_s, dst_s, rows = _rows(src, dst)
    table = []
    for j, (combo, approx) in enumerate(rows):
        if combo is None:
            formula = "missing"
        elif len(combo) == 1 and combo[0][1] == 1.0:
            formula = src_s.joint_names[combo[0][0]]
        else:
            formula = " + ".join(f"{w:g}*{src_s.joint_names[i]}" for i, w in combo)
        table.append((dst_s.joint_names[j], formula, approx))
    return table


def _check_joints(joints: object, skeleton: Skeleton, name: str = "joints") -> torch.Tensor:
    check_tensor(joints, name)
    check_shape(
        joints, name, f"(..., J, D) for skeleton {skeleton.name!r}", sizes={"J": skeleton.num_joints}
    )
    return joints


def convert_joints(joints: torch.Tensor, src: str | Skeleton, dst: str | Skeleton) -> torch.Tensor:
    """Convert joints from skeleton ``src`` to ``dst`` with one batched matmul.

    Args:
        joints: ``(..., J_src, D)`` floating point (any D: 2D pixels, 3D millimetres, ...).
        src, dst: skeleton names or :class:`Skeleton` objects.

    Returns:
        ``(..., J_dst, D)``. A destination joint is NaN when it cannot be derived from ``src`` or
        when any source joint it uses is NaN (NaN inputs do not leak into other joints).
    """
    src_s, dst_s = get_skeleton(src), get_skeleton(dst)
    joints = check_tensor(_check_joints(joints, src_s), "joints", floating=True)
    m = mapping_matrix(src_s, dst_s, dtype=joints.dtype, device=joints.device)
    missing_row = torch.isnan(m).any(dim=1)  # (J_dst,)
    m = torch.nan_to_num(m, nan=0.0)
    bad = torch.isnan(joints).any(dim=-1)  # (..., J_src)
    clean = torch.where(
        bad[..., None], torch.zeros((), dtype=joints.dtype, device=joints.device), joints
    )
    out = torch.matmul(m, clean)  # (J_dst, J_src) @ (..., J_src, D)
    used = (m != 0).to(joints.dtype)
    out_bad = (torch.matmul(bad.to(joints.dtype), used.T) > 0) | missing_row  # (..., J_dst)
    return out.masked_fill(out_bad[..., None], float("nan"))


def convert_mask(mask: torch.Tensor, src: str | Skeleton, dst: str | Skeleton) -> torch.Tensor:
    """Convert a per-joint validity mask ``(..., J_src)`` (bool) to ``(..., J_dst)``.

    A destination joint is valid iff it can be derived from ``src`` and every source joint it
    uses is valid.
    """
    src_s, dst_s = get_skeleton(src), get_skeleton(dst)
    check_tensor(mask, "mask")
    check_shape(
        mask, "mask", f"(..., J) for skeleton {src_s.name!r}", sizes={"J": src_s.num_joints}
    )
    m = mapping_matrix(src_s, dst_s, dtype=torch.float32, device=mask.device)
    missing_row = torch.isnan(m).any(dim=1)
    used = (torch.nan_to_num(m, nan=0.0) != 0).float()
    invalid = (~mask.bool()).float()
    return ~((torch.matmul(invalid, used.T) > 0) | missing_row)


def flip_joints(
    joints: torch.Tensor,
    skeleton: str | Skeleton,
    image_width: int | None = None,
    axis: int | None = None,
) -> torch.Tensor:
    """Swap left and right joints (and optionally mirror the coordinates).

    Args:
        joints: ``(..., J, D)``.
        skeleton: name or :class:`Skeleton`.
        image_width: for 2D pixel joints of a horizontally flipped image: ``u -> (W - 1) - u``
            (pixel centres, ``(0, 0)`` the centre of the top-left pixel).
        axis: for 3D joints mirrored through a plane: negate this coordinate (e.g. ``0`` for x).

    Returns:
        ``(..., J, D)``: relabelled joints (``joints[..., perm, :]``), mirrored if asked.
    """
    skel = get_skeleton(skeleton)
    joints = _check_joints(joints, skel)
    if image_width is not None and axis is not None:
        raise ValueError("give at most one of image_width (2D mirror) and axis (3D mirror)")
    perm = torch.tensor(skel.flip_permutation, device=joints.device)
    out = joints.index_select(-2, perm)
    if image_width is not None:
        if int(image_width) <= 0:
            raise ValueError(f"image_width must be a positive int, got {image_width!r}")
        out = out.clone()
        out[..., 0] = (int(image_width) - 1) - out[..., 0]
    elif axis is not None:
        axis = check_index(axis, "axis (of the coordinates)", joints.shape[-1])
        out = out.clone()
        out[..., axis] = -out[..., axis]
    return out
