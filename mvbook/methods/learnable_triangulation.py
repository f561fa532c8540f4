"""Learnable triangulation of human pose (Iskakov, Burkov, Lempitsky, Malkov, ICCV 2019).

Two ways of turning calibrated views into a 3D pose, both trained end to end with 3D labels:

- **Algebraic** (eqs. 1-5): a 2D backbone gives joint heatmaps per view; soft-argmax (eqs. 1-2,
  inverse temperature ``alpha``) gives 2D joints; a confidence branch ``q_phi`` on the encoder
  output gives a weight ``w_{c,j}`` per view and joint; the weighted DLT system
  ``(w_j o A_j) y_j = 0`` (eq. 4) is solved by a differentiable SVD
  (:func:`mvbook.geometry.triangulate`). Loss: soft MSE (eq. 15).
- **Volumetric** (eqs. 6-14): 1x1-convolved intermediate maps ``M_c`` (eq. 6) are unprojected
  into an ``L^3`` cube around the pelvis (eq. 7, :func:`mvbook.volumetric.unproject`),
  aggregated over views (eqs. 8-11, :func:`mvbook.volumetric.aggregate`), refined by a V2V
  network into 3D heatmaps (eq. 12) and read out by 3D soft-argmax (eqs. 13-14). Loss: L1 plus
  a weak heatmap term (eq. 16). The pelvis comes from the algebraic model at test time; during
  training we use the ground-truth pelvis (as the original implementation allows), and the
  cube's horizontal axes get a random rotation about the vertical.

Baselines: per-view heatmap argmax then plain DLT ("naive"), and RANSAC triangulation.

Data: samples in the common format (:mod:`mvbook.data.format`) are cropped once around each
view's person box into ``crop_size`` squares (:func:`prepare_crops`); the crop cameras
``P = A K [R | t]`` (``A`` the crop/resize affine map in pixels) are what the models use.
Lens distortion is not modelled by the crop cameras: use undistorted data (the studio has none).

Units: mm in 3D, crop pixels in 2D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mvbook.nn.backbones import (
    BackboneConfig,
    BackboneOutput,
    ConfidenceHead,
    SimpleBaseline,
)
from mvbook.nn.v2v import V2VNet
from mvbook.volumetric import AGGREGATIONS, aggregate, make_grid, random_yaw, unproject

__all__ = [
    "LTConfig",
    "AlgebraicTriangulationNet",
    "VolumetricTriangulationNet",
    "CropSet",
    "cache_backbone",
    "cached_outputs",
    "argmax_joints",
    "errors_2d",
    "CACHE_KEYS",
    "crop_affine",
    "crop_images",
    "prepare_crops",
    "normalize_images",
    "heatmap_to_crop",
    "crop_to_heatmap",
    "soft_mse_loss",
    "volumetric_loss",
    "augment_views",
    "heatmap_loss_fn",
    "algebraic_loss_fn",
    "volumetric_loss_fn",
    "naive_predictor",
    "ransac_predictor",
    "algebraic_predictor",
    "volumetric_predictor",
    "evaluate",
    "errors_table",
]

CACHE_KEYS = ("heatmaps", "features", "encoding")
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class LTConfig:
    """Everything that sizes the chapter's models and losses.

    2D part: ``crop_size`` (square crops, px), ``crop_scale`` (crop side = scale x the longer
    side of the person box), ``backbone`` (:class:`mvbook.nn.BackboneConfig`), ``alpha`` (eq. 1
    inverse temperature, 100 in the paper), ``heatmap_sigma`` (std of the Gaussian targets of
    the backbone pretraining, heatmap px), ``confidence_hidden`` (width of ``q_phi``).

    Volumetric part: ``volume_size`` (``L`` mm; paper 2500), ``volume_resolution`` (voxels per
    side; paper 64), ``volume_channels`` (``K``; paper 32), ``aggregation`` (``"sum"``,
    ``"conf"``, ``"softmax"``), ``v2v_width``/``v2v_levels``/``v2v_norm``/``v2v_front_kernel`` (V2V size),
    ``volume_beta`` (multiplier of the 3D heatmaps inside the eq. 13 softmax; paper 1),
    ``use_valid_mask`` (drop views whose image a voxel falls outside of from the aggregation),
    ``train_yaw`` (random rotation of the cube about the vertical during training).

    Losses: ``soft_mse_threshold`` (``epsilon`` of eq. 15 in mm^2; the paper states
    (20 cm)^2), ``heatmap_reg`` (``beta`` of eq. 16; paper 0.01).

    Baselines: ``ransac_threshold`` (crop px).

    ``augment``: random colour changes (channel permutation, gain) and, with ``augment_flip``,
    horizontal flips (with left/right joints swapped) of the backbone pretraining images. A flip
    turns a left-side marking of the body into a right-side one: flips hide appearance cues that
    tell left from right. The studio's bodies carry such a cue (light left limbs), and the studio
    chapters turn flips off.

    ``freeze_backbone``: keep the (pretrained) backbone fixed while training the heads; the
    backbone outputs can then be cached once (:func:`cache_backbone`). The paper trains end to
    end (False); the CPU profile freezes it.
    """

    crop_size: int = 64
    crop_scale: float = 1.2
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_joints: int = 17
    root_joint: int = 0
    alpha: float = 100.0
    heatmap_sigma: float = 1.0
    confidence_hidden: int = 64
    use_confidences: bool = True
    volume_size: float = 2500.0
    volume_resolution: int = 16
    volume_channels: int = 16
    aggregation: str = "softmax"
    v2v_width: int = 16
    v2v_levels: int = 2
    v2v_norm: str = "batch"
    v2v_front_kernel: int = 7
    volume_beta: float = 1.0
    use_valid_mask: bool = False
    train_yaw: bool = True
    soft_mse_threshold: float = 40000.0
    heatmap_reg: float = 0.01
    ransac_threshold: float = 4.0
    freeze_backbone: bool = False
    augment: bool = True
    augment_flip: bool = True

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be >= 8, got {self.crop_size}")
        if self.volume_resolution % 2**self.v2v_levels:
            raise ValueError(
                f"volume_resolution ({self.volume_resolution}) must be divisible by "
                f"2**v2v_levels ({2**self.v2v_levels})"
            )


# --------------------------------------------------------------------------------------------
# cropping and data preparation
# --------------------------------------------------------------------------------------------


def square_boxes(bbox: torch.Tensor, scale: float) -> torch.Tensor:
    """Square boxes ``(..., 4)`` (x0, y0, x1, y1) px, centred on ``bbox``, side = scale x longer side."""
    c = (bbox[..., :2] + bbox[..., 2:]) / 2
    side = (bbox[..., 2:] - bbox[..., :2]).amax(-1, keepdim=True).clamp_min(8.0) * scale
    return torch.cat([c - side / 2, c + side / 2], dim=-1)


def crop_affine(boxes: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Pixel map of a crop-and-resize: ``uv_crop = A @ (u, v, 1)``.

    The box ``(x0, y0, x1, y1)`` (pixel-centre coordinates, continuous extent) is mapped onto the
    ``crop_size`` square so that its extent ``[x0, x1]`` covers the crop's ``[-0.5, S - 0.5]``:
    ``u_crop = (u - x0) * S / (x1 - x0) - 0.5``. Returns ``(..., 3, 3)``; the crop camera is
    ``K_crop = A @ K``.
    """
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    sx = crop_size / (boxes[..., 2] - boxes[..., 0])
    sy = crop_size / (boxes[..., 3] - boxes[..., 1])
    A = torch.zeros(*boxes.shape[:-1], 3, 3, dtype=boxes.dtype, device=boxes.device)
    A[..., 0, 0] = sx
    A[..., 1, 1] = sy
    A[..., 0, 2] = -boxes[..., 0] * sx - 0.5
    A[..., 1, 2] = -boxes[..., 1] * sy - 0.5
    A[..., 2, 2] = 1.0
    return A


