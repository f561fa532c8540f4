"""The multiview studio: an embedded, licence-free synthetic multiview human dataset.

Real human motion (the DeepMimic mocap clips shipped by ``pybullet``) drives a body of analytic
primitives with a dense surface chart (part, U, V); subjects differ in proportions and clothing;
camera rigs are modelled on Human3.6M, CMU Panoptic, Shelf and Campus; a torch ray-caster renders
images, instance masks, depth, IUV, 2D joints and occlusion-aware visibility on CPU or GPU.

Entry points: :func:`build_studio` (build or find in the cache, returns the folder) and
:func:`open_data` (a :class:`mvbook.data.format.MultiviewDataset`); ``mvbook studio build``.
"""

from __future__ import annotations

from mvbook.studio.body import H36M_JOINTS, NUM_PARTS, PART_NAMES, rest_surface_points
from mvbook.studio.build import build_studio, cache_root, dataset_path, open_data
from mvbook.studio.motion import CLIPS, MAIN_CLIPS
from mvbook.studio.rigs import RIGS, make_rig
from mvbook.studio.scenes import TEST_SUBJECTS, TRAIN_SUBJECTS, StudioConfig, profile_config
from mvbook.studio.surface import (
    dense_keypoint_metrics,
    geodesic_distance,
    posed_vertices,
    sample_primitives,
    surface_mesh,
)

__all__ = [
    "CLIPS", "H36M_JOINTS", "MAIN_CLIPS", "NUM_PARTS", "PART_NAMES", "RIGS", "TEST_SUBJECTS",
    "TRAIN_SUBJECTS", "StudioConfig", "build_studio", "cache_root", "dataset_path", "make_rig",
    "open_data", "profile_config", "rest_surface_points",
    "dense_keypoint_metrics", "geodesic_distance", "posed_vertices", "sample_primitives",
    "surface_mesh",
]
