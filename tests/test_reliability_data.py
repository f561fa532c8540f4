"""Fault injection on the dataset writer and reader: foreign folders under --overwrite,
truncated, flipped, deleted and concurrently written partial arrays, damaged manifests and
arrays under `mvbook data check`, damaged raw files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mvbook.cli import main as mvbook_main
from mvbook.data import (
    DatasetFormatError,
    DatasetWriter,
    MultiviewDataset,
    shelf_campus,
    verify_dataset,
)
from mvbook.data.common import MissingRawDataError
from mvbook.data.fixtures import synthetic_samples
from mvbook.data.format import write_dataset
from mvbook.data.spec import partial_dir

N, C, P, J, W, H = 6, 3, 2, 5, 64, 48
KW = dict(skeleton="test5", dataset="synthetic", camera_names=["a", "b", "c"],
          splits={"train": ["S1"], "test": ["S9"]})


def _samples():
    return list(synthetic_samples(N, C, P, J, (W, H), optional=("masks",)))


def _writer(root, **kw):
    return DatasetWriter(root, num_samples=N, num_views=C, num_persons=P, num_joints=J,
                         image_size=(W, H), optional_keys=("masks",), **KW, **kw)


def _assert_equal_samples(root, samples):
    ds = MultiviewDataset(root)
    for i, ref in enumerate(samples):
        s = ds[i]
        np.testing.assert_array_equal(s["images"].numpy(), ref["images"])
        np.testing.assert_array_equal(s["masks"].numpy(), ref["masks"])
        np.testing.assert_allclose(s["joints3d"].numpy(), ref["joints3d"], rtol=1e-6)


def _resume_and_finish(root, samples):
    """Reopen the writer of a run stopped after 4 samples, write the missing 4 and 5, close it
    and compare the dataset with ``samples``; the writer is returned."""
    w = _writer(root)
    assert w.resumed and w.missing().tolist() == [4, 5]
    for i in w.missing():
        w.write(int(i), samples[i])
    w.close()
    _assert_equal_samples(root, samples)
    return w


@pytest.fixture()
def dataset(tmp_path):
    samples = _samples()
    return write_dataset(tmp_path / "ds", samples, **KW), samples


# -- never delete what is not ours ----------------------------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    out = tmp_path / "u"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match="notes.txt"):
        write_dataset(out, _samples(), overwrite=True, **KW)
    assert (out / "notes.txt").read_text() == "my notes"
    assert not partial_dir(out).exists()


def test_overwrite_refuses_a_dataset_folder_holding_other_files(dataset):
    root, samples = dataset
    (root / "results.csv").write_text("mine")
    with pytest.raises(FileExistsError, match="results.csv"):
        write_dataset(root, samples, overwrite=True, **KW)
    assert (root / "results.csv").exists()


def test_overwrite_replaces_a_dataset_and_an_empty_folder(dataset, tmp_path):
    root, samples = dataset
    write_dataset(root, samples[::-1], overwrite=True, **KW)
    _assert_equal_samples(root, samples[::-1])
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, samples, **KW)
    _assert_equal_samples(empty, samples)


def test_output_that_is_a_file_or_under_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FileExistsError, match="is an existing file"):
        write_dataset(afile, _samples(), **KW)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        write_dataset(afile / "sub", _samples(), **KW)
    assert afile.read_text() == "x"


@pytest.fixture(scope="module")
def shelf_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("shelf") / "raw"
    shelf_campus.write_fixture("shelf", raw, calibration="json")
    return raw


def _convert(raw, out, *extra):
    return mvbook_main(["data", "convert", "shelf", "--raw", str(raw), "--out", str(out),
                      "--image-size", "52x39", "--quiet", *extra])


def test_cli_convert_overwrite_keeps_a_foreign_folder(shelf_raw, tmp_path, capsys):
    out = tmp_path / "u"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert _convert(shelf_raw, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_cli_convert_messages(shelf_raw, tmp_path, capsys):
    out = tmp_path / "shelf"
    assert _convert(shelf_raw, out) == 0
    capsys.readouterr()
    assert _convert(shelf_raw, out) == 2  # exists, no --overwrite
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "overwrite=True" not in err
    assert _convert(shelf_raw, out, "--overwrite") == 0  # a dataset: replaced
    capsys.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "sub"):
        assert _convert(shelf_raw, target) == 2
        err = capsys.readouterr().err
        assert "afile" in err and len(err.strip().splitlines()) == 1
    assert afile.read_text() == "x"


def test_truncated_or_missing_actors_file_is_named(shelf_raw, tmp_path, capsys):
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(shelf_raw, raw)
    mat = next(raw.rglob("actorsGT.mat"))
    mat.write_bytes(mat.read_bytes()[: mat.stat().st_size // 3])
    with pytest.raises(MissingRawDataError, match="actorsGT.mat.*damaged or truncated.*fetch"):
        shelf_campus.load_actors(mat, "shelf")
    assert _convert(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "actorsGT.mat" in err and "Traceback" not in err
    mat.unlink()
    with pytest.raises(MissingRawDataError, match="mvbook data fetch shelf"):
        shelf_campus.load_actors(mat, "shelf")
    js = next(raw.rglob("calibration_shelf.json"))
    js.unlink()
    with pytest.raises(MissingRawDataError, match="calibration_shelf.json.*voxelpose.*fetch"):
        shelf_campus.load_cameras("shelf", js.parent, calibration="json")


# -- resumed writes verify what is on disk --------------------------------------------------


def _partial_run(root, samples, upto):
    w = _writer(root)
    for i in range(upto):
        w.write(i, samples[i])
    w.abort()
    return partial_dir(root)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "truncate_flags"])
def test_resume_rewrites_damaged_partial_rows(tmp_path, damage):
    samples = _samples()
    root = tmp_path / "ds"
    tmp = _partial_run(root, samples, 5)
    path = tmp / ("_written.npy" if damage == "truncate_flags" else "images.npy")
    data = path.read_bytes()
    if damage in ("truncate", "truncate_flags"):
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        b = bytearray(data)
        b[len(b) // 3] ^= 0xFF
        path.write_bytes(bytes(b))
    else:
        path.unlink()
    with pytest.warns(UserWarning, match="resuming"):
        w = _writer(root)
    assert w.resumed and w.repaired
    todo = w.missing()
    assert len(todo) > 1  # more than the never-written sample 5
    for i in todo:
        w.write(int(i), samples[i])
    w.close()
    _assert_equal_samples(root, samples)  # no zero-filled (black) images
    assert verify_dataset(root).ok


def test_resume_of_an_intact_partial_keeps_its_rows(tmp_path):
    samples = _samples()
    root = tmp_path / "ds"
    _partial_run(root, samples, 4)
    w = _resume_and_finish(root, samples)
    assert not w.repaired


def test_resume_rechecks_a_damaged_static_array(tmp_path):
    samples = _samples()
    root = tmp_path / "ds"
    kw = dict(num_samples=N, num_views=C, num_persons=P, num_joints=J, image_size=(W, H),
              optional_keys=("background",), **KW)
    bg = np.full((C, 3, H, W), 7, np.uint8)
    w = DatasetWriter(root, **kw)
    w.set_static("background", bg)
    for i in range(N):
        w.write(i, samples[i])
    w.abort()
    path = partial_dir(root) / "background.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="background"):
        w = DatasetWriter(root, **kw)
    with pytest.raises(DatasetFormatError, match="never set"):
        w.close()
    w.set_static("background", bg)
    w.close()
    assert (np.load(root / "background.npy") == 7).all()


def test_killed_writer_resumes_to_the_same_dataset(tmp_path):
    samples = _samples()
    root = tmp_path / "ds"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reliability_data import _samples, _writer
        from pathlib import Path
        samples = _samples()
        w = _writer(Path({str(root)!r}))
        for i in range(4):
            w.write(i, samples[i])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert res.returncode == -9, res.stderr.decode()
    _resume_and_finish(root, samples)


def test_a_second_concurrent_writer_is_refused(tmp_path):
    samples = _samples()
    root = tmp_path / "ds"
    w = _writer(root)
    w.write(0, samples[0])
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reliability_data import _writer
        from pathlib import Path
        try:
            _writer(Path({str(root)!r}))
        except BlockingIOError as err:
            print("refused:", err)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert "refused: another process is writing" in res.stdout, res.stderr
    for i in range(1, N):
        w.write(i, samples[i])
    w.close()
    _assert_equal_samples(root, samples)
    w2 = _writer(root, overwrite=True)  # the lock is released after close
    w2.abort()


# -- opening checks manifest and sizes -------------------------------------------------------


def test_open_refuses_a_truncated_array(dataset):
    root, _ = dataset
    path = root / "images.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetFormatError, match=r"images\.npy.*truncated.*mvbook data check"):
        MultiviewDataset(root)


def test_open_refuses_an_edited_manifest(dataset):
    root, _ = dataset
    m = json.loads((root / "manifest.json").read_text())
    m["num_samples"] = N + 1
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetFormatError, match="manifest.json.*num_samples"):
        MultiviewDataset(root)


# -- mvbook data check: messages, not tracebacks --------------------------------------------


def _edit_manifest(root, value):
    path = root / "manifest.json"
    if isinstance(value, str):
        path.write_text(value)
    else:
        m = json.loads(path.read_text())
        path.write_text(json.dumps(value(m)))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("", "is empty"),
        ("[1, 2]", "expected a JSON object, got a list"),
        (lambda m: {k: v for k, v in m.items() if k != "num_samples"}, "'num_samples'"),
        (lambda m: {k: v for k, v in m.items() if k != "camera_names"}, "'camera_names'"),
        (lambda m: {**m, "arrays": {k: v for k, v in m["arrays"].items() if k != "K"}}, "'K'"),
    ],
    ids=["invalid", "empty", "list", "no_num_samples", "no_camera_names", "no_K"],
)
def test_data_check_reports_a_damaged_manifest(dataset, capsys, content, expected):
    root, _ = dataset
    _edit_manifest(root, content)
    rep = verify_dataset(root)
    assert not rep.ok and any(expected in p and "manifest.json" in p for p in rep.problems), rep
    assert mvbook_main(["data", "check", str(root)]) == 1
    out = capsys.readouterr()
    assert expected in out.out and "Traceback" not in out.err
    with pytest.raises(DatasetFormatError, match="manifest.json"):
        MultiviewDataset(root)


def test_data_check_reports_an_empty_npy(dataset, capsys):
    root, _ = dataset
    (root / "joints3d.npy").write_bytes(b"")
    assert mvbook_main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "cannot read" in out and "joints3d.npy" in out


def test_data_check_entry_without_sha256(dataset, capsys):
    root, _ = dataset

    def drop(m):
        del m["arrays"]["joints3d"]["sha256"]
        return m

    _edit_manifest(root, drop)
    assert mvbook_main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "records no sha256" in out and "joints3d.npy" in out
    assert "checksum mismatch" not in out


def test_data_check_of_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert mvbook_main(["data", "check", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err
