"""Evaluation of MCSS: monocular pose metrics on canonical (or global) poses, cross-view
retrieval relative to an oracle (sec. 6.1) and embedding distance against pose distance
(sec. 6.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mvbook.metrics import mpjpe, n_mpjpe, pa_mpjpe, retrieval_pa_mpjpe_at_k

from .data import FrameSet
from .model import MCSSHead

__all__ = ["predict", "evaluate", "retrieval", "embedding_vs_pose"]


@torch.no_grad()
def predict(head: MCSSHead, features: torch.Tensor, batch_size: int = 1024
            ) -> dict[str, torch.Tensor]:
    """``pose (N, J, 3)`` mm and ``embedding (N, E)`` for trunk features ``(N, D)`` (CPU)."""
    head.eval()
    dev = next(head.parameters()).device
    poses, embs = [], []
    for k in range(0, len(features), batch_size):
        out = head(features[k : k + batch_size].to(dev))
        poses.append(out["pose"].float().cpu())
        embs.append(out["embedding"].float().cpu())
    return {"pose": torch.cat(poses), "embedding": torch.cat(embs)}


def evaluate(head: MCSSHead, test: FrameSet, views: Sequence[int] | None = None,
             representation: str | None = None) -> dict[str, float]:
    """Monocular pose metrics over every test image (frame x view in ``views``; None: all).

    Targets: the test poses in the head's representation (``head.config.representation``
    unless given): canonical (eq. 3; the paper evaluates MCSS so) or root-relative global.
    ``MPJPE`` after aligning the roots (pelvis), ``N-MPJPE`` after also fitting the scale
    (Rhodin et al. 2018), ``PA-MPJPE`` after a similarity Procrustes alignment; mm, all 17
    joints, mean over images.
    """
    rep = representation or head.config.representation
    v = list(range(test.views)) if views is None else list(views)
    feats = test.features[:, v].flatten(0, 1)
    gt = test.targets(rep, head.config.root_joint, head.config.left_hip)
    gt = gt[:, None].expand(-1, len(v), -1, -1).flatten(0, 1)
    pred = predict(head, feats)["pose"]
    root = head.config.root_joint
    return {"MPJPE": float(mpjpe(pred, gt, root=root)),
            "N-MPJPE": float(n_mpjpe(pred, gt, root=root)),
            "PA-MPJPE": float(pa_mpjpe(pred, gt))}


def retrieval(embeddings: torch.Tensor, test: FrameSet, ks: Sequence[int] = (1, 5, 10, 20),
              cross_subject: bool = False, queries: int = 300, seed: int = 0,
              oracle: dict[int, float] | None = None) -> dict[str, dict[int, float]]:
    """Mean-PA-MPJPE@K of cross-view retrieval (sec. 6.1) and its oracle, in mm.

    Items are the test images (frame, view) with ``embeddings (F, C, E)``. ``queries`` random
    items (``seed``) query the gallery of all items seen from **another** camera; the paper's
    Case 1 (``cross_subject=False``) keeps every test subject in the gallery, Case 2
    (``True``) only the other subjects. :func:`mvbook.metrics.retrieval_pa_mpjpe_at_k` ranks
    by embedding distance (``ours``) and by the PA-MPJPE of the true poses (``oracle``);
    ``relative`` = ours - oracle, the paper's reported number (0: as good as the oracle).
    The oracle depends on the poses, queries and gallery only: pass ``oracle`` (an earlier
    result's ``"oracle"`` for the same ``test``, ``cross_subject``, ``queries`` and ``seed``)
    to skip recomputing it.
    """
    F_, C = embeddings.shape[:2]
    emb = embeddings.flatten(0, 1)
    poses = test.joints[:, None].expand(-1, C, -1, -1).flatten(0, 1).double()
    views = torch.arange(C).repeat(F_)
    subj, _ = test.ids("subject")
    subj = subj.repeat_interleave(C)
    g = torch.Generator().manual_seed(seed)
    q = torch.randperm(len(emb), generator=g)[: min(queries, len(emb))]
    allowed = (subj[q, None] != subj[None, :]) if cross_subject else None
    common = dict(k=list(ks), query_views=views[q], gallery_views=views, allowed=allowed)
    ours = retrieval_pa_mpjpe_at_k(emb[q].double(), emb.double(), poses[q], poses, **common)
    if oracle is None:
        oracle = retrieval_pa_mpjpe_at_k(emb[q].double(), emb.double(), poses[q], poses,
                                         oracle=True, **common)
    return {"ours": ours, "oracle": oracle, "relative": {k: ours[k] - oracle[k] for k in ks}}


def embedding_vs_pose(embeddings: torch.Tensor, test: FrameSet, bins: Sequence[float],
                      queries: int = 200, seed: int = 0, root: int = 0, left_hip: int = 4
                      ) -> dict[str, torch.Tensor]:
    """Mean embedding distance between a query and the images whose pose differs from the
    query's by an MPJPE in each bin (sec. 6.2, Fig. 6), same subject, same or other view.

    Pose difference: MPJPE (mm) between canonical poses. ``bins`` are the bin edges (mm).
    Returns ``centers``, ``same_view`` and ``other_view`` (NaN for an empty bin).
    """
    F_, C = embeddings.shape[:2]
    subj, _ = test.ids("subject")
    can = test.targets("canonical", root, left_hip)
    g = torch.Generator().manual_seed(seed)
    qf = torch.randint(F_, (queries,), generator=g)
    qv = torch.randint(C, (queries,), generator=g)
    pose_d = (can[qf, None] - can[None]).norm(dim=-1).mean(-1)               # (Q, F)
    emb_d = (embeddings[qf, qv][:, None, None] - embeddings[None]).norm(dim=-1)  # (Q, F, C)
    same_subject = subj[qf, None] == subj[None]
    edges = torch.as_tensor(bins, dtype=pose_d.dtype)
    which = torch.bucketize(pose_d, edges) - 1                                 # (Q, F)
    same_view = torch.arange(C)[None, None] == qv[:, None, None]               # (Q, 1, C)
    nb = len(edges) - 1
    out = {"centers": (edges[1:] + edges[:-1]) / 2}
    for name, vmask in (("same_view", same_view), ("other_view", ~same_view)):
        ok = (same_subject & (which >= 0) & (which < nb))[..., None] & vmask
        ok = ok & ~((pose_d == 0)[..., None] & same_view)  # never the query itself
        idx = which[..., None].expand_as(ok)[ok]
        vals = emb_d[ok]
        sums = torch.zeros(nb).index_add_(0, idx, vals)
        counts = torch.zeros(nb).index_add_(0, idx, torch.ones_like(vals))
        out[name] = torch.where(counts > 0, sums / counts.clamp_min(1), torch.tensor(float("nan")))
    return out
