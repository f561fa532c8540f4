"""A torch ray-caster for the studio: images, instance masks, depth, IUV, 2D joints, visibility.

Every pixel casts a ray (``Camera.pixel_to_ray`` with undistortion, so distorted cameras render
distorted images consistently with ``Camera.project``). Each ray is intersected analytically with
every body primitive (scaled capsules, see :mod:`mvbook.studio.body`) and the nearest hit wins.
Work is batched over frames, views, pixels and primitives and chunked to bound memory; only
pixels inside the people's projected bounding boxes are cast, the rest show the static
background (a ray cast of the room, rendered once per camera).

Intersection of a ray ``o + t d`` with a primitive: map to its local frame
``o' = S^-1 R^T (o - c)``, ``d' = S^-1 R^T d`` (an affine map keeps the ray parameter ``t``) and
intersect the unit capsule: the infinite cylinder ``x^2 + y^2 = 1`` (a quadratic in ``t``); if its
entry point lies within ``|z| <= h`` that is the hit, otherwise the ray can only enter through the
cap sphere centred at ``(0, 0, clamp(z, -h, h))`` (a second quadratic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from mvbook.geometry import Camera
from mvbook.studio.appearance import RoomStyle, albedo, render_room, shade
from mvbook.studio.body import (
    NUM_PARTS,
    Primitives,
    joint_part_adjacency,
    local_to_uv,
    uv_to_local,
)

_EPS = 1e-12


def intersect_local(o: torch.Tensor, d: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Entry distance ``t`` of rays with unit capsules in local coordinates.

    Args:
        o, d: (..., 3) local ray origins and (unnormalized) directions.
        h: (...) capsule half-lengths (0 = unit sphere).
    Returns:
        (...) ``t > 0`` of the first hit, ``inf`` where the ray misses (or starts inside).
    """
    # component-first contiguous copies: strided element-wise ops are several times slower
    ox, oy, oz = o.movedim(-1, 0).contiguous()
    dx, dy, dz = d.movedim(-1, 0).contiguous()
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - 1
    disc = b * b - a * c
    par = a <= _EPS
    a_safe = torch.where(par, torch.ones_like(a), a)
    t_cyl = (-b - disc.clamp_min(0).sqrt()) / a_safe
    z = oz + t_cyl * dz
    cyl_ok = (~par) & (disc >= 0) & (z.abs() <= h) & (t_cyl > 0)
    zc = torch.where(par, -torch.sign(dz) * h, torch.maximum(torch.minimum(z, h), -h))
    ocz = oz - zc
    aa = a + dz * dz
    bb = b + ocz * dz
    cc = c + ocz * ocz
    dd = bb * bb - aa * cc
    t_sph = (-bb - dd.clamp_min(0).sqrt()) / aa.clamp_min(_EPS)
    sph_ok = (dd >= 0) & (t_sph > 0) & ((disc >= 0) | par)
    inf = torch.full_like(t_cyl, float("inf"))
    return torch.where(cyl_ok, t_cyl, torch.where(sph_ok, t_sph, inf))


def _local_transforms(prims: Primitives) -> torch.Tensor:
    """A = S^-1 R^T (F, K, 3, 3): world direction -> unit-capsule local direction."""
    return prims.rot.transpose(-1, -2) / prims.scale[..., :, None]


