"""The MCSS network: trunk F, embedding network G (FC + L2 norm) and pose regressor H.

- F: the zoo ``trunk`` (a ResNet-18-shaped encoder, the stand-in for the paper's ImageNet
  ResNet-18). Its first stages are frozen and computed once per crop
  (:meth:`MCSSNet.encode`); its last ``config.finetune_stages`` stages (0: none, the CPU
  profiles) are copied into the head and trained with it. The last map is max-pooled (the
  paper pools 7 x 7 to 4 x 4) and flattened.
- G (:class:`EmbeddingNet`): FC - ReLU - FC to ``embedding_dim`` (128), then L2 normalisation.
- H: one FC layer from the embedding to ``3 J`` coordinates in per-joint normalised units
  (the paper normalises its targets per joint); :class:`MCSSHead` holds the trainable stages,
  G, H and the normalisation (buffers ``pose_mean``, ``pose_std``, mm) and returns poses in mm.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mvbook.crops import normalize_images
from mvbook.nn.backbones import SimpleBaseline
from mvbook.validation import check_shape

from .config import Config

__all__ = ["EmbeddingNet", "MCSSHead", "MCSSNet", "feature_dim", "encoding_shape"]


def _split(trunk: SimpleBaseline, config: Config) -> int:
    n = len(trunk.encoder)
    if not 0 <= config.finetune_stages <= n:
        raise ValueError(f"config.finetune_stages must be in [0, {n}], got {config.finetune_stages}")
    return n - config.finetune_stages


def encoding_shape(trunk: SimpleBaseline, config: Config) -> tuple[int, int, int]:
    """Shape ``(channels, h, w)`` of what :meth:`MCSSNet.encode` stores per crop before
    flattening: the pooled last map (``finetune_stages = 0``) or the input of the first
    trainable stage."""
    with torch.no_grad():
        x = trunk.stem(torch.zeros(1, 3, config.crop_size, config.crop_size))
        for stage in list(trunk.encoder)[: _split(trunk, config)]:
            x = stage(x)
        if config.finetune_stages == 0 and config.pool > 1:
            x = F.max_pool2d(x, config.pool, ceil_mode=True)
    return tuple(x.shape[1:])  # type: ignore[return-value]


def feature_dim(trunk: SimpleBaseline, config: Config) -> int:
    """Length of the stored (flattened) trunk feature of one ``crop_size`` crop."""
    c, h, w = encoding_shape(trunk, config)
    return c * h * w


class EmbeddingNet(nn.Module):
    """G: features ``(N, D)`` -> unit-norm embeddings ``(N, E)``: FC - ReLU - FC - L2 norm."""

    def __init__(self, in_features: int, hidden: int = 256, embedding_dim: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, embedding_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), dim=-1)


class MCSSHead(nn.Module):
    """The trainable part: the trunk's last stages (optional), G and H, on stored features.

    ``forward(features (N, D)) -> dict``: ``embedding (N, E)`` unit norm, ``pose_norm
    (N, J, 3)`` normalised units, ``pose (N, J, 3)`` mm (``pose_norm * pose_std + pose_mean``).
    With ``stages`` (trainable copies of the trunk's last stages) the features are the
    flattened input maps of shape ``in_shape`` of those stages, pooled by ``config.pool``
    after them. :meth:`set_normalization` sets the per-joint mean and std of the targets.
    """

    def __init__(self, in_features: int, config: Config, num_joints: int = 17,
                 stages: nn.Module | None = None, in_shape: tuple[int, int, int] | None = None
                 ) -> None:
        super().__init__()
        self.config = config
        self.num_joints = num_joints
        self.stages = stages
        self.in_shape = in_shape
        if stages is not None:
            if in_shape is None or in_features != in_shape[0] * in_shape[1] * in_shape[2]:
                raise ValueError(f"in_shape {in_shape} must hold the {in_features} features")
            with torch.no_grad():
                was = stages.training
                probe = stages.eval()(torch.zeros(1, *in_shape))
                stages.train(was)
            if config.pool > 1:
                probe = F.max_pool2d(probe, config.pool, ceil_mode=True)
            g_in = probe[0].numel()
        else:
            g_in = in_features
        self.embedding = EmbeddingNet(g_in, config.hidden, config.embedding_dim)
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

    def _features(self, features: torch.Tensor) -> torch.Tensor:
        if self.stages is None:
            return features
        assert self.in_shape is not None
        x = self.stages(features.view(-1, *self.in_shape))
        if self.config.pool > 1:
            x = F.max_pool2d(x, self.config.pool, ceil_mode=True)
        return x.flatten(1)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.embedding(self._features(features))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embed(features)
        z = self.regressor(e).view(-1, self.num_joints, 3)
        return {"embedding": e, "pose_norm": z, "pose": z * self.pose_std + self.pose_mean}


class MCSSNet(nn.Module):
    """The trunk F plus an :class:`MCSSHead`: image crops to embeddings and poses.

    The trunk's frozen part stays in eval mode and has no trainable parameters: the paper's
    batch norm without affine parameters is here a batch norm whose affine parameters and
    statistics are frozen at their pretrained values. ``forward(images (N, 3, S, S) uint8) ->
    dict`` as :class:`MCSSHead`. :meth:`new_head` makes a fresh head (trainable stages copied
    from the pretrained trunk).
    """

    def __init__(self, trunk: SimpleBaseline, config: Config, num_joints: int = 17) -> None:
        super().__init__()
        self.config = config
        self.num_joints = num_joints
        self.trunk = trunk.eval().requires_grad_(False)
        self.split = _split(trunk, config)
        self.head = self.new_head()

    def new_head(self, config: Config | None = None) -> MCSSHead:
        """A fresh :class:`MCSSHead` for this trunk's features (seed torch first); ``config``
        may change the head's settings but not ``crop_size``, ``pool`` or ``finetune_stages``."""
        config = config or self.config
        for key in ("crop_size", "pool", "finetune_stages"):
            if getattr(config, key) != getattr(self.config, key):
                raise ValueError(f"config.{key} must stay {getattr(self.config, key)} (the "
                                 "stored features depend on it)")
        stages = None
        shape = encoding_shape(self.trunk, config)
        if config.finetune_stages:
            tail = list(self.trunk.encoder)[self.split :]
            stages = copy.deepcopy(nn.Sequential(*tail)).cpu().requires_grad_(True).train()
        return MCSSHead(shape[0] * shape[1] * shape[2], config, self.num_joints, stages, shape)

    def train(self, mode: bool = True) -> MCSSNet:
        super().train(mode)
        self.trunk.eval()
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Frozen-part features ``(N, D)`` of crops ``images (N, 3, S, S)`` uint8: the pooled,
        flattened last map, or the flattened input of the first trainable stage."""
        check_shape(images, "images", "(N, 3, S, S)")
        dev = next(self.trunk.parameters()).device
        parts = []
        for k in range(0, len(images), batch_size):
            g = self.trunk.stem(normalize_images(images[k : k + batch_size].to(dev)))
            for stage in list(self.trunk.encoder)[: self.split]:
                g = stage(g)
            if self.config.finetune_stages == 0 and self.config.pool > 1:
                g = F.max_pool2d(g, self.config.pool, ceil_mode=True)
            parts.append(g.flatten(1).float().cpu())
        if not parts:
            return torch.zeros(0, feature_dim(self.trunk, self.config))
        return torch.cat(parts)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        dev = next(self.head.parameters()).device
        return self.head(self.encode(images).to(dev))
