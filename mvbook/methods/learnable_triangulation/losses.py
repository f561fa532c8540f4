"""Losses of learnable triangulation, and :func:`make_loss` for each training stage.

- eq. 15, :func:`soft_mse_loss`: the algebraic model's robust per-coordinate MSE;
- eq. 16, :func:`volumetric_loss`: L1 plus a weak 3D-heatmap term for the volumetric model;
- the backbone pretraining's heatmap MSE on Gaussian targets.

:func:`make_loss` returns ``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from mvbook.crops import crop_to_heatmap, normalize_images
from mvbook.heatmaps import render_gaussian_2d
from mvbook.skeletons import get_skeleton
from mvbook.train import to_device
from mvbook.validation import check_choice, check_same_shape, check_shape
from mvbook.volumetric import random_yaw

from .config import STAGES, Config
from .data import augment_views, cached_outputs

__all__ = ["soft_mse_loss", "volumetric_loss", "make_loss"]

LossFn = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]


def make_loss(stage: str, config: Config, *, generator: torch.Generator | None = None,
              skeleton: str = "h36m17") -> LossFn:
    """The loss function of one training stage (:data:`~.config.STAGES`).

    - ``"pretrain"``: the 2D backbone (:class:`mvbook.nn.SimpleBaseline`) on single views, MSE to
      Gaussian target heatmaps (``config.heatmap_sigma`` heatmap px; invisible joints masked),
      with :func:`~.data.augment_views` when ``config.augment`` (flip pairs of ``skeleton``).
      Summed over joints, averaged over pixels and images (a constant factor).
    - ``"algebraic"``: soft MSE (eq. 15) on the triangulated joints; logs ``mpjpe`` (mm).
    - ``"volumetric"``: eq. 16 with the cube centred on the ground-truth pelvis, rotated by a
      random yaw when ``config.train_yaw``; logs ``l1``, ``heatmap`` and ``mpjpe`` (mm).

    ``generator`` draws the augmentations and yaws (seed it for repeatable runs).
    """
    check_choice(stage, "stage", STAGES)
    if stage == "pretrain":
        return _heatmap_loss_fn(config, skeleton, generator)
    if stage == "algebraic":
        return _algebraic_loss_fn(config)
    return _volumetric_loss_fn(config, generator)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


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
    check_same_shape(pred, gt, ("pred", "gt"))
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
    dims = check_shape(pred, "pred", "(B, J, 3)")
    check_shape(gt, "gt", "(B, J, 3)", dims)
    dims = check_shape(volumes, "volumes", "(B, J, D, H, W)", dims)
    check_shape(grid, "grid", "(B, D, H, W, 3)", dims)
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



def _heatmap_loss_fn(config: Config, skeleton: str, generator: torch.Generator | None) -> LossFn:
    """Backbone pretraining: MSE between predicted and Gaussian target heatmaps.

    The loss function takes a :class:`mvbook.nn.SimpleBaseline` and a :class:`CropSet` batch;
    every view is an independent training image. Targets are Gaussians
    (``config.heatmap_sigma`` heatmap px) at the ground-truth 2D joints; invisible joints are
    masked. The MSE is summed over joints and averaged over pixels and images (a constant
    factor that only sets the loss scale). With ``config.augment`` the views are augmented by
    :func:`augment_views` (flip pairs of ``skeleton``).
    """
    flip_pairs = get_skeleton(skeleton).flip_pairs

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = to_device(batch, _device_of(model))
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


def _algebraic_loss_fn(config: Config) -> LossFn:
    """Algebraic model training: soft MSE (eq. 15) on the triangulated joints; logs MPJPE (mm)."""

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = to_device(batch, _device_of(model))
        out = model(batch["images"], batch["P"], cached=cached_outputs(batch, model))
        gt = batch["joints3d"]
        loss = soft_mse_loss(out["joints3d"], gt, config.soft_mse_threshold)
        err = (out["joints3d"] - gt).norm(dim=-1).mean().detach()
        return loss, {"mpjpe": err}

    return loss_fn


def _volumetric_loss_fn(config: Config, generator: torch.Generator | None) -> LossFn:
    """Volumetric model training: eq. 16 with the cube centred on the ground-truth pelvis, or
    (``config.train_root="predicted"``) on the batch's ``root`` (a trained algebraic model's).

    The cube is rotated by a random yaw about the vertical when ``config.train_yaw``.
    Logs ``l1``, ``heatmap`` (the regulariser before ``beta``) and ``mpjpe`` (mm).
    """

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        dev = _device_of(model)
        batch = to_device(batch, dev)
        gt = batch["joints3d"]
        if config.train_root == "predicted":
            if "root" not in batch:
                raise KeyError("train_root='predicted' needs a 'root' tensor (B, 3) in the training set: "
                               "add it with learnable_triangulation.with_roots(data, roots)")
            root = batch["root"].float()
        else:
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

