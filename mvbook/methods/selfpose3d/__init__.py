"""SelfPose3d: self-supervised multi-person multiview 3D pose (Srivastav, Chen, Padoy, CVPR 2024).

VoxelPose's structure trained without 3D labels, from pseudo 2D poses only (sec. 3):

- a 2D network (``heatmap_net_2d``) trained on pseudo 2D heatmaps (sec. 3.2);
- a root net on the space box built by unprojecting the views' root heatmaps (eq. 1), trained
  on synthetic 3D roots rendered as multiview 2D Gaussians (eq. 2) and by the consistency of its
  volumes between affine-augmented copies of the views (eq. 3); proposals by 3D NMS (sec. 3.3);
- a pose net on a cuboid around each proposal (V2V, 3D soft-argmax), trained by projecting the
  3D poses of one affine augmentation into the other's images, rendering them differentiably
  as heatmaps and comparing with the pseudo heatmaps (eq. 4), plus a Hungarian-matched L1 on the
  2D joints (eq. 5), with soft attention (eqs. 7-8) and hard attention (eqs. 9-10): eq. 11;
- the supervised baseline: the same networks trained with 3D labels (VoxelPose's protocol).

The views' heatmaps come from the 2D network (``Config.heatmap_source = "network"``, the paper
and the full profile) or are rendered from top-down 2D detections (``"poses"``, the CPU
profiles; :func:`render_input_heatmaps`). :data:`DEVIATIONS` lists where the book departs from
the paper, :data:`ABLATIONS` the paper's ablations as changes of the settings.

The method contract (:mod:`mvbook.methods`): :class:`Config`, :class:`Settings`,
:func:`settings` and :data:`ABLATIONS` (config.py); :func:`prepare`, :class:`SceneSet`,
:func:`cache_heatmaps`, :func:`with_proposals`, :func:`read_pseudo` (data.py); the networks
(model.py); the geometry of the augmentations (augment.py) and of the space (space.py);
:func:`make_loss` and the losses (losses.py); :func:`fit`, :func:`train_pipeline`,
:func:`main` (training.py); :func:`predict`, :func:`evaluate` (evaluation.py).
"""

from .augment import (
    affine_matrices,
    apply_affine,
    augment_projections,
    heatmap_to_image,
    image_to_heatmap,
    project,
    random_affines,
    warp_images,
)
from .config import (
    ABLATIONS,
    DEVIATIONS,
    PSEUDO,
    ROOT_JOINTS,
    STAGES,
    SUPERVISION,
    Config,
    Settings,
    for_skeleton,
    settings,
)
from .data import (
    PSEUDO_FORMAT,
    SceneSet,
    cache_heatmaps,
    frame_indices,
    prepare,
    pseudo_poses,
    read_pseudo,
    render_input_heatmaps,
    with_proposals,
)
from .evaluation import evaluate, predict
from .losses import (
    attention_regulariser,
    brute_force_match,
    heatmap_loss,
    hungarian_match,
    joint_loss,
    joint_loss_scale,
    make_loss,
    match_views,
    render_poses,
    root_consistency_loss,
    root_synthetic_loss,
    roots_of,
)
from .model import AttentionNet, SelfPose3dNet, space_center_from_cameras
from .space import (
    nms_3d,
    render_root_heatmaps,
    root_targets,
    space_grid,
    synthetic_roots,
    view_average,
)
from .training import ablation, build_model, fit, main, train_pipeline, with_config

__all__ = [
    "ABLATIONS", "DEVIATIONS", "PSEUDO", "ROOT_JOINTS", "for_skeleton", "STAGES", "SUPERVISION", "Config", "Settings", "settings",
    "PSEUDO_FORMAT", "SceneSet", "cache_heatmaps", "frame_indices", "prepare", "pseudo_poses",
    "read_pseudo", "render_input_heatmaps", "with_proposals",
    "AttentionNet", "SelfPose3dNet", "space_center_from_cameras",
    "affine_matrices", "apply_affine", "augment_projections", "heatmap_to_image",
    "image_to_heatmap", "project", "random_affines", "warp_images",
    "nms_3d", "render_root_heatmaps", "root_targets", "space_grid", "synthetic_roots",
    "view_average",
    "attention_regulariser", "brute_force_match", "heatmap_loss", "hungarian_match",
    "joint_loss", "joint_loss_scale", "make_loss", "match_views", "render_poses", "root_consistency_loss",
    "root_synthetic_loss", "roots_of",
    "ablation", "fit", "main", "train_pipeline", "build_model", "with_config",
    "evaluate", "predict",
]
