"""A batched pinhole camera with radial-tangential distortion.

Conventions (DESIGN.md): world units mm, world z up; ``x_cam = R @ X + t``;
``P = K [R | t]``; pixel ``(u, v)`` with ``(0, 0)`` the centre of the top-left pixel, ``u``
right, ``v`` down; image size ``(width, height)``. The camera looks along its ``+z`` axis,
``+x`` is image right and ``+y`` image down.

A :class:`Camera` holds tensors with any batch shape ``B`` (one camera, a rig of ``C``
views, a batch of rigs ``(batch, C)``, ...). Methods that take points ``(..., N, d)``
broadcast the points' leading dims ``...`` against ``B``: with a rig of batch ``(C,)``,
``cams.project(X[..., None, :, :])`` projects ``(..., J, 3)`` joints into every view and
returns ``(..., C, J, 2)``. Everything is differentiable with respect to the tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..validation import (
    as_float_tensor,
    broadcast_batch,
    check_finite,
    check_shape,
    common_float_dtype,
)
from .projection import (
    _camera_to_pixel,
    _check_points,
    normalized_to_pixel,
    pixel_to_normalized,
    undistort_normalized,
)

__all__ = ["Camera"]


def _as_size(value: Any, name: str, device: torch.device) -> torch.Tensor:
    """Image sizes ``(..., 2)`` (width, height) as an int64 tensor of positive pixel counts."""
    size = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if size.dtype == torch.bool or size.is_complex():
        raise TypeError(f"{name} must hold pixel counts (width, height), got dtype {size.dtype}")
    check_shape(size, name, "(..., 2) = (width, height)")
    if size.is_floating_point():
        size = torch.round(size.detach())
    size = size.to(device=device, dtype=torch.int64)
    if bool((size <= 0).any()):
        raise ValueError(f"{name} must be positive (width, height), got {size.tolist()}")
    return size


class Camera:
    """Batched calibrated camera ``P = K [R | t]`` with optional lens distortion.

    Args:
        K: ``(B..., 3, 3)`` intrinsics in pixels (upper triangular, ``K[2, 2] = 1``).
        R: ``(B..., 3, 3)`` world-to-camera rotation (``det R = +1``).
        t: ``(B..., 3)`` translation in mm, ``x_cam = R X + t``.
        dist: ``(B..., 5)`` distortion ``(k1, k2, p1, p2, k3)`` (OpenCV / Human3.6M model, see
            :mod:`mvbook.geometry.projection`) or ``None`` for an ideal pinhole.
        image_size: ``(B..., 2)`` ``(width, height)`` in pixels or ``None``; stored as int64.

    The batch shapes of the arguments broadcast to :attr:`batch_shape`. Floating inputs are
    promoted to one dtype; integer inputs become that dtype. NaN or infinite values in ``K``,
    ``R``, ``t`` or ``dist`` raise ``ValueError`` naming the argument.
    """

    def __init__(
        self,
        K: Any,
        R: Any,
        t: Any,
        dist: Any | None = None,
        image_size: Any | None = None,
    ) -> None:
        device = None
        for value in (K, R, t, dist):
            if isinstance(value, torch.Tensor):
                device = value.device
                break
        K = as_float_tensor(K, "K", device=device)
        R = as_float_tensor(R, "R", device=device)
        t = as_float_tensor(t, "t", device=device)
        dist_t = None if dist is None else as_float_tensor(dist, "dist", device=device)
        for name, value in (("R", R), ("t", t), ("dist", dist_t)):
            if value is not None and value.device != K.device:
                raise ValueError(f"{name} is on {value.device} but K is on {K.device}")
        dtype = common_float_dtype(K, R, t, dist_t)
        check_shape(K, "K", "(..., 3, 3)")
        check_shape(R, "R", "(..., 3, 3)")
        check_shape(t, "t", "(..., 3)")
        shapes = {"K": tuple(K.shape[:-2]), "R": tuple(R.shape[:-2]), "t": tuple(t.shape[:-1])}
        if dist_t is not None:
            check_shape(dist_t, "dist", "(..., 5) = (k1, k2, p1, p2, k3)")
            shapes["dist"] = tuple(dist_t.shape[:-1])
        size_t = None
        if image_size is not None:
            size_t = _as_size(image_size, "image_size", K.device)
            shapes["image_size"] = tuple(size_t.shape[:-1])
        batch = broadcast_batch(shapes)
        for name, value in (("K", K), ("R", R), ("t", t), ("dist", dist_t)):
            if value is not None:
                check_finite(value.detach(), name)
        self.K = K.to(dtype).expand(*batch, 3, 3)
        self.R = R.to(dtype).expand(*batch, 3, 3)
        self.t = t.to(dtype).expand(*batch, 3)
        self.dist = None if dist_t is None else dist_t.to(dtype).expand(*batch, 5)
        self.image_size = None if size_t is None else size_t.expand(*batch, 2)

    # ------------------------------------------------------------------ basic properties
    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``B`` of the camera tensors."""
        return self.K.shape[:-2]

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    @property
    def P(self) -> torch.Tensor:
        """Projection matrices ``K [R | t]``, shape ``(B..., 3, 4)`` (undistorted pixels)."""
        return self.K @ torch.cat([self.R, self.t[..., None]], dim=-1)

    @property
    def center(self) -> torch.Tensor:
        """Camera centres in world coordinates ``-R^T t``, shape ``(B..., 3)`` mm."""
        return -(self.R.transpose(-1, -2) @ self.t[..., None])[..., 0]

    @property
    def focal(self) -> torch.Tensor:
        """Focal lengths ``(fx, fy)`` in pixels, shape ``(B..., 2)``."""
        return torch.stack([self.K[..., 0, 0], self.K[..., 1, 1]], dim=-1)

    @property
    def principal(self) -> torch.Tensor:
        """Principal point ``(cx, cy)`` in pixels, shape ``(B..., 2)``."""
        return torch.stack([self.K[..., 0, 2], self.K[..., 1, 2]], dim=-1)

    def __len__(self) -> int:
        if len(self.batch_shape) == 0:
            raise TypeError("len() of an unbatched Camera")
        return self.batch_shape[0]

    def __repr__(self) -> str:
        size = None if self.image_size is None else "set"
        return (
            f"Camera(batch_shape={tuple(self.batch_shape)}, dtype={self.dtype}, "
            f"device={self.device}, dist={'set' if self.dist is not None else None}, "
            f"image_size={size})"
        )

    def _replace(self, **changes: Any) -> Camera:
        fields = {"K": self.K, "R": self.R, "t": self.t, "dist": self.dist,
                  "image_size": self.image_size}
        fields.update(changes)
        return Camera(**fields)

    def to(self, *args: Any, **kwargs: Any) -> Camera:
        """Like ``Tensor.to``: move/cast the floating tensors; ``image_size`` follows the device."""
        K = self.K.to(*args, **kwargs)
        if not K.is_floating_point():
            raise TypeError(f"Camera.to: cameras need a floating dtype, got {K.dtype}")
        return Camera(
            K,
            self.R.to(*args, **kwargs),
            self.t.to(*args, **kwargs),
            None if self.dist is None else self.dist.to(*args, **kwargs),
            None if self.image_size is None else self.image_size.to(K.device),
        )

    def detach(self) -> Camera:
        """A camera whose tensors are detached from the autograd graph."""
        return Camera(self.K.detach(), self.R.detach(), self.t.detach(),
                      None if self.dist is None else self.dist.detach(), self.image_size)

    def __getitem__(self, index: Any) -> Camera:
        """Index the batch dims (ints, slices, masks, index tensors, ``None``, ``...``)."""
        if len(self.batch_shape) == 0:
            raise IndexError("cannot index an unbatched Camera (batch_shape is ())")
        flat = torch.arange(self.batch_shape.numel(), device=self.device).reshape(self.batch_shape)
        sel = flat[index]
        new_batch = sel.shape
        sel = sel.reshape(-1)

        def take(x: torch.Tensor | None, tail: tuple[int, ...]) -> torch.Tensor | None:
            if x is None:
                return None
            return x.reshape(-1, *tail)[sel].reshape(*new_batch, *tail)

        return Camera(take(self.K, (3, 3)), take(self.R, (3, 3)), take(self.t, (3,)),
                      take(self.dist, (5,)), take(self.image_size, (2,)))

    @staticmethod
    def stack(cameras: Sequence[Camera], dim: int = 0) -> Camera:
        """Stack cameras of equal batch shape along a new batch dim ``dim``.

        Cameras without distortion get zero coefficients when others have some; image sizes
        must be given for all or none.
        """
        cams = list(cameras)
        if not cams or not all(isinstance(c, Camera) for c in cams):
            raise ValueError("cameras must be a non-empty sequence of Camera")
        shape = cams[0].batch_shape
        if any(c.batch_shape != shape for c in cams):
            raise ValueError(
                f"cameras must share one batch shape, got {[tuple(c.batch_shape) for c in cams]}"
            )
        nd = len(shape)
        if not -(nd + 1) <= dim <= nd:
            raise ValueError(f"dim must be in [{-(nd + 1)}, {nd}] for batch shape {tuple(shape)}")
        d = dim if dim >= 0 else dim + nd + 1
        dtype = common_float_dtype(*[c.K for c in cams])
        K = torch.stack([c.K.to(dtype) for c in cams], dim=d)
        R = torch.stack([c.R.to(dtype) for c in cams], dim=d)
        t = torch.stack([c.t.to(dtype) for c in cams], dim=d)
        dist = None
        if any(c.dist is not None for c in cams):
            dist = torch.stack(
                [c.dist.to(dtype) if c.dist is not None else c.t.new_zeros((*shape, 5)).to(dtype)
                 for c in cams], dim=d)
        sizes = [c.image_size is not None for c in cams]
        if any(sizes) and not all(sizes):
            raise ValueError("cameras must all have image_size or all have None")
        size = torch.stack([c.image_size for c in cams], dim=d) if all(sizes) else None
        return Camera(K, R, t, dist, size)

    @staticmethod
    def from_sample(sample: Mapping[str, Any]) -> Camera:
        """Build the rig of one sample (or a collated batch) of the common multiview format.

        Reads keys ``"K"``, ``"R"``, ``"t"`` and, when present, ``"dist"`` and ``"image_size"``.
        """
        for key in ("K", "R", "t"):
            if key not in sample:
                raise ValueError(f"sample is missing key {key!r} (needs K, R, t)")
        return Camera(sample["K"], sample["R"], sample["t"], sample.get("dist"),
                      sample.get("image_size"))

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def look_at(
        eye: Any,
        target: Any,
        up: Any = (0.0, 0.0, 1.0),
        focal: Any = 1000.0,
        image_size: Any = (1000, 1000),
        principal: Any | None = None,
        dist: Any | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> Camera:
        """A camera at ``eye`` (mm) looking at ``target`` with world ``up`` at the image top.

        Args:
            eye, target: ``(B..., 3)`` world points in mm.
            up: ``(B..., 3)`` world up direction (default ``+z``); must not be parallel to
                the viewing direction.
            focal: focal length in pixels: a number, ``(B...,)`` (one per camera; a tensor
                whose shape equals the camera batch shape is read this way) or ``(B..., 2)``
                ``(fx, fy)``.
            image_size: ``(width, height)`` pixels, ``(B..., 2)``.
            principal: ``(B..., 2)`` principal point; default the image centre
                ``((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integers).
            dist: ``(B..., 5)`` distortion or ``None``.
        """
        dev = torch.device(device) if device is not None else None
        eye_t = as_float_tensor(eye, "eye", dtype=dtype, device=dev)
        dtype = dtype or eye_t.dtype
        dev = eye_t.device
        target_t = as_float_tensor(target, "target", dtype=dtype, device=dev)
        up_t = as_float_tensor(up, "up", dtype=dtype, device=dev)
        check_shape(eye_t, "eye", "(..., 3)")
        check_shape(target_t, "target", "(..., 3)")
        check_shape(up_t, "up", "(..., 3)")
        vshape = broadcast_batch({"eye": tuple(eye_t.shape[:-1]), "target": tuple(target_t.shape[:-1]),
                                  "up": tuple(up_t.shape[:-1])})
        eye_t = eye_t.expand(*vshape, 3)
        target_t = target_t.expand(*vshape, 3)
        up_t = up_t.expand(*vshape, 3)
        forward = target_t - eye_t
        fnorm = forward.norm(dim=-1, keepdim=True)
        if bool((fnorm <= 0).any()):
            raise ValueError("eye and target must differ (the viewing direction is undefined)")
        z = forward / fnorm
        x = torch.linalg.cross(z, up_t)
        xnorm = x.norm(dim=-1, keepdim=True)
        unorm = up_t.norm(dim=-1, keepdim=True)
        if bool((xnorm <= 1e-9 * unorm).any()) or bool((unorm <= 0).any()):
            raise ValueError("up must not be parallel to the viewing direction (target - eye)")
        x = x / xnorm
        y = torch.linalg.cross(z, x)
        R = torch.stack([x, y, z], dim=-2)
        t = -(R @ eye_t[..., None])[..., 0]
        size = _as_size(image_size, "image_size", dev)
        f = as_float_tensor(focal, "focal", dtype=dtype, device=dev)
        if f.dim() == 0 or f.shape[-1] != 2 or (len(vshape) > 0 and tuple(f.shape) == tuple(vshape)):
            f = torch.stack([f, f], dim=-1)  # one focal length per camera
        if bool((f <= 0).any()):
            raise ValueError(f"focal must be positive, got {f.tolist()}")
        if principal is None:
            c = (size.to(dtype) - 1) / 2
        else:
            c = as_float_tensor(principal, "principal", dtype=dtype, device=dev)
            check_shape(c, "principal", "(..., 2)")
        batch = broadcast_batch({"eye/target/up": tuple(R.shape[:-2]), "focal": tuple(f.shape[:-1]),
                                 "principal": tuple(c.shape[:-1])})
        f = f.expand(*batch, 2)
        c = c.expand(*batch, 2)
        zero = torch.zeros_like(f[..., 0])
        one = torch.ones_like(f[..., 0])
        K = torch.stack([
            torch.stack([f[..., 0], zero, c[..., 0]], dim=-1),
            torch.stack([zero, f[..., 1], c[..., 1]], dim=-1),
            torch.stack([zero, zero, one], dim=-1),
        ], dim=-2)
        return Camera(K, R, t, dist if dist is None else as_float_tensor(dist, "dist", dtype=dtype,
                                                                         device=dev), size)

    @staticmethod
    def from_projection(P: Any, image_size: Any | None = None) -> Camera:
        """Decompose projection matrices ``P ~ K [R | t]`` (RQ decomposition).

        ``P`` is defined up to a non-zero scale (of either sign). The result has positive focal
        lengths (positive diagonal of ``K``), ``K[2, 2] = 1``, ``det R = +1`` and reproduces
        ``P`` up to that scale; no distortion. Raises ``ValueError`` if the left 3x3 block of
        ``P`` is singular (not a finite camera).

        Args:
            P: ``(B..., 3, 4)`` projection matrices (pixels from mm).
            image_size: optional ``(B..., 2)`` ``(width, height)``.
        """
        P = as_float_tensor(P, "P")
        check_shape(P, "P", "(..., 3, 4)")
        M = P[..., :3]
        det = torch.linalg.det(M)
        scale = M.abs().amax(dim=(-1, -2)).clamp_min(torch.finfo(P.dtype).tiny)
        if bool((det.abs() <= 1e-12 * scale**3).any()) or not bool(torch.isfinite(P).all()):
            raise ValueError("P must be finite with a non-singular left 3x3 block (a finite camera)")
        sign = torch.sign(det)[..., None, None]
        P = P * sign
        M = P[..., :3]
        # RQ via QR of the row-reversed transpose: M = K Q, K upper triangular, Q orthonormal.
        flip = torch.flip(torch.eye(3, dtype=P.dtype, device=P.device), dims=(0,))
        q, r = torch.linalg.qr((flip @ M).transpose(-1, -2))
        K = flip @ r.transpose(-1, -2) @ flip
        Rm = flip @ q.transpose(-1, -2)
        d = torch.sign(torch.diagonal(K, dim1=-2, dim2=-1))
        d = torch.where(d == 0, torch.ones_like(d), d)
        K = K * d[..., None, :]
        Rm = Rm * d[..., :, None]
        t = torch.linalg.solve(K, P[..., 3:])[..., 0]
        K = K / K[..., 2:3, 2:3]
        return Camera(K, Rm, t, None, image_size)

    # ------------------------------------------------------------------ transforms
    def _check_points(self, X: Any, name: str, d: int) -> torch.Tensor:
        X = _check_points(as_float_tensor(X, name, device=self.device), name, d)
        X = X.to(torch.promote_types(X.dtype, self.dtype))
        broadcast_batch({name: tuple(X.shape[:-2]), "camera": tuple(self.batch_shape)})
        return X

    def world_to_camera(self, X: Any) -> torch.Tensor:
        """World points ``(..., N, 3)`` mm to camera frame ``R X + t``, ``(..., N, 3)`` mm."""
        X = self._check_points(X, "X", 3)
        return X @ self.R.to(X.dtype).transpose(-1, -2) + self.t.to(X.dtype)[..., None, :]

    def camera_to_world(self, Xc: Any) -> torch.Tensor:
        """Camera-frame points ``(..., N, 3)`` mm to world ``R^T (Xc - t)``."""
        Xc = self._check_points(Xc, "Xc", 3)
        return (Xc - self.t.to(Xc.dtype)[..., None, :]) @ self.R.to(Xc.dtype)

    def camera_to_pixel(self, Xc: Any, distort: bool = True) -> torch.Tensor:
        """Camera-frame points ``(..., N, 3)`` to pixels ``(..., N, 2)`` (NaN where ``Z_c <= 0``)."""
        Xc = self._check_points(Xc, "Xc", 3)
        return _camera_to_pixel(Xc, self.K, self.dist if distort else None, False)

    def project(self, X: Any, distort: bool = True) -> torch.Tensor:
        """Project world points ``(..., N, 3)`` mm to pixels ``(..., N, 2)``.

        ``distort=False`` gives the ideal pinhole image (what ``P`` maps to). Points on or
        behind the camera plane (depth ``<= 0``) give NaN; see :meth:`project_with_depth`.
        """
        return self.camera_to_pixel(self.world_to_camera(X), distort=distort)

    def project_with_depth(self, X: Any, distort: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`project` but also return the depth ``Z_c`` ``(..., N)`` in mm."""
        Xc = self.world_to_camera(X)
        uv, depth = _camera_to_pixel(Xc, self.K, self.dist if distort else None, True)
        return uv, depth

    def pixel_to_normalized(self, uv: Any, undistort: bool = True) -> torch.Tensor:
        """Pixels ``(..., N, 2)`` to normalized camera coordinates ``(x, y)`` (``Z_c = 1``)."""
        uv = self._check_points(uv, "uv", 2)
        xn = pixel_to_normalized(uv, self.K.to(uv.dtype))
        if undistort and self.dist is not None:
            xn = undistort_normalized(xn, self.dist.to(uv.dtype))
        return xn

    def undistort_points(self, uv: Any) -> torch.Tensor:
        """Distorted pixels ``(..., N, 2)`` to ideal pinhole pixels (same ``K``)."""
        uv = self._check_points(uv, "uv", 2)
        if self.dist is None:
            return uv
        return normalized_to_pixel(self.pixel_to_normalized(uv, True), self.K.to(uv.dtype))

    def pixel_to_camera(self, uv: Any, depth: Any, undistort: bool = True) -> torch.Tensor:
        """Back-project pixels ``(..., N, 2)`` at depths ``(..., N)`` mm to camera frame."""
        xn = self.pixel_to_normalized(uv, undistort)
        depth = as_float_tensor(depth, "depth", dtype=xn.dtype, device=self.device)
        try:
            torch.broadcast_shapes(depth.shape, xn.shape[:-1])
        except RuntimeError as exc:
            raise ValueError(f"depth must broadcast to (..., N) = {tuple(xn.shape[:-1])}, got "
                             f"{tuple(depth.shape)}") from exc
        xh = torch.cat([xn, torch.ones_like(xn[..., :1])], dim=-1)
        return xh * depth[..., None]

    def pixel_to_world(self, uv: Any, depth: Any, undistort: bool = True) -> torch.Tensor:
        """Back-project pixels at camera depths ``Z_c`` (mm) to world points ``(..., N, 3)``."""
        return self.camera_to_world(self.pixel_to_camera(uv, depth, undistort))

    def pixel_to_ray(self, uv: Any, undistort: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through pixels in the world frame.

        Args:
            uv: ``(..., N, 2)`` pixels (as seen in the distorted image when ``undistort``).

        Returns:
            ``(origin, direction)``, both ``(..., N, 3)``: the camera centre (mm) and unit
            directions, so ``origin + s * direction`` (``s > 0``, mm) projects to ``uv``.
        """
        xn = self.pixel_to_normalized(uv, undistort)
        xh = torch.cat([xn, torch.ones_like(xn[..., :1])], dim=-1)
        d = xh @ self.R.to(xn.dtype)
        d = d / d.norm(dim=-1, keepdim=True)
        origin = self.center.to(xn.dtype)[..., None, :].expand_as(d)
        return origin, d

    # ------------------------------------------------------------------ image operations
    def crop(self, box: Any, output_size: Any | None = None) -> Camera:
        """The camera of an image crop, optionally resized (Honari et al. eq. 6).

        Args:
            box: ``(B..., 4)`` ``(x0, y0, x1, y1)`` in pixels: the crop holds the pixels
                ``image[y0:y1, x0:x1]`` (slice bounds; pixel centres are at integers), so
                the principal point shifts by ``(x0, y0)``. Sub-pixel boxes are allowed.
            output_size: optional ``(width, height)`` the crop is resized to; the focal lengths
                and principal point are scaled by ``output / (x1 - x0, y1 - y0)`` about pixel
                corners (see :meth:`resize`). Without it the new ``image_size`` is the box size
                (rounded).

        Returns:
            A new :class:`Camera` (same ``R``, ``t``, ``dist``). For a crop ``(x0, y0)`` with
            scale ``s`` this is ``K_p = [[s fx, 0, s(cx - x0 + 1/2) - 1/2], ...]``: eq. 6 of
            Honari et al. written with pixel centres at integer coordinates.
        """
        box_t = as_float_tensor(box, "box", dtype=self.dtype, device=self.device)
        check_shape(box_t, "box", "(..., 4) = (x0, y0, x1, y1)")
        broadcast_batch({"box": tuple(box_t.shape[:-1]), "camera": tuple(self.batch_shape)})
        wh = box_t[..., 2:] - box_t[..., :2]
        if bool((wh <= 0).any()):
            raise ValueError("box must have x1 > x0 and y1 > y0")
        K = _shift_K(self.K, box_t[..., :2])
        if output_size is None:
            return self._replace(K=K, image_size=wh.detach().round().clamp_min(1))
        out = _as_size(output_size, "output_size", self.device)
        scale = out.to(self.dtype) / wh
        return self._replace(K=_scale_K(K, scale), image_size=out)

    def resize(self, image_size: Any) -> Camera:
        """The camera of the image resized to ``image_size = (width, height)`` pixels.

        The pixel grid is scaled about pixel corners (as ``cv2.resize`` and
        ``torch.nn.functional.interpolate(..., align_corners=False)`` do):
        ``u' = s_x (u + 1/2) - 1/2`` with ``s_x = W' / W``; so ``fx' = s_x fx`` and
        ``cx' = s_x (cx + 1/2) - 1/2``. Requires :attr:`image_size`.
        """
        if self.image_size is None:
            raise ValueError("resize needs the camera's image_size (it is None)")
        new = _as_size(image_size, "image_size", self.device)
        broadcast_batch({"image_size": tuple(new.shape[:-1]), "camera": tuple(self.batch_shape)})
        scale = new.to(self.dtype) / self.image_size.to(self.dtype)
        return self._replace(K=_scale_K(self.K, scale), image_size=new)


def _shift_K(K: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``T @ K`` with ``T = [[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]`` (image origin moved)."""
    x0, y0 = offset[..., 0], offset[..., 1]
    zero = torch.zeros_like(x0)
    one = torch.ones_like(x0)
    T = torch.stack([
        torch.stack([one, zero, -x0], dim=-1),
        torch.stack([zero, one, -y0], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    ], dim=-2)
    return T @ K


def _scale_K(K: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``T @ K`` with ``T = [[sx, 0, (sx - 1)/2], [0, sy, (sy - 1)/2], [0, 0, 1]]``."""
    sx, sy = scale[..., 0], scale[..., 1]
    zero = torch.zeros_like(sx)
    one = torch.ones_like(sx)
    T = torch.stack([
        torch.stack([sx, zero, (sx - 1) / 2], dim=-1),
        torch.stack([zero, sy, (sy - 1) / 2], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    ], dim=-2)
    return T @ K
