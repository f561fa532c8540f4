"""CMU Panoptic Studio: download (HD views) and conversion to the common format.

Source: http://domedb.perception.cs.cmu.edu/ (Joo et al., "Panoptic Studio", ICCV 2015 /
TPAMI 2017). Licence: free for non-commercial research use; cite the papers (see the site's
terms). Files follow the panoptic-toolbox ``getData.sh`` layout under
``http://domedb.perception.cs.cmu.edu/webdata/dataset/<seq>/``::

    <raw>/<seq>/calibration_<seq>.json             ~0.3 MB  all cameras: K, R, t (cm), distCoef
    <raw>/<seq>/hdPose3d_stage1_coco19.tar          ~5-50 MB hdPose3d_stage1_coco19/
                                                              body3DScene_<8-digit hd frame>.json
    <raw>/<seq>/hdVideos/hd_00_XX.mp4               ~0.5-3 GB each (1920x1080, 29.97 fps)
                                                    (served as videos/hd_shared_crf20/hd_00_XX.mp4)

Disk: the 14 VoxelPose sequences x 5 HD views are roughly 100-200 GB of video. A converted
dataset at 960x540 holds 5 x 1.5 MB per sample (~21k samples with VoxelPose's train interval
3 -> ~160 GB; use a larger ``interval`` or smaller ``image_size`` to shrink it).

Conventions of the raw data and what the converter does:

- calibration ``K`` (3x3 px), ``R`` (3x3), ``t`` (3x1 **cm**), ``distCoef`` (k1, k2, p1, p2, k3);
  ``x_cam = R X + t``. Converted: ``t`` * 10 -> mm.
- ``body3DScene_XXXXXXXX.json``: ``{"bodies": [{"id": int, "joints19": [x, y, z, conf] * 19}]}``,
  x, y, z in cm in the dome frame whose **y axis points down**; frame number = HD video frame
  index (frame 0 = first decoded frame of ``hd_00_XX.mp4``).
  Converted: X_mm = 10 A X_cm with A (x' = x, y' = z, z' = -y), the rotation VoxelPose applies
  (``M = [[1,0,0],[0,0,-1],[0,1,0]]``, X' = X M), and cameras ``R' = R A^T``, so z is up.
- a body is kept when its body-centre confidence is > 0.1 (VoxelPose); ``joints3d_valid`` marks
  joints with confidence > 0.1. Skeleton ``panoptic19`` (or the first 15 joints, ``panoptic15``).
- protocol (VoxelPose / SelfPose3d): HD cameras 00_03, 00_06, 00_12, 00_13, 00_23; train
  sequences :data:`TRAIN_SEQUENCES` every 3rd frame, test ("validation" in those papers)
  :data:`TEST_SEQUENCES` every 12th frame; frames without a kept body are skipped. (VoxelPose
  takes every n-th file of the sorted pose files; here frames whose HD index is a multiple of n
  are taken, which is the same set when the pose files start at a multiple of n.)
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvbook.data.common import (
    FrameRecord,
    ImageSource,
    MissingRawDataError,
    RawCamera,
    check_sources_exist,
    convert_records,
    video_info,
)
from mvbook.data.download import download
from mvbook.skeletons import PANOPTIC_19

BASE_URL = "http://domedb.perception.cs.cmu.edu/webdata/dataset"
TRAIN_SEQUENCES = (
    "160422_ultimatum1",
    "160224_haggling1",
    "160226_haggling1",
    "161202_haggling1",
    "160906_ian1",
    "160906_ian2",
    "160906_ian3",
    "160906_band1",
    "160906_band2",
    "160906_band3",
)
TEST_SEQUENCES = ("160906_pizza1", "160422_haggling1", "160906_ian5", "160906_band4")
CAMERAS = (3, 6, 12, 13, 23)
TRAIN_INTERVAL = 3
TEST_INTERVAL = 12
MAX_PERSONS = 10
ROOT_JOINT = 2  # body centre
CONF_THRESHOLD = 0.1
POSE_TAR = "hdPose3d_stage1_coco19.tar"
DEFAULT_IMAGE_SIZE = (960, 540)
# dome frame (y down, cm) -> mvbook world (z up): x' = x, y' = z, z' = -y
DOME_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
JOINT_NAMES_19 = PANOPTIC_19.joint_names

HOW_TO_GET = (
    "Get them with `mvbook data fetch panoptic --raw DIR --sequences SEQ ...` "
    "(or data_scripts/panoptic.py), which follows panoptic-toolbox getData.sh."
)


def camera_name(node: int, panel: int = 0) -> str:
    return f"{panel:02d}_{node:02d}"


def sequence_urls(
    seq: str, cameras: Sequence[int] = CAMERAS, base_url: str = BASE_URL
) -> list[tuple[str, str]]:
    """``[(url, relative path)]`` of one sequence's calibration, poses and HD videos."""
    base = f"{base_url.rstrip('/')}/{seq}"
    files = [
        (f"{base}/calibration_{seq}.json", f"{seq}/calibration_{seq}.json"),
        (f"{base}/{POSE_TAR}", f"{seq}/{POSE_TAR}"),
    ]
    for c in cameras:
        name = f"hd_{camera_name(c)}.mp4"
        files.append((f"{base}/videos/hd_shared_crf20/{name}", f"{seq}/hdVideos/{name}"))
    return files


