"""The reconstruction stage: the image path (S, E, D) trained with eq. 10 alone, stored.

Learning to find, crop and reconstruct a person over a background without any label takes the
paper 200k steps; the detector and the mask emerge slowly (the mask first collapses towards the
background, then grows back on the person). A 2-core CPU cannot do that inside a chapter's five
minutes, so the quick profile starts the chapter's runs from an image path trained beforehand
with the same code and no label (``plan.reconstruction == "shipped"``): its weights ship with
the package, with a card (recipe hash, steps, time, the held-out mask IoU) and a test that fails
when the recipe changes without them being retrained. Every run of the chapter then continues
the image path and trains the keypoint path from scratch. The ``smoke`` and ``full`` profiles
train the stage in the run (``plan.reconstruction == "train"``; ``full`` with 0 steps: every
part is trained jointly from scratch, as in the paper).

Rebuild the shipped weights (20 minutes on one thread of the 2-core reference machine)::

    python -m mvbook.methods.keypoint_discovery.pretrained --profile quick --overwrite
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvbook.studio.build import cache_root
from mvbook.studio.scenes import profile_config
from mvbook.zoo.store import half_state, load_state, write_model

from .config import Settings, settings
from .data import FrameSet, Splits, prepare
from .losses import batch_images
from .model import KeypointDiscovery
from .training import fit, new_model, trunk

__all__ = ["NAME", "IMAGE_PATH", "recipe", "recipe_digest", "weights_folder", "rebuild_command",
           "mask_iou", "train_reconstruction", "save_reconstruction", "load_reconstruction",
           "reconstruction_stage", "main"]

#: The stored model's name (``<folder>/reconstruction.pt`` and ``.json``).
NAME = "reconstruction"
#: The sub-networks the stage trains and stores.
IMAGE_PATH = ("detector", "encoder", "decoder")
_SHIPPED = Path(__file__).resolve().parent / "weights"


def recipe(plan: Settings, profile: str) -> dict[str, Any]:
    """Everything that determines the stage's weights: the image path's sizes, eq. 10's
    ``beta``, the schedule and the studio configuration of ``profile`` (seed 0)."""
    c = plan.config
    image_path = {k: getattr(c, k) for k in ("patch_size", "detector_stride", "box_range",
                                             "latent_dim", "width", "decoder_channels",
                                             "decoder_convs", "dropout", "beta")}
    return {
        "image_path": {k: list(v) if isinstance(v, tuple) else v for k, v in image_path.items()},
        "frame_size": plan.frame_size, "train_frames": plan.train_frames,
        "background_frames": plan.background_frames, "steps": plan.reconstruction_steps,
        "batch": plan.reconstruction_batch, "lr": plan.lr, "lr_slow": plan.lr_slow,
        "warmup": plan.reconstruction_warmup, "seed": 0, "zoo_profile": plan.zoo_profile,
        "studio": profile_config(profile, "single", 0).digest(),
    }


def recipe_digest(plan: Settings, profile: str) -> str:
    """A short hash of :func:`recipe`."""
    text = json.dumps(recipe(plan, profile), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def weights_folder(profile: str, cache_dir: str | Path | None = None) -> Path:
    """The package's folder for ``quick``; ``<cache>/keypoint_discovery/<profile>`` otherwise."""
    return _SHIPPED if profile == "quick" else cache_root(cache_dir) / "keypoint_discovery" / profile


def rebuild_command(profile: str) -> str:
    return (f"rebuild it with `python -m mvbook.methods.keypoint_discovery.pretrained "
            f"--profile {profile} --overwrite`")


@torch.no_grad()
def mask_iou(model: KeypointDiscovery, frames: FrameSet, every: int = 5,
             threshold: float = 0.5) -> float:
    """Mean IoU of the model's frame mask ``M > threshold`` with the true silhouette over every
    ``every``-th frame and all views (needs ``frames.masks``; measuring only)."""
    if frames.masks is None:
        raise ValueError("mask_iou needs frames with true masks")
    was = model.training
    model.eval()
    ious = []
    for s in range(0, len(frames), 32 * every):
        b = frames.batch(torch.arange(s, min(s + 32 * every, len(frames)), every))
        images, background = batch_images(b)
        out = model(images, b["K"], b["R"], b["t"], background, keypoints=False)
        pred, true = out["frame_mask"][:, :, 0] > threshold, b["masks"]
        inter = (pred & true).sum((-2, -1)).float()
        union = (pred | true).sum((-2, -1)).float()
        ious.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
    model.train(was)
    return float(torch.cat([i.flatten() for i in ious]).mean())