def cast_rays(
    prims: Primitives, frame: torch.Tensor, origin: torch.Tensor, direction: torch.Tensor,
    candidates: torch.Tensor | None = None, chunk: int = 1 << 21,
) -> dict[str, torch.Tensor]:
    """Nearest hits of rays with the primitives of their frame.

    Args:
        prims: primitives of F frames (K primitives each).
        frame: (N,) frame index of each ray. origin, direction: (N, 3) world mm, unit directions.
        candidates: optional (N, K) bool, the primitives each ray may hit (e.g. those whose
            projected box contains the pixel); only these ray-primitive pairs are tested.
        chunk: ray-primitive pairs per chunk (memory bound).
    Returns:
        dict ``t`` (N,) mm (inf = miss), ``k`` (N,) primitive index (-1 = miss), ``q`` (N, 3)
        local hit point on the unit capsule.
    """
    n = frame.shape[0]
    k_num = prims.center.shape[1]
    dev = origin.device
    A = _local_transforms(prims)  # (F, K, 3, 3)
    t_out = torch.full((n,), float("inf"), device=dev, dtype=origin.dtype)
    k_out = torch.full((n,), -1, device=dev, dtype=torch.long)
    q_out = torch.zeros(n, 3, device=dev, dtype=origin.dtype)
    step = max(64, chunk // max(k_num, 1))
    for s in range(0, n, step):  # chunks of rays (memory bound), everything inside is batched
        e = min(n, s + step)
        if candidates is None:
            r = torch.arange(e - s, device=dev).repeat_interleave(k_num)
            k = torch.arange(k_num, device=dev).repeat(e - s)
        else:
            r, k = torch.nonzero(candidates[s:e], as_tuple=True)
        if r.numel() == 0:
            continue
        f = frame[s:e][r]
        Ap = A[f, k]  # (p, 3, 3)
        o_loc = (Ap @ (origin[s:e][r] - prims.center[f, k])[..., None])[..., 0]
        d_loc = (Ap @ direction[s:e][r][..., None])[..., 0]
        t = intersect_local(o_loc, d_loc, prims.h[f, k])
        t_min = torch.full((e - s,), float("inf"), device=dev, dtype=t.dtype)
        t_min = t_min.scatter_reduce(0, r, t, reduce="amin")
        win = torch.isfinite(t) & (t == t_min[r])
        rw, kw = r[win], k[win]
        q = o_loc[win] + t[win, None] * d_loc[win]
        t_out[s:e] = t_min
        k_out[s + rw] = kw
        q_out[s + rw] = q
    return {"t": t_out, "k": k_out, "q": q_out}


def surface_samples(prims: Primitives, n_around: int = 12, n_along: int = 7) -> torch.Tensor:
    """Points (F, K * S, 3) on every primitive's surface (for boxes and regions of interest)."""
    dev, dt = prims.center.device, prims.center.dtype
    u = torch.arange(n_around, device=dev, dtype=dt) / n_around
    v = torch.linspace(0, 1, n_along, device=dev, dtype=dt)
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    uu, vv = uu.reshape(-1), vv.reshape(-1)
    q = uv_to_local(uu, vv, prims.h[..., None])  # (F, K, S, 3)
    rs = prims.rot * prims.scale[..., None, :]
    pts = (rs[:, :, None] @ q[..., None])[..., 0] + prims.center[:, :, None]
    return pts.reshape(pts.shape[0], -1, 3)


@dataclass
class RenderResult:
    """Outputs of :meth:`Renderer.render` for F frames, C views, P persons, J joints.

    images (F, C, 3, H, W) float in [0, 1]; masks (F, C, H, W) uint8 (0 background, p + 1);
    depth (F, C, H, W) float32 mm camera depth (0 = background); iuv (F, C, 3, H, W) float32;
    joints2d (F, C, P, J, 2) px (distorted image); visibility (F, C, P, J) bool (inside the image
    and not occluded); bbox (F, C, P, 4) px amodal person boxes clipped to the image (zeros when
    the person is not in view); in_image (F, C, P, J) bool.
    """

    images: torch.Tensor
    masks: torch.Tensor
    depth: torch.Tensor
    iuv: torch.Tensor
    joints2d: torch.Tensor
    visibility: torch.Tensor
    bbox: torch.Tensor
    in_image: torch.Tensor


class Renderer:
    """Ray-caster for one rig: precomputes pixel rays and the static background.

    Args:
        cameras: rig of batch shape (C,) with ``image_size`` set (all views the same size).
        room: :class:`mvbook.studio.rigs.Room`; style: :class:`RoomStyle` (None: no room,
            black background).
        supersample: s; s x s rays per pixel, colours averaged, labels (mask, depth, IUV) from
            the sub-sample nearest the pixel centre.
        device: torch device. chunk: ray-primitive pairs per chunk.

    Attributes: ``background`` (C, 3, H, W) float in [0, 1]; ``timings``: seconds spent in the
    sections of the last :meth:`render` (regions, candidates, casting, shading, scatter, joints).
    """

    def __init__(
        self, cameras: Camera, room=None, style: RoomStyle | None = None, supersample: int = 1,
        device: torch.device | str = "cpu", chunk: int = 1 << 21,
    ) -> None:
        if not isinstance(cameras, Camera) or len(cameras.batch_shape) != 1:
            raise ValueError("cameras must be a Camera with batch shape (C,)")
        if cameras.image_size is None:
            raise ValueError("cameras must have image_size set")
        sizes = cameras.image_size
        if not bool((sizes == sizes[0]).all()):
            raise ValueError(f"all views must share one image size, got {sizes.tolist()}")
        if not isinstance(supersample, int) or not 1 <= supersample <= 8:
            raise ValueError(f"supersample must be an int in 1..8, got {supersample!r}")
        if not isinstance(chunk, int) or chunk < 1024:
            raise ValueError(f"chunk must be an int >= 1024, got {chunk!r}")
        self.device = torch.device(device)
        self.cameras = cameras.to(device=self.device, dtype=torch.float32)
        self.width, self.height = (int(v) for v in sizes[0].tolist())
        self.ss = supersample
        self.chunk = chunk
        W, H, s = self.width, self.height, supersample
        off = (torch.arange(s, dtype=torch.float32) + 0.5) / s - 0.5
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                                torch.arange(W, dtype=torch.float32), indexing="ij")
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        u = xs.reshape(-1, 1) + ox.reshape(1, -1)
        v = ys.reshape(-1, 1) + oy.reshape(1, -1)
        uv = torch.stack([u, v], -1).reshape(1, -1, 2).to(self.device)  # (1, HW*S, 2)
        C = self.cameras.batch_shape[0]
        _, d = self.cameras.pixel_to_ray(uv.expand(C, -1, -1))
        self.dirs = d.reshape(C, H * W, s * s, 3).contiguous()
        self.centers = self.cameras.center
        self.zaxis = self.cameras.R[:, 2, :]
        self.center_sub = (s // 2) * s + s // 2
        if style is not None and room is not None:
            cols = render_room(
                self.centers[:, None].expand(-1, H * W * s * s, -1).reshape(-1, 3),
                self.dirs.reshape(-1, 3), room, style,
            )
            bg = cols.reshape(C, H * W, s * s, 3).mean(2)
        else:
            bg = torch.zeros(C, H * W, 3, device=self.device)
        self.background = bg.reshape(C, H, W, 3).permute(0, 3, 1, 2).contiguous()  # (C,3,H,W)

    @property
    def num_views(self) -> int:
        return int(self.cameras.batch_shape[0])

    def prim_boxes(self, prims: Primitives) -> torch.Tensor:
        """Boxes (F, C, K, 4) (x0, y0, x1, y1) px of every primitive (projected surface samples).

        Unclipped; NaN where a primitive is behind a camera.
        """
        pts = surface_samples(prims)  # (F, K*S, 3)
        F_, K = prims.center.shape[:2]
        uv = self.cameras.project(pts[:, None]).reshape(F_, self.num_views, K, -1, 2)
        finite = torch.isfinite(uv).all(-1, keepdim=True)
        lo = torch.where(finite, uv, float("inf")).amin(3)
        hi = torch.where(finite, uv, -float("inf")).amax(3)
        box = torch.cat([lo, hi], -1)
        return torch.where(finite.all(3), box, float("nan"))

    def person_boxes(self, prims: Primitives, num_persons: int,
                     prim_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Amodal boxes (F, C, P, 4) (x0, y0, x1, y1) px of each person (NaN: not visible)."""
        pb = self.prim_boxes(prims) if prim_boxes is None else prim_boxes
        F_, C = pb.shape[:2]
        boxes = torch.full((F_, C, num_persons, 4), float("nan"), device=pb.device)
        for p in range(num_persons):  # a handful of persons
            sel = prims.person == p
            if not bool(sel.any()):
                continue
            b = pb[:, :, sel]
            boxes[:, :, p] = torch.cat([b[..., :2].amin(2), b[..., 2:].amax(2)], -1)
        return boxes

    @torch.no_grad()
    def render(
        self, prims: Primitives, looks: torch.Tensor, lights: torch.Tensor, joints: torch.Tensor,
        person_valid: torch.Tensor | None = None,
    ) -> RenderResult:
        """Render F frames of one scene from every view.

        Args:
            prims: primitives (F, K) of all persons (``prims.person`` in 0..P-1).
            looks: (P, LOOK_DIM) appearance vectors. lights: (F, LIGHT_DIM) lighting per frame.
            joints: (F, P, J, 3) mm joints (Human3.6M-17) of each person.
            person_valid: (P,) bool, default all True.
        """
        dev = self.device
        prims = prims.to(device=dev, dtype=torch.float32)
        looks = looks.to(dev, torch.float32)
        lights = lights.to(dev, torch.float32)
        joints = joints.to(dev, torch.float32)
        F_, P, J = joints.shape[0], joints.shape[1], joints.shape[2]
        if prims.center.shape[0] != F_ or lights.shape[0] != F_:
            raise ValueError("prims, lights and joints must have the same number of frames F")
        if person_valid is None:
            person_valid = torch.ones(P, dtype=torch.bool, device=dev)
        person_valid = person_valid.to(device=dev, dtype=torch.bool)
        if person_valid.shape != (P,):
            raise ValueError(f"person_valid must have shape ({P},), got {tuple(person_valid.shape)}")
        if looks.ndim != 2 or looks.shape[0] < int(prims.person.max()) + 1:
            raise ValueError("looks must be (P, LOOK_DIM) with a row for every person of prims")
        C, H, W, S = self.num_views, self.height, self.width, self.ss * self.ss

        tick = [time.perf_counter()]
        # ----- regions of interest: union of the persons' boxes, a pixel of margin
        pboxes = self.prim_boxes(prims)  # (F, C, K, 4)
        boxes = self.person_boxes(prims, P, pboxes)  # (F, C, P, 4)
        b = torch.nan_to_num(boxes, nan=0.0)
        valid_box = torch.isfinite(boxes).all(-1)
        inf = float("inf")
        x0 = torch.where(valid_box, b[..., 0], inf).amin(-1).floor() - 1
        y0 = torch.where(valid_box, b[..., 1], inf).amin(-1).floor() - 1
        x1 = torch.where(valid_box, b[..., 2], -inf).amax(-1).ceil() + 1
        y1 = torch.where(valid_box, b[..., 3], -inf).amax(-1).ceil() + 1
        xs = torch.arange(W, device=dev, dtype=torch.float32)
        ys = torch.arange(H, device=dev, dtype=torch.float32)
        inx = (xs >= x0[..., None]) & (xs <= x1[..., None])  # (F, C, W)
        iny = (ys >= y0[..., None]) & (ys <= y1[..., None])  # (F, C, H)
        roi = iny[..., :, None] & inx[..., None, :]  # (F, C, H, W)
        fi, ci, yi, xi = torch.nonzero(roi, as_tuple=True)
        pix = yi * W + xi
        n = pix.shape[0]

        tick.append(time.perf_counter())
        # ----- cast the sub-pixel rays of the region
        d = self.dirs[ci, pix].reshape(-1, 3)  # (n*S, 3)
        f_rep = fi.repeat_interleave(S)
        c_rep = ci.repeat_interleave(S)
        o = self.centers[c_rep]
        # candidate primitives of each pixel: those whose (1 px enlarged) box contains it
        pb = torch.nan_to_num(pboxes, nan=-1e9)
        xf, yf = xi.float()[:, None], yi.float()[:, None]
        cand = (xf >= pb[fi, ci, :, 0] - 1) & (xf <= pb[fi, ci, :, 2] + 1)
        cand &= (yf >= pb[fi, ci, :, 1] - 1) & (yf <= pb[fi, ci, :, 3] + 1)
        cand = cand.repeat_interleave(S, 0)
        tick.append(time.perf_counter())
        hits = cast_rays(prims, f_rep, o, d, cand, self.chunk)
        tick.append(time.perf_counter())
        t, k, q = hits["t"], hits["k"], hits["q"]
        hit = k >= 0
        kk = k.clamp_min(0)
        part = torch.where(hit, prims.part[kk], 0)
        person = prims.person[kk]
        u = torch.zeros_like(t)
        v = torch.zeros_like(t)
        bg = self.background.permute(0, 2, 3, 1).reshape(C, H * W, 3)[ci, pix]  # (n, 3)
        col = bg.repeat_interleave(S, 0)
        hi = torch.nonzero(hit)[:, 0]
        if hi.numel():
            fh, kh, qh = f_rep[hi], kk[hi], q[hi]
            h = prims.h[fh, kh]
            uh, vh = local_to_uv(qh, h)
            u[hi], v[hi] = uh, vh
            # normal: inverse-transpose of R S applied to the local (sphere) normal
            n_loc = torch.cat([qh[:, :2], (qh[:, 2] - torch.maximum(torch.minimum(qh[:, 2], h), -h))[:, None]], 1)
            nw = (prims.rot[fh, kh] @ (n_loc / prims.scale[fh, kh])[..., None])[..., 0]
            nw = nw / nw.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            col[hi] = shade(albedo(looks, person[hi], part[hi], uh, vh), nw, lights[fh])
        col = col.reshape(n, S, 3).mean(1)
        depth = torch.where(hit, t * (d * self.zaxis[c_rep]).sum(-1), 0.0)
        cs = torch.arange(n, device=dev) * S + self.center_sub
        mask_v = torch.where(hit[cs], person[cs] + 1, 0).to(torch.uint8)
        iuv_v = torch.stack([part[cs].float(), torch.where(hit[cs], u[cs], 0.0),
                             torch.where(hit[cs], v[cs], 0.0)], -1)

        tick.append(time.perf_counter())
        # ----- scatter into full images
        images = self.background[None].expand(F_, -1, -1, -1, -1).permute(0, 1, 3, 4, 2).clone()
        images[fi, ci, yi, xi] = col
        images = images.permute(0, 1, 4, 2, 3).contiguous()
        masks = torch.zeros(F_, C, H, W, dtype=torch.uint8, device=dev)
        masks[fi, ci, yi, xi] = mask_v
        depth_img = torch.zeros(F_, C, H, W, device=dev)
        depth_img[fi, ci, yi, xi] = depth[cs]
        iuv = torch.zeros(F_, C, H, W, 3, device=dev)
        iuv[fi, ci, yi, xi] = iuv_v
        iuv = iuv.permute(0, 1, 4, 2, 3).contiguous()

        tick.append(time.perf_counter())
        # ----- joints: projection, visibility by casting a ray to each joint
        j2d, jdepth = self.cameras.project_with_depth(joints.reshape(F_, 1, P * J, 3))
        j2d = j2d.reshape(F_, C, P, J, 2)
        jdepth = jdepth.reshape(F_, C, P, J)
        in_image = (
            (jdepth > 0) & (j2d[..., 0] >= -0.5) & (j2d[..., 0] <= W - 0.5)
            & (j2d[..., 1] >= -0.5) & (j2d[..., 1] <= H - 0.5) & person_valid[None, None, :, None]
        )
        jw = joints[:, None].expand(-1, C, -1, -1, -1).reshape(-1, 3)
        oc = self.centers[None, :, None, None].expand(F_, -1, P, J, -1).reshape(-1, 3)
        vec = jw - oc
        dist = vec.norm(dim=-1)
        fj = torch.arange(F_, device=dev)[:, None, None, None].expand(-1, C, P, J).reshape(-1)
        jh = cast_rays(prims, fj, oc, vec / dist[:, None].clamp_min(1e-9), None, self.chunk)
        adj = joint_part_adjacency(dev)  # (17, NUM_PARTS + 1)
        jk = jh["k"].clamp_min(0)
        jpart = torch.where(jh["k"] >= 0, prims.part[jk], 0)
        jpers = prims.person[jk]
        pj = torch.arange(P, device=dev)[None, None, :, None].expand(F_, C, -1, J).reshape(-1)
        jj = torch.arange(J, device=dev)[None, None, None, :].expand(F_, C, P, -1).reshape(-1)
        if J == adj.shape[0]:
            own = (jh["k"] >= 0) & (jpers == pj) & adj[jj, jpart]
        else:  # other skeletons: only the owner and depth can be checked
            own = (jh["k"] >= 0) & (jpers == pj)
        unoccluded = own | (jh["t"] >= dist - 1.0)
        visibility = in_image & unoccluded.reshape(F_, C, P, J)
        bbox = torch.stack([
            b[..., 0].clamp(-0.5, W - 0.5), b[..., 1].clamp(-0.5, H - 0.5),
            b[..., 2].clamp(-0.5, W - 0.5), b[..., 3].clamp(-0.5, H - 0.5)], -1)
        empty = ~valid_box | (bbox[..., 2] <= bbox[..., 0]) | (bbox[..., 3] <= bbox[..., 1])
        bbox = torch.where(empty[..., None], 0.0, bbox)
        j2d = torch.where((jdepth > 0)[..., None] & person_valid[None, None, :, None, None],
                          torch.nan_to_num(j2d), 0.0)
        tick.append(time.perf_counter())
        self.timings = [b - a for a, b in zip(tick[:-1], tick[1:])]
        return RenderResult(images, masks, depth_img, iuv, j2d, visibility, bbox, in_image)


__all__ = ["NUM_PARTS", "RenderResult", "Renderer", "cast_rays", "intersect_local",
           "surface_samples"]
