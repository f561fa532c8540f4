"""SelfPose3d's data: multiview frames, their pseudo 2D poses, heatmap banks and proposals.

:func:`prepare` turns a multi-person :class:`mvbook.data.format.MultiviewDataset` (the studio's
``"multi"`` scene, or converted Panoptic, Shelf, Campus: ``docs/datasets.md``) into a
:class:`SceneSet` held in memory: the views, their projection matrices, the 2D labels the
method learns from and (for evaluation and the supervised baseline only) the 3D ground truth.

2D labels (``pseudo``, sec. 3.2):

- ``"pose2d"``: the paper's pseudo poses: a 2D detector run top-down on person boxes of every
  view. The boxes are the dataset's person boxes of the persons with at least ``min_visible``
  visible joints (the stand-in for the paper's person detector), the detector the zoo's
  ``pose2d`` (:func:`mvbook.zoo.load`) on square crops (:mod:`mvbook.crops`); a joint is kept
  when its heatmap peak is at least ``threshold``.
- ``"gt"``: the true 2D joints of every person inside the image, occluded or not (Tab. 3).
- ``"noise"``: the true 2D joints moved by ``N(0, noise_px^2)`` px, occluded joints by
  ``N(0, occluded_px^2)`` (a simulated detector).
- a path: externally produced pseudo poses, :func:`read_pseudo`.

Units: image px of the stored views (``(0, 0)`` the centre of the top-left pixel), mm in 3D.
Lens distortion is ignored (the projection matrices are ``K [R | t]``), as the paper's cameras.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mvbook.crops import crop_images, square_boxes
from mvbook.validation import check_choice, check_positive

from .augment import random_affines, warp_images
from .config import PSEUDO, Config

__all__ = [
    "PSEUDO_FORMAT",
    "SceneSet",
    "cache_heatmaps",
    "frame_indices",
    "prepare",
    "pseudo_poses",
    "read_pseudo",
    "render_input_heatmaps",
    "with_proposals",
]

#: The documented file format of external pseudo 2D poses (:func:`read_pseudo`): an ``.npz``.
PSEUDO_FORMAT = {
    "index": "(N,) int64: the dataset's sample index (sample['index'], the row in the folder)",
    "joints2d": "(N, C, Q, J, 2) float32: pseudo 2D joints, px of the stored (resized) views, "
                "Q detected persons per view (padded), joints in the dataset's skeleton order",
    "valid": "(N, C, Q, J) bool: joint detected (or 'scores' (N, C, Q, J) float, thresholded)",
}


class SceneSet(torch.utils.data.Dataset):
    """Multiview frames in memory, a ``Dataset`` of dicts (one frame each).

    Tensors (leading ``N`` frames): ``images (N, C, 3, H, W)`` uint8, ``P (N, C, 3, 4)``,
    ``pseudo2d (N, C, Q, J, 2)`` px and ``pseudo_valid (N, C, Q, J)`` bool (the 2D labels),
    ``joints3d (N, G, J, 3)`` mm, ``joint_valid (N, G, J)``, ``person_valid (N, G)`` (the 3D
    ground truth: evaluation and the supervised baseline only); after :func:`cache_heatmaps`
    ``heat (N, A + 1, C, J + 1, h, w)`` float16 and ``T (N, A + 1, C, 3, 3)`` (copy 0
    unaugmented); after :func:`with_proposals` ``proposals (N, K, 3)`` mm and
    ``proposal_valid (N, K)``. ``image_size`` ``(W, H)``, ``skeleton`` its joints' skeleton.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], image_size: Sequence[int],
                 skeleton: str = "h36m17") -> None:
        n = len(tensors["images"])
        bad = {k: len(v) for k, v in tensors.items() if len(v) != n}
        if bad:
            raise ValueError(f"tensors {bad} do not have {n} rows like images")
        self.tensors = tensors
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.skeleton = skeleton

    def __len__(self) -> int:
        return len(self.tensors["images"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def replace(self, **tensors: torch.Tensor) -> SceneSet:
        """A set with some tensors added or replaced (the others shared)."""
        return SceneSet({**self.tensors, **tensors}, self.image_size, self.skeleton)

    def subset(self, index: Sequence[int] | torch.Tensor) -> SceneSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        return SceneSet({k: v[idx] for k, v in self.tensors.items()}, self.image_size,
                        self.skeleton)


def frame_indices(n: int, max_frames: int | None) -> list[int]:
    """``max_frames`` frame indices evenly spread over ``n`` (all of them for None or 0)."""
    if not max_frames or max_frames >= n:
        return list(range(n))
    return [int(math.floor(i * n / max_frames)) for i in range(max_frames)]


def _projections(K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return K @ torch.cat([R, t[..., None]], -1)


@torch.no_grad()
def pseudo_poses(images: torch.Tensor, bbox: torch.Tensor, keep: torch.Tensor,
                 detector: torch.nn.Module, crop_size: int, crop_scale: float,
                 threshold: float = 0.2, batch_size: int = 64, return_peaks: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-down pseudo 2D poses: ``detector`` (a :class:`mvbook.nn.SimpleBaseline`) on square
    crops of the person boxes.

    Args:
        images: ``(N, C, 3, H, W)`` uint8; bbox: ``(N, C, Q, 4)`` px; keep: ``(N, C, Q)`` bool
            (the detected persons); crop_size, crop_scale: the detector's crops.
        threshold: a joint is valid when its heatmap peak reaches it.

    Returns:
        ``joints2d (N, C, Q, J, 2)`` image px and ``valid (N, C, Q, J)`` bool (with
        ``return_peaks``: the peak values clamped to [0, 1], 0 where not valid).
    """
    from mvbook.crops import heatmap_to_crop, normalize_images
    from mvbook.heatmaps import refine_argmax_2d

    N, C, Q = keep.shape
    n, c, q = keep.nonzero(as_tuple=True)
    boxes = square_boxes(bbox[n, c, q].float(), crop_scale)
    J = detector.num_joints
    uv_all = torch.zeros(N, C, Q, J, 2)
    ok_all = torch.zeros(N, C, Q, J, dtype=torch.bool)
    peak_all = torch.zeros(N, C, Q, J)
    for a in range(0, len(n), batch_size):
        sl = slice(a, a + batch_size)
        crops = crop_images(images[n[sl], c[sl]], boxes[sl], crop_size)
        heat = detector(normalize_images(crops)).heatmaps.float()
        uv, peak = refine_argmax_2d(heat)
        uv = heatmap_to_crop(uv, heat.shape[-1], crop_size)
        side = (boxes[sl, 2:] - boxes[sl, :2])[:, None, :]
        uv = (uv + 0.5) * side / crop_size + boxes[sl, None, :2] - 0.5  # crop px -> image px
        uv_all[n[sl], c[sl], q[sl]] = uv
        ok_all[n[sl], c[sl], q[sl]] = peak >= threshold
        peak_all[n[sl], c[sl], q[sl]] = torch.where(peak >= threshold, peak.clamp(0, 1),
                                                    torch.zeros_like(peak))
    return (uv_all, peak_all) if return_peaks else (uv_all, ok_all)


def read_pseudo(path: str | os.PathLike, index: Sequence[int], num_views: int, num_joints: int,
                threshold: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Externally produced pseudo 2D poses (:data:`PSEUDO_FORMAT`) of the samples ``index``
    (the dataset's sample indices): ``joints2d (N, C, Q, J, 2)`` px and ``valid (N, C, Q, J)``.
    Raises ``ValueError`` naming what is missing or has the wrong shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pseudo: no pseudo-pose file {path} (format: PSEUDO_FORMAT)")
    with np.load(path) as f:
        missing = [k for k in ("index", "joints2d") if k not in f]
        if missing or ("valid" not in f and "scores" not in f):
            raise ValueError(f"pseudo: {path} lacks {missing or ['valid or scores']}; "
                             f"expected {sorted(PSEUDO_FORMAT)}")
        rows, uv = np.asarray(f["index"]), np.asarray(f["joints2d"], np.float32)
        valid = (np.asarray(f["valid"], bool) if "valid" in f
                 else np.asarray(f["scores"]) >= threshold)
    if uv.ndim != 5 or uv.shape[1] != num_views or uv.shape[3] != num_joints or uv.shape[4] != 2:
        raise ValueError(f"pseudo: joints2d in {path} must have shape (N, {num_views}, Q, "
                         f"{num_joints}, 2), got {uv.shape}")
    if valid.shape != uv.shape[:4] or rows.shape != uv.shape[:1]:
        raise ValueError(f"pseudo: valid/scores must be {uv.shape[:4]} and index {uv.shape[:1]}")
    where = {int(r): i for i, r in enumerate(rows)}
    lost = [int(i) for i in index if int(i) not in where]
    if lost:
        raise ValueError(f"pseudo: {path} has no poses for samples {lost[:5]}"
                         f"{' ...' if len(lost) > 5 else ''}")
    sel = [where[int(i)] for i in index]
    return torch.from_numpy(uv[sel]), torch.from_numpy(valid[sel])


def prepare(dataset: Any, config: Config, pseudo: str = "pose2d", *,
            inputs: str | None = None,
            max_frames: int | None = None, zoo_profile: str = "quick", min_visible: int = 6,
            threshold: float = 0.2, noise_px: float = 2.0, occluded_px: float = 8.0,
            seed: int = 0, progress: bool = True) -> SceneSet:
    """Frames of ``dataset`` (a :class:`mvbook.data.format.MultiviewDataset`) with their 2D
    labels, as a :class:`SceneSet`.

    Args:
        dataset: multi-person frames (``images``, cameras, ``joints3d``, ``joints2d``,
            ``visibility``, ``bbox``, ``person_valid``).
        config: the method's :class:`~.config.Config` (``num_joints``).
        pseudo: ``"pose2d"``, ``"gt"``, ``"noise"`` (:data:`~.config.PSEUDO`) or a path: the
            2D labels (``pseudo2d``, ``pseudo_valid``).
        inputs: the source of the input detections ``input2d (N, C, Q, J, 2)`` and
            ``input_score (N, C, Q, J)`` (0 where not detected) that
            ``config.heatmap_source == "poses"`` renders: ``"pose2d"`` or a path (scores: 1 for
            valid joints). Default: ``"pose2d"`` with the ``"poses"`` source (the test split
            too: detections, never the ground truth), None otherwise.
        max_frames: frames kept, evenly spread (None: all).
        zoo_profile: the size of the zoo's ``pose2d`` (``"pose2d"`` labels).
        min_visible: a person is "detected" in a view with at least this many visible joints.
        threshold: detector peak (or external score) below which a joint is not a label.
        noise_px, occluded_px: the ``"noise"`` labels' error (px) of visible / occluded joints.
        seed: the ``"noise"`` labels' random draw.
    """
    if str(pseudo) not in PSEUDO and not Path(str(pseudo)).suffix:
        check_choice(pseudo, "pseudo", PSEUDO)
    check_positive(min_visible, "min_visible", integer=True, strict=False)
    rows = frame_indices(len(dataset), max_frames)
    keys = ("images", "K", "R", "t", "joints3d", "joints2d", "visibility", "bbox", "person_valid")
    cols: dict[str, list] = {k: [] for k in (*keys, "joints3d_valid", "index")}
    for i in tqdm(rows, desc="frames", disable=not progress, leave=False):
        s = dataset[i]
        for k in keys:
            cols[k].append(torch.as_tensor(np.asarray(s[k])))
        jv = s.get("joints3d_valid")
        cols["joints3d_valid"].append(
            torch.as_tensor(np.asarray(jv)) if jv is not None
            else torch.ones(s["joints3d"].shape[:2], dtype=torch.bool))
        cols["index"].append(int(s["index"]))
    t = {k: torch.stack(v) if k != "index" else torch.tensor(v) for k, v in cols.items()}
    N, C, _, H, W = t["images"].shape
    image_size = (W, H)
    J = t["joints3d"].shape[-2]
    if J != config.num_joints:
        raise ValueError(f"config.num_joints ({config.num_joints}) differs from the dataset's "
                         f"{J} joints ({dataset.skeleton})")
    P = _projections(t["K"].float(), t["R"].float(), t["t"].float())
    uv = t["joints2d"].float()  # (N, C, G, J, 2)
    vis = t["visibility"].bool()
    pv = t["person_valid"].bool()
    inside = torch.isfinite(uv).all(-1) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= W - 0.5) & \
        (uv[..., 1] >= -0.5) & (uv[..., 1] <= H - 0.5)
    gt_valid = inside & pv[:, None, :, None] & t["joints3d_valid"].bool()[:, None]
    if inputs is None and config.heatmap_source == "poses":
        inputs = "pose2d"

    def detect() -> tuple[torch.Tensor, torch.Tensor]:
        from mvbook.zoo import load, recipe

        rec = recipe("pose2d", zoo_profile)
        detector = load("pose2d", zoo_profile)
        bbox = t["bbox"].float()
        side = (bbox[..., 2:] - bbox[..., :2]).amin(-1)
        detected = pv[:, None, :] & (vis.sum(-1) >= min_visible) & (side >= 4) & \
            torch.isfinite(bbox).all(-1)
        return pseudo_poses(t["images"], bbox, detected, detector, rec.crop_size,
                            rec.crop_scale, threshold, return_peaks=True)

    detections = None
    if inputs is not None:
        if str(inputs) == "pose2d":
            detections = detect()
        else:
            a, b = read_pseudo(inputs, t["index"].tolist(), C, J, threshold)
            detections = (a, b.float())
    if str(pseudo) == "gt":
        labels, valid = torch.nan_to_num(uv), gt_valid
    elif str(pseudo) == "noise":
        g = torch.Generator().manual_seed(seed)
        sd = torch.where(vis, noise_px, occluded_px)[..., None]
        labels, valid = torch.nan_to_num(uv) + sd * torch.randn(uv.shape, generator=g), gt_valid
    elif str(pseudo) == "pose2d":
        labels, score = detections if str(inputs) == "pose2d" else detect()
        valid = score > 0
    else:
        labels, valid = read_pseudo(pseudo, t["index"].tolist(), C, J, threshold)
    tensors = {
        "images": t["images"], "P": P, "pseudo2d": labels.float(), "pseudo_valid": valid.bool(),
        "joints3d": torch.nan_to_num(t["joints3d"].float()), "joint_valid": t["joints3d_valid"].bool(),
        "person_valid": pv, "index": t["index"],
    }
    if detections is not None:
        tensors["input2d"], tensors["input_score"] = detections[0].float(), detections[1].float()
    return SceneSet(tensors, image_size, getattr(dataset, "skeleton", "h36m17"))


def render_input_heatmaps(model: Any, joints2d: torch.Tensor, score: torch.Tensor,
                          T: torch.Tensor) -> torch.Tensor:
    """The views' heatmaps of ``config.heatmap_source == "poses"``: Gaussians of
    ``heatmap_sigma`` at 2D detections ``(N, C, Q, J, 2)`` image px seen through augmentations
    ``T (N, A, C, 3, 3)``, scaled by ``score (N, C, Q, J)``, the maximum over persons; the root
    heatmap at the mean of the root joints (the smallest of their scores).
    Returns ``(N, A, C, J + 1, h, w)``."""
    from .augment import apply_affine
    from .losses import render_poses

    cfg = model.config
    uv = apply_affine(T[:, :, :, None], joints2d[:, None])  # (N, A, C, Q, J, 2)
    idx = list(cfg.root_joints)
    uv = torch.cat([uv, uv[..., idx, :].mean(-2, keepdim=True)], -2)
    sc = torch.cat([score, score[..., idx].amin(-1, keepdim=True)], -1)[:, None]
    sc = sc.expand(*uv.shape[:-1])
    return render_poses(uv, sc > 0, model.image_size, model.heatmap_size, cfg.heatmap_sigma,
                        weights=sc)


@torch.no_grad()
def cache_heatmaps(model: Any, data: SceneSet, augmentations: int, *, seed: int = 0,
                   device: str | torch.device = "cpu", batch_size: int = 4,
                   progress: bool = True) -> SceneSet:
    """The heatmap bank of a frozen 2D network: for every frame the heatmaps of its views and
    of ``augmentations`` affine-augmented copies (random draws of the config's ranges, one per
    copy and frame; identity when ``config.affine`` is False), float16. Training steps then
    draw two copies (A, B) from the bank instead of running the 2D network. With
    ``config.heatmap_source == "poses"`` the heatmaps are rendered from the set's detections
    (:func:`render_input_heatmaps`)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    N, C = data.tensors["P"].shape[:2]
    A = int(augmentations)
    T = random_affines((N, A), data.image_size, cfg.rotation_deg, cfg.scale, g) if cfg.affine \
        else torch.eye(3).expand(N, A, 3, 3)
    T = torch.cat([torch.eye(3).expand(N, 1, 3, 3), T], 1)[:, :, None].expand(N, A + 1, C, 3, 3)
    if cfg.heatmap_source == "poses":
        return data.replace(heat=render_input_heatmaps(model, data.tensors["input2d"],
                                                       data.tensors["input_score"], T).half(),
                            T=T.contiguous())
    was = model.training
    model.eval().to(device)
    out = []
    for a in tqdm(range(0, N, batch_size), desc="heatmaps", disable=not progress, leave=False):
        images = data.tensors["images"][a:a + batch_size].to(device)
        Tb = T[a:a + batch_size].to(device)
        warped = warp_images(images[:, None].expand(-1, A + 1, *images.shape[1:]), Tb)
        out.append(model.heatmaps(warped).half().cpu())
    model.train(was)
    return data.replace(heat=torch.cat(out), T=T.contiguous())


@torch.no_grad()
def with_proposals(model: Any, data: SceneSet, *, device: str | torch.device = "cpu",
                   batch_size: int = 8) -> SceneSet:
    """The set with the root net's proposals (``proposals (N, K, 3)`` mm, ``proposal_valid``)
    on the unaugmented views: the inputs of the pose stages."""
    was = model.training
    model.eval().to(device)
    J = model.config.num_joints
    roots, valid = [], []
    for a in range(0, len(data), batch_size):
        P = data.tensors["P"][a:a + batch_size].to(device)
        if "heat" in data.tensors:
            heat = data.tensors["heat"][a:a + batch_size, 0].to(device).float()
        elif model.config.heatmap_source == "poses":
            heat = cache_heatmaps(model, data.subset(range(a, min(a + batch_size, len(data)))),
                                  0).tensors["heat"][:, 0].to(device).float()
        else:
            heat = model.heatmaps(data.tensors["images"][a:a + batch_size].to(device))
        r, _, v = model.propose(model.root_volume(heat[:, :, J:J + 1], P))
        roots.append(r.cpu())
        valid.append(v.cpu())
    model.train(was)
    return data.replace(proposals=torch.cat(roots), proposal_valid=torch.cat(valid))
