"""Learnable triangulation of human pose (Iskakov, Burkov, Lempitsky, Malkov, ICCV 2019).

Two ways of turning calibrated views into a 3D pose, both trained end to end with 3D labels:

- **Algebraic** (eqs. 1-5): a 2D backbone gives joint heatmaps per view; soft-argmax (eqs. 1-2,
  inverse temperature ``alpha``) gives 2D joints; a confidence branch ``q_phi`` on the encoder
  output gives a weight ``w_{c,j}`` per view and joint; the weighted DLT system
  ``(w_j o A_j) y_j = 0`` (eq. 4) is solved by a differentiable SVD
  (:func:`mvbook.geometry.triangulate`). Loss: soft MSE (eq. 15).
- **Volumetric** (eqs. 6-14): 1x1-convolved intermediate maps ``M_c`` (eq. 6) are unprojected
  into an ``L^3`` cube around the pelvis (eq. 7, :func:`mvbook.volumetric.unproject`),
  aggregated over views (eqs. 8-11, :func:`mvbook.volumetric.aggregate`), refined by a V2V
  network into 3D heatmaps (eq. 12) and read out by 3D soft-argmax (eqs. 13-14). Loss: L1 plus
  a weak heatmap term (eq. 16). The pelvis comes from the algebraic model at test time; during
  training we use the ground-truth pelvis (as the original implementation allows), and the
  cube's horizontal axes get a random rotation about the vertical.

Baselines: per-view heatmap argmax then plain DLT ("naive"), and RANSAC triangulation.

The method contract (:mod:`mvbook.methods`): :class:`Config` and :func:`settings` (config.py),
:func:`prepare` and :func:`test_source` (data.py; a test set too large for memory is cropped
chunk by chunk, :class:`CropStream`), the networks (model.py), :func:`make_loss` (losses.py),
:func:`fit` and :func:`main` (training.py), the predictors, :func:`predict`,
:func:`predict_many` and :func:`evaluate` (evaluation.py). Units: mm in 3D, crop pixels in 2D.
"""

from .config import PRETRAINED, STAGES, Config, Settings, initial_backbone, settings
from .data import (
    CACHE_KEYS,
    CropSet,
    CropStream,
    augment_views,
    cache_backbone,
    cached_outputs,
    frame_stride,
    partner_joints,
    prepare,
    select_views,
    test_source,
    with_roots,
)
from .evaluation import (
    ALPHAS,
    Predictor,
    algebraic_predictor,
    argmax_joints,
    choose_alpha,
    errors_2d,
    errors_table,
    evaluate,
    naive_predictor,
    predict,
    predict_many,
    ransac_predictor,
    select_frames,
    soft_argmax_errors,
    volumetric_predictor,
)
from .losses import make_loss, soft_mse_loss, volumetric_loss
from .model import AlgebraicTriangulationNet, VolumetricTriangulationNet
from .training import fit, main

__all__ = [
    "PRETRAINED", "STAGES", "Config", "Settings", "initial_backbone", "settings",
    "CACHE_KEYS", "CropSet", "CropStream", "prepare", "cache_backbone", "cached_outputs",
    "augment_views", "select_views", "partner_joints", "with_roots", "frame_stride", "test_source",
    "AlgebraicTriangulationNet", "VolumetricTriangulationNet",
    "make_loss", "soft_mse_loss", "volumetric_loss",
    "fit", "main",
    "Predictor", "argmax_joints", "errors_2d", "naive_predictor", "ransac_predictor",
    "algebraic_predictor", "volumetric_predictor", "predict", "predict_many", "select_frames",
    "evaluate", "errors_table", "soft_argmax_errors",
    "ALPHAS", "choose_alpha",
]
