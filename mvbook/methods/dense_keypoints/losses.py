"""The losses of eq. 9: labelled L_L (eq. 10), multiview geometric L_M (eqs. 11, 17),
distillation L_R (eq. 13) and multiview photometric L_T (eqs. 14-15).

The dense keypoint of a pixel is its predicted part and the UV of that part
(:class:`~.model.DenseNet`). The matchability of eq. 4 compares one canonical coordinate
(``Config.coordinate``): by default the rest-pose 3D point of (part, UV) on the body surface
(:func:`~.model.canonical_points`), in which neighbouring parts are near and the UV seam
closes; or the UV **within the predicted part** (pixels of different parts never match). L_M and L_T are the streaming, exact operators of :mod:`mvbook.dense`:
memory grows linearly with the foreground pixels, not with their product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvbook.dense import dense_epipolar_error, dense_photometric_error
from mvbook.geometry import fundamental_from_projections
from mvbook.train import to_device
from mvbook.zoo.dense import UV_WEIGHT, dense_loss, split_outputs, uv_at

from .config import TERMS, Config, loss_terms
from .model import field_pixels

__all__ = ["labelled_loss", "distillation_loss", "epipolar_loss", "photometric_loss",
           "pair_pixels", "make_loss"]


def labelled_loss(maps: torch.Tensor, iuv: torch.Tensor) -> torch.Tensor:
    """L_L (eq. 10) on labelled crops: the part cross-entropy at every pixel plus ``UV_WEIGHT``
    x a smooth L1 (beta 0.05 UV) of the true part's UV at the true foreground pixels: the loss
    ``phi_0`` was trained with (:func:`mvbook.zoo.dense.dense_loss`)."""
    return dense_loss(maps, iuv)[0]


def distillation_loss(maps: torch.Tensor, phi0: torch.Tensor) -> torch.Tensor:
    """L_R (eq. 13): stay close to ``phi_0`` on unlabelled crops. The part cross-entropy to
    ``phi_0``'s parts at every pixel, plus ``UV_WEIGHT`` x the L1 distance of the UV (at
    ``phi_0``'s part) to ``phi_0``'s UV at ``phi_0``'s foreground pixels.

    maps ``(N, 1 + 3P, h, h)``; phi0 ``(N, 3, h, h)`` part and UV (:meth:`DenseNet.field`).
    """
    logits, uv = split_outputs(maps)
    part = phi0[:, 0].round().long()
    ce = F.cross_entropy(logits.float(), part)
    fg = part > 0
    err = (uv_at(uv, part) - phi0[:, 1:]).abs().sum(1)
    return ce + UV_WEIGHT * (err * fg).sum() / fg.sum().clamp_min(1)


def pair_pixels(maps_a: torch.Tensor, maps_b: torch.Tensor, coordinate: str = "surface"
                ) -> tuple[dict, dict]:
    """:func:`~.model.field_pixels` of both views of ``B`` pairs from the network's maps: the
    predicted part (an argmax, no gradient) and the UV of that part (with gradient)."""
    out = []
    for maps in (maps_a, maps_b):
        logits, uv = split_outputs(maps)
        part = logits.argmax(1)
        out.append(field_pixels(part, uv_at(uv, part), coordinate))
    return out[0], out[1]


def epipolar_loss(maps_a: torch.Tensor, maps_b: torch.Tensor, P_a: torch.Tensor,
                  P_b: torch.Tensor, config: Config) -> torch.Tensor:
    """L_M (eq. 11): the mean over the ``B`` pairs of the dense epipolar error E(I, I') of
    eq. 17, in pixels of the output map. ``P_a``, ``P_b`` ``(B, 3, 4)``: the crop cameras at
    the output resolution."""
    pa, pb = pair_pixels(maps_a, maps_b, config.coordinate)
    Fm = fundamental_from_projections(P_a.double(), P_b.double()).to(pa["uv"].dtype)
    err = dense_epipolar_error(
        pa["xy"], pa["coord"], pb["xy"], pb["coord"], Fm, sigma=config.sigma, eps=config.eps,
        groups_a=pa["groups"], groups_b=pb["groups"], valid_a=pa["valid"], valid_b=pb["valid"],
        normalize=config.normalize, block=config.block)
    return err.mean()


def photometric_loss(maps_a: torch.Tensor, maps_b: torch.Tensor, colours_a: torch.Tensor,
                     colours_b: torch.Tensor, config: Config) -> torch.Tensor:
    """L_T (eq. 15): the mean over the ``B`` pairs of the dense photometric error T(I, I') of
    eq. 14; colours ``(B, 3, h, h)`` in [0, 1] (the crops at the output resolution)."""
    pa, pb = pair_pixels(maps_a, maps_b, config.coordinate)
    ca, cb = (c.flatten(2).transpose(1, 2) for c in (colours_a, colours_b))  # (B, h w, 3)
    h_w = maps_a.shape[-1]
    idx_a = (pa["xy"][..., 1] * h_w + pa["xy"][..., 0]).long()
    idx_b = (pb["xy"][..., 1] * h_w + pb["xy"][..., 0]).long()
    ca = ca.gather(1, idx_a[..., None].expand(-1, -1, 3)).to(pa["uv"].dtype)
    cb = cb.gather(1, idx_b[..., None].expand(-1, -1, 3)).to(pb["uv"].dtype)
    err = dense_photometric_error(
        ca, pa["coord"], cb, pb["coord"], sigma=config.sigma, eps=config.eps,
        groups_a=pa["groups"], groups_b=pb["groups"], valid_a=pa["valid"], valid_b=pb["valid"],
        normalize=config.normalize, block=config.block)
    return err.mean()


def make_loss(loss: str, config: Config):
    """``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`: the weighted
    sum of eq. 9 over the terms of ``loss`` (e.g. ``"L+R+M"``, :data:`~.config.LOSSES`) on a
    :class:`~.data.PairBatches` batch; the logs hold each term's value."""
    terms = loss_terms(loss)
    weights = {"L": config.w_labelled, "M": config.w_epipolar, "R": config.w_distill,
               "T": config.w_photometric}

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = to_device(batch, next(model.parameters()).device)
        B = batch["enc_a"].shape[0]
        maps = model(torch.cat([batch["enc_a"], batch["enc_b"]]))
        maps_a, maps_b = maps[:B], maps[B:]
        parts = {}
        if "enc_l" in batch:
            parts["L"] = lambda: labelled_loss(model(batch["enc_l"]), batch["iuv_l"])
        parts["R"] = lambda: distillation_loss(maps, torch.cat([batch["phi0_a"], batch["phi0_b"]]))
        parts["M"] = lambda: epipolar_loss(maps_a, maps_b, batch["P_a"], batch["P_b"], config)
        parts["T"] = lambda: photometric_loss(maps_a, maps_b, batch["colours_a"],
                                              batch["colours_b"], config)
        missing = terms - set(parts)
        if missing:
            raise ValueError(f"the loss has L_{sorted(missing)[0]} but the batch holds no labelled crops")
        total = maps.new_zeros(())
        logs = {}
        for name in sorted(terms, key=TERMS.index):
            value = parts[name]()
            total = total + weights[name] * value
            logs[f"L_{name}"] = value.detach()
        return total, logs

    return loss_fn
