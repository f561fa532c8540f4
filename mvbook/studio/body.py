"""The studio's body: analytic primitives on the humanoid's bones with a dense surface chart.

Every body part is one *scaled capsule*: in its local frame the unit-radius capsule
``{q : dist(q, segment z in [-h, h]) = 1}``; the world point is ``c + R diag(s) q``. ``h = 0`` gives
an ellipsoid, equal scales a round capsule (limbs), unequal scales a rounded box (torso).

Surface chart (DensePose-like): part index ``I`` in 1..NUM_PARTS (0 = background) and
``U = atan2(q_y, q_x) / 2 pi`` (mod 1, around the axis), ``V = (q_z + h + 1) / (2 h + 2)`` (along the
axis, 0 at the bottom cap's pole, 1 at the top's). The chart is a bijection on each part's surface
(up to the seam U = 0 = 1 and the poles), so :func:`surface_point` inverts it and
:func:`rest_surface_points` gives the rest-pose position of any ``(I, U, V)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from mvbook.studio import motion

PART_NAMES: tuple[str, ...] = (
    "background", "torso", "pelvis", "head", "neck",
    "r_upper_arm", "r_forearm", "r_hand", "l_upper_arm", "l_forearm", "l_hand",
    "r_thigh", "r_shin", "r_foot", "l_thigh", "l_shin", "l_foot",
)
NUM_PARTS = len(PART_NAMES) - 1  # 16 body parts; I = 0 is background

H36M_JOINTS: tuple[str, ...] = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
    "neck_nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)

#: Parts adjacent to each Human3.6M-17 joint (a visible joint's pixel shows one of these parts).
JOINT_PARTS: dict[str, tuple[str, ...]] = {
    "pelvis": ("pelvis", "torso", "r_thigh", "l_thigh"),
    "r_hip": ("pelvis", "r_thigh"),
    "r_knee": ("r_thigh", "r_shin"),
    "r_ankle": ("r_shin", "r_foot"),
    "l_hip": ("pelvis", "l_thigh"),
    "l_knee": ("l_thigh", "l_shin"),
    "l_ankle": ("l_shin", "l_foot"),
    "spine": ("torso", "pelvis"),
    "thorax": ("torso", "neck", "l_upper_arm", "r_upper_arm"),
    "neck_nose": ("head", "neck"),
    "head": ("head",),
    "l_shoulder": ("torso", "l_upper_arm"),
    "l_elbow": ("l_upper_arm", "l_forearm"),
    "l_wrist": ("l_forearm", "l_hand"),
    "r_shoulder": ("torso", "r_upper_arm"),
    "r_elbow": ("r_upper_arm", "r_forearm"),
    "r_wrist": ("r_forearm", "r_hand"),
}


def joint_part_adjacency(device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (17, NUM_PARTS + 1): ``A[j, I]`` is True when part I touches H36M joint j."""
    adj = torch.zeros(len(H36M_JOINTS), NUM_PARTS + 1, dtype=torch.bool, device=device)
    for j, name in enumerate(H36M_JOINTS):
        for part in JOINT_PARTS[name]:
            adj[j, PART_NAMES.index(part)] = True
    return adj


# Local axes of primitives in link frames (columns x, y, z); link frames: x fwd, y up, z right.
_AXES_DOWN = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))  # limbs: z along -y of link
_AXES_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))  # trunk and head: z along +y
_AXES_FOOT = ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))  # feet: z forward


@dataclass(frozen=True)
class BodyShape:
    """Per-subject proportions (dimensionless factors around 1).

    height: global scale; torso, thigh, shin, upper_arm, forearm, head: segment length factors;
    shoulder_width, hip_width: lateral offsets; girth: limb and trunk radii; belly: trunk depth.
    """

    height: float = 1.0
    torso: float = 1.0
    thigh: float = 1.0
    shin: float = 1.0
    upper_arm: float = 1.0
    forearm: float = 1.0
    shoulder_width: float = 1.0
    hip_width: float = 1.0
    girth: float = 1.0
    belly: float = 1.0
    head: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and 0.5 <= float(value) <= 1.6):
                raise ValueError(f"BodyShape.{name} must be a number in [0.5, 1.6], got {value!r}")

    @staticmethod
    def sample(generator: torch.Generator) -> BodyShape:
        """A random plausible subject (heights about 1.55 to 1.90 m)."""
        def u(lo: float, hi: float) -> float:
            return float(lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64))

        return BodyShape(
            height=u(0.96, 1.13), torso=u(0.94, 1.06), thigh=u(0.94, 1.06), shin=u(0.94, 1.06),
            upper_arm=u(0.94, 1.06), forearm=u(0.94, 1.06), shoulder_width=u(0.92, 1.08),
            hip_width=u(0.92, 1.1), girth=u(0.85, 1.2), belly=u(0.9, 1.2), head=u(0.95, 1.05),
        )


