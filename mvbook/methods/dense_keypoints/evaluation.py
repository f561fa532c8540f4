"""Evaluation of dense keypoints (sec. 4.4): geometric consistency (epipolar error), dense
keypoint accuracy (RCP AUC10/AUC30, mRCI, mGPS on the body surface's geodesics) and
reconstruction accuracy (MPVPE, mMVS from triangulated surface points).
"""

from __future__ import annotations

import torch

from mvbook.geometry import fundamental_from_projections
from mvbook.metrics import epipolar_error

from .config import Settings
from .data import ViewSet
from .model import DenseNet, canonical_points, foreground_pixels

__all__ = ["MATCH_TOLERANCE", "predict", "view_pairs", "epipolar_nn_error", "evaluate"]


@torch.no_grad()
def predict(net: DenseNet, views: ViewSet, batch_size: int = 256) -> torch.Tensor:
    """The dense keypoint fields ``(F, C, 3, h, h)`` (part, U, V) of every crop of ``views``."""
    was = net.training
    net.eval()
    dev = next(net.parameters()).device
    enc = views.encoding.flatten(0, 1)
    out = [net.field(net(enc[a:a + batch_size].to(dev))).cpu()
           for a in range(0, len(enc), batch_size)]
    net.train(was)
    return torch.cat(out).view(*views.encoding.shape[:2], *out[0].shape[1:])


def view_pairs(C: int) -> torch.Tensor:
    """All ordered pairs ``(a, b)``, ``a != b``, of ``C`` views: ``(C (C - 1), 2)``."""
    a, b = torch.meshgrid(torch.arange(C), torch.arange(C), indexing="ij")
    keep = a != b
    return torch.stack([a[keep], b[keep]], -1)


#: The correspondence tolerance of the evaluation's nearest-neighbour matches and of the
#: dense triangulation (mm on the canonical body surface): about one output pixel at the
#: subject in the quick studio (32 px maps of 128 px crops of 1.2 x the person box).
MATCH_TOLERANCE = 60.0


@torch.no_grad()
def epipolar_nn_error(fields: torch.Tensor, views: ViewSet, tolerance: float = MATCH_TOLERANCE,
                      chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The epipolar error of dense keypoints in image pixels, and the fraction of foreground
    pixels it counts, per frame and ordered view pair: two ``(F, C (C - 1))`` tensors (the error
    is NaN where no pixel counts).

    Protocol (eq. 2, the nearest-neighbour correspondence): every foreground pixel ``x`` of
    view a is matched to the foreground pixel ``x'`` of view b whose predicted surface point
    is nearest on the canonical body (:func:`~.model.canonical_points`: part and UV in one
    coordinate, mm); it counts when that distance is below ``tolerance`` mm (the visibility of
    eq. 8); its error is the distance of ``x'`` to the epipolar line of ``x``, converted from
    output-map pixels to image pixels of view b. Per pair: the mean over counted pixels. The
    same protocol for every model and for the true IUV. ``fields (F, C, 3, h, h)`` from
    :func:`predict` (or the true IUV).
    """
    F_, C = fields.shape[:2]
    pairs = view_pairs(C)
    f_idx = torch.arange(F_).repeat_interleave(len(pairs))
    a_idx, b_idx = pairs[:, 0].repeat(F_), pairs[:, 1].repeat(F_)
    err_out = torch.full((len(f_idx),), float("nan"))
    seen_out = torch.zeros(len(f_idx))
    for s in range(0, len(f_idx), chunk):
        f, a, b = f_idx[s:s + chunk], a_idx[s:s + chunk], b_idx[s:s + chunk]
        fa, fb = fields[f, a], fields[f, b]
        pa = foreground_pixels(fa[:, 0].long(), fa[:, 1:])
        pb = foreground_pixels(fb[:, 0].long(), fb[:, 1:])
        xa, xb = canonical_points(pa["part"], pa["uv"]), canonical_points(pb["part"], pb["uv"])
        d = torch.cdist(xa, xb)  # (n, K, K'): the chunk's pairs only
        d = torch.where(pb["valid"][:, None, :], d, torch.full_like(d, float("inf")))
        dmin, j = d.min(-1)
        seen = pa["valid"] & (dmin < tolerance)
        xb_px = pb["xy"].gather(1, j[..., None].expand(-1, -1, 2))
        Fm = fundamental_from_projections(views.P[f, a].double(), views.P[f, b].double())
        err = epipolar_error(pa["xy"].double(), xb_px.double(), Fm, mask=seen,
                             reduction="none").float()
        err_out[s:s + chunk] = torch.where(seen.any(1), err * views.px_scale[f, b],
                                           torch.full_like(err, float("nan")))
        seen_out[s:s + chunk] = seen.sum(1) / pa["valid"].sum(1).clamp_min(1)
    return err_out.view(F_, len(pairs)), seen_out.view(F_, len(pairs))


def evaluate(net: DenseNet | None, views: ViewSet, plan: Settings,
             fields: torch.Tensor | None = None) -> dict[str, float]:
    """The paper's metrics (sec. 4.4) of ``net`` (or of given ``fields``) on ``views``.

    - ``epipolar error`` (image px; :func:`epipolar_nn_error`, mean over frames and view
      pairs) and ``matched %`` (the foreground pixels it counts);
    - ``AUC10``, ``AUC30``, ``mRCI``, ``mGPS`` (fractions in [0, 1]): keypoint accuracy from
      the geodesic distances on the studio body to the true surface point at every true
      foreground pixel (:func:`mvbook.studio.surface.dense_keypoint_metrics`);
    - ``MPVPE`` (mm) and ``mMVS``: body-surface vertices triangulated from the predicted fields
      of all views against the posed truth (when ``views.vertices`` is known);
    - ``part accuracy`` (%): the true foreground pixels given the right part.
    """
    from mvbook.studio.surface import dense_keypoint_metrics

    if fields is None:
        fields = predict(net, views)
    epi, seen = epipolar_nn_error(fields, views)
    gt = views.iuv
    fg = gt[:, :, 0] > 0
    right = (fields[:, :, 0] == gt[:, :, 0]) & fg
    out = {"epipolar error": float(epi.nanmean()), "matched %": 100 * float(seen.mean())}
    if views.vertices is not None:
        m = dense_keypoint_metrics(fields, gt, views.P, views.vertices,
                                   tolerance=MATCH_TOLERANCE)
        out.update({"AUC10": m["auc10"], "AUC30": m["auc30"], "mRCI": m["mrci"],
                    "mGPS": m["mgps"], "MPVPE": m["mpvpe"], "mMVS": m["mmvs"]})
    out["part accuracy"] = 100 * float(right.sum() / fg.sum().clamp_min(1))
    return out
