"""The losses of unsupervised 3D keypoint discovery (Honari et al., sec. 3.3, eqs. 10-15).

- :func:`reconstruction_loss` (eq. 10): squared colour error of the composite I~ plus ``beta``
  times the squared differences of the first three feature maps of a frozen network (the
  paper's ImageNet ResNet-18; here the zoo ``trunk``'s stem and first two stages);
- :func:`mask_loss` (eq. 11): the keypoints' mask M~_p against a target mask
  (:func:`mask_target`: the model's own M_p, the paper's choice, or the Tab. 6 alternatives);
- :func:`coverage_loss` (eqs. 12-13): each re-projected keypoint's normalised Gaussian should
  fall inside M_p;
- :func:`centering_loss` (eq. 14): the box centre should be the keypoints' mean;
- :func:`make_loss`: eq. 15 with the terms of a :data:`~.config.LOSSES` row, as
  ``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`.

Squared norms are means over their elements (pixels, channels, keypoints), so that the paper's
weights (supplementary S.1.3) balance terms of similar size at any resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mvbook.crops import crop_images, normalize_images
from mvbook.heatmaps import gaussian_factors_2d
from mvbook.validation import check_choice, check_same_shape, check_shape

from .config import MASK_TARGETS, Config, loss_terms

__all__ = ["perceptual_features", "reconstruction_loss", "mask_target", "mask_loss",
           "coverage_loss", "centering_loss", "make_loss", "batch_images"]

#: How many of the trunk's maps (stem, stage 1, stage 2, ...) the perceptual term compares.
PERCEPTUAL_LAYERS = 3


def perceptual_features(trunk: nn.Module, images: torch.Tensor,
                        layers: int = PERCEPTUAL_LAYERS) -> list[torch.Tensor]:
    """The first ``layers`` maps of ``trunk.stage_features`` for images ``(N, 3, H, W)`` in
    [0, 1] (normalised as every network input of the book)."""
    return trunk.stage_features(normalize_images(images * 255.0), layers)


def reconstruction_loss(images: torch.Tensor, reconstruction: torch.Tensor, trunk: nn.Module,
                        beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 10 for frames ``(N, 3, H, W)`` in [0, 1]: ``(total, colour, perceptual)``.

    ``colour = mean (I - I~)^2``; ``perceptual = sum_l mean (Res_l(I) - Res_l(I~))^2`` over the
    first :data:`PERCEPTUAL_LAYERS` maps of the frozen ``trunk`` (the target's maps carry no
    gradient); ``total = colour + beta * perceptual``.
    """
    check_shape(images, "images", "(N, 3, H, W)")
    check_same_shape(reconstruction, images, ("reconstruction", "images"))
    colour = (images - reconstruction).pow(2).mean()
    with torch.no_grad():
        target = perceptual_features(trunk, images)
    ours = perceptual_features(trunk, reconstruction)
    perceptual = sum((a - b).pow(2).mean() for a, b in zip(ours, target, strict=True))
    return colour + beta * perceptual, colour, perceptual


def mask_target(kind: str, out: dict[str, Any], images: torch.Tensor | None = None,
                background: torch.Tensor | None = None,
                true_masks: torch.Tensor | None = None) -> torch.Tensor:
    """The target of eq. 11 in the patches, ``(B, C, 1, S, S)``, for ``kind`` in
    :data:`~.config.MASK_TARGETS`.

    - ``"own"``: the model's mask M_p, as a target (no gradient flows into it through eq. 11);
    - ``"true"``: the true masks ``(B, C, H, W)`` resampled from the detector's boxes;
    - ``"image_minus_background"``: ``sum_channels |I - B|`` of frames ``(B, C, 3, H, W)`` and
      background ``(B or 1, C, 3, H, W)``, divided by its maximum per frame, resampled from the
      boxes (Tab. 6, first row).

    The resampled targets follow the boxes differentiably, as the model's own mask does.
    """
    check_choice(kind, "kind", MASK_TARGETS)
    B, C = out["boxes"].shape[:2]
    S = out["mask"].shape[-1]
    if kind == "own":
        return out["mask"].detach()
    if kind == "true":
        if true_masks is None:
            raise ValueError("mask_target('true') needs true_masks (B, C, H, W)")
        frames = true_masks.to(out["mask"].dtype)[:, :, None]
    else:
        if images is None or background is None:
            raise ValueError("mask_target('image_minus_background') needs images and background")
        diff = (images - background).abs().sum(dim=2, keepdim=True)
        frames = diff / diff.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    flat = frames.flatten(0, 1).expand(-1, 3, -1, -1)
    return crop_images(flat, out["boxes"].flatten(0, 1), S)[:, :1].view(B, C, 1, S, S)


