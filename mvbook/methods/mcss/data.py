"""Data of MCSS: synchronised person crops encoded by the frozen trunk, and training batches.

:func:`encode_frames` crops person 0 in every view of every kept frame (:mod:`mvbook.crops`)
and stores the trunk's features, the global 3D pose and the frame's subject and sequence
(:class:`FrameSet`). :class:`JointBatches` draws the two halves of a joint training step:

- a metric mini-batch (sec. 3.1.1): ``m`` instants of **one** subject, each seen by two
  different cameras (anchor and positive), with frames of one sequence at least ``min_gap``
  kept frames apart so that the in-batch negatives are not near-duplicates;
- a pose mini-batch: labelled (frame, view) images of the supervised subset.

:func:`labelled_frames` picks the supervised subset; :func:`prepare` builds the train and test
sets of the chapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from mvbook.crops import crop_images, crop_person, square_boxes
from mvbook.geometry import Camera
from mvbook.train import distributed_info
from mvbook.validation import check_choice

from .canonical import root_relative, to_canonical
from .config import REPRESENTATIONS, Config, Settings
from .model import MCSSNet

__all__ = ["FrameSet", "encode_frames", "labelled_frames", "JointBatches", "Splits", "prepare",
           "KEYS"]

#: The dataset keys MCSS reads.
KEYS = ["images", "joints3d", "bbox"]


@dataclass
class FrameSet:
    """Synchronised frames encoded by the trunk.

    ``features (F, C, D)`` pooled trunk features of every view; ``joints (F, J, 3)`` global
    (world, z up) pose in mm; ``subject``, ``sequence`` lists of str; ``order (F,)`` position of
    the frame in its sequence after temporal sub-sampling; ``images (n, C, 3, S, S)`` uint8
    crops of the first ``n`` frames (for pictures; may be empty).
    """

    features: torch.Tensor
    joints: torch.Tensor
    subject: list[str]
    sequence: list[str]
    order: torch.Tensor
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.features)

    @property
    def views(self) -> int:
        return self.features.shape[1]

    def ids(self, key: str) -> tuple[torch.Tensor, list[str]]:
        """Integer ids ``(F,)`` of ``"subject"`` or ``"sequence"`` and their names."""
        check_choice(key, "key", ("subject", "sequence"))
        names = list(dict.fromkeys(getattr(self, key)))
        index = {n: i for i, n in enumerate(names)}
        return torch.tensor([index[n] for n in getattr(self, key)], dtype=torch.long), names

    def targets(self, representation: str = "canonical", root: int = 0,
                left_hip: int = 4) -> torch.Tensor:
        """Regression targets ``(F, J, 3)`` mm: canonical (eq. 3) or root-relative global."""
        check_choice(representation, "representation", REPRESENTATIONS)
        if representation == "canonical":
            return to_canonical(self.joints, root, left_hip)[0]
        return root_relative(self.joints, root)


def encode_frames(dataset: Any, net: MCSSNet, config: Config, frame_stride: int = 1,
                  max_frames: int | None = None, keep_images: int = 0, chunk: int = 16,
                  progress: bool = True) -> FrameSet:
    """Crop and encode every view of the frames of ``dataset`` (a studio or converted
    :class:`~mvbook.data.format.MultiviewDataset` opened with :data:`KEYS`).

    Temporal sub-sampling keeps frames whose index in their sequence is a multiple of
    ``frame_stride``; ``max_frames`` keeps the first that many of those (None: all).
    """
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    feats, joints, subjects, sequences, orders, images = [], [], [], [], [], []
    pending: list[torch.Tensor] = []
    n_views = None

    def flush() -> None:
        if pending:
            crops = torch.cat(pending)
            feats.append(net.encode(crops).view(len(pending), n_views, -1))
            pending.clear()

    kept = 0
    for i in tqdm(range(len(dataset)), desc="crops", disable=not progress, leave=False):
        sample = dataset[i]
        frame = int(sample["frame"])
        if frame % frame_stride:
            continue
        images_s, bbox = torch.as_tensor(sample["images"]), torch.as_tensor(sample["bbox"])[:, 0].double()
        if "K" in sample:  # calibrated: undistorted crops for distorted cameras
            crops = crop_person(images_s, Camera.from_sample(sample), bbox,
                                torch.as_tensor(sample["joints2d"])[:, 0].double(), config.crop_size,
                                config.crop_scale).images
        else:
            crops = crop_images(images_s, square_boxes(bbox, config.crop_scale), config.crop_size)
        n_views = crops.shape[0]
        pending.append(crops)
        if kept < keep_images:
            images.append(crops)
        joints.append(torch.as_tensor(sample["joints3d"])[0].float())
        subjects.append(str(sample["subject"]))
        sequences.append(str(sample["sequence"]))
        orders.append(frame // frame_stride)
        kept += 1
        if len(pending) >= chunk:
            flush()
        if max_frames is not None and kept >= max_frames:
            break
    flush()
    if not joints:
        raise ValueError("dataset is empty: no frames to encode")
    S = config.crop_size
    imgs = torch.stack(images) if images else torch.zeros(0, n_views, 3, S, S, dtype=torch.uint8)
    return FrameSet(torch.cat(feats), torch.stack(joints), subjects, sequences,
                    torch.tensor(orders, dtype=torch.long), imgs)


def labelled_frames(frames: FrameSet, subjects: Sequence[str], fraction: float = 1.0,
                    seed: int = 0) -> torch.Tensor:
    """Indices of the 3D-labelled frames: a random ``fraction`` (at least one frame) of the
    frames of each of ``subjects``, drawn with ``seed`` (the same subset for every training
    seed: only the data decide it)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    unknown = sorted(set(subjects) - set(frames.subject))
    if unknown:
        raise ValueError(f"subjects {unknown} are not in the frames (have {sorted(set(frames.subject))})")
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in subjects:
        idx = torch.tensor([i for i, n in enumerate(frames.subject) if n == s], dtype=torch.long)
        n = max(1, int(round(fraction * len(idx))))
        out.append(idx[torch.randperm(len(idx), generator=g)[:n]].sort().values)
    return torch.cat(out)