def crop_images(
    images: torch.Tensor, boxes: torch.Tensor, crop_size: int, supersample: int | None = None
) -> torch.Tensor:
    """Crop and resize images to ``crop_size`` squares consistently with :func:`crop_affine`.

    Args:
        images: ``(N, 3, H, W)`` uint8 or float.
        boxes: ``(N, 4)`` px.
        supersample: sub-samples per output pixel side (anti-aliasing; default from the scale).

    Returns:
        ``(N, 3, S, S)`` float in the input's value range.
    """
    if images.ndim != 4 or boxes.shape != (images.shape[0], 4):
        raise ValueError(
            f"images must be (N, 3, H, W) and boxes (N, 4); got {tuple(images.shape)}, "
            f"{tuple(boxes.shape)}"
        )
    N, _, H, W = images.shape
    S = crop_size
    if supersample is None:
        ratio = float(((boxes[:, 2] - boxes[:, 0]) / S).max()) if N else 1.0
        supersample = int(min(4, max(1, math.ceil(ratio))))
    n = S * supersample
    side = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    ii = (torch.arange(n, dtype=torch.float32, device=images.device) + 0.5) / n  # (n,)
    u = boxes[:, 0:1] - 0.0 + ii[None] * side[:, 0:1]  # (N, n): continuous extent from x0
    v = boxes[:, 1:2] + ii[None] * side[:, 1:2]
    # u here is in pixel-centre coords of the sample point (the box extent starts at x0)
    un = (2 * u + 1) / W - 1
    vn = (2 * v + 1) / H - 1
    grid = torch.stack(torch.broadcast_tensors(un[:, None, :], vn[:, :, None]), dim=-1)
    out = F.grid_sample(
        images.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if supersample > 1:
        out = F.avg_pool2d(out, supersample)
    return out


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8/[0,255] images ``(..., 3, H, W)`` -> float, ImageNet mean/std normalised."""
    x = images.float() / 255.0
    mean = torch.tensor(IMAGE_MEAN, device=x.device, dtype=x.dtype)[:, None, None]
    std = torch.tensor(IMAGE_STD, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def heatmap_to_crop(uv: torch.Tensor, heatmap_size: int, crop_size: int) -> torch.Tensor:
    """Heatmap pixel coordinates -> crop pixel coordinates (both pixel-centre conventions)."""
    return (uv + 0.5) * (crop_size / heatmap_size) - 0.5


def crop_to_heatmap(uv: torch.Tensor, heatmap_size: int, crop_size: int) -> torch.Tensor:
    """Crop pixel coordinates -> heatmap pixel coordinates."""
    return (uv + 0.5) * (heatmap_size / crop_size) - 0.5


class CropSet(torch.utils.data.Dataset):
    """Pre-cropped multiview samples held in memory (built by :func:`prepare_crops`).

    Item ``i`` is a dict: ``images`` uint8 ``(C, 3, S, S)``; ``P`` float32 ``(C, 3, 4)`` crop
    cameras; ``joints2d`` ``(C, J, 2)`` crop px; ``visibility`` bool ``(C, J)``; ``joints3d``
    ``(J, 3)`` mm; ``subject``, ``action`` int64 (indices into :attr:`subjects`,
    :attr:`actions`); ``index`` int64.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], subjects: list[str], actions: list[str]):
        n = len(tensors["images"])
        for k, v in tensors.items():
            if len(v) != n:
                raise ValueError(f"tensor {k!r} has {len(v)} rows, expected {n}")
        self.tensors = tensors
        self.subjects = subjects
        self.actions = actions

    def __len__(self) -> int:
        return len(self.tensors["images"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    @property
    def num_views(self) -> int:
        return int(self.tensors["images"].shape[1])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> CropSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return CropSet({k: v[idx] for k, v in self.tensors.items()}, self.subjects, self.actions)

    def all(self) -> dict[str, torch.Tensor]:
        """The whole set as one batch."""
        return dict(self.tensors)


def _meta_strings(sample: dict, key: str) -> str:
    value = sample.get(key, "")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value)


def prepare_crops(
    dataset: Iterable[dict],
    config: LTConfig,
    *,
    person: int = 0,
    max_samples: int | None = None,
    stride: int = 1,
    progress: bool = True,
) -> CropSet:
    """Crop every view of every sample around the person's box (done once, kept in memory).

    Args:
        dataset: a ``MultiviewDataset`` (or any sequence of sample dicts in the common format).
        config: gives ``crop_size`` and ``crop_scale``.
        person: which person of each sample (the chapter's data are single-person, P = 1).
        max_samples / stride: take every ``stride``-th sample, at most ``max_samples``.
    """
    from tqdm.auto import tqdm

    n_total = len(dataset)  # type: ignore[arg-type]
    indices = list(range(0, n_total, stride))
    if max_samples is not None:
        indices = indices[:max_samples]
    S = config.crop_size
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("images", "P", "joints2d", "visibility", "joints3d", "subject", "action", "index")
    }
    subjects: list[str] = []
    actions: list[str] = []
    for i in tqdm(indices, desc="cropping", disable=not progress):
        s = dataset[i]  # type: ignore[index]
        s = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
        images = s["images"]
        box = square_boxes(s["bbox"][:, person].float(), config.crop_scale)  # (C, 4)
        A = crop_affine(box, S)  # (C, 3, 3)
        crops = crop_images(images, box, S).round().clamp(0, 255).to(torch.uint8)
        K = A @ s["K"].float()
        Rt = torch.cat([s["R"].float(), s["t"].float()[..., None]], dim=-1)
        P = K @ Rt
        uv = s["joints2d"][:, person].float()
        uvh = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
        uv_crop = (uvh @ A.transpose(-1, -2))[..., :2]
        inside = ((uv_crop >= -0.5) & (uv_crop <= S - 0.5)).all(-1)
        subj = _meta_strings(s, "subject")
        act = _meta_strings(s, "action")
        if subj not in subjects:
            subjects.append(subj)
        if act not in actions:
            actions.append(act)
        out["images"].append(crops)
        out["P"].append(P)
        out["joints2d"].append(uv_crop)
        out["visibility"].append(s["visibility"][:, person].bool() & inside)
        out["joints3d"].append(s["joints3d"][person].float())
        out["subject"].append(torch.tensor(subjects.index(subj)))
        out["action"].append(torch.tensor(actions.index(act)))
        out["index"].append(torch.tensor(int(s.get("index", i))))
    tensors = {k: torch.stack(v) for k, v in out.items()}
    return CropSet(tensors, subjects, actions)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


