"""Data of the weakly supervised 2.5D method: person crops in memory, batches, augmentation.

Three sets, each cropped once around person 0 (:mod:`mvbook.crops`): independent 2D-labelled
images (:class:`ImageSet`, each view its own image), unlabelled synchronised multiview frames
(:class:`MultiviewSet`) and a monocular test set (an :class:`ImageSet`). 2D joints are in
heatmap pixels and ``K`` are the crops' intrinsics at heatmap resolution, so the 2.5D
reconstruction works in the network's own output pixels. :func:`prepare` opens the chapter's
three subject splits and builds all three.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mvbook.crops import crop_camera, crop_person, crop_to_heatmap, normalize_images
from mvbook.geometry import Camera
from mvbook.train import distributed_info

from .config import SUBJECTS, Config, Settings
from .pose25d import pose_to_25d, scale_normalize

__all__ = [
    "ImageSet",
    "MultiviewSet",
    "Splits",
    "prepare",
    "prepare_images",
    "prepare_multiview",
    "WeakBatches",
    "EncodedBatches",
    "color_jitter",
]


@dataclass
class ImageSet:
    """Independent person crops (views of frames treated as separate images).

    ``images (N, 3, S, S)`` uint8; ``joints2d (N, J, 2)`` heatmap px; ``visibility (N, J)``;
    ``K (N, 3, 3)`` heatmap-pixel intrinsics; ``joints_cam (N, J, 3)`` mm (for evaluation and
    the fully supervised model only); ``zr (N, J)``; ``bone (N,)`` reference length (mm);
    ``subject`` list of str; ``image_scale (N,)`` image pixels per heatmap pixel (None: unknown).
    """

    images: torch.Tensor
    joints2d: torch.Tensor
    visibility: torch.Tensor
    K: torch.Tensor
    joints_cam: torch.Tensor
    zr: torch.Tensor
    bone: torch.Tensor
    subject: list[str]
    image_scale: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class MultiviewSet:
    """Synchronised crops ``images (F, C, 3, S, S)`` uint8 with ``K (F, C, 3, 3)`` (heatmap px).

    The labels (``joints2d``, ``visibility``, ``zr``, ``joints_cam``) are kept for the fully
    supervised model and for pictures; the weakly supervised loss never reads them.
    """

    images: torch.Tensor
    K: torch.Tensor
    joints2d: torch.Tensor
    visibility: torch.Tensor
    zr: torch.Tensor
    joints_cam: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def _sample_crops(sample: Mapping[str, Any], config: Config) -> dict[str, torch.Tensor]:
    """Crops, labels and heatmap-pixel intrinsics of person 0 in all views of one sample."""
    S, h = config.crop_size, config.heatmap_size
    images = torch.as_tensor(sample["images"])
    dist = sample.get("dist")
    camera = Camera(torch.as_tensor(sample["K"]).double(), torch.as_tensor(sample["R"]).double(),
                    torch.as_tensor(sample["t"]).double(),
                    None if dist is None else torch.as_tensor(dist).double())
    X = torch.as_tensor(sample["joints3d"])[0].double()  # (J, 3) world mm
    uv_img = torch.as_tensor(sample["joints2d"])[:, 0].double()  # (C, J, 2)
    # undistorted crops when the cameras have lens distortion (pinhole crop cameras)
    cut = crop_person(images, camera, torch.as_tensor(sample["bbox"])[:, 0].double(), uv_img, S,
                      config.crop_scale)
    crops, box = cut.images, cut.boxes.double()
    pinhole = Camera(camera.K, camera.R, camera.t)
    K_hm = crop_camera(pinhole, box, h).K  # the crop read out at heatmap resolution
    uv = crop_to_heatmap(cut.joints2d, h, S)
    visible = ((uv >= -0.5) & (uv <= h - 0.5)).all(-1)
    Xc = camera.world_to_camera(X[None].expand(len(box), -1, -1))
    _, zr = pose_to_25d(Xc, K_hm, config.reference_bone, config.root_joint)
    _, bone = scale_normalize(Xc, config.reference_bone)
    return {"images": crops, "K": K_hm.float(), "joints2d": uv.float(), "visibility": visible,
            "joints_cam": Xc.float(), "zr": zr.float(), "bone": bone.float(),
            "image_scale": ((box[:, 2] - box[:, 0]) / h).float()}


def _iterate(dataset: Any, indices: Sequence[int], progress: bool, desc: str) -> Iterator[Any]:
    for i in tqdm(indices, desc=desc, disable=not progress, leave=False):
        yield dataset[int(i)]


def _pick(n_total: int, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def prepare_images(dataset: Any, config: Config, max_frames: int | None = None,
                   views: Sequence[int] | None = None, seed: int = 0,
                   progress: bool = True) -> ImageSet:
    """Crops of every selected view of up to ``max_frames`` frames of ``dataset`` as
    independent images (a 2D-labelled collection, or a monocular test set)."""
    out: dict[str, list] = {k: [] for k in ("images", "K", "joints2d", "visibility", "joints_cam",
                                            "zr", "bone", "image_scale")}
    subjects: list[str] = []
    for sample in _iterate(dataset, _pick(len(dataset), max_frames, seed), progress, "crops"):
        crops = _sample_crops(sample, config)
        sel = list(views) if views is not None else list(range(crops["images"].shape[0]))
        for k in out:
            out[k].append(crops[k][sel])
        subjects += [str(sample.get("subject", ""))] * len(sel)
    if not subjects:
        raise ValueError("dataset is empty: no images to prepare")
    cat = {k: torch.cat(v) for k, v in out.items()}
    return ImageSet(subject=subjects, **cat)


def prepare_multiview(dataset: Any, config: Config, max_frames: int | None = None,
                      seed: int = 0, progress: bool = True) -> MultiviewSet:
    """Synchronised crops of up to ``max_frames`` frames of ``dataset`` (all views)."""
    out: dict[str, list] = {k: [] for k in ("images", "K", "joints2d", "visibility", "joints_cam",
                                            "zr")}
    for sample in _iterate(dataset, _pick(len(dataset), max_frames, seed), progress, "crops"):
        crops = _sample_crops(sample, config)
        for k in out:
            out[k].append(crops[k])
    if not out["images"]:
        raise ValueError("dataset is empty: no frames to prepare")
    return MultiviewSet(**{k: torch.stack(v) for k, v in out.items()})


class WeakBatches:
    """Endless-per-epoch iterable of training batches for :func:`mvbook.train.train`.

    Each batch holds ``batch_2d`` labelled images (keys ``images``, ``joints2d``,
    ``visibility``) and ``batch_mv`` multiview frames (keys ``images_mv (B, C, 3, S, S)``,
    ``K_mv`` and, for the fully supervised model, ``joints2d_mv``, ``visibility_mv``,
    ``zr_mv``). One epoch is
    ``len(images2d) // batch_2d`` batches; the order comes from ``self.generator`` (seeded,
    ``seed + rank`` under ``torchrun``), which :func:`mvbook.train.train` saves in checkpoints.
    """

    shards_by_rank = True

    def __init__(self, images2d: ImageSet, multiview: MultiviewSet | None, batch_2d: int,
                 batch_mv: int, seed: int = 0) -> None:
        if batch_2d < 1 or len(images2d) < batch_2d:
            raise ValueError(f"batch_2d must be in [1, {len(images2d)}], got {batch_2d}")
        if multiview is not None and not 1 <= batch_mv <= len(multiview):
            raise ValueError(f"batch_mv must be in [1, {len(multiview)}], got {batch_mv}")
        self.images2d = images2d
        self.multiview = multiview
        self.batch_2d = batch_2d
        self.batch_mv = batch_mv
        # under torchrun every rank draws its own stream (seed + rank)
        self.generator = torch.Generator().manual_seed(seed + distributed_info().rank)

    def __len__(self) -> int:
        return len(self.images2d) // self.batch_2d

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        perm = torch.randperm(len(self.images2d), generator=self.generator)
        for k in range(len(self)):
            i = perm[k * self.batch_2d : (k + 1) * self.batch_2d]
            batch = {"images": self.images2d.images[i], "joints2d": self.images2d.joints2d[i],
                     "visibility": self.images2d.visibility[i]}
            if self.multiview is not None:
                mv = self.multiview
                f = torch.randint(len(mv), (self.batch_mv,), generator=self.generator)
                batch.update(images_mv=mv.images[f], K_mv=mv.K[f], joints2d_mv=mv.joints2d[f],
                             visibility_mv=mv.visibility[f], zr_mv=mv.zr[f])
            yield batch


class EncodedBatches:
    """Endless-per-epoch iterable of batches of encoded multiview frames, for the depth head of
    a :class:`~.model.ZooWeak25D` (:func:`~.losses.make_depth_loss`).

    ``encoded``: :meth:`~.model.ZooWeak25D.encode` of ``multiview.images.flatten(0, 1)`` (frame
    major, all ``C`` views). Each batch holds ``batch_mv`` random frames: ``encoding`` and
    ``log_prob`` (``batch_mv * C`` crops), ``joints2d_pred (B, C, J, 2)`` the detector's 2D,
    ``K_mv`` and, for the fully supervised head, ``zr_mv``. One epoch is
    ``len(multiview) // batch_mv`` batches, drawn by ``self.generator`` (seeded, ``seed + rank``
    under ``torchrun``; :func:`mvbook.train.train` saves it in checkpoints).
    """

    shards_by_rank = True

    def __init__(self, encoded: Any, multiview: MultiviewSet, batch_mv: int, seed: int = 0) -> None:
        F_, C = multiview.images.shape[:2]
        if len(encoded) != F_ * C:
            raise ValueError(f"encoded must hold the {F_} x {C} crops of multiview, "
                             f"got {len(encoded)}")
        if not 1 <= batch_mv <= F_:
            raise ValueError(f"batch_mv must be in [1, {F_}], got {batch_mv}")
        self.encoded = encoded
        self.multiview = multiview
        self.batch_mv = batch_mv
        self.views = C
        self.generator = torch.Generator().manual_seed(seed + distributed_info().rank)

    def __len__(self) -> int:
        return len(self.multiview) // self.batch_mv

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        mv, C = self.multiview, self.views
        for _ in range(len(self)):
            f = torch.randint(len(mv), (self.batch_mv,), generator=self.generator)
            rows = (f[:, None] * C + torch.arange(C)).flatten()
            enc = self.encoded[rows]
            yield {"encoding": enc.encoding, "log_prob": enc.log_prob,
                   "joints2d_pred": enc.joints2d.view(len(f), C, *enc.joints2d.shape[1:]),
                   "K_mv": mv.K[f], "zr_mv": mv.zr[f]}


def color_jitter(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Random per-image, per-channel gain and offset (and a channel shuffle with probability
    1/2) applied to uint8 crops ``(N, 3, S, S)``; returns normalised float images. Uses the
    global torch random stream (seeded and checkpointed by :func:`mvbook.train.train`)."""
    x = normalize_images(images)
    n = x.shape[0]
    gain = 1.0 + strength * (2 * torch.rand(n, 3, 1, 1, device=x.device) - 1)
    bias = 2.0 * strength * (2 * torch.rand(n, 3, 1, 1, device=x.device) - 1)
    x = x * gain + bias
    perm = torch.argsort(torch.rand(n, 3, device=x.device), dim=1)
    shuffle = torch.rand(n, device=x.device) < 0.5
    idx = torch.where(shuffle[:, None], perm, torch.arange(3, device=x.device).expand(n, 3))
    return torch.gather(x, 1, idx[:, :, None, None].expand_as(x))


