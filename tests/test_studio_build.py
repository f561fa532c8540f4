"""Building and opening the studio datasets (smoke profile, temporary cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvbook.data.spec import SAMPLE_KEYS
from mvbook.data.verify import verify_dataset
from mvbook.studio import build_studio, open_data, profile_config


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cache = tmp_path_factory.mktemp("studio_cache")
    return cache, build_studio("smoke", "single", 0, cache, progress=False)


def test_smoke_build_is_a_valid_dataset_with_both_splits(smoke):
    cache, root = smoke
    rep = verify_dataset(root)
    assert rep.ok, str(rep)
    train = open_data("studio", "smoke", "train", cache_dir=cache, progress=False)
    test = open_data("studio", "smoke", "test", cache_dir=cache, progress=False)
    assert len(train) > 0 and len(test) > 0
    assert {train[i]["subject"] for i in range(len(train))} <= {"S1", "S5", "S6", "S7", "S8"}
    assert {test[i]["subject"] for i in range(len(test))} <= {"S9", "S11"}
    s = train[0]
    for key, spec in SAMPLE_KEYS.items():
        if spec.required or key in ("masks", "iuv", "background"):
            assert key in s, key
            assert str(s[key].dtype).endswith(spec.dtype.replace("bool", "bool")), key
    assert s["images"].dtype == torch.uint8 and s["joints3d"].shape == (1, 17, 3)
    assert s["skeleton"] == "h36m17"
    # the cache answers the second call without building
    assert build_studio("smoke", "single", 0, cache, progress=False) == root


def test_same_seed_same_arrays_and_other_seed_differs(smoke, tmp_path):
    cache, root = smoke
    again = build_studio("smoke", "single", 0, tmp_path, progress=False)
    assert again != root
    for key in ("images", "joints3d", "masks", "iuv", "visibility", "bbox", "background"):
        a = np.load(root / f"{key}.npy")
        b = np.load(again / f"{key}.npy")
        assert np.array_equal(a, b), key
    cfg0 = profile_config("smoke", seed=0, actions=("walk",), frames=(1, 1))
    cfg1 = profile_config("smoke", seed=1, actions=("walk",), frames=(1, 1))
    assert cfg0.digest() != cfg1.digest()
    other = build_studio("smoke", "single", 1, tmp_path, progress=False, actions=("walk",),
                         frames=(1, 1))
    assert not np.array_equal(np.load(other / "joints3d.npy"),
                              np.load(root / "joints3d.npy")[: len(np.load(other / "joints3d.npy"))])


def test_frame_batching_gives_the_same_arrays(smoke, tmp_path, monkeypatch):
    from mvbook.studio import build as build_module

    cache, root = smoke
    monkeypatch.setattr(build_module, "_RAYS_PER_BATCH", 48 * 48 * 4)  # one frame at a time
    again = build_studio("smoke", "single", 0, tmp_path, progress=False)
    for key in ("images", "masks", "iuv", "depth", "joints2d", "visibility", "bbox"):
        assert np.array_equal(np.load(root / f"{key}.npy"), np.load(again / f"{key}.npy")), key


def test_multi_person_build(tmp_path):
    root = build_studio("smoke", "multi", 0, tmp_path, progress=False)
    ds = open_data(root, split=None)
    s = ds[0]
    assert s["joints3d"].shape == (5, 17, 3) and s["images"].shape[0] == 5
    pv = s["person_valid"]
    assert bool(pv[0])
    ids = set(np.unique(s["masks"].numpy()).tolist())
    assert ids <= set(range(int(pv.sum()) + 1))
    assert not bool(s["visibility"][:, ~pv].any())
    assert len(open_data(root, split="train")) > 0 and len(open_data(root, split="test")) > 0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"image_size": (0, 5)}, "image_size"),
        ({"fps": -1.0}, "fps"),
        ({"actions": ("moonwalk",)}, "actions"),
        ({"store": ("normals",)}, "store"),
        ({"supersample": 0}, "supersample"),
        ({"frames": (0, 0)}, "frames"),
        ({"persons": (3, 1)}, "persons"),
        ({"noise": -2.0}, "noise"),
        ({"colour": "red"}, "unknown"),
    ],
)
def test_bad_configuration_values_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        profile_config("smoke", "single", 0, **kw)


def test_bad_entry_point_arguments(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        build_studio("fast", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="scene"):
        build_studio("smoke", "crowd", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest"):
        open_data(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="only apply"):
        open_data(tmp_path, image_size=(32, 32))


def test_cli_builds(tmp_path, capsys):
    from mvbook.cli import main

    assert main(["studio", "build", "--profile", "smoke", "--cache-dir", str(tmp_path),
                 "--quiet"]) == 0
    assert "single" in capsys.readouterr().out
    assert main(["studio", "info", "--profile", "smoke", "--cache-dir", str(tmp_path)]) == 0
    assert "built" in capsys.readouterr().out
