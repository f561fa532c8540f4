"""Shelf and Campus (Belagiannis et al., CVPR 2014): download and conversion.

Source: https://campar.in.tum.de/Chair/MultiHumanPose (TU Munich, CAMP). Licence: provided for
research purposes by the authors; cite Belagiannis et al. 2014 (check the page's terms).
Archives (public, no login)::

    Shelf.tar.bz2        ~2.6 GB  -> Shelf/       Camera0..Camera4/img_XXXXXX.png (1032x776),
                                                 actorsGT.mat, Calibration/P0.txt..P4.txt
    CampusSeq1.tar.bz2   ~1 GB    -> CampusSeq1/  Camera0..Camera2/campus4-cC-XXXXX.png (360x288),
                                                 actorsGT.mat, Calibration/P0.txt..P2.txt

Optionally the calibrations used by VoxelPose/SelfPose3d (with distortion), fetched from the
voxelpose-pytorch repository: ``Shelf/calibration_shelf.json``,
``CampusSeq1/calibration_campus.json``. Converted datasets: Shelf eval range (301 frames x 5
views) at 516x388 ~0.9 GB; Campus eval (222 x 3) at 360x288 ~0.2 GB.

Layouts assumed (documented by the dataset README and the readers in VoxelPose; the tests write
fixture files in exactly this layout):

- ``actorsGT.mat``: ``actor3D`` is a 1 x A cell (A actors: Shelf 4, Campus 3); ``actor3D{a}`` is
  an F x 1 cell whose entry is a 14 x 3 matrix in **metres** or empty when the actor is not
  annotated in that frame. Joints (14, skeleton ``shelf14``): r_ankle, r_knee, r_hip, l_hip,
  l_knee, l_ankle, r_wrist, r_elbow, r_shoulder, l_shoulder, l_elbow, l_wrist, bottom_head,
  top_head. ``actor2D{a}{f}`` is a 1 x C cell of 14 x 2 pixel positions (used only to report how
  well the calibration explains the 2D annotation).
- ``Calibration/P<c>.txt``: a 3 x 4 projection matrix (comma or space separated) mapping world
  points **in metres** to pixels; decomposed by RQ into ``K, R, t`` (no distortion), t -> mm.
- ``calibration_<shelf|campus>.json`` (VoxelPose): ``{"<c>": {"R": 3x3, "T": 3x1 camera centre
  in mm, "fx", "fy", "cx", "cy", "k": [k1, k2, k3], "p": [p1, p2]}}`` with
  ``x_cam = R (X - T)``. Preferred when present (``calibration="auto"``).
- images: Shelf ``Camera<c>/img_<frame:06d>.png``, Campus ``Camera<c>/campus4-c<c>-<frame:05d>.png``.

World frame: the converter finds the up direction from the annotation (mean top_head minus
ankle midpoint) and, if it is not +z, rotates the world by the signed axis permutation that makes
it +z (joints and cameras together; recorded in the manifest's provenance).

Protocol: evaluation frames Shelf 300-600, Campus 350-470 and 650-750 (inclusive, as VoxelPose's
``frame_range``), split ``"test"``. ``frames="all"`` also converts every other frame as split
``"train"`` (unlabelled frames for self-supervised training, as SelfPose3d does; their persons
are the annotated actors if any). Persons keep one slot per actor (``person_valid`` False where an
actor is not annotated), so PCP can be reported per actor.
"""

from __future__ import annotations

import json
import tarfile
import warnings
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
    camera_from_centre,
    check_sources_exist,
    convert_records,
    decompose_projection,
    read_image_rgb,
)
from mvbook.data.download import download
from mvbook.skeletons import SHELF_14

SHELF_JOINTS = SHELF_14.joint_names