def mask_loss(keypoint_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 11: ``mean (M~_p - target)^2``."""
    check_same_shape(target, keypoint_mask, ("target", "keypoint_mask"))
    return (keypoint_mask - target).pow(2).mean()


def coverage_loss(reprojected: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eqs. 12-13: ``mean_n |1 - <H_n / sum H_n, M_p>|``.

    Args:
        reprojected: ``(..., N, 2)`` re-projected keypoints x^ in patch px.
        mask: ``(..., 1, S, S)`` the patch mask M_p in [0, 1] (used as a target: no gradient).
        sigma: the Gaussians' standard deviation in patch px.

    Returns the mean over keypoints and patches; 0 when every keypoint's Gaussian lies where
    the mask is 1. A keypoint outside the patch has its probability mass clipped by the patch
    border, so its Gaussian is renormalised over the pixels it still reaches.
    """
    check_shape(reprojected, "reprojected", "(..., N, 2)")
    S = mask.shape[-1]
    # <G_n / sum G_n, M> with the separable G_n = gy_n gx_n^T: gy_n^T M gx_n / (sum gy_n sum gx_n)
    gx, gy = gaussian_factors_2d(reprojected, (S, S), sigma)  # (..., N, S)
    total = (gx.sum(-1) * gy.sum(-1)).clamp_min(torch.finfo(gx.dtype).tiny)
    inside = torch.einsum("...nv,...vu,...nu->...n", gy, mask.detach()[..., 0, :, :], gx) / total
    return (1 - inside).abs().mean()


def centering_loss(centre: torch.Tensor, reprojected_frame: torch.Tensor,
                   image_size: tuple[int, int]) -> torch.Tensor:
    """Eq. 14: ``|u - mean_n x^_n|`` with the box centre ``u (..., 2)`` and the keypoints
    ``(..., N, 2)`` in frame px, measured in half frame sides (grid_sample's [-1, 1] units) and
    averaged over the boxes."""
    half = centre.new_tensor([image_size[0] / 2, image_size[1] / 2])
    return ((centre - reprojected_frame.mean(dim=-2)) / half).norm(dim=-1).mean()


def batch_images(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's frames ``(B, C, 3, H, W)`` and background ``(1, C, 3, H, W)`` in [0, 1]."""
    images = batch["images"].float() / 255.0
    background = batch["background"].float()
    if background.ndim == 4:
        background = background[None]
    return images, background


def make_loss(loss: str, config: Config, trunk: nn.Module | None
              ) -> Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]:
    """Eq. 15 with the terms of ``loss`` (a :data:`~.config.LOSSES` row such as
    ``"reconst+mask"``), weights ``config.gamma`` (mask), ``config.delta`` (coverage),
    ``config.eta`` (centering), ``config.beta`` (perceptual) and the mask target
    ``config.mask_target`` (which the coverage term reads too: the model's own M_p, or the
    alternative target of Tab. 6).

    ``loss_fn(model, batch)`` reads ``images (B, C, 3, H, W)`` uint8, ``background (C, 3, H, W)``
    in [0, 1], ``K``, ``R``, ``t`` and, for the true-mask target, ``masks (B, C, H, W)``. The
    ``trunk`` (frozen, moved to the frames' device) is needed when ``"reconst"`` is a term.
    """
    terms = loss_terms(loss)
    if "reconst" in terms and trunk is None:
        raise ValueError("make_loss: the reconstruction term needs the perceptual trunk")
    needs_keypoints = bool(terms & {"mask", "coverage", "centering"})
    if trunk is not None:
        trunk.eval().requires_grad_(False)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        images, background = batch_images(batch)
        out = model(images, batch["K"], batch["R"], batch["t"], background,
                    keypoints=needs_keypoints)
        total = images.new_zeros(())
        logs: dict[str, Any] = {}
        if "reconst" in terms:
            trunk.to(images.device)
            rec, colour, perceptual = reconstruction_loss(
                images.flatten(0, 1), out["reconstruction"].flatten(0, 1), trunk, config.beta)
            total = total + rec
            logs.update(L_reconst=rec.detach(), colour=colour.detach(),
                        perceptual=perceptual.detach())
        if terms & {"mask", "coverage"}:
            target = mask_target(config.mask_target, out, images, background,
                                 batch.get("masks"))
        if "mask" in terms:
            lm = mask_loss(out["keypoint_mask"], target)
            total = total + config.gamma * lm
            logs["L_mask"] = lm.detach()
        if "coverage" in terms:
            lc = coverage_loss(out["reprojected"], target, model_sigma(model))
            total = total + config.delta * lc
            logs["L_coverage"] = lc.detach()
        if "centering" in terms:
            H, W = images.shape[-2:]
            le = centering_loss(out["centre"], out["reprojected_frame"], (W, H))
            total = total + config.eta * le
            logs["L_centering"] = le.detach()
        return total, logs

    return loss_fn


def model_sigma(model: nn.Module) -> float:
    """The Gaussians' standard deviation (patch px) of a model, also inside DDP."""
    return float(getattr(model, "module", model).sigma_px)
