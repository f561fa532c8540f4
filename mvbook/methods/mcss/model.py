"""The MCSS network: trunk F, embedding network G (FC + L2 norm) and pose regressor H.

- F: the zoo ``trunk`` (a ResNet-18-shaped encoder, the stand-in for the paper's ImageNet
  ResNet-18), frozen; its last map is max-pooled (the paper pools 7 x 7 to 4 x 4) and
  flattened. :meth:`MCSSNet.encode` computes it once per crop.
- G (:class:`EmbeddingNet`): FC - ReLU - FC to ``embedding_dim`` (128), then L2 normalisation.
- H: one FC layer from the embedding to ``3 J`` coordinates in per-joint normalised units
  (the paper normalises its targets per joint); :class:`MCSSHead` holds G, H and the
  normalisation (buffers ``pose_mean``, ``pose_std``, mm) and returns poses in mm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvbook.crops import normalize_images
from mvbook.nn.backbones import SimpleBaseline
from mvbook.validation import check_shape

from .config import Config

__all__ = ["EmbeddingNet", "MCSSHead", "MCSSNet", "feature_dim"]


def feature_dim(trunk: SimpleBaseline, config: Config) -> int:
    """Length of the pooled, flattened trunk feature of one ``crop_size`` crop."""
    side = config.crop_size // (trunk.config.stem_stride * 2 ** (len(trunk.config.blocks) - 1))
    side = max(side // config.pool, 1)
    return trunk.encoding_channels * side * side


class EmbeddingNet(nn.Module):
    """G: features ``(N, D)`` -> unit-norm embeddings ``(N, E)``: FC - ReLU - FC - L2 norm."""

    def __init__(self, in_features: int, hidden: int = 256, embedding_dim: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, embedding_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), dim=-1)


class MCSSHead(nn.Module):
    """The trainable part: G and H on trunk features.

    ``forward(features (N, D)) -> dict``: ``embedding (N, E)`` unit norm, ``pose_norm
    (N, J, 3)`` normalised units, ``pose (N, J, 3)`` mm (``pose_norm * pose_std + pose_mean``).
    :meth:`set_normalization` sets the per-joint mean and std from the labelled targets.
    """

    def __init__(self, in_features: int, config: Config, num_joints: int = 17) -> None:
        super().__init__()
        self.config = config
        self.num_joints = num_joints
        self.embedding = EmbeddingNet(in_features, config.hidden, config.embedding_dim)
        self.regressor = nn.Linear(config.embedding_dim, 3 * num_joints)
        self.register_buffer("pose_mean", torch.zeros(num_joints, 3))
        self.register_buffer("pose_std", torch.ones(num_joints, 3))

    @torch.no_grad()
    def set_normalization(self, targets: torch.Tensor, min_std: float = 1.0) -> None:
        """Per-joint, per-coordinate mean and std (mm) of ``targets (N, J, 3)``; a std below
        ``min_std`` (the root, always 0) is raised to it."""
        check_shape(targets, "targets", f"(N, {self.num_joints}, 3)")
        self.pose_mean.copy_(targets.mean(0))
        std = targets.std(0) if len(targets) > 1 else torch.ones_like(self.pose_std)
        self.pose_std.copy_(std.clamp_min(min_std))

    def normalize(self, pose: torch.Tensor) -> torch.Tensor:
        return (pose - self.pose_mean) / self.pose_std

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.embedding(features)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedding(features)
        z = self.regressor(e).view(-1, self.num_joints, 3)
        return {"embedding": e, "pose_norm": z, "pose": z * self.pose_std + self.pose_mean}


class MCSSNet(nn.Module):
    """The frozen trunk F plus an :class:`MCSSHead`: image crops to embeddings and poses.

    The trunk stays in eval mode and has no trainable parameters: the paper's batch norm
    without affine parameters is here a batch norm whose affine parameters and statistics are
    frozen at their pretrained values. ``forward(images (N, 3, S, S) uint8) -> dict`` as
    :class:`MCSSHead`.
    """

    def __init__(self, trunk: SimpleBaseline, config: Config, num_joints: int = 17) -> None:
        super().__init__()
        self.config = config
        self.trunk = trunk.eval().requires_grad_(False)
        self.head = MCSSHead(feature_dim(trunk, config), config, num_joints)

    def train(self, mode: bool = True) -> MCSSNet:
        super().train(mode)
        self.trunk.eval()
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Pooled, flattened trunk features ``(N, D)`` of crops ``images (N, 3, S, S)`` uint8."""
        check_shape(images, "images", "(N, 3, S, S)")
        dev = next(self.trunk.parameters()).device
        parts = []
        for k in range(0, len(images), batch_size):
            x = normalize_images(images[k : k + batch_size].to(dev))
            g = self.trunk.encoder(self.trunk.stem(x))
            if self.config.pool > 1:
                g = F.max_pool2d(g, self.config.pool, ceil_mode=True)
            parts.append(g.flatten(1).float().cpu())
        if not parts:
            return torch.zeros(0, feature_dim(self.trunk, self.config))
        return torch.cat(parts)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        dev = next(self.head.parameters()).device
        return self.head(self.encode(images).to(dev))