class _TriangulationBase(nn.Module):
    def __init__(self, backbone: SimpleBaseline, config: LTConfig) -> None:
        super().__init__()
        if not isinstance(backbone, SimpleBaseline):
            raise TypeError(f"backbone must be a SimpleBaseline, got {type(backbone).__name__}")
        self.backbone = backbone
        self.config = config
        if config.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):  # noqa: D102 - keep a frozen backbone in eval mode
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def _backbone(self, images: torch.Tensor, cached: BackboneOutput | None = None):
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must have shape (B, C, 3, S, S), got {tuple(images.shape)}")
        B, C = images.shape[:2]
        if cached is not None:
            if not self.config.freeze_backbone:
                raise ValueError(
                    "cached backbone outputs can only be used with config.freeze_backbone=True"
                )
            out = BackboneOutput(*(t.flatten(0, 1).float() for t in cached))
            return out, B, C
        x = images if images.is_floating_point() else normalize_images(images)
        out = self.backbone(x.flatten(0, 1))
        return out, B, C


class AlgebraicTriangulationNet(_TriangulationBase):
    """Algebraic triangulation with learned confidences (Iskakov et al. eqs. 1-5).

    ``forward(images (B, C, 3, S, S), P (B, C, 3, 4)) -> dict`` with ``joints3d (B, J, 3)`` mm,
    ``joints2d (B, C, J, 2)`` crop px (soft-argmax), ``confidences (B, C, J)`` (``w_{c,j}``,
    normalised to sum 1 over views, plus 1e-5 as in the original implementation) and
    ``heatmaps (B, C, J, h, w)``. Images may be uint8 (normalised here) or already normalised.
    ``cached``: backbone outputs ``(B, C, ...)`` computed beforehand (:func:`cache_backbone`),
    allowed with a frozen backbone only.
    With ``config.use_confidences=False`` all weights are 1 (the "w/o conf" ablation).
    """

    def __init__(self, backbone: SimpleBaseline, config: LTConfig) -> None:
        super().__init__(backbone, config)
        self.confidence = ConfidenceHead(
            backbone.encoding_channels, backbone.num_joints, config.confidence_hidden
        )

    def forward(
        self, images: torch.Tensor, P: torch.Tensor, cached: BackboneOutput | None = None
    ) -> dict[str, torch.Tensor]:
        from mvbook.geometry import triangulate
        from mvbook.heatmaps import soft_argmax_2d

        out, B, C = self._backbone(images, cached)
        heat = out.heatmaps.unflatten(0, (B, C))
        hs = heat.shape[-1]
        with torch.autocast(device_type=heat.device.type, enabled=False):
            uv_h = soft_argmax_2d(heat.float(), beta=self.config.alpha)
            uv = heatmap_to_crop(uv_h, hs, images.shape[-1])
            if self.config.use_confidences:
                w = self.confidence(out.encoding).float().unflatten(0, (B, C))  # (B, C, J)
                w = w / w.sum(dim=1, keepdim=True) + 1e-5
            else:
                w = torch.ones(B, C, heat.shape[2], device=heat.device)
            X = triangulate(uv, P.float(), weights=w)
        return {"joints3d": X, "joints2d": uv, "confidences": w, "heatmaps": heat}


