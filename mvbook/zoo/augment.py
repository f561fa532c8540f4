"""Colour augmentation shared by the zoo's tasks (the geometric part is :mod:`mvbook.crops`)."""

from __future__ import annotations

import torch

from mvbook.crops import normalize_images

from .recipes import Augment

__all__ = ["colour_augment"]


def colour_augment(images: torch.Tensor, a: Augment, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Per-channel gains in ``[1 - a.colour, 1 + a.colour]``, a random channel order with
    probability ``a.permute`` and Gaussian pixel noise of ``a.noise`` on uint8 crops
    ``(N, 3, S, S)``; returns normalised float images (:func:`mvbook.crops.normalize_images`)."""
    N = images.shape[0]
    dev = images.device
    x = images.float()
    gain = 1 + a.colour * (2 * torch.rand(N, 3, 1, 1, generator=generator) - 1)
    permute = torch.rand(N, generator=generator) < a.permute
    order = torch.where(permute[:, None], torch.argsort(torch.rand(N, 3, generator=generator), 1),
                        torch.arange(3).expand(N, 3))
    x = x.gather(1, order.to(dev)[:, :, None, None].expand_as(x)) * gain.to(dev)
    if a.noise > 0:
        noise = torch.randn(x.shape, generator=generator).to(dev)
        x = x + a.noise * noise
    return normalize_images(x.clamp(0, 255))
