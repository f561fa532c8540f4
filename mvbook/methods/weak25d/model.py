"""The 2.5D networks: an image crop to ``J`` heatmaps and ``J`` latent depth maps.

- :class:`Weak25DNet`: one network trained from scratch, ``2 J`` output maps.
- :class:`ZooWeak25D`: a frozen pretrained 2D detector (the zoo's ``pose2d``) and a
  :class:`DepthHead` on its encoder features; the depth maps are read out under the softmax of
  the detector's heatmaps, so only the head learns. :meth:`ZooWeak25D.encode` computes what
  the frozen part gives once per crop (:class:`Encoded`), so training touches the head only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mvbook.crops import normalize_images
from mvbook.heatmaps import refine_argmax_2d, soft_argmax_2d
from mvbook.nn.backbones import SimpleBaseline

from .config import Config

__all__ = ["Weak25DNet", "DepthHead", "Encoded", "ZooWeak25D"]


def _readout(log_prob: torch.Tensor, depth_maps: torch.Tensor, root_joint: int) -> torch.Tensor:
    """Root-relative depths ``zr (N, J)``: each depth map averaged under its joint's spatial
    distribution ``exp(log_prob)``; the root's read-out is subtracted (``zr_root = 0``)."""
    z = (log_prob.exp() * depth_maps.float()).flatten(-2).sum(-1)
    return z - z[:, root_joint, None]


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
        log_prob = log_prob.view(-1, J, h, w)
        uv = soft_argmax_2d(log_prob.exp(), normalize=False)
        zr = _readout(log_prob, depth_maps, self.config.root_joint)
        return {"joints2d": uv, "zr": zr, "log_prob": log_prob, "depth_maps": depth_maps}


@dataclass
class Encoded:
    """What a frozen detector gives for ``N`` crops (:meth:`ZooWeak25D.encode`).

    ``joints2d (N, J, 2)`` heatmap px (sub-pixel peaks), ``log_prob (N, J, h', w')`` the log
    spatial softmax ``softmax(beta H)`` summed over blocks to the depth head's resolution
    ``h'``, ``encoding (N, Cg, hg, wg)`` the encoder output the depth head reads.
    """

    joints2d: torch.Tensor
    log_prob: torch.Tensor
    encoding: torch.Tensor

    def __len__(self) -> int:
        return len(self.joints2d)

    def __getitem__(self, index) -> Encoded:
        return Encoded(self.joints2d[index], self.log_prob[index], self.encoding[index])

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(self.joints2d.to(device), self.log_prob.to(device), self.encoding.to(device))

    @staticmethod
    def cat(parts: list[Encoded]) -> Encoded:
        return Encoded(torch.cat([p.joints2d for p in parts]), torch.cat([p.log_prob for p in parts]),
                       torch.cat([p.encoding for p in parts]))


class DepthHead(nn.Module):
    """Encoder features -> ``J`` latent depth maps at twice the encoder's resolution.

    A transposed 4x4 convolution (x2), a 3x3 convolution (both with batch norm and ReLU) and a
    1x1 layer. The last layer starts at zero, so an untrained head predicts flat poses
    (``zr = 0``), the 2D-only baseline. ``forward(encoding (N, Cg, hg, wg), log_prob
    (N, J, 2 hg, 2 wg)) -> zr (N, J)``.
    """

    def __init__(self, in_channels: int, num_joints: int = 17, channels: int = 64,
                 root_joint: int = 0) -> None:
        super().__init__()
        self.root_joint = root_joint
        self.maps = nn.Sequential(
            nn.ConvTranspose2d(in_channels, channels, 4, 2, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_joints, 1),
        )
        last = self.maps[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, encoding: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        depth_maps = self.maps(encoding)
        if depth_maps.shape[-2:] != log_prob.shape[-2:]:
            raise ValueError(f"log_prob must be at the depth maps' resolution "
                             f"{tuple(depth_maps.shape[-2:])}, got {tuple(log_prob.shape[-2:])}")
        return _readout(log_prob, depth_maps, self.root_joint)


class ZooWeak25D(nn.Module):
    """A frozen pretrained 2D detector plus a trainable :class:`DepthHead`: a 2.5D network.

    The 2D joints are the detector's sub-pixel heatmap peaks (:func:`refine_argmax_2d`); the
    depth of joint ``j`` is the head's map ``D_j`` read out under ``softmax(beta H_j)``, the
    detector's heatmap as a spatial distribution (the 2.5D read-out), summed over blocks to the
    head's resolution (exact for maps that are constant on those blocks). Only ``head`` has
    trainable parameters; the detector stays in eval mode.

    ``forward(images) -> dict`` as :class:`Weak25DNet` (``joints2d``, ``zr``, ``log_prob``).
    """

    def __init__(self, detector: SimpleBaseline, config: Config, num_joints: int = 17) -> None:
        super().__init__()
        if detector.num_joints != num_joints:
            raise ValueError(f"detector must predict {num_joints} joints, got {detector.num_joints}")
        self.config = config
        self.num_joints = num_joints
        self.detector = detector.eval().requires_grad_(False)
        self.head = DepthHead(detector.encoding_channels, num_joints, config.depth_channels,
                              config.root_joint)

    def with_new_head(self) -> ZooWeak25D:
        """A model sharing this (frozen) detector with a new, flat depth head (seed torch first)."""
        return ZooWeak25D(self.detector, self.config, self.num_joints).to(
            next(self.detector.parameters()).device)

    def train(self, mode: bool = True) -> ZooWeak25D:
        super().train(mode)
        self.detector.eval()  # frozen: its batch-norm statistics never move
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> Encoded:
        """The frozen part for crops ``images (N, 3, S, S)`` uint8, ``batch_size`` at a time."""
        dev = next(self.detector.parameters()).device
        parts = []
        for k in range(0, len(images), batch_size):
            out = self.detector(normalize_images(images[k:k + batch_size].to(dev)))
            heat = out.heatmaps.float()
            uv, _ = refine_argmax_2d(heat)
            log_prob = torch.log_softmax(self.config.beta * heat.flatten(-2), -1).view_as(heat)
            block = heat.shape[-1] // (2 * out.encoding.shape[-1])
            if block > 1:  # sum of probabilities over block x block pixels, in log space
                log_prob = torch.log(F.avg_pool2d(log_prob.exp(), block) * block**2 + 1e-30)
            parts.append(Encoded(uv, log_prob, out.encoding.float()))
        if not parts:
            raise ValueError("images is empty: nothing to encode")
        return Encoded.cat(parts)

    def depth(self, encoded: Encoded) -> torch.Tensor:
        """``zr (N, J)`` from the encoded crops (differentiable in the head's parameters)."""
        return self.head(encoded.encoding, encoded.log_prob)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(images)
        return {"joints2d": enc.joints2d, "zr": self.depth(enc), "log_prob": enc.log_prob}
