"""Weakly supervised monocular 3D pose from multiview consistency (Iqbal et al. 2020).

The network sees one image and predicts a **2.5D pose** (Iqbal et al. 2018): for each joint
``j`` a 2D heatmap ``H_j`` and a latent depth map ``D_j``. The 2D location is the soft-argmax
of ``H_j`` and the scale-normalised, root-relative depth is the depth map read out under the
same spatial softmax, ``zr_j = sum_r softmax(beta H_j)(r) D_j(r)``. Depths are normalised by a
fixed reference bone (default thorax-pelvis, "neck-pelvis"), whose length is 1.

Given the camera intrinsics ``K``, the absolute scale-normalised 3D pose follows in closed
form: with ``p_j = K^-1 (u_j, v_j, 1)`` and ``X_j = (Z_root + zr_j) p_j``, the root depth is the
larger root of the quadratic ``a Z^2 + b Z + c = 0`` that makes the reference bone
``(n, m)`` of length 1 (:func:`root_depth_from_25d`).

Training needs no 3D labels:

- a 2D loss on an independent collection of 2D-labelled images (:func:`heatmap_loss`),
- a multiview consistency loss on unlabelled synchronised views: the 3D poses predicted from
  any two views must agree after the rigid transform that best aligns them (Procrustes,
  differentiable; no extrinsic calibration needed) (:func:`multiview_consistency_loss`),
- a limb-length prior on the scale-normalised pose: bone lengths close to mean ratios and
  left/right symmetric (:func:`limb_length_loss`),
- a distance prior keeping joints at least a few bone lengths in front of the camera
  (:func:`distance_prior_loss`; this book's addition against a degenerate solution).

The same package trains the two reference points of the chapter: a 2D-only model (its depth
maps never receive a signal) and a fully supervised model (2D + scale-normalised depth labels).

The method contract (:mod:`mvbook.methods`): :class:`Config` and :func:`settings` (config.py),
the 2.5D representation (pose25d.py), :func:`prepare` (data.py), :class:`Weak25DNet`
and :class:`ZooWeak25D` (model.py: from scratch, or a depth head on the zoo's frozen 2D
detector), :func:`make_loss`, :func:`make_depth_loss` and the losses (losses.py), :func:`fit`,
:func:`fit_depth` and :func:`main` (training.py), :func:`predict` and :func:`evaluate` (evaluation.py).
"""

from .config import (
    MC_ROOTS,
    MODES,
    PRETRAINED,
    REFERENCE_BONE,
    SUBJECTS,
    Config,
    Settings,
    settings,
)
from .data import (
    EncodedBatches,
    ImageSet,
    MultiviewSet,
    Splits,
    WeakBatches,
    color_jitter,
    prepare,
    prepare_images,
    prepare_multiview,
)
from .evaluation import evaluate, predict
from .losses import (
    bone_lengths,
    bone_ratio_prior,
    depth_loss,
    distance_prior_loss,
    heatmap_loss,
    limb_length_loss,
    make_depth_loss,
    make_loss,
    multiview_consistency_loss,
    multiview_terms,
    rigid_align,
)
from .model import DepthHead, Encoded, Weak25DNet, ZooWeak25D
from .pose25d import (
    check_bone,
    normalized_rays,
    pose_to_25d,
    reconstruct_from_25d,
    root_depth_from_25d,
    root_depth_from_skeleton,
    scale_normalize,
)
from .training import fit, fit_depth, initial_model, main

__all__ = [
    "MC_ROOTS", "MODES", "PRETRAINED", "REFERENCE_BONE", "SUBJECTS", "Config", "Settings", "settings",
    "check_bone", "normalized_rays", "pose_to_25d", "reconstruct_from_25d", "root_depth_from_25d",
    "root_depth_from_skeleton", "scale_normalize",
    "EncodedBatches", "ImageSet", "MultiviewSet", "Splits", "WeakBatches", "color_jitter", "prepare",
    "prepare_images", "prepare_multiview",
    "Weak25DNet", "DepthHead", "Encoded", "ZooWeak25D",
    "bone_lengths", "bone_ratio_prior", "depth_loss", "distance_prior_loss", "heatmap_loss",
    "limb_length_loss", "make_depth_loss", "make_loss", "multiview_consistency_loss",
    "multiview_terms", "rigid_align",
    "fit", "fit_depth", "initial_model", "main", "predict", "evaluate",
]
