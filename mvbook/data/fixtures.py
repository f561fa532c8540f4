"""Tiny synthetic rigs and samples in the common format (for tests and offline examples).

:func:`look_at_rig` builds OpenCV-style cameras on a circle looking at the origin;
:func:`synthetic_samples` yields complete samples (random persons standing inside the rig,
projected with distortion) that :func:`mvbook.data.format.write_dataset` accepts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from mvbook.data.projection import complete_annotations


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
