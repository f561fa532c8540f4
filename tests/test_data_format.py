"""Tests of the common multiview sample format (mvbook.data.format)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mvbook.data import (
    SAMPLE_KEYS,
    DatasetFormatError,
    DatasetWriter,
    MultiviewDataset,
    collate_samples,
    project_points_np,
    resize_intrinsics,
    verify_dataset,
    write_dataset,
)
from mvbook.data.fixtures import look_at_rig, synthetic_samples

N, C, P, J, W, H = 6, 3, 2, 5, 64, 48


def _kwargs(**kw):
    base = dict(
        skeleton="test5",
        dataset="synthetic",
        camera_names=["a", "b", "c"],
        splits={"train": ["S1"], "test": ["S9"]},
    )
    base.update(kw)
    return base


@pytest.fixture()
def dataset_dir(tmp_path):
    samples = list(synthetic_samples(N, C, P, J, (W, H), optional=("masks", "joints3d_valid")))
    root = write_dataset(tmp_path / "ds", samples, **_kwargs())
    return root, samples


def test_sample_keys_spec_is_complete():
    for key in (
        "images",
        "K",
        "R",
        "t",
        "dist",
        "image_size",
        "joints3d",
        "person_valid",
        "joints2d",
        "visibility",
        "bbox",
        "masks",
        "depth",
        "iuv",
        "background",
    ):
        spec = SAMPLE_KEYS[key]
        assert spec.shape and spec.dtype and spec.description
    assert SAMPLE_KEYS["joints2d"].shape == ("C", "P", "J", 2)
    assert SAMPLE_KEYS["t"].units == "mm"
    assert SAMPLE_KEYS["background"].static and not SAMPLE_KEYS["masks"].required


def test_roundtrip_shapes_dtypes_and_values(dataset_dir):
    root, samples = dataset_dir
    m = json.loads((root / "manifest.json").read_text())
    assert (
        m["num_samples"] == N and m["image_size"] == [W, H] and m["camera_names"] == ["a", "b", "c"]
    )
    assert set(m["vocab"]["subject"]) == {"S1", "S9"}
    assert all(len(e["sha256"]) == 64 for e in m["arrays"].values())
    assert not any(p.name.startswith(".") for p in root.parent.iterdir())  # temp folder gone
    ds = MultiviewDataset(root)
    assert len(ds) == N
    for i in (0, 3):
        s = ds[i]
        ref = samples[i]
        assert s["images"].dtype == torch.uint8 and s["images"].shape == (C, 3, H, W)
        assert s["K"].dtype == torch.float32 and s["K"].shape == (C, 3, 3)
        assert s["image_size"].dtype == torch.int64 and s["image_size"].tolist() == [[W, H]] * C
        assert s["joints3d"].shape == (P, J, 3) and s["person_valid"].dtype == torch.bool
        assert s["joints2d"].shape == (C, P, J, 2) and s["visibility"].shape == (C, P, J)
        assert s["bbox"].shape == (C, P, 4) and s["masks"].shape == (C, H, W)
        np.testing.assert_array_equal(s["images"].numpy(), ref["images"])
        np.testing.assert_allclose(s["joints3d"].numpy(), ref["joints3d"], rtol=1e-6)
        assert s["subject"] == ref["subject"] and s["action"] == ref["action"]
        assert s["sequence"] == ref["sequence"] and s["frame"] == ref["frame"]
        assert s["index"] == i and s["skeleton"] == "test5"


def test_split_views_subjects_and_collate(dataset_dir):
    root, samples = dataset_dir
    train = MultiviewDataset(root, split="train")
    test = MultiviewDataset(root, split="test")
    assert len(train) + len(test) == N
    assert {train[i]["subject"] for i in range(len(train))} == {"S1"}
    sub = MultiviewDataset(root, subjects=["S9"], views=["c", 0])
    s = sub[0]
    assert s["images"].shape[0] == 2 and sub.camera_names == ["c", "a"]
    ref = samples[int(s["index"])]
    np.testing.assert_array_equal(s["images"][0].numpy(), ref["images"][2])
    np.testing.assert_array_equal(s["joints2d"][1].numpy(), ref["joints2d"][0])
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["images"].shape == (2, C, 3, H, W)
    assert batch["frame"].dtype == torch.int64 and batch["subject"] == ["S1", "S1"]
    with pytest.raises(ValueError, match="split"):
        MultiviewDataset(root, split="val")
    with pytest.raises(ValueError, match="views"):
        MultiviewDataset(root, views=[7])
    with pytest.raises(ValueError, match="subjects"):
        MultiviewDataset(root, subjects=["S42"])


def test_dataloader_workers_do_not_pickle_memmaps(dataset_dir):
    root, _ = dataset_dir
    ds = MultiviewDataset(root, keys=["joints3d", "K"])
    _ = ds[0]
    import pickle

    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays is None and "images" not in clone[0]
    np.testing.assert_array_equal(clone[1]["joints3d"].numpy(), ds[1]["joints3d"].numpy())


def test_verify_ok_and_detects_corruption(dataset_dir):
    root, _ = dataset_dir
    rep = verify_dataset(root)
    assert rep.ok, str(rep)
    assert rep.reprojection_max_px < 1e-2
    # corrupt joints2d consistently (valid file, wrong values) -> checksum + reprojection fail
    j2 = np.load(root / "joints2d.npy")
    j2[0, 0, 0, 0] += 5.0
    np.save(root / "joints2d.npy", j2)
    rep = verify_dataset(root)
    assert not rep.ok
    assert any("checksum" in p for p in rep.problems)
    assert any("differ from joints2d" in p for p in rep.problems)
    (root / "bbox.npy").unlink()
    rep = verify_dataset(root, checksums=False)
    assert any("missing file" in p for p in rep.problems)
    with pytest.raises(DatasetFormatError):
        verify_dataset(root, raise_on_error=True)


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.unlink(), "missing file"),
    (lambda p: p.write_bytes(b""), "cannot read"),
    (lambda p: np.save(p, np.zeros((2, 3), np.float32)), "the manifest says"),
    (lambda p: p.write_bytes(p.read_bytes()[:-4]), "truncated or extended"),
], ids=["missing", "empty", "other_shape", "truncated"])
def test_check_files_and_verify_name_the_same_layout_problem(dataset_dir, damage, expected):
    # one check of an array file's layout (array_file_problem) for the cheap check of a
    # folder and for mvbook data check
    from mvbook.data.spec import array_file_problem, check_files, read_manifest

    root, _ = dataset_dir
    manifest = read_manifest(root)
    entry = manifest["arrays"]["bbox"]
    assert array_file_problem(root, "bbox", entry) is None
    damage(root / entry["file"])
    problem = array_file_problem(root, "bbox", entry)
    assert expected in problem and "bbox.npy" in problem
    assert check_files(root, manifest) == [problem]
    assert f"{problem}; reconvert the dataset" in verify_dataset(root, checksums=False).problems


def test_verify_uses_distortion(tmp_path):
    samples = list(synthetic_samples(2, C, 1, J, (W, H)))
    for s in samples:  # drop the distortion -> 2D no longer matches
        s["dist"] = np.zeros_like(s["dist"])
    root = write_dataset(tmp_path / "d", samples, **_kwargs())
    rep = verify_dataset(root, tolerance_px=1e-3)
    assert not rep.ok and rep.reprojection_max_px > 1e-3


def test_refuses_overwrite_and_overwrites_when_asked(dataset_dir):
    root, samples = dataset_dir
    with pytest.raises(FileExistsError):
        write_dataset(root, samples, **_kwargs())
    write_dataset(root, samples[:2], **_kwargs(), overwrite=True)
    assert MultiviewDataset(root).manifest["num_samples"] == 2
    assert verify_dataset(root).ok


def test_interrupted_writer_resumes(tmp_path):
    samples = list(synthetic_samples(N, C, P, J, (W, H)))
    root = tmp_path / "r"
    kw = dict(
        num_samples=N, num_views=C, num_persons=P, num_joints=J, image_size=(W, H), **_kwargs()
    )
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(root, **kw) as w:
            for i in range(3):
                w.write(i, samples[i])
            raise RuntimeError("boom")
    assert not root.exists()
    w = DatasetWriter(root, **kw)
    assert w.resumed and w.missing().tolist() == [3, 4, 5]
    with pytest.raises(DatasetFormatError, match="not written"):
        w.close()
    for i in w.missing():
        w.write(int(i), samples[i])
    w.close()
    ds = MultiviewDataset(root)
    np.testing.assert_array_equal(ds[1]["images"].numpy(), samples[1]["images"])
    assert verify_dataset(root).ok
    # a partial folder of another configuration is discarded, not mixed in
    kw2 = dict(kw, num_samples=2)
    w2 = DatasetWriter(tmp_path / "s", **kw2)
    w2.write(0, samples[0])
    w2.abort()
    w3 = DatasetWriter(tmp_path / "s", **dict(kw2, num_joints=J, skeleton="other"))
    assert not w3.resumed and w3.missing().tolist() == [0, 1]


def test_static_background_and_validation(tmp_path):
    samples = list(synthetic_samples(3, C, 1, J, (W, H)))
    bg = np.full((C, 3, H, W), 7, np.uint8)
    root = write_dataset(tmp_path / "b", samples, background=bg, **_kwargs())
    ds = MultiviewDataset(root, views=[2])
    assert ds[0]["background"].shape == (1, 3, H, W) and int(ds[0]["background"].max()) == 7
    bad = dict(samples[0])
    bad["K"] = bad["K"][:2]
    with pytest.raises(ValueError, match="K"):
        write_dataset(tmp_path / "x", [bad, *samples[1:]], **_kwargs())
    nan = dict(samples[0])
    nan["joints3d"] = np.full_like(nan["joints3d"], np.nan)
    with pytest.raises(ValueError, match="NaN"):
        write_dataset(tmp_path / "y", [nan], **_kwargs())
    with pytest.raises(DatasetFormatError, match="no manifest.json"):
        MultiviewDataset(tmp_path / "nothing")


def test_projection_and_resize_conventions():
    K, R, t, d = look_at_rig(2, (64, 48), dist=None)
    X = np.array([[[0.0, 0.0, 900.0]]])
    uv, z = project_points_np(X, K, R, t, d)
    np.testing.assert_allclose(uv[:, 0], [[31.5, 23.5]] * 2, atol=1e-6)  # target -> centre
    # behind the camera -> NaN, never silently projected
    eye = -np.einsum("cji,cj->ci", R, t)
    behind = (2 * eye[0] - np.array([0, 0, 900.0]))[None, None]
    uv_b, _ = project_points_np(behind, K[:1], R[:1], t[:1])
    assert np.isnan(uv_b).all()
    # resizing an image by s maps pixel centres u -> (u + 0.5) s - 0.5
    K2 = resize_intrinsics(K[0], (64, 48), (32, 24))
    uv1, _ = project_points_np(X + np.array([100.0, 50.0, 0]), K[:1], R[:1], t[:1])
    uv2, _ = project_points_np(X + np.array([100.0, 50.0, 0]), K2[None], R[:1], t[:1])
    np.testing.assert_allclose(uv2, (uv1 + 0.5) * 0.5 - 0.5, atol=1e-9)


def test_matches_geometry_camera_when_available():
    geometry = pytest.importorskip("mvbook.geometry")
    if not hasattr(geometry, "Camera"):
        pytest.skip("mvbook.geometry.Camera not available yet")
    K, R, t, d = look_at_rig(3, (64, 48))
    X = np.random.default_rng(0).normal(0, 300, (7, 3)) + np.array([0, 0, 900.0])
    uv, _ = project_points_np(X[None], K, R, t, d)
    cam = geometry.Camera(
        K=torch.tensor(K),
        R=torch.tensor(R),
        t=torch.tensor(t),
        dist=torch.tensor(d),
        image_size=torch.tensor([[64, 48]] * 3),
    )
    uv_t = cam.project(torch.tensor(X)[None])
    np.testing.assert_allclose(uv_t.numpy(), uv, atol=1e-6)


def test_resize_matches_geometry_camera_when_available():
    geometry = pytest.importorskip("mvbook.geometry")
    if not hasattr(geometry, "Camera"):
        pytest.skip("mvbook.geometry.Camera not available yet")
    K, R, t, d = look_at_rig(2, (64, 48))
    cam = geometry.Camera(
        K=torch.tensor(K),
        R=torch.tensor(R),
        t=torch.tensor(t),
        dist=torch.tensor(d),
        image_size=torch.tensor([[64, 48]] * 2),
    )
    np.testing.assert_allclose(
        cam.resize((40, 30)).K.numpy(), resize_intrinsics(K, (64, 48), (40, 30)), atol=1e-9
    )


def test_sample_cameras_project_to_joints2d(dataset_dir):
    geometry = pytest.importorskip("mvbook.geometry")
    if not hasattr(geometry, "Camera"):
        pytest.skip("mvbook.geometry.Camera not available yet")
    from mvbook.data import sample_cameras

    root, _ = dataset_dir
    s = MultiviewDataset(root)[0]
    cams = sample_cameras(s)
    uv = cams.project(s["joints3d"].double().reshape(1, P * J, 3)).reshape(C, P, J, 2)
    valid = s["person_valid"][None, :, None].expand(C, P, J)
    err = (uv.float() - s["joints2d"]).norm(dim=-1)[valid]
    assert float(err.max()) < 1e-2
