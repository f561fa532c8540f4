"""Person crops: one pixel convention for every method.

Every method of the book looks at people through square crops resampled to a fixed size, and
projects into those crops with the crop's own camera. This module holds the four pieces, so
that crops, crop cameras and 2D labels can never disagree:

- :func:`square_boxes`: square boxes around person boxes, enlarged by a scale;
- :func:`crop_person`: all of the below for one person in every view of a sample (crops, the
  crops' pinhole cameras, 2D labels), undistorting when the cameras have lens distortion;
- :func:`crop_camera` / :func:`crop_points`: the camera of a crop (through
  :meth:`mvbook.geometry.Camera.crop`) and the same map applied to pixel coordinates;
- :func:`paste_crops`: crops put back into their frames (the inverse of :func:`crop_images`);
- :func:`crop_images`: bilinear resampling of the boxes (anti-aliased by supersampling when
  the crop shrinks the image); given the images' cameras with lens distortion, it samples
  through the distortion model, so that the crops are undistorted pinhole images
  (:func:`undistort_boxes` and :func:`mvbook.geometry.undistort_points` bring boxes and 2D
  labels into the same undistorted pixels);
- :func:`warp_crops` / :func:`random_warps`: rotations, scalings and shifts of crops about their
  centre with the same map applied to 2D labels (geometric augmentation);
- :func:`normalize_images`: uint8 images to the network input, with the book's one set of
  per-channel statistics (:data:`IMAGE_MEAN`, :data:`IMAGE_STD`);
- :func:`heatmap_to_crop` / :func:`crop_to_heatmap`: a network's heatmap pixels to crop
  pixels and back (a resize, :meth:`mvbook.geometry.Camera.resize`).

**The convention** (the one of DESIGN and :class:`mvbook.geometry.Camera`): pixel ``(0, 0)`` is
the centre of the top-left pixel. A box ``(x0, y0, x1, y1)`` holds the pixels
``image[y0:y1, x0:x1]`` (slice bounds; sub-pixel values allowed), so it covers the continuous
extent ``[x0 - 1/2, x1 - 1/2] x [y0 - 1/2, y1 - 1/2]``. Resampled to ``S x S``, crop pixel
``i`` is centred at ``u = x0 - 1/2 + (i + 1/2) (x1 - x0) / S`` and a point maps as
``u' = (u - x0 + 1/2) S / (x1 - x0) - 1/2``: the crop camera ``K' = A K`` of eq. 6 of Honari
et al. written with pixel centres at integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from mvbook.geometry import Camera, undistort_points
from mvbook.geometry.projection import distort_normalized, normalized_to_pixel, pixel_to_normalized
from mvbook.validation import check_choice, check_shape, check_tensor

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "square_boxes",
    "crop_camera",
    "crop_points",
    "crop_images",
    "paste_crops",
    "undistort_boxes",
    "PersonCrops",
    "crop_person",
    "warp_crops",
    "random_warps",
    "normalize_images",
    "occlude",
    "heatmap_to_crop",
    "crop_to_heatmap",
]

#: Per-channel (R, G, B) mean and standard deviation of images in [0, 1] that
#: :func:`normalize_images` removes: the ImageNet statistics, which the studio's images are close
#: to and which published 2D backbones expect.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def square_boxes(bbox: torch.Tensor, scale: float = 1.25, min_side: float = 8.0) -> torch.Tensor:
    """Square boxes centred on ``bbox``, side ``scale x`` its longer side (at least ``min_side``).

    Args:
        bbox: ``(..., 4)`` ``(x0, y0, x1, y1)`` px person boxes.
        scale: how much larger than the person the crop is (> 0).
        min_side: the smallest side before scaling, px (guards empty or one-pixel boxes).

    Returns:
        ``(..., 4)`` square boxes in the same convention and dtype as ``bbox``.
    """
    check_tensor(bbox, "bbox", floating=True)
    check_shape(bbox, "bbox", "(..., 4)")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    centre = 0.5 * (bbox[..., :2] + bbox[..., 2:])
    side = (bbox[..., 2:] - bbox[..., :2]).amax(-1, keepdim=True).clamp_min(min_side) * scale
    return torch.cat([centre - side / 2, centre + side / 2], dim=-1)


def crop_camera(camera: Camera, boxes: torch.Tensor, size: int) -> Camera:
    """The camera of ``boxes`` of ``camera``'s image resampled to ``size x size`` pixels.

    Args:
        camera: a :class:`mvbook.geometry.Camera` of batch shape ``(...)``.
        boxes: ``(..., 4)`` px (slice bounds, see the module docstring).
        size: side ``S`` of the square crop, px.

    Returns:
        ``camera.crop(boxes, (S, S))``: same ``R``, ``t``, ``dist``; ``K' = A K``.
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a mvbook.geometry.Camera, got {type(camera).__name__}")
    _check_size(size, "size")
    return camera.crop(boxes, (size, size))