class VolumetricTriangulationNet(_TriangulationBase):
    """Volumetric triangulation (Iskakov et al. eqs. 6-14).

    ``forward(images (B, C, 3, S, S), P (B, C, 3, 4), root (B, 3) mm, yaw (B,) rad or None)
    -> dict`` with ``joints3d (B, J, 3)`` mm, ``volumes (B, J, R, R, R)`` (3D heatmaps
    ``V^output`` before the softmax), ``grid (B, R, R, R, 3)`` mm and, for ``"conf"``
    aggregation, ``confidences (B, C)`` (``d_c``). ``cached`` as in
    :class:`AlgebraicTriangulationNet`.
    """

    def __init__(self, backbone: SimpleBaseline, config: LTConfig) -> None:
        super().__init__(backbone, config)
        K = config.volume_channels
        self.process = nn.Conv2d(backbone.feature_channels, K, 1)  # o_gamma, eq. 6
        self.confidence = (
            ConfidenceHead(backbone.encoding_channels, 1, config.confidence_hidden)
            if config.aggregation == "conf"
            else None
        )
        self.v2v = V2VNet(
            K,
            backbone.num_joints,
            config.v2v_width,
            config.v2v_levels,
            norm=config.v2v_norm,
            front_kernel=config.v2v_front_kernel,
        )

    def forward(
        self,
        images: torch.Tensor,
        P: torch.Tensor,
        root: torch.Tensor,
        yaw: torch.Tensor | None = None,
        cached: BackboneOutput | None = None,
    ) -> dict[str, torch.Tensor]:
        from mvbook.heatmaps import soft_argmax_3d

        cfg = self.config
        out, B, C = self._backbone(images, cached)
        if root.shape != (B, 3):
            raise ValueError(f"root must have shape ({B}, 3), got {tuple(root.shape)}")
        M = self.process(out.features).unflatten(0, (B, C))  # (B, C, K, h, w)
        grid = make_grid(root.float(), cfg.volume_size, cfg.volume_resolution, yaw)
        S = images.shape[-1]
        vols, valid = unproject(M, P.to(M.dtype), grid.to(M.dtype), (S, S))
        d = None
        if cfg.aggregation == "conf":
            assert self.confidence is not None
            d = self.confidence(out.encoding).unflatten(0, (B, C))[..., 0]  # (B, C)
        agg = aggregate(vols, cfg.aggregation, d, valid if cfg.use_valid_mask else None)
        V = self.v2v(agg)  # (B, J, R, R, R)
        with torch.autocast(device_type=V.device.type, enabled=False):
            X = soft_argmax_3d(V.float() * cfg.volume_beta, grid.float(), beta=1.0)
        result = {"joints3d": X, "volumes": V, "grid": grid}
        if d is not None:
            result["confidences"] = d
        return result


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def _joint_mask(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if valid is None:
        return torch.ones(like.shape[:-1], dtype=like.dtype, device=like.device)
    if valid.shape != like.shape[:-1]:
        raise ValueError(f"valid must have shape {tuple(like.shape[:-1])}, got {tuple(valid.shape)}")
    return valid.to(like.dtype)


def soft_mse_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    threshold: float = 40000.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft per-joint MSE of eq. 15 (robust to outliers).

    Per coordinate, ``e = (y - y_gt)^2`` is kept when ``e <= eps`` and replaced by
    ``e^0.1 * eps^0.9`` above it (continuous at ``eps``, growing like ``|y - y_gt|^0.2``);
    the result is averaged over valid joints and their coordinates.

    Args:
        pred, gt: ``(..., J, 3)`` mm.
        threshold: ``eps`` in mm^2 (paper: (20 cm)^2 = 40000).
        valid: optional ``(..., J)`` bool mask.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)}, {tuple(gt.shape)}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    m = _joint_mask(valid, pred)
    e = (pred - gt) ** 2
    soft = torch.where(e > threshold, e.clamp_min(threshold) ** 0.1 * threshold**0.9, e)
    return (soft * m[..., None]).sum() / (3 * m.sum()).clamp_min(1)


