"""Predictors and evaluation of learnable triangulation.

A *predictor* maps a :class:`~.data.CropSet` batch to 3D joints ``(B, J, 3)`` mm: the naive
baseline (per-view argmax + DLT), RANSAC, the algebraic and the volumetric model.
:func:`predict` runs one over a set (per-sample predictions), :func:`predict_many` several in one
pass; both take an in-memory :class:`~.data.CropSet` or a :class:`~.data.CropStream` (a test set
cropped chunk by chunk). :func:`evaluate` reduces predictions to the paper's numbers
(``dict[str, float]``); :func:`errors_table` gives the per-action tables.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mvbook.crops import crop_to_heatmap, heatmap_to_crop, normalize_images
from mvbook.geometry import triangulate, triangulate_ransac
from mvbook.heatmaps import refine_argmax_2d
from mvbook.heatmaps import soft_argmax_errors as heatmap_soft_argmax_errors
from mvbook.metrics import mpjpe
from mvbook.nn.backbones import SimpleBaseline
from mvbook.runtime import resolve_device
from mvbook.train import to_device

from .data import CACHE_KEYS, CropSet, CropStream, cached_outputs, partner_joints, select_views
from .model import AlgebraicTriangulationNet, VolumetricTriangulationNet

__all__ = [
    "Predictor",
    "argmax_joints",
    "soft_argmax_errors",
    "ALPHAS",
    "choose_alpha",
    "errors_2d",
    "naive_predictor",
    "ransac_predictor",
    "algebraic_predictor",
    "volumetric_predictor",
    "predict",
    "predict_many",
    "select_frames",
    "evaluate",
    "errors_table",
]


Predictor = Callable[[dict], torch.Tensor]


def argmax_joints(backbone: SimpleBaseline, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view heatmap peaks ``(B, C, J, 2)`` crop px and peak values ``(B, C, J)``: the argmax
    refined to sub-pixel precision by a Gaussian fit (:func:`mvbook.heatmaps.refine_argmax_2d`,
    the zoo detector's own readout).

    Uses the batch's cached heatmaps when present (:func:`cache_backbone`).
    """
    images = batch["images"]
    cached = cached_outputs(batch)
    if cached is not None:
        heat = cached.heatmaps.float()
    else:
        B, C = images.shape[:2]
        x = normalize_images(images)
        heat = backbone(x.flatten(0, 1)).heatmaps.unflatten(0, (B, C))
    uv_h, score = refine_argmax_2d(heat.float())
    return heatmap_to_crop(uv_h.float(), heat.shape[-1], images.shape[-1]), score


