"""Tiny synthetic rigs, poses and samples in the common format (for chapters, tests and examples).

:func:`h36m_like_rig` is the four-camera Human3.6M-like rig of chapters 1-4 (a
:class:`~mvbook.geometry.Camera` of batch ``(4,)``) and :func:`standing_pose` the standing
Human3.6M-17 person in its middle; :func:`look_at_rig` builds OpenCV-style cameras on a circle
looking at the origin; :func:`synthetic_samples` yields complete samples (random persons standing
inside the rig, projected with distortion) that :func:`mvbook.data.format.write_dataset` accepts.
Units: mm, world ``z`` up, ``x_cam = R X + t``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mvbook.data.projection import complete_annotations
from mvbook.geometry import Camera

#: ``(width, height)`` px of the images of :func:`h36m_like_rig`.
H36M_LIKE_IMAGE_SIZE: tuple[int, int] = (1000, 1000)
#: Camera centres (mm) of :func:`h36m_like_rig`: near the corners of a room, at about chest height.
H36M_LIKE_EYES: tuple[tuple[float, float, float], ...] = (
    (3400.0, 3200.0, 1550.0), (-3300.0, 3400.0, 1650.0),
    (-3500.0, -3100.0, 1500.0), (3200.0, -3500.0, 1700.0),
)
#: The point (mm) every camera of :func:`h36m_like_rig` looks at.
H36M_LIKE_TARGET: tuple[float, float, float] = (0.0, 0.0, 1000.0)
#: Focal lengths (px) of the cameras of :func:`h36m_like_rig`.
H36M_LIKE_FOCALS: tuple[float, ...] = (1145.0, 1150.0, 1140.0, 1148.0)

#: Human3.6M-17 joints (mm, z up) of a person standing at the origin, facing ``+y`` (their right
#: is ``+x``), right arm raised so that left and right are easy to tell apart.
STANDING_POSE_H36M17: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 950.0),        # 0 pelvis
    (130.0, 0.0, 945.0),      # 1 r_hip
    (145.0, 30.0, 510.0),     # 2 r_knee
    (150.0, -20.0, 85.0),     # 3 r_ankle
    (-130.0, 0.0, 945.0),     # 4 l_hip
    (-150.0, 60.0, 505.0),    # 5 l_knee
    (-160.0, 0.0, 85.0),      # 6 l_ankle
    (0.0, 10.0, 1180.0),      # 7 spine
    (0.0, 0.0, 1420.0),       # 8 thorax
    (0.0, 60.0, 1510.0),      # 9 neck_nose
    (0.0, 20.0, 1640.0),      # 10 head
    (-180.0, -10.0, 1400.0),  # 11 l_shoulder
    (-250.0, 20.0, 1130.0),   # 12 l_elbow
    (-290.0, 110.0, 900.0),   # 13 l_wrist
    (180.0, -10.0, 1400.0),   # 14 r_shoulder
    (320.0, 60.0, 1560.0),    # 15 r_elbow
    (360.0, 140.0, 1820.0),   # 16 r_wrist
)


def h36m_like_rig(
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    dist: Sequence[float] | None = None,
) -> Camera:
    """The Human3.6M-like rig of chapters 1-4: a :class:`~mvbook.geometry.Camera` of batch ``(4,)``.

    Four cameras at :data:`H36M_LIKE_EYES` (about 4.7 m from the subject, 1.5-1.7 m high) look at
    :data:`H36M_LIKE_TARGET` with world ``z`` up at the image top (``Camera.look_at``), focal
    lengths :data:`H36M_LIKE_FOCALS` px, principal points at the image centres, images
    :data:`H36M_LIKE_IMAGE_SIZE` = 1000 x 1000 px. Shapes: ``K (4, 3, 3)`` px, ``R (4, 3, 3)``,
    ``t (4, 3)`` mm, ``image_size (4, 2)``. ``dist``: optional ``(k1, k2, p1, p2, k3)`` shared
    by all four cameras (default an ideal pinhole).
    """
    eyes = torch.tensor(H36M_LIKE_EYES, dtype=dtype, device=device)
    target = torch.tensor(H36M_LIKE_TARGET, dtype=dtype, device=device)
    focal = torch.tensor(H36M_LIKE_FOCALS, dtype=dtype, device=device)
    d = None if dist is None else torch.tensor(dist, dtype=dtype, device=device).expand(4, 5)
    return Camera.look_at(eyes, target, focal=focal, image_size=H36M_LIKE_IMAGE_SIZE, dist=d)


def standing_pose(
    dtype: torch.dtype = torch.float64, device: str | torch.device | None = None
) -> torch.Tensor:
    """``(17, 3)`` mm: :data:`STANDING_POSE_H36M17`, a standing Human3.6M-17 person (``"h36m17"``
    joint order, pelvis at 95 cm, head top at 1.64 m, right wrist raised to 1.82 m)."""
    return torch.tensor(STANDING_POSE_H36M17, dtype=dtype, device=device)


def look_at_rig(
    num_views: int,
    image_size: Sequence[int] = (64, 48),
    radius: float = 4000.0,
    height: float = 1500.0,
    focal: float | None = None,
    dist: Sequence[float] | None = (0.02, -0.01, 0.001, -0.001, 0.0),
    target: Sequence[float] = (0.0, 0.0, 900.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``K (C,3,3), R (C,3,3), t (C,3) mm, dist (C,5)`` of cameras on a circle, z up."""
    W, H = image_size
    f = focal if focal is not None else 1.2 * W
    ang = np.linspace(0, 2 * np.pi, num_views, endpoint=False) + 0.3
    eye = np.stack([radius * np.cos(ang), radius * np.sin(ang), np.full(num_views, height)], -1)
    tgt = np.asarray(target, float)
    fwd = tgt - eye
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=-2)  # rows: camera x (right), y (down), z (forward)
    t = -np.einsum("cij,cj->ci", R, eye)
    K = np.tile(
        np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]]), (num_views, 1, 1)
    )
    d = (
        np.zeros((num_views, 5))
        if dist is None
        else np.tile(np.asarray(dist, float), (num_views, 1))
    )
    return K, R, t, d


