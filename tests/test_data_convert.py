"""End-to-end conversion of fixture files written in each dataset's real on-disk layout."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mvbook.data import MultiviewDataset, h36m, mpi_inf_3dhp, panoptic, shelf_campus, verify_dataset
from mvbook.data.cli import check_raw
from mvbook.data.cli import main as data_main
from mvbook.data.common import MissingRawDataError, axis_rotation_to_z_up, decompose_projection


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_common(root: Path, views: int, joints: int, size: tuple[int, int]) -> MultiviewDataset:
    rep = verify_dataset(root, tolerance_px=0.01)
    assert rep.ok, str(rep)
    ds = MultiviewDataset(root)
    s = ds[0]
    W, H = size
    assert s["images"].shape == (views, 3, H, W)
    assert s["joints3d"].shape[-2:] == (joints, 3)
    assert s["image_size"].tolist() == [[W, H]] * views
    assert s["dist"].shape == (views, 5)
    # bboxes contain the visible joints
    vis = s["visibility"]
    j2 = s["joints2d"]
    box = s["bbox"]
    inside = (j2[..., 0] >= box[..., None, 0] - 1e-3) & (j2[..., 0] <= box[..., None, 2] + 1e-3)
    assert bool(inside[vis].all())
    return ds


def test_panoptic_end_to_end(tmp_path):
    raw = tmp_path / "raw"
    fx = panoptic.write_fixture(raw, num_frames=12)
    before = _tree_digest(raw)
    out = panoptic.convert(raw, tmp_path / "pan", sequences=["160906_pizza1"], cameras=(3, 6, 12),
                           interval=1, image_size=(48, 27), progress=False)  # fmt: skip
    assert _tree_digest(raw) == before  # raw files untouched (tar read in place)
    ds = _check_common(out, 3, 19, (48, 27))
    m = ds.manifest
    assert m["skeleton"] == "panoptic19" and m["camera_names"] == ["00_03", "00_06", "00_12"]
    assert m["num_persons"] == 2 and m["joint_names"][2] == "body_center"
    frames = [ds[i]["frame"] for i in range(len(ds))]
    assert 7 not in frames and len(frames) == 11  # frame 7 has no body with a confident centre
    for i in range(len(ds)):
        s = ds[i]
        truth = fx["joints3d"][s["frame"]]
        n = len(truth)
        assert s["person_valid"].tolist() == [True] * n + [False] * (2 - n)
        np.testing.assert_allclose(s["joints3d"][:n].numpy(), truth, atol=1e-2)  # cm -> mm, z up
        if s["frame"] % 5 == 4:
            assert not bool(s["joints3d_valid"][0, 16]) and not bool(
                s["visibility"][:, 0, 16].any()
            )
        # frame f of each video is the one decoded for sample f (gray level 40 + 5 f)
        img = s["images"][1].float()
        expected = (40 + 5 * s["frame"]) % 256
        right = img[:, :, int(img.shape[-1] * 0.9) :]
        assert abs(float(right.mean()) - expected) < 6
    assert ds[0]["subject"] == "160906_pizza1" and ds[0]["action"] == "pizza"
    assert len(MultiviewDataset(out, split="test")) == len(ds)
    # the camera-world axes: cameras are above the floor (z up) and look roughly horizontally
    centres = -np.einsum("cji,cj->ci", ds[0]["R"].double().numpy(), ds[0]["t"].double().numpy())
    assert (centres[:, 2] > 1000).all()


def test_panoptic_default_interval_and_15_joints(tmp_path):
    raw = tmp_path / "raw"
    panoptic.write_fixture(raw, num_frames=30, cameras=(3, 6, 12))
    out = panoptic.convert(raw, tmp_path / "p15", sequences=["160906_pizza1"], cameras=(3, 6, 12),
                           image_size=(32, 18), num_joints=15, progress=False)  # fmt: skip
    ds = MultiviewDataset(out)
    assert [ds[i]["frame"] for i in range(len(ds))] == [0, 12, 24]  # test sequences: every 12th
    assert ds.skeleton == "panoptic15" and ds[0]["joints3d"].shape[1] == 15


def test_interrupted_conversion_resumes(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    panoptic.write_fixture(raw, num_frames=10)
    kw = dict(sequences=["160906_pizza1"], cameras=(3, 6, 12), interval=1, image_size=(48, 27),
              progress=False)  # fmt: skip
    ref = panoptic.convert(raw, tmp_path / "ref", **kw)
    from mvbook.data import common

    calls = {"n": 0}
    orig = common.ImageLoader.load

    def flaky(self, src):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return orig(self, src)

    monkeypatch.setattr(common.ImageLoader, "load", flaky)
    with pytest.raises(KeyboardInterrupt):
        panoptic.convert(raw, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()
    assert (tmp_path / ".out.partial").exists()
    rep = verify_dataset(tmp_path / "out")
    assert not rep.ok and "interrupted conversion" in rep.problems[0]
    monkeypatch.setattr(common.ImageLoader, "load", orig)
    out = panoptic.convert(raw, tmp_path / "out", **kw)
    assert not (tmp_path / ".out.partial").exists()
    a, b = MultiviewDataset(ref), MultiviewDataset(out)
    assert len(a) == len(b)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i]["images"].numpy(), b[i]["images"].numpy())
        np.testing.assert_array_equal(a[i]["joints2d"].numpy(), b[i]["joints2d"].numpy())
    with pytest.raises(FileExistsError):
        panoptic.convert(raw, tmp_path / "out", **kw)


@pytest.mark.parametrize("name", ["shelf", "campus"])
@pytest.mark.parametrize("calibration", ["projection", "json"])
def test_shelf_campus_end_to_end(tmp_path, name, calibration):
    raw = tmp_path / "raw"
    fx = shelf_campus.write_fixture(name, raw, calibration=calibration)
    before = _tree_digest(raw)
    out = shelf_campus.convert(name, raw, tmp_path / name, progress=False)
    assert _tree_digest(raw) == before
    C = shelf_campus.DATASETS[name]["num_cameras"]
    ds = _check_common(out, C, 14, shelf_campus.DATASETS[name]["default_size"])
    first = shelf_campus.DATASETS[name]["eval_frames"][0]
    assert [ds[i]["frame"] for i in range(len(ds))] == list(range(first, first + 4))
    assert ds.skeleton == "shelf14" and ds.manifest["num_persons"] == 2
    prov = ds.manifest["provenance"]
    assert prov["actor2D_reprojection_median_px"] < 1e-3  # cameras explain the dataset's own 2D
    for i in range(len(ds)):
        s = ds[i]
        valid = s["person_valid"].numpy()
        truth = fx["joints3d"][:, s["frame"]]
        assert (valid == np.isfinite(truth).all((-1, -2))).all()  # actor slots kept
        np.testing.assert_allclose(s["joints3d"].numpy()[valid], truth[valid], atol=1e-2)  # m -> mm
        assert (s["joints3d"].numpy()[~valid] == 0).all()
    assert len(MultiviewDataset(out, split="test")) == len(ds)
    if calibration == "json":
        assert np.abs(ds[0]["dist"].numpy()).sum() > 0


def test_shelf_projection_units_detected(tmp_path):
    raw = tmp_path / "raw"
    fx = shelf_campus.write_fixture("campus", raw, projection_units="mm")
    out = shelf_campus.convert("campus", raw, tmp_path / "c", progress=False)
    ds = MultiviewDataset(out)
    assert ds.manifest["provenance"]["projection_units"] == "mm"
    assert verify_dataset(out).ok
    s = ds[0]
    valid = s["person_valid"].numpy()
    np.testing.assert_allclose(
        s["joints2d"].numpy()[:, valid],
        np.stack([np.stack(fx_uv) for fx_uv in _fixture_uv(fx, s["frame"], valid)]),
        atol=1e-2,
    )


def _fixture_uv(fx, frame, valid):
    from mvbook.data.format import project_points_np

    X = fx["joints3d"][valid, frame]  # (A, 14, 3) z-up truth
    uv, _ = project_points_np(X.reshape(1, -1, 3), fx["K"], fx["R"], fx["t"], fx["dist"])
    C = fx["K"].shape[0]
    scale = np.array([360 / 72, 288 / 56])  # default campus size vs fixture size
    uv = (uv + 0.5) * scale - 0.5
    return [list(uv.reshape(C, -1, 14, 2)[c]) for c in range(C)]


def test_shelf_all_frames_and_raw_check(tmp_path):
    raw = tmp_path / "raw"
    shelf_campus.write_fixture("campus", raw, num_frames=352, calibration="json", all_images=True)
    out = shelf_campus.convert("campus", raw / "CampusSeq1", tmp_path / "c", frames="all",
                               image_size=(36, 28), progress=False)  # fmt: skip
    ds = MultiviewDataset(out, split="train")
    assert len(ds) == 350 and len(MultiviewDataset(out, split="test")) == 2
    # the fixture stops at frame 351: the raw check reports the missing evaluation frames
    problems = check_raw("campus", raw)
    assert any("missing evaluation frame" in p and "00352.png" in p for p in problems)
    (raw / "CampusSeq1" / "actorsGT.mat").rename(raw / "gone.mat")
    problems = check_raw("campus", raw)
    assert any("actorsGT.mat" in p for p in problems) and any(
        "mvbook data fetch campus" in p for p in problems
    )


def test_projection_matrix_decomposition():
    rng = np.random.default_rng(1)
    from mvbook.data.fixtures import look_at_rig

    K, R, t, _ = look_at_rig(3, (100, 80), dist=None)
    for c in range(3):
        P = 0.37 * K[c] @ np.concatenate([R[c], t[c][:, None]], 1) * (-1 if c == 1 else 1)
        K2, R2, t2 = decompose_projection(P)
        np.testing.assert_allclose(K2, K[c], atol=1e-8)
        np.testing.assert_allclose(R2, R[c], atol=1e-10)
        np.testing.assert_allclose(t2, t[c], atol=1e-6)
    for up in ([0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]):
        A = axis_rotation_to_z_up(np.array(up, float) + rng.normal(0, 0.1, 3))
        np.testing.assert_allclose(A @ np.array(up, float), [0, 0, 1])
        assert np.isclose(np.linalg.det(A), 1.0)


@pytest.mark.parametrize("layout", ["subject", "intrinsics"])
def test_h36m_end_to_end(tmp_path, layout):
    raw = tmp_path / "raw"
    fx = h36m.write_fixture(raw, layout=layout)
    before = _tree_digest(raw)
    out = h36m.convert(raw, tmp_path / "h", subjects=["S1", "S9"], train_step=5, test_step=4,
                       image_size=(25, 26), progress=False)  # fmt: skip
    assert _tree_digest(raw) == before
    ds = _check_common(out, 4, 17, (25, 26))
    assert ds.skeleton == "h36m17" and ds.manifest["camera_names"] == list(h36m.CAMERAS)
    train, test = MultiviewDataset(out, split="train"), MultiviewDataset(out, split="test")
    assert [train[i]["frame"] for i in range(len(train))] == [0, 5, 10] * 2
    assert [test[i]["frame"] for i in range(len(test))] == [0, 4, 8] * 2
    assert {train[i]["subject"] for i in range(len(train))} == {"S1"}
    assert {train[i]["action"] for i in range(len(train))} == {"Directions", "Photo"}
    s = test[1]
    stem = s["sequence"].split("/", 1)[1]
    truth = fx["joints3d"][("S9", stem)][s["frame"], list(h36m.H36M32_TO_17)]
    np.testing.assert_allclose(s["joints3d"][0].numpy(), truth, atol=1e-2)
    assert np.abs(s["dist"].numpy()[:, 0] + 0.2).max() < 1e-6  # k1 kept


def test_h36m_missing_data_messages(tmp_path):
    raw = tmp_path / "raw"
    h36m.write_fixture(raw, subjects=("S1",), stems=("Walking 1",), num_frames=3)
    with pytest.raises(MissingRawDataError, match="vision.imar.ro"):
        h36m.convert(raw, tmp_path / "h", subjects=["S1", "S5"], progress=False)
    (raw / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.npz").unlink()
    try:
        import cdflib  # noqa: F401
    except ImportError:
        with pytest.raises(MissingRawDataError, match="cdflib"):
            h36m.read_poses(raw / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf")
    problems = check_raw("h36m", raw, subjects=["S1", "S5"])
    assert any("S5" in p for p in problems)
    # a broken video of one camera: the sequence is skipped and listed in the manifest
    h36m.write_fixture(raw, subjects=("S1",), stems=("Eating",), num_frames=6)
    (raw / "S1" / "Videos" / "Eating.60457274.mp4").unlink()
    (raw / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf").unlink()
    (raw / "S1" / "MyPoseFeatures" / "D3_Positions" / "Eating.cdf").unlink()
    h36m.write_fixture(raw / "other", subjects=("S1",), stems=("Sitting",), num_frames=6)
    for p in (raw / "other" / "S1").rglob("*"):
        if p.is_file():
            dst = raw / "S1" / p.relative_to(raw / "other" / "S1")
            p.replace(dst)
    out = h36m.convert(raw, tmp_path / "h2", subjects=["S1"], camera_file=raw / "other" / "cameras.json",
                       image_size=(25, 26), progress=False)  # fmt: skip
    prov = MultiviewDataset(out).manifest["provenance"]
    assert any(s.startswith("S1/Eating") for s in prov["skipped_sequences"])


NO_H5PY = importlib.util.find_spec("h5py") is None


@pytest.mark.parametrize(
    "mat_version",
    ["5", pytest.param("7.3", marks=pytest.mark.skipif(NO_H5PY, reason="needs h5py"))],
)
def test_mpi_inf_3dhp_end_to_end(tmp_path, mat_version):
    raw = tmp_path / "raw"
    fx = mpi_inf_3dhp.write_fixture(raw, mat_version=mat_version)
    if mat_version == "7.3":  # an HDF5 file that scipy refuses: read with h5py instead
        import scipy.io

        with pytest.raises(NotImplementedError):
            scipy.io.loadmat(str(raw / "S1" / "Seq1" / "annot.mat"))
    before = _tree_digest(raw)
    out = mpi_inf_3dhp.convert(raw, tmp_path / "m", subjects=["S1", "S8"], sequences=["Seq1"],
                               cameras=(0, 1, 2), step=3, image_size=(32, 32), progress=False)  # fmt: skip
    assert _tree_digest(raw) == before
    ds = _check_common(out, 3, 17, (32, 32))
    assert (
        len(MultiviewDataset(out, split="test")) == 4
        and len(MultiviewDataset(out, split="train")) == 4
    )
    for i in (0, 5):
        s = ds[i]
        truth = fx["joints3d"][(s["subject"], "Seq1")][
            s["frame"], list(mpi_inf_3dhp.MPI28_TO_H36M17)
        ]
        np.testing.assert_allclose(s["joints3d"][0].numpy(), truth, atol=1e-2)  # y-up raw -> z up
    assert ds[0]["joints3d"][0, 10, 2] > ds[0]["joints3d"][0, 3, 2]  # head above ankle


def test_mpi_inf_3dhp_v73_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "annot.mat"  # the MATLAB v7.3 header is enough for scipy to refuse it
    path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py fails
    with pytest.raises(MissingRawDataError, match=r"v7\.3.*pip install 'mvbook\[data\]'"):
        mpi_inf_3dhp.load_annot3(path)


def test_cli_convert_and_check(tmp_path, capsys):
    raw = tmp_path / "raw"
    shelf_campus.write_fixture("shelf", raw, calibration="json")
    out = tmp_path / "shelf"
    assert data_main(["data", "convert", "shelf", "--raw", str(raw), "--out", str(out),
                      "--image-size", "52x39", "--quiet"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "OK" in text and "data = " in text
    assert data_main(["data", "check", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    # corrupt a file: check names it
    arr = np.load(out / "joints3d.npy")
    arr[0, 0, 0, 0] += 50.0
    np.save(out / "joints3d.npy", arr)
    assert data_main(["data", "check", str(out)]) == 1
    text = capsys.readouterr().out
    assert "checksum mismatch" in text and "joints3d.npy" in text
    # an empty folder: says how to get data
    assert data_main(["data", "check", str(tmp_path / "nothing")]) == 1
    assert "mvbook data fetch" in capsys.readouterr().out
    # a raw folder: what is missing and how to get it
    assert data_main(["data", "check", str(tmp_path / "nothing"), "--dataset", "h36m"]) == 1
    assert data_main(["data", "check", str(raw), "--dataset", "shelf"]) == 1  # frames 304..600
    assert "missing evaluation frame" in capsys.readouterr().out
    assert data_main(["data", "fetch", "h36m", "--raw", str(tmp_path)]) == 2
    assert "vision.imar.ro" in capsys.readouterr().out


def test_data_scripts_entry_points(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for name in ("panoptic", "shelf", "campus", "h36m", "mpi_inf_3dhp"):
        script = root / "data_scripts" / f"{name}.py"
        assert script.exists()
        text = script.read_text()
        assert "Licence" in text or "licence" in text
        assert "Disk" in text
    res = subprocess.run([sys.executable, str(root / "data_scripts" / "campus.py"), "check",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1 and "actorsGT.mat" in res.stdout