class JointBatches:
    """Training batches of joint MCSS training, an iterable for :func:`mvbook.train.train`.

    Each batch holds ``anchor``, ``positive`` ``(m, D)`` (metric half; absent when
    ``batch_metric = 0``) and ``pose_features (b, D)``, ``pose_target (b, J, 3)`` (pose half;
    absent when ``labelled`` is None). The metric half takes ``m = batch_metric`` frames of one
    random subject: each sequence gets a random phase and only frames whose ``order`` plus that
    phase is a multiple of ``min_gap`` are candidates; views ``a != b`` are drawn per pair. The
    pose half draws ``b = batch_pose`` (frame, view) items of the labelled frames in
    ``pose_views`` (with replacement). One epoch is ``epoch`` batches; the order comes from
    ``self.generator`` (``seed + rank`` under ``torchrun``; saved in checkpoints).
    """

    shards_by_rank = True

    def __init__(self, frames: FrameSet, targets: torch.Tensor | None = None,
                 labelled: torch.Tensor | None = None, batch_metric: int = 66,
                 batch_pose: int = 22, min_gap: int = 1, pose_views: Sequence[int] | None = None,
                 epoch: int = 100, seed: int = 0) -> None:
        C = frames.views
        if C < 2 and batch_metric:
            raise ValueError("the metric loss needs at least two views")
        if min_gap < 1:
            raise ValueError(f"min_gap must be >= 1, got {min_gap}")
        self.frames = frames
        self.batch_metric = batch_metric
        self.batch_pose = batch_pose
        self.min_gap = min_gap
        self.epoch = epoch
        subj, _ = frames.ids("subject")
        self.seq, _ = frames.ids("sequence")
        by_subject = [torch.nonzero(subj == s).flatten() for s in range(int(subj.max()) + 1)]
        self.by_subject = [f for f in by_subject if len(f) >= batch_metric]
        if batch_metric and not self.by_subject:
            raise ValueError(f"batch_metric={batch_metric} exceeds the frames of every subject "
                             f"(at most {max(len(f) for f in by_subject)})")
        self.pose_items = None
        if labelled is not None:
            if targets is None:
                raise ValueError("labelled frames need their targets")
            views = torch.tensor(list(range(C)) if pose_views is None else list(pose_views))
            if len(views) == 0 or bool(((views < 0) | (views >= C)).any()):
                raise ValueError(f"pose_views must be view indices in [0, {C}), got {pose_views}")
            f, v = torch.meshgrid(labelled, views, indexing="ij")
            self.pose_items = (f.flatten(), v.flatten())
            self.targets = targets
        if not batch_metric and self.pose_items is None:
            raise ValueError("nothing to draw: batch_metric is 0 and no labelled frames")
        self.generator = torch.Generator().manual_seed(seed + distributed_info().rank)

    def __len__(self) -> int:
        return self.epoch

    def metric_frames(self) -> torch.Tensor:
        """``m`` frame indices of one random subject (the temporal rule of the class doc)."""
        g = self.generator
        pool = self.by_subject[int(torch.randint(len(self.by_subject), (), generator=g))]
        phase = torch.randint(self.min_gap, (int(self.seq.max()) + 1,), generator=g)
        keep = (self.frames.order[pool] + phase[self.seq[pool]]) % self.min_gap == 0
        cand = pool[keep] if int(keep.sum()) >= self.batch_metric else pool
        return cand[torch.randperm(len(cand), generator=g)[: self.batch_metric]]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        g, C, feats = self.generator, self.frames.views, self.frames.features
        for _ in range(self.epoch):
            batch: dict[str, torch.Tensor] = {}
            if self.batch_metric:
                f = self.metric_frames()
                a = torch.randint(C, (len(f),), generator=g)
                b = (a + torch.randint(1, C, (len(f),), generator=g)) % C
                batch["anchor"], batch["positive"] = feats[f, a], feats[f, b]
            if self.pose_items is not None:
                items_f, items_v = self.pose_items
                k = torch.randint(len(items_f), (self.batch_pose,), generator=g)
                batch["pose_features"] = feats[items_f[k], items_v[k]]
                batch["pose_target"] = self.targets[items_f[k]]
            yield batch


@dataclass
class Splits:
    """The chapter's train frames (all training subjects) and test frames."""

    train: FrameSet
    test: FrameSet


def prepare(data: Any, plan: Settings, net: MCSSNet, *, profile: str, seed: int = 0,
            keep_images: int = 4, test_images: bool = True, progress: bool = True) -> Splits:
    """Open the train (``plan.subjects["train"]``) and test splits of ``data`` (``"studio"`` or
    a converted dataset folder) and encode them with ``net``'s trunk. The crops of the first
    ``keep_images`` train frames are kept, and of every test frame when ``test_images`` (for
    pictures of retrievals)."""
    from mvbook.studio import open_data

    common = dict(profile=profile, seed=seed, keys=KEYS)
    ds_train = open_data(data, split="train", subjects=list(plan.subjects["train"]), **common)
    ds_test = open_data(data, split="test", **common)
    cfg = plan.config
    return Splits(
        train=encode_frames(ds_train, net, cfg, plan.frame_stride, plan.max_frames, keep_images,
                            progress=progress),
        test=encode_frames(ds_test, net, cfg, plan.frame_stride, plan.max_frames,
                           len(ds_test) if test_images else keep_images, progress=progress),
    )