@dataclass(frozen=True)
class BodyModel:
    """A subject's skeleton offsets, primitives (in link frames) and joint locators.

    offsets (L, 3) mm: joint origins in parent link frames (mocap axes).
    prim_link (K,), prim_center (K, 3), prim_axes (K, 3, 3), prim_scale (K, 3), prim_h (K,),
    prim_part (K,) part index I (1-based); joint_link (17,), joint_offset (17, 3): H36M joints.
    """

    shape: BodyShape
    offsets: torch.Tensor
    prim_link: torch.Tensor
    prim_center: torch.Tensor
    prim_axes: torch.Tensor
    prim_scale: torch.Tensor
    prim_h: torch.Tensor
    prim_part: torch.Tensor
    joint_link: torch.Tensor
    joint_offset: torch.Tensor

    @property
    def num_prims(self) -> int:
        return int(self.prim_part.shape[0])


def build_body(shape: BodyShape | None = None) -> BodyModel:
    """Build the body of a subject with proportions ``shape`` (default: the mocap humanoid)."""
    s = shape or BodyShape()
    g = s.height
    scales = {
        "chest": s.torso * g, "neck": s.torso * g,
        "right_knee": s.thigh * g, "left_knee": s.thigh * g,
        "right_ankle": s.shin * g, "left_ankle": s.shin * g,
        "right_elbow": s.upper_arm * g, "left_elbow": s.upper_arm * g,
        "right_wrist": s.forearm * g, "left_wrist": s.forearm * g,
    }
    off = motion.link_offsets(scales)
    for side in ("right", "left"):
        i = motion.LINK_INDEX[f"{side}_hip"]
        off[i] = off[i] * s.hip_width * g
        i = motion.LINK_INDEX[f"{side}_shoulder"]
        off[i, :2] *= s.torso * g
        off[i, 2] *= s.shoulder_width * g

    girth = s.girth * g
    hd = s.head * g
    prims: list[tuple[str, str, tuple, tuple, tuple, float]] = []

    def limb(part: str, link: str, length: float, radius: float, extra: float = 0.0) -> None:
        # capsule from the link origin down to the child joint (plus ``extra`` mm)
        half = (length + extra) / 2
        prims.append((part, link, (0.0, -half, 0.0), _AXES_DOWN, (radius,) * 3, half / radius))

    def norm(name: str) -> float:
        return float(off[motion.LINK_INDEX[name]].norm())

    # trunk, head, neck (link frames of root, chest, neck)
    ty = 130.0 * s.torso * g
    prims.append(("torso", "chest", (0.0, ty, 0.0), _AXES_UP,
                  (105.0 * girth * s.belly, 158.0 * girth * s.shoulder_width, 115.0 * g),
                  55.0 * s.torso / 115.0))
    prims.append(("pelvis", "root", (0.0, 45.0 * g, 0.0), _AXES_UP,
                  (100.0 * girth * s.belly, 158.0 * girth * s.hip_width, 105.0 * g), 0.4))
    prims.append(("neck", "neck", (0.0, 45.0 * hd, 0.0), _AXES_UP, (50.0 * girth,) * 3, 0.8))
    prims.append(("head", "neck", (10.0 * hd, 170.0 * hd, 0.0), _AXES_UP,
                  (100.0 * hd, 80.0 * hd, 115.0 * hd), 0.0))
    for side, sd in (("right", "r"), ("left", "l")):
        limb(f"{sd}_upper_arm", f"{side}_shoulder", norm(f"{side}_elbow"), 46.0 * girth)
        limb(f"{sd}_forearm", f"{side}_elbow", norm(f"{side}_wrist"), 39.0 * girth)
        wrist = norm(f"{side}_wrist")
        prims.append((f"{sd}_hand", f"{side}_elbow", (0.0, -(wrist + 60.0 * g), 0.0), _AXES_DOWN,
                      (45.0 * g, 22.0 * g, 80.0 * g), 0.0))
        limb(f"{sd}_thigh", f"{side}_hip", norm(f"{side}_knee"), 62.0 * girth)
        limb(f"{sd}_shin", f"{side}_knee", norm(f"{side}_ankle"), 48.0 * girth)
        prims.append((f"{sd}_foot", f"{side}_ankle", (45.0 * g, -35.0 * g, 0.0), _AXES_FOOT,
                      (38.0 * g, 48.0 * g, 125.0 * g), 0.0))
    # order primitives by part index
    prims.sort(key=lambda p: PART_NAMES.index(p[0]))
    link = torch.tensor([motion.LINK_INDEX[p[1]] for p in prims])
    center = torch.tensor([p[2] for p in prims], dtype=torch.float64)
    axes = torch.tensor([p[3] for p in prims], dtype=torch.float64).transpose(-1, -2)  # columns
    scale = torch.tensor([p[4] for p in prims], dtype=torch.float64)
    h = torch.tensor([p[5] for p in prims], dtype=torch.float64)
    part = torch.tensor([PART_NAMES.index(p[0]) for p in prims])

    sh_r = off[motion.LINK_INDEX["right_shoulder"]]
    thorax = torch.stack([sh_r[0], sh_r[1], torch.zeros((), dtype=sh_r.dtype)])
    locators = {
        "pelvis": ("root", (0.0, 0.0, 0.0)),
        "r_hip": ("right_hip", (0.0, 0.0, 0.0)),
        "r_knee": ("right_knee", (0.0, 0.0, 0.0)),
        "r_ankle": ("right_ankle", (0.0, 0.0, 0.0)),
        "l_hip": ("left_hip", (0.0, 0.0, 0.0)),
        "l_knee": ("left_knee", (0.0, 0.0, 0.0)),
        "l_ankle": ("left_ankle", (0.0, 0.0, 0.0)),
        "spine": ("chest", (0.0, 0.0, 0.0)),
        "thorax": ("chest", tuple(thorax.tolist())),
        "neck_nose": ("neck", (80.0 * hd, 150.0 * hd, 0.0)),
        "head": ("neck", (20.0 * hd, 250.0 * hd, 0.0)),
        "l_shoulder": ("left_shoulder", (0.0, 0.0, 0.0)),
        "l_elbow": ("left_elbow", (0.0, 0.0, 0.0)),
        "l_wrist": ("left_wrist", (0.0, 0.0, 0.0)),
        "r_shoulder": ("right_shoulder", (0.0, 0.0, 0.0)),
        "r_elbow": ("right_elbow", (0.0, 0.0, 0.0)),
        "r_wrist": ("right_wrist", (0.0, 0.0, 0.0)),
    }
    jl = torch.tensor([motion.LINK_INDEX[locators[n][0]] for n in H36M_JOINTS])
    jo = torch.tensor([locators[n][1] for n in H36M_JOINTS], dtype=torch.float64)
    return BodyModel(s, off, link, center, axes, scale, h, part, jl, jo)


