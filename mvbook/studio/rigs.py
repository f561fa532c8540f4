"""Camera rigs of the studio, modelled on the real capture setups (as :class:`Camera` batches).

- ``"h36m"``: Human3.6M-like, 4 cameras near the corners of the room at about 1.6 m height,
  square images, focal 1.5 image widths, optional Human3.6M-like lens distortion.
- ``"panoptic"``: CMU Panoptic-like, 5 HD views on the dome (radius about 3.4 m, 16:9 images).
- ``"shelf"``: Shelf-like, 5 views from one side of a small room (4:3 images).
- ``"campus"``: Campus-like, 3 outdoor views from far away (4:3 images, wide area).

Each rig also has a :class:`Room` (the static background geometry) and a capture radius (where
people are placed). All in mm, world z up, floor at z = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mvbook.geometry import Camera

RIGS = ("h36m", "panoptic", "shelf", "campus")

# Human3.6M's mean distortion (k1, k2, p1, p2, k3), roughly.
H36M_DIST = (-0.207, 0.247, -0.0009, -0.0016, -0.0031)


@dataclass(frozen=True)
class Room:
    """An axis-aligned room ``[-half_x, half_x] x [-half_y, half_y] x [0, height]`` mm.

    ``outdoor`` rooms draw grass and building facades instead of a floor and painted walls.
    """

    half_x: float
    half_y: float
    height: float
    outdoor: bool = False


@dataclass(frozen=True)
class RigSpec:
    """A rig: camera names, cameras (batch (C,)), the room and the capture radius (mm)."""

    name: str
    cameras: Camera
    camera_names: tuple[str, ...]
    room: Room
    capture_radius: float


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, int) and v >= 8 for v in image_size)
    ):
        raise ValueError(f"image_size must be (width, height) ints >= 8, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _ring(
    azimuths_deg: list[float], radii: list[float], heights: list[float], targets: list[tuple],
    focal: float, image_size: tuple[int, int], dist: tuple | None, dtype: torch.dtype,
) -> Camera:
    az = torch.tensor(azimuths_deg, dtype=torch.float64) * math.pi / 180
    r = torch.tensor(radii, dtype=torch.float64)
    eye = torch.stack([r * torch.cos(az), r * torch.sin(az), torch.tensor(heights, dtype=torch.float64)], -1)
    tgt = torch.tensor(targets, dtype=torch.float64)
    d = None if dist is None else torch.tensor(dist, dtype=torch.float64).expand(len(az), 5)
    return Camera.look_at(eye, tgt, focal=focal, image_size=image_size, dist=d).to(dtype)


def make_rig(
    name: str = "h36m",
    image_size: tuple[int, int] | None = None,
    distortion: bool = False,
    dtype: torch.dtype = torch.float32,
) -> RigSpec:
    """Build a rig by name (one of :data:`RIGS`).

    Args:
        image_size: ``(width, height)``; default per rig (h36m 128x128, panoptic 192x108,
            shelf 128x96, campus 128x96).
        distortion: give the cameras lens distortion (Human3.6M-like coefficients, scaled
            down for the other rigs); images are then rendered distorted.
    """
    if name not in RIGS:
        raise ValueError(f"rig must be one of {RIGS}, got {name!r}")
    defaults = {"h36m": (128, 128), "panoptic": (192, 108), "shelf": (128, 96), "campus": (128, 96)}
    w, h = _check_size(tuple(image_size) if image_size is not None else defaults[name])
    if name == "h36m":
        # four cameras near the room corners, slightly different heights and aims
        cams = _ring(
            [42.0, 137.0, -44.0, -133.0], [4300.0, 4150.0, 4250.0, 4400.0],
            [1550.0, 1620.0, 1480.0, 1680.0],
            [(60.0, -40.0, 900.0), (-30.0, 50.0, 950.0), (20.0, 30.0, 880.0), (-50.0, -20.0, 930.0)],
            focal=1.5 * w, image_size=(w, h), dist=H36M_DIST if distortion else None, dtype=dtype,
        )
        return RigSpec(name, cams, ("54138969", "55011271", "58860488", "60457274"),
                       Room(5200.0, 4800.0, 3200.0), 600.0)
    if name == "panoptic":
        cams = _ring(
            [10.0, 82.0, 150.0, 222.0, 290.0], [3350.0, 3450.0, 3300.0, 3400.0, 3450.0],
            [1900.0, 700.0, 2500.0, 1300.0, 2100.0],
            [(0.0, 0.0, 900.0)] * 5, focal=0.6 * w, image_size=(w, h),
            dist=tuple(0.3 * v for v in H36M_DIST) if distortion else None, dtype=dtype,
        )
        return RigSpec(name, cams, ("hd_03", "hd_06", "hd_12", "hd_13", "hd_23"),
                       Room(4200.0, 4200.0, 4000.0), 1500.0)
    if name == "shelf":
        cams = _ring(
            [-150.0, -120.0, -90.0, -60.0, -30.0], [3600.0, 3800.0, 3700.0, 3800.0, 3600.0],
            [2300.0, 2100.0, 2200.0, 2100.0, 2300.0],
            [(0.0, 0.0, 800.0)] * 5, focal=0.95 * w, image_size=(w, h),
            dist=tuple(0.3 * v for v in H36M_DIST) if distortion else None, dtype=dtype,
        )
        return RigSpec(name, cams, tuple(f"shelf_{i}" for i in range(5)),
                       Room(4500.0, 4500.0, 3000.0), 1200.0)
    cams = _ring(
        [-100.0, -60.0, 160.0], [11000.0, 12000.0, 10000.0], [4500.0, 5000.0, 4000.0],
        [(0.0, 0.0, 500.0)] * 3, focal=2.0 * w, image_size=(w, h),
        dist=tuple(0.3 * v for v in H36M_DIST) if distortion else None, dtype=dtype,
    )
    return RigSpec(name, cams, ("campus_0", "campus_1", "campus_2"),
                   Room(16000.0, 16000.0, 12000.0, outdoor=True), 3000.0)
