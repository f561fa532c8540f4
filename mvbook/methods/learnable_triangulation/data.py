"""Data of learnable triangulation: multiview person crops in memory, backbone caches, augmentation.

:func:`prepare` crops every view of every sample around the person's box once
(:mod:`mvbook.crops`) into a :class:`CropSet`; the crop cameras ``P = K' [R | t]`` with
``K'`` from :func:`mvbook.crops.crop_camera` are what the models project with. With a frozen
backbone its outputs are computed once (:func:`cache_backbone`) and the heads train on them.
Crops of cameras with lens distortion are undistorted as they are cut, so every crop camera is
a pinhole. A test set too large to hold is cropped chunk by chunk instead (:class:`CropStream`,
:func:`test_source`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mvbook.crops import crop_person, normalize_images
from mvbook.geometry import Camera
from mvbook.nn.backbones import BackboneOutput, SimpleBaseline
from mvbook.runtime import resolve_device
from mvbook.train import unwrap_model
from mvbook.validation import check_shape

from .config import Config

__all__ = [
    "CACHE_KEYS",
    "CropSet",
    "CropStream",
    "frame_stride",
    "prepare",
    "test_source",
    "cache_backbone",
    "cached_outputs",
    "augment_views",
    "select_views",
    "partner_joints",
    "with_roots",
]

#: Batch keys of cached backbone outputs (:func:`cache_backbone`).
CACHE_KEYS = ("heatmaps", "features", "encoding")


class CropSet(torch.utils.data.Dataset):
    """Pre-cropped multiview samples held in memory (built by :func:`prepare`).

    Item ``i`` is a dict: ``images`` uint8 ``(C, 3, S, S)``; ``P`` float32 ``(C, 3, 4)`` crop
    cameras; ``joints2d`` ``(C, J, 2)`` crop px; ``visibility`` bool ``(C, J)``; ``joints3d``
    ``(J, 3)`` mm; ``subject``, ``action`` int64 (indices into :attr:`subjects`,
    :attr:`actions`); ``index`` int64.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], subjects: list[str], actions: list[str]):
        n = len(tensors["images"])
        for k, v in tensors.items():
            if len(v) != n:
                raise ValueError(f"tensor {k!r} has {len(v)} rows, expected {n}")
        self.tensors = tensors
        self.subjects = subjects
        self.actions = actions

    def __len__(self) -> int:
        return len(self.tensors["images"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    @property
    def num_views(self) -> int:
        return int(self.tensors["images"].shape[1])

    def replace(self, **tensors: torch.Tensor) -> CropSet:
        """A copy with some tensors replaced (e.g. ``images=occluded``); the rest are shared."""
        unknown = sorted(set(tensors) - set(self.tensors))
        if unknown:
            raise ValueError(f"replace: no tensors named {unknown}; this set has {sorted(self.tensors)}")
        return CropSet(dict(self.tensors, **tensors), self.subjects, self.actions)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> CropSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return CropSet({k: v[idx] for k, v in self.tensors.items()}, self.subjects, self.actions)

    def all(self) -> dict[str, torch.Tensor]:
        """The whole set as one batch."""
        return dict(self.tensors)


def _meta_strings(sample: dict, key: str) -> str:
    value = sample.get(key, "")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value)


def prepare(
    dataset: Iterable[dict],
    config: Config,
    *,
    person: int = 0,
    max_samples: int | None = None,
    stride: int = 1,
    indices: Sequence[int] | None = None,
    progress: bool = True,
) -> CropSet:
    """Crop every view of every sample around the person's box (done once, kept in memory).

    Args:
        dataset: a ``MultiviewDataset`` (or any sequence of sample dicts in the common format).
        config: gives ``crop_size`` and ``crop_scale``.
        person: which person of each sample (the chapter's data are single-person, P = 1).
        max_samples / stride: take every ``stride``-th sample, at most ``max_samples``.
        indices: the samples to take (then ``stride`` and ``max_samples`` are not used).
    """
    if indices is None:
        n_total = len(dataset)  # type: ignore[arg-type]
        indices = list(range(0, n_total, stride))
        if max_samples is not None:
            indices = indices[:max_samples]
    if not len(indices):
        raise ValueError("prepare: no samples to crop (empty dataset or indices)")
    S = config.crop_size
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("images", "P", "joints2d", "visibility", "joints3d", "subject", "action", "index")
    }
    subjects: list[str] = []
    actions: list[str] = []
    for i in tqdm(indices, desc="cropping", disable=not progress):
        s = dataset[i]  # type: ignore[index]
        s = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
        images = s["images"]
        # undistorted crops when the cameras have lens distortion: the crop camera is a pinhole P
        cut = crop_person(images, Camera.from_sample(s), s["bbox"][:, person],
                          s["joints2d"][:, person].float(), S, config.crop_scale)
        crops, P, uv_crop = cut.images, cut.camera.P.float(), cut.joints2d.float()  # P: (C, 3, 4)
        inside = ((uv_crop >= -0.5) & (uv_crop <= S - 0.5)).all(-1)
        subj = _meta_strings(s, "subject")
        act = _meta_strings(s, "action")
        if subj not in subjects:
            subjects.append(subj)
        if act not in actions:
            actions.append(act)
        out["images"].append(crops)
        out["P"].append(P)
        out["joints2d"].append(uv_crop)
        out["visibility"].append(s["visibility"][:, person].bool() & inside)
        out["joints3d"].append(s["joints3d"][person].float())
        out["subject"].append(torch.tensor(subjects.index(subj)))
        out["action"].append(torch.tensor(actions.index(act)))
        out["index"].append(torch.tensor(int(s.get("index", i))))
    tensors = {k: torch.stack(v) for k, v in out.items()}
    return CropSet(tensors, subjects, actions)


