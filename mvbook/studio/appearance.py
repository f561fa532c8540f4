"""Appearance of the studio: clothing, skin, procedural textures, lighting, rooms, sensor noise.

Textures are functions of the surface chart ``(I, U, V)`` (see :mod:`mvbook.studio.body`), so they
stick to the body as it moves and are identical across views: a pixel's colour is a function of
the body point it shows, the subject, and the lighting (Lambertian shading). Backgrounds are ray
casts of a static textured room (floor, walls, ceiling), one fixed image per camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mvbook.studio.body import NUM_PARTS, PART_NAMES

SKIN_TONES = torch.tensor(
    [[0.96, 0.80, 0.69], [0.91, 0.72, 0.58], [0.80, 0.60, 0.46], [0.67, 0.47, 0.33],
     [0.55, 0.38, 0.26], [0.42, 0.28, 0.19], [0.87, 0.68, 0.55]]
)
HAIR_COLOURS = torch.tensor(
    [[0.10, 0.07, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.15], [0.75, 0.62, 0.40],
     [0.55, 0.55, 0.55], [0.35, 0.12, 0.06]]
)

# Look vector layout (one row per person), built by SubjectLook.vector().
_LOOK_FIELDS = (
    ("skin", 3), ("hair", 3), ("top", 3), ("top2", 3), ("bottom", 3), ("bottom2", 3),
    ("shoes", 3), ("accent", 3), ("top_pattern", 1), ("top_freq", 1), ("bottom_pattern", 1),
    ("bottom_freq", 1), ("long_sleeves", 1), ("long_pants", 1),
)
LOOK_DIM = sum(n for _, n in _LOOK_FIELDS)
_OFF = {}
_o = 0
for _name, _n in _LOOK_FIELDS:
    _OFF[_name] = slice(_o, _o + _n)
    _o += _n
PATTERNS = ("plain", "h_stripes", "v_stripes", "checker", "dots")

# garment of each part: 0 skin, 1 top, 2 bottom, 3 shoes, 4 head (skin + hair),
# 5 forearm (top if long sleeves else skin), 6 shin (bottom if long pants else skin)
_GARMENT = {
    "torso": 1, "pelvis": 2, "head": 4, "neck": 0, "r_upper_arm": 1, "r_forearm": 5,
    "r_hand": 0, "l_upper_arm": 1, "l_forearm": 5, "l_hand": 0, "r_thigh": 2, "r_shin": 6,
    "r_foot": 3, "l_thigh": 2, "l_shin": 6, "l_foot": 3,
}
PART_GARMENT = torch.tensor([0] + [_GARMENT[n] for n in PART_NAMES[1:]])
# parts of the left arm and leg (they carry the left/right cue, see :func:`albedo`)
LEFT_PARTS = torch.tensor([False] + [n.startswith("l_") for n in PART_NAMES[1:]])
# texture scale of each part's chart: (around, along) in "cloth units" so patterns look even
PART_TEX_SCALE = torch.tensor(
    [[1.0, 1.0]]
    + [
        {"torso": [4.0, 3.0], "pelvis": [4.0, 2.0], "head": [2.0, 1.5], "neck": [1.0, 0.6],
         "r_upper_arm": [1.0, 2.0], "r_forearm": [0.9, 2.0], "r_hand": [0.6, 0.8],
         "l_upper_arm": [1.0, 2.0], "l_forearm": [0.9, 2.0], "l_hand": [0.6, 0.8],
         "r_thigh": [1.5, 3.0], "r_shin": [1.2, 3.0], "r_foot": [1.0, 1.5],
         "l_thigh": [1.5, 3.0], "l_shin": [1.2, 3.0], "l_foot": [1.0, 1.5]}[n]
        for n in PART_NAMES[1:]
    ]
)


@dataclass(frozen=True)
class SubjectLook:
    """Clothing and skin of one subject (colours RGB in [0, 1])."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    top: tuple[float, float, float]
    top2: tuple[float, float, float]
    bottom: tuple[float, float, float]
    bottom2: tuple[float, float, float]
    shoes: tuple[float, float, float]
    accent: tuple[float, float, float]
    top_pattern: int = 0
    top_freq: float = 3.0
    bottom_pattern: int = 0
    bottom_freq: float = 3.0
    long_sleeves: bool = True
    long_pants: bool = True

    @staticmethod
    def sample(generator: torch.Generator) -> SubjectLook:
        """A random outfit: saturated garment colours, one of :data:`PATTERNS` per garment."""
        def r(n: int = 1) -> torch.Tensor:
            return torch.rand(n, generator=generator, dtype=torch.float64)

        def colour(sat_lo: float = 0.35, val_lo: float = 0.25) -> tuple[float, float, float]:
            hsv = r(3)
            return _hsv_to_rgb(float(hsv[0]), sat_lo + (1 - sat_lo) * float(hsv[1]),
                               val_lo + (0.95 - val_lo) * float(hsv[2]))

        skin = SKIN_TONES[int(r() * len(SKIN_TONES)) % len(SKIN_TONES)]
        hair = HAIR_COLOURS[int(r() * len(HAIR_COLOURS)) % len(HAIR_COLOURS)]
        return SubjectLook(
            skin=tuple(float(v) for v in skin), hair=tuple(float(v) for v in hair),
            top=colour(), top2=colour(0.0, 0.1), bottom=colour(0.2, 0.15),
            bottom2=colour(0.0, 0.1), shoes=colour(0.0, 0.05), accent=colour(0.8, 0.7),
            top_pattern=int(r() * len(PATTERNS)) % len(PATTERNS),
            top_freq=float(2.0 + 4.0 * r()),
            bottom_pattern=int(r() * 3) % 3 * (1 if float(r()) < 0.5 else 0),
            bottom_freq=float(2.0 + 3.0 * r()),
            long_sleeves=bool(r() < 0.6), long_pants=bool(r() < 0.75),
        )

    def vector(self) -> torch.Tensor:
        """The look as a flat float tensor (LOOK_DIM,) used by :func:`albedo`."""
        parts = []
        for name, n in _LOOK_FIELDS:
            v = getattr(self, name)
            parts.append(torch.tensor(v if n > 1 else [float(v)], dtype=torch.float32))
        return torch.cat(parts)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _pattern(kind: torch.Tensor, freq: torch.Tensor, su: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
    """Mixing weight in [0, 1] of the second garment colour for pattern ids ``kind`` (N,)."""
    fu, fv = su * freq, sv * freq
    h = 0.5 + 0.5 * torch.tanh(4 * torch.sin(2 * math.pi * fv))
    v = 0.5 + 0.5 * torch.tanh(4 * torch.sin(2 * math.pi * fu))
    chk = torch.remainder(torch.floor(fu) + torch.floor(fv), 2.0)
    du, dv = fu - torch.floor(fu) - 0.5, fv - torch.floor(fv) - 0.5
    dots = (du * du + dv * dv < 0.09).float()
    plain = 0.08 * torch.sin(2 * math.pi * fv / 3)  # a faint shading band
    out = torch.stack([plain, h, v, chk, dots], -1)
    return out.gather(-1, kind.long().clamp(0, 4)[..., None])[..., 0]


def albedo(looks: torch.Tensor, person: torch.Tensor, part: torch.Tensor, u: torch.Tensor,
           v: torch.Tensor) -> torch.Tensor:
    """Surface colour (N, 3) in [0, 1] of chart points (I = part, U, V) (N,) of ``person`` (N,).

    ``looks`` is (P, LOOK_DIM): one :meth:`SubjectLook.vector` per person of the scene.
    """
    lk = looks[person]  # (N, D)
    g = PART_GARMENT.to(part.device)[part]
    sc = PART_TEX_SCALE.to(u)[part]
    su, sv = u * sc[:, 0], v * sc[:, 1]

    def f(name: str) -> torch.Tensor:
        return lk[:, _OFF[name]]

    skin = f("skin")
    w_top = _pattern(f("top_pattern")[:, 0], f("top_freq")[:, 0], su, sv)[:, None]
    top = f("top") * (1 - w_top) + f("top2") * w_top
    w_bot = _pattern(f("bottom_pattern")[:, 0], f("bottom_freq")[:, 0], su, sv)[:, None]
    bottom = f("bottom") * (1 - w_bot) + f("bottom2") * w_bot
    # A chest panel (front: U near 0) and a darker back break the front/back symmetry of the
    # primitives, and the left arm and leg are light (as the asymmetric marker layouts of
    # motion-capture suits are): on a real body a face and clothing tell a detector which way the
    # person faces, hence which arm is the left; a small network on 64 px crops learns that far
    # sooner from a cue it can see at the limb itself.
    front = torch.minimum(u, 1 - u)
    torso = part == PART_NAMES.index("torso")
    emblem = torso & (front < 0.16) & (v > 0.3) & (v < 0.9)
    back_of_torso = torso & (front > 0.36)
    left_limb = LEFT_PARTS.to(part.device)[part]
    # head: hair on top and back, face in front (U near 0 is the face), two eyes
    back = (u > 0.3) & (u < 0.7)
    hair = (v > 0.78) | (back & (v > 0.35))
    eye_u = torch.minimum((u - 0.08).abs(), (u - 0.92).abs())
    eyes = (eye_u < 0.03) & ((v - 0.6).abs() < 0.04)
    head = torch.where(hair[:, None], f("hair"), skin)
    head = torch.where(eyes[:, None], torch.full_like(head, 0.08), head)
    forearm = torch.where(f("long_sleeves") > 0.5, top, skin)
    shin = torch.where(f("long_pants") > 0.5, bottom, skin)
    shoes = f("shoes") * (0.85 + 0.15 * (v > 0.5).float()[:, None])
    table = torch.stack([skin, top, bottom, shoes, head, forearm, shin], 1)  # (N, 7, 3)
    col = table.gather(1, g[:, None, None].expand(-1, 1, 3))[:, 0]
    col = torch.where(back_of_torso[:, None], col * 0.7, col)
    col = torch.where(emblem[:, None], f("accent"), col)
    col = torch.where(left_limb[:, None], 0.25 * col + 0.7, col)  # light left limbs
    return col


@dataclass(frozen=True)
class Lighting:
    """Lambertian lighting: ambient + a key and a fill directional light (world, towards light)."""

    key_dir: tuple[float, float, float] = (0.4, -0.3, 0.85)
    key: float = 0.75
    fill_dir: tuple[float, float, float] = (-0.5, 0.6, 0.3)
    fill: float = 0.25
    ambient: float = 0.3
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @staticmethod
    def sample(generator: torch.Generator, variation: float = 1.0) -> Lighting:
        """Random lighting around the default; ``variation`` 0 gives the default."""
        r = torch.rand(8, generator=generator, dtype=torch.float64) * 2 - 1
        az = 0.7 + 1.6 * variation * float(r[0])
        el = 1.0 + 0.3 * variation * float(r[1])
        key_dir = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
        return Lighting(
            key_dir=key_dir, key=0.75 + 0.2 * variation * float(r[2]),
            fill_dir=(-key_dir[0], -key_dir[1], 0.4), fill=0.25 + 0.1 * variation * float(r[3]),
            ambient=0.3 + 0.08 * variation * float(r[4]),
            tint=(1.0 + 0.06 * variation * float(r[5]), 1.0, 1.0 + 0.06 * variation * float(r[6])),
        )

    def vector(self) -> torch.Tensor:
        """(11,) = key_dir (3), key, fill_dir (3), fill, tint... packed for :func:`shade`."""
        kd = torch.tensor(self.key_dir, dtype=torch.float32)
        fd = torch.tensor(self.fill_dir, dtype=torch.float32)
        return torch.cat([kd / kd.norm(), torch.tensor([self.key]), fd / fd.norm(),
                          torch.tensor([self.fill, self.ambient]), torch.tensor(self.tint)])


LIGHT_DIM = 12


def shade(colour: torch.Tensor, normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Lambertian shading: colours (N, 3), unit normals (N, 3), packed lights (N, LIGHT_DIM)."""
    key = (normal * light[:, 0:3]).sum(-1).clamp_min(0) * light[:, 3]
    fill = (normal * light[:, 4:7]).sum(-1).clamp_min(0) * light[:, 7]
    lum = light[:, 8] + key + fill
    return (colour * lum[:, None] * light[:, 9:12]).clamp(0, 1)


# ------------------------------------------------------------------------------------ the room
@dataclass(frozen=True)
class RoomStyle:
    """Colours and texture parameters of a room (sampled from the scene seed)."""

    floor_a: tuple[float, float, float]
    floor_b: tuple[float, float, float]
    tile: float
    walls: tuple[tuple[float, float, float], ...]
    trim: tuple[float, float, float]
    posters: torch.Tensor  # (4 walls, M, 7): centre u, centre z, half w, half h, rgb

    @staticmethod
    def sample(generator: torch.Generator, outdoor: bool = False) -> RoomStyle:
        def r(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float32)

        if outdoor:
            fa, fb = (0.33, 0.48, 0.25), (0.40, 0.55, 0.30)
            walls = tuple(tuple((0.55 + 0.25 * r(3)).tolist()) for _ in range(4))
            trim = (0.3, 0.3, 0.32)
        else:
            base = 0.35 + 0.35 * r(3)
            fa = tuple(base.tolist())
            fb = tuple((base * (0.7 + 0.2 * r(1))).tolist())
            walls = tuple(tuple((0.45 + 0.45 * r(3)).tolist()) for _ in range(4))
            trim = tuple((0.15 + 0.3 * r(3)).tolist())
        m = 6
        posters = torch.cat([
            r(4, m, 1) * 2 - 1,  # centre u in [-1, 1] of the wall's width
            0.25 + 0.5 * r(4, m, 1),  # centre height fraction
            0.04 + 0.1 * r(4, m, 1), 0.05 + 0.12 * r(4, m, 1),  # half sizes (fractions)
            r(4, m, 3),  # colour
        ], -1)
        return RoomStyle(fa, fb, 500.0 + 500.0 * float(r(1)), walls, trim, posters)


def render_room(
    origin: torch.Tensor, direction: torch.Tensor, room, style: RoomStyle
) -> torch.Tensor:
    """Colours (N, 3) in [0, 1] of rays (origin (N, 3), unit direction (N, 3)) inside a room.

    The ray exits the box room through the floor (z = 0), a wall or the ceiling; each surface has
    its procedural texture (tiles, painted walls with a skirting trim and posters) and a fixed
    Lambertian light. ``room`` is a :class:`mvbook.studio.rigs.Room`.
    """
    dev, dt = origin.device, origin.dtype
    hx, hy, hz = room.half_x, room.half_y, room.height
    lo = torch.tensor([-hx, -hy, 0.0], device=dev, dtype=dt)
    hi = torch.tensor([hx, hy, hz], device=dev, dtype=dt)
    safe = torch.where(direction.abs() < 1e-9, torch.full_like(direction, 1e-9), direction)
    t_hi = (hi - origin) / safe
    t_lo = (lo - origin) / safe
    t_exit = torch.where(direction > 0, t_hi, t_lo)  # (N, 3) exit distance per axis
    t, axis = t_exit.min(-1)
    p = origin + t[:, None] * direction
    sign = torch.gather(torch.sign(direction), 1, axis[:, None])[:, 0]
    # surface id: 0 floor, 1 ceiling, 2 wall +x, 3 wall -x, 4 wall +y, 5 wall -y
    surf = torch.where(axis == 2, torch.where(sign < 0, 0, 1),
                       torch.where(axis == 0, torch.where(sign > 0, 2, 3),
                                   torch.where(sign > 0, 4, 5)))
    fa = torch.tensor(style.floor_a, device=dev, dtype=dt)
    fb = torch.tensor(style.floor_b, device=dev, dtype=dt)
    tile = style.tile
    chk = torch.remainder(torch.floor(p[:, 0] / tile) + torch.floor(p[:, 1] / tile), 2.0)
    grout = ((torch.remainder(p[:, 0], tile) < 15) | (torch.remainder(p[:, 1], tile) < 15)).float()
    floor = fa * (1 - chk[:, None]) + fb * chk[:, None]
    floor = floor * (1 - 0.25 * grout[:, None])
    # faint large-scale variation so the floor is not perfectly periodic
    floor = floor * (0.92 + 0.08 * torch.sin(p[:, 0] / 730.0)[:, None] * torch.cos(p[:, 1] / 910.0)[:, None])
    ceiling = torch.full_like(floor, 0.85)
    walls = torch.tensor(style.walls, device=dev, dtype=dt)  # (4, 3)
    wi = (surf - 2).clamp(0, 3)
    wall = walls[wi]
    # wall coordinates: horizontal a in [-1, 1], height fraction b in [0, 1]
    a = torch.where(wi < 2, p[:, 1] / hy, p[:, 0] / hx)
    b = p[:, 2] / hz
    panel = 0.9 + 0.1 * (torch.remainder(a * 6, 1.0) > 0.05).float()
    wall = wall * panel[:, None]
    trim = torch.tensor(style.trim, device=dev, dtype=dt)
    wall = torch.where((b < 0.04)[:, None], trim.expand_as(wall), wall)
    post = style.posters.to(device=dev, dtype=dt)[wi]  # (N, M, 7)
    inside = ((a[:, None] - post[..., 0]).abs() < post[..., 2]) & (
        (b[:, None] - post[..., 1]).abs() < post[..., 3])
    # the last poster drawn on top wins
    idx = torch.where(inside, torch.arange(post.shape[1], device=dev), -1).amax(1)
    has = idx >= 0
    pc = post[torch.arange(len(idx), device=dev), idx.clamp_min(0), 4:7]
    stripes = 0.8 + 0.2 * (torch.remainder(b * 40, 1.0) > 0.5).float()
    wall = torch.where(has[:, None], pc * stripes[:, None], wall)
    if getattr(room, "outdoor", False):
        sky = torch.tensor([0.62, 0.75, 0.92], device=dev, dtype=dt)
        ceiling = sky.expand_as(floor)
        wall = torch.where((b > 0.6)[:, None], sky.expand_as(wall), wall)
    col = torch.where((surf == 0)[:, None], floor, torch.where((surf == 1)[:, None], ceiling, wall))
    # fixed room light: brighter floor, darker far away
    normal = torch.zeros_like(p)
    normal.scatter_(1, axis[:, None], -sign[:, None])
    light = torch.tensor([0.3, -0.2, 0.93], device=dev, dtype=dt)
    lum = 0.55 + 0.45 * (normal * light).sum(-1).clamp_min(0)
    return (col * lum[:, None]).clamp(0, 1)


def add_sensor_noise(images: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """Add Gaussian read noise (``sigma`` in 0..255 units) to float images in [0, 1]."""
    if sigma <= 0:
        return images
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    return (images + noise.to(images.device) * (sigma / 255.0)).clamp(0, 1)


__all__ = [
    "LIGHT_DIM", "LOOK_DIM", "NUM_PARTS", "PATTERNS", "Lighting", "RoomStyle", "SubjectLook",
    "add_sensor_noise", "albedo", "render_room", "shade",
]
