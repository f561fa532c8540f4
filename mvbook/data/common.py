"""Shared conversion machinery: frame records, image sources, resizing, up-axis alignment.

Each dataset adapter turns its raw layout into a list of :class:`FrameRecord` (one synchronized
multiview frame: cameras at the original resolution, 3D joints in mm z-up, where each view's
image comes from) and calls :func:`convert_records`, which resizes the images, updates ``K``,
derives ``joints2d``/``visibility``/``bbox`` by projecting the 3D joints with distortion, and
streams everything through :class:`mvbook.data.format.DatasetWriter` (atomic, resumable).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvbook.data.format import DatasetWriter
from mvbook.data.projection import complete_annotations, resize_intrinsics
from mvbook.data.spec import DatasetFormatError


class MissingRawDataError(FileNotFoundError):
    """Raw files needed by a converter are absent; the message says what and where to get it."""


@dataclass(frozen=True)
class ImageSource:
    """Where one view's image comes from: a video frame (``frame`` >= 0) or an image file."""

    path: str
    frame: int = -1  # -1: ``path`` is an image file


@dataclass
class RawCamera:
    """A camera at its original resolution: ``K (3,3)``, ``R (3,3)``, ``t (3,)`` mm, ``dist (5,)``
    (k1, k2, p1, p2, k3), ``size`` (W, H) px."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    name: str = ""

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, np.float64).reshape(3, 3)
        self.R = np.asarray(self.R, np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, np.float64).reshape(3)
        d = np.zeros(5)
        dd = np.asarray(self.dist, np.float64).reshape(-1)
        d[: min(5, dd.size)] = dd[:5]
        self.dist = d
        self.size = (int(self.size[0]), int(self.size[1]))

    def transformed(self, A: np.ndarray) -> RawCamera:
        """The same camera in a world rotated by ``A`` (new X' = A X): ``R' = R A^T``."""
        return RawCamera(self.K, self.R @ A.T, self.t, self.dist, self.size, self.name)


@dataclass
class FrameRecord:
    """One synchronized multiview frame before conversion.

    ``joints3d (P, J, 3)`` mm world z up (P may vary between records; padded to the maximum),
    ``joints3d_valid (P, J)`` or None, ``person_valid (P,)`` or None (all persons real; give it
    when persons keep fixed slots, e.g. one per actor, absent ones False), ``cameras`` one :class:`RawCamera` per view, ``images``
    one :class:`ImageSource` per view.
    """

    sequence: str
    frame: int
    subject: str
    action: str
    split: str
    joints3d: np.ndarray
    cameras: list[RawCamera]
    images: list[ImageSource]
    joints3d_valid: np.ndarray | None = None
    person_valid: np.ndarray | None = None  # (P,) when persons keep fixed slots (Shelf actors)
    extra: dict[str, Any] = field(default_factory=dict)


def camera_from_centre(
    R: Any,
    T: Any,
    focal: Sequence[float],
    principal: Sequence[float],
    k: Sequence[float] = (0.0, 0.0, 0.0),
    p: Sequence[float] = (0.0, 0.0),
    size: Sequence[int] = (0, 0),
    name: str = "",
) -> RawCamera:
    """A camera stored by its centre, as in the Human3.6M metadata exports and VoxelPose's
    calibration files: ``x_cam = R (X - T)`` with ``T (3,)`` mm, ``focal = (fx, fy)`` and
    ``principal = (cx, cy)`` px, radial ``k = (k1, k2[, k3])`` and tangential ``p = (p1, p2)``
    coefficients (combined into the OpenCV order k1, k2, p1, p2, k3)."""
    R = np.asarray(R, np.float64).reshape(3, 3)
    T = np.asarray(T, np.float64).reshape(3)
    f = np.asarray(focal, np.float64).reshape(-1)
    c = np.asarray(principal, np.float64).reshape(-1)
    k = np.asarray(k, np.float64).reshape(-1)
    p = np.asarray(p, np.float64).reshape(-1)
    K = np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1]])
    dist = [k[0], k[1], p[0], p[1], k[2] if k.size > 2 else 0.0]
    return RawCamera(K, R, -R @ T, dist, tuple(size), name)


def axis_rotation_to_z_up(up: np.ndarray) -> np.ndarray:
    """A proper rotation ``A`` (a signed axis permutation) with ``A @ e = +z`` for the signed
    world axis ``e`` closest to ``up`` (e.g. Panoptic's -y up gives x'=x, y'=z, z'=-y)."""
    up = np.asarray(up, np.float64)
    k = int(np.argmax(np.abs(up)))
    s = 1.0 if up[k] > 0 else -1.0
    if k == 2:
        return np.eye(3) if s > 0 else np.diag([1.0, -1.0, -1.0])
    if k == 1:  # y -> z: rotation about x
        return np.array([[1, 0, 0], [0, 0, -s], [0, s, 0]], float)
    return np.array([[0, 0, -s], [0, 1, 0], [s, 0, 0]], float)  # x -> z: rotation about y


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K, R, t`` of a 3x4 projection matrix (RQ decomposition, positive focal lengths,
    ``det R = +1``, ``K[2,2] = 1``)."""
    import scipy.linalg

    P = np.asarray(P, np.float64).reshape(3, 4)
    M = P[:, :3]
    if np.linalg.det(M) < 0:
        P = -P
        M = -M
    K, R = scipy.linalg.rq(M)
    S = np.diag(np.sign(np.diag(K)))
    K = K @ S
    R = S @ R
    t = np.linalg.solve(K, P[:, 3])
    K = K / K[2, 2]
    if np.linalg.det(R) < 0:  # cannot happen with det(M) > 0, kept as a guard
        R = -R
        t = -t
    return K, R, t


def resize_image(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(3, H', W')`` uint8 resized to ``size = (W', H')``."""
    import cv2

    W, H = int(size[0]), int(size[1])
    if img.shape[1] != W or img.shape[0] != H:
        shrink = W < img.shape[1] or H < img.shape[0]
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file; clear error when unreadable."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MissingRawDataError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class VideoReader:
    """Sequential frame access to a video with ``cv2.VideoCapture`` (forward only; decoding
    restarts when asked for an earlier frame). Frames are returned as ``(H, W, 3)`` RGB."""

    def __init__(self, path: str | os.PathLike) -> None:
        import cv2

        self.path = str(path)
        if not Path(self.path).exists():
            raise MissingRawDataError(f"video {self.path} is missing")
        self._cv2 = cv2
        self._cap = None
        self._next = 0
        self._open()

    def _open(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = self._cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            raise MissingRawDataError(f"cannot open video {self.path}")
        self._next = 0

    @property
    def frame_count(self) -> int:
        """Frame count reported by the container (may be approximate for some codecs)."""
        return int(self._cap.get(self._cv2.CAP_PROP_FRAME_COUNT))

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the frames."""
        cv2 = self._cv2
        return int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(
            self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        )

    def read(self, frame: int) -> np.ndarray:
        if frame < self._next:
            self._open()
        while self._next < frame:
            if not self._cap.grab():
                raise DatasetFormatError(f"{self.path}: video ends before frame {frame}")
            self._next += 1
        ok, img = self._cap.read()
        if not ok:
            raise DatasetFormatError(f"{self.path}: cannot decode frame {frame}")
        self._next += 1
        return self._cv2.cvtColor(img, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def video_info(path: str | os.PathLike) -> tuple[tuple[int, int], int]:
    """``((W, H), frame count)`` of a video (the count as the container reports it; it may be
    approximate, or 0 when unknown). Raises :class:`MissingRawDataError` when it cannot be opened."""
    reader = VideoReader(path)
    try:
        return reader.size, reader.frame_count
    finally:
        reader.close()


class ImageLoader:
    """Loads :class:`ImageSource` images, keeping one open :class:`VideoReader` per video."""

    def __init__(self, max_open: int = 64) -> None:
        self._videos: dict[str, VideoReader] = {}
        self.max_open = max_open

    def load(self, src: ImageSource) -> np.ndarray:
        if src.frame < 0:
            return read_image_rgb(src.path)
        reader = self._videos.get(src.path)
        if reader is None:
            if len(self._videos) >= self.max_open:
                self.close()
            reader = self._videos[src.path] = VideoReader(src.path)
        return reader.read(src.frame)

    def close(self) -> None:
        for r in self._videos.values():
            r.close()
        self._videos.clear()


def check_sources_exist(records: Sequence[FrameRecord], how_to_get: str) -> None:
    """Raise :class:`MissingRawDataError` listing missing image/video files (up to 10)."""
    paths = sorted({s.path for r in records for s in r.images})
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise MissingRawDataError(
            "missing raw files:\n  " + "\n  ".join(missing[:10]) + more + f"\n{how_to_get}"
        )


def convert_records(
    records: Sequence[FrameRecord],
    out: str | os.PathLike,
    *,
    image_size: Sequence[int],
    skeleton: str,
    joint_names: Sequence[str],
    camera_names: Sequence[str],
    dataset: str,
    splits: dict[str, list[str]] | None = None,
    provenance: dict[str, Any] | None = None,
    max_persons: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    bbox_margin: float = 0.15,
) -> Path:
    """Write ``records`` as a dataset folder at ``out`` (see module docstring).

    Images are read in record order (records of one sequence should be sorted by frame so that
    videos decode forward). Resumes an interrupted conversion of the same configuration.
    """
    if not records:
        raise ValueError("records is empty: nothing to convert (check the frame ranges/subjects)")
    C = len(records[0].cameras)
    J = records[0].joints3d.shape[1]
    P = max(r.joints3d.shape[0] for r in records)
    if max_persons is not None:
        P = min(max(P, 1), max_persons)
    P = max(P, 1)
    W, H = int(image_size[0]), int(image_size[1])
    use_valid = any(r.joints3d_valid is not None for r in records)
    h = hashlib.sha256(repr((W, H, P, bbox_margin)).encode())
    for r in records:
        h.update(
            repr((r.sequence, r.frame, r.subject, r.split, [s.path for s in r.images])).encode()
        )
        h.update(np.ascontiguousarray(r.joints3d, np.float64).tobytes())
    writer = DatasetWriter(
        out,
        num_samples=len(records),
        num_views=C,
        num_persons=P,
        num_joints=J,
        image_size=(W, H),
        skeleton=skeleton,
        joint_names=joint_names,
        camera_names=camera_names,
        dataset=dataset,
        optional_keys=("joints3d_valid",) if use_valid else (),
        splits=splits,
        provenance=provenance,
        overwrite=overwrite,
        fingerprint=h.hexdigest(),
    )
    todo = writer.missing()
    loader = ImageLoader()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(records),
            initial=len(records) - len(todo),
            desc=f"convert {dataset}",
            file=sys.stderr,
            unit="frame",
        )
    try:
        for i in todo:
            rec = records[int(i)]
            if len(rec.cameras) != C or len(rec.images) != C:
                raise ValueError(f"record {i}: expected {C} cameras and images")
            imgs = np.empty((C, 3, H, W), np.uint8)
            K = np.empty((C, 3, 3))
            for c, (cam, src) in enumerate(zip(rec.cameras, rec.images)):
                img = loader.load(src)
                if (img.shape[1], img.shape[0]) != cam.size:
                    raise DatasetFormatError(
                        f"{src.path}: image is {img.shape[1]}x{img.shape[0]} but the calibration "
                        f"says {cam.size[0]}x{cam.size[1]}"
                    )
                imgs[c] = resize_image(img, (W, H))
                K[c] = resize_intrinsics(cam.K, cam.size, (W, H))
            R = np.stack([c.R for c in rec.cameras])
            t = np.stack([c.t for c in rec.cameras])
            dist = np.stack([c.dist for c in rec.cameras])
            n = min(rec.joints3d.shape[0], P)
            X = np.zeros((P, J, 3))
            X[:n] = rec.joints3d[:n]
            pv = np.zeros(P, bool)
            pv[:n] = True if rec.person_valid is None else rec.person_valid[:n]
            jv = np.zeros((P, J), bool)
            jv[:n] = True if rec.joints3d_valid is None else rec.joints3d_valid[:n]
            jv &= pv[:, None]
            X[~pv] = 0.0
            X = np.where(np.isfinite(X), X, 0.0)
            ann = complete_annotations(X, pv, K, R, t, dist, (W, H), jv, bbox_margin)
            sample = {
                "images": imgs,
                "K": K,
                "R": R,
                "t": t,
                "dist": dist,
                "image_size": np.tile(np.array([W, H], np.int64), (C, 1)),
                "joints3d": X,
                "person_valid": pv,
                **ann,
                "frame": rec.frame,
                "subject": rec.subject,
                "action": rec.action,
                "sequence": rec.sequence,
                "split": rec.split,
            }
            if use_valid:
                sample["joints3d_valid"] = jv
            writer.write(int(i), sample)
            if bar is not None:
                bar.update(1)
    except BaseException:
        writer.abort()
        raise
    finally:
        loader.close()
        if bar is not None:
            bar.close()
    return writer.close()


def parse_image_size(value: str | Sequence[int] | None, default: Sequence[int]) -> tuple[int, int]:
    """``"WxH"``/``(W, H)``/None -> ``(W, H)``."""
    if value is None:
        return int(default[0]), int(default[1])
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        if len(parts) != 2:
            raise ValueError(f"image size must look like 640x480, got {value!r}")
        return int(parts[0]), int(parts[1])
    return int(value[0]), int(value[1])
