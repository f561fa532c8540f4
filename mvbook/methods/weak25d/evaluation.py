"""Monocular prediction and evaluation of the 2.5D models (Human3.6M protocols)."""

from __future__ import annotations

import torch

from mvbook.metrics import mpjpe, n_mpjpe, pa_mpjpe

from .data import ImageSet
from .model import Encoded, Weak25DNet, ZooWeak25D
from .pose25d import reconstruct_from_25d

__all__ = ["predict", "evaluate"]


@torch.no_grad()
def predict(model: Weak25DNet | ZooWeak25D, images: torch.Tensor | Encoded, K: torch.Tensor,
            bone_length: torch.Tensor | float = 1.0, batch_size: int = 64,
            device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Monocular predictions for crops ``images (N, 3, S, S)`` with heatmap intrinsics ``K``.

    ``images`` may be the crops' :class:`~.model.Encoded` form for a :class:`ZooWeak25D` (the
    frozen detector's part computed once for several depth heads).

    Returns ``joints2d (N, J, 2)`` heatmap px, ``zr (N, J)`` and ``joints_cam (N, J, 3)`` (the reconstruction
    times ``bone_length``: mm when the true reference-bone length is given) on the CPU.
    """
    model.eval()
    if isinstance(images, Encoded) and not isinstance(model, ZooWeak25D):
        raise TypeError(f"encoded crops need a ZooWeak25D model, got {type(model).__name__}")
    dev = next(model.parameters()).device if device is None else torch.device(device)
    uvs, zrs = [], []
    for k in range(0, len(images), batch_size):
        if isinstance(images, Encoded):
            enc = images[k : k + batch_size].to(dev)
            out = {"joints2d": enc.joints2d, "zr": model.depth(enc)}
        else:
            out = model(images[k : k + batch_size].to(dev))
        uvs.append(out["joints2d"].float().cpu())
        zrs.append(out["zr"].float().cpu())
    uv, zr = torch.cat(uvs), torch.cat(zrs)
    X = reconstruct_from_25d(uv.double(), zr.double(), K.double(), model.config.reference_bone,
                             torch.as_tensor(bone_length).double())
    return {"joints2d": uv, "zr": zr, "joints_cam": X.float()}


def evaluate(model: Weak25DNet | ZooWeak25D, test: ImageSet, batch_size: int = 64,
             pred: dict[str, torch.Tensor] | None = None, encoded: Encoded | None = None
             ) -> dict[str, float]:
    """Metrics of monocular predictions on ``test`` (each view an independent image).

    - ``MPJPE``, ``N-MPJPE``, ``PA-MPJPE`` (mm, all 17 joints; root-aligned at the pelvis,
      scale-fitted, Procrustes-aligned): the predicted 2.5D pose is reconstructed and brought to
      millimetres with the true length of the reference bone (the 2.5D representation defines
      the pose only up to that scale).
    - ``depth error``: mean ``|zr - zr_gt| s`` (mm), the root-relative depth alone.
    - ``MPJPE (true 2D)``: MPJPE of the reconstruction from the *true* 2D joints and the
      predicted depths (isolates what the depth maps learned from 2D precision).
    - ``2D error (px)``: mean distance to the true 2D joints in heatmap pixels, and
      ``2D error (image px)`` in pixels of the original images (when ``test.image_scale`` is
      known).

    ``pred``: :func:`predict`'s output on ``test`` when already computed; ``encoded``: the test
    crops encoded by a :class:`ZooWeak25D`'s detector (:meth:`~.model.ZooWeak25D.encode`).
    """
    if pred is None:
        pred = predict(model, test.images if encoded is None else encoded, test.K, test.bone,
                       batch_size)
    gt = test.joints_cam
    X = pred["joints_cam"]
    root = model.config.root_joint
    X_true2d = reconstruct_from_25d(test.joints2d.double(), pred["zr"].double(), test.K.double(),
                                    model.config.reference_bone, test.bone.double()).float()
    err2d = (pred["joints2d"] - test.joints2d).norm(dim=-1)
    out = {
        "MPJPE": float(mpjpe(X, gt, root=root)),
        "N-MPJPE": float(n_mpjpe(X, gt, root=root)),
        "PA-MPJPE": float(pa_mpjpe(X, gt)),
        "depth error": float(((pred["zr"] - test.zr).abs() * test.bone[:, None]).mean()),
        "MPJPE (true 2D)": float(mpjpe(X_true2d, gt, root=root)),
        "2D error (px)": float(err2d.mean()),
    }
    if test.image_scale is not None:
        out["2D error (image px)"] = float((err2d * test.image_scale[:, None]).mean())
    return out