@dataclass
class Primitives:
    """Posed primitives, batched over frames: world frame, mm.

    center (F, K, 3); rot (F, K, 3, 3) local axes as columns; scale (F, K, 3); h (F, K);
    part (K,) part index I; person (K,) person index (0-based).
    """

    center: torch.Tensor
    rot: torch.Tensor
    scale: torch.Tensor
    h: torch.Tensor
    part: torch.Tensor
    person: torch.Tensor

    @staticmethod
    def cat(items: list[Primitives]) -> Primitives:
        """Concatenate along the primitive axis K (several people in one scene)."""
        return Primitives(
            torch.cat([p.center for p in items], 1), torch.cat([p.rot for p in items], 1),
            torch.cat([p.scale for p in items], 1), torch.cat([p.h for p in items], 1),
            torch.cat([p.part for p in items]), torch.cat([p.person for p in items]),
        )

    def to(self, *args, **kwargs) -> Primitives:
        """Like ``Tensor.to`` for the float tensors; indices follow the device."""
        center = self.center.to(*args, **kwargs)
        return Primitives(
            center, self.rot.to(*args, **kwargs), self.scale.to(*args, **kwargs),
            self.h.to(*args, **kwargs), self.part.to(center.device), self.person.to(center.device),
        )

    def float(self) -> Primitives:
        """float32 copy."""
        return self.to(torch.float32)

    def frames(self, index: torch.Tensor | slice) -> Primitives:
        """Select frames (first axis)."""
        return Primitives(self.center[index], self.rot[index], self.scale[index], self.h[index],
                          self.part, self.person)

    def lowest_z(self) -> torch.Tensor:
        """(F, K) lowest world z of each primitive's surface."""
        rs = self.rot * self.scale[..., None, :]  # R diag(s)
        return self.center[..., 2] - rs[..., 2, :].norm(dim=-1) - self.h * rs[..., 2, 2].abs()


