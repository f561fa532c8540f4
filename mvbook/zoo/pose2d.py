"""The ``pose2d`` task: a 2D joint detector trained with labels on studio person crops.

Data (:func:`person_crops`): every view of every person of the recipe's studio datasets with
enough visible joints, cropped by :mod:`mvbook.crops` (a square box of ``crop_scale`` x the
longer side of the person box, resampled to ``crop_size``); in multi-person scenes the other
people stay in the crop as distractors. Training (:func:`make_loss`): random rotation, scale
and shift of the crops (:func:`mvbook.crops.warp_crops`) and colour changes, then the MSE to
Gaussian target heatmaps of the visible joints. No horizontal flips: the studio's bodies carry a
left/right cue (light left limbs) that a flip would teach the detector to ignore.

Readout (:func:`predict_joints`): the heatmap argmax refined to sub-pixel precision by a
Gaussian fit (:func:`mvbook.heatmaps.refine_argmax_2d`). Metrics (:func:`evaluate`): the 2D
error in *image* pixels (crop pixels scaled back by the box side) of visible joints, and PCK
at 2 and 5 image pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mvbook.crops import (
    crop_images,
    crop_points,
    crop_to_heatmap,
    heatmap_to_crop,
    normalize_images,
    random_warps,
    square_boxes,
    warp_crops,
)
from mvbook.heatmaps import refine_argmax_2d, render_gaussian_2d
from mvbook.nn.backbones import SimpleBaseline
from mvbook.skeletons import H36M_17
from mvbook.train import to_device

from .augment import colour_augment
from .bank import TensorBank
from .recipes import Recipe

__all__ = ["CropBank", "build_model", "person_crops", "make_loss", "predict_joints", "evaluate"]


class CropBank(TensorBank):
    """Single-view person crops in memory: ``images`` uint8 ``(N, 3, S, S)``, ``joints2d``
    ``(N, J, 2)`` crop px, ``visibility`` bool ``(N, J)``, ``box_side`` ``(N,)`` image px of the
    crop's box (crop px x ``box_side / S`` = image px)."""

    KEYS = ("images", "joints2d", "visibility", "box_side")


def build_model(rec: Recipe) -> SimpleBaseline:
    """The untrained network of the recipe (17 Human3.6M joints)."""
    return SimpleBaseline(H36M_17.num_joints, rec.backbone)


def person_crops(dataset, rec: Recipe, *, progress: bool = True) -> CropBank:
    """Crop every person view of ``dataset`` (a ``MultiviewDataset``) with enough visible joints.

    A person view is kept when the person is valid, its box has a side of at least 4 px and at
    least ``rec.min_visible`` joints are visible inside the crop.
    """
    S = rec.crop_size
    out: dict[str, list[torch.Tensor]] = {k: [] for k in CropBank.KEYS}
    for i in tqdm(range(len(dataset)), desc="person crops", disable=not progress, leave=False):
        s = dataset[i]
        images = torch.as_tensor(np.asarray(s["images"]))  # (C, 3, H, W)
        bbox = torch.as_tensor(np.asarray(s["bbox"]), dtype=torch.float32)  # (C, P, 4)
        j2d = torch.as_tensor(np.asarray(s["joints2d"]), dtype=torch.float32)  # (C, P, J, 2)
        vis = torch.as_tensor(np.asarray(s["visibility"])).bool()  # (C, P, J)
        valid = torch.as_tensor(np.asarray(s["person_valid"])).bool()  # (P,)
        C, P = bbox.shape[:2]
        side = (bbox[..., 2:] - bbox[..., :2]).amin(-1)
        keep = valid[None, :] & (side >= 4) & torch.isfinite(bbox).all(-1)
        safe = torch.where(keep[..., None], bbox, torch.tensor([0.0, 0.0, 1.0, 1.0]))
        boxes = square_boxes(safe, rec.crop_scale)
        uv = crop_points(j2d, boxes, S)
        vis = vis & ((uv >= -0.5) & (uv <= S - 0.5)).all(-1) & torch.isfinite(uv).all(-1)
        keep = keep & (vis.sum(-1) >= rec.min_visible)
        if not bool(keep.any()):
            continue
        cam, person = keep.nonzero(as_tuple=True)
        crops = crop_images(images[cam], boxes[cam, person], S)
        out["images"].append(crops)
        out["joints2d"].append(torch.nan_to_num(uv[cam, person]))
        out["visibility"].append(vis[cam, person])
        out["box_side"].append(boxes[cam, person, 2] - boxes[cam, person, 0])
    if not out["images"]:
        raise ValueError("the dataset holds no person view with enough visible joints")
    return CropBank({k: torch.cat(v) for k, v in out.items()})


