"""The ``dense0`` task: dense surface coordinates (part index + UV per part, like DensePose).

The studio renders, for every pixel, the body part ``I`` it sees (0: background, 1..16 the
parts of :data:`mvbook.studio.PART_NAMES`) and the surface coordinates ``(U, V)`` in
``[0, 1]^2`` of that point on the part's capsule. The network predicts, at heatmap resolution,
``1 + P`` part logits and ``2 P`` UV maps (one ``(U, V)`` pair per part, read at the predicted
or true part), as DensePose's ``phi_0`` does.

Data (:func:`person_crops`): person crops of the images (bilinear) and of the IUV maps
(nearest, at the output resolution, other people's pixels set to background). Training
(:func:`make_loss`): the same rotation/scale/shift warp of image and labels, colour changes,
then cross-entropy on parts plus a smooth L1 on the true part's UV at foreground pixels.
Metrics (:func:`evaluate`): part accuracy on foreground pixels, foreground IoU, and the UV error
(mean distance in UV units where the predicted part is right).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mvbook.crops import crop_images, normalize_images, random_warps, square_boxes, warp_crops
from mvbook.nn.backbones import SimpleBaseline
from mvbook.studio import NUM_PARTS
from mvbook.train import to_device

from .augment import colour_augment
from .bank import TensorBank
from .recipes import Recipe

__all__ = ["DenseBank", "build_model", "person_crops", "make_loss", "predict_iuv", "evaluate",
           "split_outputs", "uv_at", "dense_loss", "UV_WEIGHT"]

#: Weight of the UV term against the part cross-entropy.
UV_WEIGHT = 5.0


class DenseBank(TensorBank):
    """Person crops with dense labels: ``images`` uint8 ``(N, 3, S, S)``, ``iuv`` float
    ``(N, 3, h, h)`` (part index, U, V at the network's output resolution), ``box_side (N,)``."""

    KEYS = ("images", "iuv", "box_side")


def output_size(rec: Recipe) -> int:
    return rec.crop_size // rec.backbone.output_stride


def build_model(rec: Recipe) -> SimpleBaseline:
    """The untrained network of the recipe: ``1 + P`` part logits and ``2 P`` UV maps."""
    return SimpleBaseline(1 + 3 * NUM_PARTS, rec.backbone)


def person_crops(dataset, rec: Recipe, *, progress: bool = True) -> DenseBank:
    """Crop every person view of ``dataset`` (a ``MultiviewDataset`` storing ``iuv`` and
    ``masks``) with at least ``rec.min_visible`` visible joints."""
    S, h = rec.crop_size, output_size(rec)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in DenseBank.KEYS}
    for i in tqdm(range(len(dataset)), desc="dense crops", disable=not progress, leave=False):
        s = dataset[i]
        if "iuv" not in s or "masks" not in s:
            raise ValueError("the dataset must store 'iuv' and 'masks' (StudioConfig.store)")
        images = torch.as_tensor(np.asarray(s["images"]))                        # (C, 3, H, W)
        iuv = torch.as_tensor(np.asarray(s["iuv"]), dtype=torch.float32)          # (C, 3, H, W)
        masks = torch.as_tensor(np.asarray(s["masks"]))                           # (C, H, W)
        bbox = torch.as_tensor(np.asarray(s["bbox"]), dtype=torch.float32)        # (C, P, 4)
        vis = torch.as_tensor(np.asarray(s["visibility"])).bool()                 # (C, P, J)
        valid = torch.as_tensor(np.asarray(s["person_valid"])).bool()             # (P,)
        side = (bbox[..., 2:] - bbox[..., :2]).amin(-1)
        keep = valid[None] & (side >= 4) & torch.isfinite(bbox).all(-1) & (vis.sum(-1) >= rec.min_visible)
        if not bool(keep.any()):
            continue
        cam, person = keep.nonzero(as_tuple=True)
        boxes = square_boxes(bbox[cam, person], rec.crop_scale)
        # the person's own pixels only: other people are background in its labels
        own = (masks[cam] == (person + 1)[:, None, None].to(masks.dtype))[:, None]
        labels = crop_images(iuv[cam] * own, boxes, h, mode="nearest")
        out["images"].append(crop_images(images[cam], boxes, S))
        out["iuv"].append(labels)
        out["box_side"].append(boxes[:, 2] - boxes[:, 0])
    if not out["images"]:
        raise ValueError("the dataset holds no person view with enough visible joints")
    return DenseBank({k: torch.cat(v) for k, v in out.items()})


