"""Real human motion for the studio: the DeepMimic humanoid mocap clips shipped by ``pybullet``.

``pybullet_data`` ships motion-capture clips retargeted to a humanoid (``humanoid/humanoid.urdf``).
Each clip file is JSON ``{"Loop": "wrap"|"none", "Frames": [[44 floats], ...]}``; one frame is

====  =====================================================================
0     frame duration dt (s)
1:4   root (pelvis) position, metres, y up
4:8   root orientation, quaternion (w, x, y, z), world frame
8:44  local joint rotations: chest (4), neck (4), right hip (4), right knee (1 angle),
      right ankle (4), right shoulder (4), right elbow (1), left hip (4), left knee (1),
      left ankle (4), left shoulder (4), left elbow (1)
====  =====================================================================

1 + 3 + 4 + 4 + 4 + 4 + 1 + 4 + 4 + 1 + 4 + 1 + 4 + 4 + 1 = 44. The humanoid faces +x with y up
and z to its right; the URDF is loaded at ``globalScaling=0.25`` (its lengths are 4x metres).
Forward kinematics is done here in torch, batched over frames (no physics engine); the studio's
world is z up in millimetres: ``X_world = (x, -z, y) * 1000``.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

URDF_SCALE = 0.25  # pybullet's DeepMimic code loads humanoid.urdf with globalScaling=0.25
MM = 1000.0

# Clip name -> file path relative to pybullet_data's data/motions folder.
CLIPS: dict[str, str] = {
    **{
        name: f"humanoid3d_{name}.txt"
        for name in (
            "walk", "run", "jump", "dance_a", "dance_b", "kick", "punch", "cartwheel", "backflip",
            "spin", "spinkick", "crawl", "roll", "getup_facedown", "getup_faceup",
        )
    },
    "walker_forward": "walker/0walk_forward.txt",
    "walker_turn_left0": "walker/turn_left0.txt",
    "walker_turn_left1": "walker/turn_left1.txt",
    "walker_turn_right0": "walker/turn_right0.txt",
    "walker_turn_right1": "walker/turn_right1.txt",
}
#: The 15 main clips (the studio's default actions).
MAIN_CLIPS: tuple[str, ...] = tuple(name for name in CLIPS if not name.startswith("walker_"))

# Links of the humanoid in FK order: (name, parent, rotation channel or None for fixed joints).
LINKS: tuple[tuple[str, str | None], ...] = (
    ("root", None),
    ("chest", "root"),
    ("neck", "chest"),
    ("right_hip", "root"),
    ("right_knee", "right_hip"),
    ("right_ankle", "right_knee"),
    ("right_shoulder", "chest"),
    ("right_elbow", "right_shoulder"),
    ("right_wrist", "right_elbow"),
    ("left_hip", "root"),
    ("left_knee", "left_hip"),
    ("left_ankle", "left_knee"),
    ("left_shoulder", "chest"),
    ("left_elbow", "left_shoulder"),
    ("left_wrist", "left_elbow"),
)
LINK_NAMES: tuple[str, ...] = tuple(n for n, _ in LINKS)
LINK_INDEX: dict[str, int] = {n: i for i, n in enumerate(LINK_NAMES)}
LINK_PARENTS: tuple[int, ...] = tuple(-1 if p is None else LINK_INDEX[p] for _, p in LINKS)
# Rotation channels in the order of the mocap file (after the root); 1-dof joints rotate about z.
CHANNELS: tuple[tuple[str, int], ...] = (
    ("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
    ("right_shoulder", 4), ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1),
    ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)
# Pose tensors hold one quaternion per link in LINK_NAMES order (fixed wrists: identity).
_Y_UP_TO_Z_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def mocap_dir() -> Path:
    """The folder ``pybullet_data/data/motions``; a clear error if pybullet is missing."""
    try:
        import pybullet_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the studio's motion comes from the mocap clips shipped by pybullet: "
            "`pip install pybullet` (pybullet_data could not be imported)"
        ) from err
    path = Path(pybullet_data.getDataPath()) / "data" / "motions"
    if not path.is_dir():  # pragma: no cover
        raise FileNotFoundError(f"pybullet_data has no motions folder at {path}; `pip install pybullet`")
    return path


def urdf_path() -> Path:
    """Path of ``humanoid/humanoid.urdf`` in pybullet_data."""
    path = mocap_dir().parent.parent / "humanoid" / "humanoid.urdf"
    if not path.is_file():  # pragma: no cover
        raise FileNotFoundError(f"{path} not found; `pip install pybullet`")
    return path


@lru_cache(maxsize=1)
def urdf_offsets() -> dict[str, tuple[float, float, float]]:
    """Joint origins of the humanoid (child link name -> xyz in the parent link frame, mm, y up).

    Parsed from the URDF with ``xml.etree`` and scaled by the DeepMimic ``globalScaling`` 0.25.
    """
    text = urdf_path().read_text(errors="replace").replace("\x00", "")  # the file ends in a NUL
    root = ET.fromstring(text.strip())
    offsets: dict[str, tuple[float, float, float]] = {}
    for joint in root.findall("joint"):
        child = joint.find("child").get("link")
        origin = joint.find("origin")
        xyz = tuple(float(v) * URDF_SCALE * MM for v in origin.get("xyz").split())
        offsets[child] = xyz  # type: ignore[assignment]
    missing = [n for n in LINK_NAMES if n not in offsets]
    if missing:  # pragma: no cover
        raise ValueError(f"humanoid.urdf lacks joints for links {missing}")
    return offsets


# ----------------------------------------------------------------------------------- quaternions
def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3)."""
    q = quat_normalize(q)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def quat_slerp(q0: torch.Tensor, q1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit quaternions (..., 4) with weights w (...) in [0, 1]."""
    dot = (q0 * q1).sum(-1)
    q1 = torch.where((dot < 0)[..., None], -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    small = sin < 1e-6
    a = torch.where(small, 1 - w, torch.sin((1 - w) * theta) / sin.clamp_min(1e-6))
    b = torch.where(small, w, torch.sin(w * theta) / sin.clamp_min(1e-6))
    return quat_normalize(a[..., None] * q0 + b[..., None] * q1)


def axis_angle_z(angle: torch.Tensor) -> torch.Tensor:
    """Quaternion (..., 4) of a rotation by ``angle`` about z."""
    half = angle / 2
    zeros = torch.zeros_like(angle)
    return torch.stack([torch.cos(half), zeros, zeros, torch.sin(half)], -1)


def yaw_quat(yaw: torch.Tensor) -> torch.Tensor:
    """Quaternion of a rotation by ``yaw`` about the y (up) axis of the mocap frame."""
    half = yaw / 2
    zeros = torch.zeros_like(yaw)
    return torch.stack([torch.cos(half), zeros, torch.sin(half), zeros], -1)


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def heading_yaw(q: torch.Tensor) -> torch.Tensor:
    """Yaw (about y) of the forward (+x) axis of root orientations q (..., 4)."""
    fwd = quat_to_matrix(q)[..., :, 0]
    return torch.atan2(-fwd[..., 2], fwd[..., 0])


# ---------------------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class MotionClip:
    """One mocap clip: ``times (T,)`` s, ``root_pos (T, 3)`` mm (y up), ``quats (T, L, 4)``.

    ``quats[:, 0]`` is the root orientation; the others are local link rotations in
    :data:`LINK_NAMES` order (fixed wrists hold the identity).
    """

    name: str
    loop: bool
    times: torch.Tensor
    root_pos: torch.Tensor
    quats: torch.Tensor

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    @property
    def num_frames(self) -> int:
        return int(self.times.shape[0])


@lru_cache(maxsize=None)
def load_clip(name: str) -> MotionClip:
    """Load the clip ``name`` (a key of :data:`CLIPS`) from pybullet_data."""
    if name not in CLIPS:
        raise ValueError(f"clip must be one of {sorted(CLIPS)}, got {name!r}")
    path = mocap_dir() / CLIPS[name]
    with open(path) as f:
        doc = json.load(f)
    frames = torch.tensor(doc["Frames"], dtype=torch.float64)
    if frames.ndim != 2 or frames.shape[1] != 44:
        raise ValueError(f"{path}: expected frames of 44 values, got shape {tuple(frames.shape)}")
    times = torch.cat([torch.zeros(1, dtype=frames.dtype), frames[:-1, 0].cumsum(0)])
    root_pos = frames[:, 1:4] * MM
    quats = torch.zeros(frames.shape[0], len(LINK_NAMES), 4, dtype=frames.dtype)
    quats[..., 0] = 1.0
    quats[:, 0] = quat_normalize(frames[:, 4:8])
    col = 8
    for link, size in CHANNELS:
        i = LINK_INDEX[link]
        if size == 4:
            quats[:, i] = quat_normalize(frames[:, col : col + 4])
        else:
            quats[:, i] = axis_angle_z(frames[:, col])
        col += size
    assert col == 44
    loop = str(doc.get("Loop", "none")).lower() == "wrap"
    return MotionClip(name, loop, times, root_pos, quats)


def sample_clip(clip: MotionClip, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a clip at times ``t (F,)`` s (>= 0): ``(root_pos (F, 3) mm, quats (F, L, 4))``.

    Looping clips repeat with the root displacement and heading change of one cycle carried over,
    so a walk keeps walking; non-looping clips play forward and backward (ping-pong).
    Interpolation: linear for positions, slerp for rotations.
    """
    t = t.to(torch.float64)
    if bool((t < 0).any()):
        raise ValueError("t must be >= 0 (clip time in seconds)")
    dur = clip.duration
    if clip.loop:
        cycle = torch.floor(t / dur)
        tau = t - cycle * dur
    else:
        cycle = torch.zeros_like(t)
        tau = torch.remainder(t, 2 * dur)
        tau = torch.where(tau > dur, 2 * dur - tau, tau)
    idx = torch.searchsorted(clip.times, tau.contiguous(), right=True).clamp(1, clip.num_frames - 1)
    t0, t1 = clip.times[idx - 1], clip.times[idx]
    w = ((tau - t0) / (t1 - t0).clamp_min(1e-9)).clamp(0, 1)
    pos = clip.root_pos[idx - 1] * (1 - w[:, None]) + clip.root_pos[idx] * w[:, None]
    quats = quat_slerp(clip.quats[idx - 1], clip.quats[idx], w[:, None].expand(-1, len(LINK_NAMES)))
    if clip.loop:
        # one cycle = horizontal rigid transform taking the first root frame to the last
        dyaw = heading_yaw(clip.quats[-1, 0]) - heading_yaw(clip.quats[0, 0])
        q_cycle = yaw_quat(dyaw)
        r_cycle = quat_to_matrix(q_cycle)
        shift = clip.root_pos[-1] - r_cycle @ clip.root_pos[0]
        shift[1] = 0.0
        n = cycle.long()
        lo, hi = int(n.min()), int(n.max())
        for k in range(lo, hi + 1):  # a few cycles at most: loop over cycles, not frames
            sel = n == k
            if k == 0 or not bool(sel.any()):
                continue
            rk = torch.linalg.matrix_power(r_cycle, k)
            qk = yaw_quat(dyaw * k)
            # translation of T^k (k > 0: times are >= 0): sum_{i<k} R^i shift
            tk = sum(torch.linalg.matrix_power(r_cycle, i) @ shift for i in range(k))
            pos[sel] = pos[sel] @ rk.T + tk
            quats[sel, 0] = quat_mul(qk.expand(int(sel.sum()), 4), quats[sel, 0])
    return pos, quats


def mirror_pose(root_pos: torch.Tensor, quats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror a motion left-right (reflect the mocap z axis) and swap left/right channels."""
    pos = root_pos.clone()
    pos[..., 2] = -pos[..., 2]
    q = quats.clone()
    q[..., 1] = -q[..., 1]
    q[..., 2] = -q[..., 2]
    perm = [LINK_INDEX[n.replace("right_", "@").replace("left_", "right_").replace("@", "left_")]
            for n in LINK_NAMES]
    return pos, q[..., perm, :]


# ------------------------------------------------------------------------------------------ FK
def link_offsets(scales: dict[str, float] | None = None) -> torch.Tensor:
    """Joint origins (L, 3) mm in the parent frame (y up), optionally scaled per link.

    ``scales`` maps a link name to a factor (a float) applied to that link's origin offset.
    """
    off = urdf_offsets()
    out = torch.tensor([off[n] for n in LINK_NAMES], dtype=torch.float64)
    out[0] = 0.0
    if scales:
        for name, s in scales.items():
            out[LINK_INDEX[name]] *= torch.as_tensor(s, dtype=torch.float64)
    return out


def forward_kinematics(
    root_pos: torch.Tensor, quats: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched FK in the mocap frame (y up).

    Args:
        root_pos: (F, 3) mm. quats: (F, L, 4) root orientation then local rotations.
        offsets: (L, 3) mm joint origins in the parent frame.
    Returns:
        ``(rot (F, L, 3, 3), pos (F, L, 3))`` link frames (mocap frame, mm).
    """
    rl = quat_to_matrix(quats)
    rots: list[torch.Tensor] = []
    poss: list[torch.Tensor] = []
    for i, parent in enumerate(LINK_PARENTS):  # loop over the 15 links of the tree, batched frames
        if parent < 0:
            rots.append(rl[:, i])
            poss.append(root_pos)
        else:
            rp = rots[parent]
            rots.append(rp @ rl[:, i])
            poss.append(poss[parent] + rp @ offsets[i].to(rp))
    return torch.stack(rots, 1), torch.stack(poss, 1)


def to_world(rot: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mocap frame (y up) -> studio world (z up): rotations (...,3,3) and points (...,3)."""
    m = _Y_UP_TO_Z_UP.to(rot)
    return m @ rot, pos @ m.T


@dataclass(frozen=True)
class MotionParams:
    """How one sequence is cut from a clip and placed in the capture volume.

    start: clip time of the first frame (s); fps: frames per second of the sequence;
    heading: yaw (rad) about the world's up axis; position: (x, y) mm of the trajectory centre;
    mirror: mirror the motion left-right; turn_rate: yaw rate (rad/s) bending the root path into
    an arc (keeps walks and runs inside the volume); root_scale: multiplies root translation.
    """

    clip: str
    num_frames: int
    fps: float
    start: float = 0.0
    heading: float = 0.0
    position: tuple[float, float] = (0.0, 0.0)
    mirror: bool = False
    turn_rate: float = 0.0
    root_scale: float = 1.0


def sequence_pose(params: MotionParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Root positions (F, 3) mm and quaternions (F, L, 4) of a placed sequence, mocap frame.

    The root path's horizontal part is centred on ``params.position`` after heading, turning and
    scaling are applied; the vertical part is left to the caller (floor contact needs the body).
    """
    clip = load_clip(params.clip)
    n = params.num_frames
    if n < 1:
        raise ValueError(f"num_frames must be >= 1, got {n}")
    if params.fps <= 0:
        raise ValueError(f"fps must be > 0, got {params.fps}")
    if params.start < 0:
        raise ValueError(f"start must be >= 0 s, got {params.start}")
    # sample densely (>= 60 Hz) so the turning integration is accurate, then subsample
    sub = max(1, math.ceil(60.0 / params.fps))
    t = params.start + torch.arange(n * sub, dtype=torch.float64) / (params.fps * sub)
    pos, quats = sample_clip(clip, t)
    if params.mirror:
        pos, quats = mirror_pose(pos, quats)
    pos = pos * params.root_scale
    # horizontal velocity, rotated by the accumulated turn, re-integrated
    yaw = params.heading + params.turn_rate * (t - t[0])
    vel = torch.diff(pos, dim=0)
    ry = quat_to_matrix(yaw_quat(yaw))  # (F, 3, 3)
    vel = (ry[1:] @ vel[..., None])[..., 0]
    horiz = torch.cat([torch.zeros(1, 3, dtype=pos.dtype), vel.cumsum(0)])
    new_pos = horiz + (ry[0] @ pos[0])
    new_pos[:, 1] = pos[:, 1]
    quats = quats.clone()
    quats[:, 0] = quat_mul(yaw_quat(yaw), quats[:, 0])
    new_pos, quats = new_pos[::sub], quats[::sub]
    # centre the horizontal path (mocap x, z) on the requested world (x, y) = (x, -z)
    mid = (new_pos.amax(0) + new_pos.amin(0)) / 2
    new_pos[:, 0] += params.position[0] - mid[0]
    new_pos[:, 2] += -params.position[1] - mid[2]
    return new_pos, quats


def path_extent(params: MotionParams) -> float:
    """Largest horizontal extent (mm) of a sequence's root path (bounding-box diagonal / 2)."""
    pos, _ = sequence_pose(params)
    span = pos.amax(0) - pos.amin(0)
    return float(torch.hypot(span[0], span[2]) / 2)
