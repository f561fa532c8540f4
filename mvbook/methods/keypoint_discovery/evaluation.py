"""Measuring discovered keypoints (Honari et al., secs. 3.4-3.5): how well they predict 3D pose.

The unsupervised model is frozen; :func:`predict` reads its discovered 3D keypoints X, its 2D
keypoints x and its latent features Xi on every frame. A pose regressor theta (eq. 17) is then
fitted on the training subjects' labelled joints and measured on the test subjects:

- :func:`fit_linear`: the linear map (least squares with a small ridge, in closed form);
- :func:`fit_mlp`: the 2-hidden-layer MLP of sec. S.1.2 (:class:`~.model.PoseMLP`).

Inputs are made translation-free, because the question is pose, not position: the keypoints
X minus their mean (world axes), the latent features of all views concatenated; targets are
the joints minus the root joint. :func:`evaluate` reports the root-relative MPJPE, N-MPJPE
and PA-MPJPE (mm, :mod:`mvbook.metrics`).

The single-view model (sec. 3.4, Tab. S2): :func:`fit_lifter` trains the :class:`~.model.Lifter`
from one view's 2D keypoints to the discovered 3D keypoints of the same instant, in that
camera's axes; :func:`evaluate_single_view` regresses the pose from the lifted keypoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from mvbook.metrics import mpjpe, n_mpjpe, pa_mpjpe
from mvbook.runtime import resolve_device

from .config import Settings
from .data import FrameSet
from .losses import batch_images
from .model import KeypointDiscovery, Lifter, PoseMLP

__all__ = ["FEATURES", "REGRESSORS", "predict", "pose_inputs", "pose_targets", "fit_linear",
           "fit_mlp", "pose_metrics", "evaluate", "fit_lifter", "evaluate_single_view",
           "mean_pose_metrics", "keypoint_diagnostics", "summary"]

#: What the pose regressor reads: the discovered 3D keypoints, or the latent features Xi.
FEATURES = ("keypoints", "latent")
#: The pose regressors of the paper: linear, or the 2-hidden-layer MLP.
REGRESSORS = ("linear", "mlp")


@torch.no_grad()
def predict(model: KeypointDiscovery, frames: FrameSet, batch: int = 32,
            device: str | torch.device = "cpu", keypoints: bool = True,
            progress: bool = False) -> dict[str, torch.Tensor]:
    """The frozen model on every frame: ``latent (F, C, D)``, ``boxes (F, C, 4)`` and, with
    ``keypoints``, ``keypoints2d (F, C, N, 2)`` (patch px), ``keypoints3d (F, N, 3)`` (world mm)
    and ``reprojected_frame (F, C, N, 2)`` (frame px). CPU tensors."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    keep = ["latent", "boxes"] + (["keypoints2d", "keypoints3d", "reprojected_frame"]
                                  if keypoints else [])
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keep}
    n = len(frames)
    for s in tqdm(range(0, n, batch), desc="keypoints", disable=not progress, leave=False):
        b = frames.batch(torch.arange(s, min(s + batch, n)))
        images, background = batch_images(b)
        out = model(images.to(dev), b["K"].to(dev), b["R"].to(dev), b["t"].to(dev),
                    background.to(dev), keypoints=keypoints)
        for k in keep:
            parts[k].append(out[k].float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


def pose_inputs(features: str, predicted: dict[str, torch.Tensor]) -> torch.Tensor:
    """The regressor's input ``(F, D)``: ``"keypoints"`` (X minus its mean, flattened) or
    ``"latent"`` (Xi of all views, concatenated)."""
    if features == "keypoints":
        X = predicted["keypoints3d"]
        return (X - X.mean(dim=-2, keepdim=True)).flatten(1)
    if features == "latent":
        return predicted["latent"].flatten(1)
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")


def pose_targets(joints3d: torch.Tensor, root: int = 0) -> torch.Tensor:
    """Root-relative joints ``(F, J, 3)`` (mm)."""
    return joints3d - joints3d[:, root:root + 1]


class _Standardize:
    """Per-feature mean and std of a training matrix (std floored), applied to any matrix."""

    def __init__(self, x: torch.Tensor) -> None:
        self.mean = x.mean(0)
        self.std = x.std(0).clamp_min(1e-6 * float(x.std().clamp_min(1e-12)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_linear(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The least-squares linear map (with bias) from ``x (F, D)`` to ``y (F, ...)``.

    Inputs are standardised; ``ridge`` (relative to the number of frames) keeps collinear
    inputs solvable. Returns ``f(x) -> y`` (float64 solve, float32 out).
    """
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (F, D) with y's F frames, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    norm = _Standardize(x.double())
    A = torch.cat([norm(x.double()), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    Y = y.double().flatten(1)
    reg = ridge * len(x) * torch.eye(A.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0
    W = torch.linalg.solve(A.T @ A + reg, A.T @ Y)
    shape = y.shape[1:]

    def f(q: torch.Tensor) -> torch.Tensor:
        Aq = torch.cat([norm(q.double()), torch.ones(len(q), 1, dtype=torch.float64)], 1)
        return (Aq @ W).float().view(len(q), *shape)

    return f


def fit_mlp(x: torch.Tensor, y: torch.Tensor, hidden: int, steps: int, lr: float = 1e-3,
            dropout: float = 0.5, batch: int = 256, seed: int = 0, progress: bool = False,
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The 2-hidden-layer MLP (sec. S.1.2) from ``x (F, D)`` to ``y (F, ...)``, trained with
    Adam on the mean squared error (eq. 17) of standardised inputs and outputs, with a cosine
    learning-rate decay. Returns ``f(x) -> y`` (evaluation mode)."""
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (F, D) with y's F frames, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xn, Y = _Standardize(x), y.flatten(1)
    yn = _Standardize(Y)
    X, T = xn(x), yn(Y)
    net = PoseMLP(X.shape[1], T.shape[1], hidden, dropout)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    b = min(batch, len(X))
    for _ in tqdm(range(steps), desc="pose MLP", disable=not progress, leave=False):
        idx = torch.randint(len(X), (b,), generator=gen)
        loss = (net(X[idx]) - T[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    shape = y.shape[1:]

    def f(q: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (net(xn(q)) * yn.std + yn.mean).view(len(q), *shape)

    return f


def pose_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Root-relative MPJPE, N-MPJPE and PA-MPJPE (mm) of root-relative poses ``(F, J, 3)``."""
    return {"mpjpe": float(mpjpe(pred, gt, root=0)), "n_mpjpe": float(n_mpjpe(pred, gt, root=0)),
            "pa_mpjpe": float(pa_mpjpe(pred, gt))}


def _regress(regressor: str, x: torch.Tensor, y: torch.Tensor, plan: Settings, seed: int
             ) -> Callable[[torch.Tensor], torch.Tensor]:
    if regressor == "linear":
        return fit_linear(x, y)
    if regressor == "mlp":
        return fit_mlp(x, y, plan.pose_hidden, plan.pose_steps, plan.pose_lr, plan.pose_dropout,
                       seed=seed)
    raise ValueError(f"regressor must be one of {REGRESSORS}, got {regressor!r}")


def evaluate(model: KeypointDiscovery | None, train: FrameSet, test: FrameSet, plan: Settings,
             features: str = "keypoints", regressor: str = "mlp", seed: int = 0,
             device: str | torch.device = "cpu",
             predicted: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None,
             ) -> dict[str, float]:
    """Fit the pose regressor on ``train``'s joints from ``features`` of the frozen ``model``
    and measure it on ``test``: ``{"mpjpe", "n_mpjpe", "pa_mpjpe"}`` in mm.

    ``predicted``: the ``(train, test)`` outputs of :func:`predict`, if already computed
    (then ``model`` may be None).
    """
    if predicted is None:
        if model is None:
            raise ValueError("evaluate needs a model or its predicted outputs")
        kp = features == "keypoints"
        predicted = (predict(model, train, device=device, keypoints=kp),
                     predict(model, test, device=device, keypoints=kp))
    p_train, p_test = predicted
    f = _regress(regressor, pose_inputs(features, p_train), pose_targets(train.joints3d), plan,
                 seed)
    return pose_metrics(f(pose_inputs(features, p_test)), pose_targets(test.joints3d))


def _camera_axes(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Centred points ``(F, N, 3)`` in the axes of each view ``R (F, C, 3, 3)``: ``(F, C, N, 3)``."""
    Xc = X - X.mean(dim=-2, keepdim=True)
    return torch.einsum("fcij,fnj->fcni", R, Xc)


def fit_lifter(keypoints2d: torch.Tensor, keypoints3d: torch.Tensor, R: torch.Tensor,
               patch_size: int, hidden: int, steps: int, lr: float = 1e-3, batch: int = 256,
               seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sec. 3.4, eq. 16: the :class:`~.model.Lifter` from one view's 2D keypoints
    ``(F, C, N, 2)`` (patch px, mapped to [-1, 1]) to the discovered 3D keypoints
    ``(F, N, 3)`` centred and turned into that view's axes (``R (F, C, 3, 3)``); every view of
    every frame is a sample. Returns ``lift(x2d (M, N, 2)) -> (M, N, 3)`` (mm, camera axes)."""
    F_, C, N, _ = keypoints2d.shape
    x = (2 * (keypoints2d + 0.5) / patch_size - 1).reshape(F_ * C, 2 * N)
    y = _camera_axes(keypoints3d, R).reshape(F_ * C, 3 * N)
    scale = float(y.std().clamp_min(1e-6))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = Lifter(N, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    b = min(batch, len(x))
    for _ in range(steps):
        idx = torch.randint(len(x), (b,), generator=gen)
        loss = (net(x[idx]) - y[idx] / scale).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()

    def lift(q: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            qn = (2 * (q + 0.5) / patch_size - 1).reshape(len(q), 2 * N)
            return (net(qn) * scale).view(len(q), N, 3)

    return lift


def evaluate_single_view(train: FrameSet, test: FrameSet, plan: Settings,
                         predicted: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
                         patch_size: int, seed: int = 0) -> dict[str, float]:
    """The single-view model of Tab. 1 ("SV 2 hid MLP"): lift each view's 2D keypoints, then
    regress the pose in that camera's axes with the 2-hidden-layer MLP fitted on the training
    frames' lifted keypoints; metrics over every test view (mm)."""
    p_train, p_test = predicted
    lift = fit_lifter(p_train["keypoints2d"], p_train["keypoints3d"], train.R, patch_size,
                      plan.lift_hidden, plan.lift_steps, seed=seed)

    def samples(p: dict[str, torch.Tensor], frames: FrameSet) -> tuple[torch.Tensor, ...]:
        F_, C, N, _ = p["keypoints2d"].shape
        lifted = lift(p["keypoints2d"].reshape(F_ * C, N, 2))
        y = torch.einsum("fcij,fkj->fcki", frames.R, pose_targets(frames.joints3d))
        return (lifted - lifted.mean(1, keepdim=True)).flatten(1), y.reshape(F_ * C, -1, 3)

    x_tr, y_tr = samples(p_train, train)
    x_te, y_te = samples(p_test, test)
    f = fit_mlp(x_tr, y_tr, plan.pose_hidden, plan.pose_steps, plan.pose_lr, plan.pose_dropout,
                seed=seed)
    return pose_metrics(f(x_te), y_te)


def mean_pose_metrics(train: FrameSet, test: FrameSet) -> dict[str, float]:
    """The metrics of predicting the training subjects' mean root-relative pose for every test
    frame: the error of features that carry no pose."""
    y = pose_targets(train.joints3d).mean(0, keepdim=True)
    gt = pose_targets(test.joints3d)
    return pose_metrics(y.expand_as(gt), gt)


def keypoint_diagnostics(predicted: dict[str, torch.Tensor], frames: FrameSet) -> dict[str, float]:
    """What the discovered keypoints look like, measured with the true silhouettes (measuring
    only): ``on person %``, the share of re-projected keypoints (frame px) that fall on the
    person's mask; ``spread px``, their mean distance from their centroid in each view (frame
    px); ``person px``, the same for the silhouette's own pixels (the spread of keypoints
    covering the person evenly)."""
    if frames.masks is None:
        raise ValueError("keypoint_diagnostics needs frames with true masks")
    x = predicted["reprojected_frame"]  # (F, C, N, 2)
    F_, C, N, _ = x.shape
    H, W = frames.masks.shape[-2:]
    ij = x.round().long()
    inside = (ij[..., 0] >= 0) & (ij[..., 0] < W) & (ij[..., 1] >= 0) & (ij[..., 1] < H)
    u, v = ij[..., 0].clamp(0, W - 1), ij[..., 1].clamp(0, H - 1)
    f = torch.arange(F_)[:, None, None].expand(F_, C, N)
    c = torch.arange(C)[None, :, None].expand(F_, C, N)
    on = frames.masks[f, c, v, u] & inside
    spread = (x - x.mean(-2, keepdim=True)).norm(dim=-1).mean()
    m = frames.masks.float()
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    area = m.sum((-2, -1)).clamp_min(1)
    cu, cv = (m * uu).sum((-2, -1)) / area, (m * vv).sum((-2, -1)) / area
    dist = ((uu - cu[..., None, None]) ** 2 + (vv - cv[..., None, None]) ** 2).sqrt()
    person = ((m * dist).sum((-2, -1)) / area).mean()
    return {"on person %": 100 * float(on.float().mean()), "spread px": float(spread),
            "person px": float(person)}


def summary(metrics: dict[str, Any]) -> str:
    """``"mpjpe 73.8, n_mpjpe 72.6, pa_mpjpe 63.0"``."""
    return ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())
