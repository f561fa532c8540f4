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

import contextlib
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
    "VERIFIED",
    "array_file_problem",
    "check_files",
    "check_manifest",
    "dataset_file_names",
    "npy_layout",
    "partial_dir",
    "read_manifest",
    "resolve_shape",
    "sha256_file",
]

FORMAT_NAME = "mvbook-multiview"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"
VERIFIED = ".verified.json"  # sizes and mtimes of the files at their last full checksum check


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


def read_manifest(root: str | os.PathLike, *, check: bool = True) -> dict[str, Any]:
    """Load ``manifest.json`` of a dataset folder with a clear error when it is not one.

    Raises :class:`DatasetFormatError` naming the file when it is missing, not valid JSON, not
    an object, of another format or a newer version, or (``check=True``) inconsistent: see
    :func:`check_manifest`.
    """
    root = Path(root).expanduser()
    path = root / MANIFEST
    if root.exists() and not root.is_dir():
        raise DatasetFormatError(f"{root} is a file, not a dataset folder")
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
    recover = "restore it, or convert the dataset again (mvbook data convert ... --overwrite)"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: cannot read the manifest ({err}); {recover}") from err
    if not text.strip():
        raise DatasetFormatError(f"{path} is empty; {recover}")
    try:
        manifest = json.loads(text)
    except ValueError as err:
        raise DatasetFormatError(f"{path} is not valid JSON ({err}); {recover}") from err
    if not isinstance(manifest, dict):
        raise DatasetFormatError(
            f"{path}: expected a JSON object, got a {type(manifest).__name__}; {recover}"
        )
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetFormatError(f"{path}: format {manifest.get('format')!r} != {FORMAT_NAME!r}")
    version = manifest.get("version", -1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise DatasetFormatError(f"{path}: version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise DatasetFormatError(
            f"{path}: format version {manifest['version']} is newer than this reader ({FORMAT_VERSION})"
        )
    if check:
        problems = check_manifest(manifest)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DatasetFormatError(f"{path}: {problems[0]}{more}; {recover}")
    return manifest


_MANIFEST_INTS = ("num_samples", "num_views", "num_persons", "num_joints")


def check_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Problems of a manifest's content (empty when consistent): required keys and their
    types, ``camera_names``/``joint_names``/``image_size`` against the sizes, every array
    entry (``file``, ``shape``, ``dtype``, ``per_sample``) against :data:`SAMPLE_KEYS` and
    ``num_samples``, string ids with a vocabulary."""
    out: list[str] = []
    for key in _MANIFEST_INTS:
        v = manifest.get(key)
        if key not in manifest:
            out.append(f"missing key {key!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            out.append(f"{key} must be a positive integer, got {v!r}")
    for key in ("skeleton", "dataset"):
        if not isinstance(manifest.get(key), str):
            out.append(f"missing key {key!r} (a string)")
    for key, size in (("camera_names", "num_views"), ("joint_names", "num_joints")):
        names = manifest.get(key)
        if not isinstance(names, list):
            out.append(f"missing key {key!r} (a list of names)")
        elif isinstance(manifest.get(size), int) and len(names) != manifest[size]:
            out.append(f"{key} has {len(names)} names but {size} is {manifest[size]}")
    size = manifest.get("image_size")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        out.append(f"image_size must be [width, height] > 0, got {size!r}")
    vocab = manifest.get("vocab")
    if not isinstance(vocab, dict):
        out.append("missing key 'vocab' (the string ids)")
        vocab = {}
    if not isinstance(manifest.get("splits", {}), dict):
        out.append("splits must be an object {split: [subjects]}")
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict):
        return [*out, "missing key 'arrays' (one entry per stored array)"]
    for key in (*REQUIRED_KEYS, "frame", "subject", "action", "sequence"):
        if key not in arrays:
            out.append(f"arrays lists no entry for the required key {key!r}")
    if out:
        return out
    sizes = {"C": manifest["num_views"], "P": manifest["num_persons"],
             "J": manifest["num_joints"], "W": size[0], "H": size[1]}
    N = manifest["num_samples"]
    for key, entry in arrays.items():
        if not isinstance(entry, dict) or not all(k in entry for k in
                                                  ("file", "shape", "dtype", "per_sample")):
            out.append(f"arrays[{key!r}] must have file, shape, dtype and per_sample")
            continue
        f = entry["file"]
        if not isinstance(f, str) or not f or Path(f).name != f or f.startswith("."):
            out.append(f"arrays[{key!r}]: file {f!r} is not a plain file name")
            continue
        shape = entry["shape"]
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            out.append(f"arrays[{key!r}]: shape {shape!r} is not a list of sizes")
            continue
        if key in SAMPLE_KEYS:
            expect = resolve_shape(key, sizes)
            if entry["per_sample"]:
                expect = (N, *expect)
            if tuple(shape) != expect or entry["dtype"] != SAMPLE_KEYS[key].dtype:
                out.append(f"arrays[{key!r}]: shape {shape} {entry['dtype']} disagrees with "
                           f"num_samples and the sizes (expected {list(expect)} {SAMPLE_KEYS[key].dtype})")
        elif entry["per_sample"] and shape[:1] != [N]:
            out.append(f"arrays[{key!r}]: leading size {shape[:1]} != num_samples {N}")
        if key in STRING_META and not isinstance(vocab.get(key, []), list):
            out.append(f"vocab[{key!r}] must be a list of strings")
    return out


def npy_layout(path: str | os.PathLike) -> tuple[tuple[int, ...], str, int, int]:
    """``(shape, dtype, data offset, expected file size)`` from a ``.npy`` header; raises
    ``ValueError`` for a file that is not a readable ``.npy``."""
    import numpy as np

    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, EOFError, SyntaxError, TypeError) as err:
            raise ValueError(f"not a readable .npy file ({err or 'empty or truncated header'})"
                             ) from err
        offset = f.tell()
    count = 1
    for d in shape:
        count *= int(d)
    return tuple(int(d) for d in shape), str(dtype), offset, offset + count * dtype.itemsize


def dataset_file_names() -> set[str]:
    """Every file name a dataset folder written by mvbook may hold."""
    names = {f"{k}.npy" for k in (*SAMPLE_KEYS, "frame", *STRING_META)}
    return names | {MANIFEST, VERIFIED}


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def array_file_problem(root: Path, key: str, entry: Mapping[str, Any]) -> str | None:
    """What is wrong with the file of one array of a manifest (``entry``, the manifest's
    ``arrays[key]``), from its header and size alone; ``None`` when nothing is.

    The file must exist, have a readable ``.npy`` header giving the entry's shape and dtype,
    and exactly the length they imply (and the entry's ``bytes``, when recorded). The problem
    is one line naming the file.
    """
    path = root / entry["file"]
    if not path.is_file():
        return f"missing file {path} ({key})"
    try:
        shape, dtype, _, expected = npy_layout(path)
    except (ValueError, OSError) as err:
        return f"cannot read {path}: {err}"
    if list(shape) != list(entry["shape"]) or dtype != entry["dtype"]:
        return (f"{path}: holds {list(shape)} {dtype}, the manifest says "
                f"{entry['shape']} {entry['dtype']}")
    size = path.stat().st_size
    want = entry.get("bytes", expected)
    if size != expected or size != want:
        return f"{path}: {size} bytes, expected {want} (truncated or extended)"
    return None


def check_files(root: str | os.PathLike, manifest: Mapping[str, Any], *,
                checksums: bool | str = False, keys: Any = None) -> list[str]:
    """Problems of the array files of a dataset folder (empty when all is well).

    Always (cheap: headers and sizes): each file of ``manifest["arrays"]`` (or of ``keys``)
    exists, its ``.npy`` header gives the manifest's shape and dtype and the file has exactly
    the length they imply (and the recorded ``bytes``). ``checksums=True`` also compares the
    sha256 of every file with the manifest's; ``checksums="changed"`` does so only for the
    files whose size or modification time differ from those recorded at the last full check
    (``.verified.json`` in the folder, updated when every file passed).
    """
    root = Path(root).expanduser()
    arrays = manifest.get("arrays", {})
    names = list(arrays) if keys is None else [k for k in keys if k in arrays]
    problems: list[str] = []
    stamp_path = root / VERIFIED
    stamp: dict[str, Any] = {}
    if checksums == "changed":
        try:
            loaded = json.loads(stamp_path.read_text())
            stamp = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            stamp = {}
    new_stamp: dict[str, Any] = {}
    for key in names:
        entry = arrays[key]
        path = root / entry["file"]
        problem = array_file_problem(root, key, entry)
        if problem:
            problems.append(problem)
            continue
        if checksums:
            key_stat = _stat_key(path)
            if checksums == "changed" and stamp.get(entry["file"]) == [*key_stat,
                                                                       entry.get("sha256")]:
                new_stamp[entry["file"]] = stamp[entry["file"]]
                continue
            if not entry.get("sha256"):
                problems.append(f"{path}: the manifest records no sha256 for {key!r}, so the "
                                "file cannot be verified")
                continue
            if sha256_file(path) != entry["sha256"]:
                problems.append(f"checksum mismatch for {path} (the file changed or is "
                                "corrupted)")
                continue
            new_stamp[entry["file"]] = [*key_stat, entry["sha256"]]
    if checksums == "changed" and not problems and new_stamp != stamp:
        write_stamp(root, new_stamp)
    return problems


def write_stamp(root: Path, stamp: Mapping[str, Any]) -> None:
    """Record sizes, mtimes and sha256 of verified files (best effort: read-only folders are
    simply checked again next time)."""
    tmp = root / f"{VERIFIED}.tmp"
    try:
        tmp.write_text(json.dumps(dict(stamp)))
        os.replace(tmp, root / VERIFIED)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def stamp_entry(path: Path, sha256: str) -> list[Any]:
    """The :data:`VERIFIED` record of a file just hashed: ``[size, mtime_ns, sha256]``."""
    return [*_stat_key(path), sha256]