def volumetric_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    volumes: torch.Tensor,
    grid: torch.Tensor,
    beta: float = 0.01,
    valid: torch.Tensor | None = None,
    volume_beta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L1 loss plus the weak heatmap regulariser of eq. 16.

    ``L = mean_j |y_j - y_j^gt|_1 / 3 - beta * mean_j log V'_j(voxel of y_j^gt)``, where ``V'``
    is the softmax of the 3D heatmaps over space (eq. 13) and the voxel is the one whose centre
    is nearest to the ground truth (joints outside the cube count in the L1 term only).
    Both terms are averaged over valid joints (the paper writes sums; a constant factor).

    Args:
        pred, gt: ``(B, J, 3)`` mm; volumes ``(B, J, D, H, W)``; grid ``(B, D, H, W, 3)``.

    Returns:
        ``(loss, {"l1": ..., "heatmap": ...})``.
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred and gt must both be (B, J, 3), got {tuple(pred.shape)}, {tuple(gt.shape)}")
    if volumes.shape[:2] != pred.shape[:2] or grid.shape[:-1] != (pred.shape[0], *volumes.shape[2:]):
        raise ValueError(
            f"volumes (B, J, D, H, W) and grid (B, D, H, W, 3) do not match: "
            f"{tuple(volumes.shape)}, {tuple(grid.shape)}"
        )
    m = _joint_mask(valid, pred)
    l1 = ((pred - gt).abs().sum(-1) * m).sum() / (3 * m.sum()).clamp_min(1)
    B, J = volumes.shape[:2]
    logp = torch.log_softmax((volumes * volume_beta).flatten(2), dim=-1)  # (B, J, N)
    # nearest voxel to each ground-truth joint
    flat = grid.flatten(1, 3)  # (B, N, 3)
    d2 = torch.cdist(gt.to(flat.dtype), flat)  # (B, J, N)
    idx = d2.argmin(-1)
    step = (flat[:, 1] - flat[:, 0]).norm(dim=-1)  # voxel side along the first axis (B,)
    inside = d2.gather(-1, idx[..., None])[..., 0] <= step[:, None] * math.sqrt(3) / 2 + 1e-6
    mh = m * inside.to(m.dtype)
    nll = -(logp.gather(-1, idx[..., None])[..., 0] * mh).sum() / mh.sum().clamp_min(1)
    loss = l1 + beta * nll
    return loss, {"l1": l1.detach(), "heatmap": nll.detach()}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _select_views(batch: dict, views: Sequence[int] | None) -> dict:
    if views is None:
        return batch
    idx = torch.as_tensor(list(views), dtype=torch.long)
    out = dict(batch)
    for k in ("images", "P", "joints2d", "visibility", *CACHE_KEYS):
        if k in out:
            out[k] = out[k][:, idx.to(out[k].device)]
    return out