@torch.no_grad()
def errors_2d(
    backbone: SimpleBaseline,
    data: CropSet,
    flip_pairs: Sequence[tuple[int, int]] = (),
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Per-view 2D errors of the backbone's heatmap argmax, and where the large ones land.

    For every sample, view and joint: ``error`` is the distance (crop px) from the argmax joint
    to its ground truth and ``partner_error`` the distance to the ground truth of its left/right
    partner (``flip_pairs``; the joint itself for central joints). A large error with a small
    partner error means the detector put the joint on the other side of the body -- a left/right
    confusion that a single view cannot resolve when the body looks alike from both sides.

    Returns:
        dict of cpu tensors ``error``, ``partner_error`` ``(N, C, J)`` crop px and
        ``visibility`` ``(N, C, J)`` bool.
    """
    dev = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(dev)
    partner = partner_joints(data.tensors["joints2d"].shape[-2], flip_pairs)
    err, perr = [], []
    for s in range(0, len(data), batch_size):
        batch = to_device({k: v[s : s + batch_size] for k, v in data.tensors.items()}, dev)
        uv, _ = argmax_joints(backbone, batch)
        gt = batch["joints2d"].float()
        err.append((uv - gt).norm(dim=-1).cpu())
        perr.append((uv - gt[..., partner.to(dev), :]).norm(dim=-1).cpu())
    backbone.train(was_training)
    return {
        "error": torch.cat(err),
        "partner_error": torch.cat(perr),
        "visibility": data.tensors["visibility"].bool(),
    }


def soft_argmax_errors(data: CropSet, alphas: Iterable[float]) -> dict[float, float]:
    """Mean 2D error (crop px, visible joints) of the soft-argmax (eqs. 1-2) of the cached
    heatmaps of ``data`` (:func:`cache_backbone`) for each inverse temperature ``alpha``
    (:func:`mvbook.heatmaps.soft_argmax_errors`, brought from heatmap to crop pixels).

    With a frozen backbone whose heatmaps were trained by a heatmap MSE (values in [0, 1]), the
    paper's ``alpha = 100`` is nearly a hard argmax (it quantises to whole heatmap pixels); a
    smaller ``alpha`` spreads the softmax over the peak and reads sub-pixel positions. Measure it
    on training views to choose ``alpha``.
    """
    if "heatmaps" not in data.tensors:
        raise ValueError("data has no cached heatmaps: run cache_backbone first")
    heat = data.tensors["heatmaps"]
    h, S = heat.shape[-1], data.tensors["images"].shape[-1]
    gt = crop_to_heatmap(data.tensors["joints2d"].float(), h, S)
    errors = heatmap_soft_argmax_errors(heat, gt, data.tensors["visibility"], alphas)
    return {alpha: err * S / h for alpha, err in errors.items()}  # a resize scales distances


#: The inverse temperatures :func:`choose_alpha` tries.
ALPHAS = (5.0, 10.0, 20.0, 50.0, 100.0)


def choose_alpha(train: CropSet, alphas: Iterable[float] = ALPHAS, every: int = 5
                 ) -> tuple[float, dict[float, float]]:
    """The ``alpha`` of :data:`ALPHAS` with the smallest soft-argmax 2D error on every
    ``every``-th training frame (:func:`soft_argmax_errors`), and the whole sweep."""
    sweep = soft_argmax_errors(train.subset(range(0, len(train), every)), alphas)
    return min(sweep, key=sweep.get), sweep


def naive_predictor(backbone: SimpleBaseline, use_cache: bool = True) -> Predictor:
    """Per-view heatmap peaks (:func:`argmax_joints`), then plain (unweighted) DLT triangulation.

    With ``use_cache`` the batch's cached heatmaps (:func:`cache_backbone`) are used when present.
    """
    def predict(batch: dict) -> torch.Tensor:
        b = batch if use_cache else {k: v for k, v in batch.items() if k not in CACHE_KEYS}
        uv, _ = argmax_joints(backbone, b)
        return triangulate(uv, b["P"].float())

    return predict


def ransac_predictor(
    backbone: SimpleBaseline, threshold: float = 4.0, use_cache: bool = True
) -> Predictor:
    """Per-view heatmap argmax, then RANSAC triangulation (threshold in crop px).

    Joints for which no hypothesis finds two inlier views fall back to the plain DLT of all
    views (so every joint has a prediction, as the paper's evaluation needs).
    """
    def predict(batch: dict) -> torch.Tensor:
        b = batch if use_cache else {k: v for k, v in batch.items() if k not in CACHE_KEYS}
        uv, _ = argmax_joints(backbone, b)
        P = b["P"].float()
        X, _ = triangulate_ransac(uv, P, threshold=threshold)
        bad = ~torch.isfinite(X).all(-1, keepdim=True)
        if bool(bad.any()):
            X = torch.where(bad, triangulate(uv, P), X)
        return X

    return predict


def algebraic_predictor(model: AlgebraicTriangulationNet) -> Predictor:
    """The algebraic model's triangulated joints."""

    def predict(batch: dict) -> torch.Tensor:
        return model(batch["images"], batch["P"], cached=cached_outputs(batch, model))["joints3d"]

    return predict


def volumetric_predictor(
    model: VolumetricTriangulationNet, root: str | Predictor = "gt", root_joint: int = 0
) -> Predictor:
    """The volumetric model's joints with the cube around ``root``.

    ``root``: ``"gt"`` (ground-truth pelvis) or a predictor (e.g. :func:`algebraic_predictor`)
    whose joint ``root_joint`` is used, as in the paper.
    """

    def predict(batch: dict) -> torch.Tensor:
        if root == "gt":
            r = batch["joints3d"][:, root_joint]
        elif callable(root):
            r = root(batch)[:, root_joint]
        else:
            raise ValueError(f"root must be 'gt' or a predictor, got {root!r}")
        return model(batch["images"], batch["P"], r, None, cached=cached_outputs(batch, model))["joints3d"]

    return predict


def _chunks(data: CropSet | CropStream) -> Iterator[CropSet]:
    if isinstance(data, CropStream):
        yield from data.chunks()
    elif isinstance(data, CropSet):
        yield data
    else:
        raise TypeError(f"data must be a CropSet or a CropStream, got {type(data).__name__}")


@torch.no_grad()
def predict_many(
    predictors: Mapping[Hashable, Predictor | tuple[Predictor, Iterable[nn.Module]]],
    data: CropSet | CropStream,
    *,
    views: Sequence[int] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    models: Iterable[nn.Module] = (),
    progress: bool = False,
) -> dict[Hashable, dict[str, torch.Tensor]]:
    """Run several predictors over the same frames in one pass; per-sample predictions of each.

    Args:
        predictors: name -> predictor, or name -> ``(predictor, modules it runs)``.
        data: a :class:`~.data.CropSet` (in memory), or a :class:`~.data.CropStream`: then each
            chunk is cropped once, every predictor runs on it, and only the predictions are kept
            (memory: one chunk plus ``J x 3`` floats per frame and predictor).
        views: indices of the views to use (default all) -- for MPJPE versus number of views.
        models: further modules to put in eval mode first.

    Returns:
        name -> dict with ``pred`` ``(N, J, 3)`` mm, ``gt`` ``(N, J, 3)``, ``subject``,
        ``action``, ``index`` ``(N,)`` (cpu tensors; ``subject``/``action`` index
        ``data.subjects``/``data.actions``).
    """
    dev = resolve_device(device)
    runs: dict[Hashable, Predictor] = {}
    for name, entry in predictors.items():
        fn, mods = entry if isinstance(entry, tuple) else (entry, ())
        runs[name] = fn
        for m in mods:
            m.eval()
    for m in models:
        m.eval()
    preds: dict[Hashable, list[torch.Tensor]] = {name: [] for name in runs}
    meta: dict[str, list[torch.Tensor]] = {k: [] for k in ("gt", "subject", "action", "index")}
    bar = tqdm(desc="evaluate", disable=not progress, total=len(data), unit="frame")
    for chunk in _chunks(data):
        t = chunk.tensors
        for s in range(0, len(chunk), batch_size):
            batch = {k: v[s : s + batch_size] for k, v in t.items()}
            batch = to_device(select_views(batch, views), dev)
            for name, fn in runs.items():
                preds[name].append(fn(batch).float().cpu())
            bar.update(len(batch["P"]))
        meta["gt"].append(t["joints3d"].float())
        for k in ("subject", "action", "index"):
            meta[k].append(t[k])
    bar.close()
    common = {k: torch.cat(v) for k, v in meta.items()}
    return {name: {"pred": torch.cat(p) if p else torch.zeros(0, 0, 3), **common}
            for name, p in preds.items()}


def predict(
    predictor: Predictor,
    data: CropSet | CropStream,
    *,
    views: Sequence[int] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    models: Iterable[nn.Module] = (),
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run a predictor over a :class:`CropSet` (or a :class:`~.data.CropStream`, chunk by
    chunk); returns per-sample predictions (:func:`predict_many` with one predictor).

    Args:
        views: indices of the views to use (default all) -- for MPJPE versus number of views.
        models: modules to put in eval mode first.

    Returns:
        dict with ``pred`` ``(N, J, 3)`` mm, ``gt`` ``(N, J, 3)``, ``subject``, ``action``,
        ``index`` ``(N,)`` (cpu tensors).
    """
    return predict_many({0: (predictor, models)}, data, views=views, batch_size=batch_size,
                        device=device, progress=progress)[0]


def select_frames(result: dict[str, torch.Tensor], index: torch.Tensor | Sequence[int]
                  ) -> dict[str, torch.Tensor] | None:
    """The rows of a :func:`predict` output for the frames whose dataset ``index`` is given, in
    that order (e.g. the in-memory test frames within a streamed evaluation of every frame);
    None when one of them was not predicted."""
    where = {int(k): row for row, k in enumerate(result["index"].tolist())}
    rows = [where.get(int(k)) for k in torch.as_tensor(index).tolist()]
    if any(r is None for r in rows):
        return None
    sel = torch.as_tensor(rows, dtype=torch.long)
    return {k: v[sel] for k, v in result.items()}


def errors_table(
    results: dict[str, dict[str, torch.Tensor]],
    actions: Sequence[str],
    root_joint: int | None = 0,
    all_frames: bool = False,
) -> tuple[list[str], list[str], np.ndarray]:
    """Per-action MPJPE (mm) of several methods' :func:`predict` outputs.

    ``root_joint=None`` gives absolute MPJPE; an int aligns both poses at that joint first
    (root-relative MPJPE, the Human3.6M protocol). Returns ``(row names = methods,
    column names = actions + ["average"], values (methods, actions + 1))``; "average" is the
    mean of the per-action values, as in the paper's tables ("averaged across all actions").
    ``all_frames=True`` adds a last column "all frames": the mean over every frame, which
    weights an action by its number of frames (the "Average" of the authors' evaluation code).
    """
    names = list(results)
    present = sorted({int(a) for r in results.values() for a in r["action"].tolist()})
    cols = [actions[a] for a in present] + ["average"] + (["all frames"] if all_frames else [])
    values = np.full((len(names), len(cols)), np.nan)
    last = len(present)
    for i, name in enumerate(names):
        r = results[name]
        for j, a in enumerate(present):
            sel = r["action"] == a
            if sel.any():
                values[i, j] = float(
                    mpjpe(r["pred"][sel], r["gt"][sel], root=root_joint, reduction="mean")
                )
        values[i, last] = float(np.nanmean(values[i, :last]))
        if all_frames and len(r["pred"]):
            values[i, -1] = float(mpjpe(r["pred"], r["gt"], root=root_joint, reduction="mean"))
    return names, cols, values


def evaluate(
    predictor: Predictor,
    data: CropSet | CropStream,
    *,
    root_joint: int = 0,
    views: Sequence[int] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    models: Iterable[nn.Module] = (),
) -> dict[str, float]:
    """The paper's numbers for one predictor on ``data`` (Human3.6M protocol).

    Returns ``{"MPJPE": root-relative (both poses translated so that joint ``root_joint``
    coincides), "MPJPE absolute": world frame}``, each the mean over actions of the per-action
    mean over frames and joints (mm), as the paper's tables average; and
    ``"MPJPE, <action>"`` for every action present.
    """
    result = predict(predictor, data, views=views, batch_size=batch_size, device=device,
                     models=models)
    _, cols, rel = errors_table({"m": result}, data.actions, root_joint=root_joint)
    _, _, ab = errors_table({"m": result}, data.actions, root_joint=None)
    out = {"MPJPE": float(rel[0, -1]), "MPJPE absolute": float(ab[0, -1])}
    out.update({f"MPJPE, {c}": float(v) for c, v in zip(cols[:-1], rel[0, :-1])})
    return out
