"""MPI-INF-3DHP (Mehta et al., 3DV 2017): conversion of the multiview training set.

Access is gated: request it at https://vcai.mpi-inf.mpg.de/3dhp-dataset/ (licence: non-commercial
research use, no redistribution; you receive the ``mpi_inf_3dhp.zip`` with ``get_dataset.sh`` /
``conf.ig``). Run the official ``get_dataset.sh`` with ``ready_to_download=1`` and
``download_extra_wall_and_ceiling_cameras`` as you need; it fetches, for subjects S1..S8 and
sequences Seq1, Seq2::

    RAW/S1/Seq1/annot.mat                 annot2 / annot3 / univ_annot3: 14 x 1 cells (one per
                                          camera) of (F, 28*2) px and (F, 28*3) mm in that
                                          camera's coordinates; frames; cameras
    RAW/S1/Seq1/camera.calibration        "Skeletool Camera Calibration File V1.0": per camera
                                          name, sensor, size W H, animated, intrinsic (4x4
                                          row-major), extrinsic (4x4 world -> camera, mm), radial
    RAW/S1/Seq1/imageSequence/video_0.avi ... video_13.avi  (2048x2048; 11-13: 1920x1080), 25/50 fps

``annot.mat`` is read with scipy; a MATLAB v7.3 (HDF5) ``annot.mat`` needs ``h5py`` (the ``data``
extra: ``pip install 'mvbook[data]'``).

About 2 GB per sequence for 8 cameras (16 sequences, ~25-45 GB). Converted (8 views at 512x512,
every 10th frame, ~11k samples) ~70 GB; use ``--image-size 256x256`` (~17 GB).

Conversion: world joints from camera 0's ``annot3`` (camera coordinates) with its extrinsic
inverse, ``X_w = R^T (X_c - t)``; no lens distortion is given (``radial 0``), so ``dist`` is
zero. The release's world frame is not z up; the converter finds the up direction from the
annotation (head top minus ankle midpoint) and rotates world and cameras by the signed axis
permutation that makes it +z (recorded in the manifest). Joints 28 -> ``h36m17`` order with
:data:`MPI28_TO_H36M17` (3DHP "relevant" 17 joints: thorax <- neck, neck_nose <- head,
head <- head_top).

Protocol (multiview self-supervised works such as Kocabas et al. 2019 use the training set
only): cameras 0, 1, 2, 4, 5, 6, 7, 8 (chest-height cameras), train S1..S7, test S8, every 10th
frame; all configurable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvbook.data.common import (
    FrameRecord,
    ImageSource,
    MissingRawDataError,
    RawCamera,
    axis_rotation_to_z_up,
    check_sources_exist,
    convert_records,
    video_info,
)
from mvbook.skeletons import H36M_17

SUBJECTS = tuple(f"S{i}" for i in range(1, 9))
TRAIN_SUBJECTS = tuple(f"S{i}" for i in range(1, 8))
TEST_SUBJECTS = ("S8",)
SEQUENCES = ("Seq1", "Seq2")
CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)
# 3DHP 28-joint indices in mvbook's h36m17 order
MPI28_TO_H36M17 = (4, 23, 24, 25, 18, 19, 20, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16)
DEFAULT_IMAGE_SIZE = (512, 512)
JOINT_NAMES = H36M_17.joint_names

HOW_TO_GET = (
    "MPI-INF-3DHP is gated: request it at https://vcai.mpi-inf.mpg.de/3dhp-dataset/, run its "
    "get_dataset.sh into RAW so that RAW/S1/Seq1/{annot.mat,camera.calibration,imageSequence/"
    "video_<c>.avi} exist (see docs/datasets.md)."
)


def parse_calibration(path: str | Path) -> dict[int, RawCamera]:
    """Cameras of a ``camera.calibration`` file (Skeletool V1.0), mm, the release's world."""
    path = Path(path)
    if not path.exists():
        raise MissingRawDataError(f"{path} is missing. {HOW_TO_GET}")
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("Skeletool Camera Calibration File"):
        raise ValueError(f"{path}: not a Skeletool camera calibration file")
    cams: dict[int, dict[str, list[float]]] = {}
    cur = None
    for line in lines[1:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "name":
            cur = int(parts[1])
            cams[cur] = {}
        elif cur is not None:
            cams[cur][parts[0]] = [float(x) for x in parts[1:]]
    out = {}
    for c, v in cams.items():
        intr = np.array(v["intrinsic"]).reshape(4, 4)
        ext = np.array(v["extrinsic"]).reshape(4, 4)
        W, H = (int(x) for x in v["size"])
        out[c] = RawCamera(intr[:3, :3], ext[:3, :3], ext[:3, 3], np.zeros(5), (W, H), str(c))
    return out


def load_annot3(path: str | Path, camera: int = 0) -> np.ndarray:
    """``(F, 28, 3)`` mm joints in camera ``camera``'s coordinates from ``annot.mat``.

    MATLAB v5 files are read with scipy; MATLAB v7.3 files (HDF5) with ``h5py`` (the ``data``
    extra: ``pip install 'mvbook[data]'``).
    """
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise MissingRawDataError(f"{path} is missing. {HOW_TO_GET}")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3: an HDF5 file
        return _load_annot3_v73(path, camera).reshape(-1, 28, 3)
    a3 = mat["annot3"]
    return np.asarray(a3[camera][0], float).reshape(-1, 28, 3)


def _load_annot3_v73(path: Path, camera: int) -> np.ndarray:
    """Camera ``camera``'s ``annot3`` entry ``(F, 84)`` of a MATLAB v7.3 ``annot.mat``.

    v7.3 stores a cell array as an array of HDF5 object references and every matrix transposed
    (MATLAB is column-major): cell ``annot3{c}`` is ``file[annot3.flat[c]]``, of shape (84, F).
    """
    try:
        import h5py
    except ImportError as err:
        raise MissingRawDataError(
            f"{path} is a MATLAB v7.3 (HDF5) file; reading it needs the 'h5py' package: "
            "pip install 'mvbook[data]' (or pip install h5py)"
        ) from err
    with h5py.File(path, "r") as f:
        if "annot3" not in f:
            raise ValueError(f"{path}: no variable 'annot3'")
        cells = f["annot3"]
        if cells.dtype != h5py.ref_dtype:
            raise ValueError(f"{path}: 'annot3' must be a cell array (one cell per camera)")
        refs = cells[()].reshape(-1)  # MATLAB's column-major cell order
        if not 0 <= camera < refs.size:
            raise ValueError(f"{path}: 'annot3' has {refs.size} cameras, asked for {camera}")
        return np.asarray(f[refs[camera]][()], float).T


def build_records(
    raw: str | Path,
    subjects: Sequence[str] = SUBJECTS,
    sequences: Sequence[str] = SEQUENCES,
    *,
    cameras: Sequence[int] = CAMERAS,
    step: int = 10,
    test_subjects: Sequence[str] = TEST_SUBJECTS,
    max_frames_per_sequence: int | None = None,
) -> tuple[list[FrameRecord], dict[str, Any]]:
    raw = Path(raw)
    records: list[FrameRecord] = []
    per_seq: list[tuple[str, str, np.ndarray, list[RawCamera], int]] = []
    ups = []
    for subj in subjects:
        for seq in sequences:
            d = raw / subj / seq
            if not d.exists():
                raise MissingRawDataError(f"{d} is missing. {HOW_TO_GET}")
            calib = parse_calibration(d / "camera.calibration")
            missing = [c for c in (0, *cameras) if c not in calib]
            if missing:
                raise ValueError(f"{d / 'camera.calibration'} has no camera(s) {missing}")
            Xc = load_annot3(d / "annot.mat", 0)
            c0 = calib[0]
            Xw = np.einsum("ji,fkj->fki", c0.R, Xc - c0.t)  # R^T (X_c - t)
            counts = [video_info(d / "imageSequence" / f"video_{c}.avi")[1] for c in cameras]
            n = min(len(Xw), *[k for k in counts if k > 0])
            ups.append((Xw[:, 7] - 0.5 * (Xw[:, 20] + Xw[:, 25])).mean(0))
            per_seq.append((subj, seq, Xw[:n], [calib[c] for c in cameras], n))
    A = axis_rotation_to_z_up(np.mean(ups, 0)) if ups else np.eye(3)
    for subj, seq, Xw, cams, n in per_seq:
        cams_z = [c.transformed(A) for c in cams]
        X = np.einsum("ij,fkj->fki", A, Xw[:, list(MPI28_TO_H36M17)])
        frames = range(0, n, step)
        if max_frames_per_sequence is not None:
            frames = frames[:max_frames_per_sequence]
        d = raw / subj / seq
        for f in frames:
            records.append(
                FrameRecord(
                    sequence=f"{subj}/{seq}",
                    frame=f,
                    subject=subj,
                    action=seq,
                    split="test" if subj in test_subjects else "train",
                    joints3d=X[f][None],
                    cameras=cams_z,
                    images=[
                        ImageSource(str(d / "imageSequence" / f"video_{c}.avi"), f) for c in cameras
                    ],
                )
            )
    return records, {"up_rotation": A.tolist()}


def convert(
    raw: str | Path,
    out: str | Path,
    *,
    subjects: Sequence[str] = SUBJECTS,
    sequences: Sequence[str] = SEQUENCES,
    cameras: Sequence[int] = CAMERAS,
    step: int = 10,
    test_subjects: Sequence[str] = TEST_SUBJECTS,
    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
    max_frames_per_sequence: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the 3DHP training-set layout in ``raw`` into a dataset folder ``out``."""
    records, stats = build_records(
        raw, subjects, sequences, cameras=cameras, step=step, test_subjects=test_subjects,
        max_frames_per_sequence=max_frames_per_sequence,
    )  # fmt: skip
    check_sources_exist(records, HOW_TO_GET)
    train = [s for s in subjects if s not in test_subjects]
    test = [s for s in subjects if s in test_subjects]
    prov = {
        "source": "https://vcai.mpi-inf.mpg.de/3dhp-dataset/ (gated)",
        "raw": str(Path(raw).resolve()),
        "protocol": f"cameras {list(cameras)}, every {step}th frame, train {train}, test {test}; "
        "joints 28 -> h36m17 (thorax<-neck, neck_nose<-head, head<-head_top)",
        "converter": "mvbook.data.mpi_inf_3dhp",
        **stats,
    }
    return convert_records(
        records, out, image_size=image_size, skeleton="h36m17", joint_names=JOINT_NAMES,
        camera_names=[f"cam{c}" for c in cameras], dataset="mpi_inf_3dhp",
        splits={"train": train, "test": test}, provenance=prov, overwrite=overwrite,
        progress=progress,
    )  # fmt: skip


# -- fixtures -------------------------------------------------------------------------------------


def write_fixture(
    raw: str | Path,
    subjects: Sequence[str] = ("S1", "S8"),
    sequences: Sequence[str] = ("Seq1",),
    num_cameras: int = 3,
    num_frames: int = 12,
    size: tuple[int, int] = (48, 48),
    seed: int = 0,
    mat_version: str = "5",
) -> dict[str, Any]:
    """Write a miniature 3DHP training layout (y-up world, cameras 0..num_cameras-1).

    ``mat_version``: ``"5"`` writes ``annot.mat`` with scipy, ``"7.3"`` as an HDF5-based MATLAB
    v7.3 file (needs ``h5py``)."""
    import cv2
    import scipy.io

    if mat_version not in ("5", "7.3"):
        raise ValueError(f"mat_version must be '5' or '7.3', got {mat_version!r}")

    from mvbook.data.fixtures import look_at_rig, random_people

    rng = np.random.default_rng(seed)
    raw = Path(raw)
    W, H = size
    K, R, t, _ = look_at_rig(num_cameras, size, radius=3500, dist=None)
    B = axis_rotation_to_z_up(np.array([0.0, 1.0, 0.0])).T  # z-up -> y-up raw world
    R_raw = R @ B.T
    truth = {}
    for s in subjects:
        for q in sequences:
            d = raw / s / q
            (d / "imageSequence").mkdir(parents=True, exist_ok=True)
            lines = ["Skeletool Camera Calibration File V1.0"]
            for c in range(num_cameras):
                intr = np.eye(4)
                intr[:3, :3] = K[c]
                ext = np.eye(4)
                ext[:3, :3] = R_raw[c]
                ext[:3, 3] = t[c]
                lines += [
                    f"name          {c}", "  sensor      10 10", f"  size        {W} {H}",
                    "  animated    0", "  intrinsic   " + " ".join(f"{x:.10g}" for x in intr.ravel()),
                    "  extrinsic   " + " ".join(f"{x:.10g}" for x in ext.ravel()), "  radial      0",
                ]  # fmt: skip
            (d / "camera.calibration").write_text("\n".join(lines) + "\n")
            Xz = random_people(rng, num_frames, 28, spread=300)
            Xz[:, 7, 2] = 1750.0  # head top
            Xz[:, [20, 25], 2] = 80.0  # ankles
            truth[(s, q)] = Xz
            Xraw = np.einsum("ij,fkj->fki", B, Xz)
            a3 = np.empty((num_cameras, 1), object)
            a2 = np.empty((num_cameras, 1), object)
            for c in range(num_cameras):
                Xc = np.einsum("ij,fkj->fki", R_raw[c], Xraw) + t[c]
                a3[c, 0] = Xc.reshape(num_frames, 84)
                uv = Xc[..., :2] / Xc[..., 2:] * K[c, [0, 1], [0, 1]] + K[c, :2, 2]
                a2[c, 0] = uv.reshape(num_frames, 56)
            annot = {
                "annot3": a3, "annot2": a2, "univ_annot3": a3,
                "frames": np.arange(num_frames)[:, None], "cameras": np.arange(num_cameras)[None],
            }  # fmt: skip
            if mat_version == "7.3":
                _savemat_v73(d / "annot.mat", annot)
            else:
                scipy.io.savemat(str(d / "annot.mat"), annot)
            for c in range(num_cameras):
                vw = cv2.VideoWriter(str(d / "imageSequence" / f"video_{c}.avi"),
                                     cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))  # fmt: skip
                for f in range(num_frames):
                    vw.write(np.full((H, W, 3), (f * 13 + c * 60) % 256, np.uint8))
                vw.release()
    return {"K": K, "R": R, "t": t, "joints3d": truth}


def _savemat_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """Write numeric matrices and cell arrays (object arrays of matrices) as MATLAB v7.3 does:
    an HDF5 file behind a 512-byte MATLAB header, matrices transposed (column-major), cells as
    arrays of object references into the ``#refs#`` group."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for name, value in variables.items():
            if value.dtype == object:
                cell = np.empty(value.shape[::-1], h5py.ref_dtype)
                for i, entry in enumerate(value.reshape(-1, order="F")):
                    ds = refs.create_dataset(f"{name}_{i}", data=np.asarray(entry, float).T)
                    ds.attrs["MATLAB_class"] = np.bytes_("double")
                    cell.reshape(-1)[i] = ds.ref
                ds = f.create_dataset(name, data=cell)
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                ds = f.create_dataset(name, data=np.asarray(value, float).T)
                ds.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: mvbook, HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:  # text, subsystem offset, version 0x0200, endian indicator
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
