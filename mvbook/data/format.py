"""The common on-disk format for synchronized multiview samples.

One *sample* is one synchronized multiview frame: the images of ``C`` calibrated views, the
cameras, and the 3D and 2D joints of ``P`` persons (``P = 1`` for single-person data; padded
persons have ``person_valid`` False and zeros everywhere else). :data:`SAMPLE_KEYS` documents every
key with its shape, dtype and units.

On disk a dataset is a folder::

    manifest.json        format name and version, dataset name, skeleton, joint names, units,
                         camera names, sizes, vocabularies of the string ids, splits, and one
                         entry per array (file, shape, dtype, sha256), provenance
    images.npy           (N, C, 3, H, W) uint8      one memory-mappable .npy per key, leading dim N
    K.npy, R.npy, ...    (N, C, 3, 3) float32 ...
    subject.npy          (N,) int32 ids into manifest["vocab"]["subject"] (same for action,
                         sequence, split); frame.npy (N,) int64
    background.npy       (C, 3, H, W) uint8 (optional, stored once: static per camera)

All views are resized to one ``(H, W)`` with ``K`` updated. Folders are written atomically by
:class:`DatasetWriter`: arrays are preallocated as ``.npy`` memmaps in a hidden temporary folder
next to the target, samples are written by index (an interrupted conversion resumes where it
stopped), and :meth:`DatasetWriter.close` writes ``manifest.json`` last and renames the folder into
place. An existing folder is never overwritten unless ``overwrite=True``.

Conventions (DESIGN.md): millimetres, world z up; ``x_cam = R @ X + t``; pixel ``(u, v)`` with
``(0, 0)`` the centre of the top-left pixel; image sizes are ``(width, height)``; distortion
coefficients are ``(k1, k2, p1, p2, k3)`` of the OpenCV model.

This module holds the writer (:class:`DatasetWriter`, :func:`write_dataset`) and the reader
(:class:`MultiviewDataset`, :func:`collate_samples`). The spec itself (:data:`SAMPLE_KEYS`,
:data:`META_KEYS`, :class:`KeySpec`, the manifest constants and :func:`read_manifest`) is in
:mod:`mvbook.data.spec`; the numpy camera helpers that derive 2D annotations from 3D joints
(:func:`complete_annotations`, :func:`project_points_np`, ...) are in
:mod:`mvbook.data.projection` and stay importable from here; the checker
:func:`verify_dataset` is in :mod:`mvbook.data.verify`.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvbook.data.projection import (  # noqa: F401 - also importable from here
    bbox_from_joints2d,
    complete_annotations,
    project_points_np,
    resize_intrinsics,
)
from mvbook.data.spec import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    META_KEYS,  # noqa: F401 - importable from here, as notebooks do
    OPTIONAL_KEYS,
    SAMPLE_KEYS,
    STRING_META,
    VERIFIED,
    DatasetFormatError,
    check_files,
    dataset_file_names,
    npy_layout,
    partial_dir,
    read_manifest,
    resolve_shape,
    sha256_file,
    stamp_entry,
)

_STATE = "_writer_state.json"
_WRITTEN = "_written.npy"
_CHECKSUMS = "_checksums.npy"  # (N, arrays) crc32 of every written row, verified on resume
_PARTIAL_FORMAT = 2  # layout of the partial folder; another layout is restarted
_STR_WIDTH = 64  # max characters of subject/action/sequence/split strings while writing


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_output_folder(root: Path, overwrite: bool) -> None:
    """Refuse to write a dataset at ``root`` unless it is new, empty, or (with ``overwrite``)
    a dataset folder written by mvbook: its manifest names the mvbook format and it holds
    nothing but dataset files. Raises ``FileExistsError``/``NotADirectoryError`` naming what
    is in the way."""
    for parent in root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot create {root}: {parent} is a file, not a folder")
            break
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is an existing file, not a dataset folder; choose "
                              "another output folder")
    if not root.is_dir():
        return
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{root} already exists; pass overwrite=True (--overwrite on the "
                              "command line) to replace it")
    foreign = [e for e in entries if e not in dataset_file_names()]
    fmt = None
    if MANIFEST in entries:
        try:
            loaded = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = None
        if isinstance(loaded, dict):
            fmt = loaded.get("format")
        elif not foreign:
            fmt = FORMAT_NAME  # a damaged manifest among nothing but dataset files
    if foreign or fmt != FORMAT_NAME:
        shown = ", ".join(foreign[:5] or entries[:5]) + (" ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{root} is not an mvbook dataset folder (it holds {shown}); overwrite only "
            "replaces a dataset folder or an empty one: choose another output folder, or move "
            "those files away")


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


class DatasetWriter:
    """Stream samples into a new dataset folder (atomic, resumable).

    Args:
        root: the folder to create.
        num_samples, num_views, num_persons, num_joints: ``N, C, P, J``.
        image_size: ``(W, H)`` of every stored view.
        skeleton: skeleton name of ``joints3d`` (``mvbook.skeletons``), e.g. ``"h36m17"``.
        joint_names: ``J`` names (default: ``joint_0``...).
        camera_names: ``C`` names (default ``"0".."C-1"``).
        dataset: dataset name for the manifest.
        optional_keys: optional per-sample keys to store (``masks``, ``depth``, ``iuv``,
            ``joints3d_valid``); ``background`` is stored once with :meth:`set_static`.
        splits: ``{split name: [subjects]}``, used by :class:`MultiviewDataset` when samples
            carry no explicit ``split`` string.
        provenance: free-form dict (source files, protocol, converter version...).
        overwrite: replace an existing ``root`` (only after the new folder is complete, and
            only when ``root`` is a dataset folder written by mvbook or empty; anything else
            is refused, see :func:`check_output_folder`).
        resume: if a compatible partial folder of an interrupted run exists, continue it
            (see :attr:`written`); an incompatible one is discarded and restarted. What is
            already on disk is verified first: every written row carries a crc32, and rows
            of a short, damaged or changed partial array are written again (never left as
            zeros); :attr:`repaired` says what was found.
        fingerprint: a string identifying the content to write (e.g. a hash of the source frame
            list); a partial folder is only resumed when it matches.

    Usage::

        with DatasetWriter(root, num_samples=N, ...) as w:
            for i in range(N):
                if not w.written[i]:
                    w.write(i, sample)      # dict of arrays/tensors + meta strings/ints

    Leaving the ``with`` block normally calls :meth:`close`; an exception leaves the partial
    folder in place so that the next run resumes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_samples: int,
        num_views: int,
        num_persons: int,
        num_joints: int,
        image_size: Sequence[int],
        skeleton: str,
        joint_names: Sequence[str] | None = None,
        camera_names: Sequence[str] | None = None,
        dataset: str = "unnamed",
        optional_keys: Iterable[str] = (),
        splits: Mapping[str, Sequence[str]] | None = None,
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        resume: bool = True,
        fingerprint: str = "",
    ) -> None:
        self.root = Path(root).expanduser()
        for name, v in (
            ("num_samples", num_samples),
            ("num_views", num_views),
            ("num_persons", num_persons),
            ("num_joints", num_joints),
        ):
            if not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if len(image_size) != 2 or min(int(s) for s in image_size) < 1:
            raise ValueError(f"image_size must be (width, height) > 0, got {image_size!r}")
        optional_keys = tuple(optional_keys)
        for k in optional_keys:
            if k not in OPTIONAL_KEYS:
                raise ValueError(f"optional_keys: {k!r} is not one of {OPTIONAL_KEYS}")
        check_output_folder(self.root, overwrite)
        self.overwrite = overwrite
        W, H = (int(s) for s in image_size)
        self.sizes = {
            "N": int(num_samples),
            "C": int(num_views),
            "P": int(num_persons),
            "J": int(num_joints),
            "H": H,
            "W": W,
        }
        self.joint_names = (
            list(joint_names)
            if joint_names is not None
            else [f"joint_{i}" for i in range(num_joints)]
        )
        if len(self.joint_names) != num_joints:
            raise ValueError(
                f"joint_names must have {num_joints} names, got {len(self.joint_names)}"
            )
        self.camera_names = (
            [str(c) for c in camera_names]
            if camera_names is not None
            else [str(i) for i in range(num_views)]
        )
        if len(self.camera_names) != num_views:
            raise ValueError(f"camera_names must have {num_views} names")
        self.config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "dataset": dataset,
            "skeleton": skeleton,
            "joint_names": self.joint_names,
            "camera_names": self.camera_names,
            "sizes": self.sizes,
            "per_sample_keys": [k for k in SAMPLE_KEYS if SAMPLE_KEYS[k].required]
            + [k for k in optional_keys if not SAMPLE_KEYS[k].static],
            "static_keys": [k for k in optional_keys if SAMPLE_KEYS[k].static],
            "splits": {k: list(v) for k, v in (splits or {}).items()},
            "fingerprint": fingerprint,
            "partial_format": _PARTIAL_FORMAT,
        }
        self.provenance = dict(provenance or {})
        self.tmp = partial_dir(self.root)
        self._closed = False
        self._lock_file = self._acquire_lock()
        try:
            self._open(resume)
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self):  # noqa: ANN202
        """Hold an exclusive lock next to ``root`` while writing: a second writer of the same
        folder (another process resuming it at the same time) is refused, not interleaved."""
        path = self.root.parent / f".{self.root.name}.writing"
        self.root.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")  # noqa: SIM115 - held until close() or abort()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise BlockingIOError(f"another process is writing {self.root} (it holds {path}); "
                                  "wait for it to finish, then run again to resume") from None
        return f

    def _release_lock(self) -> None:
        f = getattr(self, "_lock_file", None)
        if f is not None and not f.closed:
            Path(f.name).unlink(missing_ok=True)  # leave nothing next to the dataset
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    # -- setup ------------------------------------------------------------------------------
    def _open(self, resume: bool) -> None:
        state_path = self.tmp / _STATE
        if self.tmp.exists():
            ok = False
            if resume and state_path.exists():
                try:
                    ok = json.loads(state_path.read_text())["config"] == json.loads(
                        json.dumps(self.config)
                    )
                except (ValueError, KeyError, TypeError, OSError):
                    ok = False
            if not ok:
                shutil.rmtree(self.tmp)  # our own hidden folder of another configuration
        fresh = not self.tmp.exists()
        self.resumed = not fresh
        self.repaired: list[str] = []
        self.tmp.mkdir(parents=True, exist_ok=True)
        N = self.sizes["N"]
        self._arrays: dict[str, np.memmap] = {}
        bad_rows = np.zeros(N, bool)
        rows: list[tuple[str, str, np.dtype, tuple[int, ...]]] = [
            (key, f"{key}.npy", np.dtype(SAMPLE_KEYS[key].dtype),
             (N, *resolve_shape(key, self.sizes)))
            for key in self.config["per_sample_keys"]
        ]
        rows.append(("frame", "frame.npy", np.dtype(np.int64), (N,)))
        rows += [(f"_{k}_str", f"_{k}_str.npy", np.dtype(f"<U{_STR_WIDTH}"), (N,))
                 for k in STRING_META]
        self._row_keys = [r[0] for r in rows]
        for key, name, dtype, shape in rows:
            self._arrays[key], status = self._memmap(name, fresh, dtype, shape)
            if status == "recreated":
                bad_rows[:] = True
        self._static_set: dict[str, bool] = {}
        self._static_crc: dict[str, int] = {}
        static_bad: list[str] = []
        for key in self.config["static_keys"]:
            shape = resolve_shape(key, self.sizes)
            self._arrays[key], status = self._memmap(
                f"{key}.npy", fresh, np.dtype(SAMPLE_KEYS[key].dtype), shape
            )
            if status == "recreated":
                static_bad.append(key)
        self.written, status = self._memmap(_WRITTEN, fresh, np.dtype(bool), (N,))
        self._crc, crc_status = self._memmap(_CHECKSUMS, fresh, np.dtype(np.uint32),
                                             (N, len(self._row_keys)))
        if crc_status == "recreated":
            bad_rows[:] = True
        if fresh:
            self._save_state({})
        if self.resumed:
            self._verify_partial(bad_rows, static_bad)

    def _save_state(self, static: Mapping[str, int]) -> None:
        tmp = self.tmp / f"{_STATE}.tmp"
        tmp.write_text(json.dumps({"config": self.config, "static": dict(static)}))
        os.replace(tmp, self.tmp / _STATE)

    def _memmap(self, name: str, fresh: bool, dtype: np.dtype, shape: tuple[int, ...]
                ) -> tuple[np.memmap, str]:
        """Open (or create) a partial array; returns it and ``"new"``, ``"ok"``, ``"resized"``
        (a short or long file brought to its length; its rows are checked by crc) or
        ``"recreated"`` (missing or unreadable: created again, its rows count as unwritten)."""
        path = self.tmp / name
        if not fresh and path.is_file():
            try:
                shp, dt, _, expected = npy_layout(path)
            except (ValueError, OSError):
                shp, dt, expected = None, None, 0
            if shp == tuple(shape) and dt is not None and np.dtype(dt) == dtype:
                size = path.stat().st_size
                status = "ok"
                if size != expected:
                    os.truncate(path, expected)  # a short file grows by zeros: rows get checked
                    status = "resized"
                    self.repaired.append(f"{path} had {size} bytes instead of {expected}")
                return np.lib.format.open_memmap(path, mode="r+"), status
            self.repaired.append(f"{path} was unreadable or of another shape; recreated")
            status = "recreated"
        else:
            if not fresh:
                self.repaired.append(f"{path} was missing; recreated")
            status = "new" if fresh else "recreated"
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        return arr, status

    def _row_crcs(self, index: int) -> list[int]:
        return [zlib.crc32(self._arrays[k][index : index + 1]) for k in self._row_keys]

    def _verify_partial(self, bad_rows: np.ndarray, static_bad: list[str]) -> None:
        """Check what an interrupted run left: rows flagged written must match their crc32,
        static arrays the crc32 recorded when they were set; anything else is written again."""
        written = np.asarray(self.written).copy()
        crc = np.asarray(self._crc)
        bad = written & bad_rows
        for i in np.flatnonzero(written & ~bad_rows):
            if self._row_crcs(int(i)) != crc[i].tolist():
                bad[i] = True
        if bad.any():
            self.written[bad] = False
            self.written.flush()
            self.repaired.append(
                f"{int(bad.sum())} of {int(written.sum())} samples already written in "
                f"{self.tmp} were damaged (short, changed or missing files) and are written again"
            )
        try:
            state = json.loads((self.tmp / _STATE).read_text())
            static = state.get("static", {})
        except (OSError, ValueError):
            static = {}
        static = static if isinstance(static, dict) else {}
        for key, value in static.items():
            if key in self._arrays and key not in static_bad:
                if zlib.crc32(self._arrays[key]) == value:
                    self._static_set[key] = True
                    self._static_crc[key] = value
                else:
                    self.repaired.append(f"static array {key!r} changed since it was set; it "
                                         "must be set again")
        if self.repaired:
            warnings.warn("resuming " + str(self.tmp) + ": " + "; ".join(self.repaired),
                          stacklevel=3)

    # -- writing ----------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return self.sizes["N"]

    def missing(self) -> np.ndarray:
        """Indices not written yet."""
        return np.flatnonzero(~np.asarray(self.written))

    def set_static(self, key: str, value: Any) -> None:
        """Store a static (per-dataset) array, e.g. ``background (C, 3, H, W)``."""
        if key not in self.config["static_keys"]:
            raise ValueError(
                f"key {key!r} is not a declared static key {self.config['static_keys']}"
            )
        arr = _to_numpy(value)
        shape = resolve_shape(key, self.sizes)
        if arr.shape != shape:
            raise ValueError(f"{key} must have shape {shape}, got {arr.shape}")
        self._arrays[key][...] = arr.astype(SAMPLE_KEYS[key].dtype)
        self._arrays[key].flush()
        self._static_set[key] = True
        self._static_crc[key] = zlib.crc32(self._arrays[key])
        self._save_state(self._static_crc)

    def write(self, index: int, sample: Mapping[str, Any]) -> None:
        """Write sample ``index`` (0 <= index < N).

        ``sample`` holds every required key (numpy arrays or tensors of the per-sample shape in
        :data:`SAMPLE_KEYS`; dtypes are cast), the declared optional keys, ``frame`` (int) and the
        strings ``subject``, ``action``, ``sequence`` (default ``""``) and optionally ``split``.
        """
        if self._closed:
            raise RuntimeError("writer is closed")
        if not 0 <= int(index) < self.sizes["N"]:
            raise IndexError(f"index {index} out of range [0, {self.sizes['N']})")
        values: dict[str, np.ndarray] = {}
        for key in self.config["per_sample_keys"]:
            if key not in sample:
                raise ValueError(f"sample is missing key {key!r}")
            arr = _to_numpy(sample[key])
            shape = resolve_shape(key, self.sizes)
            if arr.shape != shape:
                raise ValueError(f"sample[{key!r}] must have shape {shape}, got {arr.shape}")
            if SAMPLE_KEYS[key].dtype.startswith("float") and not np.isfinite(arr).all():
                raise ValueError(f"sample[{key!r}] contains NaN or inf (use zeros for padding)")
            values[key] = arr
        for key, arr in values.items():
            self._arrays[key][index] = arr
        self._arrays["frame"][index] = int(sample.get("frame", index))
        for key in STRING_META:
            s = str(sample.get(key, ""))
            if len(s) > _STR_WIDTH:
                raise ValueError(f"sample[{key!r}] longer than {_STR_WIDTH} characters: {s!r}")
            self._arrays[f"_{key}_str"][index] = s
        self._crc[index] = self._row_crcs(int(index))  # before the flag: a row is never
        self.written[index] = True  # flagged written without the crc of what it holds

    def flush(self) -> None:
        for arr in self._arrays.values():
            arr.flush()
        self._crc.flush()
        self.written.flush()

    def abort(self) -> None:
        """Stop without finishing; the partial folder stays for a later resume."""
        if not self._closed:
            self.flush()
        self._closed = True
        self._release_lock()

    # -- finishing --------------------------------------------------------------------------
    def close(self) -> Path:
        """Finish: check completeness, write vocabularies, checksums and manifest, rename.

        Returns the dataset folder. Raises ``DatasetFormatError`` naming missing indices.
        """
        if self._closed:
            return self.root
        try:
            return self._finish()
        finally:
            if self._closed:
                self._release_lock()

    def _finish(self) -> Path:
        self.flush()
        missing = self.missing()
        if len(missing):
            raise DatasetFormatError(
                f"{len(missing)} of {self.sizes['N']} samples not written (first: "
                f"{missing[:10].tolist()}); the partial folder {self.tmp} is kept for resuming"
            )
        for key in self.config["static_keys"]:
            if key not in self._static_set:
                raise DatasetFormatError(f"static key {key!r} declared but never set")
        vocab: dict[str, list[str]] = {}
        for key in STRING_META:
            strings = np.asarray(self._arrays[f"_{key}_str"])
            uniq, first, inverse = np.unique(strings, return_index=True, return_inverse=True)
            order = np.argsort(first)  # vocabulary in order of first appearance
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            vocab[key] = [str(s) for s in uniq[order]]
            np.save(self.tmp / f"{key}.npy", rank[inverse.reshape(-1)].astype(np.int32))
        files: dict[str, Any] = {}
        for key in (*self.config["per_sample_keys"], "frame", *STRING_META):
            files[key] = {"file": f"{key}.npy", "per_sample": True}
        for key in self.config["static_keys"]:
            files[key] = {"file": f"{key}.npy", "per_sample": False}
        self._arrays.clear()
        del self.written
        del self._crc
        stamp: dict[str, Any] = {}
        for entry in files.values():
            path = self.tmp / entry["file"]
            arr = np.load(path, mmap_mode="r")
            digest = sha256_file(path)
            entry.update(shape=list(arr.shape), dtype=str(arr.dtype), sha256=digest,
                         bytes=path.stat().st_size)
            stamp[entry["file"]] = stamp_entry(path, digest)
            del arr
        for name in [f"_{k}_str.npy" for k in STRING_META] + [_WRITTEN, _CHECKSUMS, _STATE,
                                                              f"{_STATE}.tmp"]:
            (self.tmp / name).unlink(missing_ok=True)
        s = self.sizes
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "dataset": self.config["dataset"],
            "skeleton": self.config["skeleton"],
            "joint_names": self.joint_names,
            "camera_names": self.camera_names,
            "units": {"length": "mm", "image": "px", "world_up": "+z"},
            "num_samples": s["N"],
            "num_views": s["C"],
            "num_persons": s["P"],
            "num_joints": s["J"],
            "image_size": [s["W"], s["H"]],
            "vocab": vocab,
            "splits": self.config["splits"],
            "arrays": files,
            "provenance": {
                **self.provenance,
                "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        (self.tmp / VERIFIED).write_text(json.dumps(stamp))
        old = None
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()  # an empty placeholder folder is not a dataset to protect
        if self.root.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.root} appeared while writing; not overwriting it")
            check_output_folder(self.root, True)  # it may have changed while we wrote
            old = self.root.parent / f".{self.root.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.root, old)
        os.replace(self.tmp, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._closed = True
        return self.root

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset(
    root: str | os.PathLike,
    samples: Iterable[Mapping[str, Any]],
    *,
    num_samples: int | None = None,
    background: Any | None = None,
    **writer_kwargs: Any,
) -> Path:
    """Write an iterable of samples (dicts as in :meth:`DatasetWriter.write`) to ``root``.

    Sizes (``num_views``, ``num_persons``, ``num_joints``, ``image_size``) default to those of
    the first sample; a list's length gives ``num_samples``. Optional keys present in the first
    sample are stored. ``background`` ``(C, 3, H, W)`` is stored once. Other keyword arguments
    go to :class:`DatasetWriter` (``skeleton`` is required).
    """
    if num_samples is None:
        if not hasattr(samples, "__len__"):
            raise ValueError("num_samples is required when samples has no len()")
        num_samples = len(samples)  # type: ignore[arg-type]
    it = iter(samples)
    first = next(it, None)
    if first is None:
        raise ValueError("samples is empty")
    img = _to_numpy(first["images"])
    j3 = _to_numpy(first["joints3d"])
    writer_kwargs.setdefault("num_views", img.shape[0])
    writer_kwargs.setdefault("image_size", (img.shape[3], img.shape[2]))
    writer_kwargs.setdefault("num_persons", j3.shape[0])
    writer_kwargs.setdefault("num_joints", j3.shape[1])
    opt = [k for k in OPTIONAL_KEYS if k in first and not SAMPLE_KEYS[k].static]
    if background is not None:
        opt.append("background")
    writer_kwargs.setdefault("optional_keys", opt)
    writer = DatasetWriter(root, num_samples=num_samples, **writer_kwargs)
    try:
        if background is not None:
            writer.set_static("background", background)
        writer.write(0, first)
        n = 1
        for s in it:
            writer.write(n, s)
            n += 1
    except BaseException:
        writer.abort()
        raise
    return writer.close()


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


class MultiviewDataset(torch.utils.data.Dataset):
    """A torch Dataset over a converted dataset folder (memory-mapped, lazy).

    Args:
        root: dataset folder (with ``manifest.json``).
        split: ``None`` (all samples) or a split name: samples whose stored ``split`` string
            equals it, else the subjects listed in ``manifest["splits"][split]``.
        views: ``None`` (all) or a list of view indices or camera names (in that order).
        subjects: ``None`` or a list of subject ids to keep.
        transform: callable applied to each sample dict.
        keys: per-sample keys to load (default: all stored); ``images`` can be left out for
            pose-only work.

    Each item is a dict of tensors as in :data:`SAMPLE_KEYS` (views selected) plus the
    metadata in :data:`META_KEYS`. Memmaps are opened lazily in each worker process.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        views: Sequence[int | str] | None = None,
        subjects: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        keys: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.manifest = read_manifest(self.root)
        m = self.manifest
        problems = check_files(self.root, m)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DatasetFormatError(
                f"{self.root} is damaged: {problems[0]}{more}. `mvbook data check {self.root}` "
                "lists every problem; restore the files or convert the dataset again "
                "(mvbook data convert ... --overwrite)")
        self.skeleton: str = m["skeleton"]
        self.joint_names: list[str] = list(m["joint_names"])
        all_cams = list(m["camera_names"])
        if views is None:
            self.view_indices = list(range(m["num_views"]))
        else:
            idx = []
            for v in views:
                if isinstance(v, str) and v in all_cams:
                    idx.append(all_cams.index(v))
                elif isinstance(v, (int, np.integer)) and 0 <= int(v) < m["num_views"]:
                    idx.append(int(v))
                else:
                    raise ValueError(
                        f"views: {v!r} is neither a view index < {m['num_views']} nor a camera "
                        f"name in {all_cams}"
                    )
            if not idx:
                raise ValueError("views must not be empty")
            self.view_indices = idx
        self.camera_names = [all_cams[i] for i in self.view_indices]
        stored = [k for k, e in m["arrays"].items() if e["per_sample"] and k in SAMPLE_KEYS]
        statics = [k for k, e in m["arrays"].items() if not e["per_sample"]]
        if keys is None:
            self.keys = stored + statics
        else:
            bad = [k for k in keys if k not in stored + statics]
            if bad:
                raise ValueError(
                    f"keys {bad} not stored in {self.root}; stored: {stored + statics}"
                )
            self.keys = list(keys)
        self.transform = transform
        vocab = m["vocab"]
        subj = np.load(self.root / "subject.npy")
        sel = np.ones(m["num_samples"], bool)
        if subjects is not None:
            unknown = [s for s in subjects if s not in vocab["subject"]]
            if unknown:
                raise ValueError(f"subjects {unknown} not in dataset (has {vocab['subject']})")
            ids = [vocab["subject"].index(s) for s in subjects]
            sel &= np.isin(subj, ids)
        if split is not None:
            if split in vocab.get("split", []) and split != "":
                sel &= np.load(self.root / "split.npy") == vocab["split"].index(split)
            elif split in m.get("splits", {}):
                ids = [
                    vocab["subject"].index(s) for s in m["splits"][split] if s in vocab["subject"]
                ]
                sel &= np.isin(subj, ids)
            else:
                known = sorted({*(s for s in vocab.get("split", []) if s), *m.get("splits", {})})
                raise ValueError(f"split {split!r} not defined for {self.root}; known: {known}")
        self.indices = np.flatnonzero(sel)
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            for key in [*self.keys, "frame", *STRING_META]:
                entry = self.manifest["arrays"].get(key)
                if entry is not None:
                    arrays[key] = np.load(self.root / entry["file"], mmap_mode="r")
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # never pickle memmaps (DataLoader workers reopen them)
        return state

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_views(self) -> int:
        return len(self.view_indices)

    @property
    def image_size(self) -> tuple[int, int]:
        W, H = self.manifest["image_size"]
        return int(W), int(H)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        g = int(self.indices[i])
        a = self._open()
        views = self.view_indices
        out: dict[str, Any] = {}
        for key in self.keys:
            spec = SAMPLE_KEYS.get(key)
            arr = a[key] if spec is not None and spec.static else a[key][g]
            if spec is not None and spec.shape and spec.shape[0] == "C":
                arr = arr[views]
            out[key] = torch.from_numpy(np.array(arr))
        vocab = self.manifest["vocab"]
        out["index"] = g
        out["frame"] = int(a["frame"][g])
        for key in ("subject", "action", "sequence"):
            out[key] = vocab[key][int(a[key][g])]
        out["skeleton"] = self.skeleton
        if self.transform is not None:
            out = self.transform(out)
        return out


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples: tensors are stacked (new leading dim B), ints become an int64 tensor,
    strings and other values become lists. All samples must have the same keys and shapes."""
    if len(samples) == 0:
        raise ValueError("samples must not be empty")
    keys = list(samples[0].keys())
    out: dict[str, Any] = {}
    for key in keys:
        vals = [s[key] for s in samples]
        v0 = vals[0]
        if isinstance(v0, torch.Tensor):
            shapes = {tuple(v.shape) for v in vals}
            if len(shapes) != 1:
                raise ValueError(f"cannot stack {key!r}: shapes differ {sorted(shapes)}")
            out[key] = torch.stack(vals)
        elif isinstance(v0, np.ndarray):
            out[key] = torch.from_numpy(np.stack(vals))
        elif isinstance(v0, (bool, np.bool_)):
            out[key] = torch.tensor(vals, dtype=torch.bool)
        elif isinstance(v0, (int, np.integer)):
            out[key] = torch.tensor([int(v) for v in vals], dtype=torch.int64)
        elif isinstance(v0, (float, np.floating)):
            out[key] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[key] = list(vals)
    return out


def sample_cameras(sample: Mapping[str, Any]):
    """``mvbook.geometry.Camera`` of a sample (batch shape ``(C,)``, or ``(B, C)`` when batched)."""
    from mvbook.geometry import Camera  # imported lazily: geometry is an independent module

    return Camera(
        K=sample["K"],
        R=sample["R"],
        t=sample["t"],
        dist=sample["dist"],
        image_size=sample["image_size"],
    )