def train_reconstruction(plan: Settings, train: FrameSet, perceptual: nn.Module, *,
                         device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None,
                         progress: bool = True) -> KeypointDiscovery:
    """Train the image path with eq. 10 for ``plan.reconstruction_steps`` steps (seed 0)."""
    model = new_model(plan.config, 0)
    if plan.reconstruction_steps > 0:
        n = plan.reconstruction_steps
        fit(model, "reconst", train, n, perceptual=perceptual, batch=plan.reconstruction_batch,
            lr=plan.lr,
            lr_slow=plan.lr_slow, warmup=plan.reconstruction_warmup, device=device, seed=0,
            checkpoint_dir=checkpoint_dir, checkpoint_every=max(n // 20, 1), progress=progress,
            log_every=max(n // 100, 1))
    return model.cpu()


def save_reconstruction(model: KeypointDiscovery, plan: Settings, profile: str, *,
                        held_out: dict[str, float], seconds: float, device: str,
                        folder: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the image path's weights (half precision) and card; returns the weights' path."""
    state = {f"{name}.{k}": v for name in IMAGE_PATH
             for k, v in half_state(getattr(model, name)).items()}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    card = {"name": NAME, "profile": profile, "recipe": recipe_digest(plan, profile),
            "recipe_text": recipe(plan, profile), "steps": plan.reconstruction_steps,
            "seconds": round(seconds, 1), "device": device, "commit": commit,
            "held_out": held_out}
    wpath, _ = write_model(NAME, weights_folder(profile) if folder is None else folder, state,
                           card, overwrite=overwrite)
    return wpath


def load_reconstruction(plan: Settings, profile: str, seed: int = 0,
                        folder: str | Path | None = None) -> tuple[KeypointDiscovery, dict]:
    """A model whose image path is the stored stage (checked against :func:`recipe_digest`)
    and whose keypoint path is freshly drawn with ``seed``; and the card."""
    where = weights_folder(profile) if folder is None else Path(folder)
    state, card = load_state(NAME, where, recipe_digest(plan, profile), profile,
                             hint=rebuild_command(profile))
    model = new_model(plan.config, seed)
    for name in IMAGE_PATH:
        prefix = f"{name}."
        getattr(model, name).load_state_dict(
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return model, card


def reconstruction_stage(plan: Settings, splits: Splits, perceptual: nn.Module, *, profile: str,
                         device: str | torch.device = "auto", progress: bool = True,
                         ) -> tuple[KeypointDiscovery, dict[str, Any]]:
    """The stage the chapter's runs continue from: loaded when ``plan.reconstruction`` is
    ``"shipped"``, else trained now. Returns the model and a description (a card)."""
    if plan.reconstruction == "shipped":
        return load_reconstruction(plan, profile)
    t0 = time.perf_counter()
    model = train_reconstruction(plan, splits.train, perceptual, device=device,
                                 progress=progress)
    return model, {"steps": plan.reconstruction_steps,
                   "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    """Train the reconstruction stage of a profile and store its weights and card."""
    parser = argparse.ArgumentParser(
        prog="python -m mvbook.methods.keypoint_discovery.pretrained",
        description="Train and store the image path of chapter 30 (eq. 10 only, no label).")
    parser.add_argument("--profile", default="quick", choices=("smoke", "quick", "full"))
    parser.add_argument("--data", default="studio")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="folder (default: the profile's own)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="resumable checkpoints (an interrupted run continues from them)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing weights and card")
    args = parser.parse_args(argv)
    plan = settings(args.profile)
    out = weights_folder(args.profile) if args.out is None else Path(args.out)
    if (out / f"{NAME}.pt").exists() and not args.overwrite:
        parser.error(f"--out: {out / (NAME + '.pt')} exists; pass --overwrite to replace it")
    splits = prepare(args.data, plan, profile=args.profile)
    t0 = time.perf_counter()
    model = train_reconstruction(plan, splits.train, trunk(plan), device=args.device,
                                 checkpoint_dir=args.checkpoint_dir)
    seconds = time.perf_counter() - t0
    held_out = {"mask IoU": round(mask_iou(model, splits.test), 4)} \
        if splits.test.masks is not None else {}
    from mvbook.runtime import resolve_device

    path = save_reconstruction(model, plan, args.profile, held_out=held_out, seconds=seconds,
                               device=str(resolve_device(args.device)), folder=out,
                               overwrite=args.overwrite)
    print(f"wrote {path} ({seconds:.0f} s; held-out {held_out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