def augment(batch: dict, rec: Recipe, generator: torch.Generator | None = None) -> dict:
    """Warp images (bilinear) and labels (nearest) by one random transform per crop, then
    colour; returns normalised float ``images`` and the warped ``iuv``."""
    a = rec.augment
    images, iuv = batch["images"], batch["iuv"]
    N, _, S, _ = images.shape
    h = iuv.shape[-1]
    angle, scale, shift = random_warps(N, a.rotation, a.scale, a.shift, S, generator)
    images, _ = warp_crops(images, None, angle, scale, shift)
    iuv, _ = warp_crops(iuv, None, angle, scale, shift * (h / S), mode="nearest")
    return {"images": colour_augment(images, a, generator), "iuv": iuv}


def split_outputs(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Network maps ``(N, 1 + 3P, h, w)`` -> part logits ``(N, 1 + P, h, w)`` and UV
    ``(N, P, 2, h, w)`` (a sigmoid keeps them in ``[0, 1]``)."""
    logits = maps[:, : 1 + NUM_PARTS]
    uv = torch.sigmoid(maps[:, 1 + NUM_PARTS:].float()).unflatten(1, (NUM_PARTS, 2))
    return logits, uv


def uv_at(uv: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """The UV pair of part ``part (N, h, w)`` (1..P; 0 reads part 1) from ``uv (N, P, 2, h, w)``."""
    idx = (part.clamp_min(1) - 1)[:, None, None].expand(-1, 1, 2, -1, -1)
    return uv.gather(1, idx)[:, 0]  # (N, 2, h, w)


def dense_loss(maps: torch.Tensor, iuv: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Part cross-entropy (every pixel) + ``UV_WEIGHT`` x smooth L1 of the true part's UV
    (foreground pixels)."""
    logits, uv = split_outputs(maps)
    part = iuv[:, 0].round().long()
    ce = F.cross_entropy(logits.float(), part)
    fg = part > 0
    pred = uv_at(uv, part)
    err = F.smooth_l1_loss(pred, iuv[:, 1:], beta=0.05, reduction="none").sum(1)
    l_uv = (err * fg).sum() / fg.sum().clamp_min(1)
    with torch.no_grad():
        acc = ((logits.argmax(1) == part) & fg).sum() / fg.sum().clamp_min(1)
    return ce + UV_WEIGHT * l_uv, {"ce": ce.detach(), "uv": l_uv.detach(), "part_acc": acc}


def make_loss(rec: Recipe, generator: torch.Generator | None = None):
    """``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`."""

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = to_device(batch, next(model.parameters()).device)
        b = augment(batch, rec, generator)
        return dense_loss(model(b["images"]).heatmaps, b["iuv"])

    return loss_fn


@torch.no_grad()
def predict_iuv(model: SimpleBaseline, images: torch.Tensor, *, batch_size: int = 64,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Predicted ``(N, 3, h, h)`` part index and UV (at the predicted part) of uint8 crops."""
    was = model.training
    model.eval().to(device)
    out = []
    for a in range(0, len(images), batch_size):
        logits, uv = split_outputs(model(normalize_images(images[a:a + batch_size].to(device))).heatmaps)
        part = logits.argmax(1)
        out.append(torch.cat([part[:, None].float(), uv_at(uv, part)], 1).cpu())
    model.train(was)
    return torch.cat(out)


def evaluate(model: SimpleBaseline, bank: DenseBank, *, device: str | torch.device = "cpu"
             ) -> dict[str, float]:
    """Held-out dense metrics: ``part accuracy`` (% of true foreground pixels given the right
    part), ``foreground IoU`` (%), ``UV error`` (mean distance in UV units where the part is
    right) and ``pixels`` (true foreground pixels measured)."""
    pred = predict_iuv(model, bank.tensors["images"], device=device)
    gt = bank.tensors["iuv"]
    p_part, g_part = pred[:, 0].long(), gt[:, 0].round().long()
    fg, pfg = g_part > 0, p_part > 0
    right = (p_part == g_part) & fg
    uv_err = (pred[:, 1:] - gt[:, 1:]).norm(dim=1)[right]
    return {
        "part accuracy": 100 * float(right.sum() / fg.sum().clamp_min(1)),
        "foreground IoU": 100 * float((fg & pfg).sum() / (fg | pfg).sum().clamp_min(1)),
        "UV error": float(uv_err.mean()) if uv_err.numel() else float("nan"),
        "pixels": float(fg.sum()),
    }