DATASETS: dict[str, dict[str, Any]] = {
    "shelf": {
        "archive_url": "https://www.campar.in.tum.de/public_datasets/2014_cvpr_belagiannis/Shelf.tar.bz2",
        "archive": "Shelf.tar.bz2",
        "folder": "Shelf",
        "num_cameras": 5,
        "calib_json": "calibration_shelf.json",
        "calib_json_url": "https://github.com/microsoft/voxelpose-pytorch/raw/main/data/Shelf/calibration_shelf.json",
        "eval_frames": list(range(300, 601)),
        "image": "Camera{c}/img_{f:06d}.png",
        "default_size": (516, 388),
    },
    "campus": {
        "archive_url": "https://www.campar.in.tum.de/public_datasets/2014_cvpr_belagiannis/CampusSeq1.tar.bz2",
        "archive": "CampusSeq1.tar.bz2",
        "folder": "CampusSeq1",
        "num_cameras": 3,
        "calib_json": "calibration_campus.json",
        "calib_json_url": "https://github.com/microsoft/voxelpose-pytorch/raw/main/data/CampusSeq1/calibration_campus.json",
        "eval_frames": list(range(350, 471)) + list(range(650, 751)),
        "image": "Camera{c}/campus4-c{c}-{f:05d}.png",
        "default_size": (360, 288),
    },
}


def _info(name: str) -> dict[str, Any]:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def how_to_get(name: str) -> str:
    info = _info(name)
    return (
        f"Get it with `mvbook data fetch {name} --raw DIR` (downloads {info['archive_url']} and "
        f"extracts it to DIR/{info['folder']}), or download and extract the archive yourself."
    )


def fetch(
    name: str,
    raw: str | Path,
    *,
    archive_url: str | None = None,
    calib_json_url: str | None = None,
    sha256: str | None = None,
    with_voxelpose_calibration: bool = True,
    retries: int = 5,
    progress: bool = True,
) -> Path:
    """Download the archive into ``raw`` and extract it next to it (the archive is kept).

    Returns the extracted folder ``raw/<Shelf|CampusSeq1>``.
    """
    info = _info(name)
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    res = download(archive_url or info["archive_url"], raw / info["archive"], sha256=sha256,
                   retries=retries, ledger_root=raw, progress=progress)  # fmt: skip
    folder = raw / info["folder"]
    if not (folder / "actorsGT.mat").exists():
        _safe_extract(res.path, raw)
    if with_voxelpose_calibration:
        download(calib_json_url or info["calib_json_url"], folder / info["calib_json"],
                 retries=retries, ledger_root=raw, progress=progress)  # fmt: skip
    return folder


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive refusing absolute paths and '..' members."""
    with tarfile.open(archive) as tar:
        base = dest.resolve()
        for m in tar.getmembers():
            target = (dest / m.name).resolve()
            if not str(target).startswith(str(base)) or m.issym() or m.islnk():
                raise ValueError(f"{archive}: unsafe member {m.name!r}")
        tar.extractall(dest)  # members checked above


def _where_to_get(name: str | None) -> str:
    if name is None:
        return ("It comes with the Shelf and Campus archives: `mvbook data fetch shelf --raw DIR` "
                "or `mvbook data fetch campus --raw DIR`.")
    return how_to_get(name)


def load_actors(path: str | Path, name: str | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read ``actorsGT.mat`` (of dataset ``name``, used in messages).

    Returns ``joints (A, F, 14, 3)`` mm (NaN where not annotated), ``valid (A, F)`` bool and
    ``joints2d (A, F, C, 14, 2)`` px (NaN where absent) or None without ``actor2D``.
    Raises :class:`MissingRawDataError` naming the file when it is missing or unreadable.
    """
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise MissingRawDataError(f"{path} is missing. {_where_to_get(name)}")
    try:
        mat = scipy.io.loadmat(str(path))
        actors = mat["actor3D"][0]
        A = len(actors)
        F = len(actors[0])
    except Exception as err:  # noqa: BLE001 - scipy raises many types for a damaged file
        raise MissingRawDataError(
            f"{path} cannot be read ({type(err).__name__}: {err}); the file is damaged or "
            f"truncated: download and extract it again. {_where_to_get(name)}") from err
    joints = np.full((A, F, 14, 3), np.nan)
    for a in range(A):
        for f in range(F):
            pose = np.asarray(actors[a][f][0])
            if pose.shape == (14, 3):
                joints[a, f] = pose * 1000.0
    j2 = None
    if "actor2D" in mat:
        a2 = mat["actor2D"][0]
        C = np.asarray(a2[0][0][0]).shape[1]
        j2 = np.full((A, F, C, 14, 2), np.nan)
        for a in range(A):
            for f in range(F):
                cams = np.asarray(a2[a][f][0])
                for c in range(C):
                    p = np.asarray(cams[0][c])
                    if p.shape == (14, 2):
                        j2[a, f, c] = p
    return joints, np.isfinite(joints).all((-1, -2)), j2


