"""The model zoo: recipes never see test data, shipped weights match their cards and recipes,
corrupted or stale files are refused with a rebuild hint, training resumes bitwise."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from mvbook import zoo
from mvbook.runtime import PROFILES
from mvbook.zoo import pose2d, store
from mvbook.zoo.recipes import check_no_test_data, recipe


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", zoo.MODELS)
def test_no_recipe_trains_or_measures_on_test_data(name, profile):
    rec = recipe(name, profile)
    check_no_test_data(rec)
    for cfg in (*rec.train_data, rec.held_out):
        assert not {"S9", "S11"} & set(cfg.train_subjects)
        assert cfg.sequences[1] == 0


def test_the_test_data_check_catches_a_test_subject():
    rec = recipe("pose2d", "smoke")
    leaky = dataclasses.replace(rec.train_data[0], train_subjects=("S1", "S9"))
    with pytest.raises(ValueError, match="S9"):
        check_no_test_data(dataclasses.replace(rec, train_data=(leaky,)))
    with_test = dataclasses.replace(rec.train_data[0], test_subjects=("S11",), sequences=(1, 1))
    with pytest.raises(ValueError, match="test"):
        check_no_test_data(dataclasses.replace(rec, train_data=(with_test,)))


def test_recipe_digest_changes_with_any_field():
    rec = recipe("pose2d", "quick")
    assert rec.digest() == recipe("pose2d", "quick").digest()
    assert dataclasses.replace(rec, steps=rec.steps + 1).digest() != rec.digest()
    other = dataclasses.replace(rec.held_out, seed=rec.held_out.seed + 1)
    assert dataclasses.replace(rec, held_out=other).digest() != rec.digest()


@pytest.mark.parametrize("name", zoo.MODELS)
def test_shipped_card_was_trained_with_the_recipe_in_the_code(name):
    card = zoo.card(name, "quick")
    assert card["recipe"] == recipe(name, "quick").digest(), (
        f"the recipe of {name} changed since its shipped weights were trained: "
        f"run `mvbook zoo train {name} --out {store.SHIPPED} --overwrite`")
    path = store.weights_path(name, store.SHIPPED)
    assert path.stat().st_size <= 5 * 2**20
    assert store.sha256(path) == card["weights_sha256"]
    for key in ("code_commit", "device", "train_seconds", "steps", "data", "held_out"):
        assert key in card


@pytest.fixture(scope="module")
def studio_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.mark.parametrize("name", zoo.MODELS)
def test_shipped_model_reproduces_its_held_out_metrics(name, studio_cache):
    result = zoo.verify(name, "quick", cache_dir=studio_cache)
    expected = zoo.card(name, "quick")["held_out"]["metrics"]
    assert set(result) == set(expected)
    for key, (card_value, measured) in result.items():
        assert abs(card_value - measured) <= zoo.TOLERANCE[key], key


def test_shipped_pose2d_is_a_real_detector():
    metrics = zoo.card("pose2d", "quick")["held_out"]["metrics"]
    assert metrics["median px"] < 2.0 and metrics["PCK@5px"] > 85.0


@pytest.fixture()
def copied_model(tmp_path):
    for path in (store.weights_path("pose2d", store.SHIPPED), store.card_path("pose2d", store.SHIPPED)):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_load_checks_and_returns_an_eval_model(copied_model):
    model = zoo.load("pose2d", folder=copied_model)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_corrupted_weights_are_refused_with_a_rebuild_hint(copied_model):
    path = store.weights_path("pose2d", copied_model)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match=r"corrupted.*mvbook zoo train pose2d"):
        zoo.load("pose2d", folder=copied_model)


def test_truncated_weights_are_refused(copied_model):
    path = store.weights_path("pose2d", copied_model)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(zoo.ZooError, match="corrupted"):
        zoo.load("pose2d", folder=copied_model)


def test_missing_files_and_bad_cards_are_refused(copied_model, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(zoo.ZooError, match=r"no card.*mvbook zoo train pose2d"):
        zoo.load("pose2d", folder=empty)
    cpath = store.card_path("pose2d", copied_model)
    card = json.loads(cpath.read_text())
    card["recipe"] = "0" * 16
    cpath.write_text(json.dumps(card))
    with pytest.raises(zoo.ZooError, match="recipe changed"):
        zoo.load("pose2d", folder=copied_model)
    cpath.write_text("{not json")
    with pytest.raises(zoo.ZooError, match="not valid JSON"):
        zoo.load("pose2d", folder=copied_model)
    store.weights_path("pose2d", copied_model).unlink()
    cpath.write_text(json.dumps(dict(card, recipe=recipe("pose2d").digest())))
    with pytest.raises(zoo.ZooError, match="no weights"):
        zoo.load("pose2d", folder=copied_model)


def test_full_weights_missing_from_the_cache_say_how_to_train_them(tmp_path):
    with pytest.raises(zoo.ZooError, match=r"mvbook zoo train pose2d --profile full"):
        zoo.load("pose2d", "full", cache_dir=tmp_path)


def test_unknown_model_name_is_named():
    with pytest.raises(ValueError, match="name must be one of"):
        zoo.load("posenet")


def _state(folder):
    return torch.load(store.weights_path("pose2d", folder), weights_only=True)


def test_zoo_train_smoke_end_to_end_and_resumes_bitwise(tmp_path, monkeypatch, one_torch_thread):
    cache = tmp_path / "cache"
    card = zoo.train_model("pose2d", "smoke", tmp_path / "a", device="cpu", progress=False,
                           cache_dir=cache, checkpoint_every=2)
    assert card["steps"] == recipe("pose2d", "smoke").steps
    assert set(card["held_out"]["metrics"]) >= {"error px", "PCK@5px"}
    with pytest.raises(FileExistsError, match="overwrite"):
        zoo.train_model("pose2d", "smoke", tmp_path / "a", device="cpu", progress=False,
                        cache_dir=cache)
    # the weights it wrote load through the checked path
    zoo.load("pose2d", "smoke", folder=tmp_path / "a")

    # interrupted after step 4 (checkpoints at 2 and 4), then resumed: the same weights
    real = pose2d.make_loss
    calls = {"n": 0}

    def interrupting(rec, generator=None):
        inner = real(rec, generator)

        def loss_fn(model, batch):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return inner(model, batch)
        return loss_fn

    monkeypatch.setattr(pose2d, "make_loss", interrupting)
    with pytest.raises(KeyboardInterrupt):
        zoo.train_model("pose2d", "smoke", tmp_path / "b", device="cpu", progress=False,
                        cache_dir=cache, checkpoint_every=2)
    monkeypatch.setattr(pose2d, "make_loss", real)
    assert not store.weights_path("pose2d", tmp_path / "b").exists()
    zoo.train_model("pose2d", "smoke", tmp_path / "b", device="cpu", progress=False,
                    cache_dir=cache, checkpoint_every=2)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_person_crops_put_the_labels_on_the_crops(tmp_path, one_torch_thread):
    from mvbook.crops import crop_points, square_boxes
    from mvbook.data.format import MultiviewDataset
    from mvbook.studio.build import build_studio

    rec = recipe("pose2d", "smoke")
    cfg = rec.train_data[1]  # multi-person: several people per view
    ds = MultiviewDataset(build_studio("smoke", cfg.scene, cfg.seed, tmp_path, False, config=cfg),
                          split="train")
    bank = pose2d.person_crops(ds, rec, progress=False)
    # slow reference: every valid person view, one at a time
    n = 0
    for i in range(len(ds)):
        s = ds[i]
        for c in range(s["bbox"].shape[0]):
            for p in range(s["bbox"].shape[1]):
                box = torch.as_tensor(np.asarray(s["bbox"][c, p]), dtype=torch.float32)
                if not s["person_valid"][p] or float((box[2:] - box[:2]).min()) < 4:
                    continue
                sq = square_boxes(box, rec.crop_scale)
                uv = crop_points(torch.as_tensor(s["joints2d"][c, p]).float(), sq, rec.crop_size)
                vis = torch.as_tensor(s["visibility"][c, p]).bool()
                vis &= ((uv >= -0.5) & (uv <= rec.crop_size - 0.5)).all(-1)
                if int(vis.sum()) < rec.min_visible:
                    continue
                torch.testing.assert_close(bank.tensors["joints2d"][n][vis], uv[vis])
                assert torch.equal(bank.tensors["visibility"][n], vis)
                n += 1
    assert n == len(bank) > 0


def test_augmentation_moves_labels_with_the_image():
    rec = recipe("pose2d", "smoke")
    S = rec.crop_size
    images = torch.zeros(8, 3, S, S, dtype=torch.uint8)
    uv = torch.full((8, 17, 2), (S - 1) / 2)
    uv[:, 0] = torch.tensor([10.0, 20.0])
    images[:, :, 20, 10] = 255  # a bright dot at joint 0
    batch = {"images": images, "joints2d": uv, "visibility": torch.ones(8, 17, dtype=torch.bool)}
    out = pose2d.augment(batch, dataclasses.replace(rec, augment=dataclasses.replace(
        rec.augment, colour=0.0, permute=0.0, noise=0.0)), torch.Generator().manual_seed(0))
    x = out["images"][:, 0] - out["images"][:, 0].amin((-2, -1), keepdim=True)
    vv, uu = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    centroid = torch.stack([(x * uu).sum((-2, -1)), (x * vv).sum((-2, -1))], -1) / x.sum((-2, -1))[:, None]
    torch.testing.assert_close(centroid, out["joints2d"][:, 0], atol=0.15, rtol=0)
