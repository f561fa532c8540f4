"""Data of semi-supervised dense keypoints: synchronised crops of the target domain, labelled
crops of the source domain, and training batches.

Two domains, as in the paper (sec. 4.1): the **labelled** source domain where ``phi_0`` was
trained (DensePose-COCO in the paper; here the zoo ``dense0`` domain: other looks, rooms and the
Panoptic-like cameras), and the **unlabelled** calibrated multiview target domain (Human3.6M in
the paper; here the studio's single-person set on the Human3.6M-like rig), whose true IUV is
read only to measure.

The encoder of ``dense0`` is frozen (:class:`~.model.DenseNet`), so every crop is encoded once:
:class:`ViewSet` holds, per frame and view, the encoder's map, ``phi_0``'s prediction (the
distillation target), the crop's colours at the output resolution (the photometric term), the
crop camera at the output resolution (the epipolar term) and the true IUV (evaluation).
:class:`PairBatches` draws view pairs of one instant plus labelled source crops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mvbook.crops import crop_camera, crop_images, crop_person
from mvbook.geometry import Camera
from mvbook.train import distributed_info
from mvbook.zoo.dense import DenseBank, person_crops

from .config import Settings
from .model import DenseNet

__all__ = ["KEYS", "ViewSet", "LabelledSet", "encode_views", "labelled_set", "PairBatches",
           "Splits", "prepare", "source_domain"]

#: The dataset keys the chapter reads (``iuv`` and ``masks`` only to measure).
KEYS = ["images", "iuv", "masks", "bbox", "joints2d", "K", "R", "t", "dist", "image_size"]


@dataclass
class ViewSet:
    """Synchronised person crops of the target domain, encoded once.

    Per frame ``F`` and view ``C``: ``encoding (F, C, D, e, e)`` the frozen encoder's map;
    ``phi0 (F, C, 3, h, h)`` ``phi_0``'s part index and UV; ``colours (F, C, 3, h, h)`` the crop
    at the output resolution in [0, 1]; ``iuv (F, C, 3, h, h)`` the true part and UV (the
    person's own pixels); ``P (F, C, 3, 4)`` the projection matrices of the crop cameras at the
    output resolution (world mm -> output px); ``px_scale (F, C)`` image px per output px;
    ``subject``, ``sequence`` (lists), ``frame (F,)`` the frame index in its sequence;
    ``images (n, C, 3, S, S)`` uint8 crops of the first ``n`` frames (pictures);
    ``vertices (F, V, 3)`` world mm of the body-surface vertices
    (:func:`mvbook.studio.surface_mesh`) on the frame's posed body, the ground truth of the
    reconstruction metrics (studio data only; None otherwise or when not asked for).
    """

    encoding: torch.Tensor
    phi0: torch.Tensor
    colours: torch.Tensor
    iuv: torch.Tensor
    P: torch.Tensor
    px_scale: torch.Tensor
    subject: list[str]
    sequence: list[str]
    frame: torch.Tensor
    images: torch.Tensor
    vertices: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.encoding)

    @property
    def views(self) -> int:
        return self.encoding.shape[1]

    def select_views(self, views: list[int]) -> ViewSet:
        """The same frames seen by ``views`` only."""
        v = list(views)
        take = lambda x: x[:, v]  # noqa: E731
        return dataclasses.replace(
            self, encoding=take(self.encoding), phi0=take(self.phi0), colours=take(self.colours),
            iuv=take(self.iuv), P=take(self.P), px_scale=take(self.px_scale),
            images=take(self.images))


@dataclass
class LabelledSet:
    """Labelled crops of the source domain: ``encoding (N, D, e, e)`` and ``iuv (N, 3, h, h)``."""

    encoding: torch.Tensor
    iuv: torch.Tensor

    def __len__(self) -> int:
        return len(self.encoding)


def _kept_indices(n: int, keep: int | None) -> list[int]:
    """``keep`` indices spread evenly over ``range(n)`` (all when None or >= n)."""
    if keep is None or keep >= n:
        return list(range(n))
    if keep < 1:
        raise ValueError(f"frames to keep must be >= 1 or None, got {keep}")
    return torch.linspace(0, n - 1, keep).round().long().unique().tolist()


def _studio_vertices(dataset: Any, sequence: list[str], frame: torch.Tensor
                     ) -> torch.Tensor | None:
    """The posed surface vertices of the frames of a studio dataset (None for other data)."""
    from mvbook.studio.surface import posed_vertices, sample_primitives

    config = dataset.manifest.get("provenance", {}).get("config")
    if not isinstance(config, dict) or "scene" not in config:
        return None
    return posed_vertices(sample_primitives(config, sequence, frame)).float()


@torch.no_grad()
def encode_views(dataset: Any, net: DenseNet, plan: Settings, max_frames: int | None = None,
                 keep_images: int = 0, chunk: int = 8, progress: bool = True,
                 vertices: bool = False) -> ViewSet:
    """Crop person 0 in every view of ``max_frames`` frames of ``dataset`` (spread evenly; None:
    all), encode the crops and run ``phi_0`` (``net`` as loaded) once; with ``vertices``, also
    the posed body-surface vertices of studio frames (the reconstruction ground truth)."""
    cfg = plan.config
    S, h = cfg.crop_size, cfg.output_size
    out: dict[str, list] = {k: [] for k in ("encoding", "phi0", "colours", "iuv", "P", "px_scale",
                                            "subject", "sequence", "frame", "images")}
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            crops = torch.cat(pending)
            enc = net.encode(crops)
            out["encoding"].append(enc.view(len(pending), -1, *enc.shape[1:]))
            field = net.field(net(enc))
            out["phi0"].append(field.view(len(pending), -1, *field.shape[1:]))
            pending.clear()

    index = _kept_indices(len(dataset), max_frames)
    for k, i in enumerate(tqdm(index, desc="crops", disable=not progress, leave=False)):
        s = dataset[i]
        cam = Camera.from_sample(s)
        images = torch.as_tensor(s["images"])
        crops = crop_person(images, cam, torch.as_tensor(s["bbox"])[:, 0].double(),
                            torch.as_tensor(s["joints2d"])[:, 0].double(), S, cfg.crop_scale)
        pinhole = Camera(cam.K, cam.R, cam.t, None, cam.image_size)
        out_cam = crop_camera(pinhole, crops.boxes.double(), h)
        masks = torch.as_tensor(s["masks"])
        own = (masks == 1)[:, None].float()  # person 0's pixels (instance ids start at 1)
        iuv = torch.as_tensor(s["iuv"], dtype=torch.float32) * own
        out["iuv"].append(crop_images(iuv, crops.boxes.float(), h, mode="nearest", camera=cam))
        out["colours"].append(F.adaptive_avg_pool2d(crops.images.float() / 255, h))
        out["P"].append(out_cam.P.float())
        out["px_scale"].append(((crops.boxes[:, 2] - crops.boxes[:, 0]) / h).float())
        out["subject"].append(str(s["subject"]))
        out["sequence"].append(str(s["sequence"]))
        out["frame"].append(int(s["frame"]))
        if k < keep_images:
            out["images"].append(crops.images)
        pending.append(crops.images)
        if len(pending) >= chunk:
            flush()
    flush()
    if not out["subject"]:
        raise ValueError("dataset is empty: no frames to encode")
    C = out["P"][0].shape[0]
    imgs = (torch.stack(out["images"]) if out["images"]
            else torch.zeros(0, C, 3, S, S, dtype=torch.uint8))
    frame = torch.tensor(out["frame"], dtype=torch.long)
    return ViewSet(torch.cat(out["encoding"]), torch.cat(out["phi0"]),
                   torch.stack(out["colours"]), torch.stack(out["iuv"]), torch.stack(out["P"]),
                   torch.stack(out["px_scale"]), out["subject"], out["sequence"], frame, imgs,
                   _studio_vertices(dataset, out["sequence"], frame) if vertices else None)


def source_domain(plan: Settings):
    """The studio configuration of the labelled source domain: the ``dense0`` recipe's own
    training domain, ``plan.labelled_frames`` frames per subject and action."""
    from mvbook.zoo import recipe

    rec = recipe("dense0", plan.zoo_profile)
    return dataclasses.replace(rec.train_data[0], frames=(plan.labelled_frames, 1),
                               sequences=(1, 0))


@torch.no_grad()
def labelled_set(net: DenseNet, plan: Settings, *, progress: bool = True,
                 cache_dir: Any = None) -> LabelledSet:
    """Labelled crops of the source domain (:func:`source_domain`), encoded once."""
    from mvbook.data.format import MultiviewDataset
    from mvbook.studio.build import build_studio
    from mvbook.zoo import recipe

    cfg = source_domain(plan)
    root = build_studio(plan.zoo_profile, cfg.scene, cfg.seed, cache_dir, progress, config=cfg)
    bank: DenseBank = person_crops(MultiviewDataset(root, split="train"),
                                   recipe("dense0", plan.zoo_profile), progress=progress)
    images, iuv = bank.tensors["images"], bank.tensors["iuv"]
    enc = torch.cat([net.encode(images[a:a + 64]) for a in range(0, len(images), 64)])
    return LabelledSet(enc, iuv)


class PairBatches:
    """Endless training batches: ``batch_pairs`` view pairs ``(a, b)``, ``a != b``, of random
    instants of ``views`` (the unlabelled target domain; ``pair_views`` restricts the cameras
    a pair may use) and ``batch_labelled`` labelled source crops (none when 0).

    A batch holds ``enc_a``, ``enc_b`` ``(B, D, e, e)``, ``phi0_a``, ``phi0_b``, ``colours_a``,
    ``colours_b`` ``(B, 3, h, h)``, ``P_a``, ``P_b`` ``(B, 3, 4)`` and, with labels,
    ``enc_l (B_l, D, e, e)`` and ``iuv_l (B_l, 3, h, h)``.
    """

    def __init__(self, views: ViewSet, labelled: LabelledSet | None, batch_pairs: int,
                 batch_labelled: int, *, pair_views: list[int] | None = None, seed: int = 0,
                 epoch: int = 1000) -> None:
        cams = list(range(views.views)) if pair_views is None else list(pair_views)
        if len(cams) < 2 or len(set(cams)) != len(cams) or not all(0 <= c < views.views for c in cams):
            raise ValueError(f"pair_views must name at least two distinct views of 0..{views.views - 1}, "
                             f"got {pair_views!r}")
        if batch_pairs < 1:
            raise ValueError(f"batch_pairs must be >= 1, got {batch_pairs}")
        if batch_labelled and (labelled is None or len(labelled) == 0):
            raise ValueError("batch_labelled > 0 needs a labelled set")
        self.views, self.labelled, self.cams = views, labelled, torch.tensor(cams)
        self.batch_pairs, self.batch_labelled, self.epoch = batch_pairs, batch_labelled, epoch
        self.generator = torch.Generator().manual_seed(seed + distributed_info().rank)

    def __len__(self) -> int:
        return self.epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        g, v, B = self.generator, self.views, self.batch_pairs
        n = len(self.cams)
        for _ in range(self.epoch):
            f = torch.randint(len(v), (B,), generator=g)
            ia = torch.randint(n, (B,), generator=g)
            ib = (ia + torch.randint(1, n, (B,), generator=g)) % n
            a, b = self.cams[ia], self.cams[ib]
            batch = {"enc_a": v.encoding[f, a], "enc_b": v.encoding[f, b],
                     "phi0_a": v.phi0[f, a], "phi0_b": v.phi0[f, b],
                     "colours_a": v.colours[f, a], "colours_b": v.colours[f, b],
                     "P_a": v.P[f, a], "P_b": v.P[f, b]}
            if self.batch_labelled:
                k = torch.randint(len(self.labelled), (self.batch_labelled,), generator=g)
                batch["enc_l"], batch["iuv_l"] = self.labelled.encoding[k], self.labelled.iuv[k]
            yield batch


@dataclass
class Splits:
    """The chapter's data: target-domain train and test views, labelled source crops."""

    train: ViewSet
    test: ViewSet
    labelled: LabelledSet


def prepare(data: Any, plan: Settings, net: DenseNet, *, profile: str, seed: int = 0,
            keep_images: int = 4, progress: bool = True) -> Splits:
    """Open the train (``plan.subjects["train"]``) and test splits of ``data`` (``"studio"`` or
    a converted dataset folder storing ``iuv`` and ``masks``), encode them with ``net`` (the
    loaded ``phi_0``), and build the labelled source crops."""
    from mvbook.studio import open_data

    common = dict(profile=profile, seed=seed, keys=KEYS)
    if isinstance(data, str) and data == "studio":
        common["store"] = ("masks", "iuv")  # the full studio stores masks only by default
    ds_train = open_data(data, split="train", subjects=list(plan.subjects["train"]), **common)
    ds_test = open_data(data, split="test", **common)
    return Splits(
        train=encode_views(ds_train, net, plan, plan.train_frames, keep_images, progress=progress),
        test=encode_views(ds_test, net, plan, plan.test_frames, keep_images, progress=progress,
                          vertices=True),
        labelled=labelled_set(net, plan, progress=progress),
    )