def load_cameras(
    name: str,
    folder: str | Path,
    calibration: str = "auto",
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[RawCamera], str]:
    """Cameras (mm, the annotation's world) from the VoxelPose JSON or ``Calibration/P<c>.txt``.

    ``calibration``: ``"auto"`` (JSON if present), ``"json"`` or ``"projection"``.
    Returns the cameras and which source was used.
    """
    info = _info(name)
    folder = Path(folder)
    C = info["num_cameras"]
    js = folder / info["calib_json"]
    sizes = image_sizes or [(0, 0)] * C
    if calibration in ("auto", "json") and js.exists():
        try:
            cal = json.loads(js.read_text())
        except (ValueError, OSError) as err:
            raise MissingRawDataError(
                f"{js} cannot be read ({err}); download it again from {info['calib_json_url']} "
                f"(`mvbook data fetch {name} --raw DIR` does)") from err
        cams = []
        for c in range(C):
            v = cal[str(c)]
            cams.append(
                camera_from_centre(
                    v["R"],
                    v["T"],
                    focal=(v["fx"], v["fy"]),
                    principal=(v["cx"], v["cy"]),
                    k=v.get("k", (0, 0, 0)),
                    p=v.get("p", (0, 0)),
                    size=sizes[c],
                    name=f"Camera{c}",
                )
            )
        return cams, str(js)
    if calibration == "json":
        raise MissingRawDataError(
            f"{js} is missing: download it from {info['calib_json_url']} (`mvbook data fetch "
            f"{name} --raw DIR` does), or use --calibration projection with Calibration/P<c>.txt")
    cams = []
    for c in range(C):
        p = folder / "Calibration" / f"P{c}.txt"
        if not p.exists():
            raise MissingRawDataError(f"{p} is missing. {how_to_get(name)}")
        txt = p.read_text().replace(",", " ").split()
        P = np.array([float(x) for x in txt], float)
        if P.size != 12:
            raise ValueError(f"{p}: expected 12 numbers of a 3x4 projection matrix, got {P.size}")
        K, R, t = decompose_projection(P.reshape(3, 4))
        cams.append(RawCamera(K, R, t * 1000.0, np.zeros(5), sizes[c], f"Camera{c}"))
    return cams, str(folder / "Calibration")


def _actor2d_error(
    cams: list[RawCamera], joints: np.ndarray, valid: np.ndarray, j2: np.ndarray | None
) -> float | None:
    """Median px distance between projected ``actor3D`` and ``actor2D`` (None without 2D)."""
    from mvbook.data.projection import project_points_np

    if j2 is None or j2.shape[2] != len(cams):
        return None
    A, F = valid.shape
    X = np.nan_to_num(joints).reshape(1, -1, 3)
    errs = []
    for c, cam in enumerate(cams):
        uv, _ = project_points_np(X, cam.K, cam.R, cam.t, cam.dist)
        e = np.linalg.norm(uv.reshape(A, F, 14, 2) - j2[:, :, c], axis=-1)
        errs.append(e[np.isfinite(e) & valid[..., None]])
    e = np.concatenate(errs)
    return float(np.median(e)) if e.size else None


