"""Data of unsupervised 3D keypoint discovery: whole calibrated frames and a background.

The paper works on uncropped frames (500 x 500 in Human3.6M) of every view at one instant, the
cameras' calibration, and a background per camera: the per-pixel median of the sequence
(:func:`median_background`). Nothing else is read to train: the 3D joints are read only to
measure (sec. 3.5) and the true masks only for the Tab. 6 ablation.

:class:`FrameSet` holds a split in memory (uint8 frames); :class:`FrameBatches` draws training
batches of ``batch`` instants with the views of :attr:`FrameBatches.views`; :func:`prepare`
opens the studio (or a converted dataset) and returns the train and test sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mvbook.train import distributed_info
from mvbook.validation import check_shape

from .config import Settings

__all__ = ["KEYS", "FrameSet", "Splits", "median_background", "resize_frames", "load_frames", "FrameBatches",
           "prepare"]

#: The dataset keys the chapter reads (``joints3d`` to measure, ``masks`` for Tab. 6 only).
KEYS = ["images", "masks", "joints3d", "K", "R", "t", "dist", "image_size"]


def median_background(images: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """The background of each camera: the per-pixel median over time (the paper's footnote 1).

    Args:
        images: ``(F, C, 3, H, W)`` uint8 frames of one static camera rig.
        frames: use this many frames spread evenly over ``F`` (None: all), which bounds the
            memory and time of the median.

    Returns:
        ``(C, 3, H, W)`` float32 in [0, 1]. A pixel is background wherever the person covers it
        in fewer than half of the frames.
    """
    check_shape(images, "images", "(F, C, 3, H, W)")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 frames, got {images.dtype}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images must hold at least one frame")
    if frames is not None and frames < n:
        idx = torch.linspace(0, n - 1, frames).round().long().unique()
        images = images[idx]
    return images.median(dim=0).values.float() / 255.0


@dataclass
class FrameSet:
    """Synchronised frames of one split, in memory.

    ``images (F, C, 3, H, W)`` uint8; ``K (F, C, 3, 3)``, ``R (F, C, 3, 3)``, ``t (F, C, 3)``
    pinhole cameras (world mm -> frame px); ``joints3d (F, J, 3)`` world mm (to measure only);
    ``masks (F, C, H, W)`` bool, the person's true silhouette (Tab. 6 and pictures only; None
    when the dataset has none); ``background (C, 3, H, W)`` float in [0, 1]; ``subject``
    (list of F names); ``frame (F,)`` frame index in its sequence.
    """

    images: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    joints3d: torch.Tensor
    masks: torch.Tensor | None
    background: torch.Tensor
    subject: list[str]
    frame: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def views(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` px."""
        return int(self.images.shape[-1]), int(self.images.shape[-2])

    def select_views(self, views: Sequence[int]) -> FrameSet:
        """The same instants seen by ``views`` only."""
        v = list(views)
        if not v or any(not 0 <= i < self.views for i in v):
            raise ValueError(f"views must be indices in 0..{self.views - 1}, got {views!r}")
        return dataclasses.replace(
            self, images=self.images[:, v], K=self.K[:, v], R=self.R[:, v], t=self.t[:, v],
            masks=None if self.masks is None else self.masks[:, v],
            background=self.background[v])

    def batch(self, index: torch.Tensor | Sequence[int]) -> dict[str, torch.Tensor]:
        """The frames ``index`` as a model batch (``images`` uint8, cameras, ``background``,
        ``masks`` when present, ``joints3d``)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        out = {"images": self.images[idx], "K": self.K[idx], "R": self.R[idx], "t": self.t[idx],
               "background": self.background, "joints3d": self.joints3d[idx]}
        if self.masks is not None:
            out["masks"] = self.masks[idx]
        return out


@dataclass
class Splits:
    """The training and test :class:`FrameSet` of a dataset."""

    train: FrameSet
    test: FrameSet


def _evenly(n: int, keep: int | None) -> np.ndarray:
    if keep is None or keep >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, keep).round().astype(int))


def resize_frames(images: torch.Tensor, K: torch.Tensor, masks: torch.Tensor | None,
                  size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Frames ``(F, C, 3, H, W)`` uint8 resized to ``size`` px wide (area average, aspect kept),
    their intrinsics ``K (F, C, 3, 3)`` (:meth:`mvbook.geometry.Camera.resize`'s rule
    ``u' = s (u + 1/2) - 1/2``) and masks ``(F, C, H, W)`` (area fraction > 1/2)."""
    F_, C, _, H, W = images.shape
    if size == W:
        return images, K, masks
    s = size / W
    height = max(1, round(H * s))
    out = torch.nn.functional.interpolate(images.flatten(0, 1).float(), size=(height, size),
                                          mode="area")
    images = out.round().clamp(0, 255).to(torch.uint8).view(F_, C, 3, height, size)
    scale = torch.tensor([size / W, height / H], dtype=K.dtype)
    K = K.clone()
    K[..., 0, 0] *= scale[0]
    K[..., 1, 1] *= scale[1]
    K[..., :2, 2] = scale * (K[..., :2, 2] + 0.5) - 0.5
    if masks is not None:
        m = torch.nn.functional.interpolate(masks.flatten(0, 1)[:, None].float(),
                                            size=(height, size), mode="area")
        masks = (m[:, 0] > 0.5).view(F_, C, height, size)
    return images, K, masks


