"""MCSS: multiview-consistent semi-supervised 3D pose (Mitra et al. 2020).

A network sees one image. Its trunk F and embedding network G map the image to a unit-norm
128-d embedding; a metric loss on **unlabelled synchronised views** (HardNet-style in-batch
hardest negatives, eqs. 1-2) pulls together the embeddings of one instant seen by two
cameras and pushes away the hardest other instant of the same subject, so the embedding keeps
pose and drops viewpoint, appearance and background. A one-layer regressor H reads the
**canonical pose** (eq. 3: the root-centred pose turned about the vertical until the
pelvis-to-left-hip bone lies in the x-z plane) from the embedding, trained jointly on the few
3D-labelled images. The L_pose-only baseline is the same network without the metric loss.

The method contract (:mod:`mvbook.methods`): :class:`Config` and :func:`settings`
(config.py), the canonical pose (canonical.py), :func:`prepare`, :func:`encode_frames`,
:class:`JointBatches` (data.py), :class:`MCSSNet` and :class:`MCSSHead` (model.py; the zoo
``trunk`` is the frozen F), :func:`hardnet_loss` and :func:`make_loss` (losses.py),
:func:`fit` and :func:`main` (training.py), :func:`evaluate`, :func:`retrieval` and
:func:`embedding_vs_pose` (evaluation.py).
"""

from .canonical import canonical_angle, from_canonical, root_relative, rotation_z, to_canonical
from .config import (
    LEFT_HIP,
    MODES,
    REPRESENTATIONS,
    ROOT_JOINT,
    SUPERVISION,
    Config,
    Settings,
    settings,
)
from .data import KEYS, FrameSet, JointBatches, Splits, encode_frames, labelled_frames, prepare
from .evaluation import embedding_vs_pose, evaluate, predict, retrieval
from .losses import distance_matrix, hardest_negatives, hardnet_loss, make_loss, pose_loss
from .model import EmbeddingNet, MCSSHead, MCSSNet, encoding_shape, feature_dim
from .training import fit, initial_net, main, new_head

__all__ = [
    "LEFT_HIP", "MODES", "REPRESENTATIONS", "ROOT_JOINT", "SUPERVISION", "Config", "Settings",
    "settings",
    "canonical_angle", "from_canonical", "root_relative", "rotation_z", "to_canonical",
    "KEYS", "FrameSet", "JointBatches", "Splits", "encode_frames", "labelled_frames", "prepare",
    "EmbeddingNet", "MCSSHead", "MCSSNet", "encoding_shape", "feature_dim",
    "distance_matrix", "hardest_negatives", "hardnet_loss", "make_loss", "pose_loss",
    "fit", "initial_net", "main", "new_head",
    "predict", "evaluate", "retrieval", "embedding_vs_pose",
]