def build_records(
    name: str,
    folder: str | Path,
    *,
    frames: str | Sequence[int] = "eval",
    calibration: str = "auto",
) -> tuple[list[FrameRecord], dict[str, Any]]:
    """Records of Shelf/Campus frames (``frames``: ``"eval"``, ``"all"`` or a list)."""
    info = _info(name)
    folder = Path(folder)
    if not folder.exists():
        raise MissingRawDataError(f"{folder} does not exist. {how_to_get(name)}")
    joints, valid, j2 = load_actors(folder / "actorsGT.mat", name)
    A, F = valid.shape
    C = info["num_cameras"]
    sizes = []
    for c in range(C):
        imgs = sorted((folder / f"Camera{c}").glob("*.png"))
        if not imgs:
            raise MissingRawDataError(f"no images in {folder / f'Camera{c}'}. {how_to_get(name)}")
        im = read_image_rgb(imgs[0])
        sizes.append((im.shape[1], im.shape[0]))
    cams, calib_src = load_cameras(name, folder, calibration, sizes)
    stats: dict[str, Any] = {"calibration": calib_src}
    err = _actor2d_error(cams, joints, valid, j2)
    if calib_src.endswith("Calibration") and err is not None:
        # P<c>.txt are assumed to map metres; if millimetres explain actor2D better, use them
        cams_mm = [RawCamera(c.K, c.R, c.t / 1000.0, c.dist, c.size, c.name) for c in cams]
        err_mm = _actor2d_error(cams_mm, joints, valid, j2)
        if err_mm is not None and err_mm < err:
            cams, err = cams_mm, err_mm
            stats["projection_units"] = "mm"
        else:
            stats["projection_units"] = "m"
    if err is not None:
        stats["actor2D_reprojection_median_px"] = err
        if err > 5.0:
            warnings.warn(
                f"{name}: the cameras reproject the 3D annotation {err:.1f} px (median) away from "
                "the dataset's 2D annotation; check the calibration files",
                stacklevel=2,
            )
    # up axis from the annotation: top of head minus the ankle midpoint
    v = valid
    up = (joints[..., 13, :] - 0.5 * (joints[..., 0, :] + joints[..., 5, :]))[v].mean(0)
    Aup = axis_rotation_to_z_up(up)
    cams = [c.transformed(Aup) for c in cams]
    X = np.einsum("ij,afkj->afki", Aup, np.nan_to_num(joints))
    eval_set = set(info["eval_frames"])
    if isinstance(frames, str):
        if frames == "eval":
            frame_list = [f for f in info["eval_frames"] if f < F]
        elif frames == "all":
            frame_list = list(range(F))
        else:
            raise ValueError(f"frames must be 'eval', 'all' or a list, got {frames!r}")
    else:
        frame_list = [int(f) for f in frames]
    records = []
    for f in frame_list:
        records.append(
            FrameRecord(
                sequence=name,
                frame=f,
                subject=name,
                action="",
                split="test" if f in eval_set else "train",
                joints3d=X[:, f],
                person_valid=valid[:, f],
                cameras=cams,
                images=[
                    ImageSource(str(folder / info["image"].format(c=c, f=f))) for c in range(C)
                ],
            )
        )
    stats["up_rotation"] = Aup.tolist()
    return records, stats