def random_people(
    rng: np.random.Generator, num_persons: int, num_joints: int, spread: float = 600.0
) -> np.ndarray:
    """``(P, J, 3)`` mm: joints of people standing near the origin (z from 0 to ~1700)."""
    centre = rng.uniform(-spread, spread, (num_persons, 1, 3)) * np.array([1, 1, 0])
    body = rng.normal(0, 1, (num_persons, num_joints, 3)) * np.array([150, 150, 0])
    body[..., 2] = np.linspace(100, 1700, num_joints)[None] + rng.normal(
        0, 30, (num_persons, num_joints)
    )
    return centre + body


def synthetic_samples(
    num_samples: int = 6,
    num_views: int = 3,
    num_persons: int = 2,
    num_joints: int = 5,
    image_size: Sequence[int] = (64, 48),
    seed: int = 0,
    subjects: Sequence[str] = ("S1", "S9"),
    optional: Sequence[str] = (),
) -> Iterator[dict]:
    """Yield ``num_samples`` complete samples (numpy arrays) of a synthetic rig.

    The last person of every other sample is padding (``person_valid`` False) when
    ``num_persons > 1``. ``optional`` may name ``masks``, ``depth``, ``joints3d_valid``.
    """
    rng = np.random.default_rng(seed)
    W, H = image_size
    K, R, t, d = look_at_rig(num_views, image_size)
    for i in range(num_samples):
        X = random_people(rng, num_persons, num_joints)
        pv = np.ones(num_persons, bool)
        if num_persons > 1 and i % 2 == 1:
            pv[-1] = False
            X[-1] = 0.0
        ann = complete_annotations(X, pv, K, R, t, d, image_size)
        s = {
            "images": rng.integers(0, 256, (num_views, 3, H, W), dtype=np.uint8),
            "K": K.astype(np.float32),
            "R": R.astype(np.float32),
            "t": t.astype(np.float32),
            "dist": d.astype(np.float32),
            "image_size": np.tile(np.array([W, H], np.int64), (num_views, 1)),
            "joints3d": X.astype(np.float32),
            "person_valid": pv,
            **ann,
            "frame": 10 * i,
            "subject": subjects[i % len(subjects)],
            "action": "walk" if i % 3 else "sit",
            "sequence": f"seq{i // 3}",
        }
        if "masks" in optional:
            s["masks"] = rng.integers(0, num_persons + 1, (num_views, H, W), dtype=np.uint8)
        if "depth" in optional:
            s["depth"] = rng.uniform(0, 5000, (num_views, H, W)).astype(np.float32)
        if "joints3d_valid" in optional:
            s["joints3d_valid"] = np.ones((num_persons, num_joints), bool) & pv[:, None]
        yield s
