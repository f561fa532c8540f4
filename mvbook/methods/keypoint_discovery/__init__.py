"""Unsupervised 3D keypoint discovery with multi-view geometry (Honari et al.), chapter 30.

No label of any kind trains the model: only the cameras' calibration and a background image per
camera. A detector S finds the person in each whole frame; the patch p it crops (a spatial
transformer) is encoded into Xi and decoded into an RGB patch and a mask that, pasted back and
composited over the background, must reconstruct the frame (eqs. 1, 2, 10). From the same Xi a
keypoint head gives N heatmaps per view whose soft-argmax are 2D keypoints (eqs. 3-4); the patch
cameras (eq. 6) triangulate them by DLT into N 3D keypoints (eq. 7), which are projected back
into every view (eq. 8) and drawn into a mask M~_p that must equal the model's own mask M_p
(eqs. 9, 11), with coverage and centering terms (eqs. 12-14; eq. 15 in all). The 3D keypoints
are then mapped to labelled joints by a linear map or a small MLP to measure them (sec. 3.5).

The modules follow the method contract (:mod:`mvbook.methods`): :class:`Config`,
:class:`Settings` and :func:`settings` (config.py), :func:`prepare`, :class:`FrameSet` and
:func:`median_background` (data.py), :class:`KeypointDiscovery` (model.py),
:func:`make_loss` and the terms of eq. 15 (losses.py), :func:`fit` and :func:`main`
(training.py), :func:`predict` and :func:`evaluate` (evaluation.py).
"""

from .config import LOSSES, MASK_TARGETS, TERMS, Config, Settings, loss_terms, settings
from .data import (
    KEYS,
    FrameBatches,
    FrameSet,
    Splits,
    load_frames,
    median_background,
    prepare,
    resize_frames,
)
from .evaluation import (
    FEATURES,
    REGRESSORS,
    evaluate,
    evaluate_single_view,
    fit_lifter,
    fit_linear,
    fit_mlp,
    keypoint_diagnostics,
    mean_pose_metrics,
    pose_inputs,
    pose_metrics,
    pose_targets,
    predict,
    summary,
)
from .losses import (
    batch_images,
    centering_loss,
    coverage_loss,
    make_loss,
    mask_loss,
    mask_target,
    perceptual_features,
    reconstruction_loss,
)
from .model import (
    Decoder,
    Detector,
    Encoder,
    KeypointDiscovery,
    Lifter,
    MaskDecoder,
    PoseMLP,
    boxes_from_detection,
    project,
)
from .training import continue_from, fit, main, new_model, trunk

__all__ = [
    "LOSSES", "MASK_TARGETS", "TERMS", "Config", "Settings", "loss_terms", "settings",
    "KEYS", "FrameBatches", "FrameSet", "Splits", "load_frames", "median_background", "prepare",
    "resize_frames",
    "FEATURES", "REGRESSORS", "evaluate", "evaluate_single_view", "fit_lifter", "fit_linear",
    "fit_mlp", "keypoint_diagnostics", "mean_pose_metrics", "pose_inputs", "pose_metrics",
    "pose_targets", "predict", "summary",
    "batch_images", "centering_loss", "coverage_loss", "make_loss", "mask_loss", "mask_target",
    "perceptual_features", "reconstruction_loss",
    "Decoder", "Detector", "Encoder", "KeypointDiscovery", "Lifter", "MaskDecoder", "PoseMLP",
    "boxes_from_detection", "project",
    "continue_from", "fit", "main", "new_model", "trunk",
]