def crop_points(uv: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Image pixels to crop pixels: the map of :func:`crop_camera` applied to points.

    Args:
        uv: ``(..., N, 2)`` image px; boxes: ``(..., 4)`` px; size: ``S``.

    Returns:
        ``(..., N, 2)`` crop px, ``u' = (u - x0 + 1/2) S / w - 1/2`` (and likewise ``v``).
    """
    check_shape(uv, "uv", "(..., N, 2)")
    check_shape(boxes, "boxes", "(..., 4)")
    _check_size(size, "size")
    wh = boxes[..., 2:] - boxes[..., :2]
    scale = size / wh
    return (uv - boxes[..., None, :2] + 0.5) * scale[..., None, :] - 0.5


def undistort_boxes(boxes: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Boxes ``(..., 4)`` of distorted images to the undistorted pixels of the same ``K``: the
    bounding box of the undistorted corners and edge midpoints (unchanged without ``dist``)."""
    check_shape(boxes, "boxes", "(..., 4)")
    if camera.dist is None:
        return boxes
    x0, y0, x1, y1 = boxes.unbind(-1)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    xs = torch.stack([x0, xm, x1, x1, x1, xm, x0, x0], -1)
    ys = torch.stack([y0, y0, y0, ym, y1, y1, y1, ym], -1)
    # the box holds pixels x0..x1 - 1: its outline runs through pixel centres x0 - 1/2 .. x1 - 1/2
    pts = torch.stack([xs, ys], -1) - 0.5
    und = undistort_points(pts.to(camera.dtype), camera.K, camera.dist).to(boxes.dtype) + 0.5
    return torch.cat([und.amin(-2), und.amax(-2)], -1)


class PersonCrops(NamedTuple):
    """One person seen by every view, cut out by :func:`crop_person`.

    ``images (C, 3, S, S)``; ``camera``: the crops' pinhole cameras (batch ``(C,)``, no
    distortion: project with ``camera.P``); ``joints2d (C, J, 2)`` crop px; ``boxes (C, 4)``
    the square boxes in (undistorted) image px, for :func:`crop_camera` at other resolutions.
    """

    images: torch.Tensor
    camera: Camera
    joints2d: torch.Tensor
    boxes: torch.Tensor


def crop_person(images: torch.Tensor, camera: Camera, bbox: torch.Tensor, joints2d: torch.Tensor,
                size: int, scale: float) -> PersonCrops:
    """Square crops of one person in every view, undistorted when the cameras have distortion.

    Args:
        images: ``(C, 3, H, W)``; camera: batch ``(C,)``; bbox: ``(C, 4)`` the person's boxes
            and joints2d: ``(C, J, 2)`` its joints, both in the (distorted) image px;
        size: crop side ``S``; scale: box enlargement (:func:`square_boxes`).
    """
    check_shape(images, "images", "(C, 3, H, W)")
    check_shape(bbox, "bbox", f"({images.shape[0]}, 4)")
    check_shape(joints2d, "joints2d", f"({images.shape[0]}, J, 2)")
    bbox, uv = bbox.to(torch.promote_types(bbox.dtype, torch.float32)), joints2d
    if camera.dist is not None and bool(camera.dist.abs().max() > 0):
        bbox = undistort_boxes(bbox, camera)
        uv = undistort_points(uv.to(camera.dtype), camera.K, camera.dist)
    else:
        camera = Camera(camera.K, camera.R, camera.t, None, camera.image_size)
    box = square_boxes(bbox, scale)
    crops = crop_images(images, box, size, camera=camera)
    pinhole = Camera(camera.K, camera.R, camera.t, None, camera.image_size)
    return PersonCrops(crops, crop_camera(pinhole, box.to(camera.dtype), size),
                       crop_points(uv, box.to(uv.dtype), size), box)


def crop_images(
    images: torch.Tensor, boxes: torch.Tensor, size: int, supersample: int | None = None,
    mode: str = "bilinear", camera: Camera | None = None,
) -> torch.Tensor:
    """Resample ``boxes`` of ``images`` to ``size x size`` crops (bilinear, zeros outside).

    Each crop pixel averages ``supersample^2`` bilinear samples spread evenly over its area, which
    removes aliasing when the crop shrinks the image; by default ``supersample`` is the largest
    shrink factor of the batch rounded up (at most 4). Sampling points follow the module's
    convention, so the crop of an image is what :func:`crop_camera` sees.

    Args:
        images: ``(N, 3, H, W)`` uint8 or float.
        boxes: ``(N, 4)`` px.
        size: side ``S`` of the crops.
        supersample: samples per crop pixel side (>= 1) or None.
        mode: ``"bilinear"``, or ``"nearest"`` for label maps (part indices, surface
            coordinates): each crop pixel takes the image pixel under its centre, no averaging.
        camera: the ``(N,)`` cameras of ``images``. With lens distortion (``camera.dist``), the
            crops are undistorted: ``boxes`` are in undistorted pixels (:func:`undistort_boxes`),
            each sample point ``u`` is moved to ``K distort(K^-1 u)`` before sampling, and the
            crop's camera is the pinhole ``crop_camera(camera, boxes, size)`` without ``dist``.

    Returns:
        ``(N, 3, S, S)`` in the dtype of ``images`` (uint8 is rounded and clamped).
    """
    check_shape(images, "images", "(N, 3, H, W)")
    check_choice(mode, "mode", ("bilinear", "nearest"))
    N, _, H, W = images.shape
    check_shape(boxes, "boxes", f"({N}, 4)")
    _check_size(size, "size")
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    if mode == "nearest":
        supersample = 1
    if supersample is None:
        shrink = float(((boxes[:, 2:] - boxes[:, :2]).detach() / size).max()) if N else 1.0
        supersample = int(min(4, max(1, math.ceil(shrink))))
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample}")
    n = size * supersample
    frac = (torch.arange(n, dtype=torch.float32, device=images.device) + 0.5) / n  # (n,)
    wh = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    u = boxes[:, 0:1] - 0.5 + frac[None] * wh[:, 0:1]  # (N, n) image px of the samples
    v = boxes[:, 1:2] - 0.5 + frac[None] * wh[:, 1:2]
    uv = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)  # (N, n, n, 2)
    if camera is not None and camera.dist is not None:
        if tuple(camera.batch_shape) != (N,):
            raise ValueError(f"camera must have batch shape ({N},) (one per image), got {tuple(camera.batch_shape)}")
        K, dist = camera.K.to(images.device), camera.dist.to(images.device)
        xn = pixel_to_normalized(uv.flatten(1, 2).to(K.dtype), K)
        uv = normalized_to_pixel(distort_normalized(xn, dist), K).to(uv.dtype).unflatten(1, (n, n))
    size_wh = torch.tensor([W, H], dtype=uv.dtype, device=uv.device)
    grid = (2 * uv + 1) / size_wh - 1  # grid_sample's align_corners=False coordinates
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros",
                        align_corners=False)
    if supersample > 1:
        out = F.avg_pool2d(out, supersample)
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def paste_crops(
    crops: torch.Tensor, boxes: torch.Tensor, image_size: Sequence[int], mode: str = "bilinear",
) -> torch.Tensor:
    """Put ``S x S`` crops back into frames of ``image_size``: the inverse of :func:`crop_images`.

    Frame pixel ``u`` reads the crop at ``u' = (u - x0 + 1/2) S / (x1 - x0) - 1/2`` (the module's
    convention), bilinearly; frame pixels outside the box read zeros. Differentiable with
    respect to ``crops`` and ``boxes`` (the inverse spatial transformer of Honari et al.,
    sec. 3.1). Boxes need not be square; a crop pasted back and cropped again is the crop up to
    the blur of two bilinear resamplings.

    Args:
        crops: ``(N, Ch, S, S)`` floating point, any number of channels.
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)`` frame px.
        image_size: ``(width, height)`` of the frames.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(N, Ch, H, W)`` in the dtype of ``crops``.
    """
    crops = check_tensor(crops, "crops", floating=True)
    check_shape(crops, "crops", "(N, Ch, S, S)")
    check_choice(mode, "mode", ("bilinear", "nearest"))
    N, _, S, S2 = crops.shape
    if S != S2:
        raise ValueError(f"crops must be square, got {S}x{S2}")
    check_shape(boxes, "boxes", f"({N}, 4)")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}")
    W, H = (int(v) for v in image_size)
    _check_size(W, "image_size[0]")
    _check_size(H, "image_size[1]")
    boxes = boxes.to(device=crops.device, dtype=crops.dtype)
    wh = boxes[:, 2:] - boxes[:, :2]
    if bool((wh.detach() <= 0).any()):
        raise ValueError("boxes must have x1 > x0 and y1 > y0")
    u = torch.arange(W, device=crops.device, dtype=crops.dtype)
    v = torch.arange(H, device=crops.device, dtype=crops.dtype)
    # grid_sample's align_corners=False coordinate of crop pixel u' is (2 u' + 1) / S - 1
    gu = 2 * (u[None] + 0.5 - boxes[:, 0:1]) / wh[:, 0:1] - 1  # (N, W)
    gv = 2 * (v[None] + 0.5 - boxes[:, 1:2]) / wh[:, 1:2] - 1  # (N, H)
    grid = torch.stack(torch.broadcast_tensors(gu[:, None, :], gv[:, :, None]), dim=-1)
    return F.grid_sample(crops, grid, mode=mode, padding_mode="zeros", align_corners=False)


