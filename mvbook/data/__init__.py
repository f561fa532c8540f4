"""Multiview datasets: the common on-disk sample format, its reader, and converters.

``mvbook.data.spec`` defines the format (:data:`SAMPLE_KEYS`, the manifest, :func:`read_manifest`);
``mvbook.data.format`` the streaming :class:`DatasetWriter`, the torch :class:`MultiviewDataset`
and :func:`collate_samples`;
``mvbook.data.projection`` the numpy camera helpers that derive 2D annotations from 3D joints
(:func:`complete_annotations`); ``mvbook.data.verify`` checks a folder (:func:`verify_dataset`).
Converters for Human3.6M, MPI-INF-3DHP, CMU Panoptic, Shelf and Campus live in
``mvbook.data.<dataset>`` and are driven by ``mvbook data fetch|convert|check`` or the scripts
in ``data_scripts/`` (see docs/datasets.md).
"""

from __future__ import annotations

from mvbook.data.format import (
    DatasetWriter,
    MultiviewDataset,
    collate_samples,
    sample_cameras,
    write_dataset,
)
from mvbook.data.projection import (
    bbox_from_joints2d,
    complete_annotations,
    project_points_np,
    resize_intrinsics,
)
from mvbook.data.spec import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_KEYS,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    SAMPLE_KEYS,
    DatasetFormatError,
    KeySpec,
    read_manifest,
)
from mvbook.data.verify import VerifyReport, verify_dataset

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "META_KEYS",
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "SAMPLE_KEYS",
    "DatasetFormatError",
    "DatasetWriter",
    "KeySpec",
    "MultiviewDataset",
    "VerifyReport",
    "bbox_from_joints2d",
    "collate_samples",
    "complete_annotations",
    "project_points_np",
    "read_manifest",
    "resize_intrinsics",
    "sample_cameras",
    "verify_dataset",
    "write_dataset",
]