def fetch(
    raw: str | Path,
    sequences: Sequence[str] = TRAIN_SEQUENCES + TEST_SEQUENCES,
    cameras: Sequence[int] = CAMERAS,
    *,
    base_url: str = BASE_URL,
    checksums: dict[str, str] | None = None,
    retries: int = 5,
    progress: bool = True,
    videos: bool = True,
) -> list[Path]:
    """Download the chosen sequences into ``raw`` (resumable, verified, never re-downloaded).

    ``checksums``: optional ``{relative path: sha256}``; otherwise digests are recorded in
    ``raw/SHA256SUMS`` on first download and checked on later runs.
    """
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for seq in sequences:
        for url, rel in sequence_urls(seq, cameras, base_url):
            if not videos and rel.endswith(".mp4"):
                continue
            res = download(
                url, raw / rel, sha256=(checksums or {}).get(rel), retries=retries,
                ledger_root=raw, progress=progress,
            )  # fmt: skip
            out.append(res.path)
    return out


def load_calibration(path: str | Path, cameras: Sequence[int] = CAMERAS) -> list[RawCamera]:
    """HD cameras ``00_XX`` of ``calibration_<seq>.json`` in mvbook's world (mm, z up)."""
    path = Path(path)
    if not path.exists():
        raise MissingRawDataError(f"calibration file {path} is missing. {HOW_TO_GET}")
    calib = json.loads(path.read_text())
    by_name = {}
    for cam in calib["cameras"]:
        if cam.get("type", "hd") == "hd":
            by_name[(int(cam["panel"]), int(cam["node"]))] = cam
    out = []
    for node in cameras:
        cam = by_name.get((0, int(node)))
        if cam is None:
            raise MissingRawDataError(f"{path}: no HD camera 00_{node:02d}")
        W, H = cam.get("resolution", (1920, 1080))
        raw_cam = RawCamera(
            K=np.array(cam["K"], float),
            R=np.array(cam["R"], float),
            t=np.array(cam["t"], float).reshape(3) * 10.0,  # cm -> mm
            dist=np.array(cam["distCoef"], float),
            size=(W, H),
            name=camera_name(node),
        )
        out.append(raw_cam.transformed(DOME_TO_WORLD))
    return out


_FRAME_RE = re.compile(r"body3DScene_(\d+)\.json$")


def read_poses(tar_path: str | Path, frames: set[int] | None = None) -> dict[int, list[np.ndarray]]:
    """``{hd frame: [joints19 (19, 4) x, y, z (cm, dome frame), confidence]}`` read directly from
    ``hdPose3d_stage1_coco19.tar`` (nothing is extracted, the archive is not modified).
    Also accepts an extracted ``hdPose3d_stage1_coco19`` folder."""
    tar_path = Path(tar_path)
    out: dict[int, list[np.ndarray]] = {}

    def parse(name: str, data: bytes) -> None:
        m = _FRAME_RE.search(name)
        if not m:
            return
        f = int(m.group(1))
        if frames is not None and f not in frames:
            return
        bodies = json.loads(data.decode("utf-8")).get("bodies", [])
        out[f] = [np.array(b["joints19"], float).reshape(-1, 4) for b in bodies]

    if tar_path.is_file():
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.isfile() and _FRAME_RE.search(member.name):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        parse(member.name, fh.read())
    elif tar_path.with_suffix("").is_dir():
        for p in sorted(tar_path.with_suffix("").glob("body3DScene_*.json")):
            parse(p.name, p.read_bytes())
    else:
        raise MissingRawDataError(f"{tar_path} is missing. {HOW_TO_GET}")
    return out