def cached_outputs(batch: dict, model: nn.Module | None = None) -> BackboneOutput | None:
    """Backbone outputs stored in the batch (see :func:`cache_backbone`), if the model may use them."""
    if not all(k in batch for k in CACHE_KEYS):
        return None
    if model is not None:
        from mvbook.train import unwrap_model

        cfg = getattr(unwrap_model(model), "config", None)
        if cfg is None or not getattr(cfg, "freeze_backbone", False):
            return None
    return BackboneOutput(*(batch[k] for k in CACHE_KEYS))


@torch.no_grad()
def cache_backbone(
    backbone: SimpleBaseline,
    data: CropSet,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    progress: bool = False,
) -> CropSet:
    """Run a (frozen) backbone once over a :class:`CropSet` and store its outputs.

    Returns a new :class:`CropSet` sharing the original tensors plus ``heatmaps``
    ``(N, C, J, h, w)``, ``features`` ``(N, C, F, h, w)`` and ``encoding`` ``(N, C, E, h', w')``
    (stored as ``dtype``). Models built with ``config.freeze_backbone=True`` then skip the
    backbone, which makes CPU training of the heads fast; with a trainable backbone the cache
    is ignored by the loss functions.
    """
    from tqdm.auto import tqdm

    from mvbook.runtime import resolve_device

    dev = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(dev)
    images = data.tensors["images"]
    N, C = images.shape[:2]
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in CACHE_KEYS}
    step = max(1, batch_size // C)
    for s in tqdm(range(0, N, step), desc="backbone", disable=not progress):
        x = normalize_images(images[s : s + step].to(dev).flatten(0, 1))
        out = backbone(x)
        for k, t in zip(CACHE_KEYS, out):
            chunks[k].append(t.unflatten(0, (-1, C)).to("cpu", dtype))
    backbone.train(was_training)
    tensors = dict(data.tensors)
    tensors.update({k: torch.cat(v) for k, v in chunks.items()})
    return CropSet(tensors, data.subjects, data.actions)


def augment_views(
    images: torch.Tensor,
    joints2d: torch.Tensor,
    visibility: torch.Tensor,
    flip_pairs: Sequence[tuple[int, int]],
    generator: torch.Generator | None = None,
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random colour changes and horizontal flips of single views (2D pretraining only).

    Args:
        images: ``(N, 3, S, S)`` float (normalised or not); joints2d ``(N, J, 2)`` crop px;
        visibility ``(N, J)``; flip_pairs: left/right joint index pairs swapped by a flip.

    Returns the augmented ``(images, joints2d, visibility)``; each image is flipped with
    probability 1/2 (never with ``flip=False``), its colour channels permuted and scaled by gains
    in [0.7, 1.3].
    """
    N, _, _, S = images.shape
    dev = images.device
    perm = torch.argsort(torch.rand(N, 3, generator=generator), dim=1).to(dev)
    gain = (0.7 + 0.6 * torch.rand(N, 3, 1, 1, generator=generator)).to(dev, images.dtype)
    images = images.gather(1, perm[:, :, None, None].expand_as(images)) * gain
    flip_mask = (torch.rand(N, generator=generator) < (0.5 if flip else 0.0)).to(dev)
    images = torch.where(flip_mask[:, None, None, None], images.flip(-1), images)
    J = joints2d.shape[-2]
    swap = torch.arange(J, device=dev)
    for a, b in flip_pairs:
        swap[a], swap[b] = b, a
    flipped = joints2d[:, swap].clone()
    flipped[..., 0] = S - 1 - flipped[..., 0]
    joints2d = torch.where(flip_mask[:, None, None], flipped, joints2d)
    visibility = torch.where(flip_mask[:, None], visibility[:, swap], visibility)
    return images, joints2d, visibility


def heatmap_loss_fn(
    config: LTConfig, skeleton: str = "h36m17", generator: torch.Generator | None = None
) -> Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]:
    """Backbone pretraining: MSE between predicted and Gaussian target heatmaps.

    The loss function takes a :class:`mvbook.nn.SimpleBaseline` and a :class:`CropSet` batch;
    every view is an independent training image. Targets are Gaussians
    (``config.heatmap_sigma`` heatmap px) at the ground-truth 2D joints; invisible joints are
    masked. The MSE is summed over joints and averaged over pixels and images (a constant
    factor that only sets the loss scale). With ``config.augment`` the views are augmented by
    :func:`augment_views` (flip pairs of ``skeleton``).
    """
    from mvbook.heatmaps import render_gaussian_2d
    from mvbook.skeletons import get_skeleton

    flip_pairs = get_skeleton(skeleton).flip_pairs

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to(batch, _device_of(model))
        images = normalize_images(batch["images"].flatten(0, 1))
        uv = batch["joints2d"].flatten(0, 1)
        vis = batch["visibility"].flatten(0, 1)
        if config.augment:
            images, uv, vis = augment_views(
                images, uv, vis, flip_pairs, generator, flip=config.augment_flip
            )
        out = model(images)
        heat = out.heatmaps if hasattr(out, "heatmaps") else out[0]
        hs = heat.shape[-1]
        target = render_gaussian_2d(crop_to_heatmap(uv, hs, images.shape[-1]), (hs, hs),
                                    config.heatmap_sigma)
        w = vis.to(heat.dtype)
        loss = (((heat.float() - target) ** 2).mean((-2, -1)) * w).sum() / w.shape[0]
        return loss, {}

    return loss_fn


def algebraic_loss_fn(config: LTConfig) -> Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]:
    """Algebraic model training: soft MSE (eq. 15) on the triangulated joints; logs MPJPE (mm)."""

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to(batch, _device_of(model))
        out = model(batch["images"], batch["P"], cached=cached_outputs(batch, model))
        gt = batch["joints3d"]
        loss = soft_mse_loss(out["joints3d"], gt, config.soft_mse_threshold)
        err = (out["joints3d"] - gt).norm(dim=-1).mean().detach()
        return loss, {"mpjpe": err}

    return loss_fn


def volumetric_loss_fn(
    config: LTConfig, generator: torch.Generator | None = None
) -> Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]:
    """Volumetric model training: eq. 16 with the cube centred on the ground-truth pelvis.

    The cube is rotated by a random yaw about the vertical when ``config.train_yaw``.
    Logs ``l1``, ``heatmap`` (the regulariser before ``beta``) and ``mpjpe`` (mm).
    """

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        dev = _device_of(model)
        batch = _to(batch, dev)
        gt = batch["joints3d"]
        root = gt[:, config.root_joint]
        yaw = random_yaw(gt.shape[0], generator, device=dev) if config.train_yaw else None
        out = model(batch["images"], batch["P"], root, yaw, cached=cached_outputs(batch, model))
        loss, logs = volumetric_loss(
            out["joints3d"], gt, out["volumes"], out["grid"], config.heatmap_reg,
            volume_beta=config.volume_beta,
        )
        logs["mpjpe"] = (out["joints3d"] - gt).norm(dim=-1).mean().detach()
        return loss, logs

    return loss_fn


# --------------------------------------------------------------------------------------------
# predictors and evaluation
# --------------------------------------------------------------------------------------------

Predictor = Callable[[dict], torch.Tensor]


def argmax_joints(backbone: SimpleBaseline, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view heatmap argmax joints ``(B, C, J, 2)`` crop px and peak values ``(B, C, J)``.

    Uses the batch's cached heatmaps when present (:func:`cache_backbone`).
    """
    from mvbook.heatmaps import argmax_2d

    images = batch["images"]
    cached = cached_outputs(batch)
    if cached is not None:
        heat = cached.heatmaps.float()
    else:
        B, C = images.shape[:2]
        x = normalize_images(images)
        heat = backbone(x.flatten(0, 1)).heatmaps.unflatten(0, (B, C))
    uv_h, score = argmax_2d(heat)
    return heatmap_to_crop(uv_h.float(), heat.shape[-1], images.shape[-1]), score


@torch.no_grad()
def errors_2d(
    backbone: SimpleBaseline,
    data: CropSet,
    flip_pairs: Sequence[tuple[int, int]] = (),
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Per-view 2D errors of the backbone's heatmap argmax, and where the large ones land.

    For every sample, view and joint: ``error`` is the distance (crop px) from the argmax joint
    to its ground truth and ``partner_error`` the distance to the ground truth of its left/right
    partner (``flip_pairs``; the joint itself for central joints). A large error with a small
    partner error means the detector put the joint on the other side of the body -- a left/right
    confusion that a single view cannot resolve when the body looks alike from both sides.

    Returns:
        dict of cpu tensors ``error``, ``partner_error`` ``(N, C, J)`` crop px and
        ``visibility`` ``(N, C, J)`` bool.
    """
    from mvbook.runtime import resolve_device

    dev = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(dev)
    J = data.tensors["joints2d"].shape[-2]
    partner = torch.arange(J)
    for a, b in flip_pairs:
        partner[a], partner[b] = b, a
    err, perr = [], []
    for s in range(0, len(data), batch_size):
        batch = _to({k: v[s : s + batch_size] for k, v in data.tensors.items()}, dev)
        uv, _ = argmax_joints(backbone, batch)
        gt = batch["joints2d"].float()
        err.append((uv - gt).norm(dim=-1).cpu())
        perr.append((uv - gt[..., partner.to(dev), :]).norm(dim=-1).cpu())
    backbone.train(was_training)
    return {
        "error": torch.cat(err),
        "partner_error": torch.cat(perr),
        "visibility": data.tensors["visibility"].bool(),
    }


def naive_predictor(backbone: SimpleBaseline, use_cache: bool = True) -> Predictor:
    """Per-view heatmap argmax, then plain (unweighted) DLT triangulation.

    With ``use_cache`` the batch's cached heatmaps (:func:`cache_backbone`) are used when present.
    """
    from mvbook.geometry import triangulate

    def predict(batch: dict) -> torch.Tensor:
        b = batch if use_cache else {k: v for k, v in batch.items() if k not in CACHE_KEYS}
        uv, _ = argmax_joints(backbone, b)
        return triangulate(uv, b["P"].float())

    return predict


def ransac_predictor(
    backbone: SimpleBaseline, threshold: float = 4.0, use_cache: bool = True
) -> Predictor:
    """Per-view heatmap argmax, then RANSAC triangulation (threshold in crop px).

    Joints for which no hypothesis finds two inlier views fall back to the plain DLT of all
    views (so every joint has a prediction, as the paper's evaluation needs).
    """
    from mvbook.geometry import triangulate, triangulate_ransac

    def predict(batch: dict) -> torch.Tensor:
        b = batch if use_cache else {k: v for k, v in batch.items() if k not in CACHE_KEYS}
        uv, _ = argmax_joints(backbone, b)
        P = b["P"].float()
        X, _ = triangulate_ransac(uv, P, threshold=threshold)
        bad = ~torch.isfinite(X).all(-1, keepdim=True)
        if bool(bad.any()):
            X = torch.where(bad, triangulate(uv, P), X)
        return X

    return predict


def algebraic_predictor(model: AlgebraicTriangulationNet) -> Predictor:
    """The algebraic model's triangulated joints."""

    def predict(batch: dict) -> torch.Tensor:
        return model(batch["images"], batch["P"], cached=cached_outputs(batch, model))["joints3d"]

    return predict


def volumetric_predictor(
    model: VolumetricTriangulationNet, root: str | Predictor = "gt", root_joint: int = 0
) -> Predictor:
    """The volumetric model's joints with the cube around ``root``.

    ``root``: ``"gt"`` (ground-truth pelvis) or a predictor (e.g. :func:`algebraic_predictor`)
    whose joint ``root_joint`` is used, as in the paper.
    """

    def predict(batch: dict) -> torch.Tensor:
        if root == "gt":
            r = batch["joints3d"][:, root_joint]
        elif callable(root):
            r = root(batch)[:, root_joint]
        else:
            raise ValueError(f"root must be 'gt' or a predictor, got {root!r}")
        return model(batch["images"], batch["P"], r, None, cached=cached_outputs(batch, model))["joints3d"]

    return predict


@torch.no_grad()
def evaluate(
    predictor: Predictor,
    data: CropSet,
    *,
    views: Sequence[int] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    models: Iterable[nn.Module] = (),
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run a predictor over a :class:`CropSet`; returns per-sample predictions.

    Args:
        views: indices of the views to use (default all) -- for MPJPE versus number of views.
        models: modules to put in eval mode first.

    Returns:
        dict with ``pred`` ``(N, J, 3)`` mm, ``gt`` ``(N, J, 3)``, ``subject``, ``action``,
        ``index`` ``(N,)`` (cpu tensors).
    """
    from tqdm.auto import tqdm

    from mvbook.runtime import resolve_device

    dev = resolve_device(device)
    for m in models:
        m.eval()
    preds = []
    n = len(data)
    for s in tqdm(range(0, n, batch_size), desc="evaluate", disable=not progress):
        batch = {k: v[s : s + batch_size] for k, v in data.tensors.items()}
        batch = _to(_select_views(batch, views), dev)
        preds.append(predictor(batch).float().cpu())
    t = data.tensors
    return {
        "pred": torch.cat(preds) if preds else torch.zeros(0, 0, 3),
        "gt": t["joints3d"].float(),
        "subject": t["subject"],
        "action": t["action"],
        "index": t["index"],
    }


def errors_table(
    results: dict[str, dict[str, torch.Tensor]],
    actions: Sequence[str],
    root_joint: int | None = 0,
) -> tuple[list[str], list[str], np.ndarray]:
    """Per-action MPJPE (mm) of several methods' :func:`evaluate` outputs.

    ``root_joint=None`` gives absolute MPJPE; an int aligns both poses at that joint first
    (root-relative MPJPE, the Human3.6M protocol). Returns ``(row names = methods,
    column names = actions + ["average"], values (methods, actions + 1))``; "average" is the
    mean of the per-action values, as in the paper's tables ("averaged across all actions").
    """
    from mvbook.metrics import mpjpe

    names = list(results)
    present = sorted({int(a) for r in results.values() for a in r["action"].tolist()})
    cols = [actions[a] for a in present] + ["average"]
    values = np.full((len(names), len(cols)), np.nan)
    for i, name in enumerate(names):
        r = results[name]
        for j, a in enumerate(present):
            sel = r["action"] == a
            if sel.any():
                values[i, j] = float(
                    mpjpe(r["pred"][sel], r["gt"][sel], root=root_joint, reduction="mean")
                )
        values[i, -1] = float(np.nanmean(values[i, :-1]))
    return names, cols, values
