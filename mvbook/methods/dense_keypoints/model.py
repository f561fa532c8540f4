"""The dense keypoint network: the zoo's ``dense0`` (``phi_0``) with its encoder frozen.

``phi`` maps a person crop to, at every pixel of its ``h x h`` output map, ``1 + P`` part logits
(0: background, the foreground mask of the paper's heads) and a UV pair per part, like
DensePose and the paper's four heads (sec. 4.1). The **dense keypoint** of a pixel is its
predicted part I (the argmax) and the UV of that part: ``phi(x) = (I, U, V)``.

:class:`DenseNet` splits the network into the frozen encoder (:meth:`DenseNet.encode`, run once
per crop) and the trainable head (deconvolutions + the 1x1 output layer,
:meth:`DenseNet.forward` on encoder maps). Its batch normalisation keeps ``phi_0``'s statistics
(the layers stay in eval mode while training): the batches mix two domains and are small.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mvbook.crops import normalize_images
from mvbook.nn.backbones import SimpleBaseline
from mvbook.studio.surface import canonical_points
from mvbook.validation import check_choice
from mvbook.zoo.dense import split_outputs, uv_at

from .config import COORDINATES

__all__ = ["DenseNet", "foreground_pixels", "field_pixels", "canonical_points"]


class DenseNet(nn.Module):
    """``phi``: a frozen encoder and a trainable dense head, both copied from ``base``."""

    def __init__(self, base: SimpleBaseline) -> None:
        super().__init__()
        base = copy.deepcopy(base)
        self.stem, self.encoder = base.stem, base.encoder
        for p in [*self.stem.parameters(), *self.encoder.parameters()]:
            p.requires_grad_(False)
        self.head = nn.Sequential(base.deconv, base.final)

    def train(self, mode: bool = True) -> DenseNet:
        super().train(mode)
        for m in self.modules():  # frozen encoder, and the head's statistics stay phi_0's
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 crops ``(N, 3, S, S)`` -> the frozen encoder's maps ``(N, D, e, e)``."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = self.encoder(self.stem(normalize_images(images.to(dev))))
        self.train(was)
        return out

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        """Encoder maps ``(N, D, e, e)`` -> output maps ``(N, 1 + 3P, h, h)``."""
        return self.head(encoding)

    @staticmethod
    def split(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Part logits ``(N, 1 + P, h, h)`` and UV ``(N, P, 2, h, h)`` in [0, 1]."""
        return split_outputs(maps)

    @staticmethod
    def field(maps: torch.Tensor) -> torch.Tensor:
        """The dense keypoint field ``(N, 3, h, h)``: the argmax part I (0: background) and the
        UV of that part, as float (no gradient through I)."""
        logits, uv = split_outputs(maps)
        part = logits.argmax(1)
        return torch.cat([part[:, None].to(uv.dtype), uv_at(uv, part)], 1)


def foreground_pixels(part: torch.Tensor, uv: torch.Tensor, max_pixels: int | None = None
                      ) -> dict[str, torch.Tensor]:
    """The foreground pixels of ``N`` maps as padded lists.

    Args:
        part: ``(N, h, w)`` long, 0 background; uv: ``(N, 2, h, w)`` (may carry gradients).
        max_pixels: pad length (default: the largest foreground count of the batch).
    Returns:
        ``xy (N, K, 2)`` pixel coordinates (u right, v down) in the map's pixels, ``uv (N, K,
        2)``, ``part (N, K)`` and ``valid (N, K)``; foreground pixels first, in raster order.
    """
    N, h, w = part.shape
    fg = part > 0
    K = int(fg.sum((1, 2)).max()) if max_pixels is None else int(max_pixels)
    K = max(K, 1)
    order = torch.argsort((~fg).flatten(1).to(torch.int8), dim=1, stable=True)[:, :K]  # (N, K)
    ys, xs = torch.meshgrid(torch.arange(h, device=part.device), torch.arange(w, device=part.device),
                            indexing="ij")
    grid = torch.stack([xs, ys], -1).flatten(0, 1).to(uv.dtype)  # (h w, 2)
    return {
        "xy": grid[order],
        "uv": uv.flatten(2).transpose(1, 2).gather(1, order[..., None].expand(-1, -1, 2)),
        "part": part.flatten(1).gather(1, order),
        "valid": fg.flatten(1).gather(1, order),
    }


def field_pixels(part: torch.Tensor, uv: torch.Tensor, coordinate: str = "surface"
                 ) -> dict[str, torch.Tensor | None]:
    """:func:`foreground_pixels` of dense keypoint fields with the canonical coordinate
    ``"coord"`` the matchability compares and the ``"groups"`` it matches within: the rest-pose
    surface point of (part, UV) in mm and one group (``coordinate="surface"``), or the UV and
    the part (``"uv"``: pixels of different parts never match). ``coord`` carries ``uv``'s
    gradient."""
    check_choice(coordinate, "coordinate", COORDINATES)
    px = foreground_pixels(part, uv)
    if coordinate == "surface":
        px["coord"], px["groups"] = canonical_points(px["part"], px["uv"]), None
    else:
        px["coord"], px["groups"] = px["uv"], px["part"]
    return px