def build_records(
    raw: str | Path,
    sequences: Sequence[str],
    cameras: Sequence[int] = CAMERAS,
    *,
    interval: int | None = None,
    num_joints: int = 19,
    frame_range: tuple[int, int] | None = None,
    max_frames: int | None = None,
) -> list[FrameRecord]:
    """Frame records of ``sequences`` (split by :data:`TRAIN_SEQUENCES`/:data:`TEST_SEQUENCES`,
    interval 3/12 unless given). Frames beyond the shortest video are dropped."""
    raw = Path(raw)
    records: list[FrameRecord] = []
    for seq in sequences:
        split = "test" if seq in TEST_SEQUENCES else "train"
        step = interval or (TEST_INTERVAL if split == "test" else TRAIN_INTERVAL)
        cams = load_calibration(raw / seq / f"calibration_{seq}.json", cameras)
        videos = [raw / seq / "hdVideos" / f"hd_{camera_name(c)}.mp4" for c in cameras]
        missing = [str(v) for v in videos if not v.exists()]
        if missing:
            raise MissingRawDataError(
                "missing videos:\n  " + "\n  ".join(missing) + f"\n{HOW_TO_GET}"
            )
        n_video = min(_frame_count(v) for v in videos)
        poses = read_poses(raw / seq / POSE_TAR)
        frames = sorted(f for f in poses if f % step == 0 and f < n_video)
        if frame_range is not None:
            frames = [f for f in frames if frame_range[0] <= f < frame_range[1]]
        kept = 0
        for f in frames:
            bodies = [b for b in poses[f] if b[ROOT_JOINT, 3] > CONF_THRESHOLD]
            if not bodies:
                continue
            B = np.stack(bodies)[:, :num_joints]  # (P, J, 4)
            X = 10.0 * np.einsum("ij,pkj->pki", DOME_TO_WORLD, B[..., :3])
            records.append(
                FrameRecord(
                    sequence=seq,
                    frame=f,
                    subject=seq,
                    action=re.sub(r"\d+$", "", seq.split("_", 1)[-1]),
                    split=split,
                    joints3d=X,
                    joints3d_valid=B[..., 3] > CONF_THRESHOLD,
                    cameras=cams,
                    images=[ImageSource(str(v), f) for v in videos],
                )
            )
            kept += 1
            if max_frames is not None and kept >= max_frames:
                break
    return records


def _frame_count(path: Path) -> int:
    n = video_info(path)[1]
    return n if n > 0 else 1 << 62