def pose_body(
    body: BodyModel, link_rot: torch.Tensor, link_pos: torch.Tensor, person: int = 0
) -> tuple[Primitives, torch.Tensor]:
    """Place a body on posed link frames.

    Args:
        link_rot: (F, L, 3, 3) world rotations of the link frames. link_pos: (F, L, 3) mm.
    Returns:
        ``(primitives, joints (F, 17, 3))`` world mm (Human3.6M-17 order).
    """
    r = link_rot[:, body.prim_link]  # (F, K, 3, 3)
    c = (r @ body.prim_center.to(r)[..., None])[..., 0] + link_pos[:, body.prim_link]
    rot = r @ body.prim_axes.to(r)
    f = link_rot.shape[0]
    scale = body.prim_scale.to(r).expand(f, -1, -1)
    h = body.prim_h.to(r).expand(f, -1)
    prims = Primitives(c, rot, scale, h, body.prim_part.clone(),
                       torch.full_like(body.prim_part, person))
    rj = link_rot[:, body.joint_link]
    joints = (rj @ body.joint_offset.to(rj)[..., None])[..., 0] + link_pos[:, body.joint_link]
    return prims, joints


# ------------------------------------------------------------------------------- surface chart
def local_to_uv(q: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-capsule local points q (..., 3) with half-lengths h (...) -> (U, V) in [0, 1]."""
    u = torch.remainder(torch.atan2(q[..., 1], q[..., 0]) / (2 * math.pi), 1.0)
    v = ((q[..., 2] + h + 1) / (2 * h + 2)).clamp(0, 1)
    return u, v


def uv_to_local(u: torch.Tensor, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`local_to_uv`: (U, V) and half-lengths h (...) -> unit-capsule points."""
    z = v * (2 * h + 2) - h - 1
    zc = z - z.clamp(min=-h, max=h)  # axial distance into a cap
    rho = (1 - zc * zc).clamp_min(0).sqrt()
    ang = 2 * math.pi * u
    return torch.stack([rho * torch.cos(ang), rho * torch.sin(ang), z], -1)


def surface_point(
    prims: Primitives, part: torch.Tensor, u: torch.Tensor, v: torch.Tensor, person: int = 0
) -> torch.Tensor:
    """World positions (F, N, 3) of chart points (I, U, V) (N,) on posed primitives (F frames).

    ``part`` is the part index I (1..NUM_PARTS) of person ``person``.
    """
    k_of = torch.full((NUM_PARTS + 1,), -1, dtype=torch.long, device=prims.part.device)
    sel = torch.nonzero(prims.person == person)[:, 0]
    k_of[prims.part[sel]] = sel
    k = k_of[part.long()]
    if bool((k < 0).any()):
        raise ValueError("part must hold part indices 1..NUM_PARTS of an existing person")
    q = uv_to_local(u.to(prims.center), v.to(prims.center), prims.h[:, k])
    rs = prims.rot[:, k] * prims.scale[:, k, None, :]
    return (rs @ q[..., None])[..., 0] + prims.center[:, k]


def rest_pose_primitives(shape: BodyShape | None = None) -> tuple[Primitives, torch.Tensor]:
    """Primitives (1 frame) and H36M joints (1, 17, 3) of a body in the mocap rest pose.

    Rest pose: standing, arms hanging, facing +x, feet on the floor z = 0, pelvis at x = y = 0.
    """
    body = build_body(shape)
    n = len(motion.LINK_NAMES)
    quats = torch.zeros(1, n, 4, dtype=torch.float64)
    quats[..., 0] = 1
    rot, pos = motion.forward_kinematics(torch.zeros(1, 3, dtype=torch.float64), quats,
                                         body.offsets)
    rot, pos = motion.to_world(rot, pos)
    prims, joints = pose_body(body, rot, pos)
    dz = prims.lowest_z().min()
    prims.center = prims.center - torch.tensor([0.0, 0.0, 1.0], dtype=dz.dtype) * dz
    return prims, joints - torch.tensor([0.0, 0.0, 1.0], dtype=dz.dtype) * dz


def rest_surface_points(
    part: torch.Tensor, u: torch.Tensor, v: torch.Tensor, shape: BodyShape | None = None
) -> torch.Tensor:
    """The rest-pose 3D position (N, 3) mm of chart points (I, U, V) (N,): the canonical body.

    This is the map ``(I, U, V) -> xyz`` used to compare dense correspondences across subjects
    and views (the rest pose of the mean subject unless ``shape`` is given).
    """
    part = torch.as_tensor(part)
    if part.numel() and (int(part.min()) < 1 or int(part.max()) > NUM_PARTS):
        raise ValueError(f"part must be in 1..{NUM_PARTS} (0 is background)")
    prims, _ = rest_pose_primitives(shape)
    return surface_point(prims, part, torch.as_tensor(u, dtype=torch.float64),
                         torch.as_tensor(v, dtype=torch.float64))[0]