def convert(
    name: str,
    raw: str | Path,
    out: str | Path,
    *,
    frames: str | Sequence[int] = "eval",
    calibration: str = "auto",
    image_size: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert an extracted Shelf or Campus folder (``raw`` or ``raw/<folder>``) to ``out``."""
    info = _info(name)
    raw = Path(raw)
    folder = raw if (raw / "actorsGT.mat").exists() else raw / info["folder"]
    records, stats = build_records(name, folder, frames=frames, calibration=calibration)
    check_sources_exist(records, how_to_get(name))
    size = tuple(image_size) if image_size is not None else info["default_size"]
    prov = {
        "source": info["archive_url"],
        "raw": str(folder.resolve()),
        "protocol": f"evaluation frames {info['eval_frames'][0]}..{info['eval_frames'][-1]}"
        + (" (and 650..750)" if name == "campus" else "")
        + "; persons = actors in fixed slots; actorsGT metres -> mm",
        "frames": frames if isinstance(frames, str) else "list",
        "converter": "mvbook.data.shelf_campus",
        **stats,
    }
    return convert_records(
        records, out, image_size=size, skeleton="shelf14", joint_names=SHELF_JOINTS,
        camera_names=[f"Camera{c}" for c in range(info["num_cameras"])], dataset=name,
        splits={"test": [name]}, provenance=prov, overwrite=overwrite, progress=progress,
    )  # fmt: skip


# -- fixtures -------------------------------------------------------------------------------------


def write_fixture(
    name: str,
    raw: str | Path,
    num_frames: int | None = None,
    num_actors: int = 2,
    size: tuple[int, int] = (72, 56),
    calibration: str = "projection",
    seed: int = 0,
    projection_units: str = "m",
    all_images: bool = False,
) -> dict[str, Any]:
    """Write a miniature ``Shelf``/``CampusSeq1`` folder in the public layout: actorsGT.mat
    (metres, y-up world so that the up-axis alignment is exercised), P<c>.txt projection
    matrices (metres) or the VoxelPose JSON (mm, with distortion), and tiny PNG frames.
    Frames default to the first 4 evaluation frames; images are written for the evaluation
    frames only unless ``all_images``."""
    import cv2
    import scipy.io

    from mvbook.data.fixtures import look_at_rig, random_people

    info = _info(name)
    rng = np.random.default_rng(seed)
    folder = Path(raw) / info["folder"]
    C = info["num_cameras"]
    F = num_frames or info["eval_frames"][0] + 4
    W, H = size
    dist = None if calibration == "projection" else (-0.03, 0.004, 0.0008, -0.0004, 0.0)
    K, R, t, d = look_at_rig(C, size, radius=3500, dist=dist)
    # the raw world is y-up: X_raw = B X_zup with B mapping z -> y
    B = axis_rotation_to_z_up(np.array([0.0, 1.0, 0.0])).T
    R_raw = R @ B.T
    truth = np.full((num_actors, F, 14, 3), np.nan)
    a3 = np.empty((1, num_actors), object)
    a2 = np.empty((1, num_actors), object)
    for a in range(num_actors):
        per3 = np.empty((F, 1), object)
        per2 = np.empty((F, 1), object)
        for f in range(F):
            cams2 = np.empty((1, C), object)
            if (f + a) % 3 != 2:
                Xz = random_people(rng, 1, 14, spread=400)[0]
                Xz[13, 2] = 1750.0  # top head above the ankles
                Xz[[0, 5], 2] = 80.0
                truth[a, f] = Xz
                per3[f, 0] = (B @ Xz.T).T / 1000.0
                from mvbook.data.projection import project_points_np

                uv, _ = project_points_np(Xz[None], K, R, t, d)
                for c in range(C):
                    cams2[0, c] = uv[c]
            else:
                per3[f, 0] = np.zeros((0, 0))
                for c in range(C):
                    cams2[0, c] = np.zeros((0, 0))
            per2[f, 0] = cams2
        a3[0, a] = per3
        a2[0, a] = per2
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(folder / "actorsGT.mat"), {"actor3D": a3, "actor2D": a2})
    if calibration == "projection":
        (folder / "Calibration").mkdir(exist_ok=True)
        for c in range(C):
            scale = 1000.0 if projection_units == "m" else 1.0
            P = K[c] @ np.concatenate([R_raw[c], t[c][:, None] / scale], 1)
            (folder / "Calibration" / f"P{c}.txt").write_text(
                "\n".join(",".join(f"{x:.12g}" for x in row) for row in P) + "\n"
            )
    else:
        cal = {}
        for c in range(C):
            T = -R_raw[c].T @ t[c]
            cal[str(c)] = {
                "R": R_raw[c].tolist(), "T": T.reshape(3, 1).tolist(), "fx": K[c, 0, 0],
                "fy": K[c, 1, 1], "cx": K[c, 0, 2], "cy": K[c, 1, 2],
                "k": [[d[c, 0]], [d[c, 1]], [d[c, 4]]], "p": [[d[c, 2]], [d[c, 3]]],
            }  # fmt: skip
        (folder / info["calib_json"]).write_text(json.dumps(cal))
    for c in range(C):
        (folder / f"Camera{c}").mkdir(exist_ok=True)
        for f in range(0 if all_images else min(info["eval_frames"][0], F - 1), F):
            img = np.full((H, W, 3), (f * 7 + c * 40) % 256, np.uint8)
            cv2.imwrite(str(folder / info["image"].format(c=c, f=f)), img)
    return {"K": K, "R": R, "t": t, "dist": d, "joints3d": truth, "folder": folder}
