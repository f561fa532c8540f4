"""The 2.5D network: an image crop to ``J`` heatmaps and ``J`` latent depth maps."""

from __future__ import annotations

import torch
from torch import nn

from mvbook.crops import normalize_images
from mvbook.heatmaps import soft_argmax_2d
from mvbook.nn.backbones import SimpleBaseline

from .config import Config

__all__ = ["Weak25DNet"]


class Weak25DNet(nn.Module):
    """Image crop -> 2.5D pose: ``J`` heatmaps and ``J`` latent depth maps.

    ``forward(images (N, 3, S, S) uint8 or normalised float) -> dict`` with
    ``joints2d (N, J, 2)`` heatmap pixels (soft-argmax), ``zr (N, J)`` scale-normalised
    root-relative depth (the root's read-out is subtracted, so ``zr[:, root_joint] = 0``),
    ``log_prob (N, J, h, w)`` the log spatial softmax and ``depth_maps``.
    """

    def __init__(self, num_joints: int = 17, config: Config | None = None) -> None:
        super().__init__()
        self.config = config or Config()
        self.num_joints = num_joints
        self.backbone = SimpleBaseline(2 * num_joints, self.config.backbone)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalize_images(images) if images.dtype == torch.uint8 else images
        maps = self.backbone(x).heatmaps
        J = self.num_joints
        logits, depth_maps = maps[:, :J], maps[:, J:]
        h, w = logits.shape[-2:]
        log_prob = torch.log_softmax(self.config.beta * logits.flatten(-2).float(), dim=-1)
        prob = log_prob.exp()
        uv = soft_argmax_2d(prob.view(-1, J, h, w), normalize=False)
        z = (prob * depth_maps.flatten(-2).float()).sum(-1)
        zr = z - z[:, self.config.root_joint, None]  # root-relative by construction: zr_root = 0
        return {"joints2d": uv, "zr": zr, "log_prob": log_prob.view(-1, J, h, w),
                "depth_maps": depth_maps}

