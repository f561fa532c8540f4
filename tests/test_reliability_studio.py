"""Fault injection on the studio cache: edited manifests, flipped bytes, a build killed and its
partial arrays truncated, cache folders that are files, unusable devices (smoke sizes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mvbook.data.spec import partial_dir
from mvbook.studio import build as build_module
from mvbook.studio import build_studio, open_data

TINY = dict(actions=("walk",), frames=(2, 2))  # one short sequence: a build of about a second
KEYS = ("images", "joints3d", "joints2d", "masks", "background")


def _build(cache, **kw):
    return build_studio("smoke", "single", 0, cache, progress=False, **TINY, **kw)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = _build(tmp_path_factory.mktemp("pristine"))
    return {k: np.load(root / f"{k}.npy") for k in KEYS}


@pytest.fixture()
def cached(tmp_path, pristine):
    return tmp_path, _build(tmp_path)


def _same_as(root, pristine):
    for k in KEYS:
        np.testing.assert_array_equal(np.load(root / f"{k}.npy"), pristine[k], err_msg=k)


def test_flipped_bytes_in_a_cached_array_rebuild_it(cached, pristine):
    cache, root = cached
    path = root / "joints3d.npy"
    b = bytearray(path.read_bytes())
    b[-7] ^= 0x5A
    path.write_bytes(bytes(b))
    with pytest.warns(UserWarning, match=r"damaged \(checksum mismatch.*joints3d"):
        assert _build(cache) == root
    _same_as(root, pristine)
    ds = open_data("studio", "smoke", None, cache_dir=cache, progress=False, **TINY)
    np.testing.assert_array_equal(ds[0]["joints3d"].numpy(), pristine["joints3d"][0])


def test_edited_manifest_rebuilds(cached, pristine):
    cache, root = cached
    m = json.loads((root / "manifest.json").read_text())
    m["num_samples"] += 3
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.warns(UserWarning, match="damaged.*num_samples"):
        _build(cache)
    assert json.loads((root / "manifest.json").read_text())["num_samples"] == len(
        pristine["joints3d"])
    _same_as(root, pristine)


def test_invalid_manifest_or_truncated_array_rebuilds(cached, pristine):
    cache, root = cached
    (root / "manifest.json").write_text("{")
    with pytest.warns(UserWarning, match="not valid JSON"):
        _build(cache)
    path = root / "images.npy"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.warns(UserWarning, match="images.npy.*truncated"):
        _build(cache)
    _same_as(root, pristine)


def test_full_verification_catches_a_change_with_the_same_mtime(cached, pristine):
    import os

    cache, root = cached
    path = root / "images.npy"
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size - 5)
        f.write(b"\x01\x02\x03")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _build(cache) == root  # the cheap check cannot see it
    with pytest.warns(UserWarning, match="checksum mismatch"):
        build_studio("smoke", "single", 0, cache, progress=False, verify=True, **TINY)
    _same_as(root, pristine)


def test_killed_build_with_a_truncated_partial_array_resumes_correctly(tmp_path, pristine,
                                                                       monkeypatch):
    # interrupt the build after the first frames are written, as a kill would
    from mvbook.data import format as fmt

    real_write = fmt.DatasetWriter.write
    calls = {"n": 0}

    def write(self, index, sample):
        calls["n"] += 1
        if calls["n"] > len(pristine["joints3d"]) - 2:
            raise KeyboardInterrupt
        real_write(self, index, sample)

    monkeypatch.setattr(fmt.DatasetWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path)
    monkeypatch.undo()
    root = build_module.dataset_path(
        build_module.profile_config("smoke", "single", 0, **TINY), "smoke", tmp_path)
    path = partial_dir(root) / "images.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="written again"):
        assert _build(tmp_path) == root
    _same_as(root, pristine)  # no black images


def test_rebuild_refuses_a_cache_folder_holding_user_files(cached):
    cache, root = cached
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        _build(cache, rebuild=True)
    assert (root / "notes.txt").exists()


def test_studio_cli_errors_are_one_line(tmp_path, capsys):
    from mvbook.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["studio", "build", "--profile", "smoke", "--cache-dir", str(afile),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "is a file" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["studio", "build", "--profile", "smoke", "--device", "gpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'gpu' is not a device" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        assert main(["studio", "build", "--profile", "smoke", "--cache-dir", str(tmp_path),
                     "--rebuild", "--device", "cuda", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    shutil.rmtree(tmp_path / "studio", ignore_errors=True)
