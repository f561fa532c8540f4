"""The on-disk format of mvbook multiview datasets, written as data: keys, shapes, the manifest.

:data:`SAMPLE_KEYS` documents every per-sample key (shape, dtype, units, description; see
:class:`KeySpec`), :data:`META_KEYS` the metadata returned with each sample. A dataset folder holds
one ``.npy`` per key and a ``manifest.json`` (:data:`MANIFEST`) naming the format
(:data:`FORMAT_NAME`, :data:`FORMAT_VERSION`); :func:`read_manifest` opens it with a clear
:class:`DatasetFormatError` when the folder is not a dataset, :func:`resolve_shape` gives a key's
concrete shape, :func:`sha256_file` the checksum the manifest records, and :func:`partial_dir`
where an unfinished write lives.

The writer and reader (:mod:`mvbook.data.format`) and the checker (:mod:`mvbook.data.verify`)
both build on this module; it imports neither.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "META_KEYS",
    "OPTIONAL_KEYS",
    "PARTIAL_SUFFIX",
    "REQUIRED_KEYS",
    "SAMPLE_KEYS",
    "STRING_META",
    "DatasetFormatError",
    "KeySpec",
    "partial_dir",
    "read_manifest",
    "resolve_shape",
    "sha256_file",
]

FORMAT_NAME = "mvbook-multiview"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class KeySpec:
    """Specification of one sample key.

    ``shape`` names the per-sample dimensions (symbols ``C`` views, ``P`` persons, ``J`` joints,
    ``H``/``W`` image height/width; integers are fixed sizes); on disk the array has an extra
    leading dimension ``N`` (unless ``static``: stored once for the whole dataset).
    """

    shape: tuple[str | int, ...]
    dtype: str
    units: str
    description: str
    required: bool = True
    static: bool = False


SAMPLE_KEYS: dict[str, KeySpec] = {
    "images": KeySpec(("C", 3, "H", "W"), "uint8", "0..255", "RGB images, one per view"),
    "K": KeySpec(("C", 3, 3), "float32", "px", "intrinsics of the resized images"),
    "R": KeySpec(("C", 3, 3), "float32", "", "world-to-camera rotation, x_cam = R @ X + t"),
    "t": KeySpec(("C", 3), "float32", "mm", "world-to-camera translation"),
    "dist": KeySpec(("C", 5), "float32", "", "distortion (k1, k2, p1, p2, k3), zeros if none"),
    "image_size": KeySpec(("C", 2), "int64", "px", "(width, height) of each view"),
    "joints3d": KeySpec(("P", "J", 3), "float32", "mm", "3D joints, world frame, z up"),
    "person_valid": KeySpec(("P",), "bool", "", "True for real persons, False for padding"),
    "joints2d": KeySpec(
        ("C", "P", "J", 2), "float32", "px", "joints3d projected into each (distorted) image"
    ),
    "visibility": KeySpec(
        ("C", "P", "J"),
        "bool",
        "",
        "joint valid, in front of the camera and inside the image; where the source "
        "knows occlusion (the studio), also not hidden by a body",
    ),
    "bbox": KeySpec(("C", "P", 4), "float32", "px", "person box (x0, y0, x1, y1) per view"),
    # optional
    "joints3d_valid": KeySpec(
        ("P", "J"), "bool", "", "joint annotated (e.g. Panoptic confidence > 0.1)", False
    ),
    "masks": KeySpec(
        ("C", "H", "W"), "uint8", "id", "instance ids: 0 background, p + 1 person p", False
    ),
    "depth": KeySpec(("C", "H", "W"), "float32", "mm", "camera depth, 0 = no surface", False),
    "iuv": KeySpec(
        ("C", 3, "H", "W"),
        "float32",
        "",
        "dense surface coords: part index I (0 = bg), U, V",
        False,
    ),
    "background": KeySpec(
        ("C", 3, "H", "W"), "uint8", "0..255", "static background per camera", False, True
    ),
}
"""The documented sample spec: key -> :class:`KeySpec` (shape, dtype, units, description)."""

META_KEYS: dict[str, str] = {
    "index": "int: position of the sample in its dataset folder",
    "frame": "int: frame number in the source sequence",
    "subject": "str: subject id (e.g. 'S1')",
    "action": "str: action name ('' if none)",
    "sequence": "str: sequence name",
    "skeleton": "str: skeleton name of joints3d (see mvbook.skeletons)",
}
"""Metadata returned with every sample (not tensors)."""

STRING_META = ("subject", "action", "sequence", "split")
REQUIRED_KEYS = tuple(k for k, s in SAMPLE_KEYS.items() if s.required)
OPTIONAL_KEYS = tuple(k for k, s in SAMPLE_KEYS.items() if not s.required)


class DatasetFormatError(ValueError):
    """A dataset folder is missing, incomplete or inconsistent."""


def resolve_shape(key: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """Concrete per-sample shape of ``key`` given ``sizes`` (keys ``C, P, J, H, W``)."""
    if key not in SAMPLE_KEYS:
        raise KeyError(f"unknown sample key {key!r}; known: {sorted(SAMPLE_KEYS)}")
    return tuple(sizes[d] if isinstance(d, str) else int(d) for d in SAMPLE_KEYS[key].shape)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def partial_dir(root: Path) -> Path:
    """The hidden folder next to ``root`` where :class:`~mvbook.data.format.DatasetWriter` writes."""
    return root.parent / f".{root.name}{PARTIAL_SUFFIX}"


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Load ``manifest.json`` of a dataset folder with a clear error when it is not one."""
    root = Path(root).expanduser()
    path = root / MANIFEST
    if not path.exists():
        hint = ""
        if partial_dir(root).exists():
            hint = (
                f"; an interrupted conversion left {partial_dir(root)}: rerun the conversion "
                "command to resume it"
            )
        elif not root.exists():
            hint = "; the folder does not exist (see docs/datasets.md to get and convert data)"
        raise DatasetFormatError(f"{root} is not an mvbook dataset: no {MANIFEST}{hint}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetFormatError(f"{path}: format {manifest.get('format')!r} != {FORMAT_NAME!r}")
    if int(manifest.get("version", -1)) > FORMAT_VERSION:
        raise DatasetFormatError(
            f"{path}: format version {manifest['version']} is newer than this reader ({FORMAT_VERSION})"
        )
    return manifest