def load_frames(dataset: Any, keep: int | None = None, background_frames: int | None = None,
                progress: bool = True, desc: str = "frames", frame_size: int | None = None,
                ) -> FrameSet:
    """Read ``keep`` frames (evenly spread; None: all) of a :class:`MultiviewDataset` into a
    :class:`FrameSet`, resized to ``frame_size`` px wide (None: as stored,
    :func:`resize_frames`); the background is the median of ``background_frames`` of them.

    Frames with lens distortion are refused: the chapter's projections (eqs. 6-8) are pinhole.
    """
    idx = _evenly(len(dataset), keep)
    if len(idx) == 0:
        raise ValueError(f"{desc}: the dataset split is empty")
    rows: dict[str, list] = {k: [] for k in ("images", "K", "R", "t", "joints3d", "masks")}
    subjects, frames = [], []
    has_masks = "masks" in dataset.keys
    for i in tqdm(idx, desc=desc, disable=not progress, leave=False):
        s = dataset[int(i)]
        dist = s.get("dist")
        if dist is not None and bool((dist.abs() > 0).any()):
            raise ValueError(f"{desc}: frame {int(i)} has lens distortion; undistort the frames "
                             "first (the chapter's patch cameras, eq. 6, are pinhole)")
        joints = s["joints3d"]
        if joints.ndim == 3:  # (P, J, 3) with one person
            joints = joints[0]
        rows["images"].append(s["images"])
        rows["K"].append(s["K"].float())
        rows["R"].append(s["R"].float())
        rows["t"].append(s["t"].float())
        rows["joints3d"].append(joints.float())
        if has_masks:
            rows["masks"].append(s["masks"] > 0)
        subjects.append(s["subject"])
        frames.append(s["frame"])
    images, K = torch.stack(rows["images"]), torch.stack(rows["K"])
    masks = torch.stack(rows["masks"]) if has_masks else None
    if frame_size is not None:
        images, K, masks = resize_frames(images, K, masks, frame_size)
    return FrameSet(
        images=images, K=K, R=torch.stack(rows["R"]),
        t=torch.stack(rows["t"]), joints3d=torch.stack(rows["joints3d"]), masks=masks,
        background=median_background(images, background_frames), subject=subjects,
        frame=torch.tensor(frames))


class FrameBatches:
    """Endless training batches: ``batch`` random instants of a :class:`FrameSet`, every view.

    Under ``torchrun`` each rank draws its own stream (``shards_by_rank``).
    """

    shards_by_rank = True

    def __init__(self, frames: FrameSet, batch: int, seed: int = 0) -> None:
        if batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch}")
        self.frames = frames
        self.batch = min(batch, len(frames))
        self.seed = seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = distributed_info()
        gen = torch.Generator().manual_seed(self.seed * 1000 + info.rank)
        n = len(self.frames)
        while True:
            yield self.frames.batch(torch.randperm(n, generator=gen)[: self.batch])


def prepare(data: Any, plan: Settings, *, profile: str, seed: int = 0,
            progress: bool = True, **studio: Any) -> Splits:
    """The train and test :class:`FrameSet` of ``data`` (``"studio"`` or a converted
    single-person dataset folder), with the subjects and frame counts of ``plan``."""
    from mvbook.studio import open_data

    keys = list(KEYS)
    common = dict(profile=profile, seed=seed, progress=progress, **studio)
    ds_train = open_data(data, split="train", subjects=list(plan.subjects["train"]), **common)
    if "masks" not in ds_train.keys:
        keys.remove("masks")
    if "dist" not in ds_train.keys:
        keys.remove("dist")
    ds_train = open_data(data, split="train", subjects=list(plan.subjects["train"]), keys=keys,
                         **common)
    ds_test = open_data(data, split="test", keys=keys, **common)
    show = progress and distributed_info().is_main
    train = load_frames(ds_train, plan.train_frames, plan.background_frames, show,
                        "train frames", plan.frame_size)
    test = load_frames(ds_test, plan.test_frames, plan.background_frames, show, "test frames",
                       plan.frame_size)
    return Splits(train=train, test=test)