def augment(batch: dict, rec: Recipe, generator: torch.Generator | None = None) -> dict:
    """The recipe's augmentation of a batch of uint8 crops: warps, then colour; returns
    normalised float ``images`` and the moved ``joints2d``/``visibility``."""
    a = rec.augment
    images = batch["images"]
    N, _, S, _ = images.shape
    angle, scale, shift = random_warps(N, a.rotation, a.scale, a.shift, S, generator)
    images, uv = warp_crops(images, batch["joints2d"], angle, scale, shift)
    vis = batch["visibility"] & ((uv >= -0.5) & (uv <= S - 0.5)).all(-1)
    return {"images": colour_augment(images, a, generator), "joints2d": uv, "visibility": vis}


def make_loss(rec: Recipe, generator: torch.Generator | None = None):
    """``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`: augmentation,
    then the heatmap MSE (summed over visible joints, averaged over pixels and crops); logs
    the training 2D error ``px`` (crop px, argmax readout) as a progress signal."""

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = to_device(batch, next(model.parameters()).device)
        b = augment(batch, rec, generator)
        heat = model(b["images"]).heatmaps
        hs = heat.shape[-1]
        target = render_gaussian_2d(crop_to_heatmap(b["joints2d"], hs, rec.crop_size), (hs, hs),
                                    rec.heatmap_sigma)
        w = b["visibility"].to(heat.dtype)
        loss = (((heat.float() - target) ** 2).mean((-2, -1)) * w).sum() / w.shape[0]
        with torch.no_grad():
            uv, _ = refine_argmax_2d(heat.detach().float())
            err = (heatmap_to_crop(uv, hs, rec.crop_size) - b["joints2d"]).norm(dim=-1)
            px = (err * w).sum() / w.sum().clamp_min(1)
        return loss, {"px": px}

    return loss_fn


@torch.no_grad()
def predict_joints(model: SimpleBaseline, images: torch.Tensor, *, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel joints ``(N, J, 2)`` crop px and peak values ``(N, J)`` of uint8 crops
    ``(N, 3, S, S)`` (the refined heatmap argmax)."""
    was = model.training
    model.eval().to(device)
    uvs, peaks = [], []
    S = images.shape[-1]
    for a in range(0, len(images), batch_size):
        heat = model(normalize_images(images[a:a + batch_size].to(device))).heatmaps.float()
        uv, peak = refine_argmax_2d(heat)
        uvs.append(heatmap_to_crop(uv, heat.shape[-1], S).cpu())
        peaks.append(peak.cpu())
    model.train(was)
    return torch.cat(uvs), torch.cat(peaks)


def evaluate(model: SimpleBaseline, bank: CropBank, *, device: str | torch.device = "cpu"
             ) -> dict[str, float]:
    """Held-out 2D metrics of visible joints: ``error px`` (mean, image px), ``median px``,
    ``PCK@2px`` and ``PCK@5px`` (%, image px), ``left/right swaps`` (% of visible limb joints
    nearer their partner's ground truth than their own, by more than 2 image px)."""
    uv, _ = predict_joints(model, bank.tensors["images"], device=device)
    gt = bank.tensors["joints2d"]
    vis = bank.tensors["visibility"]
    to_image = (bank.tensors["box_side"] / bank.tensors["images"].shape[-1])[:, None]
    err = (uv - gt).norm(dim=-1) * to_image  # image px
    e = err[vis]
    partner = torch.tensor(H36M_17.flip_permutation)
    limb = partner != torch.arange(len(partner))
    swap_err = (uv - gt[:, partner]).norm(dim=-1) * to_image
    swapped = (swap_err + 2 < err) & vis & vis[:, partner] & limb
    limbs = (vis & limb).sum().clamp_min(1)
    return {
        "error px": float(e.mean()),
        "median px": float(e.median()),
        "PCK@2px": 100 * float((e <= 2).float().mean()),
        "PCK@5px": 100 * float((e <= 5).float().mean()),
        "left/right swaps": 100 * float(swapped.sum() / limbs),
        "crops": float(len(bank)),
    }