@dataclass
class Splits:
    """The chapter's three sets (:func:`prepare`)."""

    images2d: ImageSet
    multiview: MultiviewSet
    test: ImageSet


def prepare(data: Any, plan: Settings, *, profile: str, seed: int = 0,
            progress: bool = True) -> Splits:
    """Open the chapter's subject splits of ``data`` (``"studio"`` or a converted dataset folder)
    and crop them: 2D-labelled images of :data:`~.config.SUBJECTS` ``["2d"]``, unlabelled
    multiview frames of ``["multiview"]`` and the test images (``split="test"``)."""
    from mvbook.studio import open_data

    keys = ["images", "K", "R", "t", "joints3d", "joints2d", "bbox", "image_size"]
    common = dict(profile=profile, seed=seed, keys=keys)
    ds_2d = open_data(data, split="train", subjects=SUBJECTS["2d"], **common)
    ds_mv = open_data(data, split="train", subjects=SUBJECTS["multiview"], **common)
    ds_test = open_data(data, split="test", **common)
    cfg = plan.config
    return Splits(
        images2d=prepare_images(ds_2d, cfg, plan.frames["2d"], seed=seed, progress=progress),
        multiview=prepare_multiview(ds_mv, cfg, plan.frames["multiview"], seed=seed + 1,
                                    progress=progress),
        test=prepare_images(ds_test, cfg, plan.frames["test"], seed=seed + 2, progress=progress),
    )
