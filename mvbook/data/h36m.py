"""Human3.6M (Ionescu et al., TPAMI 2014): conversion from the official layout.

Access is gated: register at http://vision.imar.ro/human3.6m/ and accept the licence (academic,
non-commercial research use only; no redistribution). mvbook cannot download it for you.
Download, for each subject S1, S5, S6, S7, S8, S9, S11, from "Training Data > By subject":

- ``Poses > D3 Positions`` (``Poses_D3_Positions_S1.tgz``, ~10 MB per subject)
- ``Videos`` (``Videos_S1.tgz``, ~6-12 GB per subject, 4 cameras x ~30 sequences)

and extract them into one folder ``RAW`` so that it reads::

    RAW/S1/MyPoseFeatures/D3_Positions/Directions 1.cdf     'Pose' (1, N, 96): 32 joints x, y, z mm
    RAW/S1/Videos/Directions 1.54138969.mp4                 1000x1002 (or 1000x1000), 50 fps
    RAW/cameras.json                                        see below

Total ~70 GB raw for the 7 subjects. Converted (4 views at 500x500, train every 5th frame,
test every 64th: ~80k samples, 3 MB each) ~240 GB; use ``--image-size 256x256`` (~63 GB)
or a larger ``train_step`` (every 10th halves it).

Cameras: the official release stores them in ``metadata.xml``, decoded by the official MATLAB
code. Provide them as ``RAW/cameras.json`` in one of two JSON layouts:

1. per subject and camera (the fields of the official metadata as exported by common tools, e.g.
   the ``cameras.h5`` of Martinez et al. 2017 converted to JSON)::

       {"S1": {"54138969": {"R": 3x3, "T": [3] camera centre mm (x_cam = R (X - T)),
                            "f": [fx, fy], "c": [cx, cy], "k": [k1, k2, k3], "p": [p1, p2]}}}

2. intrinsics/extrinsics (``camera-parameters.json`` of the human36m-camera-parameters project)::

       {"intrinsics": {"54138969": {"calibration_matrix": 3x3, "distortion": [k1, k2, p1, p2, k3]}},
        "extrinsics": {"S1": {"54138969": {"R": 3x3, "t": [3] or 3x1 mm (x_cam = R X + t)}}}}

Distortion is stored as (k1, k2, p1, p2, k3) and applied with the OpenCV model. (The official
MATLAB projection writes its tangential term slightly differently; the coefficients are tiny,
~1e-3, and the stored ``joints2d`` are always the projections under the stored model.)

Poses: ``.cdf`` files are read with ``cdflib`` when it is installed (``pip install cdflib``);
otherwise put an export next to each ``.cdf`` with the same stem: ``Directions 1.npz`` (key
``Pose`` or the first array, shape (N, 96) / (1, N, 96) / (N, 32, 3), mm) or ``.npy``.
The world of D3_Positions is already z up, mm. Joints 32 -> ``h36m17`` with the standard
indices :data:`H36M32_TO_17`.

Protocol (as in Iskakov et al. 2019, MCSS, Iqbal et al. 2020): train S1, S5, S6, S7, S8, test S9,
S11; every 5th frame for training and every 64th for testing (``train_step``/``test_step``).
Sequences whose video of one camera is unreadable are skipped and listed in the manifest
(known: ``S11 Directions`` camera 54138969 is broken in the official release).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvbook.data.common import (
    FrameRecord,
    ImageSource,
    MissingRawDataError,
    RawCamera,
    camera_from_centre,
    check_sources_exist,
    convert_records,
    video_info,
)
from mvbook.skeletons import H36M_17

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
CAMERAS = ("54138969", "55011271", "58860488", "60457274")
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
DEFAULT_IMAGE_SIZE = (500, 500)
JOINT_NAMES = H36M_17.joint_names

HOW_TO_GET = (
    "Human3.6M is gated: register at http://vision.imar.ro/human3.6m/, download for each subject "
    "'Poses_D3_Positions_<S>.tgz' and 'Videos_<S>.tgz', extract them into RAW "
    "(RAW/<S>/MyPoseFeatures/D3_Positions/*.cdf, RAW/<S>/Videos/*.mp4) and put the cameras in "
    "RAW/cameras.json (see docs/datasets.md)."
)


def load_cameras(
    path: str | Path, subject: str, cameras: Sequence[str] = CAMERAS
) -> list[RawCamera]:
    """Cameras of ``subject`` from ``cameras.json`` (either layout of the module docstring).
    Image sizes are filled in later from the videos."""
    path = Path(path)
    if not path.exists():
        raise MissingRawDataError(f"camera file {path} is missing. {HOW_TO_GET}")
    cal = json.loads(path.read_text())
    out = []
    if "intrinsics" in cal and "extrinsics" in cal:
        for cam in cameras:
            intr = cal["intrinsics"][cam]
            ext = cal["extrinsics"][subject][cam]
            K = np.array(intr["calibration_matrix"], float)
            R = np.array(ext["R"], float)
            t = np.array(ext["t"], float).reshape(3)
            out.append(RawCamera(K, R, t, np.array(intr["distortion"], float), (0, 0), cam))
        return out
    if subject not in cal:
        raise MissingRawDataError(f"{path}: no cameras for subject {subject}")
    for cam in cameras:
        v = cal[subject][cam]
        out.append(
            camera_from_centre(
                v["R"],
                v["T"],
                focal=v["f"],
                principal=v["c"],
                k=v.get("k", (0, 0, 0)),
                p=v.get("p", (0, 0)),
                size=v.get("size", (0, 0)),
                name=cam,
            )
        )
    return out


def read_poses(cdf_path: str | Path) -> np.ndarray:
    """``(N, 32, 3)`` mm from a D3_Positions ``.cdf`` (cdflib) or its ``.npz``/``.npy`` export."""
    cdf_path = Path(cdf_path)
    candidates = [cdf_path.with_suffix(".npz"), cdf_path.with_suffix(".npy"),
                  Path(f"{cdf_path}.npz"), Path(f"{cdf_path}.npy")]  # fmt: skip
    for alt in candidates:
        if alt.exists():
            data = np.load(alt)
            if isinstance(data, np.lib.npyio.NpzFile):
                key = "Pose" if "Pose" in data.files else data.files[0]
                data = data[key]
            return np.asarray(data, float).reshape(-1, 32, 3)
    if cdf_path.exists():
        try:
            import cdflib
        except ImportError as err:
            raise MissingRawDataError(
                f"{cdf_path}: reading .cdf needs the 'cdflib' package (pip install cdflib), or put "
                f"an export '{cdf_path.stem}.npz' (key 'Pose', (N, 96) mm) next to it"
            ) from err
        pose = cdflib.CDF(str(cdf_path)).varget("Pose")
        return np.asarray(pose, float).reshape(-1, 32, 3)
    raise MissingRawDataError(f"{cdf_path} is missing. {HOW_TO_GET}")


def action_of(stem: str) -> str:
    """``'Directions 1'`` -> ``'Directions'``; ``'TakingPhoto'``/``'Photo'`` -> ``'Photo'``,
    ``'WalkingDog'``/``'WalkDog'`` -> ``'WalkDog'`` (the release names them inconsistently)."""
    a = re.sub(r"\s*\d+$", "", stem).strip()
    return {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}.get(a, a)


def list_sequences(raw: Path, subject: str) -> list[str]:
    d = raw / subject / "MyPoseFeatures" / "D3_Positions"
    stems = {p.name.split(".cdf")[0] if ".cdf" in p.name else p.stem for p in d.glob("*")
             if p.suffix in (".cdf", ".npz", ".npy")}  # fmt: skip
    return sorted(s for s in stems if not s.startswith("_"))


def build_records(
    raw: str | Path,
    subjects: Sequence[str] = TRAIN_SUBJECTS + TEST_SUBJECTS,
    *,
    cameras: Sequence[str] = CAMERAS,
    train_step: int = 5,
    test_step: int = 64,
    camera_file: str | Path | None = None,
    actions: Sequence[str] | None = None,
    max_frames_per_sequence: int | None = None,
) -> tuple[list[FrameRecord], list[str]]:
    """Records for ``subjects`` and the list of skipped sequences (with the reason)."""
    raw = Path(raw)
    cam_path = Path(camera_file) if camera_file else raw / "cameras.json"
    records: list[FrameRecord] = []
    skipped: list[str] = []
    for subj in subjects:
        if not (raw / subj).exists():
            raise MissingRawDataError(f"{raw / subj} is missing. {HOW_TO_GET}")
        split = "test" if subj in TEST_SUBJECTS else "train"
        step = test_step if split == "test" else train_step
        cams = load_cameras(cam_path, subj, cameras)
        seqs = list_sequences(raw, subj)
        if not seqs:
            raise MissingRawDataError(f"no D3_Positions in {raw / subj}. {HOW_TO_GET}")
        for stem in seqs:
            act = action_of(stem)
            if actions is not None and act not in actions:
                continue
            videos = [raw / subj / "Videos" / f"{stem}.{c}.mp4" for c in cameras]
            sizes, counts, bad = [], [], None
            for v in videos:
                try:
                    size, count = video_info(v)
                    sizes.append(size)
                    counts.append(count)
                except (MissingRawDataError, OSError) as err:
                    bad = str(err)
                    break
            if bad is not None or min(counts) <= 0:
                skipped.append(f"{subj}/{stem}: {bad or 'empty video'}")
                continue
            poses = read_poses(raw / subj / "MyPoseFeatures" / "D3_Positions" / f"{stem}.cdf")
            n = min(len(poses), *counts)
            seq_cams = [RawCamera(c.K, c.R, c.t, c.dist, s, c.name) for c, s in zip(cams, sizes)]
            frames = range(0, n, step)
            if max_frames_per_sequence is not None:
                frames = frames[:max_frames_per_sequence]
            for f in frames:
                records.append(
                    FrameRecord(
                        sequence=f"{subj}/{stem}",
                        frame=f,
                        subject=subj,
                        action=act,
                        split=split,
                        joints3d=poses[f, list(H36M32_TO_17)][None],
                        cameras=seq_cams,
                        images=[ImageSource(str(v), f) for v in videos],
                    )
                )
    return records, skipped


def convert(
    raw: str | Path,
    out: str | Path,
    *,
    subjects: Sequence[str] = TRAIN_SUBJECTS + TEST_SUBJECTS,
    cameras: Sequence[str] = CAMERAS,
    train_step: int = 5,
    test_step: int = 64,
    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
    camera_file: str | Path | None = None,
    actions: Sequence[str] | None = None,
    max_frames_per_sequence: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the official Human3.6M layout in ``raw`` into a dataset folder ``out``."""
    records, skipped = build_records(
        raw, subjects, cameras=cameras, train_step=train_step, test_step=test_step,
        camera_file=camera_file, actions=actions, max_frames_per_sequence=max_frames_per_sequence,
    )  # fmt: skip
    check_sources_exist(records, HOW_TO_GET)
    prov: dict[str, Any] = {
        "source": "http://vision.imar.ro/human3.6m/ (official release, gated)",
        "raw": str(Path(raw).resolve()),
        "protocol": f"train {list(TRAIN_SUBJECTS)} every {train_step}th frame, test "
        f"{list(TEST_SUBJECTS)} every {test_step}th frame; joints 32 -> h36m17",
        "skipped_sequences": skipped,
        "converter": "mvbook.data.h36m",
    }
    return convert_records(
        records, out, image_size=image_size, skeleton="h36m17", joint_names=JOINT_NAMES,
        camera_names=list(cameras), dataset="human36m",
        splits={"train": list(TRAIN_SUBJECTS), "test": list(TEST_SUBJECTS)}, provenance=prov,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip


# -- fixtures -------------------------------------------------------------------------------------


def write_fixture(
    raw: str | Path,
    subjects: Sequence[str] = ("S1", "S9"),
    stems: Sequence[str] = ("Directions 1", "TakingPhoto"),
    num_frames: int = 12,
    size: tuple[int, int] = (50, 52),
    layout: str = "subject",
    seed: int = 0,
) -> dict[str, Any]:
    """Write a miniature official layout: poses as ``.npz`` exports next to where the ``.cdf``
    would be, short ``.mp4`` videos per camera, and ``cameras.json`` (``layout`` ``"subject"``
    or ``"intrinsics"``)."""
    import cv2

    from mvbook.data.fixtures import look_at_rig, random_people

    rng = np.random.default_rng(seed)
    raw = Path(raw)
    W, H = size
    K, R, t, d = look_at_rig(4, size, radius=4500, dist=(-0.2, 0.24, -0.0009, -0.0016, -0.0028))
    cams: dict[str, Any] = {}
    if layout == "intrinsics":
        cams = {"intrinsics": {c: {"calibration_matrix": K[i].tolist(),
                                   "distortion": d[i].tolist()} for i, c in enumerate(CAMERAS)},
                "extrinsics": {}}  # fmt: skip
    truth = {}
    for s in subjects:
        if layout == "intrinsics":
            cams["extrinsics"][s] = {c: {"R": R[i].tolist(), "t": t[i].reshape(3, 1).tolist()}
                                     for i, c in enumerate(CAMERAS)}  # fmt: skip
        else:
            cams[s] = {
                c: {"R": R[i].tolist(), "T": (-R[i].T @ t[i]).tolist(),
                    "f": [K[i, 0, 0], K[i, 1, 1]], "c": [K[i, 0, 2], K[i, 1, 2]],
                    "k": [d[i, 0], d[i, 1], d[i, 4]], "p": [d[i, 2], d[i, 3]]}
                for i, c in enumerate(CAMERAS)
            }  # fmt: skip
        pd = raw / s / "MyPoseFeatures" / "D3_Positions"
        vd = raw / s / "Videos"
        pd.mkdir(parents=True, exist_ok=True)
        vd.mkdir(parents=True, exist_ok=True)
        for stem in stems:
            X = random_people(rng, num_frames, 32, spread=300)  # (N, 32, 3) one person per frame
            (pd / f"{stem}.cdf").write_bytes(b"")  # placeholder where the official .cdf lives
            np.savez(pd / f"{stem}.npz", Pose=X.reshape(1, num_frames, 96))
            truth[(s, stem)] = X
            for i, c in enumerate(CAMERAS):
                vw = cv2.VideoWriter(str(vd / f"{stem}.{c}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                     50, (W, H))  # fmt: skip
                for f in range(num_frames + 2):  # videos are often a little longer than poses
                    vw.write(np.full((H, W, 3), (f * 11 + i * 50) % 256, np.uint8))
                vw.release()
    (raw / "cameras.json").write_text(json.dumps(cams))
    return {"K": K, "R": R, "t": t, "dist": d, "joints3d": truth}