def frame_stride(n: int, limit: int | None) -> int:
    """Every how many of ``n`` frames to take to keep at most ``limit`` of them, evenly spread
    (None or 0: all, stride 1). The chapter's in-memory sets and :func:`test_source` use it."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    return 1 if not limit else max(1, math.ceil(n / limit))


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


class CropStream:
    """The frames of a dataset cropped ``chunk_size`` at a time: evaluation over every test frame
    with memory bounded by one chunk, whatever the number of frames.

    :meth:`chunks` yields one :class:`CropSet` per chunk (:func:`prepare` of those frames, plus
    the outputs of a frozen ``backbone`` when one is given, :func:`cache_backbone`, stored as
    ``cache_dtype``). A chunk's ``subject`` and ``action`` indices refer to the stream's
    :attr:`subjects` and :attr:`actions` (name lists grown as names appear), so results of all
    chunks can be concatenated; a chunk is dropped when the next one is made.
    :func:`~.evaluation.predict` and :func:`~.evaluation.predict_many` take a stream wherever
    they take a :class:`CropSet` and keep only the predictions (``J x 3`` floats per frame and
    predictor). :attr:`peak_bytes` is the size of the largest chunk's tensors so far (bytes):
    what the chunk size bounds.

    Args:
        dataset: a ``MultiviewDataset`` (or any sequence of sample dicts in the common format).
        config: the crop size and scale (:class:`~.config.Config`).
        chunk_size: frames cropped at a time.
        stride / max_frames: take every ``stride``-th frame, at most ``max_frames`` (None: all).
        backbone: a frozen backbone whose outputs the chunks carry (None: images only).
    """

    def __init__(self, dataset, config: Config, *, chunk_size: int = 256, stride: int = 1,
                 max_frames: int | None = None, backbone: SimpleBaseline | None = None,
                 device: str | torch.device = "cpu", cache_dtype: torch.dtype = torch.float16,
                 progress: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.dataset = dataset
        self.config = config
        self.chunk_size = int(chunk_size)
        self.indices = list(range(0, len(dataset), stride))[:max_frames or None]
        if not self.indices:
            raise ValueError("CropStream: the dataset has no frames")
        self.backbone = backbone
        self.device = device
        self.cache_dtype = cache_dtype
        self.progress = progress
        self.subjects: list[str] = []
        self.actions: list[str] = []
        self.peak_bytes = 0

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_chunks(self) -> int:
        return math.ceil(len(self.indices) / self.chunk_size)

    def _global(self, names: list[str], own: list[str], local: torch.Tensor) -> torch.Tensor:
        for name in own:
            if name not in names:
                names.append(name)
        table = torch.tensor([names.index(name) for name in own], dtype=local.dtype)
        return table[local]

    def chunks(self) -> Iterator[CropSet]:
        """The chunks, in frame order (each a :class:`CropSet` of at most ``chunk_size`` frames)."""
        starts = range(0, len(self.indices), self.chunk_size)
        for s in tqdm(starts, desc="test chunks", disable=not self.progress, leave=False):
            part = prepare(self.dataset, self.config, indices=self.indices[s : s + self.chunk_size],
                           progress=False)
            tensors = dict(part.tensors)
            tensors["subject"] = self._global(self.subjects, part.subjects, tensors["subject"])
            tensors["action"] = self._global(self.actions, part.actions, tensors["action"])
            part = CropSet(tensors, list(self.subjects), list(self.actions))
            if self.backbone is not None:
                part = cache_backbone(self.backbone, part, device=self.device, dtype=self.cache_dtype)
            self.peak_bytes = max(self.peak_bytes, _nbytes(part.tensors))
            yield part


def test_source(dataset, held: CropSet, plan, *, backbone: SimpleBaseline | None = None,
                device: str | torch.device = "cpu", progress: bool = False) -> CropSet | CropStream:
    """What the chapter's main evaluation runs over: ``plan.max_test_frames`` frames of the test
    ``dataset`` (None or 0: every frame; otherwise evenly spread, :func:`frame_stride`).

    ``held`` is the in-memory test set, cropped from ``dataset`` with the stride
    ``frame_stride(len(dataset), plan.max_frames["test"])`` (and carrying the backbone's cache
    when ``plan.config.freeze_backbone``). When it holds exactly the frames to evaluate it is
    returned; otherwise a :class:`CropStream` of those frames in chunks of ``plan.eval_chunk``
    (with ``backbone``'s cached outputs when the backbone is frozen).
    """
    n = len(dataset)
    held_stride = frame_stride(n, plan.max_frames["test"])
    if len(held) != len(range(0, n, held_stride)):
        raise ValueError(f"held has {len(held)} frames; cropped with stride {held_stride} from the "
                         f"{n} frames of dataset it would have {len(range(0, n, held_stride))}")
    stride = frame_stride(n, plan.max_test_frames)
    if stride == held_stride:
        return held
    frozen = plan.config.freeze_backbone
    if frozen and backbone is None:
        raise ValueError("a frozen backbone's outputs are cached: pass backbone= to stream the test set")
    return CropStream(dataset, plan.config, chunk_size=plan.eval_chunk, stride=stride,
                      backbone=backbone if frozen else None, device=device, progress=progress)


def with_roots(data: CropSet, roots: torch.Tensor) -> CropSet:
    """``data`` with a ``root`` tensor ``(N, 3)`` mm per frame: where the volumetric model's
    training cube is centred when ``config.train_root == "predicted"`` (e.g. the pelvis of a
    trained algebraic model, ``predict(algebraic_predictor(model), data)["pred"][:, 0]``)."""
    check_shape(roots, "roots", f"({len(data)}, 3)")
    return CropSet(dict(data.tensors, root=roots.detach().float().cpu()), data.subjects, data.actions)


def select_views(batch: dict, views: Sequence[int] | None) -> dict:
    """The batch restricted to ``views`` (indices along the view axis; None: all)."""
    if views is None:
        return batch
    idx = torch.as_tensor(list(views), dtype=torch.long)
    out = dict(batch)
    for k in ("images", "P", "joints2d", "visibility", *CACHE_KEYS):
        if k in out:
            out[k] = out[k][:, idx.to(out[k].device)]
    return out


def cached_outputs(batch: dict, model: nn.Module | None = None) -> BackboneOutput | None:
    """Backbone outputs stored in the batch (see :func:`cache_backbone`), if the model may use them."""
    if not all(k in batch for k in CACHE_KEYS):
        return None
    if model is not None:
        cfg = getattr(unwrap_model(model), "config", None)
        if cfg is None or not getattr(cfg, "freeze_backbone", False):
            return None
    return BackboneOutput(*(batch[k] for k in CACHE_KEYS))


@torch.no_grad()
def cache_backbone(
    backbone: SimpleBaseline,
    data: CropSet,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    progress: bool = False,
    only: torch.Tensor | None = None,
) -> CropSet:
    """Run a (frozen) backbone once over a :class:`CropSet` and store its outputs.

    Returns a new :class:`CropSet` sharing the original tensors plus ``heatmaps``
    ``(N, C, J, h, w)``, ``features`` ``(N, C, F, h, w)`` and ``encoding`` ``(N, C, E, h', w')``
    (stored as ``dtype``). Models built with ``config.freeze_backbone=True`` then skip the
    backbone, which makes CPU training of the heads fast; with a trainable backbone the cache
    is ignored by the loss functions.

    ``only``: bool ``(N, C)``; recompute the outputs of these crops only (e.g. the ones whose
    images were just edited) and keep ``data``'s cached outputs for the others.
    """
    dev = resolve_device(device)
    images = data.tensors["images"]
    N, C = images.shape[:2]
    if only is not None:
        return _recache(backbone, data, only, batch_size, dev)
    was_training = backbone.training
    backbone.eval().to(dev)
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in CACHE_KEYS}
    step = max(1, batch_size // C)
    for s in tqdm(range(0, N, step), desc="backbone", disable=not progress):
        x = normalize_images(images[s : s + step].to(dev).flatten(0, 1))
        out = backbone(x)
        for k, t in zip(CACHE_KEYS, out):
            chunks[k].append(t.unflatten(0, (-1, C)).to("cpu", dtype))
    backbone.train(was_training)
    tensors = dict(data.tensors)
    tensors.update({k: torch.cat(v) for k, v in chunks.items()})
    return CropSet(tensors, data.subjects, data.actions)


def _recache(backbone: SimpleBaseline, data: CropSet, only: torch.Tensor, batch_size: int,
             dev: torch.device) -> CropSet:
    images = data.tensors["images"]
    check_shape(only, "only", f"({images.shape[0]}, {images.shape[1]})")
    if only.dtype != torch.bool:
        raise ValueError(f"only must be a bool tensor (one flag per crop), got {only.dtype}")
    missing = [k for k in CACHE_KEYS if k not in data.tensors]
    if missing:
        raise ValueError(f"only= recomputes part of an existing cache, but data has no {missing}: "
                         "run cache_backbone(backbone, data) first")
    tensors = dict(data.tensors)
    for k in CACHE_KEYS:
        tensors[k] = tensors[k].clone()
    frame, view = torch.nonzero(only, as_tuple=True)
    was_training = backbone.training
    backbone.eval().to(dev)
    with torch.no_grad():
        for s in range(0, len(frame), batch_size):
            f, v = frame[s : s + batch_size], view[s : s + batch_size]
            out = backbone(normalize_images(images[f, v].to(dev)))
            for k, t in zip(CACHE_KEYS, out):
                tensors[k][f, v] = t.to("cpu", tensors[k].dtype)
    backbone.train(was_training)
    return CropSet(tensors, data.subjects, data.actions)


def augment_views(
    images: torch.Tensor,
    joints2d: torch.Tensor,
    visibility: torch.Tensor,
    flip_pairs: Sequence[tuple[int, int]],
    generator: torch.Generator | None = None,
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random colour changes and horizontal flips of single views (2D pretraining only).

    Args:
        images: ``(N, 3, S, S)`` float (normalised or not); joints2d ``(N, J, 2)`` crop px;
        visibility ``(N, J)``; flip_pairs: left/right joint index pairs swapped by a flip.

    Returns the augmented ``(images, joints2d, visibility)``; each image is flipped with
    probability 1/2 (never with ``flip=False``), its colour channels permuted and scaled by gains
    in [0.7, 1.3].
    """
    N, _, _, S = images.shape
    dev = images.device
    perm = torch.argsort(torch.rand(N, 3, generator=generator), dim=1).to(dev)
    gain = (0.7 + 0.6 * torch.rand(N, 3, 1, 1, generator=generator)).to(dev, images.dtype)
    images = images.gather(1, perm[:, :, None, None].expand_as(images)) * gain
    flip_mask = (torch.rand(N, generator=generator) < (0.5 if flip else 0.0)).to(dev)
    images = torch.where(flip_mask[:, None, None, None], images.flip(-1), images)
    swap = partner_joints(joints2d.shape[-2], flip_pairs).to(dev)
    flipped = joints2d[:, swap].clone()
    flipped[..., 0] = S - 1 - flipped[..., 0]
    joints2d = torch.where(flip_mask[:, None, None], flipped, joints2d)
    visibility = torch.where(flip_mask[:, None], visibility[:, swap], visibility)
    return images, joints2d, visibility



def partner_joints(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``(J,)`` index of each joint's left/right partner (itself for central joints)."""
    partner = torch.arange(num_joints)
    if len(flip_pairs):
        pairs = torch.as_tensor(flip_pairs, dtype=torch.long)
        partner[pairs[:, 0]] = pairs[:, 1]
        partner[pairs[:, 1]] = pairs[:, 0]
    return partner