def warp_crops(
    images: torch.Tensor,
    points: torch.Tensor | None,
    angle: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    mode: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate, scale and shift square crops about their centre, and their 2D points with them.

    A crop point ``p`` (crop px) moves to ``p' = s R(angle) (p - c) + c + shift`` with ``c`` the
    crop centre ``((S - 1) / 2, (S - 1) / 2)``; a positive angle turns the image clockwise on
    screen (``v`` points down). Output pixels are bilinear samples of the input at
    ``p = R(-angle) (p' - c - shift) / s + c`` (zeros outside), so the warped labels land on the
    warped image.

    Args:
        images: ``(N, 3, S, S)`` uint8 or float.
        points: ``(N, J, 2)`` crop px, or None.
        angle: ``(N,)`` radians; scale: ``(N,)`` (> 1 enlarges); shift: ``(N, 2)`` crop px.
        mode: ``"bilinear"``, or ``"nearest"`` for label maps.

    Returns:
        the warped images (dtype of ``images``) and points (None if ``points`` is None).
    """
    check_shape(images, "images", "(N, C, S, S)")
    check_choice(mode, "mode", ("bilinear", "nearest"))
    N, _, H, W = images.shape
    if H != W:
        raise ValueError(f"images must be square crops, got {H}x{W}")
    check_shape(angle, "angle", f"({N},)")
    check_shape(scale, "scale", f"({N},)")
    check_shape(shift, "shift", f"({N}, 2)")
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive")
    dev = images.device
    angle, scale, shift = (x.to(dev, torch.float32) for x in (angle, scale, shift))
    cos, sin = torch.cos(angle), torch.sin(angle)
    A = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    A = A * scale[:, None, None]  # (N, 2, 2) forward map in any isotropic unit
    t = 2 * shift / W  # normalised coordinates of grid_sample (align_corners=False)
    A_inv = torch.linalg.inv(A)
    theta = torch.cat([A_inv, -(A_inv @ t[..., None])], -1)  # output -> input, (N, 2, 3)
    grid = F.affine_grid(theta, [N, images.shape[1], H, W], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros",
                        align_corners=False)
    if images.dtype == torch.uint8:
        out = out.round().clamp(0, 255).to(torch.uint8)
    else:
        out = out.to(images.dtype)
    if points is None:
        return out, None
    check_shape(points, "points", f"({N}, J, 2)")
    c = (W - 1) / 2
    moved = (points.to(dev, torch.float32) - c) @ A.transpose(-1, -2) + c + shift[:, None]
    return out, moved.to(points.dtype)


def random_warps(
    n: int,
    rotation: float,
    scale: tuple[float, float],
    shift: float,
    size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random warp parameters for :func:`warp_crops` (CPU tensors).

    Angles uniform in ``[-rotation, rotation]`` (degrees in, radians out), log-uniform scales in
    ``scale = (lo, hi)``, shifts uniform in ``[-shift, shift] * size`` per axis.
    """
    if not rotation >= 0 or not 0 < scale[0] <= scale[1] or not shift >= 0:
        raise ValueError(f"rotation, shift must be >= 0 and 0 < scale[0] <= scale[1], got "
                         f"{rotation}, {scale}, {shift}")
    u = torch.rand(n, 4, generator=generator)
    angle = (2 * u[:, 0] - 1) * math.radians(rotation)
    lo, hi = math.log(scale[0]), math.log(scale[1])
    s = torch.exp(lo + (hi - lo) * u[:, 1])
    t = (2 * u[:, 2:] - 1) * shift * size
    return angle, s, t


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Images ``(..., 3, H, W)`` with values in [0, 255] (uint8 or float) to network input.

    Returns float32 ``(x / 255 - IMAGE_MEAN) / IMAGE_STD`` per channel.
    """
    check_shape(images, "images", "(..., 3, H, W)")
    x = images.float() / 255.0
    mean = torch.tensor(IMAGE_MEAN, device=x.device, dtype=x.dtype)[:, None, None]
    std = torch.tensor(IMAGE_STD, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def occlude(
    images: torch.Tensor,
    which: torch.Tensor,
    extent: tuple[float, float] = (0.2, 0.8),
    value: int = 128,
) -> torch.Tensor:
    """Paste a flat grey square into chosen crops (a synthetic occluder; returns a copy).

    Args:
        images: ``(..., 3, S, S)`` crops (uint8 or float).
        which: bool ``(...)``, the crops to occlude (e.g. ``(N, C)``: frame and view).
        extent: the square spans ``[extent[0] S, extent[1] S)`` in both axes (default: the
            middle 60% of the crop, most of a centred person).
        value: the fill value (128: mid grey).
    """
    check_shape(images, "images", "(..., 3, S, S)")
    if which.dtype != torch.bool or tuple(which.shape) != tuple(images.shape[:-3]):
        raise ValueError(f"which must be a bool tensor of shape {tuple(images.shape[:-3])} (one per "
                         f"crop), got {which.dtype} {tuple(which.shape)}")
    if not 0.0 <= extent[0] < extent[1] <= 1.0:
        raise ValueError(f"extent must be (lo, hi) with 0 <= lo < hi <= 1, got {extent}")
    S = images.shape[-1]
    lo, hi = int(extent[0] * S), int(extent[1] * S)
    out = images.clone()
    square = torch.zeros(S, S, dtype=torch.bool, device=images.device)
    square[lo:hi, lo:hi] = True
    mask = which.to(images.device)[..., None, None, None] & square  # (..., 1, S, S)
    return out.masked_fill_(mask, value)


def heatmap_to_crop(uv: torch.Tensor, heatmap_size: int, crop_size: int) -> torch.Tensor:
    """Heatmap pixels to crop pixels: ``u = (u_h + 1/2) S / h - 1/2`` (a resize about corners)."""
    return (uv + 0.5) * (crop_size / heatmap_size) - 0.5


def crop_to_heatmap(uv: torch.Tensor, heatmap_size: int, crop_size: int) -> torch.Tensor:
    """Crop pixels to heatmap pixels (the inverse of :func:`heatmap_to_crop`)."""
    return (uv + 0.5) * (heatmap_size / crop_size) - 0.5


def _check_size(size: int | Sequence[int], name: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name} must be a positive int (pixels), got {size!r}")
