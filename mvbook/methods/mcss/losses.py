"""Losses of MCSS (Mitra et al. 2020): the multiview-consistent metric loss (eqs. 1-2),
the pose loss, and :func:`make_loss` for :func:`mvbook.train.train`.

- :func:`hardnet_loss`, L_cnstr: HardNet-style (Mishchuk et al. 2017) in-batch hardest
  negatives with the paper's threshold ``beta`` on what may serve as a negative.
- :func:`pose_loss`, L_pose: L1 between the predicted and the target pose in the regressor's
  per-joint normalised units.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mvbook.validation import check_choice, check_same_shape, check_shape

from .config import MODES, Config

__all__ = ["distance_matrix", "hardest_negatives", "hardnet_loss", "pose_loss", "make_loss"]

_EPS = 1e-12  # inside the square root: a finite gradient for coinciding embeddings


def distance_matrix(anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """``D (m, m)``, ``D[i, j] = ||anchor_i - positive_j||_2`` for ``(m, E)`` embeddings.

    Computed as ``sqrt(max(|a|^2 + |p|^2 - 2 a.p, 0) + 1e-12)`` (one matrix product; the tiny
    constant keeps the gradient finite where two embeddings coincide).
    """
    check_shape(anchor, "anchor", "(m, E)")
    check_same_shape(anchor, positive, ("anchor", "positive"))
    d2 = (anchor * anchor).sum(-1)[:, None] + (positive * positive).sum(-1)[None, :] \
        - 2.0 * anchor @ positive.T
    return torch.sqrt(d2.clamp_min(0.0) + _EPS)


def hardest_negatives(D: torch.Tensor, beta: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: the hardest admissible negative of every pair ``i`` of a distance matrix ``D``.

    For anchor ``i`` the candidates are the positives ``j != i`` of its row and the anchors
    ``k != i`` of its column whose distance exceeds ``beta`` (the paper's ``delta(x) = [x >
    beta]``: pairs closer than ``beta`` are likely the same pose and never serve as negatives).
    The paper writes ``argmin delta(D) * D``; taken literally the masked entries would be 0 and
    win the argmin, so they are excluded instead.

    Returns ``(D_min (m,), valid (m,) bool)``: ``D_min^i = min(D(i, j_min), D(k_min, i))``, and
    ``+inf`` where no candidate passes the threshold (``valid`` False). Ties have one minimum
    value, so the result does not depend on which tied index is taken.
    """
    check_shape(D, "D", "(m, m)")
    m = D.shape[0]
    off = ~torch.eye(m, dtype=torch.bool, device=D.device)
    inf = torch.full((), float("inf"), dtype=D.dtype, device=D.device)
    cand = torch.where(off & (D > beta), D, inf)
    d_min = torch.minimum(cand.min(dim=1).values, cand.min(dim=0).values)
    return d_min, torch.isfinite(d_min)


def hardnet_loss(anchor: torch.Tensor, positive: torch.Tensor, alpha: float = 0.6,
                 beta: float = 0.3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_cnstr (eq. 2): ``1/m sum_i D(i, i) + max(0, alpha - D_min^i)``.

    Args:
        anchor, positive: ``(m, E)`` embeddings of the same ``m`` instants (one subject) seen
            from two different cameras; row ``i`` of both is one instant.
        alpha: the margin (paper 0.6); beta: the negative threshold of :func:`hardest_negatives`
            (paper 0.3).

    A pair without an admissible negative contributes its positive distance only (its hinge is
    ``max(0, alpha - inf) = 0``). Returns ``(loss, logs)`` with the mean positive distance
    ``d_pos``, the mean hardest-negative distance over the valid pairs ``d_neg`` and the
    fraction of pairs with a valid negative ``valid``.
    """
    D = distance_matrix(anchor, positive)
    d_pos = torch.diagonal(D)
    d_min, valid = hardest_negatives(D, beta)
    hinge = torch.where(valid, (alpha - d_min).clamp_min(0.0), torch.zeros_like(d_pos))
    loss = (d_pos + hinge).mean()
    d_neg = d_min[valid].mean() if bool(valid.any()) else torch.full_like(loss, float("nan"))
    return loss, {"d_pos": d_pos.detach().mean(), "d_neg": d_neg.detach(),
                  "valid": valid.float().mean()}


def pose_loss(pred_norm: torch.Tensor, target_norm: torch.Tensor) -> torch.Tensor:
    """L_pose: mean absolute error between predicted and target poses ``(N, J, 3)`` in the
    regressor's per-joint normalised units (the paper's L1 norm, divided by ``3 J``)."""
    check_same_shape(pred_norm, target_norm, ("pred_norm", "target_norm"))
    return (pred_norm - target_norm).abs().mean()


def make_loss(mode: str, config: Config):
    """``loss_fn(head, batch) -> (loss, logs)`` for :func:`mvbook.train.train` on a
    :class:`~.model.MCSSHead` and :class:`~.data.JointBatches` batches.

    ``"mcss"``: ``w_metric L_cnstr + w_pose L_pose``; ``"baseline"``: ``L_pose`` alone;
    ``"metric"``: ``L_cnstr`` alone (no 3D labels). Batches carry ``anchor``, ``positive``
    ``(m, D)`` trunk features and ``pose_features (b, D)``, ``pose_target (b, J, 3)`` mm.
    """
    check_choice(mode, "mode", MODES)

    def loss_fn(head: nn.Module, batch: Mapping[str, torch.Tensor]):
        logs: dict[str, torch.Tensor] = {}
        total = None
        if mode in ("mcss", "metric"):
            ea, ep = head.embed(batch["anchor"]), head.embed(batch["positive"])
            l_metric, mlogs = hardnet_loss(ea, ep, config.alpha, config.beta)
            logs.update(l_cnstr=l_metric.detach(), **mlogs)
            total = config.w_metric * l_metric if mode == "mcss" else l_metric
        if mode in ("mcss", "baseline"):
            out = head(batch["pose_features"])
            l_pose = pose_loss(out["pose_norm"], head.normalize(batch["pose_target"]))
            logs["l_pose"] = l_pose.detach()
            term = config.w_pose * l_pose
            total = term if total is None else total + term
        assert total is not None
        return total, logs

    return loss_fn