def convert(
    raw: str | Path,
    out: str | Path,
    *,
    sequences: Sequence[str] = TRAIN_SEQUENCES + TEST_SEQUENCES,
    cameras: Sequence[int] = CAMERAS,
    interval: int | None = None,
    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
    num_joints: int = 19,
    max_persons: int = MAX_PERSONS,
    frame_range: tuple[int, int] | None = None,
    max_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert downloaded sequences in ``raw`` into a dataset folder ``out``."""
    if num_joints not in (15, 19):
        raise ValueError(f"num_joints must be 15 or 19, got {num_joints}")
    records = build_records(
        raw, sequences, cameras, interval=interval, num_joints=num_joints,
        frame_range=frame_range, max_frames=max_frames,
    )  # fmt: skip
    check_sources_exist(records, HOW_TO_GET)
    seqs_train = [s for s in sequences if s not in TEST_SEQUENCES]
    seqs_test = [s for s in sequences if s in TEST_SEQUENCES]
    prov: dict[str, Any] = {
        "source": BASE_URL,
        "raw": str(Path(raw).resolve()),
        "protocol": "VoxelPose/SelfPose3d: HD cameras 3,6,12,13,23; train every 3rd, test every "
        "12th frame; bodies with body-centre confidence > 0.1",
        "sequences": list(sequences),
        "interval": interval,
        "world": "dome frame rotated: x'=x, y'=z, z'=-y (z up), cm -> mm",
        "converter": "mvbook.data.panoptic",
    }
    return convert_records(
        records,
        out,
        image_size=image_size,
        skeleton=f"panoptic{num_joints}",
        joint_names=JOINT_NAMES_19[:num_joints],
        camera_names=[camera_name(c) for c in cameras],
        dataset="panoptic",
        splits={"train": seqs_train, "test": seqs_test},
        provenance=prov,
        max_persons=max_persons,
        overwrite=overwrite,
        progress=progress,
    )


# -- fixtures: the raw layout in miniature (tests, offline examples) ------------------------------


def write_fixture(
    raw: str | Path,
    seq: str = "160906_pizza1",
    cameras: Sequence[int] = (3, 6, 12),
    num_frames: int = 30,
    size: tuple[int, int] = (96, 54),
    seed: int = 0,
) -> dict[str, Any]:
    """Write a tiny sequence in the real Panoptic layout (calibration JSON in cm with distortion,
    a tar of ``body3DScene`` JSONs in cm/y-down, and short MJPG ``.mp4`` videos)."""
    import cv2

    from mvbook.data.fixtures import look_at_rig, random_people

    rng = np.random.default_rng(seed)
    raw = Path(raw)
    d = raw / seq
    (d / "hdVideos").mkdir(parents=True, exist_ok=True)
    W, H = size
    K, R, t, dist = look_at_rig(
        len(cameras), size, radius=3000, dist=(-0.05, 0.01, 0.001, 0.0005, 0.0)
    )
    A = DOME_TO_WORLD  # world -> dome: X_dome = A^T X_world
    cams_json = []
    for i, node in enumerate(cameras):
        R_dome = R[i] @ A  # x_cam = R X_w + t = (R A) X_dome + t
        cams_json.append({
            "name": camera_name(node), "type": "hd", "resolution": [W, H], "panel": 0, "node": node,
            "K": K[i].tolist(), "distCoef": dist[i].tolist(), "R": R_dome.tolist(),
            "t": (t[i] / 10.0).reshape(3, 1).tolist(),
        })  # fmt: skip
    cams_json.append({"name": "01_01", "type": "vga", "resolution": [640, 480], "panel": 1, "node": 1,
                      "K": np.eye(3).tolist(), "distCoef": [0] * 5, "R": np.eye(3).tolist(),
                      "t": [[0], [0], [0]]})  # fmt: skip
    (d / f"calibration_{seq}.json").write_text(
        json.dumps({"calibDataSource": seq, "cameras": cams_json})
    )
    truth: dict[int, np.ndarray] = {}
    with tarfile.open(d / POSE_TAR, "w") as tar:
        info = tarfile.TarInfo("hdPose3d_stage1_coco19")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for f in range(num_frames):
            n = 1 + f % 2
            Xw = random_people(rng, n, 19, spread=300)
            conf = np.full((n, 19, 1), 0.8)
            if f % 5 == 4:
                conf[0, 16] = -1.0  # an unreconstructed ear
            if f == 7:
                conf[:, ROOT_JOINT] = 0.05  # no kept body in frame 7
            truth[f] = Xw
            Xd = np.einsum("ji,pkj->pki", A, Xw) / 10.0  # A^T X, mm -> cm
            bodies = [
                {"id": p, "joints19": np.concatenate([Xd[p], conf[p]], -1).reshape(-1).tolist()}
                for p in range(n)
            ]
            data = json.dumps({"version": 0.7, "univTime": f * 33.3, "fpsType": "hd_29_97",
                               "bodies": bodies}).encode()  # fmt: skip
            ti = tarfile.TarInfo(f"hdPose3d_stage1_coco19/body3DScene_{f:08d}.json")
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    for i, node in enumerate(cameras):
        path = d / "hdVideos" / f"hd_{camera_name(node)}.mp4"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 29.97, (W, H))
        for f in range(num_frames):
            img = np.full((H, W, 3), (40 + 5 * f) % 256, np.uint8)
            img[:, : (f * 3) % W] = (10 * i) % 256
            vw.write(img)
        vw.release()
    return {"K": K, "R": R, "t": t, "dist": dist, "joints3d": truth, "root": raw, "sequence": seq}
