"""Evaluation of SelfPose3d: :func:`predict` (per-frame proposals and poses) and
:func:`evaluate` (the paper's metrics with :mod:`mvbook.metrics`).

- Panoptic (Tab. 1): AP@25..150, Recall@500 and the MPJPE of the matched poses, VoxelPose's
  protocol (:func:`mvbook.metrics.multiperson_ap`), on the ground truth's valid joints.
- The root net (sec. 3.3): AP and recall of the proposals against the true roots
  (:func:`mvbook.metrics.root_ap`) and their mean error.
- Shelf/Campus (Tab. 2): PCP (:func:`mvbook.metrics.pcp`) after conversion to ``shelf14``
  (:func:`mvbook.skeletons.convert_joints`), averaged over actors 1-3.
"""

from __future__ import annotations

from typing import Any

import torch

from mvbook import metrics
from mvbook.skeletons import convert_joints

from .data import SceneSet
from .losses import roots_of

__all__ = ["evaluate", "predict"]


@torch.no_grad()
def predict(model: Any, data: SceneSet, *, device: str | torch.device = "cpu",
            batch_size: int = 4) -> dict[str, torch.Tensor]:
    """The model's outputs on every frame of ``data`` (its cached unaugmented heatmaps when it
    has a bank): ``poses (N, K, J, 3)`` mm (NaN where not valid), ``roots (N, K, 3)`` mm,
    ``scores (N, K)``, ``valid (N, K)`` bool."""
    if "heat" not in data.tensors and model.config.heatmap_source == "poses":
        from .data import cache_heatmaps

        data = cache_heatmaps(model, data, 0)
    was = model.training
    model.eval().to(device)
    keys = ("poses", "roots", "scores", "valid")
    out: dict[str, list] = {k: [] for k in keys}
    for a in range(0, len(data), batch_size):
        P = data.tensors["P"][a:a + batch_size].to(device).float()
        if "heat" in data.tensors:
            res = model(None, P, heatmaps=data.tensors["heat"][a:a + batch_size, 0].to(device).float())
        else:
            res = model(data.tensors["images"][a:a + batch_size].to(device), P)
        for k in keys:
            out[k].append(res[k].cpu())
    model.train(was)
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate(model: Any, data: SceneSet, *, device: str | torch.device = "cpu",
             prediction: dict[str, torch.Tensor] | None = None, pcp: bool | None = None,
             pcp_actors: int = 3) -> dict[str, float]:
    """The paper's metrics on ``data`` (its 3D ground truth).

    Returns a flat dict: ``AP@25`` .. ``AP@150``, ``Recall@500`` (percent), ``MPJPE`` (mm);
    ``root AP@50`` .. ``root AP@300``, ``root Recall@500`` (percent), ``root error`` (mm);
    ``proposals`` (mean valid proposals per frame); with ``pcp`` (default: for ``shelf14`` data)
    ``PCP`` (percent, the mean over actors ``1..pcp_actors``; an actor never present counts 0 as
    in VoxelPose's evaluation) and ``PCP actor k``.
    ``prediction``: the output of :func:`predict` when already computed.
    """
    pred = prediction if prediction is not None else predict(model, data, device=device)
    gt = data.tensors["joints3d"].float()
    jv = data.tensors["joint_valid"].bool()
    pv = data.tensors["person_valid"].bool()
    scores, valid = pred["scores"], pred["valid"]
    ap = metrics.multiperson_ap(pred["poses"], gt, scores, valid, pv, jv)
    out = {k: float(v) for k, v in ap.items() if k.startswith(("AP@", "Recall@500", "MPJPE"))}
    roots, rvalid = roots_of(gt, jv, model.config.root_joints)
    r = metrics.root_ap(pred["roots"], roots, scores, valid, pv & rvalid)
    out.update({f"root {k}": float(v) for k, v in r.items()
                if k.startswith(("AP@", "Recall@500", "error"))})
    out["proposals"] = float(valid.float().sum(-1).mean())
    if pcp is None:
        pcp = data.skeleton == "shelf14"
    if pcp:
        to = "shelf14"
        pred14 = pred["poses"] if data.skeleton == to else convert_joints(pred["poses"], data.skeleton, to)
        gt14 = gt if data.skeleton == to else convert_joints(gt, data.skeleton, to)
        n = min(pcp_actors, gt14.shape[1])
        res = metrics.pcp(pred14, gt14[:, :n], valid,
                          pv[:, :n] & torch.isfinite(gt14[:, :n]).all(-1).all(-1))
        per_actor = torch.nan_to_num(res["pcp_per_actor"], nan=0.0)
        out["PCP"] = float(per_actor.sum() / pcp_actors)
        for k in range(n):
            out[f"PCP actor {k + 1}"] = float(per_actor[k])
    return out
